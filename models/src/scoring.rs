//! Scoring deployments with the champion deployment-risk model: a calibrated probability, its
//! band, a decision (allow, allow with canary, hold) from configurable thresholds, and the
//! features that moved the score most.
//!
//! In: the lake (history and the deployments to score) or one pending deployment. Out:
//! `risk_verdicts` rows, written one date partition at a time so a rerun replaces them.

use std::collections::BTreeMap;

use maestro_datasets::WriteMode;
use maestro_datasets::lake::Lake;
use maestro_datasets::schema::{Deployment, RiskVerdict, Row, Ts};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::features::{self, FeatureOptions, FeatureTable, Level};
use crate::registry::Registry;
use crate::risk::RiskModel;

/// How many contributing features a verdict names.
pub const TOP_FEATURES: usize = 5;

/// Probabilities at which a deployment needs a canary, or is held.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// At or above this probability the deployment goes out as a canary first.
    pub canary_above: f64,
    /// At or above this probability the deployment is held.
    pub hold_above: f64,
}

impl Default for Thresholds {
    /// Roughly one deployment in five goes bad in a typical history: a canary from there, a
    /// hold when failure is more likely than not.
    fn default() -> Self {
        Thresholds {
            canary_above: 0.3,
            hold_above: 0.5,
        }
    }
}

impl Thresholds {
    /// Refuses thresholds that are not probabilities in order.
    pub fn check(&self) -> Result<()> {
        let valid = (0.0..=1.0).contains(&self.canary_above)
            && (0.0..=1.0).contains(&self.hold_above)
            && self.canary_above <= self.hold_above;
        if valid {
            Ok(())
        } else {
            Err(Error::Data(format!(
                "risk thresholds must satisfy 0 <= canary_above ({}) <= hold_above ({}) <= 1",
                self.canary_above, self.hold_above
            )))
        }
    }

    /// The band and decision of a probability.
    pub fn classify(&self, probability: f64) -> (&'static str, &'static str) {
        if probability >= self.hold_above {
            ("high", "hold")
        } else if probability >= self.canary_above {
            ("medium", "allow_with_canary")
        } else {
            ("low", "allow")
        }
    }
}

/// Which dates of deployments to score, as `YYYY-MM-DD`, both ends included; `None` is open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)] // fields named for what they hold
pub struct DateRange {
    pub from: Option<String>,
    pub to: Option<String>,
}

impl DateRange {
    /// Whether a `YYYY-MM-DD` date is in the range.
    pub fn contains(&self, date: &str) -> bool {
        self.from.as_deref().is_none_or(|f| date >= f)
            && self.to.as_deref().is_none_or(|t| date <= t)
    }
}

/// What a scoring run wrote.
#[derive(Debug, Clone)]
#[allow(missing_docs)] // fields named for what they hold
pub struct ScoreOutcome {
    pub model_version: String,
    pub verdicts: Vec<RiskVerdict>,
    /// Deployments per decision.
    pub by_decision: BTreeMap<String, usize>,
    /// Date partitions of `risk_verdicts` replaced.
    pub partitions: usize,
}

/// The champion deployment-risk model of the lake's registry, and its version.
pub fn champion(lake: &Lake) -> Result<(String, RiskModel)> {
    champion_of(&Registry::new(lake.root()))
}

fn champion_of(registry: &Registry) -> Result<(String, RiskModel)> {
    let version = registry.champion(Level::Deployment)?.ok_or_else(|| {
        Error::Data(
            "no champion deployment-risk model: run `maestro train risk` (or promote a version) first"
                .into(),
        )
    })?;
    let model = registry.load(&version)?;
    Ok((version, model))
}

/// Scores every deployment of the lake whose start falls in `dates` with the champion and
/// replaces those dates' `risk_verdicts` partitions.
pub fn score_deployments(
    lake: &Lake,
    thresholds: &Thresholds,
    dates: &DateRange,
) -> Result<ScoreOutcome> {
    thresholds.check()?;
    let (version, model) = champion(lake)?;
    let table = features::build(lake, Level::Deployment, &FeatureOptions::default())?;
    let rows: Vec<usize> = (0..table.rows())
        .filter(|&i| dates.contains(&Ts(table.at[i]).date()))
        .collect();
    let verdicts = verdicts(&model, &version, &table, &rows, thresholds)?;
    let mut by_decision = BTreeMap::new();
    for verdict in &verdicts {
        *by_decision.entry(verdict.decision.clone()).or_insert(0) += 1;
    }
    let partitions = verdicts
        .iter()
        .map(|v| v.started_at.date())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    if !verdicts.is_empty() {
        let mut txn = lake.begin()?;
        txn.write(&verdicts, WriteMode::ReplacePartitions)?;
        txn.commit()?;
    }
    Ok(ScoreOutcome {
        model_version: version,
        verdicts,
        by_decision,
        partitions,
    })
}

