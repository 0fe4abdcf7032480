//! Source-format readers: bytes of one file (or one chunk of lines of it) in, lake rows and
//! rejections out.
//!
//! [`detect`] names a file's format from its content. Each reader turns a [`Chunk`] into
//! [`Records`]: rows for the lake tables plus one [`RejectedRecord`] for each record it could
//! not take, so that records read = accepted + rejected holds for every file. A file that is not
//! of the format at all (corrupt, foreign) is one rejected record, with the reason.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde_json::Value;

pub use columns::{TestResultColumns, TestResultRef};

use crate::schema::{Change, Deployment, Incident, MetricPoint, ServiceEdge, Slo, Span, Ts};

pub mod audit;
pub mod catalog;
pub mod cdevents;
pub mod columns;
pub mod commit_guru;
pub mod github;
pub mod json;
pub mod junit;
pub mod openslo;
pub mod otlp;
pub mod prometheus;

/// A source format Maestro reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    /// CDEvents JSON, bare or in a CloudEvents envelope.
    CdEvents,
    /// JUnit/xUnit XML.
    Junit,
    /// OTLP JSON traces (`resourceSpans`).
    OtlpTraces,
    /// OTLP JSON metrics (`resourceMetrics`).
    OtlpMetrics,
    /// Prometheus text exposition (and OpenMetrics text).
    Prometheus,
    /// Kubernetes `audit.k8s.io` Event JSON lines.
    K8sAudit,
    /// AWS CloudTrail `{"Records": [...]}` files.
    CloudTrail,
    /// GitHub `deployment` and `deployment_status` webhook payloads.
    GithubDeployment,
    /// OpenSLO v1 YAML.
    OpenSlo,
    /// Commit Guru change CSV with the 14 just-in-time metrics.
    CommitGuruCsv,
    /// Backstage `catalog-info.yaml` (Components and their `dependsOn`).
    BackstageCatalog,
}

impl Format {
    /// Every format, in the order detection tries them.
    pub const ALL: [Format; 11] = [
        Format::CdEvents,
        Format::Junit,
        Format::OtlpTraces,
        Format::OtlpMetrics,
        Format::Prometheus,
        Format::K8sAudit,
        Format::CloudTrail,
        Format::GithubDeployment,
        Format::OpenSlo,
        Format::CommitGuruCsv,
        Format::BackstageCatalog,
    ];

    /// The name used on the command line and in the ledgers.
    pub fn name(self) -> &'static str {
        match self {
            Format::CdEvents => "cdevents",
            Format::Junit => "junit",
            Format::OtlpTraces => "otlp-traces",
            Format::OtlpMetrics => "otlp-metrics",
            Format::Prometheus => "prometheus",
            Format::K8sAudit => "k8s-audit",
            Format::CloudTrail => "cloudtrail",
            Format::GithubDeployment => "github-deployment",
            Format::OpenSlo => "openslo",
            Format::CommitGuruCsv => "commit-guru-csv",
            Format::BackstageCatalog => "backstage-catalog",
        }
    }

    /// Whether records are independent lines, so a large file can be read in chunks of lines.
    pub fn is_line_oriented(self) -> bool {
        matches!(
            self,
            Format::OtlpTraces | Format::OtlpMetrics | Format::K8sAudit | Format::Prometheus
        )
    }

    /// Whether records may carry no time of their own, so the file's modification time is the
    /// fallback (a Prometheus scrape without timestamps).
    pub fn needs_file_time(self) -> bool {
        matches!(self, Format::Prometheus)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Format::ALL.iter().map(|f| f.name()).collect();
                format!("unknown format {s:?}; known formats: {}", names.join(", "))
            })
    }
}

/// What a test report does not say about itself, given on the command line.
#[derive(Debug, Clone, Default)]
pub struct ReportContext {
    /// The change the tests ran for.
    pub change_id: Option<String>,
    /// The CI run.
    pub run_id: Option<String>,
    /// The service under test.
    pub service: Option<String>,
    /// When the tests ran.
    pub at: Option<Ts>,
}

/// A piece of one source file handed to a reader.
#[derive(Debug, Clone, Copy)]
pub struct Chunk<'a> {
    /// The (decompressed) bytes.
    pub bytes: &'a [u8],
    /// 1-based line number of the chunk's first line in the file.
    pub first_line: i64,
    /// Byte offset of the chunk in the file.
    pub first_offset: i64,
    /// When the source file was last modified, for formats whose records carry no time.
    pub modified_at: Option<Ts>,
    /// sha256 of the whole source file, for ids derived from it.
    pub source_sha256: &'a str,
    /// Command-line context for formats that lack it.
    pub context: &'a ReportContext,
}

