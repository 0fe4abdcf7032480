//! Ingest into a lake: reconciliation, idempotence, gzip, streaming, the audit hash chain.

use std::io::Write;
use std::path::Path;

use datafusion::arrow::array::{Array, Int64Array, StringArray};
use maestro_datasets::Lake;
use maestro_datasets::generate::{GenerateOptions, generate};
use maestro_datasets::ingest::{FileStatus, GENESIS_HASH, IngestOptions, chain_hash, ingest};
use maestro_datasets::ledger::{IngestedFile, Rejection};
use maestro_datasets::schema::{AuditEvent, RAW_TABLES, Row, TableDef, TestResult};

fn rows(lake: &Lake, table: &TableDef) -> usize {
    lake.read_table(table)
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum()
}

fn small_history() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    generate(
        dir.path(),
        &GenerateOptions {
            // The fewest days whose history, at the default seed, holds a row of every table
            // (the first incident falls on day 4).
            days: 4,
            services: 3,
            ..Default::default()
        },
    )
    .unwrap();
    dir
}

fn counts(lake: &Lake) -> Vec<(String, usize)> {
    RAW_TABLES
        .iter()
        .map(|t| (t.name.to_string(), rows(lake, t)))
        .collect()
}

#[test]
fn generated_history_ingests_cleanly_and_counts_reconcile() {
    let history = small_history();
    let lake_dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(lake_dir.path()).unwrap();
    let report = ingest(
        &lake,
        &[history.path().join("sources")],
        &IngestOptions::default(),
        &|_| {},
    )
    .unwrap();
    assert_eq!(report.rejected, 0, "generated files must all be valid");
    assert_eq!(report.read, report.accepted + report.rejected);
    for table in RAW_TABLES {
        assert!(rows(&lake, &table) > 0, "{} is empty", table.name);
    }
    assert_eq!(rows(&lake, &IngestedFile::TABLE), report.files.len());
    assert_eq!(
        report.rows["test_results"] as usize,
        rows(&lake, &maestro_datasets::schema::TestResult::TABLE)
    );
}

#[test]
fn reingesting_the_same_files_adds_nothing() {
    let history = small_history();
    let lake_dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(lake_dir.path()).unwrap();
    let sources = history.path().join("sources");
    ingest(
        &lake,
        std::slice::from_ref(&sources),
        &IngestOptions::default(),
        &|_| {},
    )
    .unwrap();
    let before = counts(&lake);
    let again = ingest(&lake, &[sources], &IngestOptions::default(), &|_| {}).unwrap();
    assert!(
        again
            .files
            .iter()
            .all(|f| f.status == FileStatus::Duplicate)
    );
    assert_eq!(again.read, 0);
    assert_eq!(counts(&lake), before);
}

#[test]
fn the_same_file_twice_in_one_run_is_taken_once() {
    let history = small_history();
    let dir = tempfile::tempdir().unwrap();
    let source = history.path().join("sources/catalog-info.yaml");
    std::fs::copy(&source, dir.path().join("copy.yaml")).unwrap();
    let lake = Lake::open(dir.path().join("lake")).unwrap();
    let report = ingest(
        &lake,
        &[source, dir.path().join("copy.yaml")],
        &IngestOptions::default(),
        &|_| {},
    )
    .unwrap();
    let mut statuses: Vec<_> = report
        .files
        .iter()
        .map(|f| format!("{:?}", f.status))
        .collect();
    statuses.sort();
    assert_eq!(statuses, ["Duplicate", "Ingested"]);
}

#[test]
fn same_inputs_give_byte_identical_raw_tables() {
    let history = small_history();
    // Once on one thread, once on three: files are parsed in parallel, rows written in order.
    let parts: Vec<Vec<(String, Vec<u8>)>> = [1, 3]
        .into_iter()
        .map(|threads| {
            let dir = tempfile::tempdir().unwrap();
            let lake = Lake::open(dir.path()).unwrap();
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                ingest(
                    &lake,
                    &[history.path().join("sources")],
                    &IngestOptions::default(),
                    &|_| {},
                )
            })
            .unwrap();
            RAW_TABLES
                .iter()
                .flat_map(|t| lake.parts(t).unwrap())
                .map(|p| {
                    (
                        p.strip_prefix(dir.path()).unwrap().display().to_string(),
                        std::fs::read(&p).unwrap(),
                    )
                })
                .collect()
        })
        .collect();
    assert_eq!(parts[0], parts[1]);
}

fn gzip(path: &Path, out: &Path) {
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(out).unwrap(),
        flate2::Compression::fast(),
    );
    encoder.write_all(&std::fs::read(path).unwrap()).unwrap();
    encoder.finish().unwrap();
}

