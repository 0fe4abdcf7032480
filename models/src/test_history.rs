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
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use maestro_datasets::lake::{Lake, read_parquet_columns};
use maestro_datasets::schema::{Change, Row, TestResult};
use petgraph::Undirected;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::features::service_graph;
use crate::telemetry::{floats, ints, lists, strings, times};

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

/// What names a test, the same in every run of it: shared by those runs rather than copied, as
/// a year of CI holds millions of runs of a few thousand tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)] // fields named for what they hold
pub struct TestCase {
    pub test_id: String,
    /// Name of the test case, without its class.
    pub name: String,
    pub suite: String,
    pub file: Option<String>,
    pub classname: Option<String>,
}

/// One test of one run.
#[derive(Debug, Clone)]
#[allow(missing_docs)] // fields named for what they hold
pub struct TestOutcome {
    pub case: Arc<TestCase>,
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

/// Every run in the lake, in time order (then by run id), one outcome per test. Parts are read
/// one at a time and each row is kept as a few numbers: a year of CI is millions of rows of a
/// few thousand tests.
pub fn read_runs(lake: &Lake) -> Result<Vec<TestRun>> {
    const COLUMNS: [&str; 12] = [
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
    ];
    let mut reading = RunsRead::default();
    for part in lake.parts(&TestResult::TABLE)? {
        for batch in read_parquet_columns(&part, &COLUMNS)? {
            reading.add(&batch)?;
        }
    }
    Ok(reading.finish())
}

/// Row `row` of a text column; `None` when null.
fn text_at(column: &StringArray, row: usize) -> Option<&str> {
    column.is_valid(row).then(|| column.value(row))
}

/// One attempt of one test, as read.
struct Attempt {
    /// Number of the test id.
    test: u32,
    /// Number of the test's texts.
    case: u32,
    attempt: i64,
    status: AttemptStatus,
    at: i64,
    duration_s: Option<f64>,
}

#[derive(Clone, Copy, PartialEq)]
enum AttemptStatus {
    Passed,
    Failed,
    Skipped,
}

/// A run as its rows are read.
struct RunRead {
    run_id: String,
    change_id: Option<String>,
    service: String,
    attempts: Vec<Attempt>,
}

/// The runs of the parts read so far.
#[derive(Default)]
struct RunsRead {
    cases: CaseInterner,
    runs: Vec<RunRead>,
    by_id: foldhash::HashMap<String, usize>,
}

impl RunsRead {
    fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let (run_ids, change_ids) = (strings(batch, "run_id")?, strings(batch, "change_id")?);
        let (services, suites) = (strings(batch, "service")?, strings(batch, "suite")?);
        let (test_ids, names) = (strings(batch, "test_id")?, strings(batch, "name")?);
        let (classnames, files) = (strings(batch, "classname")?, strings(batch, "file")?);
        let statuses = strings(batch, "status")?;
        let durations = floats(batch, "duration_s")?;
        let attempts = ints(batch, "attempt")?;
        let started = times(batch, "started_at")?;
        for row in 0..batch.num_rows() {
            let run_id = run_ids.value(row);
            let run = match self.by_id.get(run_id) {
                Some(run) => *run,
                None => {
                    self.runs.push(RunRead {
                        run_id: run_id.to_string(),
                        change_id: text_at(change_ids, row).map(str::to_string),
                        service: text_at(services, row).unwrap_or_default().to_string(),
                        attempts: Vec::new(),
                    });
                    self.by_id.insert(run_id.to_string(), self.runs.len() - 1);
                    self.runs.len() - 1
                }
            };
            let (test, case) = self.cases.intern(TestCaseRef {
                test_id: test_ids.value(row),
                name: names.value(row),
                suite: suites.value(row),
                file: text_at(files, row),
                classname: text_at(classnames, row),
            });
            let status = match statuses.value(row) {
                "failed" | "error" => AttemptStatus::Failed,
                "skipped" => AttemptStatus::Skipped,
                _ => AttemptStatus::Passed,
            };
            self.runs[run].attempts.push(Attempt {
                test,
                case,
                attempt: attempts.value(row),
                status,
                at: started.value(row),
                duration_s: durations.is_valid(row).then(|| durations.value(row)),
            });
        }
        Ok(())
    }

