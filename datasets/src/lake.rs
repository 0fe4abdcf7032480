//! The lake on disk: Hive-partitioned Parquet with atomic, all-or-nothing commits.
//!
//! A [`Txn`] stages every file it writes under `_staging/<txn>/`, fsynced, then writes a
//! `COMMIT` plan and only then moves the staged files into place. [`Lake::open`] finishes a
//! committed plan that a killed process left behind and deletes an uncommitted one, so a reader
//! sees either none or all of a transaction's partitions, never half a file. Part files are named
//! after the sha256 of their bytes, so the same rows always produce the same file.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanBuilder, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::{ArrowWriter, ProjectionMask};
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::schema::{DERIVED_TABLES, Layout, Row, TableDef, Ts};

/// Rows per Parquet row group: small enough to bound the memory of many open partitions.
const ROW_GROUP_ROWS: usize = 128 * 1024;
/// Memory the open parts of a transaction may buffer before the largest are written out.
const APPEND_BUFFER_BYTES: usize = 512 << 20;
/// Appended parts whose row groups average fewer rows are written again whole when sealed.
const SMALL_ROW_GROUP_ROWS: u64 = 16 * 1024;

/// How a write treats what a partition already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Add the rows as a new part file beside the partition's existing ones.
    Append,
    /// Replace every partition the rows fall in with exactly these rows.
    ReplacePartitions,
    /// Keyed snapshot tables: replace rows that share a key with the new rows, keep the rest.
    Upsert,
}

/// What one write or commit did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteSummary {
    /// Rows written.
    pub rows: u64,
    /// Bytes of Parquet written.
    pub bytes: u64,
    /// Part files written, relative to the lake root.
    pub files: Vec<String>,
}

/// A lake rooted at a directory.
#[derive(Debug, Clone)]
pub struct Lake {
    root: PathBuf,
}

impl Lake {
    /// Opens (creating if needed) the lake at `root`, first finishing or undoing any transaction
    /// a killed process left in `_staging`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Lake> {
        let root = root.into();
        fs::create_dir_all(root.join("_staging")).map_err(|e| Error::io(&root, e))?;
        let lake = Lake { root };
        lake.recover()?;
        Ok(lake)
    }

    /// Opens a lake that must already exist: for commands that only read.
    pub fn open_existing(root: impl Into<PathBuf>) -> Result<Lake> {
        let root = root.into();
        if !root.join("_staging").is_dir() {
            return Err(Error::Usage(format!(
                "no lake at {} (ingest something first, or pass --lake)",
                root.display()
            )));
        }
        Lake::open(root)
    }

    /// The lake's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of a table: `raw/<name>` for raw tables, `derived/<name>` for what jobs compute
    /// from them, `<name>` for ledgers (`_ingested`...).
    pub fn table_dir(&self, table: &TableDef) -> PathBuf {
        if table.name.starts_with('_') {
            self.root.join(table.name)
        } else if DERIVED_TABLES.iter().any(|t| t.name == table.name) {
            self.root.join("derived").join(table.name)
        } else {
            self.root.join("raw").join(table.name)
        }
    }

    /// The folder of the partition of a table laid out by date that holds the instant `at`.
    pub fn partition_dir(&self, table: &TableDef, at: Ts) -> PathBuf {
        self.table_dir(table).join(format!("date={}", at.date()))
    }

    /// The folder of a report table, computed by SQL: `reports/<name>`.
    pub fn report_dir(&self, name: &str) -> PathBuf {
        self.root.join("reports").join(name)
    }

    /// The report tables the lake holds, by name.
    pub fn report_tables(&self) -> Result<Vec<String>> {
        let dir = self.root.join("reports");
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| Error::io(&dir, e))?.path();
            if path.is_dir() && !parquet_files_in(&path)?.is_empty() {
                names.push(
                    path.file_name()
                        .expect("a folder")
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
        names.sort();
        Ok(names)
    }

    /// Every Parquet part of a table, sorted by path.
    pub fn parts(&self, table: &TableDef) -> Result<Vec<PathBuf>> {
        let mut parts = Vec::new();
        collect_parquet(&self.table_dir(table), &mut parts)?;
        parts.sort();
        Ok(parts)
    }

    /// Reads a whole table into memory, in part order. For small tables and tests; queries go
    /// through DataFusion.
    pub fn read_table(&self, table: &TableDef) -> Result<Vec<RecordBatch>> {
        let mut batches = Vec::new();
        for part in self.parts(table)? {
            batches.extend(read_parquet(&part)?);
        }
        Ok(batches)
    }

    /// Starts a transaction. Nothing it writes is visible until [`Txn::commit`].
    pub fn begin(&self) -> Result<Txn<'_>> {
        let id = format!(
            "{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%6f"),
            std::process::id()
        );
        let staging = self.root.join("_staging").join(&id);
        fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
        Ok(Txn {
            lake: self,
            staging,
            next_file: 0,
            open: BTreeMap::new(),
            buffered: 0,
            buffer_budget: APPEND_BUFFER_BYTES,
            replaced: BTreeMap::new(),
            plan: Vec::new(),
            summary: WriteSummary::default(),
        })
    }

    fn recover(&self) -> Result<()> {
        let staging_root = self.root.join("_staging");
        let entries = fs::read_dir(&staging_root).map_err(|e| Error::io(&staging_root, e))?;
        let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        dirs.sort();
        for dir in dirs {
            let plan_path = dir.join("COMMIT");
            match fs::read(&plan_path) {
                Ok(bytes) => {
                    let plan: Vec<Move> =
                        serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                            path: plan_path.clone(),
                            reason: format!("unreadable commit plan: {e}"),
                        })?;
                    tracing::warn!(txn = %dir.display(), "finishing a committed transaction left by a killed run");
                    apply_plan(&self.root, &plan)?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    tracing::warn!(txn = %dir.display(), "discarding an uncommitted transaction left by a killed run");
                }
                Err(e) => return Err(Error::io(&plan_path, e)),
            }
            fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        Ok(())
    }
}

