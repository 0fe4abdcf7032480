//! Test selection: a candle model of the chance that a test fails for a change, the policy that
//! turns its probabilities into a selection, and the replay that judges both over history.
//!
//! The policy ranks tests by failure probability per second of test time and selects from the
//! top until a target is met: a confidence (the estimated chance that, if the change breaks any
//! test, a selected one fails) or a budget (a share of the suite's time, or seconds). Tests never
//! seen before and must-run tests are always selected, ahead of the rest.
//!
//! The replay walks history in time order. Every `retrain_days` it trains a model on the pairs
//! of the runs before that moment only, then ranks the suites of the following runs with it.
//! Beside the model it ranks the same suites with four baselines, each given the time the model's
//! selection took on that run: run everything, random order, most recently failed first, and
//! historical failure rate.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use maestro_datasets::schema::{TestSelectionReplay, Ts};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};
use crate::metrics::PlattScaling;
use crate::network::{Matrix, ModelKind, Network, TrainConfig, TrainReport};
use crate::risk::Scaler;
use crate::test_history::{
    ChangeFacts, ChangePaths, History, Outcome, PAIR_FEATURES, TestCase, TestOutcome, TestRun,
    TestStats, read_changes, read_runs, service_distances,
};
use maestro_datasets::lake::Lake;

const DAY_MICROS: i64 = 86_400_000_000;

/// Durations below this count as this, so that probability per second stays finite.
const MIN_SECONDS: f64 = 0.01;

/// What to select until.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Estimated chance of catching a failing change, 0 to 1.
    Confidence(f64),
    /// A share of the suite's time, 0 to 1.
    TimeShare(f64),
    /// Seconds of test time.
    Seconds(f64),
}

impl Target {
    /// The target as people write it: "confidence 0.95", "budget 30%", "budget 900s".
    pub fn label(&self) -> String {
        match self {
            Target::Confidence(c) => format!("confidence {c}"),
            // Rounded so that 0.3 reads 30%, not 30.000000000000004%, and a third 33.33%.
            Target::TimeShare(s) => format!("budget {}%", (1e4 * s).round() / 1e2),
            Target::Seconds(s) => format!("budget {s}s"),
        }
    }

    /// A budget as people write it: a share of the suite's time ("30%") or a duration ("90s",
    /// "15m", "1h").
    pub fn parse_budget(text: &str) -> Result<Target> {
        let text = text.trim();
        let number = |digits: &str| -> Result<f64> {
            digits
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| {
                    Error::Data(format!(
                        "budget {text:?}: expected a share like 30% or a duration like 90s, 15m or 1h"
                    ))
                })
        };
        if let Some(percent) = text.strip_suffix('%') {
            let share = number(percent)? / 100.0;
            if share > 1.0 {
                return Err(Error::Data(format!(
                    "budget {text:?}: more than 100% of the suite"
                )));
            }
            return Ok(Target::TimeShare(share));
        }
        for (unit, seconds) in [("s", 1.0), ("m", 60.0), ("h", 3600.0)] {
            if let Some(value) = text.strip_suffix(unit) {
                return Ok(Target::Seconds(number(value)? * seconds));
            }
        }
        Err(Error::Data(format!(
            "budget {text:?}: expected a share like 30% or a duration like 90s, 15m or 1h"
        )))
    }
}

/// Why a test was selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Never seen before: nothing is known of it.
    NewTest,
    /// Listed as must-run in the configuration.
    MustRun,
    /// Among the highest failure probability per second, until the target was met.
    Ranked,
    /// Not selected.
    Skipped,
}

/// One test to consider for a change.
#[derive(Debug, Clone)]
#[allow(missing_docs)] // fields named for what they hold
pub struct Candidate {
    pub test_id: String,
    pub probability: f64,
    /// Expected seconds: the test's mean duration so far.
    pub duration_s: f64,
    pub seen_before: bool,
    pub must_run: bool,
}

/// A policy's answer for one change.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Candidate indices, first to run first.
    pub order: Vec<usize>,
    /// Per candidate (in candidate order): why it was selected, or `Skipped`.
    pub reasons: Vec<Reason>,
    /// Estimated chance that the selection catches a failing change, by the probabilities.
    pub confidence: f64,
    /// Expected seconds of the selected tests.
    pub selected_seconds: f64,
    /// Expected seconds of every candidate.
    pub total_seconds: f64,
}

impl Selection {
    /// Whether candidate `i` is selected.
    pub fn selected(&self, i: usize) -> bool {
        self.reasons[i] != Reason::Skipped
    }
}

/// Ranks `candidates` by failure probability per second and selects until `target` holds.
pub fn select(candidates: &[Candidate], target: Target) -> Selection {
    let per_second: Vec<f64> = candidates
        .iter()
        .map(|c| c.probability / c.duration_s.max(MIN_SECONDS))
        .collect();
    select_in_order(candidates, &rank(candidates, &per_second), target)
}

/// Candidate indices by `score`, highest first (ties by test id), after the never-seen and
/// must-run tests.
fn rank(candidates: &[Candidate], score: &[f64]) -> Vec<usize> {
    let always = |c: &Candidate| c.must_run || !c.seen_before;
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|a, b| {
        always(&candidates[*b])
            .cmp(&always(&candidates[*a]))
            .then(score[*b].total_cmp(&score[*a]))
            .then(candidates[*a].test_id.cmp(&candidates[*b].test_id))
    });
    order
}

