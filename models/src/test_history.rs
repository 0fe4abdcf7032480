//! CI history for test selection: the lake's test runs, and the features of a (change, test)
//! pair as they were known when the change's suite started.
//!
//! polars folds `test_results` into one outcome per test per run (a test whose last attempt
//! failed is a failure; one that failed and then passed is flaky, not failed). The features come
//! from a walk over the runs in time order: each run is featurised from the state before it and
//! then folded into that state, so no pair can see its own outcome or anything later.
//!
//! Features of a pair:
//! - the test's failure rate over the last 7 and 30 days and over all its runs, its flaky rate,
//!   runs since it last failed, runs seen, and its mean duration;
//! - how often the test failed in runs whose change touched each changed file and each changed
//!   directory (the highest rate, and the count);
//! - the share of a changed path's tokens found in the test's file, class or suite;
//! - the distance in the service graph between the changed service and the test's service;
//! - the change's size and file count, and its author's past share of changes with a failure.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use maestro_datasets::lake::Lake;
use maestro_datasets::schema::{Change, TestResult};
use petgraph::Undirected;
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::features::{micros, scan, service_graph};

/// Names of the pair features, in column order.
pub const PAIR_FEATURES: [&str; 17] = [
    "runs_seen",
    "fail_rate_7d",
    "fail_rate_30d",
    "fail_rate_all",
    "flaky_rate",
    "runs_since_failure",
    "duration_log",
    "file_cofail_rate",
    "file_cofail_count",
    "dir_cofail_rate",
    "dir_cofail_count",
    "path_token_overlap",
    "graph_distance",
    "change_size",
    "change_files",
    "author_fail_rate",
    "author_changes",
];

/// Graph distance given to services with no path between them.
const NO_PATH: f64 = 6.0;

/// Path tokens too common to say anything about what a test covers.
const GENERIC_TOKENS: [&str; 16] = [
    "src", "test", "tests", "spec", "main", "lib", "mod", "rs", "py", "java", "ts", "js", "go",
    "index", "util", "utils",
];

const DAY_MICROS: i64 = 86_400_000_000;

/// A suite counts as run in full when it executed at least this share of the most tests its
/// service's runs have executed so far.
const FULL_SUITE_SHARE: f64 = 0.9;

/// How one test went in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It passed at the first attempt.
    Passed,
    /// Its last attempt failed or errored.
    Failed,
    /// It failed, then passed on a retry.
    Flaky,
    /// It did not run.
    Skipped,
}

impl Outcome {
    /// The outcome's name in tables and reports.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::Flaky => "flaky",
            Outcome::Skipped => "skipped",
        }
    }
}

/// One test of one run.
#[derive(Debug, Clone)]
#[allow(missing_docs)] // fields named for what they hold
pub struct TestOutcome {
    pub test_id: String,
    /// Name of the test case, without its class.
    pub name: String,
    pub suite: String,
    pub file: Option<String>,
    pub classname: Option<String>,
    pub outcome: Outcome,
    /// Seconds of its first attempt: what running it once costs.
    pub duration_s: f64,
}

/// One CI run: a suite executed for a change.
#[derive(Debug, Clone)]
#[allow(missing_docs)] // fields named for what they hold
pub struct TestRun {
    pub run_id: String,
    pub change_id: Option<String>,
    pub service: String,
    /// Start of the run, microseconds since the epoch.
    pub at: i64,
    pub tests: Vec<TestOutcome>,
}

impl TestRun {
    /// Whether any test really failed (flaky ones do not count).
    pub fn failed(&self) -> bool {
        self.tests.iter().any(|t| t.outcome == Outcome::Failed)
    }

    /// Tests that ran (not skipped).
    pub fn executed(&self) -> usize {
        self.tests
            .iter()
            .filter(|t| t.outcome != Outcome::Skipped)
            .count()
    }
}

