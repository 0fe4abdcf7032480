//! Ingest: source files in, lake partitions and ledger rows out, in one transaction.
//!
//! Files are taken in sorted path order. A file whose sha256 is already in `_ingested` (or
//! earlier in the same run) adds nothing. Small files are read once, hashed and parsed from
//! that one read, in parallel; larger and gzipped ones are hashed first and then streamed. Each
//! file's format is detected from its content; rows are written in file order, so the same
//! inputs give the same lake, byte for byte. Large line-oriented files stream in chunks, so
//! memory stays bounded whatever the file size. Audit records are chained by hash in that same
//! order. Every file gets an `_ingested` row with its counts, every refused
//! record a `_rejected` row, and the run a `_runs` row; read = accepted + rejected throughout.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, Int64Array, StringArray};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::lake::{Lake, WriteMode, WriteSummary};
use crate::ledger::{IngestedFile, JobRun, RAW_LIMIT, Rejection};
use crate::readers::{self, AuditDraft, Chunk, Format, Records, ReportContext};
use crate::schema::{AuditEvent, Row, TestResult, Ts};

/// Default bytes per streamed chunk of a large file; files up to one chunk are read whole.
pub const DEFAULT_CHUNK_BYTES: usize = 4 << 20;
/// Bytes of small files read and parsed together, in parallel, before their rows are written.
/// The same whatever the number of threads, so that rows reach the writer in the same batches
/// and the lake comes out the same, byte for byte.
const PARALLEL_BATCH: usize = 8 << 20;
/// Bytes of consecutive small files parsed one after another into the same columns, which
/// then go to the writer as they are: enough files that their rows make one large batch,
/// few enough that a batch holds several groups for the threads to share.
const GROUP_BYTES: usize = 1 << 20;
/// Rows gathered before they are written.
const FLUSH_ROWS: usize = 8 * 1024;
/// The previous hash of the first audit record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How to ingest.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Skip detection and read every file as this format.
    pub format: Option<Format>,
    /// What test reports and scrapes do not say about themselves.
    pub context: ReportContext,
    /// Bytes per chunk when streaming a large line-oriented file; files up to one chunk are
    /// read whole. Bounds memory: about two chunks per core are in flight.
    pub chunk_bytes: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            format: None,
            context: ReportContext::default(),
            chunk_bytes: DEFAULT_CHUNK_BYTES,
        }
    }
}

/// What happened to one source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStatus {
    /// Taken in (some records may still have been rejected).
    Ingested,
    /// Its sha256 was already in the lake or earlier in this run: nothing added.
    Duplicate,
}

/// The outcome for one source file.
#[derive(Debug, Clone)]
pub struct FileOutcome {
    /// Path as given (or found under a folder given).
    pub path: PathBuf,
    /// sha256 of the file's bytes as stored (before decompression).
    pub sha256: String,
    /// Detected or forced format; `None` when no reader recognised it.
    pub format: Option<Format>,
    /// Taken in, or skipped as a duplicate.
    pub status: FileStatus,
    /// Records read.
    pub read: u64,
    /// Records rejected.
    pub rejected: u64,
    /// Size on disk.
    pub bytes: u64,
}

/// What one ingest did.
#[derive(Debug, Clone, Default)]
pub struct IngestReport {
    /// The run's id, as recorded in the ledgers.
    pub run_id: String,
    /// Per file, in the order taken.
    pub files: Vec<FileOutcome>,
    /// Records read across files.
    pub read: u64,
    /// Records accepted.
    pub accepted: u64,
    /// Records rejected.
    pub rejected: u64,
    /// Rows written per raw table.
    pub rows: BTreeMap<&'static str, u64>,
    /// Source bytes read (decompressed).
    pub source_bytes: u64,
    /// What the commit wrote.
    pub written: WriteSummary,
}

/// Told how an ingest goes: the bytes it will read once the files are listed, then the bytes
/// of each file or chunk as it is taken. Any `Fn(u64)` is a progress that hears of the bytes
/// taken only.
pub trait Progress: Sync {
    /// The bytes of every file to read, known once the paths are listed.
    fn total(&self, _bytes: u64) {}
    /// Bytes taken since the last call.
    fn advance(&self, bytes: u64);
}