#[test]
fn gzipped_files_read_like_plain_ones_and_streaming_matches_whole_reads() {
    let history = small_history();
    let metrics = std::fs::read_dir(history.path().join("sources/otlp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("metrics-"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("metrics.jsonl.gz");
    gzip(&metrics, &gz);
    let plain_lake = Lake::open(dir.path().join("plain")).unwrap();
    let plain = ingest(
        &plain_lake,
        std::slice::from_ref(&metrics),
        &IngestOptions::default(),
        &|_| {},
    )
    .unwrap();
    let gz_lake = Lake::open(dir.path().join("gz")).unwrap();
    let options = IngestOptions {
        chunk_bytes: 4096,
        ..Default::default()
    };
    let streamed = ingest(&gz_lake, &[gz], &options, &|_| {}).unwrap();
    assert_eq!(plain.read, streamed.read);
    assert_eq!(plain.rows, streamed.rows);
    let points = maestro_datasets::schema::MetricPoint::TABLE;
    assert_eq!(rows(&plain_lake, &points), rows(&gz_lake, &points));
}

#[test]
fn small_chunks_keep_line_numbers_and_offsets_across_a_line_longer_than_a_chunk() {
    let history = small_history();
    let audit = std::fs::read_dir(history.path().join("sources/audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("k8s-"))
        .unwrap();
    let text = std::fs::read_to_string(&audit).unwrap();
    let mut lines: Vec<String> = text.lines().take(6).map(str::to_string).collect();
    // Line 2 grows past several chunks; line 4 is broken.
    lines[1] = lines[1].replacen('{', &format!("{{\"padding\":\"{}\",", "x".repeat(3000)), 1);
    lines[3] = "{\"kind\": \"Event\", broken".to_string();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let lake = Lake::open(dir.path().join("lake")).unwrap();
    let options = IngestOptions {
        chunk_bytes: 512,
        ..Default::default()
    };
    let report = ingest(&lake, &[path], &options, &|_| {}).unwrap();
    assert_eq!((report.read, report.rejected), (6, 1));
    assert_eq!(rows(&lake, &AuditEvent::TABLE), 5);
    let rejected = &lake.read_table(&Rejection::TABLE).unwrap()[0];
    let column = |name: &str| {
        rejected
            .column_by_name(name)
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0)
    };
    let offset_of_line_4: usize = lines[..3].iter().map(|l| l.len() + 1).sum();
    assert_eq!(column("line"), 4);
    assert_eq!(column("byte_offset"), offset_of_line_4 as i64);
}

#[test]
fn a_corrupt_gzip_stream_keeps_what_was_read_and_rejects_the_rest() {
    let history = small_history();
    let dir = tempfile::tempdir().unwrap();
    let audit = std::fs::read_dir(history.path().join("sources/audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("k8s-"))
        .unwrap();
    let gz = dir.path().join("audit.jsonl.gz");
    gzip(&audit, &gz);
    let mut bytes = std::fs::read(&gz).unwrap();
    bytes.truncate(bytes.len() * 2 / 3);
    std::fs::write(&gz, &bytes).unwrap();
    let lake = Lake::open(dir.path().join("lake")).unwrap();
    let report = ingest(&lake, &[gz], &IngestOptions::default(), &|_| {}).unwrap();
    assert!(report.rejected >= 1);
    assert_eq!(report.read, report.accepted + report.rejected);
    assert_eq!(rows(&lake, &Rejection::TABLE) as u64, report.rejected);
}

#[test]
fn audit_records_form_a_hash_chain_across_runs() {
    let history = small_history();
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path()).unwrap();
    let mut audit_files: Vec<_> = std::fs::read_dir(history.path().join("sources/audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    audit_files.sort();
    for file in &audit_files {
        ingest(
            &lake,
            std::slice::from_ref(file),
            &IngestOptions::default(),
            &|_| {},
        )
        .unwrap();
    }
    let mut chain: Vec<(i64, String, String, String)> = Vec::new();
    for batch in lake.read_table(&AuditEvent::TABLE).unwrap() {
        let seq = batch
            .column_by_name("seq")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .clone();
        let text = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone()
        };
        let (prev, hash, canonical) = (text("prev_hash"), text("hash"), text("canonical"));
        for i in 0..batch.num_rows() {
            chain.push((
                seq.value(i),
                prev.value(i).into(),
                hash.value(i).into(),
                canonical.value(i).into(),
            ));
        }
    }
    chain.sort();
    assert!(chain.len() > 10);
    let mut expected_prev = GENESIS_HASH.to_string();
    for (i, (seq, prev, hash, canonical)) in chain.iter().enumerate() {
        assert_eq!(*seq, i as i64 + 1);
        assert_eq!(prev, &expected_prev);
        assert_eq!(hash, &chain_hash(prev, canonical));
        expected_prev = hash.clone();
    }
}

#[test]
fn a_corrupt_report_read_after_good_ones_takes_only_its_own_rows_with_it() {
    // Reports read one after another fill the same columns: a report found corrupt part-way
    // drops its own rows there, not those of the reports before it.
    let dir = tempfile::tempdir().unwrap();
    let report = |cases: &str| {
        format!(
            r#"<testsuite name="s" timestamp="2026-01-01T00:00:00"><properties><property name="maestro.run_id" value="r"/></properties>{cases}</testsuite>"#
        )
    };
    std::fs::write(
        dir.path().join("a.xml"),
        report(r#"<testcase name="one"/><testcase name="two"/>"#),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.xml"),
        r#"<testsuite name="s" timestamp="2026-01-01T00:00:00"><testcase name="three"/><testcase name="x"></bad>"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("c.xml"),
        report(r#"<testcase name="four"/>"#),
    )
    .unwrap();
    let lake = Lake::open(dir.path().join("lake")).unwrap();
    let outcome = ingest(
        &lake,
        &[dir.path().to_path_buf()],
        &IngestOptions::default(),
        &|_| {},
    )
    .unwrap();
    let read: Vec<(u64, u64)> = outcome.files.iter().map(|f| (f.read, f.rejected)).collect();
    assert_eq!(read, [(2, 0), (1, 1), (1, 0)]);
    assert_eq!(rows(&lake, &TestResult::TABLE), 3);
}

#[test]
fn foreign_and_empty_files_are_rejected_whole_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("notes.txt"),
        "hello, this is not telemetry\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("empty.json"), "").unwrap();
    let lake = Lake::open(dir.path().join("lake")).unwrap();
    let report = ingest(
        &lake,
        &[dir.path().join("notes.txt"), dir.path().join("empty.json")],
        &IngestOptions::default(),
        &|_| {},
    )
    .unwrap();
    assert_eq!((report.read, report.rejected), (2, 2));
    let rejected = lake.read_table(&Rejection::TABLE).unwrap();
    let reasons = rejected[0]
        .column_by_name("reason")
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
        .clone();
    let reasons: Vec<&str> = (0..reasons.len()).map(|i| reasons.value(i)).collect();
    assert!(reasons.iter().any(|r| r.contains("empty")), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("unrecognised")),
        "{reasons:?}"
    );
}

#[test]
fn a_missing_path_is_a_usage_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path()).unwrap();
    let error = ingest(
        &lake,
        &[dir.path().join("nope")],
        &IngestOptions::default(),
        &|_| {},
    )
    .unwrap_err();
    assert!(error.to_string().contains("no such file"));
}

#[test]
fn rejected_raw_text_is_bounded_and_says_when_it_was_cut() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.txt");
    std::fs::write(&big, "not telemetry ".repeat(10_000)).unwrap();
    let lake = Lake::open(dir.path().join("lake")).unwrap();
    ingest(&lake, &[big], &IngestOptions::default(), &|_| {}).unwrap();
    let batch = &lake.read_table(&Rejection::TABLE).unwrap()[0];
    let raw = batch
        .column_by_name("raw")
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    let cut = batch
        .column_by_name("is_raw_truncated")
        .unwrap()
        .as_any()
        .downcast_ref::<datafusion::arrow::array::BooleanArray>()
        .unwrap();
    assert_eq!(raw.value(0).len(), maestro_datasets::ledger::RAW_LIMIT);
    assert!(cut.value(0));
}

/// Records what an ingest says of its progress, in order.
#[derive(Default)]
struct HeardProgress(std::sync::Mutex<Vec<(&'static str, u64)>>);

impl maestro_datasets::ingest::Progress for HeardProgress {
    fn total(&self, bytes: u64) {
        self.0.lock().unwrap().push(("total", bytes));
    }
    fn advance(&self, bytes: u64) {
        self.0.lock().unwrap().push(("advance", bytes));
    }
}

#[cfg(unix)]
#[test]
fn links_in_a_folder_are_followed_and_progress_hears_the_total_first() {
    let dir = tempfile::tempdir().unwrap();
    let report_xml = |name: &str| {
        format!(
            r#"<testsuite name="s" timestamp="2024-03-01T10:00:00"><testcase classname="A" name="{name}"/></testsuite>"#
        )
    };
    let (folder, elsewhere, nested) = (
        dir.path().join("in"),
        dir.path().join("elsewhere"),
        dir.path().join("nested"),
    );
    for path in [&folder, &elsewhere, &nested] {
        std::fs::create_dir(path).unwrap();
    }
    std::fs::write(folder.join("a.xml"), report_xml("a")).unwrap();
    std::fs::write(elsewhere.join("b.xml"), report_xml("b")).unwrap();
    std::fs::write(nested.join("c.xml"), report_xml("c")).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("b.xml"), folder.join("b.xml")).unwrap();
    std::os::unix::fs::symlink(&nested, folder.join("sub")).unwrap();

    let lake = Lake::open(dir.path().join("lake")).unwrap();
    let progress = HeardProgress::default();
    let report = ingest(&lake, &[folder], &IngestOptions::default(), &progress).unwrap();
    assert_eq!((report.files.len(), report.accepted), (3, 3));
    let heard = progress.0.into_inner().unwrap();
    let bytes: u64 = report.files.iter().map(|f| f.bytes).sum();
    assert_eq!(heard[0], ("total", bytes));
    let advanced: u64 = heard[1..].iter().map(|(_, n)| n).sum();
    assert_eq!(advanced, bytes);
}
