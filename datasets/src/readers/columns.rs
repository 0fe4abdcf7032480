//! Test results gathered column by column, then built into Arrow arrays.
//!
//! Test reports are the most numerous rows Maestro ingests, some hundred bytes of XML each.
//! As row structs of owned texts, the rows cost more in allocations and drops than the parse
//! itself, and so did Arrow builders per file, finished and joined before each write. Here
//! rows keep each text column as Arrow lays one out, values end to end, beside one fixed size
//! record per row (where its texts end, which are null, its numbers). The reports read one
//! after another go on filling the same buffers, which become the Arrow arrays as they are:
//! nothing is copied between the parse and the Parquet writer.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    ArrayRef, BooleanBufferBuilder, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::SchemaRef;

use crate::schema::{Row, TestResult, Ts};

/// One test result's values, borrowed from wherever the reader holds them.
// The fields are the columns of `test_results`, documented there.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy)]
pub struct TestResultRef<'a> {
    pub run_id: &'a str,
    pub change_id: Option<&'a str>,
    pub service: Option<&'a str>,
    pub suite: &'a str,
    pub test_id: &'a str,
    pub classname: Option<&'a str>,
    pub name: &'a str,
    pub file: Option<&'a str>,
    pub status: &'a str,
    pub duration_s: Option<f64>,
    pub attempt: i64,
    pub started_at: Ts,
    pub message: Option<&'a str>,
    pub source_format: &'a str,
}

impl TestResult {
    /// The row's values, borrowed.
    pub fn borrowed(&self) -> TestResultRef<'_> {
        TestResultRef {
            run_id: &self.run_id,
            change_id: self.change_id.as_deref(),
            service: self.service.as_deref(),
            suite: &self.suite,
            test_id: &self.test_id,
            classname: self.classname.as_deref(),
            name: &self.name,
            file: self.file.as_deref(),
            status: &self.status,
            duration_s: self.duration_s,
            attempt: self.attempt,
            started_at: self.started_at,
            message: self.message.as_deref(),
            source_format: &self.source_format,
        }
    }
}

/// `test_results` rows as readers gather them, in the order pushed.
#[derive(Debug, Default)]
pub struct TestResultColumns {
    /// Rows in order: reports read one after another fill one part; rows appended from
    /// elsewhere come as parts of their own.
    parts: Vec<Part>,
    /// Where the rows of the chunk being read begin.
    chunk_start: RowsMark,
}

/// The text columns, in schema order.
const TEXT_COLUMNS: usize = 11;
/// Text columns by position.
const RUN_ID: usize = 0;
const TEST_ID: usize = 4;

/// Where rows begin: to number the attempts of a report once it is read, or to drop the rows
/// of a chunk that turns out corrupt.
#[derive(Debug, Clone, Copy, Default)]
pub struct RowsMark {
    part: usize,
    row: usize,
}

/// Rows of consecutive reports, each text column laid out as Arrow lays it out: its values
/// end to end, to be moved into an array as they are.
#[derive(Debug, Default)]
struct Part {
    /// Rows the report just started is expected to hold, to make room for them when its first
    /// row comes; zero once room is made.
    expected_rows: usize,
    texts: [String; TEXT_COLUMNS],
    rows: Vec<PartRow>,
}

/// What a row holds besides its text: where its texts end, which are null, and the numbers.
#[derive(Debug, Clone, Copy)]
struct PartRow {
    text_ends: [u32; TEXT_COLUMNS],
    /// Bit `c` set: text column `c` is null.
    null_texts: u16,
    duration_s: Option<f64>,
    attempt: i64,
    started_at: i64,
}

impl Part {
    fn len(&self) -> usize {
        self.rows.len()
    }

    /// Row `row`'s text in `column`, or null.
    fn text(&self, row: usize, column: usize) -> Option<&str> {
        let this = &self.rows[row];
        if this.null_texts & (1 << column) != 0 {
            return None;
        }
        let start = match row {
            0 => 0,
            _ => self.rows[row - 1].text_ends[column] as usize,
        };
        Some(&self.texts[column][start..this.text_ends[column] as usize])
    }

    /// Whether a row of these texts keeps every column within Arrow's 32-bit offsets.
    fn has_room_for(&self, texts: &[Option<&str>; TEXT_COLUMNS]) -> bool {
        self.texts
            .iter()
            .zip(texts)
            .all(|(column, value)| column.len() + value.map_or(0, str::len) <= i32::MAX as usize)
    }

