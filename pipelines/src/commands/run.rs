//! `maestro run` (the nightly pipeline), `maestro graph` (its job DAG) and `maestro status`
//! (the run ledger and the freshness of every table, as a monitoring check).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use maestro_datasets::Lake;
use maestro_datasets::ledger::JobRun;
use maestro_datasets::schema::Ts;

use crate::Outcome;
use crate::cli::{GraphArgs, GraphFormat, RunArgs, StatusArgs};
use crate::config;
use crate::nightly::{self, Cadence, Dag, JOBS, RunOptions, RunReport};
use crate::output::print;

pub fn run(args: &RunArgs, config_path: Option<&Path>) -> anyhow::Result<Outcome> {
    let config = config::load(config_path)?;
    let lake = Lake::open(&args.lake.lake)?;
    let options = RunOptions {
        from: args.date.clone().or(args.from.clone()),
        to: args.date.clone().or(args.to.clone()),
        select: args.select.clone(),
        force: args.force,
        dry_run: args.dry_run,
        risk_oracle: None,
    };
    let report = nightly::run(&lake, &config, &options)?;
    print(&describe(&report))?;
    Ok(if report.failed() {
        Outcome::CheckFailed
    } else {
        Outcome::Ok
    })
}

/// The run's table of jobs.
pub(crate) fn describe(report: &RunReport) -> String {
    let mut text = format!(
        "run {} finished in {:.1} s\n  {:<13} {:<9} {:>9} {:>12} {:>9}  detail\n",
        report.run_id, report.seconds, "job", "status", "seconds", "rows written", "peak MB"
    );
    for job in &report.jobs {
        let _ = writeln!(
            text,
            "  {:<13} {:<9} {:>9.2} {:>12} {:>9.0}  {}",
            job.job, job.status, job.seconds, job.rows_written, job.peak_mb, job.message
        );
    }
    if let Some(folder) = &report.published {
        let _ = writeln!(text, "published: {}", folder.display());
    }
    text
}

pub fn graph(args: &GraphArgs) -> anyhow::Result<Outcome> {
    let dag = Dag::new()?;
    // The order check also proves the declarations form no cycle.
    dag.order()?;
    print(&match args.format {
        GraphFormat::Dot => dag.dot(),
        GraphFormat::Mermaid => dag.mermaid(),
    })?;
    Ok(Outcome::Ok)
}

pub fn status(args: &StatusArgs, config_path: Option<&Path>) -> anyhow::Result<Outcome> {
    let config = config::load(config_path)?;
    let lake = Lake::open_existing(&args.lake.lake)?;
    let now = match &args.at {
        Some(text) => {
            Ts::parse(text).with_context(|| format!("--at {text:?} is not an RFC 3339 instant"))?
        }
        None => Ts(chrono::Utc::now().timestamp_micros()),
    };
    let runs: Vec<JobRun> = nightly::read_runs(&lake)?
        .into_iter()
        .filter(|r| r.run_id.starts_with(nightly::RUN_ID_PREFIX))
        .collect();
    let (text, healthy) = describe_status(&runs, &config.run, now, args.runs);
    print(&text)?;
    Ok(if healthy {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    })
}

