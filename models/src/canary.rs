//! The canary judge: for each canary deployment, the canary track against the baseline track
//! over the analysis window, metric by metric, with a Mann-Whitney U test, an effect size and a
//! tolerance; an overall score and verdict; explicit `no_data` and `insufficient_data` states.
//!
//! In: canary deployments and their tracks' telemetry (see `telemetry`). Out: `canary_verdicts`
//! rows, one per deployment and metric, written by date partition so a rerun replaces them.

use std::collections::{BTreeMap, BTreeSet};

use maestro_datasets::WriteMode;
use maestro_datasets::lake::Lake;
use maestro_datasets::schema::{CanaryVerdict, Ts};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

use crate::error::{Error, Result};
use crate::metrics::{average_ranks, median};
use crate::telemetry::{self, DeploymentFacts, Sample, SeriesKey};

const MICROS_PER_MINUTE: i64 = 60_000_000;

/// How the judge decides.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CanaryConfig {
    /// Length of the analysis window from the deployment's start.
    pub window_minutes: i64,
    /// Fewer samples than this on either track is `insufficient_data`.
    pub min_samples: usize,
    /// A difference is significant below this two-sided p-value.
    pub alpha: f64,
    /// ... and when the rank-biserial effect size is at least this large.
    pub min_effect_size: f64,
    /// ... and when the canary's median differs from the baseline's by more than this share.
    pub tolerance: f64,
    /// Score (share of metrics that did not regress, 0..100) from which the canary passes.
    pub pass_score: f64,
    /// Score from which a canary that does not pass is marginal rather than failed.
    pub marginal_score: f64,
}

impl Default for CanaryConfig {
    fn default() -> Self {
        CanaryConfig {
            window_minutes: 30,
            min_samples: 10,
            alpha: 0.01,
            min_effect_size: 0.3,
            tolerance: 0.2,
            pass_score: 90.0,
            marginal_score: 60.0,
        }
    }
}

/// A metric the judge compares; all are worse when higher.
struct JudgedMetric {
    name: &'static str,
    is_critical: bool,
    value: fn(&Sample) -> Option<f64>,
}

const METRICS: [JudgedMetric; 4] = [
    JudgedMetric {
        name: "error_rate",
        is_critical: true,
        value: Sample::error_rate,
    },
    JudgedMetric {
        name: "latency_p50",
        is_critical: false,
        value: |s| s.latency_quantile(0.5),
    },
    JudgedMetric {
        name: "latency_p99",
        is_critical: false,
        value: |s| s.latency_quantile(0.99),
    },
    JudgedMetric {
        name: "cpu_utilization",
        is_critical: false,
        value: |s| s.cpu_utilization,
    },
];

/// The Mann-Whitney U test of two samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U of the first sample: how often one of its values beats one of the second's.
    pub u: f64,
    /// Two-sided p-value, normal approximation with tie and continuity correction.
    pub p_value: f64,
    /// Rank-biserial correlation 2U/(n1·n2) − 1: +1 when every first value is higher.
    pub effect_size: f64,
}