/// What a change brings to its pairs.
#[derive(Debug, Clone, Default)]
#[allow(missing_docs)] // fields named for what they hold
pub struct ChangeFacts {
    pub service: String,
    pub author: Option<String>,
    pub files: Vec<String>,
    /// Lines added plus deleted.
    pub size: f64,
    /// When it merged, microseconds; 0 when unknown.
    pub merged_at: i64,
}

/// Every run in the lake, in time order (then by run id), one outcome per test.
pub fn read_runs(lake: &Lake) -> Result<Vec<TestRun>> {
    let failed = col("status")
        .eq(lit("failed"))
        .or(col("status").eq(lit("error")));
    let frame = scan::<TestResult>(
        lake,
        &[
            "run_id",
            "change_id",
            "service",
            "suite",
            "test_id",
            "name",
            "classname",
            "file",
            "status",
            "duration_s",
            "attempt",
            "started_at",
        ],
    )?
    .with_columns([failed.alias("is_failure"), micros("started_at").alias("at")])
    .group_by([col("run_id"), col("test_id")])
    .agg([
        col("change_id").first(),
        col("service").first(),
        col("suite").first(),
        col("name").first(),
        col("classname").first(),
        col("file").first(),
        col("at").min(),
        col("is_failure").any(true).alias("any_failure"),
        col("is_failure")
            .sort_by([col("attempt")], SortMultipleOptions::default())
            .last()
            .alias("last_failure"),
        col("status").eq(lit("skipped")).all(true).alias("skipped"),
        col("duration_s")
            .sort_by([col("attempt")], SortMultipleOptions::default())
            .first()
            .alias("duration_s"),
    ])
    .sort(["run_id", "test_id"], SortMultipleOptions::default())
    .collect()?;

    let text = |name: &str| -> Result<Vec<Option<String>>> {
        Ok(frame
            .column(name)?
            .str()?
            .iter()
            .map(|v| v.map(str::to_string))
            .collect())
    };
    let flag = |name: &str| -> Result<Vec<bool>> {
        Ok(frame
            .column(name)?
            .bool()?
            .iter()
            .map(|v| v.unwrap_or(false))
            .collect())
    };
    let (run_ids, test_ids, change_ids) = (text("run_id")?, text("test_id")?, text("change_id")?);
    let (services, suites, names) = (text("service")?, text("suite")?, text("name")?);
    let (classnames, files) = (text("classname")?, text("file")?);
    let (any_failure, last_failure, skipped) = (
        flag("any_failure")?,
        flag("last_failure")?,
        flag("skipped")?,
    );
    let at: Vec<i64> = frame
        .column("at")?
        .i64()?
        .iter()
        .map(|v| v.unwrap_or(0))
        .collect();
    let durations: Vec<f64> = frame
        .column("duration_s")?
        .f64()?
        .iter()
        .map(|v| v.unwrap_or(0.0))
        .collect();

    let mut runs: Vec<TestRun> = Vec::new();
    for i in 0..frame.height() {
        let run_id = run_ids[i].clone().unwrap_or_default();
        if runs.last().is_none_or(|r| r.run_id != run_id) {
            runs.push(TestRun {
                run_id,
                change_id: change_ids[i].clone(),
                service: services[i].clone().unwrap_or_default(),
                at: at[i],
                tests: Vec::new(),
            });
        }
        let run = runs.last_mut().expect("pushed above");
        run.at = run.at.min(at[i]);
        let outcome = match (skipped[i], last_failure[i], any_failure[i]) {
            (true, _, _) => Outcome::Skipped,
            (_, true, _) => Outcome::Failed,
            (_, false, true) => Outcome::Flaky,
            _ => Outcome::Passed,
        };
        run.tests.push(TestOutcome {
            test_id: test_ids[i].clone().unwrap_or_default(),
            name: names[i].clone().unwrap_or_default(),
            suite: suites[i].clone().unwrap_or_default(),
            file: files[i].clone(),
            classname: classnames[i].clone(),
            outcome,
            duration_s: durations[i],
        });
    }
    runs.sort_by(|a, b| (a.at, &a.run_id).cmp(&(b.at, &b.run_id)));
    Ok(runs)
}

