//! Training and scoring rows for the risk model, computed with polars from the lake's Parquet
//! files, point-in-time correct: a deployment's features use only what was known when it started.
//!
//! - Change level: the 14 just-in-time metrics of a change (counts on a log scale), labelled by
//!   `is_buggy`.
//! - Deployment level: those metrics summed and maxed over the changes the deployment carries;
//!   its number of changes and authors and the least experienced author; the test failures and
//!   flaky tests of its changes' CI runs that finished before it started; its service's failure,
//!   rollback and incident rates over the previous 7, 30 and 90 days (counting only deployments
//!   whose outcome was known by then) and the time since its previous deployment; hour and
//!   weekday; fan-in, fan-out and blast radius in the service graph; strategy and environment.
//!   Labelled bad when it failed, was rolled back, or caused an incident that began within the
//!   incident window of its start.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use maestro_datasets::lake::Lake;
use maestro_datasets::schema::{Change, Deployment, Incident, Row, ServiceEdge, TestResult};
use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::Bfs;
use polars::prelude::*;

use crate::error::{Error, Result};

/// The 14 just-in-time defect metrics (Kamei et al.), in the lake's column names.
pub const JIT_METRICS: [&str; 14] = [
    "ns", "nd", "nf", "entropy", "la", "ld", "lt", "fix", "ndev", "age", "nuc", "exp", "rexp",
    "sexp",
];

/// JIT metrics that are ratios or flags; the others are counts, taken on a log scale.
const UNSCALED_METRICS: [&str; 2] = ["entropy", "fix"];

/// Deployment strategies that get their own indicator.
const STRATEGIES: [&str; 4] = ["canary", "rolling", "blue_green", "recreate"];

/// Windows of the service history rates, in days.
const HISTORY_DAYS: [i64; 3] = [7, 30, 90];

const MICROS_PER_HOUR: i64 = 3_600_000_000;
const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

/// Which rows to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// One row per deployment.
    Deployment,
    /// One row per change.
    Change,
}

impl Level {
    /// The level's name in versions and tables: `deployment` or `change`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Deployment => "deployment",
            Level::Change => "change",
        }
    }
}

/// Rows of features in time order, with what evaluation needs beside them.
#[derive(Debug, Clone, Default)]
#[allow(missing_docs)] // fields named for what they hold
pub struct FeatureTable {
    /// Feature names, in column order.
    pub names: Vec<String>,
    /// Row-major features, `names.len()` per row.
    pub values: Vec<f64>,
    /// Deployment or change id of each row.
    pub ids: Vec<String>,
    pub services: Vec<String>,
    /// Environment of each deployment; empty for changes.
    pub environments: Vec<String>,
    /// When each row's subject started (deployment) or merged (change), microseconds.
    pub at: Vec<i64>,
    /// Whether it went bad, when known.
    pub label: Vec<Option<bool>>,
    /// Lines added, for the lines-added baseline.
    pub lines_added: Vec<f64>,
    /// Lines added plus deleted: the effort of reviewing it.
    pub effort: Vec<f64>,
}

impl FeatureTable {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.ids.len()
    }

    /// The features of row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        let width = self.names.len();
        &self.values[i * width..(i + 1) * width]
    }

    /// Columns of the row-major values whose names are in `names`, in that order.
    pub fn select(&self, names: &[&str]) -> Result<FeatureTable> {
        let positions: Vec<usize> = names
            .iter()
            .map(|n| {
                self.names
                    .iter()
                    .position(|m| m == n)
                    .ok_or_else(|| Error::Data(format!("no feature named {n:?}")))
            })
            .collect::<Result<_>>()?;
        let mut values = Vec::with_capacity(self.rows() * positions.len());
        for i in 0..self.rows() {
            let row = self.row(i);
            values.extend(positions.iter().map(|p| row[*p]));
        }
        Ok(FeatureTable {
            names: names.iter().map(|n| n.to_string()).collect(),
            values,
            ..self.clone()
        })
    }
}