    fn push(&mut self, row: &TestResultRef<'_>) {
        let texts = row.texts();
        let expected_rows = std::mem::take(&mut self.expected_rows);
        if expected_rows > 0 {
            // With room for later values half as long again as the first.
            for (column, value) in self.texts.iter_mut().zip(&texts) {
                let len = value.map_or(0, str::len);
                column.reserve(expected_rows * (len + len / 2));
            }
            self.rows.reserve(expected_rows);
        }
        let mut text_ends = [0; TEXT_COLUMNS];
        let mut null_texts = 0;
        for (column, value) in texts.iter().enumerate() {
            match value {
                Some(value) => self.texts[column].push_str(value),
                None => null_texts |= 1 << column,
            }
            text_ends[column] = self.texts[column].len() as u32;
        }
        self.rows.push(PartRow {
            text_ends,
            null_texts,
            duration_s: row.duration_s,
            attempt: row.attempt,
            started_at: row.started_at.0,
        });
    }

    /// Keeps the first `rows` rows.
    fn truncate(&mut self, rows: usize) {
        let ends = match rows {
            0 => [0; TEXT_COLUMNS],
            _ => self.rows[rows - 1].text_ends,
        };
        for (column, end) in self.texts.iter_mut().zip(ends) {
            column.truncate(end as usize);
        }
        self.rows.truncate(rows);
    }
}

impl TestResultRef<'_> {
    /// The text values, in schema order.
    fn texts(&self) -> [Option<&str>; TEXT_COLUMNS] {
        [
            Some(self.run_id),
            self.change_id,
            self.service,
            Some(self.suite),
            Some(self.test_id),
            self.classname,
            Some(self.name),
            self.file,
            Some(self.status),
            self.message,
            Some(self.source_format),
        ]
    }
}

impl<'a> TestResultRef<'a> {
    /// A row of a part, from its texts (in schema order; required ones are never null in a
    /// part) and its numbers.
    fn from_texts(texts: [Option<&'a str>; TEXT_COLUMNS], row: &PartRow) -> Self {
        let required = |column: usize| texts[column].unwrap_or_default();
        TestResultRef {
            run_id: required(0),
            change_id: texts[1],
            service: texts[2],
            suite: required(3),
            test_id: required(4),
            classname: texts[5],
            name: required(6),
            file: texts[7],
            status: required(8),
            duration_s: row.duration_s,
            attempt: row.attempt,
            started_at: Ts(row.started_at),
            message: texts[9],
            source_format: required(10),
        }
    }
}

impl TestResultColumns {
    /// Rows held.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Part::len).sum()
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(|p| p.rows.is_empty())
    }

    /// Where the next row goes.
    pub fn mark(&self) -> RowsMark {
        match self.parts.last() {
            Some(part) => RowsMark {
                part: self.parts.len() - 1,
                row: part.len(),
            },
            None => RowsMark::default(),
        }
    }

    /// Drops the rows pushed since `mark`.
    pub fn truncate(&mut self, mark: RowsMark) {
        if mark.part < self.parts.len() {
            self.parts.truncate(mark.part + 1);
            self.parts[mark.part].truncate(mark.row);
        }
    }

    /// Notes that the rows of a new chunk of input begin here.
    pub fn start_chunk(&mut self) {
        self.chunk_start = self.mark();
    }

    /// Drops the rows of the chunk being read, keeping those of the chunks before it.
    pub fn drop_chunk(&mut self) {
        self.truncate(self.chunk_start);
    }

    /// Starts the rows of a report of `source_bytes`, making room for them so that its
    /// columns are not grown row by row: room is made when its first row is seen, from the
    /// lengths of its values. The guess is generous (a row takes more than 128 bytes of XML)
    /// and capped: the columns of a very large report grow as its rows come. Returns where the
    /// report's rows begin.
    pub fn start_report(&mut self, source_bytes: usize) -> RowsMark {
        self.expect_reports(source_bytes);
        self.mark()
    }

    /// Makes room, when their first row comes, for the rows of consecutive reports of
    /// `source_bytes` in all: their columns then grow once rather than report by report. Room
    /// already expected (for a group of reports that begins with this one) is kept.
    pub fn expect_reports(&mut self, source_bytes: usize) {
        if self.parts.is_empty() {
            self.parts.push(Part::default());
        }
        let part = self.parts.last_mut().expect("pushed above");
        part.expected_rows = part.expected_rows.max(source_bytes.min(16 << 20) / 128);
    }