/// One step of a commit plan, relative to the lake root.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Move {
    /// Rename a staged file to its final name.
    File { staged: String, target: String },
    /// Swap a staged folder in place of a partition folder.
    Dir { staged: String, target: String },
}

/// Marks a staged partition folder that has not yet been swapped into place.
const NEW_DIR_MARKER: &str = ".maestro-new";

/// An open Parquet part being written in the staging area.
struct OpenPart {
    writer: ArrowWriter<HashingFile>,
    staged: PathBuf,
    target_dir: PathBuf,
    rows: u64,
    /// The writer's buffered bytes as last measured (`ArrowWriter::memory_size`).
    buffered: usize,
}

/// A set of writes that become visible together, or not at all.
pub struct Txn<'a> {
    lake: &'a Lake,
    staging: PathBuf,
    next_file: usize,
    /// Appended parts still open, by their target partition folder.
    open: BTreeMap<PathBuf, OpenPart>,
    /// The sum of the open parts' `buffered`.
    buffered: usize,
    /// How much the open parts may buffer before the largest are written out.
    buffer_budget: usize,
    /// Replacement partition folders staged, by their target partition folder.
    replaced: BTreeMap<PathBuf, PathBuf>,
    plan: Vec<Move>,
    summary: WriteSummary,
}