/// A pending deployment's verdict, and what the lake could not tell about it.
#[derive(Debug, Clone)]
#[allow(missing_docs)] // fields named for what they hold
pub struct PendingScore {
    pub verdict: RiskVerdict,
    /// Changes the deployment names that the lake does not hold (or that merged after its
    /// start): their metrics are missing from the score.
    pub changes_not_in_lake: usize,
}

/// Scores one deployment that has not happened yet against the lake's history. Nothing is
/// written to the lake: its outcome is unknown, so it is read as in progress.
pub fn score_pending(
    lake: &Lake,
    pending: &Deployment,
    thresholds: &Thresholds,
) -> Result<PendingScore> {
    thresholds.check()?;
    // A release gate asks the model the nightly run published, not one being trained.
    let (version, model) = champion_of(&Registry::serving(lake.root()))?;
    let scratch_dir = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let scratch = Lake::open(scratch_dir.path())?;
    let in_progress = Deployment {
        outcome: None,
        finished_at: None,
        ..pending.clone()
    };
    let mut txn = scratch.begin()?;
    txn.write(&[in_progress], WriteMode::Append)?;
    txn.commit()?;
    let options = FeatureOptions {
        pending_deployments: scratch.parts(&Deployment::TABLE)?,
        ..Default::default()
    };
    let table = features::build(lake, Level::Deployment, &options)?;
    let row = table
        .ids
        .iter()
        .position(|id| *id == pending.deployment_id)
        .ok_or_else(|| {
            Error::Data(format!(
                "deployment {} has no start time, so it cannot be scored",
                pending.deployment_id
            ))
        })?;
    let known_changes = table
        .names
        .iter()
        .position(|n| n == "n_changes")
        .map_or(0.0, |column| table.row(row)[column]);
    let mut verdicts = verdicts(&model, &version, &table, &[row], thresholds)?;
    Ok(PendingScore {
        verdict: verdicts.remove(0),
        changes_not_in_lake: pending
            .change_ids
            .len()
            .saturating_sub(known_changes as usize),
    })
}

/// Verdicts of `rows` of `table`, in row order.
pub fn verdicts(
    model: &RiskModel,
    version: &str,
    table: &FeatureTable,
    rows: &[usize],
    thresholds: &Thresholds,
) -> Result<Vec<RiskVerdict>> {
    if model.level != Level::Deployment {
        return Err(Error::Data(format!(
            "{version} is a {}-level model; deployments need a deployment-level one",
            model.level.name()
        )));
    }
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let probability = model.predict(table, rows)?;
    let contributions = model.contributions(table, rows)?;
    Ok(rows
        .iter()
        .zip(probability)
        .zip(contributions)
        .map(|((&i, p), terms)| {
            let (band, decision) = thresholds.classify(p);
            let (top_features, top_contributions) = top_terms(&model.features, &terms);
            RiskVerdict {
                deployment_id: table.ids[i].clone(),
                service: table.services[i].clone(),
                environment: table.environments[i].clone(),
                started_at: Ts(table.at[i]),
                model_version: version.to_string(),
                probability: p,
                band: band.into(),
                decision: decision.into(),
                top_features,
                top_contributions,
            }
        })
        .collect())
}

/// The `TOP_FEATURES` terms largest in magnitude, largest first; ties go to the earlier feature
/// so the order is the same on every run.
fn top_terms(names: &[String], terms: &[f64]) -> (Vec<String>, Vec<f64>) {
    let mut order: Vec<usize> = (0..terms.len()).collect();
    order.sort_by(|&a, &b| terms[b].abs().total_cmp(&terms[a].abs()).then(a.cmp(&b)));
    order.truncate(TOP_FEATURES);
    (
        order.iter().map(|&i| names[i].clone()).collect(),
        order.iter().map(|&i| terms[i]).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_band_and_decide() {
        let t = Thresholds {
            canary_above: 0.2,
            hold_above: 0.6,
        };
        assert_eq!(t.classify(0.1), ("low", "allow"));
        assert_eq!(t.classify(0.2), ("medium", "allow_with_canary"));
        assert_eq!(t.classify(0.6), ("high", "hold"));
        assert!(
            Thresholds {
                canary_above: 0.7,
                hold_above: 0.6
            }
            .check()
            .is_err()
        );
    }

    #[test]
    fn top_terms_are_largest_in_magnitude() {
        let names: Vec<String> = ["a", "b", "c", "d", "e", "f"].map(String::from).to_vec();
        let (top, values) = top_terms(&names, &[0.1, -2.0, 0.5, 0.0, 1.0, -0.3]);
        assert_eq!(top, ["b", "e", "c", "f", "a"]);
        assert_eq!(values, [-2.0, 1.0, 0.5, -0.3, 0.1]);
    }

    #[test]
    fn date_ranges_include_both_ends() {
        let range = DateRange {
            from: Some("2026-09-02".into()),
            to: Some("2026-09-03".into()),
        };
        assert!(!range.contains("2026-09-01"));
        assert!(range.contains("2026-09-02"));
        assert!(range.contains("2026-09-03"));
        assert!(!range.contains("2026-09-04"));
    }
}
