//! Test results gathered as spans of one text buffer per file, then built into Arrow columns.
//!
//! Test reports are the most numerous rows Maestro ingests, some hundred bytes of XML each.
//! As row structs of owned texts, the rows cost more in allocations and drops than the parse
//! itself, and so did column builders per file, finished and joined before each write. Here a
//! file's rows take two buffers: its texts, each value stored once where rows repeat it (the
//! run, the change, the suite), and fixed-size rows of spans into them. The columns are built
//! when the rows of many files are written, sized exactly, one builder set per date.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
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

/// The rows of one file: their texts in one buffer, each row a set of spans of it.
#[derive(Debug, Default)]
struct Part {
    texts: String,
    rows: Vec<SpanRow>,
}

/// The text columns, in schema order.
const TEXT_COLUMNS: usize = 11;

#[derive(Debug, Clone, Copy)]
struct SpanRow {
    texts: [Span; TEXT_COLUMNS],
    duration_s: Option<f64>,
    attempt: i64,
    started_at: i64,
}

/// A text of a part's buffer, or null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    const NULL: Span = Span {
        start: 0,
        len: u32::MAX,
    };
}

impl Part {
    fn text(&self, span: Span) -> Option<&str> {
        (span != Span::NULL)
            .then(|| &self.texts[span.start as usize..(span.start + span.len) as usize])
    }

    /// Stores a row's text, or reuses the span of the previous row's value when it is the same.
    fn store(&mut self, column: usize, value: Option<&str>) -> Span {
        let Some(value) = value else {
            return Span::NULL;
        };
        if let Some(previous) = self.rows.last().map(|r| r.texts[column])
            && self.text(previous) == Some(value)
        {
            return previous;
        }
        let span = Span {
            start: self.texts.len() as u32,
            len: value.len() as u32,
        };
        self.texts.push_str(value);
        span
    }

    /// Whether a row of these texts still fits spans of 32 bits.
    fn has_room_for(&self, row: &TestResultRef<'_>) -> bool {
        let texts = row.texts().iter().flatten().map(|t| t.len()).sum::<usize>();
        self.texts.len() + texts < u32::MAX as usize
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

impl TestResultColumns {
    /// Rows held.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.rows.len()).sum()
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(|p| p.rows.is_empty())
    }

    /// Makes room for the rows of a report of `source_bytes`, so that its buffers are not
    /// grown row by row. The guesses are generous (rows hold fewer text bytes than their XML)
    /// and capped: the buffers of a very large report grow as its rows come.
    pub fn reserve_for(&mut self, source_bytes: usize) {
        let bytes = source_bytes.min(16 << 20);
        self.parts.push(Part {
            texts: String::with_capacity(bytes),
            rows: Vec::with_capacity(bytes / 128),
        });
    }

    /// Adds one row.
    pub fn push(&mut self, row: &TestResultRef<'_>) {
        if !self.parts.last().is_some_and(|p| p.has_room_for(row)) {
            self.parts.push(Part::default());
        }
        let part = self.parts.last_mut().expect("pushed above");
        let values = row.texts();
        let mut texts = [Span::NULL; TEXT_COLUMNS];
        for (column, value) in values.into_iter().enumerate() {
            texts[column] = part.store(column, value);
        }
        part.rows.push(SpanRow {
            texts,
            duration_s: row.duration_s,
            attempt: row.attempt,
            started_at: row.started_at.0,
        });
    }

    /// Moves the rows of `other` after these. Nothing is copied: each file's rows stay in
    /// their buffers until they are written.
    pub fn append(&mut self, other: &mut TestResultColumns) {
        self.parts.append(&mut other.parts);
    }

    /// Takes the rows as batches of the `test_results` schema, one per UTC date in date order,
    /// leaving none.
    pub fn take_batches(&mut self) -> Vec<RecordBatch> {
        let parts = std::mem::take(&mut self.parts);
        // Sizes first, so that every builder is made at its final size.
        let mut sizes: BTreeMap<i64, (usize, [usize; TEXT_COLUMNS])> = BTreeMap::new();
        for part in &parts {
            for row in &part.rows {
                let (rows, bytes) = sizes.entry(Ts(row.started_at).day()).or_default();
                *rows += 1;
                for (column, span) in row.texts.iter().enumerate() {
                    if *span != Span::NULL {
                        bytes[column] += span.len as usize;
                    }
                }
            }
        }
        let mut builders: BTreeMap<i64, Builders> = sizes
            .into_iter()
            .map(|(day, (rows, bytes))| (day, Builders::new(rows, &bytes)))
            .collect();
        for part in &parts {
            for row in &part.rows {
                let builders = builders
                    .get_mut(&Ts(row.started_at).day())
                    .expect("sized above");
                for (column, span) in row.texts.iter().enumerate() {
                    builders.texts[column].append_option(part.text(*span));
                }
                builders.duration_s.append_option(row.duration_s);
                builders.attempt.append_value(row.attempt);
                builders.started_at.append_value(row.started_at);
            }
        }
        builders.into_values().map(Builders::finish).collect()
    }

    /// The rows held, read back as row structs: for checks that look at rows one by one.
    /// Ingest writes the columns.
    pub fn rows(&self) -> Vec<TestResult> {
        let mut rows = Vec::new();
        for part in &self.parts {
            for row in &part.rows {
                let text = |column: usize| part.text(row.texts[column]).map(str::to_string);
                let required = |column: usize| text(column).unwrap_or_default();
                rows.push(TestResult {
                    run_id: required(0).into(),
                    change_id: text(1).map(Arc::from),
                    service: text(2).map(Arc::from),
                    suite: required(3).into(),
                    test_id: required(4),
                    classname: text(5),
                    name: required(6),
                    file: text(7),
                    status: required(8).into(),
                    duration_s: row.duration_s,
                    attempt: row.attempt,
                    started_at: Ts(row.started_at),
                    message: text(9),
                    source_format: required(10).into(),
                });
            }
        }
        rows
    }
}

/// The builders of one batch: the text columns in schema order, then the others.
struct Builders {
    texts: Vec<StringBuilder>,
    duration_s: Float64Builder,
    attempt: Int64Builder,
    started_at: TimestampMicrosecondBuilder,
}

impl Builders {
    fn new(rows: usize, text_bytes: &[usize; TEXT_COLUMNS]) -> Self {
        Builders {
            texts: text_bytes
                .iter()
                .map(|bytes| StringBuilder::with_capacity(rows, *bytes))
                .collect(),
            duration_s: Float64Builder::with_capacity(rows),
            attempt: Int64Builder::with_capacity(rows),
            started_at: TimestampMicrosecondBuilder::with_capacity(rows),
        }
    }

    fn finish(mut self) -> RecordBatch {
        let mut texts = self
            .texts
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef);
        let mut text = || texts.next().expect("one builder per text column");
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
            Arc::new(self.duration_s.finish()),
            Arc::new(self.attempt.finish()),
            Arc::new(self.started_at.finish().with_timezone("UTC")),
            text(),
            text(),
        ];
        RecordBatch::try_new(test_results_schema(), columns)
            .expect("columns are built in the order and types of the test_results declaration")
    }
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