    /// Numbers the attempts of the rows of a report, from `report` on: each row of a test
    /// (run id and test id) is its next attempt, 1 for the first, in the order pushed.
    pub fn number_attempts(&mut self, report: RowsMark) {
        if report.part >= self.parts.len() {
            return;
        }
        let parts = &mut self.parts[report.part..];
        let first_row = |index: usize| if index == 0 { report.row } else { 0 };
        let rows = parts.iter().map(Part::len).sum::<usize>() - report.row;
        // Per run (a report mostly holds one), the attempts so far of each test.
        let mut runs: Vec<(&str, foldhash::HashMap<&str, i64>)> = Vec::new();
        let mut attempts = Vec::with_capacity(rows);
        for (index, part) in parts.iter().enumerate() {
            for row in first_row(index)..part.len() {
                let run_id = part.text(row, RUN_ID).unwrap_or_default();
                let test_id = part.text(row, TEST_ID).unwrap_or_default();
                let tests = match runs.iter().position(|(run, _)| *run == run_id) {
                    Some(i) => &mut runs[i].1,
                    None => {
                        let tests =
                            foldhash::HashMap::with_capacity_and_hasher(rows, <_>::default());
                        runs.push((run_id, tests));
                        &mut runs.last_mut().expect("pushed").1
                    }
                };
                let attempt = tests.entry(test_id).or_insert(0);
                *attempt += 1;
                attempts.push(*attempt);
            }
        }
        let mut attempts = attempts.into_iter();
        for (index, part) in parts.iter_mut().enumerate() {
            for (row, attempt) in part.rows[first_row(index)..].iter_mut().zip(&mut attempts) {
                row.attempt = attempt;
            }
        }
    }

    /// Adds one row.
    pub fn push(&mut self, row: &TestResultRef<'_>) {
        let texts = row.texts();
        if !self.parts.last().is_some_and(|p| p.has_room_for(&texts)) {
            self.parts.push(Part::default());
        }
        self.parts.last_mut().expect("pushed above").push(row);
    }

    /// Moves the rows of `other` after these. Nothing is copied: rows stay in their buffers
    /// until they are written.
    pub fn append(&mut self, other: &mut TestResultColumns) {
        self.parts.append(&mut other.parts);
    }

    /// Takes the rows as batches of the `test_results` schema, in the order pushed, leaving
    /// none. Each batch's texts are the buffers they were pushed into, moved, not copied; its
    /// rows may fall on several dates.
    pub fn take_batches(&mut self) -> Vec<RecordBatch> {
        self.chunk_start = RowsMark::default();
        std::mem::take(&mut self.parts)
            .into_iter()
            .filter(|part| !part.rows.is_empty())
            .map(batch)
            .collect()
    }

    /// The rows held, read back as row structs: for checks that look at rows one by one.
    /// Ingest writes the columns.
    pub fn rows(&self) -> Vec<TestResult> {
        let mut rows = Vec::new();
        for part in &self.parts {
            for (index, row) in part.rows.iter().enumerate() {
                let texts = std::array::from_fn(|column| part.text(index, column));
                let row = TestResultRef::from_texts(texts, row);
                rows.push(TestResult {
                    run_id: row.run_id.into(),
                    change_id: row.change_id.map(Arc::from),
                    service: row.service.map(Arc::from),
                    suite: row.suite.into(),
                    test_id: row.test_id.into(),
                    classname: row.classname.map(str::to_string),
                    name: row.name.into(),
                    file: row.file.map(str::to_string),
                    status: row.status.into(),
                    duration_s: row.duration_s,
                    attempt: row.attempt,
                    started_at: row.started_at,
                    message: row.message.map(str::to_string),
                    source_format: row.source_format.into(),
                });
            }
        }
        rows
    }
}