/// The ledger as a user reads it, and whether everything is fresh and nothing failed.
fn describe_status(
    runs: &[JobRun],
    settings: &config::RunConfig,
    now: Ts,
    last_runs: usize,
) -> (String, bool) {
    let mut text = String::new();
    let mut healthy = true;

    // The latest runs, newest first.
    let mut by_run: BTreeMap<&str, Vec<&JobRun>> = BTreeMap::new();
    for run in runs {
        by_run.entry(&run.run_id).or_default().push(run);
    }
    let _ = writeln!(
        text,
        "last runs:\n  {:<30} {:<20} {:>9} {:>6} {:>8} {:>7} {:>13}",
        "run", "started", "seconds", "jobs", "skipped", "failed", "rows written"
    );
    for (run_id, rows) in by_run.iter().rev().take(last_runs) {
        let started = rows.iter().map(|r| r.started_at.0).min().unwrap_or(0);
        let finished = rows.iter().map(|r| r.finished_at.0).max().unwrap_or(0);
        let jobs: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.job.as_str()).collect();
        let count = |status: &str| {
            rows.iter()
                .filter(|r| r.status == status)
                .map(|r| r.job.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        };
        let _ = writeln!(
            text,
            "  {:<30} {:<20} {:>9.1} {:>6} {:>8} {:>7} {:>13}",
            run_id,
            Ts(started).to_datetime().format("%Y-%m-%d %H:%M:%S"),
            (finished - started) as f64 / 1e6,
            jobs.len(),
            count("skipped"),
            count("failed"),
            rows.iter().map(|r| r.rows_written).sum::<i64>()
        );
    }
    if by_run.is_empty() {
        let _ = writeln!(text, "  (no run yet: maestro run)");
    }

    // Per job: its latest outcome, and how fresh what it writes is.
    let _ = writeln!(
        text,
        "\njobs:\n  {:<13} {:<9} {:<20} {:>9} {:>10}  {:<9} detail",
        "job", "last", "at", "seconds", "age hours", "freshness"
    );
    let mut tables = Vec::new();
    for job in &JOBS {
        let mine: Vec<&JobRun> = runs.iter().filter(|r| r.job == job.name).collect();
        let latest_run = mine.iter().map(|r| r.run_id.as_str()).max();
        let latest: Vec<&&JobRun> = mine
            .iter()
            .filter(|r| Some(r.run_id.as_str()) == latest_run)
            .collect();
        // Current means it ran, or checked that its inputs were unchanged.
        let current_at = mine
            .iter()
            .filter(|r| r.status == "succeeded" || r.status == "skipped")
            .map(|r| r.finished_at.0)
            .max();
        let limit_hours = match job.cadence {
            Cadence::EveryRun => settings.max_age_hours,
            Cadence::Retrain => settings.max_age_hours + 24.0 * settings.retrain_days,
        };
        let age_hours = current_at.map(|at| (now.0 - at) as f64 / 3.6e9);
        let failed = latest.iter().find(|r| r.status == "failed");
        let freshness = match age_hours {
            Some(age) if age <= limit_hours => "fresh",
            Some(_) => "stale",
            None => "never",
        };
        if failed.is_some() || freshness != "fresh" {
            healthy = false;
        }
        let status = if failed.is_some() {
            "failed"
        } else if latest.iter().any(|r| r.status == "succeeded") {
            "succeeded"
        } else if latest.is_empty() {
            "-"
        } else {
            "skipped"
        };
        let at = latest
            .iter()
            .map(|r| r.finished_at.0)
            .max()
            .map(|t| Ts(t).to_datetime().format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "-".into());
        // A date-partitioned job records a row per date, each with the time of its range.
        let seconds = match (
            latest.iter().map(|r| r.started_at.0).min(),
            latest.iter().map(|r| r.finished_at.0).max(),
        ) {
            (Some(start), Some(end)) => (end - start) as f64 / 1e6,
            _ => 0.0,
        };
        let detail = match failed {
            Some(r) => r.message.clone().unwrap_or_default(),
            None => latest
                .iter()
                .filter_map(|r| r.message.clone())
                .next()
                .unwrap_or_else(|| format!("writes {}", job.writes.join(", "))),
        };
        for table in job.writes {
            tables.push((*table, job.name, age_hours, limit_hours, freshness));
        }
        let _ = writeln!(
            text,
            "  {:<13} {:<9} {:<20} {:>9.1} {:>10}  {:<9} {}",
            job.name,
            status,
            at,
            seconds,
            age_hours.map_or("-".into(), |a| format!("{a:.1}")),
            freshness,
            detail
        );
    }
    let _ = writeln!(
        text,
        "\ntables:\n  {:<22} {:<13} {:>10} {:>12}  freshness",
        "table", "written by", "age hours", "limit hours"
    );
    for (table, job, age, limit, freshness) in tables {
        let _ = writeln!(
            text,
            "  {:<22} {:<13} {:>10} {:>12.0}  {}",
            table,
            job,
            age.map_or("-".into(), |a| format!("{a:.1}")),
            limit,
            freshness
        );
    }
    let _ = writeln!(
        text,
        "\n{}",
        if healthy {
            "status: ok".to_string()
        } else {
            format!(
                "status: FAILING (a job failed, or something is older than {} hours; models {} days more)",
                settings.max_age_hours, settings.retrain_days
            )
        }
    );
    (text, healthy)
}