/// Service, author, files and size of every change in the lake.
pub fn read_changes(lake: &Lake) -> Result<HashMap<String, ChangeFacts>> {
    let frame = match scan::<Change>(
        lake,
        &[
            "change_id",
            "service",
            "author",
            "files",
            "lines_added",
            "lines_deleted",
            "merged_at",
        ],
    ) {
        Ok(frame) => frame
            .with_column(micros("merged_at").alias("merged_at"))
            .collect()?,
        // Test selection works from test history alone when the lake has no changes.
        Err(Error::Data(_)) => return Ok(HashMap::new()),
        Err(e) => return Err(e),
    };
    let ids = frame.column("change_id")?.str()?.clone();
    let services = frame.column("service")?.str()?.clone();
    let authors = frame.column("author")?.str()?.clone();
    let files = frame.column("files")?.list()?.clone();
    let added = frame.column("lines_added")?.i64()?.clone();
    let deleted = frame.column("lines_deleted")?.i64()?.clone();
    let merged_at = frame.column("merged_at")?.i64()?.clone();
    let mut changes = HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        let Some(id) = id else { continue };
        let paths: Vec<String> = match files.get_as_series(i) {
            Some(series) => series.str()?.iter().flatten().map(str::to_string).collect(),
            None => Vec::new(),
        };
        let size = added.get(i).unwrap_or(0) + deleted.get(i).unwrap_or(0);
        changes.insert(
            id.to_string(),
            ChangeFacts {
                service: services.get(i).unwrap_or_default().to_string(),
                author: authors.get(i).map(str::to_string),
                files: paths,
                size: size as f64,
                merged_at: merged_at.get(i).unwrap_or(0),
            },
        );
    }
    Ok(changes)
}

/// Hops from each service to every service connected to it in `service_edges`, either
/// direction.
pub fn service_distances(lake: &Lake) -> Result<Distances> {
    let (graph, nodes) = service_graph(lake)?;
    let graph = graph.into_edge_type::<Undirected>();
    let mut distances = Distances::new();
    for (name, index) in &nodes {
        let reachable = petgraph::algo::dijkstra(&graph, *index, None, |_| 1u32);
        distances.insert(
            name.clone(),
            reachable
                .into_iter()
                .map(|(other, hops)| (graph[other].clone(), hops))
                .collect(),
        );
    }
    Ok(distances)
}

/// Service -> other service -> hops between them.
pub type Distances = BTreeMap<String, BTreeMap<String, u32>>;

/// What is known of one test so far.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[allow(missing_docs)] // fields named for what they hold
pub struct TestState {
    /// Service of the suite it last ran in.
    pub service: String,
    pub suite: String,
    pub name: String,
    pub classname: Option<String>,
    pub file: Option<String>,
    pub runs: u32,
    pub failures: u32,
    pub flakes: u32,
    runs_since_failure: u32,
    total_duration: f64,
    /// (time, failed) of recent runs, at most 30 days old.
    recent: VecDeque<(i64, bool)>,
    /// Tokens of its file, class and suite.
    tokens: BTreeSet<String>,
    /// When it last failed, microseconds.
    last_failure_at: Option<i64>,
}

/// Runs and failures of a test when a path was among the changed ones.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct CoFailure {
    runs: u32,
    failures: u32,
}

/// Everything the walk has seen: the state features are computed from. Ordered maps, so that
/// a saved history is the same bytes for the same runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    tests: BTreeMap<String, TestState>,
    /// test -> changed path or directory -> co-failure counts.
    co_failure: BTreeMap<String, BTreeMap<String, CoFailure>>,
    /// author -> (changes, changes with a failing run).
    authors: BTreeMap<String, (u32, u32)>,
    distances: Distances,
    /// service -> the most tests one of its runs has executed.
    largest_suite: BTreeMap<String, usize>,
    /// service -> test ids of its latest full suite run.
    suites: BTreeMap<String, Vec<String>>,
}