/// Options of feature building.
#[derive(Debug, Clone)]
pub struct FeatureOptions {
    /// An incident that begins within this many hours of a deployment's start, attributed to
    /// it, makes the deployment bad.
    pub incident_window_hours: i64,
    /// Parquet files of `deployments` rows not (yet) in the lake, read as if they were: a
    /// pending deployment to score against the lake's history.
    pub pending_deployments: Vec<PathBuf>,
}

impl Default for FeatureOptions {
    fn default() -> Self {
        FeatureOptions {
            incident_window_hours: 24,
            pending_deployments: Vec::new(),
        }
    }
}

/// Builds the rows of `level` from the lake.
pub fn build(lake: &Lake, level: Level, options: &FeatureOptions) -> Result<FeatureTable> {
    let changes = change_rows(lake)?;
    let frame = match level {
        Level::Change => changes
            .with_columns([
                col("change_id").alias("id"),
                col("merged_at").alias("at"),
                col("is_buggy").alias("label"),
                col("raw_la").alias("lines_added"),
                (col("raw_la") + col("raw_ld")).alias("effort"),
            ])
            .collect()?,
        Level::Deployment => deployment_rows(lake, changes, options)?,
    };
    to_table(frame, level)
}

/// Scans every part of a table, selecting `columns`; a table without parts is an error that
/// says to ingest history first.
pub(crate) fn scan<R: Row>(lake: &Lake, columns: &[&str]) -> Result<LazyFrame> {
    scan_parts::<R>(lake.parts(&R::TABLE)?, columns)
}

/// Scans the given part files of a table, selecting `columns`.
fn scan_parts<R: Row>(parts: Vec<PathBuf>, columns: &[&str]) -> Result<LazyFrame> {
    let selection: Vec<Expr> = columns.iter().map(|c| col(*c)).collect();
    if parts.is_empty() {
        return Err(Error::Data(format!(
            "the lake has no {} yet: ingest some history first",
            R::TABLE.name
        )));
    }
    let paths: Vec<PlRefPath> = parts
        .iter()
        .map(|p| PlRefPath::new(p.to_string_lossy().as_ref()))
        .collect();
    // The part list is explicit, so the `date=` folder names add nothing: every row carries its
    // own times.
    let args = ScanArgsParquet {
        hive_options: HiveOptions {
            enabled: Some(false),
            ..HiveOptions::new_disabled()
        },
        ..Default::default()
    };
    let frame = LazyFrame::scan_parquet_files(paths.into(), args)?;
    Ok(frame.select(selection))
}

/// Microseconds since the epoch of a timestamp column.
pub(crate) fn micros(name: &str) -> Expr {
    col(name).cast(DataType::Int64)
}

/// Changes, one row each (the latest row of a change wins), with the JIT metrics transformed.
fn change_rows(lake: &Lake) -> Result<LazyFrame> {
    let mut columns = vec!["change_id", "service", "author", "merged_at", "is_buggy"];
    columns.extend(JIT_METRICS);
    let mut transformed = vec![
        micros("merged_at").alias("merged_at"),
        col("la").fill_null(lit(0.0)).alias("raw_la"),
        col("ld").fill_null(lit(0.0)).alias("raw_ld"),
    ];
    for metric in JIT_METRICS {
        let value = if metric == "fix" {
            col(metric).cast(DataType::Float64)
        } else {
            col(metric)
        }
        .fill_null(lit(0.0));
        transformed.push(if UNSCALED_METRICS.contains(&metric) {
            value.alias(metric)
        } else {
            // Counts are never negative in sane data; a negative one is taken as zero.
            when(value.clone().lt(lit(0.0)))
                .then(lit(0.0))
                .otherwise(value)
                .log1p()
                .alias(metric)
        });
    }
    Ok(scan::<Change>(lake, &columns)?
        .unique_stable(
            Some(Selector::ByName {
                names: Arc::new(["change_id".into()]),
                strict: true,
            }),
            UniqueKeepStrategy::Last,
        )
        .with_columns(transformed))
}

