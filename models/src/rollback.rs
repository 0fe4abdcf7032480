//! The rollback judge: for each deployment, should it roll back, how (immediate, progressive,
//! canary-only or traffic shift, from severity and blast radius), to which version (the last
//! known good one of that service in that environment), beside what really happened; and how
//! well the judge did against incidents.
//!
//! It watches the service's error rate and p99 latency after the start against the hours
//! before it, and takes a failed canary analysis as a call at the end of the canary window.
//! In: deployments, incidents, telemetry, the service graph and canary verdicts. Out:
//! `rollback_verdicts` rows, written by date partition so a rerun replaces them.

use std::collections::{BTreeSet, HashMap};

use maestro_datasets::WriteMode;
use maestro_datasets::lake::Lake;
use maestro_datasets::schema::{RollbackVerdict, Ts};
use serde::{Deserialize, Serialize};

use crate::canary::CanaryOutcome;
use crate::error::{Error, Result};
use crate::features::graph_positions;
use crate::metrics::median;
use crate::telemetry::{self, DeploymentFacts, Sample, SeriesKey};

const MICROS_PER_MINUTE: i64 = 60_000_000;
const MICROS_PER_HOUR: i64 = 60 * MICROS_PER_MINUTE;

/// How the judge decides.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RollbackConfig {
    /// How long after the start the judge watches.
    pub watch_minutes: i64,
    /// Hours before the start that make the service's baseline.
    pub baseline_hours: i64,
    /// An interval whose error rate is this many times the baseline's is a regression...
    pub error_ratio: f64,
    /// ... as is one whose p99 latency is this many times the baseline's.
    pub latency_ratio: f64,
    /// Error rates below this are taken as this, so a spotless baseline does not make one
    /// error a regression.
    pub error_rate_floor: f64,
    /// A service with at least this many dependants is rolled back at once.
    pub immediate_blast_radius: f64,
}

impl Default for RollbackConfig {
    fn default() -> Self {
        RollbackConfig {
            watch_minutes: 120,
            baseline_hours: 6,
            error_ratio: 3.0,
            latency_ratio: 1.4,
            error_rate_floor: 0.001,
            immediate_blast_radius: 3.0,
        }
    }
}

/// What the service's telemetry said after a deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Watch {
    /// End of the first interval that regressed.
    detected_at: Option<i64>,
    peak_error_ratio: f64,
    peak_latency_ratio: f64,
    intervals: usize,
}

fn watch(samples: &[Sample], start: i64, config: &RollbackConfig) -> Watch {
    let before: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at <= start && s.at > start - config.baseline_hours * MICROS_PER_HOUR)
        .collect();
    let (errors, requests) = before.iter().fold((0.0, 0.0), |(e, r), s| {
        (e + s.errors.unwrap_or(0.0), r + s.requests.unwrap_or(0.0))
    });
    let baseline_error = if requests > 0.0 {
        (errors / requests).max(config.error_rate_floor)
    } else {
        config.error_rate_floor
    };
    let mut p99s: Vec<f64> = before
        .iter()
        .filter_map(|s| s.latency_quantile(0.99))
        .collect();
    p99s.sort_by(f64::total_cmp);
    let baseline_p99 = p99s.get(p99s.len() / 2).copied();
    let mut result = Watch::default();
    let end = start + config.watch_minutes * MICROS_PER_MINUTE;
    for sample in samples.iter().filter(|s| s.at > start && s.at <= end) {
        result.intervals += 1;
        let error_ratio = sample.error_rate().map_or(0.0, |r| r / baseline_error);
        let latency_ratio = match (sample.latency_quantile(0.99), baseline_p99) {
            (Some(now), Some(before)) if before > 0.0 => now / before,
            _ => 0.0,
        };
        result.peak_error_ratio = result.peak_error_ratio.max(error_ratio);
        result.peak_latency_ratio = result.peak_latency_ratio.max(latency_ratio);
        if result.detected_at.is_none()
            && (error_ratio >= config.error_ratio || latency_ratio >= config.latency_ratio)
        {
            result.detected_at = Some(sample.at);
        }
    }
    result
}

fn severity(watch: &Watch) -> &'static str {
    if watch.peak_error_ratio >= 10.0 || watch.peak_latency_ratio >= 2.5 {
        "critical"
    } else if watch.peak_error_ratio >= 5.0 || watch.peak_latency_ratio >= 1.8 {
        "major"
    } else {
        "minor"
    }
}

/// What a rollback judging run found, and how it measured against what happened.
#[derive(Debug, Clone, Default)]
#[allow(missing_docs)] // fields named for what they hold
pub struct RollbackOutcome {
    pub rows: Vec<RollbackVerdict>,
    /// Judged against incidents attributed to the deployment.
    pub against_incidents: Confusion,
    /// Judged against going bad at all (failed, rolled back, or an incident).
    pub against_bad: Confusion,
    /// Median minutes from start to the judge's call, over calls on deployments that went bad.
    pub median_minutes_to_detect: Option<f64>,
    /// Median minutes the call came before the incident was detected (negative: after).
    pub median_lead_over_incident: Option<f64>,
    /// Median minutes from start to the real rollback, over deployments rolled back.
    pub median_minutes_to_real_rollback: Option<f64>,
    /// Deployments without telemetry to judge.
    pub without_telemetry: usize,
}