/// Selects down `order` until `target` holds; never-seen and must-run tests always.
fn select_in_order(candidates: &[Candidate], order: &[usize], target: Target) -> Selection {
    let total_seconds: f64 = candidates.iter().map(|c| c.duration_s).sum();
    let log_none = |c: &Candidate| (-c.probability.clamp(0.0, 1.0 - 1e-12)).ln_1p();
    // Failures taken as independent, a selected failure means a failing change, so the chance of
    // catching a failing change is P(some selected test fails) / P(some test fails).
    let p_any_fails = -candidates.iter().map(log_none).sum::<f64>().exp_m1();
    let confidence_of = |log_none_selected: f64| {
        if p_any_fails <= 0.0 {
            1.0
        } else {
            (-log_none_selected.exp_m1() / p_any_fails).min(1.0)
        }
    };
    let mut reasons = vec![Reason::Skipped; candidates.len()];
    let mut log_none_selected = 0.0f64;
    let mut selected_seconds = 0.0;
    for i in order {
        let c = &candidates[*i];
        let reason = if !c.seen_before {
            Reason::NewTest
        } else if c.must_run {
            Reason::MustRun
        } else {
            let met = match target {
                Target::Confidence(goal) => confidence_of(log_none_selected) >= goal,
                Target::TimeShare(share) => {
                    selected_seconds + c.duration_s > share * total_seconds + 1e-9
                }
                Target::Seconds(limit) => selected_seconds + c.duration_s > limit + 1e-9,
            };
            if met {
                continue;
            }
            Reason::Ranked
        };
        reasons[*i] = reason;
        log_none_selected += log_none(c);
        selected_seconds += c.duration_s;
    }
    Selection {
        order: order.to_vec(),
        reasons,
        confidence: confidence_of(log_none_selected),
        selected_seconds,
        total_seconds,
    }
}

/// A trained test-failure model.
#[derive(Debug, Clone)]
#[allow(missing_docs)] // fields named for what they hold
pub struct TestModel {
    pub kind: ModelKind,
    pub features: Vec<String>,
    pub scaler: Scaler,
    pub network: Network,
    pub calibration: PlattScaling,
    pub report: TrainReport,
}

impl TestModel {
    /// Calibrated failure probabilities of `rows` of row-major pair features `values`.
    pub fn predict(&self, values: &[f64], rows: &[usize]) -> Result<Vec<f64>> {
        let x = self.scaler.transform_rows(values, rows);
        Ok(self
            .network
            .predict(&x, self.features.len())?
            .into_iter()
            .map(|p| self.calibration.apply(p))
            .collect())
    }
}

/// A change as CI describes it when it asks which tests to run.
#[derive(Debug, Clone, Default)]
#[allow(missing_docs)] // fields named for what they hold
pub struct ChangeRequest {
    /// The service whose suite runs; `None` when the history holds one service only.
    pub service: Option<String>,
    /// Changed paths; empty when unknown, and then history alone ranks the tests.
    pub files: Vec<String>,
    pub author: Option<String>,
    /// Lines added plus deleted, when known.
    pub size: Option<f64>,
    /// When the suite runs, microseconds: the recent failure windows end here.
    pub at: i64,
    /// The suite's test ids, when CI knows them; else the service's latest full suite. Ids the
    /// history has never seen are new tests.
    pub tests: Option<Vec<String>>,
}

/// One test of a served selection.
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs)] // fields named for what they hold
pub struct TestPick {
    pub test_id: String,
    pub name: String,
    pub classname: Option<String>,
    pub file: Option<String>,
    /// Calibrated chance that it fails for this change; `None` for a new test.
    pub probability: Option<f64>,
    /// Expected seconds: its mean duration so far.
    pub duration_s: f64,
    pub selected: bool,
    pub reason: Reason,
    /// Shard (1-based) of a selected test, once the selection is split.
    pub shard: Option<usize>,
}

/// What `select-tests` answers: the suite in the order to run it, selected tests first.
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs)] // fields named for what they hold
pub struct ServedSelection {
    pub service: String,
    pub target: Target,
    pub confidence: f64,
    pub selected_tests: usize,
    pub selected_seconds: f64,
    pub total_seconds: f64,
    pub tests: Vec<TestPick>,
    /// Expected seconds of each shard, once the selection is split.
    pub shard_seconds: Vec<f64>,
}

impl ServedSelection {
    /// Splits the selected tests into `shards` shards of about equal expected time: longest
    /// test first, each to the shard with the least time so far. Within a shard the tests keep
    /// the fail-fast order.
    pub fn split_into_shards(&mut self, shards: usize) {
        let shards = shards.max(1);
        let mut load = vec![0.0f64; shards];
        let mut by_duration: Vec<usize> = (0..self.tests.len())
            .filter(|i| self.tests[*i].selected)
            .collect();
        by_duration.sort_by(|a, b| {
            self.tests[*b]
                .duration_s
                .total_cmp(&self.tests[*a].duration_s)
                .then(a.cmp(b))
        });
        for i in by_duration {
            let lightest = (0..shards)
                .min_by(|a, b| load[*a].total_cmp(&load[*b]).then(a.cmp(b)))
                .unwrap_or(0);
            load[lightest] += self.tests[i].duration_s;
            self.tests[i].shard = Some(lightest + 1);
        }
        self.shard_seconds = load;
    }
}