/// The rows of `part` as one batch, its text buffers moved into the arrays.
fn batch(part: Part) -> RecordBatch {
    let Part { texts, rows, .. } = part;
    let mut texts = texts
        .into_iter()
        .enumerate()
        .map(|(column, values)| text_array(&rows, column, values));
    let mut text = || texts.next().expect("one array per text column");
    let (mut durations, mut attempts, mut starts) = (
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
    );
    let mut has_duration = BooleanBufferBuilder::new(rows.len());
    for row in &rows {
        durations.push(row.duration_s.unwrap_or_default());
        has_duration.append(row.duration_s.is_some());
        attempts.push(row.attempt);
        starts.push(row.started_at);
    }
    let duration_s = Float64Array::new(
        ScalarBuffer::from(durations),
        Some(NullBuffer::new(has_duration.finish())),
    );
    let attempt = Int64Array::from(attempts);
    let started_at = TimestampMicrosecondArray::from(starts).with_timezone("UTC");
    // Schema order: nine texts, duration, attempt, start, then message and source format.
    let columns: Vec<ArrayRef> = vec![
        text(),
        text(),
        text(),
        text(),
        text(),
        text(),
        text(),
        text(),
        text(),
        Arc::new(duration_s),
        Arc::new(attempt),
        Arc::new(started_at),
        text(),
        text(),
    ];
    RecordBatch::try_new(test_results_schema(), columns)
        .expect("columns are built in the order and types of the test_results declaration")
}

/// Text column `column` of `rows`, whose values end to end are `values`.
#[allow(unsafe_code)]
fn text_array(rows: &[PartRow], column: usize, values: String) -> ArrayRef {
    let mut offsets: Vec<i32> = Vec::with_capacity(rows.len() + 1);
    offsets.push(0);
    offsets.extend(rows.iter().map(|r| r.text_ends[column] as i32));
    let nulls = rows
        .iter()
        .any(|r| r.null_texts & (1 << column) != 0)
        .then(|| NullBuffer::from_iter(rows.iter().map(|r| r.null_texts & (1 << column) == 0)));
    let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
    // SAFETY: `values` is the `String` the rows' `&str`s were pushed into, and every offset is
    // where one of them ended (at most `i32::MAX`, as `has_room_for` checks before each push),
    // so each value is whole UTF-8. Checking it again cost a pass over every text ingested.
    Arc::new(unsafe {
        StringArray::new_unchecked(offsets, Buffer::from_vec(values.into_bytes()), nulls)
    })
}

/// The `test_results` schema, made once.
fn test_results_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(TestResult::schema);
    SCHEMA.clone()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use datafusion::arrow::compute::concat_batches;

    fn row(test_id: &str, day: i64) -> TestResult {
        TestResult {
            run_id: "run-1".into(),
            change_id: Some("c1".into()),
            service: None,
            suite: "suite".into(),
            test_id: test_id.into(),
            classname: None,
            name: test_id.into(),
            file: Some("tests/a.rs".into()),
            status: "passed".into(),
            duration_s: Some(0.5),
            attempt: 1,
            started_at: Ts(day * 86_400_000_000),
            message: None,
            source_format: "junit".into(),
        }
    }

    #[test]
    fn reports_fill_one_part_whose_buffers_become_the_batch_the_rows_declare() {
        let mut columns = TestResultColumns::default();
        let first = columns.start_report(1000);
        columns.push(&row("a", 0).borrowed());
        columns.push(&row("b", 1).borrowed());
        columns.number_attempts(first);
        // A report found corrupt part-way: its rows go, the earlier ones stay.
        let corrupt = columns.start_report(1000);
        columns.push(&row("x", 0).borrowed());
        columns.truncate(corrupt);
        // Attempts are counted within a report: a test twice in it is attempts 1 and 2.
        let third = columns.start_report(1000);
        columns.push(&row("a", 0).borrowed());
        columns.push(&row("a", 0).borrowed());
        columns.number_attempts(third);
        let mut later = TestResultColumns::default();
        let message = TestResult {
            message: Some("boom".into()),
            classname: Some("pkg".into()),
            ..row("c", 2)
        };
        later.push(&message.borrowed());
        columns.append(&mut later);
        assert!(later.is_empty());

        let retried = TestResult {
            attempt: 2,
            ..row("a", 0)
        };
        let expected = [row("a", 0), row("b", 1), row("a", 0), retried, message];
        assert_eq!(columns.rows(), expected);
        let batches = columns.take_batches();
        assert!(columns.is_empty());
        assert_eq!(
            batches.len(),
            2,
            "one batch per part: the reports, then the rows appended"
        );
        let joined = concat_batches(&test_results_schema(), &batches).unwrap();
        assert_eq!(
            joined,
            TestResult::to_batch(&expected.iter().collect::<Vec<_>>())
        );
    }
}
