//! How good a probability is: ranking (ROC-AUC, PR-AUC), calibration (Brier score, a reliability
//! curve) and effort-aware measures (recall at 20% effort, Popt), as used to judge just-in-time
//! defect models.
//!
//! These few formulas are written here rather than taken from a crate: the Rust ML crates that
//! have them (linfa, smartcore) would bring a second array stack for a handful of sums, and none
//! has the effort-aware measures.

use serde::{Deserialize, Serialize};

/// Share of the total effort (lines changed) that effort-aware recall is measured at.
pub const EFFORT_SHARE: f64 = 0.2;

/// Bins of the reliability curve.
const CALIBRATION_BINS: usize = 10;

/// The measures of one scorer on one set of rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // fields named for what they hold
pub struct Evaluation {
    pub rows: usize,
    pub positives: usize,
    /// Area under the ROC curve; `None` when only one class is present.
    pub roc_auc: Option<f64>,
    /// Average precision (area under the precision-recall curve).
    pub pr_auc: Option<f64>,
    /// Mean squared error of the probability.
    pub brier: f64,
    /// Share of bad rows found when inspecting rows in order of risk per line changed, until 20%
    /// of all lines changed are inspected.
    pub recall_at_20pct_effort: Option<f64>,
    /// Effort-aware ranking against the best and worst possible orders (1 = best).
    pub popt: Option<f64>,
    pub calibration: Vec<CalibrationBin>,
}

/// One bin of the reliability curve: rows whose probability falls in `[lower, upper)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // fields named for what they hold
pub struct CalibrationBin {
    pub lower: f64,
    pub upper: f64,
    pub rows: usize,
    pub mean_probability: f64,
    pub observed_rate: f64,
}

/// Measures `probability` against `label`, with `effort` (lines changed) for the effort-aware
/// measures. The three slices have one entry per row.
pub fn evaluate(probability: &[f64], label: &[bool], effort: &[f64]) -> Evaluation {
    let rows = label.len();
    let positives = label.iter().filter(|l| **l).count();
    let brier = if rows == 0 {
        0.0
    } else {
        probability
            .iter()
            .zip(label)
            .map(|(p, l)| (p - f64::from(u8::from(*l))).powi(2))
            .sum::<f64>()
            / rows as f64
    };
    Evaluation {
        rows,
        positives,
        roc_auc: roc_auc(probability, label),
        pr_auc: average_precision(probability, label),
        brier,
        recall_at_20pct_effort: recall_at_effort(probability, label, effort, EFFORT_SHARE),
        popt: popt(probability, label, effort),
        calibration: calibration_curve(probability, label),
    }
}