    /// One outcome per test of each run: a test whose last attempt failed is a failure, one
    /// that failed and then passed is flaky, one skipped in every attempt is skipped; its
    /// duration is its first attempt's. Tests in id order, runs in time order.
    fn finish(self) -> Vec<TestRun> {
        let cases = self.cases;
        let mut runs: Vec<TestRun> = self
            .runs
            .into_iter()
            .map(|mut read| {
                // Stable: attempts of the same number keep the order they were read in.
                read.attempts.sort_by_key(|a| (a.test, a.attempt));
                let mut tests = Vec::new();
                for attempts in read.attempts.chunk_by(|a, b| a.test == b.test) {
                    let (first, last) = (&attempts[0], &attempts[attempts.len() - 1]);
                    let failed_once = attempts.iter().any(|a| a.status == AttemptStatus::Failed);
                    let outcome = if attempts.iter().all(|a| a.status == AttemptStatus::Skipped) {
                        Outcome::Skipped
                    } else if last.status == AttemptStatus::Failed {
                        Outcome::Failed
                    } else if failed_once {
                        Outcome::Flaky
                    } else {
                        Outcome::Passed
                    };
                    tests.push((
                        attempts.iter().map(|a| a.at).min().unwrap_or(first.at),
                        TestOutcome {
                            case: cases.get(first.case),
                            outcome,
                            duration_s: first.duration_s.unwrap_or(0.0),
                        },
                    ));
                }
                tests.sort_by(|a, b| a.1.case.test_id.cmp(&b.1.case.test_id));
                TestRun {
                    run_id: read.run_id,
                    change_id: read.change_id,
                    service: read.service,
                    at: tests.iter().map(|(at, _)| *at).min().unwrap_or(0),
                    tests: tests.into_iter().map(|(_, test)| test).collect(),
                }
            })
            .collect();
        runs.sort_by(|a, b| (a.at, &a.run_id).cmp(&(b.at, &b.run_id)));
        runs
    }
}

/// A test case's texts as read, before they are shared.
#[derive(PartialEq)]
struct TestCaseRef<'a> {
    test_id: &'a str,
    name: &'a str,
    suite: &'a str,
    file: Option<&'a str>,
    classname: Option<&'a str>,
}

/// One shared `TestCase` per distinct set of texts, and a number per test id.
#[derive(Default)]
struct CaseInterner {
    /// Test id -> its number and the numbers of its cases (almost always one).
    by_id: foldhash::HashMap<String, (u32, Vec<u32>)>,
    cases: Vec<Arc<TestCase>>,
}

impl CaseInterner {
    /// The numbers of the test id and of the case of `texts`.
    fn intern(&mut self, texts: TestCaseRef<'_>) -> (u32, u32) {
        let cases = &self.cases;
        let same = |case: &&u32| {
            let case = &cases[**case as usize];
            texts
                == TestCaseRef {
                    test_id: &case.test_id,
                    name: &case.name,
                    suite: &case.suite,
                    file: case.file.as_deref(),
                    classname: case.classname.as_deref(),
                }
        };
        if let Some((test, variants)) = self.by_id.get(texts.test_id)
            && let Some(case) = variants.iter().find(same)
        {
            return (*test, *case);
        }
        let case = self.cases.len() as u32;
        self.cases.push(Arc::new(TestCase {
            test_id: texts.test_id.to_string(),
            name: texts.name.to_string(),
            suite: texts.suite.to_string(),
            file: texts.file.map(str::to_string),
            classname: texts.classname.map(str::to_string),
        }));
        let tests = self.by_id.len() as u32;
        let (test, variants) = self
            .by_id
            .entry(texts.test_id.to_string())
            .or_insert_with(|| (tests, Vec::new()));
        variants.push(case);
        (*test, case)
    }

    fn get(&self, case: u32) -> Arc<TestCase> {
        Arc::clone(&self.cases[case as usize])
    }
}

/// Service, author, files and size of every change in the lake.
pub fn read_changes(lake: &Lake) -> Result<HashMap<String, ChangeFacts>> {
    const COLUMNS: [&str; 7] = [
        "change_id",
        "service",
        "author",
        "files",
        "lines_added",
        "lines_deleted",
        "merged_at",
    ];
    // Test selection works from test history alone when the lake has no changes.
    let mut changes = HashMap::new();
    for part in lake.parts(&Change::TABLE)? {
        for batch in read_parquet_columns(&part, &COLUMNS)? {
            let (ids, services) = (strings(&batch, "change_id")?, strings(&batch, "service")?);
            let authors = strings(&batch, "author")?;
            let files = lists(&batch, "files")?;
            let (added, deleted) = (ints(&batch, "lines_added")?, ints(&batch, "lines_deleted")?);
            let merged_at = times(&batch, "merged_at")?;
            let number = |column: &Int64Array, row: usize| {
                if column.is_valid(row) {
                    column.value(row)
                } else {
                    0
                }
            };
            for row in 0..batch.num_rows() {
                let paths = if files.is_valid(row) {
                    let values = files.value(row);
                    let values = values
                        .as_string_opt::<i32>()
                        .ok_or_else(|| Error::Data("column files is not a list of text".into()))?;
                    values.iter().flatten().map(str::to_string).collect()
                } else {
                    Vec::new()
                };
                changes.insert(
                    ids.value(row).to_string(),
                    ChangeFacts {
                        service: services.value(row).to_string(),
                        author: authors
                            .is_valid(row)
                            .then(|| authors.value(row).to_string()),
                        files: paths,
                        size: (number(added, row) + number(deleted, row)) as f64,
                        merged_at: merged_at.value(row),
                    },
                );
            }
        }
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
    /// The texts above were copied from this case: a run of the same case copies nothing.
    #[serde(skip)]
    copied_from: Option<Arc<TestCase>>,
}

/// Runs and failures of a test when a path was among the changed ones.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct CoFailure {
    runs: u32,
    failures: u32,
}