impl<F: Fn(u64) + Sync> Progress for F {
    fn advance(&self, bytes: u64) {
        self(bytes)
    }
}

/// Ingests files and folders (recursively) into the lake, in one transaction.
pub fn ingest(
    lake: &Lake,
    paths: &[PathBuf],
    options: &IngestOptions,
    progress: &dyn Progress,
) -> Result<IngestReport> {
    // The run goes on a thread of the pool that parses, so that rows are mostly freed, once
    // written, by the thread that allocated them: mimalloc reuses memory freed from another
    // thread only later. With one thread, parsing then runs right where the rows are written;
    // before, it ran on the pool's thread, and 200 MB of JUnit faulted in 59k pages instead of
    // 50k and took 6% more CPU time.
    rayon::scope(|_| ingest_on_pool(lake, paths, options, progress))
}

fn ingest_on_pool(
    lake: &Lake,
    paths: &[PathBuf],
    options: &IngestOptions,
    progress: &dyn Progress,
) -> Result<IngestReport> {
    let started = Ts(chrono::Utc::now().timestamp_micros());
    let run_id = format!(
        "ingest-{}",
        started.to_datetime().format("%Y%m%dT%H%M%S%6fZ")
    );
    // Sizes come with the listing (no file is opened for them): they decide which files are
    // read whole.
    let sized = expand_paths(paths)?;
    progress.total(sized.iter().map(|(_, size)| size).sum());
    let mut known = ingested_hashes(lake)?;
    let mut state = RunState::new(lake, run_id.clone(), started)?;

    // Small files are read and parsed a batch at a time, in parallel, then taken in order.
    // Large ones stream.
    let mut batch: Vec<(PathBuf, usize)> = Vec::new();
    let mut batch_bytes = 0usize;
    for (path, size) in sized {
        let size = size as usize;
        if size > options.chunk_bytes {
            state.flush_small(std::mem::take(&mut batch), &mut known, options, progress)?;
            batch_bytes = 0;
            state.hash_and_stream(&path, &mut known, options, progress)?;
        } else {
            batch_bytes += size;
            batch.push((path, size));
            if batch_bytes > PARALLEL_BATCH {
                state.flush_small(std::mem::take(&mut batch), &mut known, options, progress)?;
                batch_bytes = 0;
            }
        }
    }
    state.flush_small(batch, &mut known, options, progress)?;
    state.finish()
}

/// A small file after its one read.
enum SmallFile {
    /// Read and hashed.
    Read { sha256: String, content: Vec<u8> },
    /// Gzipped, or grown past the chunk size since its size was taken: it streams.
    Streams,
}

/// What becomes of a small file of a batch, decided in path order.
enum Fate {
    /// Already in the lake or met earlier in this run: it adds nothing.
    Duplicate { sha256: String, bytes: u64 },
    /// Streamed where it comes.
    Streams,
    /// Parsed with the files around it.
    Parsed,
}

/// A small file to parse.
struct ToParse {
    path: PathBuf,
    sha256: String,
    content: Vec<u8>,
}

/// A small file parsed: its outcome, its rejections. Its rows are in its group's.
struct ParsedFile {
    path: PathBuf,
    sha256: String,
    bytes: u64,
    format: Option<Format>,
    read: u64,
    rejected: Vec<readers::RejectedRecord>,
}

/// Per-run state: the open transaction, keyed rows folded until the end, the audit chain head.
struct RunState<'l> {
    txn: crate::lake::Txn<'l>,
    report: IngestReport,
    started: Ts,
    chain_seq: i64,
    chain_hash: String,
    deployments: KeyedRows<crate::schema::Deployment>,
    incidents: KeyedRows<crate::schema::Incident>,
    slos: Vec<crate::schema::Slo>,
    service_edges: Vec<crate::schema::ServiceEdge>,
    ingested: Vec<IngestedFile>,
    /// Rows taken but not yet written: small files are many, writes are better few.
    pending: Records,
    pending_rejections: Vec<Rejection>,
}

/// Rows of an entity table, folded by key in first-seen order.
struct KeyedRows<R> {
    order: Vec<String>,
    rows: HashMap<String, R>,
}

impl<R: Row> KeyedRows<R> {
    fn new() -> Self {
        KeyedRows {
            order: Vec::new(),
            rows: HashMap::new(),
        }
    }