/// Sum of non-negative values to a millionth, in integers: polars sums floats in whatever order
/// its threads and chunks give, and float addition depends on order, so a plain sum could differ
/// in its last bits between two runs on the same data. Integer addition does not.
fn exact_sum(value: Expr) -> Expr {
    ((value * lit(1e6) + lit(0.5)).cast(DataType::Int64).sum()).cast(DataType::Float64) / lit(1e6)
}

fn deployment_rows(lake: &Lake, changes: LazyFrame, options: &FeatureOptions) -> Result<DataFrame> {
    // A deployment may arrive in several rows (deployed, then rolled back): fold them, keeping
    // the worst outcome seen.
    let outcome_rank = when(col("outcome").eq(lit("rolled_back")))
        .then(lit(3))
        .when(col("outcome").eq(lit("failed")))
        .then(lit(2))
        .when(col("outcome").eq(lit("succeeded")))
        .then(lit(1))
        .otherwise(lit(0));
    let mut parts = lake.parts(&Deployment::TABLE)?;
    parts.extend(options.pending_deployments.iter().cloned());
    let deployments = scan_parts::<Deployment>(
        parts,
        &[
            "deployment_id",
            "service",
            "environment",
            "change_ids",
            "started_at",
            "finished_at",
            "outcome",
            "strategy",
        ],
    )?
    .with_columns([
        micros("started_at").alias("started_at"),
        micros("finished_at").alias("finished_at"),
        outcome_rank.alias("outcome_rank"),
    ])
    .group_by_stable([col("deployment_id")])
    .agg([
        col("service").first(),
        col("environment").first(),
        col("change_ids").first(),
        col("started_at").min(),
        col("finished_at").max(),
        col("outcome_rank").max(),
        col("strategy").drop_nulls().first(),
    ])
    .filter(col("started_at").is_not_null());

    // Incidents attributed to a deployment, by when each began.
    let incidents = scan::<Incident>(lake, &["caused_by_deployment_id", "detected_at"])?
        .filter(col("caused_by_deployment_id").is_not_null())
        .with_columns([micros("detected_at").alias("detected_at")])
        .group_by([col("caused_by_deployment_id").alias("deployment_id")])
        .agg([col("detected_at").min().alias("incident_at")]);
    let deployments =
        deployments
            .left_join(incidents, col("deployment_id"), col("deployment_id"))
            .with_columns([col("incident_at")
                .gt_eq(col("started_at"))
                .and(col("incident_at").lt_eq(
                    col("started_at") + lit(options.incident_window_hours * MICROS_PER_HOUR),
                ))
                .fill_null(lit(false))
                .alias("caused_incident")])
            .with_columns([when(col("outcome_rank").eq(lit(0)))
                .then(lit(NULL).cast(DataType::Boolean))
                .otherwise(col("outcome_rank").gt_eq(lit(2)).or(col("caused_incident")))
                .alias("label")])
            .cache();

    // The deployment's changes, merged before it started.
    let carried = deployments
        .clone()
        .select([col("deployment_id"), col("started_at"), col("change_ids")])
        .explode(
            Selector::ByName {
                names: Arc::new(["change_ids".into()]),
                strict: true,
            },
            ExplodeOptions {
                empty_as_null: false,
                keep_nulls: false,
            },
        )
        .rename(["change_ids"], ["change_id"], true)
        .inner_join(changes, col("change_id"), col("change_id"))
        .filter(col("merged_at").lt_eq(col("started_at")))
        // Joins may emit rows in any order; sums must not depend on it (same input, same bits).
        .sort(
            ["deployment_id", "change_id"],
            SortMultipleOptions::default(),
        )
        .cache();
    let mut change_aggregates = vec![
        len().alias("n_changes"),
        col("author").n_unique().alias("n_authors"),
        col("exp").min().alias("min_author_exp"),
        col("raw_la").sum().alias("lines_added"),
        (col("raw_la") + col("raw_ld")).sum().alias("effort"),
    ];
    for metric in JIT_METRICS {
        change_aggregates.push(exact_sum(col(metric)).alias(format!("sum_{metric}")));
        change_aggregates.push(col(metric).max().alias(format!("max_{metric}")));
    }
    let by_changes = carried
        .clone()
        .group_by([col("deployment_id")])
        .agg(change_aggregates);

    // CI of the carried changes, as known at the start: a test whose last attempt failed is a
    // failure; one that failed and then passed is flaky.
    let tests = scan::<TestResult>(
        lake,
        &[
            "run_id",
            "change_id",
            "test_id",
            "status",
            "attempt",
            "started_at",
        ],
    )?
    .filter(col("change_id").is_not_null())
    .with_columns([micros("started_at").alias("test_at")])
    .inner_join(
        carried.select([col("deployment_id"), col("change_id"), col("started_at")]),
        col("change_id"),
        col("change_id"),
    )
    .filter(col("test_at").lt(col("started_at")))
    .sort(
        ["deployment_id", "run_id", "test_id", "attempt"],
        SortMultipleOptions::default(),
    )
    .with_columns([col("status")
        .eq(lit("failed"))
        .or(col("status").eq(lit("error")))
        .alias("is_failure")])
    .group_by([col("deployment_id"), col("run_id"), col("test_id")])
    .agg([
        col("is_failure").any(true).alias("any_failure"),
        col("is_failure")
            .sort_by([col("attempt")], SortMultipleOptions::default())
            .last()
            .alias("last_failure"),
    ])
    .group_by([col("deployment_id")])
    .agg([
        col("last_failure")
            .cast(DataType::Float64)
            .sum()
            .alias("test_failures"),
        col("any_failure")
            .and(col("last_failure").not())
            .cast(DataType::Float64)
            .sum()
            .alias("flaky_tests"),
    ]);

    // The service's earlier deployments, within the longest window.
    let longest = HISTORY_DAYS[HISTORY_DAYS.len() - 1] * MICROS_PER_DAY;
    let earlier = deployments.clone().select([
        col("service"),
        col("started_at").alias("earlier_started_at"),
        col("finished_at").alias("earlier_finished_at"),
        col("outcome_rank").alias("earlier_outcome_rank"),
        col("incident_at").alias("earlier_incident_at"),
    ]);
    let mut history_aggregates = vec![col("earlier_started_at").max().alias("last_started_at")];
    for days in HISTORY_DAYS {
        let in_window = col("earlier_started_at")
            .gt_eq(col("started_at") - lit(days * MICROS_PER_DAY))
            .and(col("earlier_finished_at").lt(col("started_at")));
        let count = |condition: Expr| {
            in_window
                .clone()
                .and(condition)
                .cast(DataType::Float64)
                .sum()
        };
        let known = count(lit(true));
        let rate = |condition: Expr, name: String| {
            when(known.clone().gt(lit(0.0)))
                .then(count(condition) / known.clone())
                .otherwise(lit(0.0))
                .alias(name)
        };
        history_aggregates.push(rate(
            col("earlier_outcome_rank").eq(lit(2)),
            format!("failure_rate_{days}d"),
        ));
        history_aggregates.push(rate(
            col("earlier_outcome_rank").eq(lit(3)),
            format!("rollback_rate_{days}d"),
        ));
        history_aggregates.push(rate(
            col("earlier_incident_at")
                .lt(col("started_at"))
                .fill_null(lit(false)),
            format!("incident_rate_{days}d"),
        ));
    }
    let history = deployments
        .clone()
        .select([col("deployment_id"), col("service"), col("started_at")])
        .inner_join(earlier, col("service"), col("service"))
        .filter(
            col("earlier_started_at")
                .lt(col("started_at"))
                .and(col("earlier_started_at").gt_eq(col("started_at") - lit(longest))),
        )
        .sort(
            ["deployment_id", "earlier_started_at"],
            SortMultipleOptions::default(),
        )
        .group_by([col("deployment_id")])
        .agg(history_aggregates);

    let graph = graph_features(lake)?;
    let hour = (col("started_at") / lit(MICROS_PER_HOUR)) % lit(24);
    // 1970-01-01 was a Thursday: Monday is 0.
    let weekday = (col("started_at") / lit(MICROS_PER_DAY) + lit(3)) % lit(7);
    let mut derived = vec![
        (hour.clone().cast(DataType::Float64) * lit(std::f64::consts::TAU / 24.0))
            .sin()
            .alias("hour_sin"),
        (hour.clone().cast(DataType::Float64) * lit(std::f64::consts::TAU / 24.0))
            .cos()
            .alias("hour_cos"),
        hour.clone()
            .lt(lit(6))
            .or(hour.gt_eq(lit(18)))
            .cast(DataType::Float64)
            .alias("is_off_hours"),
        ((col("started_at") - col("last_started_at")).cast(DataType::Float64)
            / lit(MICROS_PER_HOUR as f64))
        .fill_null(lit((longest / MICROS_PER_HOUR) as f64))
        .log1p()
        .alias("hours_since_last_deployment"),
        col("environment")
            .eq(lit("production"))
            .or(col("environment").eq(lit("prod")))
            .cast(DataType::Float64)
            .alias("is_production"),
        col("fan_in").fill_null(lit(0.0)),
        col("fan_out").fill_null(lit(0.0)),
        col("blast_radius").fill_null(lit(0.0)),
    ];
    for (day, name) in ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .enumerate()
    {
        derived.push(
            weekday
                .clone()
                .eq(lit(day as i64))
                .cast(DataType::Float64)
                .alias(format!("is_{name}")),
        );
    }
    for strategy in STRATEGIES {
        derived.push(
            col("strategy")
                .eq(lit(strategy))
                .fill_null(lit(false))
                .cast(DataType::Float64)
                .alias(format!("is_{strategy}")),
        );
    }
    let frame = deployments
        .left_join(by_changes, col("deployment_id"), col("deployment_id"))
        .left_join(tests, col("deployment_id"), col("deployment_id"))
        .left_join(history, col("deployment_id"), col("deployment_id"))
        .left_join(graph, col("service"), col("service"))
        .with_columns(derived)
        .with_columns([
            col("deployment_id").alias("id"),
            col("started_at").alias("at"),
        ])
        .collect()?;
    Ok(frame)
}