impl<'a> Chunk<'a> {
    /// A chunk holding a whole file.
    pub fn whole_file(
        bytes: &'a [u8],
        source_sha256: &'a str,
        modified_at: Option<Ts>,
        context: &'a ReportContext,
    ) -> Self {
        Chunk {
            bytes,
            first_line: 1,
            first_offset: 0,
            modified_at,
            source_sha256,
            context,
        }
    }

    /// Iterates the chunk's non-blank lines with their line number and byte offset.
    pub fn lines(&self) -> impl Iterator<Item = (i64, i64, &'a [u8])> + use<'a> {
        let mut offset = 0usize;
        let base_line = self.first_line;
        let base_offset = self.first_offset;
        let bytes: &'a [u8] = self.bytes;
        // memchr finds each newline many bytes at a time; the last line may lack one.
        let ends = memchr::memchr_iter(b'\n', bytes).chain(std::iter::once(bytes.len()));
        ends.enumerate().filter_map(move |(i, end)| {
            let at = offset;
            let line = bytes.get(at..end)?;
            offset = end + 1;
            let trimmed = line.strip_suffix(b"\r").unwrap_or(line);
            if trimmed.iter().all(|b| b.is_ascii_whitespace()) {
                None
            } else {
                Some((base_line + i as i64, base_offset + at as i64, trimmed))
            }
        })
    }
}

/// A record a reader could not take.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedRecord {
    /// 1-based line, where the format has lines.
    pub line: Option<i64>,
    /// Byte offset in the decompressed file.
    pub byte_offset: Option<i64>,
    /// Why it was refused.
    pub reason: String,
    /// The record's text.
    pub raw: String,
}

/// An audit record before the lake assigns its place in the hash chain.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditDraft {
    /// Producer's id of the event.
    pub event_id: String,
    /// When it happened.
    pub at: Ts,
    /// Who did it.
    pub actor: String,
    /// What was done (verb or API call).
    pub action: String,
    /// What it was done to.
    pub resource: String,
    /// success, failure or unknown.
    pub outcome: String,
    /// kubernetes or cloudtrail.
    pub source: String,
    /// Namespace or region.
    pub scope: Option<String>,
    /// The record as canonical JSON.
    pub canonical: String,
}

/// What readers produce: rows per table, and rejections.
#[derive(Debug, Default)]
pub struct Records {
    /// Records seen (each accepted or rejected).
    pub read: u64,
    /// `changes` rows.
    pub changes: Vec<Change>,
    /// `deployments` rows.
    pub deployments: Vec<Deployment>,
    /// `incidents` rows.
    pub incidents: Vec<Incident>,
    /// `test_results` rows, in columns.
    pub test_results: TestResultColumns,
    /// `spans` rows.
    pub spans: Vec<Span>,
    /// `metric_points` rows.
    pub metric_points: Vec<MetricPoint>,
    /// Audit records, to be chained.
    pub audit: Vec<AuditDraft>,
    /// `slos` rows.
    pub slos: Vec<Slo>,
    /// `service_edges` rows.
    pub service_edges: Vec<ServiceEdge>,
    /// Records refused.
    pub rejected: Vec<RejectedRecord>,
}

impl Records {
    /// Records accepted: read minus rejected.
    pub fn accepted(&self) -> u64 {
        self.read - self.rejected.len() as u64
    }

    /// Rows across every table.
    pub fn rows(&self) -> u64 {
        (self.changes.len()
            + self.deployments.len()
            + self.incidents.len()
            + self.test_results.len()
            + self.spans.len()
            + self.metric_points.len()
            + self.audit.len()
            + self.slos.len()
            + self.service_edges.len()) as u64
    }

    /// Counts a record and notes it as rejected.
    pub fn reject(
        &mut self,
        line: Option<i64>,
        byte_offset: Option<i64>,
        reason: impl Into<String>,
        raw: &[u8],
    ) {
        self.read += 1;
        self.rejected.push(RejectedRecord {
            line,
            byte_offset,
            reason: reason.into(),
            raw: String::from_utf8_lossy(raw).into_owned(),
        });
    }

