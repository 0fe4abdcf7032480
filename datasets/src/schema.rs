//! Lake table schemas, declared once.
//!
//! Each table is one `lake_table!` declaration: it generates the row struct that readers fill,
//! the versioned Arrow schema that every write is checked against, and the conversion from rows
//! to a `RecordBatch`. Nothing else in Maestro spells a column name or type of a raw table.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, ListBuilder, StringBuilder,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;

/// A UTC instant, in microseconds since the Unix epoch (the lake's timestamp unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Ts(pub i64);

impl Ts {
    /// The instant `seconds` after the epoch.
    pub fn from_secs_f64(seconds: f64) -> Ts {
        Ts((seconds * 1e6).round() as i64)
    }

    /// The instant `nanos` nanoseconds after the epoch, truncated to microseconds.
    pub fn from_nanos(nanos: u64) -> Ts {
        Ts((nanos / 1_000) as i64)
    }

    /// Parses an RFC 3339 timestamp (`2024-05-01T12:00:00Z`, offsets allowed), or an ISO 8601
    /// local date-time without offset, which JUnit producers write and which we read as UTC.
    pub fn parse(text: &str) -> Option<Ts> {
        let text = text.trim();
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
            return Some(Ts(t.timestamp_micros()));
        }
        for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
            if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, format) {
                return Some(Ts(t.and_utc().timestamp_micros()));
            }
        }
        None
    }

    /// Days since 1970-01-01 (UTC) of this instant: a cheap key for grouping rows by date.
    pub fn day(self) -> i64 {
        self.0.div_euclid(86_400_000_000)
    }

    /// The UTC date of this instant, as the `YYYY-MM-DD` used in partition names.
    pub fn date(self) -> String {
        self.to_datetime().format("%Y-%m-%d").to_string()
    }

    /// The instant as a chrono UTC date-time.
    pub fn to_datetime(self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_micros(self.0).unwrap_or_default()
    }

    /// RFC 3339 text with microseconds and a `Z` suffix.
    pub fn to_rfc3339(self) -> String {
        self.to_datetime()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }
}

/// A Rust type that can be a lake column: it names its Arrow type and builds an array.
pub trait LakeValue: Sized {
    /// The Arrow field for a column of this type.
    fn field(name: &str) -> Field;
    /// Builds the column from the values of every row, in row order. The iterator can be
    /// cloned, so a column can be sized in a first pass rather than grown as it is filled.
    fn build<'a>(values: impl Iterator<Item = &'a Self> + Clone) -> ArrayRef
    where
        Self: 'a;
    /// Folds a later observation of the same entity into this one: later known values win.
    fn merge(&mut self, later: Self);
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

macro_rules! scalar_value {
    ($rust:ty, $arrow:expr, $array:ty) => {
        impl LakeValue for $rust {
            fn field(name: &str) -> Field {
                Field::new(name, $arrow, false)
            }
            fn build<'a>(values: impl Iterator<Item = &'a Self> + Clone) -> ArrayRef {
                Arc::new(values.cloned().collect::<$array>())
            }
            fn merge(&mut self, later: Self) {
                *self = later;
            }
        }
        impl LakeValue for Option<$rust> {
            fn field(name: &str) -> Field {
                Field::new(name, $arrow, true)
            }
            fn build<'a>(values: impl Iterator<Item = &'a Self> + Clone) -> ArrayRef {
                Arc::new(values.cloned().collect::<$array>())
            }
            fn merge(&mut self, later: Self) {
                if later.is_some() {
                    *self = later;
                }
            }
        }
    };
}

scalar_value!(i64, DataType::Int64, Int64Array);
scalar_value!(f64, DataType::Float64, Float64Array);
scalar_value!(bool, DataType::Boolean, BooleanArray);