/// Ranks the suite of `request`'s service for its change with `model` and the saved `history`,
/// and selects until `target` holds; `must_run` tests are always selected.
pub fn select_for_change(
    model: &TestModel,
    history: &History,
    request: &ChangeRequest,
    target: Target,
    must_run: &[String],
) -> Result<ServedSelection> {
    let service = match &request.service {
        Some(service) => service.clone(),
        None => {
            let services: Vec<&str> = history.services().collect();
            match services.as_slice() {
                [only] => only.to_string(),
                _ => {
                    return Err(Error::Data(format!(
                        "name the service whose suite runs: the history holds {} ({})",
                        services.len(),
                        services.join(", ")
                    )));
                }
            }
        }
    };
    let test_ids: Vec<String> = match &request.tests {
        Some(tests) => tests.clone(),
        None => history.suite(&service).to_vec(),
    };
    if test_ids.is_empty() {
        return Err(Error::Data(format!(
            "no suite known for service {service:?}: the history has no full run of it; pass the suite's tests"
        )));
    }
    let change = ChangeFacts {
        service: service.clone(),
        author: request.author.clone(),
        files: request.files.clone(),
        size: request.size.unwrap_or(0.0),
        merged_at: request.at,
    };
    let outcomes: Vec<TestOutcome> = test_ids
        .iter()
        .map(|id| match history.test(id) {
            Some(state) => TestCase {
                test_id: id.clone(),
                name: state.name.clone(),
                suite: state.suite.clone(),
                file: state.file.clone(),
                classname: state.classname.clone(),
            },
            // A new test: its id is `classname::name` as the JUnit reader writes it.
            None => {
                let (classname, name) = match id.rsplit_once("::") {
                    Some((class, name)) => (Some(class.to_string()), name.to_string()),
                    None => (None, id.clone()),
                };
                TestCase {
                    test_id: id.clone(),
                    name,
                    suite: String::new(),
                    file: None,
                    classname,
                }
            }
        })
        .map(|case| TestOutcome {
            case: Arc::new(case),
            outcome: Outcome::Passed,
            duration_s: 0.0,
        })
        .collect();
    let mut values = Vec::with_capacity(outcomes.len() * PAIR_FEATURES.len());
    let paths = ChangePaths::new(&change, history);
    for test in &outcomes {
        values.extend(history.features(&paths, &service, test, request.at));
    }
    let rows: Vec<usize> = (0..outcomes.len()).collect();
    let probabilities = model.predict(&values, &rows)?;
    let candidates: Vec<Candidate> = outcomes
        .iter()
        .zip(probabilities)
        .map(|(test, probability)| {
            let stats = history.stats(&test.case.test_id);
            Candidate {
                test_id: test.case.test_id.clone(),
                probability,
                duration_s: stats.map_or(0.0, |s| s.mean_duration_s),
                seen_before: stats.is_some(),
                must_run: must_run.contains(&test.case.test_id),
            }
        })
        .collect();
    let selection = select(&candidates, target);
    let mut order = selection.order.clone();
    // Selected tests first, each group in rank order.
    order.sort_by_key(|i| !selection.selected(*i));
    // Each test is picked once: its texts move into the answer rather than being copied.
    let mut outcomes = outcomes;
    let tests = order
        .iter()
        .map(|i| {
            let candidate = &candidates[*i];
            let case = Arc::make_mut(&mut outcomes[*i].case);
            TestPick {
                test_id: std::mem::take(&mut case.test_id),
                name: std::mem::take(&mut case.name),
                classname: case.classname.take(),
                file: case.file.take(),
                probability: candidate.seen_before.then_some(candidate.probability),
                duration_s: candidate.duration_s,
                selected: selection.selected(*i),
                reason: selection.reasons[*i],
                shard: None,
            }
        })
        .collect();
    Ok(ServedSelection {
        service,
        target,
        confidence: selection.confidence,
        selected_tests: (0..candidates.len())
            .filter(|i| selection.selected(*i))
            .count(),
        selected_seconds: selection.selected_seconds,
        total_seconds: selection.total_seconds,
        tests,
        shard_seconds: Vec::new(),
    })
}

/// (change, test) pairs of full suites, in time order.
#[derive(Debug, Clone, Default)]
pub struct Pairs {
    /// Row-major features, `PAIR_FEATURES.len()` per row.
    pub values: Vec<f64>,
    /// Index of each pair's run in the run list.
    pub run: Vec<usize>,
    /// Index of each pair's test in its run.
    pub test: Vec<usize>,
    /// Start of each pair's run, microseconds.
    pub at: Vec<i64>,
    /// Whether the test really failed (flaky is not failed).
    pub failed: Vec<bool>,
    /// What the history said of the test before the run; `None` when never seen.
    pub stats: Vec<Option<TestStats>>,
}

impl Pairs {
    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.at.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    fn drop_oldest(&mut self, count: usize) {
        self.values.drain(..count * PAIR_FEATURES.len());
        self.run.drain(..count);
        self.test.drain(..count);
        self.at.drain(..count);
        self.failed.drain(..count);
        self.stats.drain(..count);
    }
}

