//! The nightly pipeline: jobs that declare what they read and write, the DAG derived from
//! those declarations (petgraph), and a run that executes it incrementally.
//!
//! Every job run is a row of `_runs` with the fingerprint of its inputs. A job whose inputs
//! have the fingerprint of its last successful run is skipped; date-partitioned jobs compare
//! per date, where a date's inputs are the input partitions up to that date (the features look
//! only at the past), so a late file for an old date reruns that date and the ones after it,
//! and nothing before. Every job writes through lake transactions that replace what they
//! cover, so a run killed anywhere is finished by the next one with the same bytes.

pub mod fingerprint;
mod jobs;
pub mod lock;
pub mod publish;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use maestro_datasets::Lake;
use maestro_datasets::ledger::{JobRun, LEDGER_TABLES};
use maestro_datasets::schema::{DERIVED_TABLES, RAW_TABLES, Row, TableDef, Ts};
use petgraph::graph::{DiGraph, NodeIndex};
use sha2::{Digest, Sha256};

use crate::config::Config;

/// How a job splits its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioning {
    /// One unit over the whole lake.
    Whole,
    /// One unit per date of this table's partitions.
    ByDate(&'static str),
}

/// When a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    /// Whenever its inputs changed.
    EveryRun,
    /// When its inputs changed and its model is due (`[run] retrain_days`) or its inputs grew
    /// by `[run] retrain_growth`; always when there is no model yet.
    Retrain,
}

/// One job of the pipeline.
#[derive(Debug)]
pub struct Job {
    pub name: &'static str,
    pub about: &'static str,
    /// Lake tables and other resources (`landing`, `models/risk`, `reports`...) it reads.
    pub reads: &'static [&'static str],
    pub writes: &'static [&'static str],
    pub partitioning: Partitioning,
    pub cadence: Cadence,
}

/// The jobs, in no particular order: the order they run in comes from the DAG.
pub const JOBS: [Job; 9] = [
    Job {
        name: "ingest",
        about: "take new files of the landing folders into the raw tables",
        reads: &["landing"],
        writes: &[
            "changes",
            "deployments",
            "incidents",
            "test_results",
            "spans",
            "metric_points",
            "audit_events",
            "slos",
            "service_edges",
            "_ingested",
            "_rejected",
        ],
        partitioning: Partitioning::Whole,
        cadence: Cadence::EveryRun,
    },
    Job {
        name: "audit_digest",
        about: "verify the audit hash chain and digest each new day",
        reads: &["audit_events"],
        writes: &["audit_digests"],
        partitioning: Partitioning::Whole,
        cadence: Cadence::EveryRun,
    },
    Job {
        name: "train_risk",
        about: "train the deployment-risk model, promote it if it beats the champion",
        reads: &["changes", "deployments", "incidents"],
        writes: &["models/risk", "risk_evaluation"],
        partitioning: Partitioning::Whole,
        cadence: Cadence::Retrain,
    },
    Job {
        name: "train_tests",
        about: "train the test-selection model, replay it against the baselines, test health",
        reads: &["changes", "test_results"],
        writes: &[
            "models/tests",
            "test_health",
            "test_selection_replay",
            "test_selection_curve",
        ],
        partitioning: Partitioning::Whole,
        cadence: Cadence::Retrain,
    },
    Job {
        name: "score",
        about: "score every deployment with the champion risk model",
        reads: &["models/risk", "changes", "deployments", "incidents"],
        writes: &["risk_verdicts"],
        partitioning: Partitioning::ByDate("deployments"),
        cadence: Cadence::EveryRun,
    },
    Job {
        name: "judge",
        about: "judge canaries and whether each deployment should roll back",
        reads: &["deployments", "metric_points", "incidents", "service_edges"],
        writes: &["canary_verdicts", "rollback_verdicts"],
        partitioning: Partitioning::Whole,
        cadence: Cadence::EveryRun,
    },
    Job {
        name: "select_tests",
        about: "the champion's test selection for every change",
        reads: &["models/tests", "changes", "test_results"],
        writes: &["test_selection"],
        partitioning: Partitioning::ByDate("changes"),
        cadence: Cadence::EveryRun,
    },
    Job {
        name: "reports",
        about: "every SQL report and control, and the executive report",
        reads: &[
            "changes",
            "deployments",
            "incidents",
            "test_results",
            "spans",
            "metric_points",
            "audit_events",
            "slos",
            "service_edges",
            "audit_digests",
            "risk_verdicts",
            "canary_verdicts",
            "rollback_verdicts",
            "test_selection",
            "test_selection_curve",
            "test_health",
        ],
        writes: &["reports"],
        partitioning: Partitioning::Whole,
        cadence: Cadence::EveryRun,
    },
    Job {
        name: "publish",
        about: "publish models, verdicts and reports as published/<run-id>, then latest",
        reads: &[
            "models/risk",
            "models/tests",
            "risk_verdicts",
            "canary_verdicts",
            "rollback_verdicts",
            "test_selection",
            "test_health",
            "risk_evaluation",
            "test_selection_curve",
            "reports",
        ],
        writes: &["published"],
        partitioning: Partitioning::Whole,
        cadence: Cadence::EveryRun,
    },
];