/// What the history says of one test, for the baselines and the policy.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[allow(missing_docs)] // fields named for what they hold
pub struct TestStats {
    pub runs: u32,
    pub failure_rate: f64,
    pub flaky_rate: f64,
    pub mean_duration_s: f64,
    pub last_failure_at: Option<i64>,
}

impl History {
    /// An empty history over a service graph.
    pub fn new(distances: Distances) -> History {
        History {
            distances,
            ..Default::default()
        }
    }

    /// Whether `run` executed its service's suite in full: at least 90% of the most tests a run
    /// of that service has executed, this one included.
    pub fn is_full(&self, run: &TestRun) -> bool {
        let executed = run.executed();
        let largest = self
            .largest_suite
            .get(&run.service)
            .copied()
            .unwrap_or(0)
            .max(executed);
        executed > 0 && executed as f64 >= FULL_SUITE_SHARE * largest as f64
    }

    /// Test ids of `service`'s latest full suite run, in id order.
    pub fn suite(&self, service: &str) -> &[String] {
        self.suites.get(service).map_or(&[], Vec::as_slice)
    }

    /// Services with a full suite run.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.suites.keys().map(String::as_str)
    }

    /// Everything known of `test_id`.
    pub fn test(&self, test_id: &str) -> Option<&TestState> {
        self.tests.get(test_id)
    }

    /// Every test seen, in id order.
    pub fn tests(&self) -> impl Iterator<Item = (&str, &TestState)> {
        self.tests.iter().map(|(id, s)| (id.as_str(), s))
    }

    /// What is known of `test_id`, or `None` for a test never seen.
    pub fn stats(&self, test_id: &str) -> Option<TestStats> {
        self.tests.get(test_id).map(|s| TestStats {
            runs: s.runs,
            failure_rate: ratio(s.failures, s.runs),
            flaky_rate: ratio(s.flakes, s.runs),
            mean_duration_s: s.total_duration / f64::from(s.runs.max(1)),
            last_failure_at: s.last_failure_at,
        })
    }

    /// The pair features of `test` (of a suite run for `test_service`) for `change` at `at`,
    /// in the order of `PAIR_FEATURES`.
    pub fn features(
        &self,
        change: &ChangePaths,
        test_service: &str,
        test: &TestOutcome,
        at: i64,
    ) -> [f64; PAIR_FEATURES.len()] {
        let state = self.tests.get(&test.test_id);
        let (runs, failures, flakes, since, duration) = state.map_or((0, 0, 0, 0, 0.0), |s| {
            (
                s.runs,
                s.failures,
                s.flakes,
                s.runs_since_failure,
                s.total_duration / f64::from(s.runs.max(1)),
            )
        });
        let window_rate = |days: i64| -> f64 {
            let Some(s) = state else { return 0.0 };
            let (mut runs, mut failures) = (0, 0);
            for (_, failed) in s
                .recent
                .iter()
                .filter(|(t, _)| *t >= at - days * DAY_MICROS)
            {
                runs += 1;
                failures += u32::from(*failed);
            }
            ratio(failures, runs)
        };
        let test_co_failure = self.co_failure.get(&test.test_id);
        let co_failure = |paths: &mut dyn Iterator<Item = &String>| -> (f64, f64) {
            let mut best = 0.0f64;
            let mut count = 0u32;
            for path in paths {
                if let Some(c) = test_co_failure.and_then(|m| m.get(path)) {
                    // One smoothed rate: a single co-failure in one run is weak evidence.
                    best = best.max(f64::from(c.failures) / (f64::from(c.runs) + 1.0));
                    count += c.failures;
                }
            }
            (best, f64::from(count).ln_1p())
        };
        let (file_rate, file_count) = co_failure(&mut change.facts.files.iter());
        let (dir_rate, dir_count) = co_failure(&mut change.directories.iter());
        let fresh_tokens;
        let test_tokens = match state {
            Some(s) => &s.tokens,
            None => {
                fresh_tokens = test_tokens(test);
                &fresh_tokens
            }
        };
        let overlap = change
            .file_tokens
            .iter()
            .filter(|tokens| !tokens.is_empty())
            .map(|tokens| {
                tokens.iter().filter(|t| test_tokens.contains(*t)).count() as f64
                    / tokens.len() as f64
            })
            .fold(0.0, f64::max);
        let distance = if change.facts.service.is_empty() || change.facts.service == test_service {
            0.0
        } else {
            self.distances
                .get(&change.facts.service)
                .and_then(|d| d.get(test_service))
                .map_or(NO_PATH, |d| f64::from(*d))
        };
        let (author_changes, author_failing) = change
            .facts
            .author
            .as_ref()
            .and_then(|a| self.authors.get(a))
            .copied()
            .unwrap_or((0, 0));
        [
            f64::from(runs).ln_1p(),
            window_rate(7),
            window_rate(30),
            ratio(failures, runs),
            ratio(flakes, runs),
            f64::from(if failures == 0 { runs } else { since }).ln_1p(),
            duration.ln_1p(),
            file_rate,
            file_count,
            dir_rate,
            dir_count,
            overlap,
            distance,
            change.facts.size.ln_1p(),
            (change.facts.files.len() as f64).ln_1p(),
            ratio(author_failing, author_changes),
            f64::from(author_changes).ln_1p(),
        ]
    }

    /// Folds a finished run into the history.
    pub fn observe(&mut self, run: &TestRun, change: &ChangeFacts) {
        if self.is_full(run) {
            let mut suite: Vec<String> = run
                .tests
                .iter()
                .filter(|t| t.outcome != Outcome::Skipped)
                .map(|t| t.test_id.clone())
                .collect();
            suite.sort();
            self.suites.insert(run.service.clone(), suite);
        }
        let largest = self.largest_suite.entry(run.service.clone()).or_default();
        *largest = (*largest).max(run.executed());
        let directories = directories(&change.files);
        for test in run.tests.iter().filter(|t| t.outcome != Outcome::Skipped) {
            let failed = test.outcome == Outcome::Failed;
            let state = self
                .tests
                .entry(test.test_id.clone())
                .or_insert_with(|| TestState {
                    tokens: test_tokens(test),
                    ..Default::default()
                });
            state.service.clone_from(&run.service);
            state.suite.clone_from(&test.suite);
            state.name.clone_from(&test.name);
            state.classname.clone_from(&test.classname);
            state.file.clone_from(&test.file);
            state.runs += 1;
            state.total_duration += test.duration_s;
            if failed {
                state.failures += 1;
                state.runs_since_failure = 0;
                state.last_failure_at = Some(run.at);
            } else {
                state.runs_since_failure += 1;
            }
            if test.outcome == Outcome::Flaky {
                state.flakes += 1;
            }
            state.recent.push_back((run.at, failed));
            while state
                .recent
                .front()
                .is_some_and(|(t, _)| *t < run.at - 30 * DAY_MICROS)
            {
                state.recent.pop_front();
            }
            let co_failure = self.co_failure.entry(test.test_id.clone()).or_default();
            for path in change.files.iter().chain(&directories) {
                let entry = co_failure.entry(path.clone()).or_default();
                entry.runs += 1;
                entry.failures += u32::from(failed);
            }
        }
        if let Some(author) = &change.author {
            let entry = self.authors.entry(author.clone()).or_default();
            entry.0 += 1;
            entry.1 += u32::from(run.failed());
        }
    }
}