impl Txn<'_> {
    /// Writes rows of one table. Appends stream: call it as often as rows arrive, each
    /// partition gets one part per transaction.
    pub fn write<R: Row>(&mut self, rows: &[R], mode: WriteMode) -> Result<()> {
        let table = R::TABLE;
        match (table.layout, mode) {
            (Layout::ByDate, WriteMode::Upsert) | (Layout::KeyedSnapshot, WriteMode::Append) => {
                return Err(Error::Internal(format!(
                    "write mode {mode:?} does not apply to table {} ({:?})",
                    table.name, table.layout
                )));
            }
            _ => {}
        }
        if rows.is_empty() {
            return Ok(());
        }
        match table.layout {
            Layout::ByDate => {
                // Grouped by day number; the date text is formatted once per partition.
                let mut by_partition: BTreeMap<i64, (Ts, Vec<&R>)> = BTreeMap::new();
                for row in rows {
                    let at = row.partition_at().ok_or_else(|| {
                        Error::Internal(format!(
                            "a {} row without a partition time reached the writer",
                            table.name
                        ))
                    })?;
                    by_partition
                        .entry(at.day())
                        .or_insert_with(|| (at, Vec::new()))
                        .1
                        .push(row);
                }
                for (at, rows) in by_partition.into_values() {
                    let dir = self.lake.partition_dir(&table, at);
                    let batch = R::to_batch(&rows);
                    match mode {
                        WriteMode::Append => self.append_batch(&dir, &batch)?,
                        _ => self.replace_partition(&dir, &[batch])?,
                    }
                }
            }
            Layout::KeyedSnapshot => {
                self.upsert_snapshot(&table, R::to_batch(&rows.iter().collect::<Vec<_>>()))?;
            }
        }
        Ok(())
    }

    /// Appends rows of a table laid out by date, given as batches with the table's declared
    /// schema, to the partitions of the dates in their timestamp column `at`: for readers that
    /// gather rows in columns, where row structs of owned texts would cost more than the write.
    /// A batch's rows are split by date: a date's rows that lie together go as a slice of it.
    pub fn append_dated_batches<R: Row>(
        &mut self,
        batches: &[RecordBatch],
        at: &str,
    ) -> Result<()> {
        let table = R::TABLE;
        if table.layout != Layout::ByDate {
            return Err(Error::Internal(format!(
                "{} is not laid out by date",
                table.name
            )));
        }
        // Grouped by day number, each with one of its instants to name the partition.
        let mut by_day: BTreeMap<i64, (Ts, Vec<RecordBatch>)> = BTreeMap::new();
        for batch in batches {
            let times = batch
                .column_by_name(at)
                .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
                .filter(|times| times.null_count() == 0)
                .ok_or_else(|| {
                    Error::Internal(format!(
                        "{} rows without a timestamp column {at} free of nulls",
                        table.name
                    ))
                })?;
            // Each run of consecutive rows of one day goes to that day as a slice of the batch,
            // copied nowhere: runs are long, since a report's rows share its date. Joining a
            // day's runs first (reports of several services, each a run of days) copied every
            // row, 5% of JUnit ingest, and saved the writer less than that in calls.
            let times = times.values();
            let mut run_start = 0;
            for row in 1..=times.len() {
                let day = Ts(times[run_start]).day();
                if row < times.len() && Ts(times[row]).day() == day {
                    continue;
                }
                let (_, day_batches) = by_day
                    .entry(day)
                    .or_insert((Ts(times[run_start]), Vec::new()));
                day_batches.push(batch.slice(run_start, row - run_start));
                run_start = row;
            }
        }
        // A day's batches are written one after another: joining them first copied every row.
        for (at, batches) in by_day.into_values() {
            let dir = self.lake.partition_dir(&table, at);
            for batch in &batches {
                self.append_batch(&dir, batch)?;
            }
        }
        Ok(())
    }

    /// Upserts rows of a keyed snapshot table given as one batch with the table's declared
    /// schema: for a caller that holds its rows in columns already (a rollout plan of a
    /// million services), where row structs of owned texts would cost more than the write.
    pub fn upsert_batch<R: Row>(&mut self, batch: RecordBatch) -> Result<()> {
        let table = R::TABLE;
        if table.layout != Layout::KeyedSnapshot {
            return Err(Error::Internal(format!(
                "batches are upserted into keyed snapshots only, and {} is laid out by date",
                table.name
            )));
        }
        if batch.schema() != R::schema() {
            return Err(Error::SchemaMismatch {
                table: table.name.to_string(),
                reason: "a batch to upsert does not have the declared schema".into(),
            });
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.upsert_snapshot(&table, batch)
    }

    /// Replaces a keyed snapshot with `new` plus the rows whose keys `new` does not hold. Each
    /// part's key columns are read first, and a part whose every row `new` replaces is read no
    /// further: rerunning a plan of a million services read and matched every row of the one
    /// before it, 1.3 s of its 4.
    fn upsert_snapshot(&mut self, table: &TableDef, new: RecordBatch) -> Result<()> {
        let dir = self.lake.table_dir(table);
        let internal =
            |e: ArrowError| Error::Internal(format!("matching keys of {}: {e}", table.name));
        // Keys compared as arrow's row format: one byte string per key, no text formatted per
        // row.
        let new_keys = key_columns(table, &new)?;
        let converter = RowConverter::new(
            new_keys
                .iter()
                .map(|a| SortField::new(a.data_type().clone()))
                .collect(),
        )
        .map_err(internal)?;
        let new_rows = converter.convert_columns(&new_keys).map_err(internal)?;
        let mut known: foldhash::HashSet<&[u8]> = foldhash::HashSet::default();
        known.reserve(new_rows.num_rows());
        known.extend(new_rows.iter().map(|r| r.data()));
        let mut batches = Vec::new();
        for part in self.lake.parts(table)? {
            let mut kept = BooleanBuilder::new();
            for keys in read_parquet_columns(&part, table.key)? {
                let rows = converter
                    .convert_columns(&key_columns(table, &keys)?)
                    .map_err(internal)?;
                for row in rows.iter() {
                    kept.append_value(!known.contains(row.data()));
                }
            }
            let kept = kept.finish();
            if kept.true_count() == 0 {
                continue;
            }
            let mut offset = 0;
            for batch in read_parquet(&part)? {
                // Older files may predate a column's addition: they are not silently reshaped.
                if batch.schema().fields() != new.schema().fields() {
                    return Err(Error::SchemaMismatch {
                        table: table.name.to_string(),
                        reason: "existing snapshot does not match the declared schema".into(),
                    });
                }
                let mask = kept.slice(offset, batch.num_rows());
                offset += batch.num_rows();
                let filtered = filter_record_batch(&batch, &mask)
                    .map_err(|e| Error::Internal(format!("filtering {}: {e}", table.name)))?;
                batches.push(
                    filtered
                        .with_schema(new.schema())
                        .map_err(|e| Error::Internal(e.to_string()))?,
                );
            }
        }
        batches.push(new);
        self.replace_partition(&dir, &batches)
    }

    /// Replaces the whole report table `name` with `batches`, which share one schema. A report
    /// with no rows is still written, as a part without rows, so its columns stay queryable.
    pub fn replace_report(&mut self, name: &str, batches: &[RecordBatch]) -> Result<()> {
        if batches.is_empty() {
            return Err(Error::Internal(format!(
                "report {name} reached the writer without a schema"
            )));
        }
        let dir = self.lake.report_dir(name);
        self.replace_partition(&dir, batches)
    }

    fn append_batch(&mut self, dir: &Path, batch: &RecordBatch) -> Result<()> {
        if !self.open.contains_key(dir) {
            let staged = self.staged_path("parquet");
            let writer = parquet_writer(&staged, batch)?;
            self.open.insert(
                dir.to_path_buf(),
                OpenPart {
                    writer,
                    staged,
                    target_dir: dir.to_path_buf(),
                    rows: 0,
                    buffered: 0,
                },
            );
        }
        let part = self.open.get_mut(dir).expect("inserted above");
        part.writer
            .write(batch)
            .map_err(|e| Error::parquet(&part.staged, e))?;
        part.rows += batch.num_rows() as u64;
        let buffered = part.writer.memory_size();
        self.buffered = self.buffered - part.buffered + buffered;
        part.buffered = buffered;
        if self.buffered > self.buffer_budget {
            self.flush_largest_parts()?;
        }
        Ok(())
    }

    /// Writes out the row groups of the open parts holding the most memory until they hold
    /// half the budget. A year of history ingested at once has a part open per table and day,
    /// thousands of them, each buffering its rows until its row group fills; without this the
    /// ingest of a year held every row in memory (over 7 GB for 300 services).
    fn flush_largest_parts(&mut self) -> Result<()> {
        while self.buffered > self.buffer_budget / 2 {
            let Some(part) = self.open.values_mut().max_by_key(|p| p.buffered) else {
                break;
            };
            if part.buffered == 0 {
                break;
            }
            part.writer
                .flush()
                .map_err(|e| Error::parquet(&part.staged, e))?;
            let buffered = part.writer.memory_size();
            let freed = part.buffered.saturating_sub(buffered);
            self.buffered = self.buffered - part.buffered + buffered;
            part.buffered = buffered;
            if freed == 0 {
                break;
            }
        }
        Ok(())
    }

    fn replace_partition(&mut self, dir: &Path, batches: &[RecordBatch]) -> Result<()> {
        let next = self.staging.join(format!("dir-{}", self.replaced.len()));
        let staged_dir = self
            .replaced
            .entry(dir.to_path_buf())
            .or_insert(next)
            .clone();
        // Stage a fresh folder holding exactly the new rows, plus the marker that says it has
        // not been swapped in yet.
        if staged_dir.exists() {
            fs::remove_dir_all(&staged_dir).map_err(|e| Error::io(&staged_dir, e))?;
        }
        fs::create_dir_all(&staged_dir).map_err(|e| Error::io(&staged_dir, e))?;
        File::create(staged_dir.join(NEW_DIR_MARKER)).map_err(|e| Error::io(&staged_dir, e))?;
        if !batches.is_empty() {
            let schema = batches[0].schema();
            let merged = concat_batches(&schema, batches).map_err(|e| Error::arrow(dir, e))?;
            let temp = staged_dir.join(".part.tmp");
            let mut writer = parquet_writer(&temp, &merged)?;
            writer
                .write(&merged)
                .map_err(|e| Error::parquet(&temp, e))?;
            let hash = finish_writer(writer, &temp)?.0;
            let name = staged_dir.join(part_name(&hash));
            fs::rename(&temp, &name).map_err(|e| Error::io(&name, e))?;
        }
        sync_dir(&staged_dir)?;
        Ok(())
    }

    fn staged_path(&mut self, ext: &str) -> PathBuf {
        self.next_file += 1;
        self.staging.join(format!("{:06}.{ext}", self.next_file))
    }

    /// Closes an appended part and returns where it is staged, its sha256 and size. A part
    /// whose row groups went out small (flushed early to stay within the buffer budget, while
    /// thousands of parts were open) is written again in whole row groups: a year ingested at
    /// once left `changes` in row groups of about 26 rows, and reading their metadata was most
    /// of the time of the reports over that table.
    fn close_part(&mut self, part: OpenPart) -> Result<(PathBuf, String, u64)> {
        let row_groups = part.writer.flushed_row_groups().len()
            + usize::from(part.writer.in_progress_rows() > 0);
        let (hash, bytes) = finish_writer(part.writer, &part.staged)?;
        let rows_per_group = part.rows / row_groups.max(1) as u64;
        if row_groups <= 1 || rows_per_group >= SMALL_ROW_GROUP_ROWS {
            return Ok((part.staged, hash, bytes));
        }
        let whole = self.staged_path("parquet");
        let (hash, bytes) = rewrite_part(&part.staged, &whole)?;
        fs::remove_file(&part.staged).map_err(|e| Error::io(&part.staged, e))?;
        Ok((whole, hash, bytes))
    }

    /// Makes every write of the transaction visible, atomically per file and per partition.
    /// Closes every part written so far and returns their final paths (relative to the lake
    /// root), so that a ledger row written afterwards in the same transaction can name them.
    pub fn seal(&mut self) -> Result<Vec<String>> {
        let root = self.lake.root.clone();
        let mut sealed = Vec::new();
        self.buffered = 0;
        for (_, part) in std::mem::take(&mut self.open) {
            let rows = part.rows;
            let target_dir = part.target_dir.clone();
            let (staged, hash, bytes) = self.close_part(part)?;
            let target = target_dir.join(part_name(&hash));
            self.summary.rows += rows;
            self.summary.bytes += bytes;
            sealed.push(relative(&root, &target));
            self.plan.push(Move::File {
                staged: relative(&root, &staged),
                target: relative(&root, &target),
            });
        }
        for (target, staged) in std::mem::take(&mut self.replaced) {
            for part in parquet_files_in(&staged)? {
                let meta = fs::metadata(&part).map_err(|e| Error::io(&part, e))?;
                self.summary.bytes += meta.len();
                self.summary.rows += parquet_rows(&part)?;
                let name = part.file_name().expect("a file").to_owned();
                sealed.push(relative(&root, &target.join(name)));
            }
            self.plan.push(Move::Dir {
                staged: relative(&root, &staged),
                target: relative(&root, &target),
            });
        }
        sealed.sort();
        self.summary.files.extend(sealed.iter().cloned());
        Ok(sealed)
    }

    /// Makes every write of the transaction visible, atomically per file and per partition.
    pub fn commit(mut self) -> Result<WriteSummary> {
        let root = self.lake.root.clone();
        self.seal()?;
        let mut summary = std::mem::take(&mut self.summary);
        let plan_path = self.staging.join("COMMIT");
        let temp = self.staging.join("COMMIT.tmp");
        let plan =
            serde_json::to_vec_pretty(&self.plan).map_err(|e| Error::Internal(e.to_string()))?;
        write_synced(&temp, &plan)?;
        sync_dir(&self.staging)?;
        // The commit point: once COMMIT exists, recovery rolls forward instead of back.
        fs::rename(&temp, &plan_path).map_err(|e| Error::io(&plan_path, e))?;
        sync_dir(&self.staging)?;
        apply_plan(&root, &self.plan)?;
        fs::remove_dir_all(&self.staging).map_err(|e| Error::io(&self.staging, e))?;
        summary.files.sort();
        Ok(summary)
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        // An abandoned transaction leaves nothing behind (commit removes its own staging).
        if self.staging.exists() && !self.staging.join("COMMIT").exists() {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

fn apply_plan(root: &Path, plan: &[Move]) -> Result<()> {
    let mut touched = BTreeSet::new();
    for step in plan {
        match step {
            Move::File { staged, target } => {
                let (staged, target) = (root.join(staged), root.join(target));
                if !staged.exists() {
                    continue; // already moved by an earlier attempt
                }
                let parent = target.parent().expect("targets are inside the lake");
                fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                fs::rename(&staged, &target).map_err(|e| Error::io(&target, e))?;
                touched.insert(parent.to_path_buf());
            }
            Move::Dir { staged, target } => {
                let (staged, target) = (root.join(staged), root.join(target));
                if !staged.exists() {
                    continue;
                }
                let parent = target.parent().expect("targets are inside the lake");
                fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                if staged.join(NEW_DIR_MARKER).exists() {
                    if target.exists() {
                        exchange(&staged, &target)?;
                    } else {
                        fs::rename(&staged, &target).map_err(|e| Error::io(&target, e))?;
                    }
                }
                // Whatever is left at the staged path is now the old partition.
                if staged.exists() {
                    fs::remove_dir_all(&staged).map_err(|e| Error::io(&staged, e))?;
                }
                let marker = target.join(NEW_DIR_MARKER);
                if marker.exists() {
                    fs::remove_file(&marker).map_err(|e| Error::io(&marker, e))?;
                }
                if fs::read_dir(&target)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false)
                {
                    fs::remove_dir(&target).map_err(|e| Error::io(&target, e))?;
                }
                touched.insert(parent.to_path_buf());
            }
        }
    }
    for dir in touched {
        sync_dir(&dir)?;
    }
    Ok(())
}

/// Swaps two directories in one atomic step (Linux `renameat2(RENAME_EXCHANGE)`), so a reader
/// sees the old partition or the new one and never a missing one.
#[allow(unsafe_code)]
fn exchange(a: &Path, b: &Path) -> Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let to_c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| Error::Internal(format!("path with NUL: {}", p.display())))
    };
    let (ca, cb) = (to_c(a)?, to_c(b)?);
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call; the call
    // does not retain them.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc != 0 {
        return Err(Error::io(b, io::Error::last_os_error()));
    }
    Ok(())
}