    /// Moves everything of `other` into `self`.
    pub fn append(&mut self, mut other: Records) {
        if self.rows() == 0 && self.rejected.is_empty() && other.rows() > 1024 {
            // Nothing to keep in order and much to move: take the other's vectors instead.
            other.read += self.read;
            *self = other;
            return;
        }
        self.read += other.read;
        self.changes.append(&mut other.changes);
        self.deployments.append(&mut other.deployments);
        self.incidents.append(&mut other.incidents);
        self.test_results.append(&mut other.test_results);
        self.spans.append(&mut other.spans);
        self.metric_points.append(&mut other.metric_points);
        self.audit.append(&mut other.audit);
        self.slos.append(&mut other.slos);
        self.service_edges.append(&mut other.service_edges);
        self.rejected.append(&mut other.rejected);
    }

    /// Empties every vector but keeps its memory, for the next rows.
    pub fn clear(&mut self) {
        self.read = 0;
        self.changes.clear();
        self.deployments.clear();
        self.incidents.clear();
        self.test_results = TestResultColumns::default();
        self.spans.clear();
        self.metric_points.clear();
        self.audit.clear();
        self.slos.clear();
        self.service_edges.clear();
        self.rejected.clear();
    }

    /// Drops every row and rejection of the chunk being read and keeps one rejection for the
    /// whole file: used when a file turns out corrupt part-way, so that none of it is half
    /// taken. Test results of earlier files, read into the same columns, stay.
    pub fn reject_whole_file(&mut self, reason: impl Into<String>, raw: &[u8]) {
        let mut test_results = std::mem::take(&mut self.test_results);
        test_results.drop_chunk();
        *self = Records {
            test_results,
            ..Records::default()
        };
        self.reject(None, Some(0), reason, raw);
    }
}

/// Reads one chunk of a file of a known format.
pub fn read_chunk(format: Format, chunk: &Chunk<'_>, out: &mut Records) {
    out.test_results.start_chunk();
    match format {
        Format::CdEvents => cdevents::read(chunk, out),
        Format::Junit => junit::read(chunk, out),
        Format::OtlpTraces => otlp::read_traces(chunk, out),
        Format::OtlpMetrics => otlp::read_metrics(chunk, out),
        Format::Prometheus => prometheus::read(chunk, out),
        Format::K8sAudit => audit::read_k8s(chunk, out),
        Format::CloudTrail => audit::read_cloudtrail(chunk, out),
        Format::GithubDeployment => github::read(chunk, out),
        Format::OpenSlo => openslo::read(chunk, out),
        Format::CommitGuruCsv => commit_guru::read(chunk, out),
        Format::BackstageCatalog => catalog::read(chunk, out),
    }
    // Readers find some problems in a first pass and others in a second: report in file order.
    out.rejected.sort_by_key(|r| (r.byte_offset, r.line));
}

/// Names the format of a file from its first bytes, or says why none fits.
pub fn detect(head: &[u8]) -> Result<Format, String> {
    // Most files say what they are in their first kilobyte; look further only when not.
    const QUICK_LOOK: usize = 1024;
    if head.len() > QUICK_LOOK
        && let Ok(format) = detect_in(&head[..QUICK_LOOK])
    {
        return Ok(format);
    }
    detect_in(head)
}

fn detect_in(head: &[u8]) -> Result<Format, String> {
    let text = match std::str::from_utf8(head) {
        Ok(text) => Cow::Borrowed(text),
        // Cut in the middle of a character, or not UTF-8 at all.
        Err(_) => String::from_utf8_lossy(head),
    };
    let body = text.trim_start_matches('\u{feff}').trim_start();
    if body.is_empty() {
        return Err("empty file".into());
    }
    if body.starts_with('<') {
        return if body.contains("<testsuite") || body.contains("<testcase") {
            Ok(Format::Junit)
        } else {
            Err(
                "XML, but not a JUnit/xUnit report (no <testsuites>, <testsuite> or <testcase>)"
                    .into(),
            )
        };
    }
    if body.starts_with('{') || body.starts_with('[') {
        return detect_json(body);
    }
    if body.contains("apiVersion: openslo/") || body.contains("apiVersion: \"openslo/") {
        return Ok(Format::OpenSlo);
    }
    if body.contains("apiVersion: backstage.io/") {
        return Ok(Format::BackstageCatalog);
    }
    let first_line = body.lines().next().unwrap_or_default();
    if first_line.contains("commit_hash") && first_line.contains(',') {
        return Ok(Format::CommitGuruCsv);
    }
    if prometheus::looks_like_exposition(body) {
        return Ok(Format::Prometheus);
    }
    Err("unrecognised content: not one of the formats Maestro reads".into())
}