/// The facts of a run's change; a change the lake does not hold has no files or author.
fn change_of(run: &TestRun, changes: &HashMap<String, ChangeFacts>) -> ChangeFacts {
    run.change_id
        .as_ref()
        .and_then(|id| changes.get(id))
        .cloned()
        .unwrap_or_else(|| ChangeFacts {
            service: run.service.clone(),
            ..Default::default()
        })
}

/// Which pairs a walk keeps: every pair from `from` on, and the newest `before` pairs before
/// it, which is all a training before `from` learns from. The walk still folds every run into
/// the history.
#[derive(Debug, Clone, Copy)]
pub struct PairWindow {
    /// Start of the pairs kept in full, microseconds.
    pub from: i64,
    /// How many of the newest pairs before `from` are kept.
    pub before: usize,
}

impl PairWindow {
    /// Every pair.
    pub const ALL: PairWindow = PairWindow {
        from: i64::MIN,
        before: 0,
    };
}

/// Walks `runs` in order: the pairs of every full suite run for a change, each featurised from
/// the history before its run. Returns the pairs and the history after the last run.
pub fn build_pairs(
    runs: &[TestRun],
    changes: &HashMap<String, ChangeFacts>,
    history: History,
) -> (Pairs, History) {
    build_pairs_within(runs, changes, history, PairWindow::ALL)
}

/// As `build_pairs`, keeping only the pairs of `window`.
pub fn build_pairs_within(
    runs: &[TestRun],
    changes: &HashMap<String, ChangeFacts>,
    mut history: History,
    window: PairWindow,
) -> (Pairs, History) {
    let first_kept = first_run_kept(runs, &history, window);
    let mut pairs = Pairs::default();
    for (r, run) in runs.iter().enumerate() {
        let change = change_of(run, changes);
        if r >= first_kept && history.is_full(run) && run.change_id.is_some() {
            let paths = ChangePaths::new(&change, &history);
            for (t, test) in run.tests.iter().enumerate() {
                if test.outcome == Outcome::Skipped {
                    continue;
                }
                pairs
                    .values
                    .extend(history.features(&paths, &run.service, test, run.at));
                pairs.run.push(r);
                pairs.test.push(t);
                pairs.at.push(run.at);
                pairs.failed.push(test.outcome == Outcome::Failed);
                pairs.stats.push(history.stats(&test.case.test_id));
            }
        }
        history.observe(run, &change);
    }
    let before = pairs.at.partition_point(|at| *at < window.from);
    pairs.drop_oldest(before.saturating_sub(window.before));
    (pairs, history)
}

/// The first run whose pairs `window` keeps: a walk over the suite sizes alone counts the
/// pairs each run will give, so that no pair is featurised only to be dropped.
fn first_run_kept(runs: &[TestRun], history: &History, window: PairWindow) -> usize {
    let mut sizes = history.suite_sizes().clone();
    let mut pair_counts = Vec::with_capacity(runs.len());
    for run in runs {
        let full = sizes.is_full(run) && run.change_id.is_some();
        pair_counts.push(if full { run.executed() } else { 0 });
        sizes.observe(run);
    }
    let mut first = runs.partition_point(|run| run.at < window.from);
    let mut before = 0;
    while first > 0 && before < window.before {
        first -= 1;
        before += pair_counts[first];
    }
    first
}

/// Trains on `rows` of `pairs` (in time order): the latest `validation_share` of them stop the
/// training early and calibrate it.
pub fn train(
    pairs: &Pairs,
    rows: &[usize],
    config: &TrainConfig,
    validation_share: f64,
) -> Result<TestModel> {
    let split = ((rows.len() as f64) * (1.0 - validation_share)).round() as usize;
    let (fit, validation) = rows.split_at(split.min(rows.len()));
    let has_both = |part: &[usize]| {
        part.iter().any(|i| pairs.failed[*i]) && part.iter().any(|i| !pairs.failed[*i])
    };
    if !has_both(fit) || !has_both(validation) {
        return Err(Error::Data(format!(
            "too little test history to learn from: {} pairs, and the training or validation part has no failures or no passes",
            rows.len()
        )));
    }
    let width = PAIR_FEATURES.len();
    let scaler = Scaler::fit(&pairs.values, width, fit);
    let labels = |part: &[usize]| -> Vec<f32> {
        part.iter()
            .map(|i| f32::from(u8::from(pairs.failed[*i])))
            .collect()
    };
    let (x_fit, y_fit) = (scaler.transform_rows(&pairs.values, fit), labels(fit));
    let (x_valid, y_valid) = (
        scaler.transform_rows(&pairs.values, validation),
        labels(validation),
    );
    let (network, report) = Network::train(
        config,
        &Matrix {
            x: &x_fit,
            y: &y_fit,
            columns: width,
        },
        &Matrix {
            x: &x_valid,
            y: &y_valid,
            columns: width,
        },
    )?;
    let raw_valid = network.predict(&x_valid, width)?;
    let valid_labels: Vec<bool> = validation.iter().map(|i| pairs.failed[*i]).collect();
    Ok(TestModel {
        kind: config.kind,
        features: PAIR_FEATURES.iter().map(|f| f.to_string()).collect(),
        scaler,
        network,
        calibration: PlattScaling::fit(&raw_valid, &valid_labels),
        report,
    })
}

