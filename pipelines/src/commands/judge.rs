//! `maestro judge`: the canary judge over every canary deployment and the rollback judge over
//! every deployment, and how each measured against what really happened.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use maestro_datasets::Lake;
use maestro_models::canary::{CanaryOutcome, judge_canaries};
use maestro_models::rollback::{Confusion, RollbackOutcome, judge_rollbacks};
use maestro_models::telemetry;

use crate::Outcome;
use crate::cli::LakeArgs;
use crate::config::{self, Config};
use crate::output::print;

pub fn run(args: &LakeArgs, config_path: Option<&Path>) -> anyhow::Result<Outcome> {
    let config = config::load(config_path)?;
    let lake = Lake::open_existing(&args.lake)?;
    print(&judge(&lake, &config)?)?;
    Ok(Outcome::Ok)
}

/// Runs both judges, writes their tables, and describes what they found.
pub(crate) fn judge(lake: &Lake, config: &Config) -> anyhow::Result<String> {
    let canaries = judge_canaries(lake, &config.canary).context("judging canaries")?;
    let rollbacks = judge_rollbacks(
        lake,
        &canaries,
        config.canary.window_minutes,
        &config.rollback,
    )
    .context("judging rollbacks")?;
    let deployments = telemetry::deployments(lake)?;
    Ok(describe(&canaries, &rollbacks, &deployments))
}

fn describe(
    canaries: &CanaryOutcome,
    rollbacks: &RollbackOutcome,
    deployments: &[telemetry::DeploymentFacts],
) -> String {
    let judged: usize = canaries.by_verdict.values().sum();
    let mut text = format!("canary analyses: {judged} canary deployments judged:");
    for (verdict, n) in &canaries.by_verdict {
        let _ = write!(text, " {verdict} {n},");
    }
    text.pop();
    text.push('\n');
    let catch = canaries.against_outcomes(deployments);
    let _ = writeln!(
        text,
        "  of those that went bad {} failed the analysis ({}); of those that stayed good {} ({})",
        fraction(catch.regressions_failed, catch.regressions),
        percent(catch.regressions_failed, catch.regressions),
        fraction(catch.healthy_failed, catch.healthy),
        percent(catch.healthy_failed, catch.healthy),
    );
    let calls = rollbacks.rows.iter().filter(|r| r.should_roll_back).count();
    let _ = writeln!(
        text,
        "rollback judge: {calls} of {} deployments should roll back ({} without telemetry to judge)",
        rollbacks.rows.len(),
        rollbacks.without_telemetry
    );
    let confusion = |name: &str, c: &Confusion, text: &mut String| {
        let _ = writeln!(
            text,
            "  against {name:<24} precision {} recall {} (right calls {}, wrong calls {}, missed {})",
            ratio(c.precision()),
            ratio(c.recall()),
            c.true_positives,
            c.false_positives,
            c.false_negatives
        );
    };
    confusion("incidents", &rollbacks.against_incidents, &mut text);
    confusion("any bad outcome", &rollbacks.against_bad, &mut text);
    let minutes = |m: Option<f64>| m.map_or("n/a".into(), |m| format!("{m:.0} min"));
    let _ = writeln!(
        text,
        "  median time to detect {}; median lead over the incident's detection {}; real rollbacks came after a median {}",
        minutes(rollbacks.median_minutes_to_detect),
        minutes(rollbacks.median_lead_over_incident),
        minutes(rollbacks.median_minutes_to_real_rollback),
    );
    text
}

fn fraction(part: usize, whole: usize) -> String {
    format!("{part}/{whole}")
}

fn percent(part: usize, whole: usize) -> String {
    if whole == 0 {
        "n/a".into()
    } else {
        format!("{:.1}%", 100.0 * part as f64 / whole as f64)
    }
}

fn ratio(value: Option<f64>) -> String {
    value.map_or("n/a".into(), |v| format!("{v:.2}"))
}
