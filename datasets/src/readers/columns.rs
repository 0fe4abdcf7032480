//! Test results gathered column by column, then built into Arrow arrays.
//!
//! Test reports are the most numerous rows Maestro ingests, some hundred bytes of XML each.
//! As row structs of owned texts, the rows cost more in allocations and drops than the parse
//! itself, and so did Arrow builders per file, finished and joined before each write. Here a
//! file's rows keep each text column as Arrow lays one out, values end to end, beside one fixed
//! size record per row (where its texts end, which are null, its numbers). When the rows of
//! many files are written, each column of a date is those buffers copied end to end.

use std::collections::BTreeMap;
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
    /// One per file or chunk of rows appended, in order.
    parts: Vec<Part>,
}

/// The text columns, in schema order.
const TEXT_COLUMNS: usize = 11;
/// Text columns by position.
const RUN_ID: usize = 0;
const TEST_ID: usize = 4;

/// Where the rows of one report begin, to number their attempts once it is read.
#[derive(Debug, Clone, Copy)]
pub struct ReportRows {
    first_part: usize,
}

/// The rows of one file, each text column laid out as Arrow lays it out: its values end to
/// end, so that the columns of many files are joined by copying whole buffers.
#[derive(Debug, Default)]
struct Part {
    /// Rows the file is expected to hold, to size each column when its first value is seen.
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

    /// Whether every row falls on the UTC day of the first, and that day.
    fn single_day(&self) -> Option<i64> {
        let day = Ts(self.rows.first()?.started_at).day();
        self.rows
            .iter()
            .all(|row| Ts(row.started_at).day() == day)
            .then_some(day)
    }