/// The key columns of `batch`, in the order the table declares them.
fn key_columns(table: &TableDef, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
    table
        .key
        .iter()
        .map(|column| {
            batch.column_by_name(column).cloned().ok_or_else(|| {
                Error::Internal(format!("{} has no key column {column}", table.name))
            })
        })
        .collect()
}

/// A writer of Parquet files of `sample`'s schema, its column encodings chosen from the rows
/// of `sample`, the first batch to be written.
fn parquet_writer(path: &Path, sample: &RecordBatch) -> Result<ArrowWriter<HashingFile>> {
    let schema = sample.schema();
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut props = WriterProperties::builder()
        // zstd level 1: measured ~10-25% faster ingest than level 3 for a slightly larger lake.
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("valid level"),
        ))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Chunk);
    // Texts go without min and max. The lake's texts (ids, names, messages) lie in ingest
    // order, so a row group's range of them spans nearly all values and prunes nothing, while
    // computing it compared every value written: a fifth of the cost of writing test results.
    // Floats go without a dictionary. They are measurements (durations, metric values), mostly
    // distinct: a dictionary of them hashed every value and came out larger than the values
    // compressed (test durations: 2.1 MB plain, 2.7 MB with one).
    // Texts whose values are nearly all distinct (ids, hashes, whole records) go without a
    // dictionary too: one would only hash each value and write a page as large as the values.
    for (field, values) in schema.fields().iter().zip(sample.columns()) {
        let column = || ColumnPath::from(field.name().as_str());
        match field.data_type() {
            DataType::Utf8 => {
                props = props.set_column_statistics_enabled(column(), EnabledStatistics::None);
                if mostly_distinct(values) {
                    props = props.set_column_dictionary_enabled(column(), false);
                }
            }
            DataType::Float64 => props = props.set_column_dictionary_enabled(column(), false),
            _ => {}
        }
    }
    let props = props.build();
    ArrowWriter::try_new(HashingFile::new(file), schema, Some(props))
        .map_err(|e| Error::parquet(path, e))
}

