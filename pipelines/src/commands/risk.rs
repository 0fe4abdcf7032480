//! `maestro risk`: score deployments with the champion deployment-risk model. With
//! `--deployment FILE` it scores one pending deployment for a CI gate and exits 1 on hold;
//! otherwise it scores the lake's deployments of the chosen dates into `risk_verdicts`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, bail};
use maestro_datasets::Lake;
use maestro_datasets::readers::{self, Chunk, Format, Records, ReportContext};
use maestro_datasets::schema::{Deployment, RiskVerdict};
use maestro_models::scoring::{
    DateRange, ScoreOutcome, Thresholds, score_deployments, score_pending,
};
use serde_json::json;

use crate::Outcome;
use crate::cli::{ReportFormat, RiskArgs};
use crate::config;
use crate::output::print;

pub fn run(args: &RiskArgs, config_path: Option<&Path>) -> anyhow::Result<Outcome> {
    let thresholds = config::load(config_path)?.risk.thresholds();
    let lake = Lake::open_existing(&args.lake.lake)?;
    match &args.deployment {
        Some(path) => {
            let pending = read_pending(path)?;
            let scored = score_pending(&lake, &pending, &thresholds)
                .with_context(|| format!("scoring {}", path.display()))?;
            let verdict = &scored.verdict;
            print(&match args.format {
                ReportFormat::Text => {
                    let mut text = describe_one(verdict, &thresholds);
                    if scored.changes_not_in_lake > 0 {
                        let _ = writeln!(
                            text,
                            "  note: {} of its {} changes are not in the lake (ingest them first): their metrics are missing from this score",
                            scored.changes_not_in_lake,
                            pending.change_ids.len()
                        );
                    }
                    text
                }
                ReportFormat::Json => {
                    let mut json = verdict_json(verdict);
                    json["changes_not_in_lake"] = scored.changes_not_in_lake.into();
                    format!("{json:#}\n")
                }
            })?;
            Ok(if verdict.decision == "hold" {
                Outcome::CheckFailed
            } else {
                Outcome::Ok
            })
        }
        None => {
            let dates = DateRange {
                from: args.date.clone().or_else(|| args.from.clone()),
                to: args.date.clone().or_else(|| args.to.clone()),
            };
            let outcome = score_deployments(&lake, &thresholds, &dates)
                .context("scoring the lake's deployments")?;
            print(&match args.format {
                ReportFormat::Text => describe_many(&outcome, &dates),
                ReportFormat::Json => {
                    let verdicts: Vec<_> = outcome.verdicts.iter().map(verdict_json).collect();
                    format!("{:#}\n", json!(verdicts))
                }
            })?;
            Ok(Outcome::Ok)
        }
    }
}

/// The one deployment a CDEvents event (or GitHub deployment payload) describes.
fn read_pending(path: &Path) -> anyhow::Result<Deployment> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let format = readers::detect(&bytes).map_err(|reason| {
        anyhow::anyhow!("{}: not a deployment event: {reason}", path.display())
    })?;
    if !matches!(format, Format::CdEvents | Format::GithubDeployment) {
        bail!(
            "{}: a {format} file, not a CDEvents deployment event",
            path.display()
        );
    }
    let context = ReportContext::default();
    let mut records = Records::default();
    readers::read_chunk(
        format,
        &Chunk::whole_file(&bytes, "", None, &context),
        &mut records,
    );
    if let Some(rejected) = records.rejected.first() {
        bail!(
            "{}{}: {}",
            path.display(),
            rejected
                .line
                .map(|l| format!(" line {l}"))
                .unwrap_or_default(),
            rejected.reason
        );
    }
    match <[Deployment; 1]>::try_from(records.deployments) {
        Ok([deployment]) => Ok(deployment),
        Err(found) => bail!(
            "{}: holds {} deployment events; give exactly one (service.deployed or service.upgraded)",
            path.display(),
            found.len()
        ),
    }
}

fn verdict_json(verdict: &RiskVerdict) -> serde_json::Value {
    let contributions: Vec<_> = verdict
        .top_features
        .iter()
        .zip(&verdict.top_contributions)
        .map(|(feature, contribution)| json!({"feature": feature, "contribution": contribution}))
        .collect();
    json!({
        "deployment_id": verdict.deployment_id,
        "service": verdict.service,
        "environment": verdict.environment,
        "started_at": verdict.started_at.to_rfc3339(),
        "model_version": verdict.model_version,
        "probability": verdict.probability,
        "band": verdict.band,
        "decision": verdict.decision,
        "top_contributions": contributions,
    })
}

fn describe_one(verdict: &RiskVerdict, thresholds: &Thresholds) -> String {
    let mut text = format!(
        "deployment {} of {} to {}: {}\n  probability of going bad {:.3} (band {}; canary from {}, hold from {}), model {}\n  what moved it most (contribution to the log-odds):\n",
        verdict.deployment_id,
        verdict.service,
        verdict.environment,
        verdict.decision,
        verdict.probability,
        verdict.band,
        thresholds.canary_above,
        thresholds.hold_above,
        verdict.model_version,
    );
    for (feature, contribution) in verdict.top_features.iter().zip(&verdict.top_contributions) {
        let _ = writeln!(text, "    {feature:<28} {contribution:+.3}");
    }
    text
}

pub(crate) fn describe_many(outcome: &ScoreOutcome, dates: &DateRange) -> String {
    let span = match (&dates.from, &dates.to) {
        (Some(from), Some(to)) if from == to => format!("of {from}"),
        (Some(from), Some(to)) => format!("from {from} to {to}"),
        (Some(from), None) => format!("from {from}"),
        (None, Some(to)) => format!("up to {to}"),
        (None, None) => "of every date".into(),
    };
    let mut text = format!(
        "scored {} deployments {span} with {}; {} risk_verdicts partitions replaced\n",
        outcome.verdicts.len(),
        outcome.model_version,
        outcome.partitions
    );
    for decision in ["allow", "allow_with_canary", "hold"] {
        let n = outcome.by_decision.get(decision).copied().unwrap_or(0);
        let _ = writeln!(text, "  {decision:<18} {n:>6}");
    }
    text
}