    fn push(&mut self, row: &TestResultRef<'_>) {
        let texts = row.texts();
        if self.rows.is_empty() && self.expected_rows > 0 {
            // With room for later values half as long again as the first.
            for (column, value) in self.texts.iter_mut().zip(&texts) {
                let len = value.map_or(0, str::len);
                column.reserve(self.expected_rows * (len + len / 2));
            }
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

    /// Splits a part whose rows fall on several days into one part per day, rows in order.
    fn split_by_day(self) -> BTreeMap<i64, Part> {
        let mut days: BTreeMap<i64, Part> = BTreeMap::new();
        for (index, row) in self.rows.iter().enumerate() {
            let text = |column| self.text(index, column);
            let texts: [Option<&str>; TEXT_COLUMNS] = std::array::from_fn(text);
            days.entry(Ts(row.started_at).day())
                .or_default()
                .push(&TestResultRef::from_texts(texts, row));
        }
        days
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

    /// Starts the rows of a report of `source_bytes`, making room for them so that its
    /// columns are not grown row by row: each is sized when its first value is seen. The guess
    /// is generous (a row takes more than 128 bytes of XML) and capped: the columns of a very
    /// large report grow as its rows come. Returns where the report's rows begin.
    pub fn start_report(&mut self, source_bytes: usize) -> ReportRows {
        let expected_rows = source_bytes.min(16 << 20) / 128;
        self.parts.push(Part {
            expected_rows,
            rows: Vec::with_capacity(expected_rows),
            ..Part::default()
        });
        ReportRows {
            first_part: self.parts.len() - 1,
        }
    }

    /// Numbers the attempts of the rows of a report, from `report` on: each row of a test
    /// (run id and test id) is its next attempt, 1 for the first, in the order pushed.
    pub fn number_attempts(&mut self, report: ReportRows) {
        let parts = &mut self.parts[report.first_part..];
        let rows = parts.iter().map(Part::len).sum();
        // Per run (a report mostly holds one), the attempts so far of each test.
        let mut runs: Vec<(&str, foldhash::HashMap<&str, i64>)> = Vec::new();
        let mut attempts = Vec::with_capacity(rows);
        for part in parts.iter() {
            for row in 0..part.len() {
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
        let rows = parts.iter_mut().flat_map(|part| &mut part.rows);
        for (row, attempt) in rows.zip(attempts) {
            row.attempt = attempt;
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

    /// Moves the rows of `other` after these. Nothing is copied: each file's rows stay in
    /// their buffers until they are written.
    pub fn append(&mut self, other: &mut TestResultColumns) {
        self.parts.append(&mut other.parts);
    }

    /// Takes the rows as batches of the `test_results` schema, in date order, leaving none:
    /// one batch per UTC date, or more where a date's texts outgrow Arrow's 32-bit offsets.
    pub fn take_batches(&mut self) -> Vec<RecordBatch> {
        // Per date, its batches: their parts and the bytes of each text column so far.
        type Gathered = (Vec<Part>, [usize; TEXT_COLUMNS]);
        let mut days: BTreeMap<i64, Vec<Gathered>> = BTreeMap::new();
        let mut add = |day: i64, part: Part| {
            let batches = days.entry(day).or_default();
            let bytes: [usize; TEXT_COLUMNS] = std::array::from_fn(|c| part.texts[c].len());
            let fits = |held: &[usize; TEXT_COLUMNS]| {
                (0..TEXT_COLUMNS).all(|c| held[c] + bytes[c] <= i32::MAX as usize)
            };
            match batches.last_mut() {
                Some((parts, held)) if fits(held) => {
                    (0..TEXT_COLUMNS).for_each(|c| held[c] += bytes[c]);
                    parts.push(part);
                }
                _ => batches.push((vec![part], bytes)),
            }
        };
        for part in std::mem::take(&mut self.parts) {
            match part.single_day() {
                Some(day) => add(day, part),
                None if part.rows.is_empty() => {}
                None => part.split_by_day().into_iter().for_each(|(d, p)| add(d, p)),
            }
        }
        days.into_values()
            .flatten()
            .map(|(parts, _)| batch(&parts))
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

/// One batch of the rows of `parts`, whose texts fit 32-bit offsets: each text column is the
/// parts' buffers copied end to end.
fn batch(parts: &[Part]) -> RecordBatch {
    let rows: usize = parts.iter().map(Part::len).sum();
    let mut texts = (0..TEXT_COLUMNS).map(|column| text_array(parts, column));
    let mut text = || texts.next().expect("one array per text column");
    let (mut durations, mut attempts, mut starts) = (
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
    );
    let mut has_duration = BooleanBufferBuilder::new(rows);
    for row in parts.iter().flat_map(|p| &p.rows) {
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

/// Text column `column` of the rows of `parts`, whose values fit 32-bit offsets.
#[allow(unsafe_code)]
fn text_array(parts: &[Part], column: usize) -> ArrayRef {
    let rows: usize = parts.iter().map(Part::len).sum();
    let bytes: usize = parts.iter().map(|p| p.texts[column].len()).sum();
    let has_nulls = parts
        .iter()
        .any(|p| p.rows.iter().any(|r| r.null_texts & (1 << column) != 0));
    let mut offsets: Vec<i32> = Vec::with_capacity(rows + 1);
    offsets.push(0);
    let mut values: Vec<u8> = Vec::with_capacity(bytes);
    let mut validity = has_nulls.then(|| BooleanBufferBuilder::new(rows));
    for part in parts {
        let base = values.len() as i32;
        offsets.extend(part.rows.iter().map(|r| base + r.text_ends[column] as i32));
        values.extend_from_slice(part.texts[column].as_bytes());
        if let Some(validity) = &mut validity {
            for row in &part.rows {
                validity.append(row.null_texts & (1 << column) == 0);
            }
        }
    }
    let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
    let nulls = validity.map(|mut v| NullBuffer::new(v.finish()));
    // SAFETY: `values` is the parts' `String`s end to end, and every offset is where one of the
    // `&str`s pushed into them ended (the buffers' lengths, shifted by the bytes before them),
    // so each value is whole UTF-8. Checking it again cost a pass over every text ingested.
    Arc::new(unsafe { StringArray::new_unchecked(offsets, Buffer::from_vec(values), nulls) })
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
    fn columns_build_the_batches_the_row_declaration_builds_one_per_date() {
        let rows = [row("a", 0), row("b", 1), row("c", 1)];
        let (mut first, mut second) = (TestResultColumns::default(), TestResultColumns::default());
        first.push(&rows[0].borrowed());
        second.push(&rows[1].borrowed());
        second.push(&rows[2].borrowed());
        assert_eq!(second.rows(), rows[1..]);
        first.append(&mut second);
        assert!(second.is_empty());
        assert_eq!(first.rows(), rows);
        // A report whose rows change date part-way.
        let (d, e) = (row("d", 1), row("e", 0));
        let mut third = TestResultColumns::default();
        third.push(&d.borrowed());
        third.push(&e.borrowed());
        first.append(&mut third);
        let batches = first.take_batches();
        assert!(first.is_empty());
        let by_date = [vec![&rows[0], &e], vec![&rows[1], &rows[2], &d]];
        assert_eq!(batches.len(), by_date.len());
        for (batch, rows) in batches.iter().zip(&by_date) {
            assert_eq!(*batch, TestResult::to_batch(rows));
        }
    }
}
