//! Maestro's reports: SQL over the lake.
//!
//! [`LakeSession`] registers every lake table (raw tables and ledgers) with DataFusion, each
//! with its declared schema and its `date` partition column, so a table with no data yet is
//! still queryable. Queries are read-only: DDL, DML, `COPY` and `SET` are refused before they
//! run. [`render`] turns results into a text table, CSV or JSON for the terminal or a pipe.
//! [`chart`] draws figures as SVG; [`functions`] are the SQL functions Maestro adds.
//!
//! The reports themselves are SQL files ([`definitions`]: `reports/sql/**.sql` and the user's
//! own); [`run::run_reports`] runs them in dependency order and writes each result as a report
//! table under `<lake>/reports/<name>/`, with the controls' rows gathered by [`compliance`] into
//! `compliance_results`. [`executive`] turns a run into the executive report (HTML with SVG
//! charts, Markdown, JSON); [`monitoring`] turns the SLOs into Prometheus rules and Grafana
//! dashboards for live monitoring.
//!
//! In: a lake directory and SQL text. Out: Arrow record batches, report tables, rendered reports.

pub mod chart;
pub mod compliance;
pub mod definitions;
pub mod executive;
pub mod functions;
pub mod monitoring;
pub mod run;

use std::sync::Arc;

pub use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use maestro_datasets::Lake;
use maestro_datasets::ledger::LEDGER_TABLES;
use maestro_datasets::schema::{DERIVED_TABLES, Layout, RAW_TABLES};

/// Errors of the reports layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The query was refused or failed in DataFusion.
    #[error("query failed: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    /// The lake could not be opened.
    #[error(transparent)]
    Lake(#[from] maestro_datasets::Error),
    /// A report or control definition, or a waiver, is wrong: the message names the file.
    #[error("{0}")]
    Definition(String),
    /// A result could not be rendered.
    #[error("rendering results: {0}")]
    Render(String),
}

/// Result with the reports error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A DataFusion session with every lake table registered.
pub struct LakeSession {
    ctx: SessionContext,
}

impl LakeSession {
    /// Registers every table of the lake. Ledger tables are registered under their names
    /// (`_ingested`, `_rejected`, `_runs`); quote them in SQL as `"_rejected"` if needed.
    pub async fn open(lake: &Lake) -> Result<LakeSession> {
        // Grouping by series and five-minute bin leaves about two rows in three as groups: a
        // partial aggregation then only copies rows into a hash table that the final one
        // builds again. Skipping it when it keeps more than half the rows took the SLO events
        // over a year of metrics from 46 s to 37 s. Batches of 32,768 rows rather than 8,192
        // took the report set over that year from 79-86 s to 76 s, most of it in the sorts
        // and windows of the burn-rate alerts, which merge a quarter as many sorted runs.
        //
        // Filters are applied while Parquet pages are decoded, so a column is decoded only for
        // the rows the cheaper columns let through: the cumulative branch of the SLO events
        // then reads two small columns of the year's 50M metric points instead of all of them
        // (17.6 s of CPU down to 3.6 s). Joins do not push their key filters into the scan,
        // as they would be checked on every row of it.
        //
        // At least 8 partitions, though measured on 2 cores: each hash aggregation and window
        // sort then holds an eighth of its groups, not half. With these settings the report
        // set over the year took 65.7-71.3 s where it took 72.1-73.7 s, and its peak fell
        // from 6.0-6.5 GB to 4.5-4.9 GB.
        let mut config = SessionConfig::new()
            .with_batch_size(32 * 1024)
            .with_target_partitions(
                std::thread::available_parallelism().map_or(8, |cores| cores.get().max(8)),
            );
        let options = config.options_mut();
        options
            .execution
            .skip_partial_aggregation_probe_ratio_threshold = 0.5;
        options.execution.parquet.pushdown_filters = true;
        options.optimizer.enable_join_dynamic_filter_pushdown = false;
        let ctx = SessionContext::new_with_config(config);
        for function in functions::all() {
            ctx.register_udf(function);
        }
        for function in functions::all_window() {
            ctx.register_udwf(function);
        }
        for table in RAW_TABLES
            .iter()
            .chain(DERIVED_TABLES.iter())
            .chain(LEDGER_TABLES.iter())
        {
            let dir = lake.table_dir(table);
            std::fs::create_dir_all(&dir).map_err(|e| maestro_datasets::Error::Io {
                path: dir.clone(),
                source: e,
            })?;
            let url = ListingTableUrl::parse(format!("{}/", dir.display()))?;
            let mut options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet");
            if table.layout == Layout::ByDate {
                options =
                    options.with_table_partition_cols(vec![("date".to_string(), DataType::Utf8)]);
            }
            // Text columns are scanned as `Utf8View`, which filters, joins and groups handle
            // without copying each text out of its Parquet page: over a year of metrics the SLO
            // events took 28 s instead of 33 s. Results are cast back (`query`).
            let config = ListingTableConfig::new(url)
                .with_listing_options(options)
                .with_schema(retyped(
                    &(table.schema)(),
                    &DataType::Utf8,
                    &DataType::Utf8View,
                ));
            let provider = ListingTable::try_new(config)?;
            ctx.register_table(table.name, Arc::new(provider))?;
        }
        // Report tables computed by earlier runs; their schema is the one they were written with.
        for name in lake.report_tables()? {
            let dir = lake.report_dir(&name);
            let url = ListingTableUrl::parse(format!("{}/", dir.display()))?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet");
            // Inferred without the files' metadata: DataFusion's Parquet format skips it.
            let config = ListingTableConfig::new(url)
                .with_listing_options(options)
                .infer_schema(&ctx.state())
                .await?;
            ctx.register_table(name.as_str(), Arc::new(ListingTable::try_new(config)?))?;
        }
        Ok(LakeSession { ctx })
    }