/// Whether the first values of a text column are nearly all distinct: nine in ten of at
/// least 64 values that are not null, among its first thousand.
fn mostly_distinct(column: &ArrayRef) -> bool {
    const SAMPLE: usize = 1024;
    let Some(texts) = column.as_any().downcast_ref::<StringArray>() else {
        return false;
    };
    let values: Vec<&str> = texts.iter().take(SAMPLE).flatten().collect();
    let distinct: foldhash::HashSet<&str> = values.iter().copied().collect();
    values.len() >= 64 && distinct.len() * 10 >= values.len() * 9
}

/// Copies the rows of the Parquet file `from` into a new file `to`, in row groups as large as
/// the writer makes them, and returns the new file's sha256 and size.
fn rewrite_part(from: &Path, to: &Path) -> Result<(String, u64)> {
    let file = File::open(from).map_err(|e| Error::io(from, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|builder| builder.build())
        .map_err(|e| Error::parquet(from, e))?;
    let mut writer = None;
    for batch in reader {
        let batch =
            batch.map_err(|e| Error::Internal(format!("reading {}: {e}", from.display())))?;
        let writer = match &mut writer {
            Some(writer) => writer,
            None => writer.insert(parquet_writer(to, &batch)?),
        };
        writer.write(&batch).map_err(|e| Error::parquet(to, e))?;
    }
    let writer = writer.ok_or_else(|| {
        Error::Internal(format!("{} holds no rows to write again", from.display()))
    })?;
    finish_writer(writer, to)
}

/// Closes a writer, fsyncs the file, and returns its sha256 and size.
fn finish_writer(writer: ArrowWriter<HashingFile>, path: &Path) -> Result<(String, u64)> {
    let file = writer.into_inner().map_err(|e| Error::parquet(path, e))?;
    file.finish(path)
}

fn part_name(hash: &str) -> String {
    format!("part-{}.parquet", &hash[..16])
}

/// A file that hashes what is written through it.
struct HashingFile {
    file: File,
    hasher: Sha256,
    bytes: u64,
}

impl HashingFile {
    fn new(file: File) -> Self {
        HashingFile {
            file,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    fn finish(mut self, path: &Path) -> Result<(String, u64)> {
        self.file.flush().map_err(|e| Error::io(path, e))?;
        self.file.sync_all().map_err(|e| Error::io(path, e))?;
        Ok((format!("{:x}", self.hasher.finalize()), self.bytes))
    }
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Writes a file and fsyncs it, so it survives a crash once this returns.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = File::create(path).map_err(|e| Error::io(path, e))?;
    file.write_all(bytes).map_err(|e| Error::io(path, e))?;
    file.sync_all().map_err(|e| Error::io(path, e))
}

/// Replaces `path` with `bytes` whole or not at all: written under a temporary name beside
/// it, fsynced, renamed over it, and the folder fsynced. Creates the folder if needed.
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = dir.join(format!(".{name}.tmp"));
    write_synced(&temp, bytes)?;
    fs::rename(&temp, path).map_err(|e| Error::io(path, e))?;
    sync_dir(dir)
}

/// Fsyncs a file or a directory (a directory's entries: renames and new files in it).
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

fn collect_parquet(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            collect_parquet(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    Ok(())
}

fn parquet_files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    collect_parquet(dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// Reads one Parquet file into batches.
pub fn read_parquet(path: &Path) -> Result<Vec<RecordBatch>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| Error::parquet(path, e))?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::arrow(path, e))
}

/// The named columns of one Parquet file, read whole. A name the file lacks is an error that
/// names it, as that is an older schema.
pub fn read_parquet_columns(path: &Path, columns: &[&str]) -> Result<Vec<RecordBatch>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::parquet(path, e))?;
    let schema = builder.parquet_schema();
    for name in columns {
        if !schema
            .columns()
            .iter()
            .any(|c| c.path().parts()[0] == *name)
        {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                reason: format!("no column {name}: is it an older schema?"),
            });
        }
    }
    let mask = ProjectionMask::columns(schema, columns.iter().copied());
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| Error::parquet(path, e))?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::arrow(path, e))
}