/// Builds a text column, sized in a first pass rather than grown as it is filled.
fn text_column<'a>(values: impl Iterator<Item = Option<&'a str>> + Clone) -> ArrayRef {
    let (rows, bytes) = values
        .clone()
        .fold((0, 0), |(n, b), v| (n + 1, b + v.map_or(0, str::len)));
    let mut builder = StringBuilder::with_capacity(rows, bytes);
    values.for_each(|v| builder.append_option(v));
    Arc::new(builder.finish())
}

/// Text columns hold `String`, or `Arc<str>` where one value repeats over many rows (a run id
/// on every test of a report): cloning it then shares the text instead of copying it.
macro_rules! text_value {
    ($rust:ty) => {
        impl LakeValue for $rust {
            fn field(name: &str) -> Field {
                Field::new(name, DataType::Utf8, false)
            }
            fn build<'a>(values: impl Iterator<Item = &'a Self> + Clone) -> ArrayRef {
                text_column(values.map(|v| Some(&**v)))
            }
            fn merge(&mut self, later: Self) {
                if !later.is_empty() {
                    *self = later;
                }
            }
        }
        impl LakeValue for Option<$rust> {
            fn field(name: &str) -> Field {
                Field::new(name, DataType::Utf8, true)
            }
            fn build<'a>(values: impl Iterator<Item = &'a Self> + Clone) -> ArrayRef {
                text_column(values.map(|v| v.as_deref()))
            }
            fn merge(&mut self, later: Self) {
                if later.is_some() {
                    *self = later;
                }
            }
        }
    };
}

text_value!(String);
text_value!(Arc<str>);

impl LakeValue for Ts {
    fn field(name: &str) -> Field {
        Field::new(name, ts_type(), false)
    }
    fn build<'a>(values: impl Iterator<Item = &'a Self> + Clone) -> ArrayRef {
        Arc::new(
            values
                .map(|v| Some(v.0))
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        )
    }
    fn merge(&mut self, later: Self) {
        *self = later;
    }
}

impl LakeValue for Option<Ts> {
    fn field(name: &str) -> Field {
        Field::new(name, ts_type(), true)
    }
    fn build<'a>(values: impl Iterator<Item = &'a Self> + Clone) -> ArrayRef {
        Arc::new(
            values
                .map(|v| v.map(|t| t.0))
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        )
    }
    fn merge(&mut self, later: Self) {
        if later.is_some() {
            *self = later;
        }
    }
}

impl LakeValue for Vec<String> {
    fn field(name: &str) -> Field {
        Field::new(
            name,
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        )
    }
    fn build<'a>(values: impl Iterator<Item = &'a Self> + Clone) -> ArrayRef {
        let mut builder = ListBuilder::new(StringBuilder::new());
        for list in values {
            for item in list {
                builder.values().append_value(item);
            }
            builder.append(true);
        }
        Arc::new(builder.finish())
    }
    fn merge(&mut self, later: Self) {
        if !later.is_empty() {
            *self = later;
        }
    }
}

impl LakeValue for Vec<f64> {
    fn field(name: &str) -> Field {
        Field::new(
            name,
            DataType::List(Arc::new(Field::new("item", DataType::Float64, true))),
            false,
        )
    }
    fn build<'a>(values: impl Iterator<Item = &'a Self> + Clone) -> ArrayRef {
        let mut builder = ListBuilder::new(datafusion::arrow::array::Float64Builder::new());
        for list in values {
            builder.values().append_slice(list);
            builder.append(true);
        }
        Arc::new(builder.finish())
    }
    fn merge(&mut self, later: Self) {
        if !later.is_empty() {
            *self = later;
        }
    }
}

/// How rows of a table are laid out in the lake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `date=YYYY-MM-DD` partitions by the UTC date of each row's event time; new rows are
    /// appended as new part files.
    ByDate,
    /// One unpartitioned snapshot; a write replaces the rows that share a key with new rows.
    KeyedSnapshot,
}