fn ratio(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        f64::from(part) / f64::from(whole)
    }
}

/// The distinct parent folders of `files`, each ending in `/`.
fn directories(files: &[String]) -> Vec<String> {
    let mut dirs: Vec<String> = files
        .iter()
        .filter_map(|f| f.rfind('/').map(|i| f[..=i].to_string()))
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// A change with what the features need of its paths, worked out once for all its tests.
pub struct ChangePaths<'a> {
    /// The change itself.
    pub facts: &'a ChangeFacts,
    directories: Vec<String>,
    file_tokens: Vec<BTreeSet<String>>,
}

impl<'a> ChangePaths<'a> {
    /// The change's directories and the word tokens of each of its files.
    pub fn new(facts: &'a ChangeFacts) -> ChangePaths<'a> {
        ChangePaths {
            facts,
            directories: directories(&facts.files),
            file_tokens: facts.files.iter().map(|f| path_tokens(f)).collect(),
        }
    }
}

/// Lower-case word tokens of a path or name, without generic ones and numbers.
fn path_tokens(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty() && !t.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_ascii_lowercase)
        .filter(|t| !GENERIC_TOKENS.contains(&t.as_str()))
        .collect()
}

fn test_tokens(test: &TestOutcome) -> BTreeSet<String> {
    let mut tokens = path_tokens(&test.suite);
    for text in [&test.file, &test.classname].into_iter().flatten() {
        tokens.extend(path_tokens(text));
    }
    tokens
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn outcome(test_id: &str, outcome: Outcome) -> TestOutcome {
        TestOutcome {
            test_id: test_id.into(),
            name: test_id.into(),
            suite: "api-tests".into(),
            file: Some("tests/billing_test.rs".into()),
            classname: Some("api.billing_test".into()),
            outcome,
            duration_s: 2.0,
        }
    }

    fn run(at_days: i64, outcome_of_t: Outcome) -> TestRun {
        TestRun {
            run_id: format!("r{at_days}"),
            change_id: Some(format!("c{at_days}")),
            service: "api".into(),
            at: at_days * DAY_MICROS,
            tests: vec![outcome("t", outcome_of_t)],
        }
    }

    fn feature(values: &[f64], name: &str) -> f64 {
        values[PAIR_FEATURES.iter().position(|n| *n == name).unwrap()]
    }

    #[test]
    fn features_see_only_what_came_before_and_flaky_is_not_failed() {
        let change = ChangeFacts {
            service: "api".into(),
            author: Some("ann".into()),
            files: vec!["src/billing/invoice.rs".into()],
            size: 40.0,
            merged_at: 0,
        };
        let mut history = History::new(Distances::new());
        let test = outcome("t", Outcome::Passed);
        let before = history.features(&ChangePaths::new(&change), "api", &test, 0);
        assert_eq!(feature(&before, "runs_seen"), 0.0);
        // "billing" of src/billing/invoice.rs is in the test's class; "invoice" is not.
        assert_eq!(feature(&before, "path_token_overlap"), 0.5);

        history.observe(&run(0, Outcome::Failed), &change);
        history.observe(&run(1, Outcome::Flaky), &change);
        let after = history.features(&ChangePaths::new(&change), "api", &test, 40 * DAY_MICROS);
        assert_eq!(feature(&after, "fail_rate_all"), 0.5);
        assert_eq!(feature(&after, "flaky_rate"), 0.5);
        // Both runs are older than 30 days at day 40.
        assert_eq!(feature(&after, "fail_rate_30d"), 0.0);
        // One failure in two runs with this file, smoothed: 1 / (2 + 1).
        assert!((feature(&after, "file_cofail_rate") - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(feature(&after, "author_fail_rate"), 0.5);
        assert_eq!(history.stats("t").unwrap().last_failure_at, Some(0));
    }

    #[test]
    fn tokens_skip_generic_words_and_numbers() {
        let tokens = path_tokens("src/Billing/lib_3.rs");
        assert_eq!(tokens, BTreeSet::from(["billing".to_string()]));
        assert_eq!(
            directories(&["a/b/c.rs".into(), "a/b/d.rs".into()]),
            ["a/b/"]
        );
    }
}
