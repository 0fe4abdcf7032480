//! Runs every report and control over the lake and writes their tables in one transaction.
//!
//! Order: a definition runs after the tables named in its `after`; `compliance_results` is
//! assembled once every control has run, so reports may build on it too. Each result is
//! registered in the session as soon as it exists, so later reports read it like any table.
//! Every query sees the one-row table `report_params` (`as_of`: the instant the reports
//! describe), which keeps the SQL free of the clock and its results reproducible.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    Array, ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::datasource::MemTable;
use maestro_datasets::Lake;
use maestro_datasets::lake::WriteSummary;
use maestro_datasets::schema::{SCHEMA_METADATA_KEY, Ts};

use crate::compliance::{self, ControlRows, Waiver};
use crate::definitions::{Definition, Kind};
use crate::{Error, LakeSession, Result};

/// The table every control's rows are gathered in.
pub const COMPLIANCE_TABLE: &str = "compliance_results";

/// What one report or control took.
#[derive(Debug, Clone)]
pub struct Timing {
    /// The report table, or the control's file name.
    pub name: String,
    /// Rows it returned.
    pub rows: usize,
    /// Wall time of its query.
    pub seconds: f64,
    /// When its query began, to line it up with resource samples taken meanwhile.
    pub started: Instant,
}

/// What a run computed and wrote.
#[derive(Debug)]
pub struct ReportRun {
    /// The instant the reports describe.
    pub as_of: Ts,
    /// The period of the executive numbers.
    pub period: Period,
    /// Every definition in the order it ran, then `compliance_results`.
    pub timings: Vec<Timing>,
    /// Report tables and their batches, by name, as written.
    pub tables: BTreeMap<String, Vec<RecordBatch>>,
    /// Views: computed for the run, not written.
    pub views: BTreeMap<String, Vec<RecordBatch>>,
    /// What the lake write did.
    pub written: WriteSummary,
}

/// The period the executive numbers describe, and the one they are compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// First instant.
    pub start: Ts,
    /// First instant after it; also the as-of instant of the reports.
    pub end: Ts,
    /// First instant of the period before.
    pub previous_start: Ts,
    /// End of the period before (usually `start`).
    pub previous_end: Ts,
}

const DAY: i64 = 86_400_000_000;

impl Period {
    /// A calendar month, `YYYY-MM`, compared with the month before.
    pub fn month(text: &str) -> Option<Period> {
        let first = chrono::NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d").ok()?;
        let next = first.checked_add_months(chrono::Months::new(1))?;
        let previous = first.checked_sub_months(chrono::Months::new(1))?;
        let ts = |d: chrono::NaiveDate| {
            Ts(d.and_time(chrono::NaiveTime::MIN)
                .and_utc()
                .timestamp_micros())
        };
        Some(Period {
            start: ts(first),
            end: ts(next),
            previous_start: ts(previous),
            previous_end: ts(first),
        })
    }

    /// Dates `from` through `to` (both UTC, `to` included), compared with as many days before.
    pub fn days(from: Ts, to: Ts) -> Period {
        let end = Ts(to.0 + DAY);
        let length = end.0 - from.0;
        Period {
            start: from,
            end,
            previous_start: Ts(from.0 - length),
            previous_end: from,
        }
    }

    /// The month so far up to `as_of` (the end of a day), compared with the whole month before.
    pub fn month_to(as_of: Ts) -> Period {
        let month = Ts(as_of.0 - 1).to_datetime().format("%Y-%m").to_string();
        let whole = Period::month(&month).expect("a formatted month parses");
        Period {
            end: as_of,
            ..whole
        }
    }
}