/// What the lake needs to know about a table, independent of its row type.
#[derive(Clone, Copy)]
pub struct TableDef {
    /// The table's name, also its folder under `raw/`.
    pub name: &'static str,
    /// Schema version, stored in every Parquet file's metadata.
    pub version: u32,
    /// How the table is partitioned.
    pub layout: Layout,
    /// Columns that identify an entity: rows sharing them describe the same thing.
    pub key: &'static [&'static str],
    /// The declared Arrow schema.
    pub schema: fn() -> SchemaRef,
}

impl std::fmt::Debug for TableDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (v{}, {:?})", self.name, self.version, self.layout)
    }
}

/// Metadata key under which each Parquet file records its table and schema version.
pub const SCHEMA_METADATA_KEY: &str = "maestro.schema";

/// A row type of a lake table.
pub trait Row: Sized + Clone + Send + Sync + 'static {
    /// The table this row belongs to.
    const TABLE: TableDef;
    /// The table's Arrow schema, with its version in the metadata.
    fn schema() -> SchemaRef;
    /// The rows as one batch matching `schema()`.
    fn to_batch(rows: &[&Self]) -> RecordBatch;
    /// The instant whose UTC date places the row in a partition (`ByDate` tables).
    fn partition_at(&self) -> Option<Ts>;
    /// The entity key, when the table declares one.
    fn key(&self) -> Option<String>;
    /// Folds a later observation of the same entity into this row.
    fn merge(&mut self, later: Self);
}

