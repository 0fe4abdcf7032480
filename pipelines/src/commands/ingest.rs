//! `maestro ingest`: take source files into the lake.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use anyhow::Context;
use maestro_datasets::Lake;
use maestro_datasets::ingest::{FileStatus, IngestOptions, IngestReport, Progress, ingest};
use maestro_datasets::readers::ReportContext;
use maestro_datasets::schema::Ts;

use crate::Outcome;
use crate::cli::IngestArgs;
use crate::output::{bytes_bar, print};

pub fn run(args: &IngestArgs) -> anyhow::Result<Outcome> {
    let at = match &args.at {
        Some(text) => Some(
            Ts::parse(text).with_context(|| format!("--at {text:?} is not an RFC 3339 time"))?,
        ),
        None => None,
    };
    let options = IngestOptions {
        format: args.format,
        context: ReportContext {
            change_id: args.change_id.clone(),
            run_id: args.run_id.clone(),
            service: args.service.clone(),
            at,
        },
        ..Default::default()
    };
    let lake = Lake::open(&args.lake.lake)
        .with_context(|| format!("opening the lake at {}", args.lake.lake.display()))?;
    let started = Instant::now();
    let report = run_ingest(&lake, &args.paths, &options)?;
    print(&describe(&report, started.elapsed().as_secs_f64()))?;
    Ok(if args.strict && report.rejected > 0 {
        Outcome::CheckFailed
    } else {
        Outcome::Ok
    })
}

/// Ingests with a progress bar on stderr.
pub fn run_ingest(
    lake: &Lake,
    paths: &[std::path::PathBuf],
    options: &IngestOptions,
) -> anyhow::Result<IngestReport> {
    let bar = BarProgress(bytes_bar(0, "ingesting"));
    let report =
        ingest(lake, paths, options, &bar).context("ingest failed; the lake is unchanged")?;
    bar.0.finish_and_clear();
    Ok(report)
}

/// The progress bar, sized once ingest has listed the files.
struct BarProgress(indicatif::ProgressBar);

impl Progress for BarProgress {
    fn total(&self, bytes: u64) {
        self.0.set_length(bytes);
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

/// The ingest summary printed on stdout.
pub fn describe(report: &IngestReport, seconds: f64) -> String {
    let mut text = String::new();
    let taken: Vec<_> = report
        .files
        .iter()
        .filter(|f| f.status == FileStatus::Ingested)
        .collect();
    let duplicates = report.files.len() - taken.len();
    let mb = report.source_bytes as f64 / 1e6;
    let _ = writeln!(
        text,
        "ingested {} files ({} duplicates skipped), {:.1} MB in {:.2} s ({:.1} MB/s); run {}",
        taken.len(),
        duplicates,
        mb,
        seconds,
        mb / seconds.max(1e-9),
        report.run_id
    );
    let _ = writeln!(
        text,
        "records: read {} = accepted {} + rejected {}",
        report.read, report.accepted, report.rejected
    );
    let mut by_format: BTreeMap<&str, (usize, u64, u64)> = BTreeMap::new();
    for file in &taken {
        let entry = by_format
            .entry(file.format.map_or("unrecognised", |f| f.name()))
            .or_default();
        entry.0 += 1;
        entry.1 += file.read;
        entry.2 += file.rejected;
    }
    if !by_format.is_empty() {
        let _ = writeln!(
            text,
            "  {:<20} {:>7} {:>10} {:>10} {:>9}",
            "format", "files", "read", "accepted", "rejected"
        );
        for (format, (files, read, rejected)) in &by_format {
            let _ = writeln!(
                text,
                "  {:<20} {:>7} {:>10} {:>10} {:>9}",
                format,
                files,
                read,
                read - rejected,
                rejected
            );
        }
    }
    if !report.rows.is_empty() {
        let _ = writeln!(text, "rows written:");
        for (table, rows) in &report.rows {
            let _ = writeln!(text, "  {table:<20} {rows:>10}");
        }
    }
    let _ = writeln!(
        text,
        "lake: {} files, {:.1} MB of Parquet written",
        report.written.files.len(),
        report.written.bytes as f64 / 1e6
    );
    if report.rejected > 0 {
        let _ = writeln!(
            text,
            "rejected records, with file, line and reason: maestro sql \"select source_path, line, reason from _rejected where run_id = '{}'\"",
            report.run_id
        );
    }
    text
}