/// Everything the walk has seen: the state features are computed from. The maps by test are
/// hashed, as the walk looks tests up millions of times; a saved history lists them in key
/// order all the same, so it is the same bytes for the same runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    #[serde(serialize_with = "in_key_order")]
    tests: foldhash::HashMap<String, TestState>,
    /// test -> changed path or directory -> co-failure counts.
    co_failure: CoFailures,
    /// author -> (changes, changes with a failing run).
    authors: BTreeMap<String, (u32, u32)>,
    distances: Distances,
    /// service -> the most tests one of its runs has executed.
    largest_suite: SuiteSizes,
    /// service -> test ids of its latest full suite run.
    suites: BTreeMap<String, Vec<String>>,
}

/// Test -> changed path or directory -> co-failure counts, with the paths numbered: each run
/// looks its change's paths up once, then each of its tests by number. Saved as text keys in
/// key order.
#[derive(Debug, Clone, Default)]
struct CoFailures {
    paths: Vec<String>,
    numbers: foldhash::HashMap<String, u32>,
    by_test: foldhash::HashMap<String, foldhash::HashMap<u32, CoFailure>>,
}

impl CoFailures {
    fn number(&self, path: &str) -> Option<u32> {
        self.numbers.get(path).copied()
    }

    fn number_or_add(&mut self, path: &str) -> u32 {
        if let Some(number) = self.numbers.get(path) {
            return *number;
        }
        let number = self.paths.len() as u32;
        self.paths.push(path.to_string());
        self.numbers.insert(path.to_string(), number);
        number
    }

    /// Counts one run of `test_id` with the paths `numbers` changed.
    fn observe(&mut self, test_id: &str, numbers: &[u32], failed: bool) {
        if !self.by_test.contains_key(test_id) {
            self.by_test
                .insert(test_id.to_string(), foldhash::HashMap::default());
        }
        let counts = self.by_test.get_mut(test_id).expect("inserted above");
        for number in numbers {
            let entry = counts.entry(*number).or_default();
            entry.runs += 1;
            entry.failures += u32::from(failed);
        }
    }
}

impl Serialize for CoFailures {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        let named: BTreeMap<&str, BTreeMap<&str, CoFailure>> = self
            .by_test
            .iter()
            .map(|(test, counts)| {
                let counts = counts
                    .iter()
                    .map(|(number, c)| (self.paths[*number as usize].as_str(), *c))
                    .collect();
                (test.as_str(), counts)
            })
            .collect();
        named.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for CoFailures {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let named = BTreeMap::<String, BTreeMap<String, CoFailure>>::deserialize(deserializer)?;
        let mut co_failures = CoFailures::default();
        for (test, counts) in named {
            let counts = counts
                .into_iter()
                .map(|(path, c)| (co_failures.number_or_add(&path), c))
                .collect();
            co_failures.by_test.insert(test, counts);
        }
        Ok(co_failures)
    }
}

fn in_key_order<S: serde::Serializer, V: Serialize>(
    map: &foldhash::HashMap<String, V>,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serializer.collect_map(map.iter().collect::<BTreeMap<_, _>>())
}

/// Service -> the most tests one of its runs has executed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SuiteSizes(BTreeMap<String, usize>);

impl SuiteSizes {
    /// Whether `run` executed its service's suite in full: at least 90% of the most tests a run
    /// of that service has executed, this one included.
    pub fn is_full(&self, run: &TestRun) -> bool {
        let executed = run.executed();
        let largest = self.0.get(&run.service).copied().unwrap_or(0).max(executed);
        executed > 0 && executed as f64 >= FULL_SUITE_SHARE * largest as f64
    }