/// Where a service sits in the dependency graph.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GraphPosition {
    /// Services that call it.
    pub fan_in: f64,
    /// Services it calls.
    pub fan_out: f64,
    /// Services that depend on it, directly or not: what breaks when it does.
    pub blast_radius: f64,
}

/// The service dependency graph of `service_edges` (an edge from caller to callee, each pair
/// once) and each service's node; empty when the lake has no edges.
pub(crate) fn service_graph(
    lake: &Lake,
) -> Result<(DiGraph<String, ()>, BTreeMap<String, NodeIndex>)> {
    let edges = match scan::<ServiceEdge>(lake, &["from_service", "to_service"]) {
        Ok(edges) => edges.collect()?,
        Err(Error::Data(_)) => DataFrame::empty(),
        Err(e) => return Err(e),
    };
    let mut graph = DiGraph::<String, ()>::new();
    let mut nodes = BTreeMap::new();
    if edges.height() > 0 {
        let from = edges.column("from_service")?.str()?.clone();
        let to = edges.column("to_service")?.str()?.clone();
        let mut seen = BTreeSet::new();
        for (a, b) in from.iter().zip(to.iter()) {
            let (Some(a), Some(b)) = (a, b) else { continue };
            if a == b || !seen.insert((a.to_string(), b.to_string())) {
                continue;
            }
            let mut node = |name: &str| {
                *nodes
                    .entry(name.to_string())
                    .or_insert_with(|| graph.add_node(name.to_string()))
            };
            let (a, b) = (node(a), node(b));
            graph.add_edge(a, b, ());
        }
    }
    Ok((graph, nodes))
}

