//! `maestro generate`: write a realistic history in the real source formats.

use std::time::Instant;

use anyhow::Context;
use maestro_datasets::generate::{GenerateSummary, generate};

use crate::Outcome;
use crate::cli::GenerateArgs;
use crate::output::print;

pub fn run(args: &GenerateArgs) -> anyhow::Result<Outcome> {
    let options = args.history.options();
    let started = Instant::now();
    let summary = generate(&args.out, &options)
        .with_context(|| format!("generating into {}", args.out.display()))?;
    print(&describe(
        &summary,
        &args.out,
        started.elapsed().as_secs_f64(),
    ))?;
    Ok(Outcome::Ok)
}

/// What a generation produced, for people.
pub fn describe(summary: &GenerateSummary, out: &std::path::Path, seconds: f64) -> String {
    format!(
        "generated {} source files ({:.1} MB) in {:.1} s under {}\n  \
         {} changes, {} deployments, {} incidents, {} test executions, {} metric points, {} spans, {} audit records\n  \
         ingest with: maestro ingest {}\n  the hidden truth (probabilities, rules) is in {}\n",
        summary.source_files,
        summary.source_bytes as f64 / 1e6,
        seconds,
        out.join("sources").display(),
        summary.changes,
        summary.deployments,
        summary.incidents,
        summary.test_results,
        summary.metric_points,
        summary.spans,
        summary.audit_events,
        out.join("sources").display(),
        out.join("truth").display(),
    )
}