/// Mann-Whitney U of `a` against `b`; None when either is empty.
pub fn mann_whitney(a: &[f64], b: &[f64]) -> Option<MannWhitney> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let all: Vec<f64> = a.iter().chain(b).copied().collect();
    let ranks = average_ranks(&all);
    let rank_sum: f64 = ranks[..a.len()].iter().sum();
    let u = rank_sum - n1 * (n1 + 1.0) / 2.0;
    let n = n1 + n2;
    // Tie correction: sum of t³ − t over groups of equal values.
    let mut sorted = all.clone();
    sorted.sort_by(f64::total_cmp);
    let mut ties = 0.0;
    let mut start = 0;
    while start < sorted.len() {
        let end = start
            + sorted[start..]
                .iter()
                .take_while(|v| **v == sorted[start])
                .count();
        let t = (end - start) as f64;
        ties += t * t * t - t;
        start = end;
    }
    let variance = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    let mean = n1 * n2 / 2.0;
    let p_value = if variance <= 0.0 {
        1.0
    } else {
        let z = ((u - mean).abs() - 0.5).max(0.0) / variance.sqrt();
        let normal = Normal::standard();
        (2.0 * (1.0 - normal.cdf(z))).min(1.0)
    };
    Some(MannWhitney {
        u,
        p_value,
        effect_size: 2.0 * u / (n1 * n2) - 1.0,
    })
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// One metric compared.
fn judge_metric(
    metric: &JudgedMetric,
    canary: &[f64],
    baseline: &[f64],
    config: &CanaryConfig,
) -> (&'static str, Option<MannWhitney>, Option<f64>) {
    if canary.is_empty() || baseline.is_empty() {
        return ("no_data", None, None);
    }
    let test = mann_whitney(canary, baseline);
    // Error rates are mostly zero at canary traffic, so their medians say little: compare means.
    let centre = if metric.name == "error_rate" {
        mean
    } else {
        median
    };
    let relative = match (centre(canary), centre(baseline)) {
        (Some(c), Some(b)) if b > 0.0 => Some(c / b - 1.0),
        (Some(c), Some(_)) if c > 0.0 => Some(f64::INFINITY),
        (Some(_), Some(_)) => Some(0.0),
        _ => None,
    };
    if canary.len() < config.min_samples || baseline.len() < config.min_samples {
        return ("insufficient_data", test, relative);
    }
    let Some(t) = test else {
        return ("no_data", None, relative);
    };
    let significant = t.p_value < config.alpha && t.effect_size.abs() >= config.min_effect_size;
    let result = match relative {
        Some(r) if significant && r > config.tolerance && t.effect_size > 0.0 => "high",
        Some(r) if significant && r < -config.tolerance && t.effect_size < 0.0 => "low",
        _ => "pass",
    };
    (result, test, relative)
}

/// The overall score and verdict of an analysis's metric results. A critical metric that is
/// high fails outright; missing data is said, never passed.
fn overall(results: &[(&str, bool)], config: &CanaryConfig) -> (f64, &'static str) {
    let with_data: Vec<&(&str, bool)> = results
        .iter()
        .filter(|(r, _)| !matches!(*r, "no_data" | "insufficient_data"))
        .collect();
    let score = if with_data.is_empty() {
        0.0
    } else {
        // "low" is better than the baseline for metrics that are worse when higher.
        let good = with_data.iter().filter(|(r, _)| *r != "high").count();
        100.0 * good as f64 / with_data.len() as f64
    };
    let verdict = if results
        .iter()
        .any(|(r, critical)| *critical && *r == "high")
    {
        "fail"
    } else if results.iter().all(|(r, _)| *r == "no_data") {
        "no_data"
    } else if with_data.len() < results.len() {
        "insufficient_data"
    } else if score >= config.pass_score {
        "pass"
    } else if score >= config.marginal_score {
        "marginal"
    } else {
        "fail"
    };
    (score, verdict)
}

/// Judges one canary deployment from its tracks' samples.
pub fn judge(
    deployment: &DeploymentFacts,
    canary: &[Sample],
    baseline: &[Sample],
    config: &CanaryConfig,
) -> Vec<CanaryVerdict> {
    let window_start = deployment.started_at;
    let window_end = window_start + config.window_minutes * MICROS_PER_MINUTE;
    let in_window = |s: &&Sample| s.at > window_start && s.at <= window_end;
    let mut rows = Vec::new();
    let mut results = Vec::new();
    for metric in &METRICS {
        let values = |samples: &[Sample]| -> Vec<f64> {
            samples
                .iter()
                .filter(in_window)
                .filter_map(metric.value)
                .filter(|v| v.is_finite())
                .collect()
        };
        let (c, b) = (values(canary), values(baseline));
        let (result, test, relative) = judge_metric(metric, &c, &b, config);
        results.push((result, metric.is_critical));
        rows.push(CanaryVerdict {
            deployment_id: deployment.deployment_id.clone(),
            service: deployment.service.clone(),
            window_start: Ts(window_start),
            window_end: Ts(window_end),
            metric: metric.name.into(),
            is_critical: metric.is_critical,
            canary_samples: c.len() as i64,
            baseline_samples: b.len() as i64,
            canary_median: median(&c),
            baseline_median: median(&b),
            u_statistic: test.map(|t| t.u),
            p_value: test.map(|t| t.p_value),
            effect_size: test.map(|t| t.effect_size),
            relative_change: relative.filter(|r| r.is_finite()),
            metric_result: result.into(),
            ..Default::default()
        });
    }
    let (score, verdict) = overall(&results, config);
    for row in &mut rows {
        row.score = score;
        row.verdict = verdict.into();
    }
    rows
}