/// The graph position of every service in `service_edges`; empty when the lake has no edges.
pub fn graph_positions(lake: &Lake) -> Result<BTreeMap<String, GraphPosition>> {
    let (graph, nodes) = service_graph(lake)?;
    let mut positions = BTreeMap::new();
    for (name, index) in &nodes {
        // Everything that reaches this service along "calls" edges breaks when it does.
        let reversed = petgraph::visit::Reversed(&graph);
        let mut bfs = Bfs::new(reversed, *index);
        let mut reached = 0usize;
        while bfs.next(reversed).is_some() {
            reached += 1;
        }
        positions.insert(
            name.clone(),
            GraphPosition {
                fan_in: graph
                    .neighbors_directed(*index, Direction::Incoming)
                    .count() as f64,
                fan_out: graph
                    .neighbors_directed(*index, Direction::Outgoing)
                    .count() as f64,
                blast_radius: (reached - 1) as f64,
            },
        );
    }
    Ok(positions)
}

/// Fan-in, fan-out and blast radius of every service, as a frame to join on `service`.
fn graph_features(lake: &Lake) -> Result<LazyFrame> {
    let positions = graph_positions(lake)?;
    let services: Vec<String> = positions.keys().cloned().collect();
    let column = |f: fn(&GraphPosition) -> f64| -> Vec<f64> { positions.values().map(f).collect() };
    Ok(df!(
        "service" => services,
        "fan_in" => column(|p| p.fan_in),
        "fan_out" => column(|p| p.fan_out),
        "blast_radius" => column(|p| p.blast_radius),
    )?
    .lazy())
}