/// How to replay.
#[derive(Debug, Clone)]
#[allow(missing_docs)] // fields named for what they hold
pub struct ReplayOptions {
    /// Replay runs from this instant (microseconds); default: once there is enough history.
    pub from: Option<i64>,
    /// Replay runs before this instant.
    pub to: Option<i64>,
    /// History to learn from before the first replayed run, in days.
    pub min_history_days: i64,
    /// A new model every this many days, trained on the pairs before.
    pub retrain_days: i64,
    /// Each model learns from at most this many of the newest pairs before its window: a year
    /// of CI holds millions, and recent ones say most about what fails now.
    pub max_training_pairs: usize,
    /// Keep every ranking of every policy in the report's rows (for `test_selection_replay`).
    pub keep_rows: bool,
    /// The model policy's target.
    pub target: Target,
    /// Tests always selected.
    pub must_run: Vec<String>,
    pub train: TrainConfig,
    pub validation_share: f64,
    /// Rank with this model instead of training: to replay a stored model.
    pub fixed_model: Option<TestModel>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            from: None,
            to: None,
            min_history_days: 14,
            retrain_days: 7,
            max_training_pairs: 300_000,
            keep_rows: true,
            target: Target::Confidence(0.95),
            must_run: Vec::new(),
            train: TrainConfig {
                kind: ModelKind::Mlp,
                hidden: vec![32, 16],
                max_epochs: 60,
                batch_size: 1024,
                patience: 6,
                ..Default::default()
            },
            validation_share: 0.2,
            fixed_model: None,
        }
    }
}

/// The policies the replay compares, the model first.
pub const POLICIES: [&str; 5] = [
    "model",
    "run_all",
    "random",
    "recently_failed",
    "failure_rate",
];

/// One policy's figures over the replayed changes. A share with nothing to share of is NaN,
/// written as null.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // fields named for what they hold
pub struct PolicyFigures {
    pub policy: String,
    /// Selected test time over the full suites' time.
    pub time_share: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub failing_tests_caught: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub failing_changes_caught: f64,
    /// Mean APFD of the policy's full ranking over the failing changes.
    #[serde(deserialize_with = "null_as_nan")]
    pub apfd: f64,
}

/// JSON writes NaN as null; reads it back as NaN.
fn null_as_nan<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

/// A point of the confidence curve: what one policy caught at one target, over the replayed
/// changes. The model is measured at confidence targets and at time budgets, the baselines
/// (except run_all, which is the point at 100%) at the same budgets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // fields named for what they hold
pub struct CurvePoint {
    pub policy: String,
    /// "confidence 0.95" or "budget 20%".
    pub target: String,
    pub time_share: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub failing_tests_caught: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub failing_changes_caught: f64,
}

/// What the replay found.
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs)] // fields named for what they hold
pub struct ReplayReport {
    pub changes: usize,
    pub failing_changes: usize,
    pub failing_tests: usize,
    pub trainings: usize,
    /// Pairs the first model was trained on.
    pub first_training_pairs: usize,
    pub policies: Vec<PolicyFigures>,
    pub curve: Vec<CurvePoint>,
    /// Every ranking scored, for `test_selection_replay`.
    #[serde(skip)]
    pub rows: Vec<TestSelectionReplay>,
    /// The last model trained, and the rows of the pairs it learned from.
    #[serde(skip)]
    pub last_model: Option<(TestModel, Vec<usize>)>,
}

/// The lake's test history, walked once: runs, changes, pairs, and the history after the last
/// run.
#[allow(missing_docs)] // fields named for what they hold
pub struct Walk {
    pub runs: Vec<TestRun>,
    pub pairs: Pairs,
    pub history: History,
}

impl Walk {
    /// Reads the lake's test runs and changes and builds the pairs of `window`.
    pub fn of_lake(lake: &Lake, window: PairWindow) -> Result<Walk> {
        Walk::of_runs(lake, read_runs(lake)?, window)
    }

    /// Reads the lake's changes and builds the pairs of `runs` (the lake's, from `read_runs`)
    /// within `window`.
    pub fn of_runs(lake: &Lake, runs: Vec<TestRun>, window: PairWindow) -> Result<Walk> {
        let started = Instant::now();
        let changes = read_changes(lake)?;
        let read_s = started.elapsed().as_secs_f64();
        let history = History::new(service_distances(lake)?);
        let (pairs, history) = build_pairs_within(&runs, &changes, history, window);
        tracing::debug!(
            runs = runs.len(),
            tests = history.test_count(),
            pairs = pairs.len(),
            read_s,
            walk_s = started.elapsed().as_secs_f64() - read_s,
            "test history walked"
        );
        if pairs.is_empty() {
            return Err(Error::Data(
                "no full test suite run for a change in the lake: nothing to learn from".into(),
            ));
        }
        Ok(Walk {
            runs,
            pairs,
            history,
        })
    }
}

/// Confidence targets of the curve.
const CURVE_CONFIDENCES: [f64; 10] = [0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1.0];

/// Shares of suite time at which the curve compares the model with the baselines.
const CURVE_BUDGETS: [f64; 7] = [0.05, 0.1, 0.2, 1.0 / 3.0, 0.5, 0.75, 1.0];