/// What a canary judging run found.
#[derive(Debug, Clone, Default)]
#[allow(missing_docs)] // fields named for what they hold
pub struct CanaryOutcome {
    /// Rows written, one per deployment and metric.
    pub rows: Vec<CanaryVerdict>,
    /// Canary deployments judged, by verdict.
    pub by_verdict: BTreeMap<String, usize>,
}

impl CanaryOutcome {
    /// Canary analyses of deployments that went bad and that stayed good: how many of each,
    /// and how many of each the judge failed.
    pub fn against_outcomes(&self, deployments: &[DeploymentFacts]) -> CanaryCatch {
        let verdicts = self.verdicts();
        let mut catch = CanaryCatch::default();
        for d in deployments {
            let Some(verdict) = verdicts.get(d.deployment_id.as_str()) else {
                continue;
            };
            let failed = *verdict == "fail";
            if d.went_bad() {
                catch.regressions += 1;
                catch.regressions_failed += usize::from(failed);
            } else {
                catch.healthy += 1;
                catch.healthy_failed += usize::from(failed);
            }
        }
        catch
    }

    /// The verdict of each deployment judged.
    pub fn verdicts(&self) -> BTreeMap<&str, &str> {
        self.rows
            .iter()
            .map(|r| (r.deployment_id.as_str(), r.verdict.as_str()))
            .collect()
    }
}

/// Canary verdicts beside what became of the deployments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)] // fields named for what they hold
pub struct CanaryCatch {
    /// Canaries of deployments that went bad (failed, rolled back or caused an incident).
    pub regressions: usize,
    pub regressions_failed: usize,
    /// Canaries of deployments that stayed good.
    pub healthy: usize,
    pub healthy_failed: usize,
}