    fn add(&mut self, row: R) {
        let key = row.key().unwrap_or_default();
        match self.rows.get_mut(&key) {
            Some(existing) => existing.merge(row),
            None => {
                self.order.push(key.clone());
                self.rows.insert(key, row);
            }
        }
    }

    fn into_rows(mut self) -> Vec<R> {
        self.order
            .iter()
            .filter_map(|k| self.rows.remove(k))
            .collect()
    }
}

impl<'l> RunState<'l> {
    fn new(lake: &'l Lake, run_id: String, started: Ts) -> Result<Self> {
        let (chain_seq, chain_hash) = audit_chain_head(lake)?;
        Ok(RunState {
            txn: lake.begin()?,
            report: IngestReport {
                run_id,
                ..Default::default()
            },
            started,
            chain_seq,
            chain_hash,
            deployments: KeyedRows::new(),
            incidents: KeyedRows::new(),
            slos: Vec::new(),
            service_edges: Vec::new(),
            ingested: Vec::new(),
            pending: Records::default(),
            pending_rejections: Vec::new(),
        })
    }

    fn flush_small(
        &mut self,
        batch: Vec<(PathBuf, usize)>,
        known: &mut HashSet<String>,
        options: &IngestOptions,
        progress: &dyn Progress,
    ) -> Result<()> {
        let read: Vec<(PathBuf, Result<SmallFile>)> = batch
            .into_par_iter()
            .map(|(path, size)| {
                let file = read_small(&path, size, options);
                (path, file)
            })
            .collect();
        // In path order: which files add nothing, which stream, and the groups of the rest.
        // A group ends at GROUP_BYTES and where a file streams, so that rows stay in path order.
        let mut fates = Vec::with_capacity(read.len());
        let mut groups: Vec<Vec<ToParse>> = Vec::new();
        let mut group_bytes = 0;
        for (path, file) in read {
            match file? {
                SmallFile::Streams => {
                    fates.push((path, Fate::Streams));
                    group_bytes = GROUP_BYTES;
                }
                SmallFile::Read { sha256, content } if !known.insert(sha256.clone()) => {
                    let bytes = content.len() as u64;
                    fates.push((path, Fate::Duplicate { sha256, bytes }));
                }
                SmallFile::Read { sha256, content } => {
                    if groups.is_empty() || group_bytes >= GROUP_BYTES {
                        groups.push(Vec::new());
                        group_bytes = 0;
                    }
                    group_bytes += content.len();
                    fates.push((path.clone(), Fate::Parsed));
                    let group = groups.last_mut().expect("pushed above");
                    group.push(ToParse {
                        path,
                        sha256,
                        content,
                    });
                }
            }
        }
        let parsed: Vec<(Vec<ParsedFile>, Records)> = groups
            .into_par_iter()
            .map(|files| parse_group(files, options))
            .collect();
        // Each parsed file in order, the last of a group carrying the group's rows.
        let mut parsed = parsed.into_iter().flat_map(|(files, rows)| {
            let last = files.len() - 1;
            let mut rows = Some(rows);
            files
                .into_iter()
                .enumerate()
                .map(move |(i, file)| (file, if i == last { rows.take() } else { None }))
        });
        for (path, fate) in fates {
            match fate {
                Fate::Streams => self.hash_and_stream(&path, known, options, progress)?,
                Fate::Duplicate { sha256, bytes } => {
                    progress.advance(bytes);
                    self.skip_duplicate(path, sha256, bytes);
                }
                Fate::Parsed => {
                    let (file, rows) = parsed.next().expect("one parsed file per file to parse");
                    progress.advance(file.bytes);
                    self.report.source_bytes += file.bytes;
                    let rejected = file.rejected.len() as u64;
                    self.take_rejections(&file.path, &file.sha256, file.format, file.rejected);
                    self.record_file(
                        file.path,
                        file.sha256,
                        file.format,
                        file.bytes,
                        file.read,
                        rejected,
                    );
                    if let Some(rows) = rows {
                        self.take_rows(rows)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Hashes a large or gzipped file, then streams it unless it is a duplicate.
    fn hash_and_stream(
        &mut self,
        path: &Path,
        known: &mut HashSet<String>,
        options: &IngestOptions,
        progress: &dyn Progress,
    ) -> Result<()> {
        let FileHash { sha256, bytes } = sha256_file(path)?;
        if !known.insert(sha256.clone()) {
            progress.advance(bytes);
            self.skip_duplicate(path.to_path_buf(), sha256, bytes);
            return Ok(());
        }
        self.ingest_large(path, &sha256, bytes, options, progress)
    }

    fn skip_duplicate(&mut self, path: PathBuf, sha256: String, bytes: u64) {
        tracing::debug!(path = %path.display(), "already ingested: skipped");
        self.report.files.push(FileOutcome {
            path,
            sha256,
            format: None,
            status: FileStatus::Duplicate,
            read: 0,
            rejected: 0,
            bytes,
        });
    }

    fn ingest_large(
        &mut self,
        path: &Path,
        sha256: &str,
        bytes: u64,
        options: &IngestOptions,
        progress: &dyn Progress,
    ) -> Result<()> {
        let mut reader = open_decompressed(path)?;
        let mut head = vec![0u8; 64 * 1024];
        let detected = match read_up_to(&mut reader, &mut head) {
            Ok(len) => {
                head.truncate(len);
                options
                    .format
                    .map(Ok)
                    .unwrap_or_else(|| readers::detect(&head))
            }
            Err(e) => {
                head.clear();
                Err(format!("unreadable file: {e}"))
            }
        };
        let format = match detected {
            Ok(format) => format,
            Err(reason) => {
                let mut records = Records::default();
                records.reject(None, Some(0), reason, &head);
                return self.take_file(path, sha256, None, bytes, records);
            }
        };
        if !format.is_line_oriented() {
            // Whole-document formats cannot be split; read the file whole.
            let mut all = head;
            reader
                .read_to_end(&mut all)
                .map_err(|e| Error::io(path, e))?;
            let mut records = Records::default();
            parse_whole(format, path, &all, sha256, options, &mut records);
            self.report.source_bytes += all.len() as u64;
            self.take_file(path, sha256, Some(format), bytes, records)?;
            progress.advance(bytes);
            return Ok(());
        }
        let modified = modified_at(format, path);
        let (mut read, mut rejected) = (0u64, 0u64);
        let mut carry = head;
        let mut line = 1i64;
        let mut offset = 0i64;
        let mut done = false;
        // Chunk buffers parsed before, kept for the next chunks: a fresh multi-megabyte buffer
        // per chunk cost the kernel a page fault and a zeroed page per 4 KB (7% of audit ingest).
        let mut spare: Vec<Vec<u8>> = Vec::new();
        while !done {
            // Gather up to one chunk per thread to parse in parallel.
            let mut chunks: Vec<(Vec<u8>, i64, i64)> = Vec::new();
            while chunks.len() < rayon::current_num_threads().max(1) && !done {
                let mut buf = if carry.len() >= options.chunk_bytes {
                    // A line longer than a chunk goes on growing in its own buffer.
                    std::mem::take(&mut carry)
                } else {
                    let mut buf = spare.pop().unwrap_or_default();
                    buf.clear();
                    buf.append(&mut carry);
                    buf
                };
                let start = buf.len();
                let room = if start < options.chunk_bytes {
                    options.chunk_bytes
                } else {
                    start + options.chunk_bytes
                };
                buf.resize(room, 0);
                let n = match read_up_to(&mut reader, &mut buf[start..]) {
                    Ok(n) => n,
                    Err(e) => {
                        // A stream that breaks part-way (a damaged gzip member) keeps what was
                        // read and records the rest of the file as one rejection.
                        buf.truncate(start);
                        let mut records = Records::default();
                        records.reject(
                            None,
                            Some(offset + buf.len() as i64),
                            format!("file unreadable from here on: {e}"),
                            b"",
                        );
                        read += 1;
                        rejected += 1;
                        self.take(path, sha256, Some(format), records)?;
                        done = true;
                        if !buf.is_empty() {
                            chunks.push((buf, line, offset));
                        }
                        break;
                    }
                };
                buf.truncate(start + n);
                if n == 0 {
                    done = true;
                } else {
                    match memchr::memrchr(b'\n', &buf) {
                        Some(last_newline) => {
                            carry.extend_from_slice(&buf[last_newline + 1..]);
                            buf.truncate(last_newline + 1);
                        }
                        None => {
                            // A line longer than the chunk: keep reading until it ends.
                            carry = buf;
                            continue;
                        }
                    }
                }
                if !buf.is_empty() {
                    let lines_in = memchr::memchr_iter(b'\n', &buf).count() as i64;
                    let len = buf.len() as i64;
                    chunks.push((buf, line, offset));
                    line += lines_in;
                    offset += len;
                }
            }
            let context = &options.context;
            let parsed: Vec<Records> = chunks
                .par_iter()
                .map(|(bytes, first_line, first_offset)| {
                    let chunk = Chunk {
                        bytes,
                        first_line: *first_line,
                        first_offset: *first_offset,
                        modified_at: modified,
                        source_sha256: sha256,
                        context,
                    };
                    let mut records = Records::default();
                    readers::read_chunk(format, &chunk, &mut records);
                    records
                })
                .collect();
            for (records, (bytes, _, _)) in parsed.into_iter().zip(chunks) {
                read += records.read;
                rejected += records.rejected.len() as u64;
                self.report.source_bytes += bytes.len() as u64;
                progress.advance(bytes.len() as u64);
                self.take(path, sha256, Some(format), records)?;
                spare.push(bytes);
            }
        }
        self.record_file(
            path.to_path_buf(),
            sha256.to_string(),
            Some(format),
            bytes,
            read,
            rejected,
        );
        Ok(())
    }

    /// Takes everything read from one whole file and records the file in `_ingested`.
    fn take_file(
        &mut self,
        path: &Path,
        sha256: &str,
        format: Option<Format>,
        bytes: u64,
        records: Records,
    ) -> Result<()> {
        let (read, rejected) = (records.read, records.rejected.len() as u64);
        self.take(path, sha256, format, records)?;
        self.record_file(
            path.to_path_buf(),
            sha256.to_string(),
            format,
            bytes,
            read,
            rejected,
        );
        Ok(())
    }

    /// Takes a file's (or chunk's) rows and rejections; they are written in batches.
    fn take(
        &mut self,
        path: &Path,
        sha256: &str,
        format: Option<Format>,
        mut records: Records,
    ) -> Result<()> {
        let rejected = std::mem::take(&mut records.rejected);
        self.take_rejections(path, sha256, format, rejected);
        self.take_rows(records)
    }

    fn take_rejections(
        &mut self,
        path: &Path,
        sha256: &str,
        format: Option<Format>,
        rejected: Vec<readers::RejectedRecord>,
    ) {
        for rejected in rejected {
            let row = self.rejection_row(path, sha256, format, rejected);
            self.pending_rejections.push(row);
        }
    }

    fn take_rows(&mut self, records: Records) -> Result<()> {
        self.pending.append(records);
        if self.pending.rows() as usize + self.pending_rejections.len() >= FLUSH_ROWS {
            self.flush_pending()?;
        }
        Ok(())
    }

    /// Writes the rows taken so far. Entity tables (deployments, incidents) and snapshots wait
    /// for the end of the run, so rows of one entity fold into one.
    fn flush_pending(&mut self) -> Result<()> {
        // The pending vectors are emptied, not freed: refilling memory already in use is cheaper
        // than faulting in fresh pages at every flush.
        let mut pending = std::mem::take(&mut self.pending);
        self.write_appended(&pending.changes)?;
        let test_results = pending.test_results.take_batches();
        let test_result_rows: usize = test_results.iter().map(|b| b.num_rows()).sum();
        if test_result_rows > 0 {
            *self.report.rows.entry(TestResult::TABLE.name).or_default() += test_result_rows as u64;
            self.txn
                .append_dated_batches::<TestResult>(&test_results, "started_at")?;
        }
        self.write_appended(&pending.spans)?;
        self.write_appended(&pending.metric_points)?;
        for deployment in pending.deployments.drain(..) {
            self.deployments.add(deployment);
        }
        for incident in pending.incidents.drain(..) {
            self.incidents.add(incident);
        }
        self.slos.append(&mut pending.slos);
        self.service_edges.append(&mut pending.service_edges);
        let chained: Vec<AuditEvent> = pending
            .audit
            .drain(..)
            .map(|draft| self.chain(draft))
            .collect();
        self.write_appended(&chained)?;
        pending.clear();
        self.pending = pending;
        let rejections = std::mem::take(&mut self.pending_rejections);
        self.txn.write(&rejections, WriteMode::Append)
    }

    fn rejection_row(
        &self,
        path: &Path,
        sha256: &str,
        format: Option<Format>,
        r: readers::RejectedRecord,
    ) -> Rejection {
        let is_raw_truncated = r.raw.len() > RAW_LIMIT;
        let mut raw = r.raw;
        if is_raw_truncated {
            let mut cut = RAW_LIMIT;
            while !raw.is_char_boundary(cut) {
                cut -= 1;
            }
            raw.truncate(cut);
        }
        Rejection {
            source_path: path.display().to_string(),
            source_sha256: sha256.to_string(),
            format: format.map_or("unknown", Format::name).to_string(),
            line: r.line,
            byte_offset: r.byte_offset,
            reason: r.reason,
            raw,
            is_raw_truncated,
            rejected_at: self.started,
            run_id: self.report.run_id.clone(),
        }
    }

    fn write_appended<R: Row>(&mut self, rows: &[R]) -> Result<()> {
        if !rows.is_empty() {
            *self.report.rows.entry(R::TABLE.name).or_default() += rows.len() as u64;
        }
        self.txn.write(rows, WriteMode::Append)
    }

    fn chain(&mut self, draft: AuditDraft) -> AuditEvent {
        self.chain_seq += 1;
        let hash = chain_hash(&self.chain_hash, &draft.canonical);
        let prev_hash = std::mem::replace(&mut self.chain_hash, hash.clone());
        AuditEvent {
            event_id: draft.event_id,
            at: draft.at,
            actor: draft.actor,
            action: draft.action,
            resource: draft.resource,
            outcome: draft.outcome,
            source: draft.source,
            scope: draft.scope,
            seq: self.chain_seq,
            prev_hash,
            hash,
            canonical: draft.canonical,
        }
    }

    fn record_file(
        &mut self,
        path: PathBuf,
        sha256: String,
        format: Option<Format>,
        bytes: u64,
        read: u64,
        rejected: u64,
    ) {
        tracing::debug!(path = %path.display(), format = format.map_or("unknown", Format::name), read, rejected, "file taken");
        self.report.read += read;
        self.report.rejected += rejected;
        self.report.accepted += read - rejected;
        self.ingested.push(IngestedFile {
            source_sha256: sha256.clone(),
            source_path: path.display().to_string(),
            format: format.map_or("unknown", Format::name).to_string(),
            bytes: bytes as i64,
            records_read: read as i64,
            records_accepted: (read - rejected) as i64,
            records_rejected: rejected as i64,
            ingested_at: self.started,
            run_id: self.report.run_id.clone(),
        });
        self.report.files.push(FileOutcome {
            path,
            sha256,
            format,
            status: FileStatus::Ingested,
            read,
            rejected,
            bytes,
        });
    }

    fn finish(mut self) -> Result<IngestReport> {
        self.flush_pending()?;
        let deployments = std::mem::replace(&mut self.deployments, KeyedRows::new()).into_rows();
        self.write_appended(&deployments)?;
        let incidents = std::mem::replace(&mut self.incidents, KeyedRows::new()).into_rows();
        self.write_appended(&incidents)?;
        for (table, rows) in [
            ("slos", self.slos.len()),
            ("service_edges", self.service_edges.len()),
        ] {
            if rows > 0 {
                self.report.rows.insert(table, rows as u64);
            }
        }
        self.txn.write(&self.slos, WriteMode::Upsert)?;
        self.txn.write(&self.service_edges, WriteMode::Upsert)?;
        let outputs = self.txn.seal()?;
        self.txn.write(&self.ingested, WriteMode::Append)?;
        let finished = Ts(chrono::Utc::now().timestamp_micros());
        let run = JobRun {
            run_id: self.report.run_id.clone(),
            job: "ingest".into(),
            partition: "all".into(),
            inputs_sha256: self.report.files.iter().map(|f| f.sha256.clone()).collect(),
            outputs,
            rows_read: self.report.read as i64,
            rows_written: self.report.rows.values().sum::<u64>() as i64,
            rows_rejected: self.report.rejected as i64,
            status: "succeeded".into(),
            message: None,
            started_at: self.started,
            finished_at: finished,
        };
        self.txn.write(&[run], WriteMode::Append)?;
        self.report.written = self.txn.commit()?;
        tracing::info!(
            run = %self.report.run_id,
            files = self.report.files.len(),
            read = self.report.read,
            accepted = self.report.accepted,
            rejected = self.report.rejected,
            "ingest committed"
        );
        Ok(self.report)
    }
}

/// sha256 over the previous hash (hex) and the record's canonical bytes.
pub fn chain_hash(prev_hash: &str, canonical: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(canonical.as_bytes());
    hex_digest(hasher)
}

/// A finished sha256 as 64 lowercase hex digits. `hex::encode` builds its string a char at a
/// time: 4% of audit ingest, which writes two digests per record.
fn hex_digest(hasher: Sha256) -> String {
    let mut digits = [0u8; 64];
    hex::encode_to_slice(hasher.finalize(), &mut digits).expect("64 digits for 32 bytes");
    std::str::from_utf8(&digits)
        .expect("hex digits are ASCII")
        .to_owned()
}

/// Reads a small file once and hashes those bytes. Only a file that cannot be opened or read
/// fails the run, as it would when hashed; problems with the content are for the parse.
fn read_small(path: &Path, size: usize, options: &IngestOptions) -> Result<SmallFile> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    // Sized from the size already taken, plus one byte to notice a file that grew since.
    // Through `take`, `read_to_end` neither zeroes the buffer first nor looks the size up
    // again, as it does on a `File`.
    let limit = size.min(options.chunk_bytes) + 1;
    let mut content = Vec::with_capacity(limit);
    (&mut file)
        .take(limit as u64)
        .read_to_end(&mut content)
        .map_err(|e| Error::io(path, e))?;
    if content.len() == limit || content.starts_with(&GZIP_MAGIC) {
        return Ok(SmallFile::Streams);
    }
    let sha256 = hex_digest(Sha256::new_with_prefix(&content));
    Ok(SmallFile::Read { sha256, content })
}

/// Parses consecutive small files, one after another: each file's test results go on filling
/// the same columns, which reach the writer as one batch. Returns each file's outcome and
/// rejections, in order, and the rows of them all.
fn parse_group(files: Vec<ToParse>, options: &IngestOptions) -> (Vec<ParsedFile>, Records) {
    let mut rows = Records::default();
    rows.test_results
        .expect_reports(files.iter().map(|f| f.content.len()).sum());
    let mut parsed = Vec::with_capacity(files.len());
    for file in files {
        let mut records = Records {
            test_results: std::mem::take(&mut rows.test_results),
            ..Records::default()
        };
        let format = parse_small(&file, options, &mut records);
        let rejected = std::mem::take(&mut records.rejected);
        let read = records.read;
        rows.append(records);
        parsed.push(ParsedFile {
            path: file.path,
            sha256: file.sha256,
            bytes: file.content.len() as u64,
            format,
            read,
            rejected,
        });
    }
    (parsed, rows)
}

/// Parses a small file into `records`, in the format given or detected from its head, and
/// returns that format; a file of no known format is one rejection.
fn parse_small(file: &ToParse, options: &IngestOptions, records: &mut Records) -> Option<Format> {
    let head = &file.content[..file.content.len().min(64 * 1024)];
    match options
        .format
        .map(Ok)
        .unwrap_or_else(|| readers::detect(head))
    {
        Ok(format) => {
            parse_whole(
                format,
                &file.path,
                &file.content,
                &file.sha256,
                options,
                records,
            );
            Some(format)
        }
        Err(reason) => {
            records.reject(None, Some(0), reason, readers::truncate_raw(&file.content));
            None
        }
    }
}

/// Parses the whole of a file into `records`.
fn parse_whole(
    format: Format,
    path: &Path,
    bytes: &[u8],
    sha256: &str,
    options: &IngestOptions,
    records: &mut Records,
) {
    let modified = modified_at(format, path);
    let chunk = Chunk::whole_file(bytes, sha256, modified, &options.context);
    readers::read_chunk(format, &chunk, records);
}

/// When the file was last written, for formats whose records may carry no time; the others
/// do not need the extra system call.
fn modified_at(format: Format, path: &Path) -> Option<Ts> {
    if !format.needs_file_time() {
        return None;
    }
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    let since = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(Ts(since.as_micros() as i64))
}

/// Opens a file, transparently gunzipping it when it starts with the gzip magic bytes.
fn open_decompressed(path: &Path) -> Result<Box<dyn Read + Send>> {
    let mut file =
        BufReader::with_capacity(64 * 1024, File::open(path).map_err(|e| Error::io(path, e))?);
    let magic = {
        use std::io::BufRead;
        file.fill_buf().map_err(|e| Error::io(path, e))?.get(..2) == Some(&GZIP_MAGIC[..])
    };
    Ok(if magic {
        Box::new(flate2::bufread::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

fn read_up_to(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The magic bytes that open a gzip file.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A source file's identity, from one pass over its bytes as stored.
struct FileHash {
    sha256: String,
    bytes: u64,
}

fn sha256_file(path: &Path) -> Result<FileHash> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok(FileHash {
        sha256: hex_digest(hasher),
        bytes: total,
    })
}

/// Every file under the given paths with its size, sorted, each once.
fn expand_paths(paths: &[PathBuf]) -> Result<Vec<(PathBuf, u64)>> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::Usage(format!("{}: no such file or folder", path.display()))
            }
            _ => Error::io(path, e),
        })?;
        if meta.is_dir() {
            walk(path, &mut files)?;
        } else {
            files.push((path.clone(), meta.len()));
        }
    }
    // Already in order unless several paths were given.
    if !files.is_sorted() {
        files.sort();
    }
    files.dedup_by(|a, b| a.0 == b.0);
    Ok(files)
}

/// Lists a folder's files with their sizes, recursively, in path order. The folder entry's
/// own type and metadata are used where they can be: looking each path up again from the root
/// cost a tenth of the ingest of many small files.
fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64)>) -> Result<()> {
    let mut entries = std::fs::read_dir(dir)
        .and_then(|entries| entries.collect::<std::io::Result<Vec<_>>>())
        .map_err(|e| Error::io(dir, e))?;
    // By name within each folder is path order: the list then needs no sort of whole paths,
    // which compared them component by component.
    entries.sort_by_cached_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let file_type = entry.file_type().map_err(|e| Error::io(&path, e))?;
        if file_type.is_dir() {
            walk(&path, out)?;
            continue;
        }
        let meta = if file_type.is_symlink() {
            // A link is followed, to a folder or a file.
            std::fs::metadata(&path)
        } else {
            entry.metadata()
        }
        .map_err(|e| Error::io(&path, e))?;
        if meta.is_dir() {
            walk(&path, out)?;
        } else {
            out.push((path, meta.len()));
        }
    }
    Ok(())
}