/// True and false calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)] // fields named for what they hold
pub struct Confusion {
    pub true_positives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
    pub true_negatives: usize,
}

impl Confusion {
    fn add(&mut self, called: bool, truth: bool) {
        match (called, truth) {
            (true, true) => self.true_positives += 1,
            (true, false) => self.false_positives += 1,
            (false, true) => self.false_negatives += 1,
            (false, false) => self.true_negatives += 1,
        }
    }

    /// Share of calls that were right.
    pub fn precision(&self) -> Option<f64> {
        let called = self.true_positives + self.false_positives;
        (called > 0).then(|| self.true_positives as f64 / called as f64)
    }

    /// Share of the truly bad that were called.
    pub fn recall(&self) -> Option<f64> {
        let bad = self.true_positives + self.false_negatives;
        (bad > 0).then(|| self.true_positives as f64 / bad as f64)
    }
}

/// Judges every deployment of the lake and replaces the `rollback_verdicts` partitions it
/// touches. `canaries` are the canary verdicts of the same lake.
pub fn judge_rollbacks(
    lake: &Lake,
    canaries: &CanaryOutcome,
    canary_window_minutes: i64,
    config: &RollbackConfig,
) -> Result<RollbackOutcome> {
    if config.watch_minutes <= 0 || config.baseline_hours <= 0 {
        return Err(Error::Data(
            "rollback watch_minutes and baseline_hours must be positive".into(),
        ));
    }
    let deployments = telemetry::deployments(lake)?;
    let mut dates = BTreeSet::new();
    // Per service, the spans of time the judge looks at, sorted by start: only points within
    // one are kept, which leaves out a large share of a long history's points.
    let mut watched: HashMap<&str, Vec<(i64, i64)>> = HashMap::new();
    for d in &deployments {
        let (from, to) = (
            d.started_at - config.baseline_hours * MICROS_PER_HOUR,
            d.started_at + config.watch_minutes * MICROS_PER_MINUTE,
        );
        dates.extend(telemetry::dates_between(from, to));
        watched
            .entry(d.service.as_str())
            .or_default()
            .push((from, to));
    }
    for spans in watched.values_mut() {
        spans.sort_unstable();
    }
    // The spans are of one length, so the last one starting at or before `at` is the one
    // that ends latest among those.
    let is_watched = |service: &str, at: i64| {
        watched.get(service).is_some_and(|spans| {
            let starting = spans.partition_point(|&(from, _)| from <= at);
            starting > 0 && spans[starting - 1].1 >= at
        })
    };
    let series = telemetry::samples(lake, &dates, telemetry::Tracks::Whole, &is_watched)?;
    let graph = graph_positions(lake)?;
    let canary_verdicts = canaries.verdicts();

    let mut outcome = RollbackOutcome::default();
    let (mut to_detect, mut lead, mut real) = (Vec::new(), Vec::new(), Vec::new());
    for (i, d) in deployments.iter().enumerate() {
        let samples = series
            .get(&SeriesKey {
                service: d.service.clone(),
                track: None,
                deployment_id: None,
            })
            .map_or(&[][..], Vec::as_slice);
        let seen = watch(samples, d.started_at, config);
        let canary_failed = canary_verdicts.get(d.deployment_id.as_str()) == Some(&"fail");
        let canary_call =
            canary_failed.then(|| d.started_at + canary_window_minutes * MICROS_PER_MINUTE);
        // The earlier of the two signals is when the judge calls it.
        let detected_at = match (seen.detected_at, canary_call) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let by_canary = canary_call.is_some() && canary_call == detected_at;
        let should = detected_at.is_some();
        let blast_radius = graph.get(&d.service).map_or(0.0, |p| p.blast_radius);
        let severity = if !should {
            "none"
        } else if by_canary && seen.detected_at.is_none() {
            // Seen only on the canary's 10% of traffic.
            "major"
        } else {
            severity(&seen)
        };
        let strategy = if !should {
            "none"
        } else if by_canary {
            "canary_only"
        } else if d.strategy.as_deref() == Some("blue_green") {
            "traffic_shift"
        } else if severity == "critical" || blast_radius >= config.immediate_blast_radius {
            "immediate"
        } else {
            "progressive"
        };
        let reason = if seen.intervals == 0 && canary_call.is_none() {
            outcome.without_telemetry += 1;
            format!(
                "no {} telemetry in the {} minutes after the start: nothing to judge",
                d.service, config.watch_minutes
            )
        } else if by_canary {
            "the canary analysis failed".to_string()
        } else if should {
            format!(
                "error rate up to {:.1}x and p99 latency up to {:.2}x the {} h before the start",
                seen.peak_error_ratio, seen.peak_latency_ratio, config.baseline_hours
            )
        } else {
            format!(
                "no regression in {} minutes: error rate at most {:.1}x, p99 latency at most {:.2}x the {} h before",
                config.watch_minutes,
                seen.peak_error_ratio,
                seen.peak_latency_ratio,
                config.baseline_hours
            )
        };
        let target_version = last_known_good(&deployments[..i], d);
        let was_rolled_back = d.outcome.as_deref() == Some("rolled_back");
        let minutes = |at: i64| (at - d.started_at) as f64 / MICROS_PER_MINUTE as f64;
        let rolled_back_after = was_rolled_back.then(|| minutes(d.last_reported_at));

        outcome
            .against_incidents
            .add(should, d.incident_at.is_some());
        outcome.against_bad.add(should, d.went_bad());
        if let Some(at) = detected_at.filter(|_| d.went_bad()) {
            to_detect.push(minutes(at));
            if let Some(incident) = d.incident_at {
                lead.push((incident - at) as f64 / MICROS_PER_MINUTE as f64);
            }
        }
        real.extend(rolled_back_after);
        outcome.rows.push(RollbackVerdict {
            deployment_id: d.deployment_id.clone(),
            service: d.service.clone(),
            environment: d.environment.clone(),
            version: d.version.clone(),
            started_at: Ts(d.started_at),
            should_roll_back: should,
            reason,
            severity: severity.into(),
            strategy: strategy.into(),
            target_version,
            detected_at: detected_at.map(Ts),
            minutes_to_detect: detected_at.map(minutes),
            was_rolled_back,
            rolled_back_after_minutes: rolled_back_after,
            had_incident: d.incident_at.is_some(),
        });
    }
    outcome.median_minutes_to_detect = median(&to_detect);
    outcome.median_lead_over_incident = median(&lead);
    outcome.median_minutes_to_real_rollback = median(&real);
    if !outcome.rows.is_empty() {
        let mut txn = lake.begin()?;
        txn.write(&outcome.rows, WriteMode::ReplacePartitions)?;
        txn.commit()?;
    }
    Ok(outcome)
}