/// Judges every canary deployment of the lake and replaces the `canary_verdicts` partitions it
/// touches.
pub fn judge_canaries(lake: &Lake, config: &CanaryConfig) -> Result<CanaryOutcome> {
    if config.window_minutes <= 0 || config.min_samples < 2 {
        return Err(Error::Data(
            "canary window_minutes must be positive and min_samples at least 2".into(),
        ));
    }
    let canaries: Vec<DeploymentFacts> = telemetry::deployments(lake)?
        .into_iter()
        .filter(|d| d.strategy.as_deref() == Some("canary"))
        .collect();
    let mut dates = BTreeSet::new();
    for d in &canaries {
        dates.extend(telemetry::dates_between(
            d.started_at,
            d.started_at + config.window_minutes * MICROS_PER_MINUTE,
        ));
    }
    let series = telemetry::samples(lake, &dates, telemetry::Tracks::Analysis, &|_, _| true)?;
    let track = |d: &DeploymentFacts, name: &str| -> &[Sample] {
        series
            .get(&SeriesKey {
                service: d.service.clone(),
                track: Some(name.into()),
                deployment_id: Some(d.deployment_id.clone()),
            })
            .map_or(&[], Vec::as_slice)
    };
    let mut outcome = CanaryOutcome::default();
    for deployment in &canaries {
        let rows = judge(
            deployment,
            track(deployment, "canary"),
            track(deployment, "baseline"),
            config,
        );
        *outcome
            .by_verdict
            .entry(rows[0].verdict.clone())
            .or_insert(0) += 1;
        outcome.rows.extend(rows);
    }
    if !outcome.rows.is_empty() {
        let mut txn = lake.begin()?;
        txn.write(&outcome.rows, WriteMode::ReplacePartitions)?;
        txn.commit()?;
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mann_whitney_matches_a_worked_example() {
        // scipy.stats.mannwhitneyu([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]): U = 0, p = 0.0122
        // (asymptotic, continuity-corrected).
        let t = mann_whitney(&[1.0, 2.0, 3.0, 4.0, 5.0], &[6.0, 7.0, 8.0, 9.0, 10.0])
            .expect("two samples");
        assert_eq!(t.u, 0.0);
        assert!((t.p_value - 0.0122).abs() < 5e-4, "{}", t.p_value);
        assert_eq!(t.effect_size, -1.0);
        // All values tied: no evidence at all.
        let tied = mann_whitney(&[0.0; 12], &[0.0; 12]).expect("two samples");
        assert_eq!(tied.p_value, 1.0);
        assert_eq!(tied.effect_size, 0.0);
        assert!(mann_whitney(&[], &[1.0]).is_none());
    }

    fn samples(error_rate: f64, latency: f64, n: usize, wobble: f64) -> Vec<Sample> {
        (0..n)
            .map(|i| {
                let jitter = 1.0 + wobble * ((i * 7 % 5) as f64 - 2.0) / 10.0;
                Sample {
                    at: (i as i64 + 1) * MICROS_PER_MINUTE,
                    requests: Some(1000.0),
                    errors: Some((1000.0 * error_rate * jitter).round()),
                    latency_bounds: vec![50.0, 100.0, 200.0, 400.0],
                    latency_counts: vec![0.0, 1000.0 * (1.0 - latency), 1000.0 * latency, 0.0, 0.0],
                    cpu_utilization: Some(0.3 * jitter),
                }
            })
            .collect()
    }

    fn deployment() -> DeploymentFacts {
        DeploymentFacts {
            deployment_id: "dep-1".into(),
            service: "api".into(),
            started_at: 0,
            ..Default::default()
        }
    }

    #[test]
    fn a_regressed_canary_fails_and_a_healthy_one_passes() {
        let config = CanaryConfig::default();
        let baseline = samples(0.01, 0.2, 30, 1.0);
        let bad = judge(
            &deployment(),
            &samples(0.08, 0.2, 30, 1.0),
            &baseline,
            &config,
        );
        assert_eq!(bad[0].metric, "error_rate");
        assert_eq!(bad[0].metric_result, "high");
        assert_eq!(bad[0].verdict, "fail");
        let good = judge(
            &deployment(),
            &samples(0.01, 0.2, 30, 0.5),
            &baseline,
            &config,
        );
        assert!(good.iter().all(|r| r.metric_result == "pass"), "{good:?}");
        assert_eq!(good[0].verdict, "pass");
        assert_eq!(good[0].score, 100.0);
    }

    #[test]
    fn missing_or_thin_data_is_said_not_passed() {
        let config = CanaryConfig::default();
        let baseline = samples(0.01, 0.2, 30, 1.0);
        let none = judge(&deployment(), &[], &baseline, &config);
        assert!(none.iter().all(|r| r.metric_result == "no_data"));
        assert_eq!(none[0].verdict, "no_data");
        let thin = judge(
            &deployment(),
            &samples(0.01, 0.2, 4, 1.0),
            &baseline,
            &config,
        );
        assert_eq!(thin[0].metric_result, "insufficient_data");
        assert_eq!(thin[0].verdict, "insufficient_data");
        // Samples outside the window do not count.
        let mut late = samples(0.01, 0.2, 30, 1.0);
        for s in &mut late {
            s.at += 60 * MICROS_PER_MINUTE;
        }
        assert_eq!(
            judge(&deployment(), &late, &baseline, &config)[0].verdict,
            "no_data"
        );
    }

    #[test]
    fn a_non_critical_regression_is_marginal() {
        let config = CanaryConfig::default();
        let results = [
            ("pass", true),
            ("high", false),
            ("pass", false),
            ("pass", false),
        ];
        assert_eq!(overall(&results, &config), (75.0, "marginal"));
        let two = [
            ("pass", true),
            ("high", false),
            ("high", false),
            ("pass", false),
        ];
        assert_eq!(overall(&two, &config), (50.0, "fail"));
    }
}