/// Runs `definitions` over the lake and replaces every report table with the new results. The
/// reports describe the lake as of the end of `period` (default: the month so far up to the end
/// of the UTC day of the lake's latest event).
pub async fn run_reports(
    lake: &Lake,
    definitions: &[Definition],
    waivers: &[Waiver],
    period: Option<Period>,
) -> Result<ReportRun> {
    let session = LakeSession::open(lake).await?;
    let period = match period {
        Some(period) => period,
        None => Period::month_to(latest_day_end(&session).await?),
    };
    let as_of = period.end;
    register(&session, "report_params", params_batch(&period))?;

    let mut timings = Vec::new();
    let mut tables: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
    let mut views: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
    let mut control_rows: Vec<ControlRows> = Vec::new();
    for definition in run_order(definitions)? {
        let Some(definition) = definition else {
            let started = Instant::now();
            let batch = compliance::results(&control_rows, waivers, as_of)?;
            register(&session, COMPLIANCE_TABLE, batch.clone())?;
            timings.push(Timing {
                name: COMPLIANCE_TABLE.into(),
                rows: batch.num_rows(),
                seconds: started.elapsed().as_secs_f64(),
                started,
            });
            tables.insert(COMPLIANCE_TABLE.into(), vec![batch]);
            continue;
        };
        let started = Instant::now();
        let result = session.query(&definition.sql).await;
        let seconds = started.elapsed().as_secs_f64();
        let rows = result
            .as_ref()
            .map_or(0, |b| b.iter().map(RecordBatch::num_rows).sum());
        timings.push(Timing {
            name: definition.name.clone(),
            rows,
            seconds,
            started,
        });
        match definition.header.kind {
            // A failing control is evidence too: it shows as an error row, and the rest run.
            Kind::Control => control_rows.push(match result {
                Ok(batches) => ControlRows::check(definition, batches)?,
                Err(e) => ControlRows::failed(definition, &e),
            }),
            Kind::Report | Kind::View => {
                let batches = result.map_err(|e| {
                    Error::Definition(format!("{} ({}): {e}", definition.name, definition.origin))
                })?;
                let batch = documented(definition, &batches)?;
                register(&session, &definition.name, batch.clone())?;
                if definition.header.kind == Kind::Report {
                    tables.insert(definition.name.clone(), vec![batch]);
                } else {
                    views.insert(definition.name.clone(), vec![batch]);
                }
            }
        }
    }

    let mut txn = lake.begin()?;
    for (name, batches) in &tables {
        txn.replace_report(name, batches)?;
    }
    let written = txn.commit()?;
    Ok(ReportRun {
        as_of,
        period,
        timings,
        tables,
        views,
        written,
    })
}

/// The order to run in: each definition after what its `after` names; `None` stands for the
/// assembly of `compliance_results`, after every control. Ties keep the definitions' order.
fn run_order(definitions: &[Definition]) -> Result<Vec<Option<&Definition>>> {
    let by_name: BTreeMap<&str, &Definition> =
        definitions.iter().map(|d| (d.name.as_str(), d)).collect();
    let controls: Vec<&str> = definitions
        .iter()
        .filter(|d| d.header.kind == Kind::Control)
        .map(|d| d.name.as_str())
        .collect();
    let needs = |name: &str| -> Vec<&str> {
        match by_name.get(name) {
            Some(d) => d.header.after.iter().map(String::as_str).collect(),
            None => controls.clone(),
        }
    };
    for definition in definitions {
        for needed in &definition.header.after {
            if !by_name.contains_key(needed.as_str()) && needed != COMPLIANCE_TABLE {
                return Err(Error::Definition(format!(
                    "{} runs after {needed:?}, which no report defines",
                    definition.origin
                )));
            }
        }
    }
    let mut names: Vec<&str> = definitions.iter().map(|d| d.name.as_str()).collect();
    names.push(COMPLIANCE_TABLE);
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < names.len() {
        let ready = names
            .iter()
            .find(|n| !done.contains(**n) && needs(n).iter().all(|m| done.contains(m)));
        let Some(&name) = ready else {
            let stuck: Vec<&str> = names
                .iter()
                .filter(|n| !done.contains(**n))
                .copied()
                .collect();
            return Err(Error::Definition(format!(
                "these reports wait on each other in a cycle: {}",
                stuck.join(", ")
            )));
        };
        done.insert(name);
        order.push(by_name.get(name).copied());
    }
    Ok(order)
}

