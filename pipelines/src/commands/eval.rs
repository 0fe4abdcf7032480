//! `maestro eval tests`: the test-selection replay over the lake's history, written to
//! `test_selection_replay` and described beside its baselines.

use std::fmt::Write as _;

use anyhow::Context;
use maestro_datasets::schema::Ts;
use maestro_datasets::{Lake, WriteMode};
use maestro_models::test_selection::{ReplayOptions, ReplayReport, Target, replay};

use crate::Outcome;
use crate::cli::{EvalCommand, EvalTestsArgs, ReportFormat};
use crate::output::print;

const DAY_MICROS: i64 = 86_400_000_000;

pub fn run(command: &EvalCommand) -> anyhow::Result<Outcome> {
    match command {
        EvalCommand::Tests(args) => tests(args),
    }
}

fn tests(args: &EvalTestsArgs) -> anyhow::Result<Outcome> {
    let lake = Lake::open_existing(&args.lake.lake)?;
    let target = match &args.budget {
        Some(budget) => Target::parse_budget(budget)?,
        None if args.confidence > 0.0 && args.confidence <= 1.0 => {
            Target::Confidence(args.confidence)
        }
        None => anyhow::bail!("--confidence must be above 0 and at most 1"),
    };
    if args.retrain_days < 1 {
        anyhow::bail!("--retrain-days must be at least 1");
    }
    let midnight = |date: &str| Ts::parse(&format!("{date}T00:00:00Z")).map(|t| t.0);
    let options = ReplayOptions {
        from: args.from.as_deref().and_then(midnight),
        to: args
            .to
            .as_deref()
            .and_then(midnight)
            .map(|t| t + DAY_MICROS),
        retrain_days: args.retrain_days,
        target,
        ..Default::default()
    };
    let report = replay_and_record(&lake, &options)?;
    match args.format {
        ReportFormat::Text => print(&describe(&report, target))?,
        ReportFormat::Json => print(&serde_json::to_string_pretty(&report)?)?,
    }
    Ok(Outcome::Ok)
}

/// Replays test selection and replaces the replayed dates of `test_selection_replay`.
pub(crate) fn replay_and_record(
    lake: &Lake,
    options: &ReplayOptions,
) -> anyhow::Result<ReplayReport> {
    let report = replay(lake, options).context("replaying test selection")?;
    let mut txn = lake.begin()?;
    txn.write(&report.rows, WriteMode::ReplacePartitions)?;
    txn.commit()?;
    Ok(report)
}

/// The replay's figures as aligned text.
pub(crate) fn describe(report: &ReplayReport, target: Target) -> String {
    let goal = match target {
        Target::Confidence(c) => format!("confidence {c}"),
        Target::TimeShare(s) => format!("budget {:.0}% of suite time", 100.0 * s),
        Target::Seconds(s) => format!("budget {s:.0} s per change"),
    };
    let mut text = format!(
        "test selection replay: {} changes ({} failing, {} failing tests), {} models each trained only on earlier runs (the first on {} pairs); model policy at {goal}\n",
        report.changes,
        report.failing_changes,
        report.failing_tests,
        report.trainings,
        report.first_training_pairs
    );
    let _ = writeln!(
        text,
        "  {:<16} {:>10} {:>16} {:>18} {:>7}",
        "policy", "test time", "failing tests", "failing changes", "APFD"
    );
    for p in &report.policies {
        let _ = writeln!(
            text,
            "  {:<16} {:>9.1}% {:>15.1}% {:>17.1}% {:>7.3}",
            p.policy,
            100.0 * p.time_share,
            100.0 * p.failing_tests_caught,
            100.0 * p.failing_changes_caught,
            p.apfd
        );
    }
    text.push_str("  baselines run for the same time as the model's selection on each change\n");
    let _ = writeln!(
        text,
        "confidence curve (model): target -> test time, failing changes caught"
    );
    for point in &report.curve {
        let _ = writeln!(
            text,
            "  {:<6} {:>6.1}% {:>6.1}%",
            point.confidence,
            100.0 * point.time_share,
            100.0 * point.failing_changes_caught
        );
    }
    text
}