/// ROC-AUC as the Mann-Whitney statistic: the chance that a random positive scores above a
/// random negative, ties counting half.
pub fn roc_auc(score: &[f64], label: &[bool]) -> Option<f64> {
    let positives = label.iter().filter(|l| **l).count();
    let negatives = label.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let ranks = average_ranks(score);
    let positive_rank_sum: f64 = ranks
        .iter()
        .zip(label)
        .filter(|(_, l)| **l)
        .map(|(r, _)| r)
        .sum();
    let p = positives as f64;
    Some((positive_rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// The median of `values`, None when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

/// 1-based ranks of `values` in ascending order, tied values sharing their mean rank.
pub fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|a, b| values[*a].total_cmp(&values[*b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Ranks start..end (0-based) share their mean, 1-based.
        let mean = (start + end + 1) as f64 / 2.0;
        for i in &order[start..end] {
            ranks[*i] = mean;
        }
        start = end;
    }
    ranks
}

/// Average precision: precision at each positive, in descending score order, averaged. Tied
/// scores are taken as one step, so the order of rows does not matter.
pub fn average_precision(score: &[f64], label: &[bool]) -> Option<f64> {
    let positives = label.iter().filter(|l| **l).count();
    if positives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..score.len()).collect();
    order.sort_by(|a, b| score[*b].total_cmp(&score[*a]));
    let (mut seen, mut hits, mut area) = (0usize, 0usize, 0.0);
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && score[order[end]] == score[order[start]] {
            end += 1;
        }
        let new_hits = order[start..end].iter().filter(|i| label[**i]).count();
        seen += end - start;
        hits += new_hits;
        area += (new_hits as f64 / positives as f64) * (hits as f64 / seen as f64);
        start = end;
    }
    Some(area)
}

/// Reliability curve over equal-width probability bins; empty bins are left out.
pub fn calibration_curve(probability: &[f64], label: &[bool]) -> Vec<CalibrationBin> {
    let mut sums = [(0usize, 0.0f64, 0usize); CALIBRATION_BINS];
    for (p, l) in probability.iter().zip(label) {
        let bin = ((p * CALIBRATION_BINS as f64) as usize).min(CALIBRATION_BINS - 1);
        sums[bin].0 += 1;
        sums[bin].1 += p;
        sums[bin].2 += usize::from(*l);
    }
    sums.iter()
        .enumerate()
        .filter(|(_, (n, _, _))| *n > 0)
        .map(|(i, (n, p, hits))| CalibrationBin {
            lower: i as f64 / CALIBRATION_BINS as f64,
            upper: (i + 1) as f64 / CALIBRATION_BINS as f64,
            rows: *n,
            mean_probability: p / *n as f64,
            observed_rate: *hits as f64 / *n as f64,
        })
        .collect()
}

/// Rows in effort-aware order: highest score per line changed first (a change of no lines counts
/// as one line), ties broken by smaller effort then by row, so the order is fixed.
fn effort_order(score: &[f64], effort: &[f64]) -> Vec<usize> {
    let density = |i: usize| score[i] / effort[i].max(1.0);
    let mut order: Vec<usize> = (0..score.len()).collect();
    order.sort_by(|a, b| {
        density(*b)
            .total_cmp(&density(*a))
            .then(effort[*a].total_cmp(&effort[*b]))
            .then(a.cmp(b))
    });
    order
}

/// Share of positives found when rows are inspected in effort-aware order until `share` of the
/// total effort is spent.
pub fn recall_at_effort(score: &[f64], label: &[bool], effort: &[f64], share: f64) -> Option<f64> {
    let positives = label.iter().filter(|l| **l).count();
    let total: f64 = effort.iter().map(|e| e.max(1.0)).sum();
    if positives == 0 || total <= 0.0 {
        return None;
    }
    let mut spent = 0.0;
    let mut found = 0usize;
    for i in effort_order(score, effort) {
        spent += effort[i].max(1.0);
        if spent > share * total {
            break;
        }
        found += usize::from(label[i]);
    }
    Some(found as f64 / positives as f64)
}

/// Popt (Kamei et al.): `1 - (optimal - model) / (optimal - worst)`, the areas under the curves
/// of cumulative share of positives found against cumulative share of effort spent.
pub fn popt(score: &[f64], label: &[bool], effort: &[f64]) -> Option<f64> {
    let truth: Vec<f64> = label.iter().map(|l| f64::from(u8::from(*l))).collect();
    let positives = truth.iter().sum::<f64>();
    let total_effort: f64 = effort.iter().map(|e| e.max(1.0)).sum();
    if positives == 0.0 || total_effort <= 0.0 {
        return None;
    }
    let area = |order: &[usize]| -> f64 {
        let (mut found, mut area) = (0.0, 0.0);
        for i in order {
            let spent = effort[*i].max(1.0) / total_effort;
            let gained = truth[*i] / positives;
            area += spent * (found + gained / 2.0);
            found += gained;
        }
        area
    };
    let best_order = effort_order(&truth, effort);
    let optimal = area(&best_order);
    // The worst order is the best one backwards: clean rows first, then the largest bad ones.
    let worst_order: Vec<usize> = best_order.into_iter().rev().collect();
    let worst = area(&worst_order);
    let model = area(&effort_order(score, effort));
    if optimal - worst <= f64::EPSILON {
        return None;
    }
    Some(1.0 - (optimal - model) / (optimal - worst))
}

/// Platt scaling: `sigmoid(a·logit(p) + b)`, fitted by Newton's method on held-out rows, so that
/// probabilities mean what they say.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlattScaling {
    /// Slope on the logit.
    pub a: f64,
    /// Intercept.
    pub b: f64,
}

impl PlattScaling {
    /// The identity, for when there is nothing to fit on.
    pub const IDENTITY: PlattScaling = PlattScaling { a: 1.0, b: 0.0 };

    /// The least slope a fit may have: calibration keeps the order of the scores.
    const MIN_SLOPE: f64 = 1e-3;