/// The report's result as one batch, checked against its documented columns and stamped with
/// its schema version.
fn documented(definition: &Definition, batches: &[RecordBatch]) -> Result<RecordBatch> {
    let schema = batches
        .first()
        .map(RecordBatch::schema)
        .ok_or_else(|| Error::Definition(format!("{} returned no schema", definition.name)))?;
    check_columns(definition, &schema)?;
    let metadata = std::collections::HashMap::from([(
        SCHEMA_METADATA_KEY.to_string(),
        format!("{}/v{}", definition.name, definition.header.version),
    )]);
    // Columns are nullable in the table whatever the plan inferred, so one schema holds across
    // runs that happen to have no nulls.
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    let schema: SchemaRef = Arc::new(Schema::new_with_metadata(fields, metadata));
    datafusion::arrow::compute::concat_batches(&schema, batches)
        .map_err(|e| Error::Render(e.to_string()))
}

/// The columns a definition returns must be the ones it documents, in order.
fn check_columns(definition: &Definition, schema: &Schema) -> Result<()> {
    let returned: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let documented: Vec<&str> = definition
        .header
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    if returned != documented {
        return Err(Error::Definition(format!(
            "{} returns the columns [{}] but documents [{}]: keep the header and the query in step",
            definition.origin,
            returned.join(", "),
            documented.join(", ")
        )));
    }
    Ok(())
}

/// Registers (or replaces) an in-memory table in the session, without the schema version the
/// lake's copy is stamped with: the session's tables carry no metadata (`without_metadata`).
fn register(session: &LakeSession, name: &str, batch: RecordBatch) -> Result<()> {
    let ctx = session.context();
    ctx.deregister_table(name)?;
    let schema = crate::without_metadata(&batch.schema());
    let batch = RecordBatch::try_new(schema.clone(), batch.columns().to_vec())
        .map_err(datafusion::error::DataFusionError::from)?;
    let table = MemTable::try_new(schema, vec![vec![batch]])?;
    ctx.register_table(name, Arc::new(table))?;
    Ok(())
}

fn params_batch(period: &Period) -> RecordBatch {
    let timestamp = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let names = [
        "as_of",
        "period_start",
        "period_end",
        "previous_start",
        "previous_end",
    ];
    let values = [
        period.end,
        period.start,
        period.end,
        period.previous_start,
        period.previous_end,
    ];
    let mut fields: Vec<Field> = names
        .iter()
        .map(|name| Field::new(*name, timestamp.clone(), false))
        .collect();
    let mut columns: Vec<ArrayRef> = values
        .iter()
        .map(|at| {
            Arc::new(TimestampMicrosecondArray::from(vec![at.0]).with_timezone("UTC")) as ArrayRef
        })
        .collect();
    fields.push(Field::new("as_of_date", DataType::Utf8, false));
    columns.push(Arc::new(StringArray::from(vec![
        Ts(period.end.0 - 1).date(),
    ])));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("columns match the schema")
}

/// The end of the UTC day of the latest event among deployments, metric points and audit
/// events: reports of a lake describe the lake, not the moment they run.
async fn latest_day_end(session: &LakeSession) -> Result<Ts> {
    let sql = "select max(t) as latest from (
        select max(started_at) as t from deployments
        union all select max(at) from metric_points
        union all select max(at) from audit_events
        union all select max(merged_at) from changes)";
    let batches = session.query(sql).await?;
    let latest = batches
        .first()
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .filter(|a| !a.is_null(0))
                .map(|a| a.value(0))
        })
        .ok_or_else(|| {
            Error::Definition(
                "the lake holds no deployments, metrics, audit events or changes to report on"
                    .into(),
            )
        })?;
    // Rounded up to midnight: a point stamped exactly at midnight closes the day before.
    Ok(Ts((latest + DAY - 1).div_euclid(DAY) * DAY))
}