    /// Runs one read-only query. DDL, DML (`INSERT`, `COPY`...) and `SET` are refused.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let frame = self.ctx.sql_with_options(sql, read_only()).await?;
        let schema = plain_text_schema(frame.schema().as_arrow());
        let batches = frame.collect().await?;
        // No rows still has columns: an empty batch keeps them, so a table or CSV prints its
        // header rather than nothing.
        if batches.is_empty() {
            return Ok(vec![RecordBatch::new_empty(schema)]);
        }
        batches.iter().map(as_plain_text).collect()
    }

    /// The underlying DataFusion context, for report jobs that build on it.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }
}

/// Refuses DDL, DML (`INSERT`, `COPY`...) and statements such as `SET`.
fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// How to print query results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// An aligned text table.
    Table,
    /// CSV with a header row.
    Csv,
    /// A JSON array of objects.
    Json,
}

/// Renders batches in the given format.
pub fn render(batches: &[RecordBatch], format: OutputFormat) -> Result<String> {
    match format {
        OutputFormat::Table => pretty_format_batches(batches)
            .map(|t| format!("{t}\n"))
            .map_err(|e| Error::Render(e.to_string())),
        OutputFormat::Csv => render_csv(batches),
        OutputFormat::Json => {
            let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            writer
                .write_batches(&refs)
                .map_err(|e| Error::Render(e.to_string()))?;
            writer.finish().map_err(|e| Error::Render(e.to_string()))?;
            let mut text =
                String::from_utf8(writer.into_inner()).map_err(|e| Error::Render(e.to_string()))?;
            if text.is_empty() {
                text.push_str("[]");
            }
            text.push('\n');
            Ok(text)
        }
    }
}

fn render_csv(batches: &[RecordBatch]) -> Result<String> {
    let mut out = String::new();
    let Some(first) = batches.first() else {
        return Ok(out);
    };
    let quote = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let header: Vec<String> = first
        .schema()
        .fields()
        .iter()
        .map(|f| quote(f.name()))
        .collect();
    out.push_str(&header.join(","));
    out.push('\n');
    let options = FormatOptions::default().with_null("");
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Render(e.to_string()))?;
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| quote(&f.value(row).to_string()))
                .collect();
            out.push_str(&cells.join(","));
            out.push('\n');
        }
    }
    Ok(out)
}

/// One cell as text (empty for null), for summaries that print single values.
pub fn cell_text(batch: &RecordBatch, column: usize, row: usize) -> String {
    let options = FormatOptions::default().with_null("");
    ArrayFormatter::try_new(batch.column(column).as_ref(), &options)
        .map(|f| f.value(row).to_string())
        .unwrap_or_default()
}

/// `schema` with its columns of type `from` as `to`, and without its metadata, for the reason
/// given at `without_metadata`.
fn retyped(schema: &Schema, from: &DataType, to: &DataType) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| {
            let field = field.as_ref().clone();
            if field.data_type() == from {
                field.with_data_type(to.clone())
            } else {
                field
            }
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// `schema` without its metadata, the lake's schema version: DataFusion 55 fails a join without
/// keys of two tables whose schema metadata differ ("Physical input schema should be the same
/// as the one converted from logical input schema"), and a query's result is no lake table.
pub(crate) fn without_metadata(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(schema.fields().clone()))
}

/// `schema` with its `Utf8View` columns as `Utf8`: results keep the lake's declared text type
/// whatever the scan used, so readers of report tables see one type.
fn plain_text_schema(schema: &Schema) -> SchemaRef {
    retyped(schema, &DataType::Utf8View, &DataType::Utf8)
}

/// `batch` with its `Utf8View` columns cast to `Utf8`.
fn as_plain_text(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = plain_text_schema(&batch.schema());
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            datafusion::arrow::compute::cast(column, field.data_type())
                .map_err(|e| Error::Render(format!("casting column {}: {e}", field.name())))
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema, columns).map_err(|e| Error::Render(e.to_string()))
}