fn detect_json(body: &str) -> Result<Format, String> {
    let has = |needle: &str| body.contains(needle);
    let has_key =
        |key: &str| body.contains(&format!("\"{key}\":")) || body.contains(&format!("\"{key}\" :"));
    if has("dev.cdevents.") {
        Ok(Format::CdEvents)
    } else if has_key("resourceSpans") {
        Ok(Format::OtlpTraces)
    } else if has_key("resourceMetrics") {
        Ok(Format::OtlpMetrics)
    } else if has_key("resourceLogs") {
        Err("OTLP logs: Maestro reads OTLP traces and metrics, not logs".into())
    } else if has_key("Records") && (has_key("eventSource") || has_key("eventName")) {
        Ok(Format::CloudTrail)
    } else if has_key("auditID") && (has("audit.k8s.io") || has_key("verb")) {
        Ok(Format::K8sAudit)
    } else if has_key("deployment") && (has_key("statuses_url") || has_key("deployment_status")) {
        Ok(Format::GithubDeployment)
    } else {
        Err("JSON, but not one of the formats Maestro reads (CDEvents, OTLP, Kubernetes audit, CloudTrail, GitHub deployment webhook)".into())
    }
}

/// Text of a JSON string field at a `/`-separated path, if it is a non-empty string.
pub(crate) fn json_str<'v>(value: &'v Value, pointer: &str) -> Option<&'v str> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// One JSON document of a chunk.
pub(crate) struct JsonDocument<'a, T> {
    /// Its line, when the chunk is JSON lines; a whole-file document has none.
    pub line: Option<i64>,
    /// Byte offset of the document in the file.
    pub offset: i64,
    /// The parsed document.
    pub value: T,
    /// Its text.
    pub raw: &'a [u8],
}

/// Calls `visit` with each element of a JSON chunk that is one value, an array of values, or
/// JSON lines, parsed as `T`, one at a time so a long file is never held parsed whole.
pub(crate) fn for_each_json_document<'a, T: serde::Deserialize<'a>>(
    chunk: &Chunk<'a>,
    out: &mut Records,
    mut visit: impl FnMut(&mut Records, JsonDocument<'a, T>),
) {
    let bytes = chunk.bytes;
    let whole = |value| JsonDocument {
        line: None,
        offset: chunk.first_offset,
        value,
        raw: bytes,
    };
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    if bytes.get(start) == Some(&b'[') {
        match parse_json::<Vec<T>>(bytes) {
            Ok(values) => values
                .into_iter()
                .for_each(|value| visit(out, whole(value))),
            Err(e) => {
                out.reject_whole_file(format!("invalid JSON array: {e}"), truncate_raw(bytes))
            }
        }
        return;
    }
    // JSON lines when the first line is a whole document; otherwise one document for the file.
    let mut lines = chunk.lines();
    let first_is_document = lines
        .next()
        .is_some_and(|(_, _, text)| parse_json::<serde::de::IgnoredAny>(text).is_ok());
    let has_more_lines = lines.next().is_some();
    if first_is_document && has_more_lines {
        for (line, offset, text) in chunk.lines() {
            match parse_json::<T>(text) {
                Ok(value) => visit(
                    out,
                    JsonDocument {
                        line: Some(line),
                        offset,
                        value,
                        raw: text,
                    },
                ),
                Err(e) => out.reject(Some(line), Some(offset), format!("invalid JSON: {e}"), text),
            }
        }
    } else {
        match parse_json::<T>(bytes) {
            Ok(value) => visit(out, whole(value)),
            Err(e) => out.reject_whole_file(format!("invalid JSON: {e}"), truncate_raw(bytes)),
        }
    }
}

/// Stack a JSON parse may need: sonic-rs recurses once per level of arrays and objects, up to
/// 255 levels, each some 20 KB of stack in an unoptimized build and under 1 KB in an optimized
/// one. The 2 MB of a test thread did not hold 128 levels.
const JSON_PARSE_STACK: usize = if cfg!(debug_assertions) {
    8 << 20
} else {
    1 << 20
};

/// Parses one JSON document, on a stack with room for its deepest nesting: on this thread's
/// when that has the room, else on one of its own. The error is sonic-rs's first line: what
/// is wrong, and where. (The lines after it quote the text around the fault, which the
/// rejection keeps whole.)
pub(crate) fn parse_json<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    stacker::maybe_grow(JSON_PARSE_STACK, JSON_PARSE_STACK, || {
        sonic_rs::from_slice(bytes)
    })
    .map_err(|e| {
        let message = e.to_string();
        message.lines().next().unwrap_or_default().to_string()
    })
}