/// Feature columns of a frame, in a fixed order: everything numeric that is not bookkeeping.
fn feature_names(level: Level) -> Vec<String> {
    match level {
        Level::Change => JIT_METRICS.iter().map(|m| m.to_string()).collect(),
        Level::Deployment => {
            let mut names = vec![
                "n_changes".to_string(),
                "n_authors".into(),
                "min_author_exp".into(),
            ];
            for metric in JIT_METRICS {
                names.push(format!("sum_{metric}"));
                names.push(format!("max_{metric}"));
            }
            names.extend(["test_failures".into(), "flaky_tests".into()]);
            for days in HISTORY_DAYS {
                names.push(format!("failure_rate_{days}d"));
                names.push(format!("rollback_rate_{days}d"));
                names.push(format!("incident_rate_{days}d"));
            }
            names.extend([
                "hours_since_last_deployment".into(),
                "hour_sin".into(),
                "hour_cos".into(),
                "is_off_hours".into(),
            ]);
            for day in ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] {
                names.push(format!("is_{day}"));
            }
            names.extend([
                "fan_in".into(),
                "fan_out".into(),
                "blast_radius".into(),
                "is_production".into(),
            ]);
            for strategy in STRATEGIES {
                names.push(format!("is_{strategy}"));
            }
            names
        }
    }
}

/// Turns the frame into a row-major table sorted by time then id; missing numbers are zero
/// (a deployment with no tests has no failures).
fn to_table(frame: DataFrame, level: Level) -> Result<FeatureTable> {
    let names = feature_names(level);
    let frame = frame.sort(["at", "id"], SortMultipleOptions::default())?;
    let rows = frame.height();
    let numbers = |name: &str| -> Result<Vec<f64>> {
        let column = frame.column(name)?.cast(&DataType::Float64)?;
        Ok(column.f64()?.iter().map(|v| v.unwrap_or(0.0)).collect())
    };
    let strings = |name: &str| -> Result<Vec<String>> {
        let column = frame.column(name)?.cast(&DataType::String)?;
        Ok(column
            .str()?
            .iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect())
    };
    let columns: Vec<Vec<f64>> = names.iter().map(|n| numbers(n)).collect::<Result<_>>()?;
    let mut values = Vec::with_capacity(rows * names.len());
    for i in 0..rows {
        values.extend(columns.iter().map(|c| c[i]));
    }
    let at = frame.column("at")?.cast(&DataType::Int64)?;
    let label = frame.column("label")?.cast(&DataType::Boolean)?;
    Ok(FeatureTable {
        names,
        values,
        ids: strings("id")?,
        services: strings("service")?,
        environments: if level == Level::Deployment {
            strings("environment")?
        } else {
            vec![String::new(); rows]
        },
        at: at.i64()?.iter().map(|v| v.unwrap_or(0)).collect(),
        label: label.bool()?.iter().collect(),
        lines_added: numbers("lines_added")?,
        effort: numbers("effort")?,
    })
}