/// The job DAG: an edge from each job to every job that reads something it writes.
pub struct Dag {
    pub graph: DiGraph<&'static Job, String>,
}

impl Dag {
    /// Derives the DAG from the jobs' declarations; a cycle is an error naming a job on it.
    pub fn new() -> anyhow::Result<Dag> {
        let mut graph = DiGraph::new();
        let nodes: Vec<NodeIndex> = JOBS.iter().map(|job| graph.add_node(job)).collect();
        for (i, writer) in JOBS.iter().enumerate() {
            for (j, reader) in JOBS.iter().enumerate() {
                let shared: Vec<&str> = writer
                    .writes
                    .iter()
                    .filter(|w| reader.reads.contains(w))
                    .copied()
                    .collect();
                if i != j && !shared.is_empty() {
                    graph.add_edge(nodes[i], nodes[j], shared.join(", "));
                }
            }
        }
        Ok(Dag { graph })
    }

    /// Jobs in an order where each comes after everything it reads from.
    pub fn order(&self) -> anyhow::Result<Vec<&'static Job>> {
        let order = petgraph::algo::toposort(&self.graph, None).map_err(|cycle| {
            anyhow::anyhow!(
                "the jobs' declarations form a cycle through {}",
                self.graph[cycle.node_id()].name
            )
        })?;
        Ok(order.into_iter().map(|n| self.graph[n]).collect())
    }

    /// The jobs `job` reads from, directly.
    pub fn upstream(&self, job: &str) -> Vec<&'static str> {
        let Some(node) = self
            .graph
            .node_indices()
            .find(|&n| self.graph[n].name == job)
        else {
            return Vec::new();
        };
        self.graph
            .neighbors_directed(node, petgraph::Direction::Incoming)
            .map(|n| self.graph[n].name)
            .collect()
    }

    /// Graphviz DOT.
    pub fn dot(&self) -> String {
        let mut out = String::from("digraph maestro {\n  rankdir=LR;\n  node [shape=box];\n");
        for job in &JOBS {
            out.push_str(&format!("  {} [tooltip=\"{}\"];\n", job.name, job.about));
        }
        for edge in self.sorted_edges() {
            out.push_str(&format!(
                "  {} -> {} [label=\"{}\"];\n",
                edge.0, edge.1, edge.2
            ));
        }
        out.push_str("}\n");
        out
    }

    /// Mermaid flowchart.
    pub fn mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        for edge in self.sorted_edges() {
            out.push_str(&format!("  {} -->|{}| {}\n", edge.0, edge.2, edge.1));
        }
        out
    }

    fn sorted_edges(&self) -> Vec<(&'static str, &'static str, String)> {
        let mut edges: Vec<_> = self
            .graph
            .edge_indices()
            .filter_map(|e| {
                let (a, b) = self.graph.edge_endpoints(e)?;
                Some((
                    self.graph[a].name,
                    self.graph[b].name,
                    self.graph[e].clone(),
                ))
            })
            .collect();
        edges.sort();
        edges
    }
}

/// The lake table of a resource name, if it is one.
fn table_named(name: &str) -> Option<TableDef> {
    RAW_TABLES
        .iter()
        .chain(DERIVED_TABLES.iter())
        .chain(LEDGER_TABLES.iter())
        .find(|t| t.name == name)
        .copied()
}

/// How the pipeline's run ids begin, to tell its `_runs` rows from other commands'.
pub const RUN_ID_PREFIX: &str = "run-";

/// What a run should do.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Dates (`YYYY-MM-DD`, both included) of the date-partitioned jobs; None is open.
    pub from: Option<String>,
    pub to: Option<String>,
    /// Only these jobs (all when empty).
    pub select: Vec<String>,
    /// Rerun whatever the fingerprints say.
    pub force: bool,
    /// Say what would run, run nothing.
    pub dry_run: bool,
    /// The generator's true probabilities per deployment, to judge a new risk model against.
    pub risk_oracle: Option<std::path::PathBuf>,
}