/// The documents of a YAML stream, or `None` after rejecting the whole file.
pub(crate) fn yaml_documents(chunk: &Chunk<'_>, out: &mut Records) -> Option<Vec<Value>> {
    let text = match std::str::from_utf8(chunk.bytes) {
        Ok(text) => text,
        Err(e) => {
            out.reject_whole_file(
                format!("YAML is not valid UTF-8: {e}"),
                truncate_raw(chunk.bytes),
            );
            return None;
        }
    };
    match serde_saphyr::from_multiple(text) {
        Ok(documents) => Some(documents),
        Err(e) => {
            out.reject_whole_file(format!("invalid YAML: {e}"), truncate_raw(chunk.bytes));
            None
        }
    }
}

/// The raw text kept for a rejection is bounded; the sha256 and offset locate the rest. One
/// byte past the limit is kept so the ledger can tell that the text was cut.
pub(crate) fn truncate_raw(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.len().min(crate::ledger::RAW_LIMIT + 1)]
}

/// Finds a value among `candidates`, trying each key in turn.
pub(crate) fn first_str<'v>(value: &'v Value, pointers: &[&str]) -> Option<&'v str> {
    pointers.iter().find_map(|p| json_str(value, p))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn deep_json_parses_or_is_refused_on_a_small_stack() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let parsed = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || {
                let deepest = parse_json::<json::Json<'_>>(nested(254).as_bytes()).map(|_| ());
                let deeper = parse_json::<serde_json::Value>(nested(100_000).as_bytes());
                (deepest, deeper.map(|_| ()))
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(parsed.0, Ok(()));
        assert!(parsed.1.unwrap_err().contains("nesting"));
    }

    #[test]
    fn detects_formats_from_content() {
        let cases: [(&str, Result<Format, ()>); 10] = [
            ("<?xml version=\"1.0\"?><testsuites/>", Ok(Format::Junit)),
            ("<html></html>", Err(())),
            (
                r#"{"context":{"type":"dev.cdevents.service.deployed.0.3.0"}}"#,
                Ok(Format::CdEvents),
            ),
            (r#"{"resourceMetrics":[]}"#, Ok(Format::OtlpMetrics)),
            (r#"{"resourceSpans":[]}"#, Ok(Format::OtlpTraces)),
            (
                r#"{"Records":[{"eventSource":"s3"}]}"#,
                Ok(Format::CloudTrail),
            ),
            (
                "# HELP up Up.\n# TYPE up gauge\nup 1\n",
                Ok(Format::Prometheus),
            ),
            ("apiVersion: openslo/v1\nkind: SLO\n", Ok(Format::OpenSlo)),
            (
                "commit_hash,author_name,contains_bug\n",
                Ok(Format::CommitGuruCsv),
            ),
            ("", Err(())),
        ];
        for (text, expected) in cases {
            assert_eq!(detect(text.as_bytes()).map_err(|_| ()), expected, "{text}");
        }
    }

    #[test]
    fn appending_a_large_batch_to_nothing_keeps_every_row_and_count() {
        let row = |i: usize| AuditDraft {
            event_id: i.to_string(),
            at: Ts(0),
            actor: String::new(),
            action: String::new(),
            resource: String::new(),
            outcome: String::new(),
            source: String::new(),
            scope: None,
            canonical: String::new(),
        };
        let mut pending = Records {
            read: 3,
            ..Default::default()
        };
        let large = Records {
            read: 2000,
            audit: (0..2000).map(row).collect(),
            ..Default::default()
        };
        pending.append(large);
        pending.append(Records {
            read: 1,
            audit: vec![row(2000)],
            ..Default::default()
        });
        assert_eq!(pending.read, 2004);
        let ids: Vec<usize> = pending
            .audit
            .iter()
            .map(|d| d.event_id.parse().unwrap())
            .collect();
        assert_eq!(ids, (0..2001).collect::<Vec<_>>());
    }

    #[test]
    fn detection_looks_past_the_first_kilobytes_when_it_must() {
        let long_prolog = format!(
            "<?xml version=\"1.0\"?><!-- {} --><testsuite name=\"s\"/>",
            "x".repeat(10_000)
        );
        assert_eq!(detect(long_prolog.as_bytes()), Ok(Format::Junit));
    }

    #[test]
    fn format_names_round_trip() {
        for format in Format::ALL {
            assert_eq!(format.name().parse::<Format>(), Ok(format));
        }
        assert!("xml".parse::<Format>().is_err());
    }
}
