//! `maestro report`: every SQL report and compliance control over the lake, into the report
//! tables under `reports/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use maestro_datasets::Lake;
use maestro_datasets::lake::replace_file;
use maestro_datasets::schema::Ts;
use maestro_reports::compliance::load_waivers;
use maestro_reports::run::{Period, ReportRun, run_reports};
use maestro_reports::{definitions, executive, monitoring};

use crate::Outcome;
use crate::cli::ReportArgs;
use crate::config::{self, Config};
use crate::output::print;

pub fn run(args: &ReportArgs, config_path: Option<&Path>) -> anyhow::Result<Outcome> {
    let config = config::load(config_path)?;
    let lake = Lake::open_existing(&args.lake.lake)
        .with_context(|| format!("opening the lake at {}", args.lake.lake.display()))?;
    let day = |date: &str| Ts::parse(&format!("{date}T00:00:00Z"));
    let period = match (&args.period, &args.from, &args.to) {
        (Some(month), _, _) => Period::month(month),
        (None, Some(from), Some(to)) => match (day(from), day(to)) {
            (Some(from), Some(to)) if from <= to => Some(Period::days(from, to)),
            _ => anyhow::bail!("--from {from} must not come after --to {to}"),
        },
        _ => None,
    };
    let started = Instant::now();
    let run = compute(&lake, &config, period)?;
    let mut out = describe(&run, started.elapsed().as_secs_f64());
    let html = write_executive(&lake, &config, &run, &args.out)?;
    let _ = writeln!(
        out,
        "executive report: {} (and report.md, report.json; Prometheus rules and Grafana dashboards beside them)",
        html.display()
    );
    print(&out)?;
    Ok(Outcome::Ok)
}

/// Writes the executive report of a run into `dir`; returns the HTML file's path.
pub fn write_executive(
    lake: &Lake,
    config: &Config,
    run: &ReportRun,
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    let definitions = definitions::load(config.reports.sql_dir.as_deref())?;
    let report = super::runtime()?.block_on(executive::build(lake, run, &definitions))?;
    let rendered = executive::render(&report)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in [
        ("report.html", &rendered.html),
        ("report.md", &rendered.markdown),
        ("report.json", &rendered.json),
    ] {
        replace_file(&dir.join(name), text.as_bytes())?;
    }
    // Live monitoring of the same SLOs.
    let slos = super::runtime()?.block_on(async {
        let session = maestro_reports::LakeSession::open(lake).await?;
        monitoring::lake_slos(&session).await
    })?;
    replace_file(
        &dir.join("prometheus").join("slo-rules.yaml"),
        monitoring::prometheus_rules(&slos).as_bytes(),
    )?;
    let services: std::collections::BTreeSet<&str> =
        slos.iter().map(|s| s.service.as_str()).collect();
    for service in services {
        let dashboard = monitoring::grafana_dashboard(service, &slos);
        let text = serde_json::to_string_pretty(&dashboard)? + "\n";
        replace_file(
            &dir.join("grafana").join(format!("{service}.json")),
            text.as_bytes(),
        )?;
    }
    Ok(dir.join("report.html"))
}

/// Computes every report table of the lake with the configured definitions and waivers.
pub fn compute(lake: &Lake, config: &Config, period: Option<Period>) -> anyhow::Result<ReportRun> {
    let definitions = definitions::load(config.reports.sql_dir.as_deref())?;
    let waivers = match &config.reports.waivers {
        Some(path) => load_waivers(path)?,
        None => Vec::new(),
    };
    let run = super::runtime()?
        .block_on(run_reports(lake, &definitions, &waivers, period))
        .context("computing the reports")?;
    Ok(run)
}

/// What was computed: each table's rows and seconds.
pub fn describe(run: &ReportRun, seconds: f64) -> String {
    let mut out = format!(
        "reports as of {} ({} definitions, {:.1} s):\n",
        run.as_of.to_rfc3339(),
        run.timings.len(),
        seconds
    );
    for timing in &run.timings {
        let _ = writeln!(
            out,
            "  {:<28} {:>9} rows {:>7.2} s",
            timing.name, timing.rows, timing.seconds
        );
    }
    out
}