impl RunOptions {
    fn in_range(&self, date: &str) -> bool {
        self.from.as_deref().is_none_or(|f| date >= f)
            && self.to.as_deref().is_none_or(|t| date <= t)
    }
}

/// What became of one job in a run.
#[derive(Debug, Clone)]
pub struct JobReport {
    pub job: &'static str,
    /// succeeded, skipped, failed, blocked (an upstream job failed), or would-run (dry run).
    pub status: &'static str,
    /// The dates processed for date-partitioned jobs, `all` otherwise.
    pub partitions: Vec<String>,
    pub seconds: f64,
    pub rows_written: u64,
    /// Peak resident memory while the job ran, in MB (see `reset_peak`).
    pub peak_mb: f64,
    pub message: String,
}

/// What a whole run did.
#[derive(Debug)]
pub struct RunReport {
    pub run_id: String,
    pub jobs: Vec<JobReport>,
    /// Where it published, when it did.
    pub published: Option<std::path::PathBuf>,
    pub seconds: f64,
}

impl RunReport {
    /// Whether any job failed or was blocked by one that did.
    pub fn failed(&self) -> bool {
        self.jobs
            .iter()
            .any(|j| j.status == "failed" || j.status == "blocked")
    }
}

/// The last successful run of each (job, partition), from `_runs`.
pub struct Ledger {
    latest: BTreeMap<(String, String), JobRun>,
}

impl Ledger {
    /// Reads `_runs`.
    pub fn load(lake: &Lake) -> anyhow::Result<Ledger> {
        let mut latest: BTreeMap<(String, String), JobRun> = BTreeMap::new();
        // `maestro ingest` records its own runs too; only the pipeline's carry fingerprints.
        for run in read_runs(lake)? {
            if run.status != "succeeded" || !run.run_id.starts_with(RUN_ID_PREFIX) {
                continue;
            }
            let key = (run.job.clone(), run.partition.clone());
            if latest
                .get(&key)
                .is_none_or(|seen| seen.finished_at.0 <= run.finished_at.0)
            {
                latest.insert(key, run);
            }
        }
        Ok(Ledger { latest })
    }

    fn last_success(&self, job: &str, partition: &str) -> Option<&JobRun> {
        self.latest.get(&(job.to_string(), partition.to_string()))
    }

    fn fingerprint(&self, job: &str, partition: &str) -> Option<&str> {
        self.last_success(job, partition)
            .and_then(|r| r.inputs_sha256.first())
            .map(String::as_str)
    }
}

/// Every row of `_runs`.
pub fn read_runs(lake: &Lake) -> anyhow::Result<Vec<JobRun>> {
    use datafusion::arrow::array::{
        Array, AsArray, Int64Array, ListArray, StringArray, TimestampMicrosecondArray,
    };
    let mut runs = Vec::new();
    for batch in lake.read_table(&JobRun::TABLE)? {
        // A column of the wrong type is a damaged ledger: an error, not a panic.
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .with_context(|| format!("_runs has no column {name}"))
        };
        let wrong = |name: &str| format!("_runs column {name} has the wrong type");
        let text = |name: &str| -> anyhow::Result<StringArray> {
            Ok(column(name)?
                .as_string_opt::<i32>()
                .with_context(|| wrong(name))?
                .clone())
        };
        let int = |name: &str| -> anyhow::Result<Int64Array> {
            Ok(column(name)?
                .as_primitive_opt::<datafusion::arrow::datatypes::Int64Type>()
                .with_context(|| wrong(name))?
                .clone())
        };
        let time = |name: &str| -> anyhow::Result<TimestampMicrosecondArray> {
            Ok(column(name)?
                .as_primitive_opt::<datafusion::arrow::datatypes::TimestampMicrosecondType>()
                .with_context(|| wrong(name))?
                .clone())
        };
        let list = |name: &str| -> anyhow::Result<ListArray> {
            Ok(column(name)?
                .as_list_opt::<i32>()
                .with_context(|| wrong(name))?
                .clone())
        };
        let (run_id, job, partition, status, message) = (
            text("run_id")?,
            text("job")?,
            text("partition")?,
            text("status")?,
            text("message")?,
        );
        let (read, written, rejected) = (
            int("rows_read")?,
            int("rows_written")?,
            int("rows_rejected")?,
        );
        let (started, finished) = (time("started_at")?, time("finished_at")?);
        let (inputs, outputs) = (list("inputs_sha256")?, list("outputs")?);
        let strings = |list: &ListArray, i: usize| -> Vec<String> {
            let values = list.value(i);
            let values = values.as_string::<i32>();
            (0..values.len())
                .map(|j| values.value(j).to_string())
                .collect()
        };
        for i in 0..batch.num_rows() {
            runs.push(JobRun {
                run_id: run_id.value(i).to_string(),
                job: job.value(i).to_string(),
                partition: partition.value(i).to_string(),
                inputs_sha256: strings(&inputs, i),
                outputs: strings(&outputs, i),
                rows_read: read.value(i),
                rows_written: written.value(i),
                rows_rejected: rejected.value(i),
                status: status.value(i).to_string(),
                message: (!message.is_null(i)).then(|| message.value(i).to_string()),
                started_at: Ts(started.value(i)),
                finished_at: Ts(finished.value(i)),
            });
        }
    }
    Ok(runs)
}