/// Declares a lake table: its row struct, schema, version, layout and key.
#[macro_export]
macro_rules! lake_table {
    (
        $(#[$meta:meta])*
        $row:ident {
            name: $name:literal,
            version: $version:literal,
            layout: $layout:ident,
            key: [$($key:ident),*],
            partition_at: |$r:ident| $partition:expr,
        }
        columns {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        // Columns are documented where their name does not say it all.
        #[allow(missing_docs)]
        #[derive(Debug, Clone, PartialEq, Default)]
        pub struct $row {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl $crate::schema::Row for $row {
            const TABLE: $crate::schema::TableDef = $crate::schema::TableDef {
                name: $name,
                version: $version,
                layout: $crate::schema::Layout::$layout,
                key: &[$(stringify!($key)),*],
                schema: <Self as $crate::schema::Row>::schema,
            };

            fn schema() -> ::datafusion::arrow::datatypes::SchemaRef {
                let metadata = std::collections::HashMap::from([(
                    $crate::schema::SCHEMA_METADATA_KEY.to_string(),
                    format!("{}/v{}", $name, $version),
                )]);
                ::std::sync::Arc::new(::datafusion::arrow::datatypes::Schema::new_with_metadata(
                    vec![$( <$ty as $crate::schema::LakeValue>::field(stringify!($field)) ),*],
                    metadata,
                ))
            }

            fn to_batch(rows: &[&Self]) -> ::datafusion::arrow::record_batch::RecordBatch {
                let columns: Vec<::datafusion::arrow::array::ArrayRef> =
                    vec![$( <$ty as $crate::schema::LakeValue>::build(rows.iter().map(|row| &row.$field)) ),*];
                ::datafusion::arrow::record_batch::RecordBatch::try_new(Self::schema(), columns)
                    .expect("columns are built from the same declaration as the schema")
            }

            #[allow(unused_variables)]
            fn partition_at(&self) -> Option<$crate::schema::Ts> {
                let $r = self;
                $partition
            }

            fn key(&self) -> Option<String> {
                let parts: Vec<String> = vec![$( format!("{:?}", self.$key) ),*];
                if parts.is_empty() { None } else { Some(parts.join("\u{1f}")) }
            }

            fn merge(&mut self, later: Self) {
                $( $crate::schema::LakeValue::merge(&mut self.$field, later.$field); )*
            }
        }
    };
}

lake_table! {
    /// A merged change (commit), with the 14 just-in-time defect metrics when known.
    Change {
        name: "changes",
        version: 1,
        layout: ByDate,
        key: [change_id],
        partition_at: |r| Some(r.merged_at),
    }
    columns {
        /// Commit hash or change number.
        change_id: String,
        /// Service (repository) the change belongs to.
        service: String,
        author: Option<String>,
        merged_at: Ts,
        /// Paths of the files the change touched.
        files: Vec<String>,
        lines_added: Option<i64>,
        lines_deleted: Option<i64>,
        /// Number of modified subsystems.
        ns: Option<f64>,
        /// Number of modified directories.
        nd: Option<f64>,
        /// Number of modified files.
        nf: Option<f64>,
        /// Distribution of modified code across files.
        entropy: Option<f64>,
        /// Lines added.
        la: Option<f64>,
        /// Lines deleted.
        ld: Option<f64>,
        /// Lines in the touched files before the change.
        lt: Option<f64>,
        /// Whether the change fixes a defect.
        fix: Option<bool>,
        /// Developers who changed the touched files before.
        ndev: Option<f64>,
        /// Mean time since the touched files were last changed, in days.
        age: Option<f64>,
        /// Number of unique changes to the touched files.
        nuc: Option<f64>,
        /// Author experience: changes made before.
        exp: Option<f64>,
        /// Recent experience, weighted by age.
        rexp: Option<f64>,
        /// Experience in the touched subsystems.
        sexp: Option<f64>,
        /// Whether the change later proved to introduce a defect, when known.
        is_buggy: Option<bool>,
        message: Option<String>,
        /// Format the row came from.
        source_format: String,
    }
}

lake_table! {
    /// A deployment of a version of a service to an environment.
    Deployment {
        name: "deployments",
        version: 1,
        layout: ByDate,
        key: [deployment_id],
        partition_at: |r| r.started_at.or(r.finished_at),
    }
    columns {
        deployment_id: String,
        service: String,
        environment: String,
        version: Option<String>,
        /// Changes the deployment carries.
        change_ids: Vec<String>,
        started_at: Option<Ts>,
        finished_at: Option<Ts>,
        /// succeeded, failed, rolled_back, or null while in progress.
        outcome: Option<String>,
        /// canary, rolling, blue_green, recreate, or null when not said.
        strategy: Option<String>,
        initiated_by: Option<String>,
        approved_by: Option<String>,
        source_format: String,
    }
}

lake_table! {
    /// An incident.
    Incident {
        name: "incidents",
        version: 1,
        layout: ByDate,
        key: [incident_id],
        partition_at: |r| r.detected_at.or(r.resolved_at),
    }
    columns {
        incident_id: String,
        service: String,
        environment: Option<String>,
        /// sev1 (worst) to sev4, when said.
        severity: Option<String>,
        description: Option<String>,
        detected_at: Option<Ts>,
        resolved_at: Option<Ts>,
        caused_by_deployment_id: Option<String>,
        source_format: String,
    }
}

lake_table! {
    /// One execution of one test case; reruns are further attempts.
    TestResult {
        name: "test_results",
        version: 1,
        layout: ByDate,
        key: [],
        partition_at: |r| Some(r.started_at),
    }
    columns {
        run_id: Arc<str>,
        change_id: Option<Arc<str>>,
        service: Option<Arc<str>>,
        suite: Arc<str>,
        /// `classname::name`, stable across runs.
        test_id: String,
        classname: Option<String>,
        name: String,
        /// File of the test, when the producer says.
        file: Option<String>,
        /// passed, failed, error or skipped.
        status: Arc<str>,
        duration_s: Option<f64>,
        /// 1 for the first execution, 2.. for reruns of the same test in the same run.
        attempt: i64,
        started_at: Ts,
        message: Option<String>,
        source_format: Arc<str>,
    }
}

lake_table! {
    /// A trace span.
    Span {
        name: "spans",
        version: 1,
        layout: ByDate,
        key: [],
        partition_at: |r| Some(r.start_at),
    }
    columns {
        trace_id: String,
        span_id: String,
        parent_span_id: Option<String>,
        service: String,
        operation: String,
        /// internal, server, client, producer, consumer or unspecified.
        kind: String,
        start_at: Ts,
        end_at: Ts,
        duration_ms: f64,
        /// unset, ok or error.
        status: String,
        status_message: Option<String>,
        /// Span attributes as a JSON object.
        attributes: Option<String>,
    }
}

lake_table! {
    /// A metric data point from OTLP or Prometheus.
    MetricPoint {
        name: "metric_points",
        version: 1,
        layout: ByDate,
        key: [],
        partition_at: |r| Some(r.at),
    }
    columns {
        service: Arc<str>,
        metric: Arc<str>,
        /// gauge, sum, histogram, exponential_histogram, summary, counter, untyped.
        kind: Arc<str>,
        unit: Option<Arc<str>>,
        at: Ts,
        start_at: Option<Ts>,
        /// The value for gauges, sums and counters; the sum for histograms and summaries.
        value: Option<f64>,
        count: Option<f64>,
        /// Histogram bucket upper bounds (explicit buckets), or summary quantiles.
        bucket_bounds: Vec<f64>,
        /// Histogram bucket counts, or summary quantile values.
        bucket_counts: Vec<f64>,
        /// Exponential histograms: scale, zero count and the offsets of the bucket runs, as JSON.
        exponential: Option<String>,
        is_monotonic: Option<bool>,
        /// cumulative or delta, for sums and histograms.
        temporality: Option<Arc<str>>,
        /// Data point attributes as a JSON object with sorted keys.
        attributes: String,
        source_format: Arc<str>,
    }
}

lake_table! {
    /// An audit record, chained by hash in ingest order.
    AuditEvent {
        name: "audit_events",
        version: 1,
        layout: ByDate,
        key: [],
        partition_at: |r| Some(r.at),
    }
    columns {
        event_id: String,
        at: Ts,
        actor: String,
        action: String,
        resource: String,
        /// success, failure or unknown.
        outcome: String,
        /// kubernetes or cloudtrail.
        source: String,
        /// Namespace (Kubernetes) or region (CloudTrail).
        scope: Option<String>,
        /// Position in the chain, from 1.
        seq: i64,
        prev_hash: String,
        /// sha256 over `prev_hash` and `canonical`.
        hash: String,
        /// The record as canonical JSON (sorted keys, no whitespace): what the hash covers.
        canonical: String,
    }
}

lake_table! {
    /// A service level objective from an OpenSLO definition.
    Slo {
        name: "slos",
        version: 2,
        layout: KeyedSnapshot,
        key: [slo_id],
        partition_at: |r| None,
    }
    columns {
        slo_id: String,
        service: String,
        display_name: Option<String>,
        /// ratio or threshold.
        indicator_kind: String,
        /// The SLI's metric queries as JSON.
        indicator: String,
        /// Target attainment, in 0..1.
        objective: f64,
        /// For threshold SLIs: the value a good event stays under.
        threshold: Option<f64>,
        /// Window length, such as 28d, 1M or 1Q.
        window: String,
        is_rolling: bool,
        /// Occurrences or Timeslices.
        budgeting_method: String,
        source_file: String,
        /// metric_points, or spans for a threshold over span durations.
        indicator_source: String,
        /// Ratio SLIs: the metric counting good events, when given.
        good_metric: Option<String>,
        /// Ratio SLIs: the metric counting bad events, when given.
        bad_metric: Option<String>,
        /// Ratio SLIs: the metric counting all events.
        total_metric: Option<String>,
        /// Threshold SLIs: the histogram metric, or the span operation (null for every
        /// server span of the service).
        threshold_metric: Option<String>,
        /// Threshold SLIs: lte, lt, gte or gt.
        threshold_op: Option<String>,
        /// Timeslices: the share of good events that makes a slice good.
        time_slice_target: Option<f64>,
        /// Timeslices: the slice length, such as 5m.
        time_slice_window: Option<String>,
    }
}

lake_table! {
    /// A dependency between two services.
    ServiceEdge {
        name: "service_edges",
        version: 1,
        layout: KeyedSnapshot,
        key: [from_service, to_service, source],
        partition_at: |r| None,
    }
    columns {
        from_service: String,
        to_service: String,
        /// catalog (declared) or spans (observed).
        source: String,
    }
}

lake_table! {
    /// A model's probability for one evaluation row, so anyone can recompute its metrics.
    RiskEvaluation {
        name: "risk_evaluation",
        version: 1,
        layout: KeyedSnapshot,
        key: [model_version, subject_id],
        partition_at: |r| None,
    }
    columns {
        model_version: String,
        /// deployment or change.
        level: String,
        /// The deployment or change id.
        subject_id: String,
        service: String,
        /// When the deployment started or the change merged.
        at: Ts,
        /// Whether it went bad.
        label: bool,
        /// The model's calibrated probability that it goes bad.
        probability: f64,
    }
}

lake_table! {
    /// The champion risk model's verdict on one deployment.
    RiskVerdict {
        name: "risk_verdicts",
        version: 1,
        layout: ByDate,
        key: [deployment_id],
        partition_at: |r| Some(r.started_at),
    }
    columns {
        deployment_id: String,
        service: String,
        environment: String,
        started_at: Ts,
        /// The registry version that scored it.
        model_version: String,
        /// Calibrated probability that the deployment goes bad.
        probability: f64,
        /// low, medium or high.
        band: String,
        /// allow, allow_with_canary or hold.
        decision: String,
        /// The features that moved the score most, largest first.
        top_features: Vec<String>,
        /// Their contributions to the logit, in the same order.
        top_contributions: Vec<f64>,
    }
}

lake_table! {
    /// One test in one policy's ranking of one change's suite, from the test-selection replay:
    /// enough to recompute every figure the replay reports.
    TestSelectionReplay {
        name: "test_selection_replay",
        version: 1,
        layout: ByDate,
        key: [],
        partition_at: |r| Some(r.started_at),
    }
    columns {
        /// model, or a baseline: run_all, random, recently_failed, failure_rate.
        policy: String,
        change_id: String,
        run_id: String,
        service: String,
        started_at: Ts,
        test_id: String,
        /// 1 for the test the policy would run first.
        rank: i64,
        /// The policy's score: the model's failure probability, or the baseline's own score.
        probability: f64,
        selected: bool,
        /// passed, failed, flaky or skipped: what really happened in the full run.
        outcome: String,
        duration_s: f64,
    }
}

lake_table! {
    /// One point of the confidence curve of the latest test-selection replay: the share of test
    /// time one policy ran at one target, and what it caught. The model is measured at
    /// confidence targets and at budgets, the baselines at the same budgets.
    TestSelectionCurve {
        name: "test_selection_curve",
        version: 1,
        layout: KeyedSnapshot,
        key: [policy, target],
        partition_at: |r| None,
    }
    columns {
        /// model, random, recently_failed or failure_rate.
        policy: String,
        /// confidence 0.95, or a budget such as budget 20%.
        target: String,
        /// Selected test time over the full suites' time.
        time_share: f64,
        /// Shares of failing tests and of failing changes caught; null when none failed.
        failing_tests_caught: Option<f64>,
        failing_changes_caught: Option<f64>,
        /// Changes replayed, and how many of them had a failing test.
        changes: i64,
        failing_changes: i64,
        /// First and last suite run replayed.
        replayed_from: Ts,
        replayed_to: Ts,
    }
}

lake_table! {
    /// The champion test-selection model's selection for one change: what CI would run.
    TestSelectionVerdict {
        name: "test_selection",
        version: 1,
        layout: ByDate,
        key: [change_id],
        partition_at: |r| Some(r.merged_at),
    }
    columns {
        change_id: String,
        service: String,
        merged_at: Ts,
        /// The registry version that selected.
        model_version: String,
        /// confidence 0.95, or a budget such as 30% or 900s.
        target: String,
        /// Estimated chance that the selection catches a failing change.
        confidence: f64,
        selected_tests: i64,
        suite_tests: i64,
        /// Expected seconds of the selection and of the whole suite.
        selected_seconds: f64,
        suite_seconds: f64,
        /// Selected test ids, in fail-fast order.
        tests: Vec<String>,
    }
}

lake_table! {
    /// What the history says of one test: how flaky it is and on what evidence, what to do
    /// about it, and whether another test has failed in exactly the same runs.
    TestHealth {
        name: "test_health",
        version: 1,
        layout: KeyedSnapshot,
        key: [test_id],
        partition_at: |r| None,
    }
    columns {
        test_id: String,
        service: String,
        runs: i64,
        /// Runs whose last attempt failed.
        failures: i64,
        /// Runs in which it failed and then passed on a retry.
        flaky_runs: i64,
        flaky_rate: f64,
        /// Lower bound of the 95% Wilson interval of the flaky rate: how flaky it surely is.
        flakiness_score: f64,
        last_flaky_at: Option<Ts>,
        /// The runs behind the score, in words.
        evidence: String,
        /// quarantine, watch or ok.
        suggestion: String,
        /// A test that failed in exactly the same runs (at least two), the first by id.
        redundant_with: Option<String>,
        mean_duration_s: f64,
        /// Time of the latest run the history holds.
        as_of: Ts,
    }
}

lake_table! {
    /// One metric of one canary analysis: canary against baseline over the analysis window,
    /// with the analysis's overall score and verdict repeated on each of its metrics.
    CanaryVerdict {
        name: "canary_verdicts",
        version: 1,
        layout: ByDate,
        key: [deployment_id, metric],
        partition_at: |r| Some(r.window_start),
    }
    columns {
        deployment_id: String,
        service: String,
        window_start: Ts,
        window_end: Ts,
        /// error_rate, latency_p50, latency_p99 or cpu_utilization.
        metric: String,
        /// A critical metric that fails fails the whole analysis.
        is_critical: bool,
        canary_samples: i64,
        baseline_samples: i64,
        canary_median: Option<f64>,
        baseline_median: Option<f64>,
        /// Mann-Whitney U of the canary sample.
        u_statistic: Option<f64>,
        /// Two-sided p-value (normal approximation with tie correction).
        p_value: Option<f64>,
        /// Rank-biserial correlation, -1..1: positive when the canary is higher.
        effect_size: Option<f64>,
        /// Canary median over baseline median, minus one.
        relative_change: Option<f64>,
        /// pass, high, low, no_data or insufficient_data.
        metric_result: String,
        /// Share of the metrics that passed, 0..100.
        score: f64,
        /// pass, marginal, fail, no_data or insufficient_data.
        verdict: String,
    }
}

lake_table! {
    /// The rollback judge on one deployment, beside what really happened.
    RollbackVerdict {
        name: "rollback_verdicts",
        version: 1,
        layout: ByDate,
        key: [deployment_id],
        partition_at: |r| Some(r.started_at),
    }
    columns {
        deployment_id: String,
        service: String,
        environment: String,
        version: Option<String>,
        started_at: Ts,
        should_roll_back: bool,
        /// What the judge saw, in words.
        reason: String,
        /// critical, major, minor or none.
        severity: String,
        /// immediate, progressive, canary_only, traffic_shift, or none.
        strategy: String,
        /// The last version of the service in the environment that stayed good.
        target_version: Option<String>,
        /// When the judge would have called it.
        detected_at: Option<Ts>,
        /// Minutes from the deployment's start to the judge's call.
        minutes_to_detect: Option<f64>,
        was_rolled_back: bool,
        /// Minutes from the start to the rollback, when there was one.
        rolled_back_after_minutes: Option<f64>,
        /// Whether an incident attributed to the deployment began.
        had_incident: bool,
    }
}

/// Tables that jobs compute from the raw ones: verdicts and evaluations, under `derived/`.
pub const DERIVED_TABLES: [TableDef; 9] = [
    RiskEvaluation::TABLE,
    RiskVerdict::TABLE,
    CanaryVerdict::TABLE,
    RollbackVerdict::TABLE,
    TestSelectionReplay::TABLE,
    TestSelectionCurve::TABLE,
    TestHealth::TABLE,
    TestSelectionVerdict::TABLE,
    RolloutPlan::TABLE,
];

lake_table! {
    /// One service's place in a rollout plan (`maestro plan`).
    RolloutPlan {
        name: "rollout_plans",
        version: 1,
        layout: KeyedSnapshot,
        // A plan is replaced whole: writing one replaces every row of its id.
        key: [plan_id],
        partition_at: |r| None,
    }
    columns {
        /// sha256 prefix of the plan's services, edges and settings: the same plan, the same id.
        plan_id: String,
        service: String,
        /// 1 for the first wave; a service deploys after everything it depends on.
        wave: i64,
        /// Services of the plan this one depends on.
        depends_on: Vec<String>,
        /// rolling, or canary.
        strategy: String,
        /// Traffic share of each canary step, in percent, ending at 100.
        traffic_steps: Vec<f64>,
        /// Expected minutes: the median of its past deployments plus the canary bake time.
        expected_minutes: f64,
        /// Whether the median came from this service's own history.
        has_history: bool,
        /// The probability of its latest risk verdict, when it has one.
        risk: Option<f64>,
        /// Services that depend on it, directly or not, in the whole graph.
        blast_radius: i64,
        is_on_critical_path: bool,
    }
}

/// Every raw table, for listing and registration.
pub const RAW_TABLES: [TableDef; 9] = [
    Change::TABLE,
    Deployment::TABLE,
    Incident::TABLE,
    TestResult::TABLE,
    Span::TABLE,
    MetricPoint::TABLE,
    AuditEvent::TABLE,
    Slo::TABLE,
    ServiceEdge::TABLE,
];

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn schema_carries_name_and_version() {
        let schema = Change::schema();
        assert_eq!(schema.metadata()[SCHEMA_METADATA_KEY], "changes/v1");
        assert!(schema.field_with_name("merged_at").is_ok());
    }

    #[test]
    fn merge_keeps_known_values_and_takes_later_ones() {
        let mut detected = Incident {
            incident_id: "i1".into(),
            service: "api".into(),
            detected_at: Some(Ts(10)),
            severity: Some("sev2".into()),
            ..Default::default()
        };
        detected.merge(Incident {
            incident_id: "i1".into(),
            resolved_at: Some(Ts(20)),
            ..Default::default()
        });
        assert_eq!(detected.detected_at, Some(Ts(10)));
        assert_eq!(detected.resolved_at, Some(Ts(20)));
        assert_eq!(detected.service, "api");
        assert_eq!(detected.severity.as_deref(), Some("sev2"));
    }

    #[test]
    fn parses_timestamps_producers_write() {
        assert_eq!(Ts::parse("1970-01-01T00:00:01Z"), Some(Ts(1_000_000)));
        assert_eq!(Ts::parse("1970-01-01T01:00:01+01:00"), Some(Ts(1_000_000)));
        assert_eq!(Ts::parse("1970-01-01T00:00:01.5"), Some(Ts(1_500_000)));
        assert_eq!(Ts::parse("yesterday"), None);
    }
}
