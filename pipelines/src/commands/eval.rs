//! `maestro eval tests`: the test-selection replay over the lake's history, written to
//! `test_selection_replay` and described beside its baselines.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use maestro_datasets::lake::replace_file;
use maestro_datasets::schema::{TestSelectionCurve, Ts};
use maestro_datasets::{Lake, WriteMode};
use maestro_models::test_selection::{ReplayOptions, ReplayReport, Target, replay};
use maestro_reports::chart::{Series, ShareChart};

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
        ReportFormat::Text => print(&format!(
            "{}curve drawn at {}; its points are in test_selection_curve\n",
            describe(&report, target),
            curve_chart_path(&lake).display()
        ))?,
        ReportFormat::Json => print(&serde_json::to_string_pretty(&report)?)?,
    }
    Ok(Outcome::Ok)
}

/// Where the replay's confidence curve is drawn, under the lake.
pub(crate) fn curve_chart_path(lake: &Lake) -> PathBuf {
    lake.root().join("reports").join("test_selection_curve.svg")
}

/// Replays test selection and records the replay.
fn replay_and_record(lake: &Lake, options: &ReplayOptions) -> anyhow::Result<ReplayReport> {
    let report = replay(lake, options).context("replaying test selection")?;
    record_replay(lake, &report)?;
    Ok(report)
}

/// Replaces the replayed dates of `test_selection_replay` and the `test_selection_curve` table
/// with `report`, and draws the curve as SVG.
pub(crate) fn record_replay(lake: &Lake, report: &ReplayReport) -> anyhow::Result<()> {
    let started = report.rows.iter().map(|r| r.started_at);
    let (Some(first), Some(last)) = (started.clone().min(), started.max()) else {
        anyhow::bail!("the replay scored no change: no full suite run in the replayed dates");
    };
    let curve: Vec<TestSelectionCurve> = report
        .curve
        .iter()
        .map(|point| TestSelectionCurve {
            policy: point.policy.clone(),
            target: point.target.clone(),
            time_share: point.time_share,
            failing_tests_caught: Some(point.failing_tests_caught).filter(|v| v.is_finite()),
            failing_changes_caught: Some(point.failing_changes_caught).filter(|v| v.is_finite()),
            changes: report.changes as i64,
            failing_changes: report.failing_changes as i64,
            replayed_from: first,
            replayed_to: last,
        })
        .collect();
    let mut txn = lake.begin()?;
    txn.write(&report.rows, WriteMode::ReplacePartitions)?;
    txn.write(&curve, WriteMode::Upsert)?;
    txn.commit()?;
    let svg = curve_chart(report).to_svg()?;
    replace_file(&curve_chart_path(lake), svg.as_bytes())?;
    Ok(())
}

/// The confidence curve: each policy's failing changes caught against its test time.
fn curve_chart(report: &ReplayReport) -> ShareChart {
    let mut series: Vec<Series> = Vec::new();
    for point in &report.curve {
        let name = match point.target.split_once(' ') {
            Some(("confidence", _)) => format!("{} (confidence target)", point.policy),
            _ => format!("{} (time budget)", point.policy),
        };
        let xy = (point.time_share, point.failing_changes_caught);
        match series.iter_mut().find(|s| s.name == name) {
            Some(line) => line.points.push(xy),
            None => series.push(Series {
                name,
                points: vec![xy],
            }),
        }
    }
    for line in &mut series {
        line.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    ShareChart {
        title: format!(
            "Test selection: failing changes caught ({} changes, {} failing)",
            report.changes, report.failing_changes
        ),
        x_label: "share of suite test time run".into(),
        y_label: "failing changes caught".into(),
        series,
    }
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
    text.push_str("confidence curve: test time, failing changes caught\n");
    for point in &report.curve {
        let _ = writeln!(
            text,
            "  {:<16} {:<17} {:>6.1}% {:>6.1}%",
            point.policy,
            point.target,
            100.0 * point.time_share,
            100.0 * point.failing_changes_caught
        );
    }
    text
}