/// The curve's points, as (index into `POLICIES`, target): the model at every confidence
/// target, then every policy that ranks (all but run_all) at every budget.
fn curve_targets() -> Vec<(usize, Target)> {
    let confidences = CURVE_CONFIDENCES
        .iter()
        .map(|goal| (0, Target::Confidence(*goal)));
    let ranking = (0..POLICIES.len()).filter(|p| POLICIES[*p] != "run_all");
    let budgets = ranking.flat_map(|policy| {
        CURVE_BUDGETS
            .iter()
            .map(move |share| (policy, Target::TimeShare(*share)))
    });
    confidences.chain(budgets).collect()
}

/// Replays test selection over the lake's history.
pub fn replay(lake: &Lake, options: &ReplayOptions) -> Result<ReplayReport> {
    // Without a start, the replay starts `min_history_days` after the first pair, which the
    // walk has not found yet: it keeps every pair.
    let window = match options.from {
        Some(from) => PairWindow {
            from,
            before: options.max_training_pairs,
        },
        None => PairWindow::ALL,
    };
    replay_walk(&Walk::of_lake(lake, window)?, options)
}

/// Replays test selection over the runs of `walk`.
pub fn replay_walk(walk: &Walk, options: &ReplayOptions) -> Result<ReplayReport> {
    let (runs, pairs) = (&walk.runs, &walk.pairs);
    let start = pairs.at[0] + options.min_history_days * DAY_MICROS;
    let from = options.from.map_or(start, |f| f.max(start));
    let to = options.to.unwrap_or(i64::MAX);
    // Pair rows per run, in order.
    let mut per_run: Vec<(usize, Vec<usize>)> = Vec::new();
    for (i, run) in pairs.run.iter().enumerate() {
        if pairs.at[i] < from || pairs.at[i] >= to {
            continue;
        }
        match per_run.last_mut() {
            Some((r, rows)) if r == run => rows.push(i),
            _ => per_run.push((*run, vec![i])),
        }
    }
    if per_run.is_empty() {
        return Err(Error::Data(format!(
            "no full suite run to replay between {} and {} (the first {} days of history only train)",
            Ts(from).to_rfc3339(),
            Ts(to.min(i64::MAX / 2)).to_rfc3339(),
            options.min_history_days
        )));
    }

    let mut probability = vec![f64::NAN; pairs.len()];
    let mut last_model = None;
    let mut trainings = 0;
    let mut first_training_pairs = 0;
    let mut window_start = from;
    let mut next = 0usize;
    while next < per_run.len() {
        let window_end = window_start + options.retrain_days * DAY_MICROS;
        let in_window: Vec<usize> = per_run[next..]
            .iter()
            .take_while(|(_, rows)| pairs.at[rows[0]] < window_end)
            .flat_map(|(_, rows)| rows.iter().copied())
            .collect();
        let runs_in_window = per_run[next..]
            .iter()
            .take_while(|(_, rows)| pairs.at[rows[0]] < window_end)
            .count();
        if runs_in_window > 0 {
            // The newest pairs before the window, at most `max_training_pairs` of them.
            let past_end = pairs.at.partition_point(|at| *at < window_start);
            let past: Vec<usize> =
                (past_end.saturating_sub(options.max_training_pairs)..past_end).collect();
            let training_started = Instant::now();
            let model = match &options.fixed_model {
                Some(model) => model.clone(),
                None => train(pairs, &past, &options.train, options.validation_share)?,
            };
            tracing::debug!(
                pairs = past.len(),
                seconds = training_started.elapsed().as_secs_f64(),
                fixed = options.fixed_model.is_some(),
                "test-selection model for a replay window"
            );
            if trainings == 0 {
                first_training_pairs = past.len();
            }
            trainings += 1;
            for (i, p) in in_window
                .iter()
                .zip(model.predict(&pairs.values, &in_window)?)
            {
                probability[*i] = p;
            }
            last_model = Some((model, past));
        }
        next += runs_in_window;
        window_start = window_end;
    }
    let mut report = judge(
        runs,
        pairs,
        &probability,
        &per_run,
        options,
        trainings,
        first_training_pairs,
    );
    report.last_model = last_model;
    Ok(report)
}