    /// Counts `run` in its service's largest suite.
    pub fn observe(&mut self, run: &TestRun) {
        match self.0.get_mut(&run.service) {
            Some(largest) => *largest = (*largest).max(run.executed()),
            None => {
                self.0.insert(run.service.clone(), run.executed());
            }
        }
    }
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
        self.largest_suite.is_full(run)
    }

    /// The most tests each service's runs have executed so far, to tell full suite runs.
    pub fn suite_sizes(&self) -> &SuiteSizes {
        &self.largest_suite
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
        let mut tests: Vec<(&str, &TestState)> =
            self.tests.iter().map(|(id, s)| (id.as_str(), s)).collect();
        tests.sort_unstable_by_key(|(id, _)| *id);
        tests.into_iter()
    }

    /// How many tests have been seen.
    pub fn test_count(&self) -> usize {
        self.tests.len()
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
        let state = self.tests.get(&test.case.test_id);
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
        let test_co_failure = self.co_failure.by_test.get(&test.case.test_id);
        let co_failure = |numbers: &[Option<u32>]| -> (f64, f64) {
            let mut best = 0.0f64;
            let mut count = 0u32;
            for number in numbers {
                if let Some(c) = test_co_failure.zip(*number).and_then(|(m, n)| m.get(&n)) {
                    // One smoothed rate: a single co-failure in one run is weak evidence.
                    best = best.max(f64::from(c.failures) / (f64::from(c.runs) + 1.0));
                    count += c.failures;
                }
            }
            (best, f64::from(count).ln_1p())
        };
        let (file_rate, file_count) = co_failure(&change.file_numbers);
        let (dir_rate, dir_count) = co_failure(&change.directory_numbers);
        let fresh_tokens;
        let test_tokens = match state {
            Some(s) => &s.tokens,
            None => {
                fresh_tokens = test_tokens(&test.case);
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
                .map(|t| t.case.test_id.clone())
                .collect();
            suite.sort();
            self.suites.insert(run.service.clone(), suite);
        }
        self.largest_suite.observe(run);
        let path_numbers: Vec<u32> = change
            .files
            .iter()
            .chain(&directories(&change.files))
            .map(|path| self.co_failure.number_or_add(path))
            .collect();
        for test in run.tests.iter().filter(|t| t.outcome != Outcome::Skipped) {
            let failed = test.outcome == Outcome::Failed;
            let case = &test.case;
            // Looked up before inserting, so a test seen before costs no new key.
            if !self.tests.contains_key(&case.test_id) {
                let state = TestState {
                    tokens: test_tokens(case),
                    ..Default::default()
                };
                self.tests.insert(case.test_id.clone(), state);
            }
            let state = self.tests.get_mut(&case.test_id).expect("inserted above");
            if state.service != run.service {
                state.service.clone_from(&run.service);
            }
            if !state
                .copied_from
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, case))
            {
                state.suite.clone_from(&case.suite);
                state.name.clone_from(&case.name);
                state.classname.clone_from(&case.classname);
                state.file.clone_from(&case.file);
                state.copied_from = Some(Arc::clone(case));
            }
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
            self.co_failure
                .observe(&case.test_id, &path_numbers, failed);
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
    /// The numbers `history` gave its files and its directories (`None` for a path it has not
    /// seen), so that each test looks paths up by number.
    file_numbers: Vec<Option<u32>>,
    directory_numbers: Vec<Option<u32>>,
    file_tokens: Vec<BTreeSet<String>>,
}

impl<'a> ChangePaths<'a> {
    /// The change's files and directories as `history` numbers them, and the word tokens of
    /// each of its files.
    pub fn new(facts: &'a ChangeFacts, history: &History) -> ChangePaths<'a> {
        let number = |path: &String| history.co_failure.number(path);
        ChangePaths {
            facts,
            file_numbers: facts.files.iter().map(number).collect(),
            directory_numbers: directories(&facts.files).iter().map(number).collect(),
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

fn test_tokens(test: &TestCase) -> BTreeSet<String> {
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
            case: Arc::new(TestCase {
                test_id: test_id.into(),
                name: test_id.into(),
                suite: "api-tests".into(),
                file: Some("tests/billing_test.rs".into()),
                classname: Some("api.billing_test".into()),
            }),
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
        let before = history.features(&ChangePaths::new(&change, &history), "api", &test, 0);
        assert_eq!(feature(&before, "runs_seen"), 0.0);
        // "billing" of src/billing/invoice.rs is in the test's class; "invoice" is not.
        assert_eq!(feature(&before, "path_token_overlap"), 0.5);

        history.observe(&run(0, Outcome::Failed), &change);
        history.observe(&run(1, Outcome::Flaky), &change);
        let after = history.features(
            &ChangePaths::new(&change, &history),
            "api",
            &test,
            40 * DAY_MICROS,
        );
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