/// The sha256 of every file already in `_ingested`.
fn ingested_hashes(lake: &Lake) -> Result<HashSet<String>> {
    let mut hashes = HashSet::new();
    for part in lake.parts(&IngestedFile::TABLE)? {
        for batch in crate::lake::read_parquet_columns(&part, &["source_sha256"])? {
            let column = batch
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| Error::SchemaMismatch {
                    table: "_ingested".into(),
                    reason: "source_sha256 is not text".into(),
                })?;
            hashes.extend(column.iter().flatten().map(str::to_string));
        }
    }
    Ok(hashes)
}

/// The last sequence number and hash of the audit chain, or the genesis.
pub fn audit_chain_head(lake: &Lake) -> Result<(i64, String)> {
    let mut head = (0i64, GENESIS_HASH.to_string());
    for part in lake.parts(&AuditEvent::TABLE)? {
        for batch in crate::lake::read_parquet_columns(&part, &["seq", "hash"])? {
            let seq = batch.column(0).as_any().downcast_ref::<Int64Array>();
            let hash = batch.column(1).as_any().downcast_ref::<StringArray>();
            let (Some(seq), Some(hash)) = (seq, hash) else {
                return Err(Error::SchemaMismatch {
                    table: "audit_events".into(),
                    reason: "seq or hash has the wrong type".into(),
                });
            };
            for i in 0..seq.len() {
                if seq.value(i) > head.0 {
                    head = (seq.value(i), hash.value(i).to_string());
                }
            }
        }
    }
    Ok(head)
}