/// Each policy's ranking and selection of every replayed run, and the figures over them.
fn judge(
    runs: &[TestRun],
    pairs: &Pairs,
    probability: &[f64],
    per_run: &[(usize, Vec<usize>)],
    options: &ReplayOptions,
    trainings: usize,
    first_training_pairs: usize,
) -> ReplayReport {
    let mut rng = ChaCha8Rng::seed_from_u64(options.train.seed);
    let mut totals: Vec<Totals> = POLICIES.iter().map(|_| Totals::default()).collect();
    let curve_targets = curve_targets();
    let mut curve_totals: Vec<Totals> = vec![Totals::default(); curve_targets.len()];
    let mut rows = Vec::new();
    let (mut failing_changes, mut failing_tests) = (0, 0);
    for (run_index, pair_rows) in per_run {
        let run = &runs[*run_index];
        // The policies know only each test's mean duration so far; the time they are charged is
        // what the tests really took in this run.
        let candidates: Vec<Candidate> = pair_rows
            .iter()
            .map(|i| Candidate {
                test_id: run.tests[pairs.test[*i]].case.test_id.clone(),
                probability: probability[*i],
                duration_s: pairs.stats[*i].map_or(0.0, |s| s.mean_duration_s),
                seen_before: pairs.stats[*i].is_some(),
                must_run: options
                    .must_run
                    .contains(&run.tests[pairs.test[*i]].case.test_id),
            })
            .collect();
        let actual_s: Vec<f64> = pair_rows
            .iter()
            .map(|i| run.tests[pairs.test[*i]].duration_s)
            .collect();
        let failed: Vec<bool> = pair_rows.iter().map(|i| pairs.failed[*i]).collect();
        failing_tests += failed.iter().filter(|f| **f).count();
        failing_changes += usize::from(failed.iter().any(|f| *f));

        let model = select(&candidates, options.target);
        let budget = Target::Seconds(model.selected_seconds);
        let stats: Vec<TestStats> = pair_rows
            .iter()
            .map(|i| pairs.stats[*i].unwrap_or_default())
            .collect();
        let mut shuffled: Vec<usize> = (0..candidates.len()).collect();
        shuffled.shuffle(&mut rng);
        let random_score: Vec<f64> = {
            let mut score = vec![0.0; candidates.len()];
            for (rank, i) in shuffled.iter().enumerate() {
                score[*i] = 1.0 - rank as f64 / candidates.len() as f64;
            }
            score
        };
        let recency: Vec<f64> = stats
            .iter()
            .map(|s| {
                s.last_failure_at
                    .map_or(0.0, |t| t as f64 / DAY_MICROS as f64)
            })
            .collect();
        let rates: Vec<f64> = stats.iter().map(|s| s.failure_rate).collect();
        let selections: Vec<(Selection, Vec<f64>)> = vec![
            (model, candidates.iter().map(|c| c.probability).collect()),
            (run_everything(&candidates), vec![1.0; candidates.len()]),
            (by_score(&candidates, &random_score, budget), random_score),
            (by_score(&candidates, &recency, budget), recency),
            (by_score(&candidates, &rates, budget), rates),
        ];
        for (((selection, scores), policy), total) in
            selections.iter().zip(POLICIES).zip(&mut totals)
        {
            total.add(selection, &failed, &actual_s);
            if !options.keep_rows {
                continue;
            }
            for (rank, i) in selection.order.iter().enumerate() {
                let test = &run.tests[pairs.test[pair_rows[*i]]];
                rows.push(TestSelectionReplay {
                    policy: policy.to_string(),
                    change_id: run.change_id.clone().unwrap_or_default(),
                    run_id: run.run_id.clone(),
                    service: run.service.clone(),
                    started_at: Ts(run.at),
                    test_id: test.case.test_id.clone(),
                    rank: rank as i64 + 1,
                    probability: scores[*i],
                    selected: selection.selected(*i),
                    outcome: test.outcome.name().to_string(),
                    duration_s: test.duration_s,
                });
            }
        }
        for ((policy, target), total) in curve_targets.iter().zip(&mut curve_totals) {
            let order = &selections[*policy].0.order;
            total.add(
                &select_in_order(&candidates, order, *target),
                &failed,
                &actual_s,
            );
        }
    }
    ReplayReport {
        changes: per_run.len(),
        failing_changes,
        failing_tests,
        trainings,
        first_training_pairs,
        policies: POLICIES
            .iter()
            .zip(&totals)
            .map(|(policy, t)| t.figures(policy))
            .collect(),
        curve: curve_targets
            .iter()
            .zip(&curve_totals)
            .map(|((policy, target), t)| {
                let figures = t.figures(POLICIES[*policy]);
                CurvePoint {
                    policy: figures.policy,
                    target: target.label(),
                    time_share: figures.time_share,
                    failing_tests_caught: figures.failing_tests_caught,
                    failing_changes_caught: figures.failing_changes_caught,
                }
            })
            .collect(),
        rows,
        last_model: None,
    }
}

/// Every test, in test id order.
fn run_everything(candidates: &[Candidate]) -> Selection {
    let order = rank(candidates, &vec![0.0; candidates.len()]);
    select_in_order(candidates, &order, Target::TimeShare(1.0))
}

/// A baseline: ranks by `score` and selects within `budget`.
fn by_score(candidates: &[Candidate], score: &[f64], budget: Target) -> Selection {
    select_in_order(candidates, &rank(candidates, score), budget)
}

/// Sums of one policy over the replayed runs.
#[derive(Debug, Clone, Default)]
struct Totals {
    selected_seconds: f64,
    total_seconds: f64,
    failing_tests: usize,
    failing_tests_caught: usize,
    failing_changes: usize,
    failing_changes_caught: usize,
    apfd_sum: f64,
}

impl Totals {
    fn add(&mut self, selection: &Selection, failed: &[bool], actual_s: &[f64]) {
        self.selected_seconds += (0..failed.len())
            .filter(|i| selection.selected(*i))
            .map(|i| actual_s[i])
            .sum::<f64>();
        self.total_seconds += actual_s.iter().sum::<f64>();
        let caught = (0..failed.len())
            .filter(|i| failed[*i] && selection.selected(*i))
            .count();
        let failing = failed.iter().filter(|f| **f).count();
        self.failing_tests += failing;
        self.failing_tests_caught += caught;
        if failing > 0 {
            self.failing_changes += 1;
            self.failing_changes_caught += usize::from(caught > 0);
            self.apfd_sum += apfd(&selection.order, failed);
        }
    }

