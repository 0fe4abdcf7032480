//! The lake's ledgers: `_ingested` (every source file taken in, by sha256), `_rejected` (every
//! record refused, with where it was and why) and `_runs` (every job run).

use crate::schema::{Row, TableDef, Ts};

lake_table! {
    /// A source file taken into the lake. Its sha256 is what makes re-ingest a no-op.
    IngestedFile {
        name: "_ingested",
        version: 1,
        layout: ByDate,
        key: [source_sha256],
        partition_at: |r| Some(r.ingested_at),
    }
    columns {
        source_sha256: String,
        source_path: String,
        format: String,
        bytes: i64,
        records_read: i64,
        records_accepted: i64,
        records_rejected: i64,
        ingested_at: Ts,
        run_id: String,
    }
}

lake_table! {
    /// A record (or a whole file) that failed validation, kept with everything needed to fix it.
    Rejection {
        name: "_rejected",
        version: 1,
        layout: ByDate,
        key: [],
        partition_at: |r| Some(r.rejected_at),
    }
    columns {
        source_path: String,
        source_sha256: String,
        /// Detected format, or `unknown` for a file no reader recognised.
        format: String,
        /// 1-based line of the record, where the format has lines.
        line: Option<i64>,
        /// Byte offset of the record in the (decompressed) file.
        byte_offset: Option<i64>,
        reason: String,
        /// The record's text, lossily decoded, at most `RAW_LIMIT` bytes.
        raw: String,
        is_raw_truncated: bool,
        rejected_at: Ts,
        run_id: String,
    }
}

lake_table! {
    /// One run of a job: what it read, what it wrote, and how it ended.
    JobRun {
        name: "_runs",
        version: 1,
        layout: ByDate,
        key: [run_id],
        partition_at: |r| Some(r.started_at),
    }
    columns {
        run_id: String,
        job: String,
        /// The partition the run was for, or `all`.
        partition: String,
        inputs_sha256: Vec<String>,
        outputs: Vec<String>,
        rows_read: i64,
        rows_written: i64,
        rows_rejected: i64,
        /// succeeded, failed or skipped.
        status: String,
        message: Option<String>,
        started_at: Ts,
        finished_at: Ts,
    }
}

/// The most raw text a rejection keeps; the source's sha256 and offset locate the rest.
pub const RAW_LIMIT: usize = 64 * 1024;

/// Every ledger table.
pub const LEDGER_TABLES: [TableDef; 3] = [IngestedFile::TABLE, Rejection::TABLE, JobRun::TABLE];