/// Rows of one Parquet file, from its footer alone.
pub fn parquet_rows(path: &Path) -> Result<u64> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::parquet(path, e))?;
    Ok(builder.metadata().file_metadata().num_rows() as u64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::schema::{ServiceEdge, TestResult, Ts};

    fn result(test: &str, at: i64) -> TestResult {
        TestResult {
            run_id: "r1".into(),
            suite: "s".into(),
            test_id: test.into(),
            name: test.into(),
            status: "passed".into(),
            attempt: 1,
            started_at: Ts(at),
            source_format: "junit".into(),
            ..Default::default()
        }
    }

    fn count(lake: &Lake, table: &TableDef) -> usize {
        lake.read_table(table)
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum()
    }

    const DAY: i64 = 86_400_000_000;

    fn staging_is_empty(root: &Path) -> bool {
        fs::read_dir(root.join("_staging"))
            .unwrap()
            .next()
            .is_none()
    }

    #[test]
    fn appends_partition_by_utc_date() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        let mut txn = lake.begin().unwrap();
        txn.write(&[result("a", 0), result("b", DAY + 5)], WriteMode::Append)
            .unwrap();
        let summary = txn.commit().unwrap();
        assert_eq!(summary.rows, 2);
        assert_eq!(summary.files.len(), 2);
        assert!(summary.files[0].starts_with("raw/test_results/date=1970-01-01/part-"));
        assert!(summary.files[1].starts_with("raw/test_results/date=1970-01-02/part-"));
        assert!(staging_is_empty(dir.path()));
    }

    #[test]
    fn encodings_follow_the_values_written() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        let mut txn = lake.begin().unwrap();
        let rows: Vec<TestResult> = (0..200)
            .map(|i| TestResult {
                duration_s: Some(i as f64 / 7.0),
                ..result(&format!("t{i}"), i)
            })
            .collect();
        txn.write(&rows, WriteMode::Append).unwrap();
        txn.commit().unwrap();
        let part = &lake.parts(&TestResult::TABLE).unwrap()[0];
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(part).unwrap()).unwrap();
        let group = reader.metadata().row_group(0);
        let column = |name: &str| {
            let found = group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == name);
            found.unwrap().clone()
        };
        // One run over all rows: a dictionary; a test id per row or a float: none.
        assert!(column("run_id").dictionary_page_offset().is_some());
        assert!(column("test_id").dictionary_page_offset().is_none());
        assert!(column("duration_s").dictionary_page_offset().is_none());
        // Times keep their range; texts, which prune nothing, do not.
        assert!(column("started_at").statistics().is_some());
        assert!(column("test_id").statistics().is_none());
    }

    #[test]
    fn batches_of_many_dates_are_split_as_rows_are() {
        // The first date in two runs of rows, the second in one.
        let rows = [result("a", 0), result("b", DAY + 5), result("c", 7)];
        assert_dated_batches_write_as_rows(&rows);
    }

    /// Rows written as one batch land in the same partitions, in the same order, as rows
    /// written as row structs.
    fn assert_dated_batches_write_as_rows(rows: &[TestResult]) {
        let mut lakes = Vec::new();
        for as_batch in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let lake = Lake::open(dir.path()).unwrap();
            let mut txn = lake.begin().unwrap();
            if as_batch {
                let batch = TestResult::to_batch(&rows.iter().collect::<Vec<_>>());
                txn.append_dated_batches::<TestResult>(&[batch], "started_at")
                    .unwrap();
            } else {
                txn.write(rows, WriteMode::Append).unwrap();
            }
            let files = txn.commit().unwrap().files;
            assert_eq!(files.len(), 2);
            let dates: Vec<&str> = files.iter().map(|f| &f[..f.rfind('/').unwrap()]).collect();
            let read = concat_batches(
                &TestResult::schema(),
                &lake.read_table(&TestResult::TABLE).unwrap(),
            );
            lakes.push((dates.join(" "), read.unwrap()));
        }
        assert_eq!(lakes[0], lakes[1]);
    }

    #[test]
    fn open_parts_past_the_buffer_budget_write_row_groups_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        let mut txn = lake.begin().unwrap();
        txn.buffer_budget = 1;
        for batch in 0..3 {
            let rows: Vec<TestResult> = (0..100)
                .flat_map(|i| {
                    let name = format!("t{batch}-{i}");
                    [result(&name, i), result(&name, DAY + i)]
                })
                .collect();
            txn.write(&rows, WriteMode::Append).unwrap();
        }
        txn.commit().unwrap();
        assert_eq!(count(&lake, &TestResult::TABLE), 600);
        for part in lake.parts(&TestResult::TABLE).unwrap() {
            let file = File::open(&part).unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
            // Each write went out as its own row group once the budget was passed; the part
            // was then written again whole, its rows in the order they came.
            assert_eq!(reader.metadata().num_row_groups(), 1, "{}", part.display());
            let batches: Vec<RecordBatch> = reader.build().unwrap().map(|b| b.unwrap()).collect();
            let batch = concat_batches(&batches[0].schema(), &batches).unwrap();
            let names = batch
                .column_by_name("test_id")
                .unwrap()
                .as_any()
                .downcast_ref::<datafusion::arrow::array::StringArray>()
                .unwrap();
            let expected: Vec<String> = (0..3)
                .flat_map(|w| (0..100).map(move |i| format!("t{w}-{i}")))
                .collect();
            assert_eq!(
                names
                    .iter()
                    .map(|n| n.unwrap().to_string())
                    .collect::<Vec<_>>(),
                expected
            );
        }
    }

    #[test]
    fn replacing_a_partition_never_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        for _ in 0..2 {
            let mut txn = lake.begin().unwrap();
            txn.write(
                &[result("a", 0), result("b", 1)],
                WriteMode::ReplacePartitions,
            )
            .unwrap();
            txn.commit().unwrap();
        }
        assert_eq!(count(&lake, &TestResult::TABLE), 2);
        assert_eq!(lake.parts(&TestResult::TABLE).unwrap().len(), 1);
    }

    #[test]
    fn same_rows_give_the_same_file_bytes() {
        let names: Vec<Vec<String>> = (0..2)
            .map(|_| {
                let dir = tempfile::tempdir().unwrap();
                let lake = Lake::open(dir.path()).unwrap();
                let mut txn = lake.begin().unwrap();
                txn.write(&[result("a", 0)], WriteMode::Append).unwrap();
                txn.commit().unwrap().files
            })
            .collect();
        assert_eq!(names[0], names[1]);
    }

    #[test]
    fn upsert_replaces_rows_with_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        let edge = |from: &str, to: &str| ServiceEdge {
            from_service: from.into(),
            to_service: to.into(),
            source: "catalog".into(),
        };
        for rows in [
            vec![edge("a", "b"), edge("b", "c")],
            vec![edge("a", "b"), edge("c", "d")],
        ] {
            let mut txn = lake.begin().unwrap();
            txn.write(&rows, WriteMode::Upsert).unwrap();
            txn.commit().unwrap();
        }
        assert_eq!(count(&lake, &ServiceEdge::TABLE), 3);
    }

    #[test]
    fn upsert_reads_no_further_a_part_whose_rows_it_all_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        let edge = ServiceEdge {
            from_service: "a".into(),
            to_service: "b".into(),
            source: "catalog".into(),
        };
        // A part of another schema: one more column.
        let write_foreign_part = |from: &str, to: &str| {
            use datafusion::arrow::array::StringArray;
            let text = |v: &str| std::sync::Arc::new(StringArray::from(vec![v])) as ArrayRef;
            let batch = RecordBatch::try_from_iter([
                ("from_service", text(from)),
                ("to_service", text(to)),
                ("source", text("catalog")),
                ("note", text("older")),
            ])
            .unwrap();
            let dir = lake.table_dir(&ServiceEdge::TABLE);
            fs::create_dir_all(&dir).unwrap();
            let file = File::create(dir.join("part-older.parquet")).unwrap();
            let mut writer = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();
        };
        write_foreign_part("a", "b");
        let mut txn = lake.begin().unwrap();
        txn.write(std::slice::from_ref(&edge), WriteMode::Upsert)
            .unwrap();
        txn.commit().unwrap();
        assert_eq!(count(&lake, &ServiceEdge::TABLE), 1);

        // Such a part with a row to keep is refused, not reshaped.
        write_foreign_part("x", "y");
        let mut txn = lake.begin().unwrap();
        assert!(matches!(
            txn.write(&[edge], WriteMode::Upsert),
            Err(Error::SchemaMismatch { .. })
        ));
    }

    #[test]
    fn rejects_a_write_mode_that_does_not_fit_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        let mut txn = lake.begin().unwrap();
        assert!(txn.write(&[result("a", 0)], WriteMode::Upsert).is_err());
    }

    #[test]
    fn uncommitted_transaction_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        let mut txn = lake.begin().unwrap();
        txn.write(&[result("a", 0)], WriteMode::Append).unwrap();
        // Simulate a kill: the process dies without running destructors.
        std::mem::forget(txn);
        let lake = Lake::open(dir.path()).unwrap();
        assert_eq!(count(&lake, &TestResult::TABLE), 0);
        assert!(staging_is_empty(dir.path()));
    }

    #[test]
    fn committed_plan_left_by_a_killed_run_is_finished_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        let mut txn = lake.begin().unwrap();
        txn.write(&[result("a", 0)], WriteMode::Append).unwrap();
        txn.write(&[result("b", DAY)], WriteMode::ReplacePartitions)
            .unwrap();
        // Write the plan as commit does, then die before moving anything.
        let mut plan = Vec::new();
        for (_, part) in std::mem::take(&mut txn.open) {
            let (hash, _) = finish_writer(part.writer, &part.staged).unwrap();
            plan.push(Move::File {
                staged: relative(dir.path(), &part.staged),
                target: relative(dir.path(), &part.target_dir.join(part_name(&hash))),
            });
        }
        for (target, staged) in std::mem::take(&mut txn.replaced) {
            plan.push(Move::Dir {
                staged: relative(dir.path(), &staged),
                target: relative(dir.path(), &target),
            });
        }
        write_synced(
            &txn.staging.join("COMMIT"),
            &serde_json::to_vec(&plan).unwrap(),
        )
        .unwrap();
        std::mem::forget(txn);
        let lake = Lake::open(dir.path()).unwrap();
        assert_eq!(count(&lake, &TestResult::TABLE), 2);
    }
}