    fn time_share(&self) -> f64 {
        if self.total_seconds > 0.0 {
            self.selected_seconds / self.total_seconds
        } else {
            0.0
        }
    }

    fn figures(&self, policy: &str) -> PolicyFigures {
        PolicyFigures {
            policy: policy.to_string(),
            time_share: self.time_share(),
            failing_tests_caught: ratio(self.failing_tests_caught, self.failing_tests),
            failing_changes_caught: ratio(self.failing_changes_caught, self.failing_changes),
            apfd: if self.failing_changes > 0 {
                self.apfd_sum / self.failing_changes as f64
            } else {
                f64::NAN
            },
        }
    }
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        f64::NAN
    } else {
        part as f64 / whole as f64
    }
}

/// Average percentage of faults detected of a ranking, each failing test a fault:
/// `1 - (sum of the failing tests' positions) / (n m) + 1 / (2n)`.
pub fn apfd(order: &[usize], failed: &[bool]) -> f64 {
    let n = order.len() as f64;
    let positions: Vec<f64> = order
        .iter()
        .enumerate()
        .filter(|(_, i)| failed[**i])
        .map(|(rank, _)| rank as f64 + 1.0)
        .collect();
    let m = positions.len() as f64;
    if m == 0.0 || n == 0.0 {
        return f64::NAN;
    }
    1.0 - positions.iter().sum::<f64>() / (n * m) + 1.0 / (2.0 * n)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn candidate(id: &str, probability: f64, duration_s: f64) -> Candidate {
        Candidate {
            test_id: id.into(),
            probability,
            duration_s,
            seen_before: true,
            must_run: false,
        }
    }

    #[test]
    fn ranks_by_probability_per_second_and_always_runs_new_tests() {
        let mut candidates = vec![
            candidate("slow", 0.5, 100.0),
            candidate("quick", 0.2, 1.0),
            candidate("safe", 0.001, 1.0),
            candidate("new", 0.0, 50.0),
        ];
        candidates[3].seen_before = false;
        let selection = select(&candidates, Target::Confidence(0.5));
        assert_eq!(selection.order, [3, 1, 0, 2]);
        assert_eq!(selection.reasons[3], Reason::NewTest);
        assert_eq!(selection.reasons[1], Reason::Ranked);
        // quick alone catches 0.2 / (1 - 0.8 * 0.5 * 0.999) of failing changes: under half.
        assert_eq!(selection.reasons[0], Reason::Ranked);
        assert_eq!(selection.reasons[2], Reason::Skipped);
        assert!(selection.confidence >= 0.5);
    }

    #[test]
    fn a_time_share_budget_is_never_exceeded() {
        let candidates = vec![
            candidate("a", 0.3, 10.0),
            candidate("b", 0.2, 10.0),
            candidate("c", 0.1, 10.0),
        ];
        let selection = select(&candidates, Target::TimeShare(0.5));
        assert_eq!(selection.selected_seconds, 10.0);
        assert!(selection.selected(0) && !selection.selected(1));
    }

    #[test]
    fn budgets_read_as_people_write_them() {
        assert_eq!(Target::parse_budget("30%").unwrap(), Target::TimeShare(0.3));
        assert_eq!(Target::parse_budget("15m").unwrap(), Target::Seconds(900.0));
        assert!(Target::parse_budget("150%").is_err());
        assert!(Target::parse_budget("soon").is_err());
    }

    #[test]
    fn shards_balance_expected_time_and_hold_only_selected_tests() {
        let pick = |id: &str, duration_s: f64, selected: bool| TestPick {
            test_id: id.into(),
            name: id.into(),
            classname: None,
            file: None,
            probability: Some(0.1),
            duration_s,
            selected,
            reason: if selected {
                Reason::Ranked
            } else {
                Reason::Skipped
            },
            shard: None,
        };
        let mut selection = ServedSelection {
            service: "api".into(),
            target: Target::Confidence(0.9),
            confidence: 0.9,
            selected_tests: 5,
            selected_seconds: 24.0,
            total_seconds: 124.0,
            tests: vec![
                pick("a", 10.0, true),
                pick("b", 1.0, true),
                pick("c", 3.0, true),
                pick("d", 8.0, true),
                pick("e", 2.0, true),
                pick("f", 100.0, false),
            ],
            shard_seconds: Vec::new(),
        };
        selection.split_into_shards(2);
        assert_eq!(selection.shard_seconds, [12.0, 12.0]);
        assert_eq!(selection.tests[5].shard, None);
        assert!(selection.tests[..5].iter().all(|t| t.shard.is_some()));
    }

    #[test]
    fn apfd_rewards_failures_found_early() {
        let failed = [false, false, true, false];
        assert_eq!(apfd(&[2, 0, 1, 3], &failed), 1.0 - 1.0 / 4.0 + 1.0 / 8.0);
        assert_eq!(apfd(&[0, 1, 3, 2], &failed), 1.0 - 4.0 / 4.0 + 1.0 / 8.0);
    }
}