/// The version of the newest earlier deployment of the same service and environment that
/// succeeded and caused no incident.
fn last_known_good(earlier: &[DeploymentFacts], d: &DeploymentFacts) -> Option<String> {
    earlier
        .iter()
        .rev()
        .filter(|e| e.service == d.service && e.environment == d.environment)
        .filter(|e| e.started_at < d.started_at && !e.went_bad())
        .filter(|e| e.outcome.as_deref() == Some("succeeded"))
        .find_map(|e| e.version.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(at_minutes: i64, error_rate: f64) -> Sample {
        Sample {
            at: at_minutes * MICROS_PER_MINUTE,
            requests: Some(1000.0),
            errors: Some(1000.0 * error_rate),
            latency_bounds: vec![100.0],
            latency_counts: vec![900.0, 100.0],
            ..Default::default()
        }
    }

    #[test]
    fn a_spike_after_the_start_is_called_at_its_interval() {
        let start = 600 * MICROS_PER_MINUTE;
        let mut samples: Vec<Sample> = (1..=60).map(|q| interval(q * 15, 0.004)).collect();
        samples[41].errors = Some(30.0); // 630 min: 7.5x the baseline
        samples[55].errors = Some(80.0); // 840 min: after the watch, ignored
        let seen = watch(&samples, start, &RollbackConfig::default());
        assert_eq!(seen.detected_at, Some(630 * MICROS_PER_MINUTE));
        assert!((seen.peak_error_ratio - 7.5).abs() < 1e-9, "{seen:?}");
        assert_eq!(severity(&seen), "major");
        let quiet: Vec<Sample> = (1..=60).map(|q| interval(q * 15, 0.004)).collect();
        assert_eq!(
            watch(&quiet, start, &RollbackConfig::default()).detected_at,
            None
        );
    }

    #[test]
    fn last_known_good_skips_bad_and_other_environments() {
        let deployment =
            |id: &str, env: &str, at: i64, outcome: &str, version: &str| DeploymentFacts {
                deployment_id: id.into(),
                service: "api".into(),
                environment: env.into(),
                started_at: at,
                outcome: Some(outcome.into()),
                version: Some(version.into()),
                ..Default::default()
            };
        let history = [
            deployment("a", "production", 1, "succeeded", "1.0"),
            deployment("b", "staging", 2, "succeeded", "1.1"),
            deployment("c", "production", 3, "rolled_back", "1.2"),
        ];
        let now = deployment("d", "production", 4, "succeeded", "1.3");
        assert_eq!(last_known_good(&history, &now).as_deref(), Some("1.0"));
    }

    #[test]
    fn precision_and_recall_count_calls() {
        let mut c = Confusion::default();
        for (called, truth) in [(true, true), (true, false), (false, true), (true, true)] {
            c.add(called, truth);
        }
        assert_eq!(c.precision(), Some(2.0 / 3.0));
        assert_eq!(c.recall(), Some(2.0 / 3.0));
    }
}
