//! The health of every test from its history: a flakiness score with its evidence and a
//! quarantine suggestion, and tests that are redundant because another test failed in exactly
//! the same runs.
//!
//! The score is the lower bound of the 95% Wilson interval of the flaky rate (runs in which the
//! test failed and then passed on a retry, over its runs): a test that flaked 2 times in 3 runs
//! is less surely flaky than one that flaked 20 times in 100.

use std::collections::BTreeMap;

use maestro_datasets::schema::{TestHealth, Ts};

use crate::test_history::Outcome;
use crate::test_selection::Walk;

/// Quarantine a test that is surely flaky in at least this share of its runs.
const QUARANTINE_SCORE: f64 = 0.05;
/// Watch a test that flaked at least this many times.
const WATCH_FLAKES: u32 = 2;
/// Redundancy needs at least this many shared failing runs.
const MIN_SHARED_FAILURES: usize = 2;

/// z of a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;

/// Lower bound of the Wilson score interval of `successes` in `trials` at 95%.
pub fn wilson_lower_bound(successes: u32, trials: u32) -> f64 {
    if trials == 0 {
        return 0.0;
    }
    let n = f64::from(trials);
    let p = f64::from(successes) / n;
    let z2 = Z95 * Z95;
    let centre = p + z2 / (2.0 * n);
    let spread = Z95 * ((p * (1.0 - p) + z2 / (4.0 * n)) / n).sqrt();
    ((centre - spread) / (1.0 + z2 / n)).max(0.0)
}

/// One row per test the walk has seen, in test id order.
pub fn test_health(walk: &Walk) -> Vec<TestHealth> {
    let as_of = walk.runs.last().map_or(0, |r| r.at);
    // Per test: the runs it failed in, and when it last flaked.
    let mut failed_runs: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut last_flaky: BTreeMap<&str, i64> = BTreeMap::new();
    for (r, run) in walk.runs.iter().enumerate() {
        for test in &run.tests {
            match test.outcome {
                Outcome::Failed => failed_runs.entry(&test.case.test_id).or_default().push(r),
                Outcome::Flaky => {
                    last_flaky.insert(&test.case.test_id, run.at);
                }
                Outcome::Passed | Outcome::Skipped => {}
            }
        }
    }
    // Tests with the same failing runs, grouped by those runs; the first id names the group.
    let mut by_failures: BTreeMap<&[usize], Vec<&str>> = BTreeMap::new();
    for (test, runs) in &failed_runs {
        if runs.len() >= MIN_SHARED_FAILURES {
            by_failures.entry(runs.as_slice()).or_default().push(test);
        }
    }
    let mut redundant_with: BTreeMap<&str, &str> = BTreeMap::new();
    for group in by_failures.values().filter(|g| g.len() > 1) {
        for test in &group[1..] {
            redundant_with.insert(test, group[0]);
        }
    }

    walk.history
        .tests()
        .map(|(test_id, state)| {
            let stats = walk.history.stats(test_id).unwrap_or_default();
            let score = wilson_lower_bound(state.flakes, state.runs);
            let suggestion = if score >= QUARANTINE_SCORE {
                "quarantine"
            } else if state.flakes >= WATCH_FLAKES {
                "watch"
            } else {
                "ok"
            };
            let last = last_flaky.get(test_id).copied();
            let evidence = match last {
                Some(at) => format!(
                    "failed then passed on retry in {} of {} runs, last on {}; failed outright in {}",
                    state.flakes,
                    state.runs,
                    Ts(at).date(),
                    state.failures
                ),
                None => format!(
                    "never flaky in {} runs; failed outright in {}",
                    state.runs, state.failures
                ),
            };
            TestHealth {
                test_id: test_id.to_string(),
                service: state.service.clone(),
                runs: i64::from(state.runs),
                failures: i64::from(state.failures),
                flaky_runs: i64::from(state.flakes),
                flaky_rate: stats.flaky_rate,
                flakiness_score: score,
                last_flaky_at: last.map(Ts),
                evidence,
                suggestion: suggestion.to_string(),
                redundant_with: redundant_with.get(test_id).map(|t| t.to_string()),
                mean_duration_s: stats.mean_duration_s,
                as_of: Ts(as_of),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_score_grows_with_evidence() {
        assert_eq!(wilson_lower_bound(0, 10), 0.0);
        let few = wilson_lower_bound(2, 3);
        let many = wilson_lower_bound(20, 30);
        assert!(few < many && many < 2.0 / 3.0, "{few} {many}");
        // The textbook value for 10 of 100: 0.0552.
        assert!((wilson_lower_bound(10, 100) - 0.0552).abs() < 1e-3);
    }
}