/// Fingerprints of a job's inputs.
struct Inputs<'a> {
    lake: &'a Lake,
    config: &'a Config,
}

impl Inputs<'_> {
    /// The hasher every fingerprint starts from: the code and the configuration.
    fn base(&self, job: &Job) -> Sha256 {
        let mut hasher = Sha256::new();
        hasher.update(format!(
            "maestro {}\njob {}\nconfig {}\n",
            env!("CARGO_PKG_VERSION"),
            job.name,
            self.config.sha256
        ));
        hasher
    }

    fn hash_resource(&self, name: &str, hasher: &mut Sha256) -> anyhow::Result<()> {
        hasher.update(format!("resource {name}\n"));
        let root = self.lake.root();
        match name {
            "landing" => fingerprint::hash_landing(&self.config.run.landing, hasher),
            "audit_digests" => fingerprint::hash_lake_folder(
                self.lake,
                &maestro_datasets::audit_trail::digest_path(self.lake),
                hasher,
            ),
            "reports" => fingerprint::hash_lake_folder(self.lake, &root.join("reports"), hasher),
            _ if name.starts_with("models/") => {
                fingerprint::hash_lake_folder(self.lake, &root.join(name), hasher)
            }
            _ => {
                let table = table_named(name)
                    .with_context(|| format!("a job reads {name}, which is no lake table"))?;
                fingerprint::hash_lake_folder(self.lake, &self.lake.table_dir(&table), hasher)
            }
        }
    }

    /// One fingerprint of everything the job reads.
    fn whole(&self, job: &Job) -> anyhow::Result<String> {
        let mut hasher = self.base(job);
        for name in job.reads {
            self.hash_resource(name, &mut hasher)?;
        }
        Ok(fingerprint::finish(hasher))
    }

    /// A fingerprint per date of `dates`: the undated inputs whole, and each dated table's
    /// partitions up to that date.
    fn by_date(&self, job: &Job, dates: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
        let mut undated = self.base(job);
        let mut dated: Vec<BTreeMap<String, Vec<String>>> = Vec::new();
        for name in job.reads {
            match table_named(name) {
                Some(table) if table.layout == maestro_datasets::schema::Layout::ByDate => {
                    dated.push(fingerprint::parts_by_date(self.lake, &table)?);
                }
                _ => self.hash_resource(name, &mut undated)?,
            }
        }
        // One pass in date order, each date's hash continuing the one before.
        let mut all_dates: BTreeSet<&String> = dated.iter().flat_map(|d| d.keys()).collect();
        all_dates.extend(dates.iter());
        let mut running = undated;
        let mut out = BTreeMap::new();
        for date in all_dates {
            for table in &dated {
                for part in table.get(date).into_iter().flatten() {
                    running.update(part.as_bytes());
                    running.update(b"\n");
                }
            }
            if dates.contains(date) {
                out.insert(date.clone(), fingerprint::finish(running.clone()));
            }
        }
        Ok(out)
    }
}

/// Starts a new peak for `peak_mb`, so that each job's peak is its own: on Linux, writing 5 to
/// `/proc/self/clear_refs` resets the process's high-water mark to what it holds now. Where
/// that is refused, `peak_mb` stays the peak of the whole process so far.
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident memory of this process since the last `reset_peak`, in MB (`VmHWM`).
pub fn peak_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

pub use jobs::run;

/// Dates as contiguous runs of the given sorted list: `[a, b, d]` of `[a, b, c, d]` gives
/// `[a..b, d..d]`.
fn contiguous_ranges(all: &[String], chosen: &BTreeSet<String>) -> Vec<(String, String)> {
    let mut ranges: Vec<(String, String)> = Vec::new();
    let mut previous_chosen = false;
    for date in all {
        let is_chosen = chosen.contains(date);
        if is_chosen {
            match ranges.last_mut() {
                Some(range) if previous_chosen => range.1 = date.clone(),
                _ => ranges.push((date.clone(), date.clone())),
            }
        }
        previous_chosen = is_chosen;
    }
    ranges
}