    /// Fits on raw probabilities and labels; falls back to the identity when one class is absent.
    pub fn fit(probability: &[f64], label: &[bool]) -> PlattScaling {
        let positives = label.iter().filter(|l| **l).count();
        if positives == 0 || positives == label.len() {
            return PlattScaling::IDENTITY;
        }
        // Platt's smoothed targets keep the fit finite on separable data.
        let hi = (positives as f64 + 1.0) / (positives as f64 + 2.0);
        let lo = 1.0 / ((label.len() - positives) as f64 + 2.0);
        let xs: Vec<f64> = probability.iter().map(|p| logit(*p)).collect();
        let ys: Vec<f64> = label.iter().map(|l| if *l { hi } else { lo }).collect();
        let loss = |a: f64, b: f64| -> f64 {
            xs.iter()
                .zip(&ys)
                .map(|(x, y)| {
                    let p = sigmoid(a * x + b).clamp(1e-12, 1.0 - 1e-12);
                    -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
                })
                .sum()
        };
        let (mut a, mut b) = (1.0, 0.0);
        let mut current = loss(a, b);
        for _ in 0..100 {
            let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 1e-9, 0.0, 1e-9);
            for (x, y) in xs.iter().zip(&ys) {
                let p = sigmoid(a * x + b);
                let w = p * (1.0 - p);
                ga += (p - y) * x;
                gb += p - y;
                haa += w * x * x;
                hab += w * x;
                hbb += w;
            }
            let det = haa * hbb - hab * hab;
            if det.abs() < 1e-12 {
                break;
            }
            let da = (hbb * ga - hab * gb) / det;
            let db = (haa * gb - hab * ga) / det;
            // Newton's step, halved until the loss goes down: a full step can overshoot on
            // nearly separable data.
            let mut step = 1.0;
            while step > 1e-6 && loss(a - step * da, b - step * db) > current {
                step /= 2.0;
            }
            if step <= 1e-6 {
                break;
            }
            a -= step * da;
            b -= step * db;
            current = loss(a, b);
            if (step * da).abs() < 1e-10 && (step * db).abs() < 1e-10 {
                break;
            }
        }
        if !(a.is_finite() && b.is_finite()) {
            return PlattScaling::IDENTITY;
        }
        if a < Self::MIN_SLOPE {
            // Calibration rescales a score; it must not reverse its order. A slope that wants
            // to be negative says the score ranks the validation rows worse than chance: keep
            // its order with the least slope and fit the intercept alone (the base rate).
            a = Self::MIN_SLOPE;
            b = 0.0;
            for _ in 0..100 {
                let (mut gradient, mut curvature) = (0.0, 1e-9);
                for (x, y) in xs.iter().zip(&ys) {
                    let p = sigmoid(a * x + b);
                    gradient += p - y;
                    curvature += p * (1.0 - p);
                }
                let step = gradient / curvature;
                b -= step;
                if step.abs() < 1e-10 {
                    break;
                }
            }
        }
        PlattScaling { a, b }
    }

    /// The calibrated probability.
    pub fn apply(&self, probability: f64) -> f64 {
        sigmoid(self.a * logit(probability) + self.b)
    }
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-7, 1.0 - 1e-7);
    (p / (1.0 - p)).ln()
}

/// The logistic function.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ties_as_half() {
        let label = [false, false, true, true];
        assert_eq!(roc_auc(&[0.1, 0.4, 0.35, 0.8], &label), Some(0.75));
        assert_eq!(roc_auc(&[0.5, 0.5, 0.5, 0.5], &label), Some(0.5));
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
    }

    #[test]
    fn average_precision_matches_a_hand_computed_case() {
        // Descending: 0.9 (pos), 0.8 (neg), 0.7 (pos): (1/1 + 2/3) / 2.
        let ap = average_precision(&[0.9, 0.8, 0.7], &[true, false, true]).unwrap();
        assert!((ap - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn effort_aware_measures_reward_small_risky_rows_first() {
        let label = [true, false, false, false, true];
        let effort = [10.0, 100.0, 100.0, 100.0, 10.0];
        let perfect = [0.9, 0.1, 0.1, 0.1, 0.9];
        // Per line changed, the clean rows look riskier here.
        let reversed = [0.01, 0.9, 0.9, 0.9, 0.01];
        assert_eq!(recall_at_effort(&perfect, &label, &effort, 0.2), Some(1.0));
        assert_eq!(recall_at_effort(&reversed, &label, &effort, 0.2), Some(0.0));
        assert!((popt(&perfect, &label, &effort).unwrap() - 1.0).abs() < 1e-9);
        assert!(popt(&reversed, &label, &effort).unwrap() < 0.05);
    }

    #[test]
    fn platt_scaling_corrects_overconfident_scores() {
        // Scores say 0.8 where the truth is 50%, and 0.4 where it is 10%.
        let mut probability = vec![0.8; 400];
        probability.extend([0.4; 400]);
        let label: Vec<bool> = (0..800)
            .map(|i| if i < 400 { i % 2 == 0 } else { i % 10 == 0 })
            .collect();
        let fitted = PlattScaling::fit(&probability, &label);
        assert!((fitted.apply(0.8) - 0.5).abs() < 0.02, "{fitted:?}");
        assert!((fitted.apply(0.4) - 0.1).abs() < 0.02, "{fitted:?}");
    }

    #[test]
    fn platt_scaling_never_reverses_the_order() {
        // High scores are the good rows here: a free fit would flip the order.
        let mut probability = vec![0.8; 100];
        probability.extend([0.2; 100]);
        let label: Vec<bool> = (0..200).map(|i| i >= 100 && i % 3 == 0).collect();
        let fitted = PlattScaling::fit(&probability, &label);
        assert!(fitted.a > 0.0, "{fitted:?}");
        assert!(fitted.apply(0.8) > fitted.apply(0.2));
        // With no usable slope, the calibrated probability is about the base rate.
        assert!(
            (fitted.apply(0.5) - 34.0 / 200.0).abs() < 0.02,
            "{fitted:?}"
        );
    }

    #[test]
    fn calibration_bins_hold_their_rows() {
        let curve = calibration_curve(&[0.05, 0.07, 0.95], &[false, true, true]);
        assert_eq!(curve.len(), 2);
        assert_eq!(curve[0].rows, 2);
        assert_eq!(curve[0].observed_rate, 0.5);
        assert_eq!(curve[1].upper, 1.0);
    }
}
