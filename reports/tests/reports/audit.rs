//! The audit trail: digests verify, and any modified, deleted or inserted record is named.

use std::fs::File;

use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::compute::{concat_batches, take};
use datafusion::parquet::arrow::ArrowWriter;
use maestro_datasets::Lake;
use maestro_datasets::audit_trail::{digest, verify};
use maestro_datasets::lake::read_parquet;
use maestro_datasets::schema::{AuditEvent, Row};

use super::small_lake;

/// Rewrites the audit table's one part with `change` applied to its rows (in seq order).
fn tamper(lake: &Lake, change: impl Fn(RecordBatch) -> RecordBatch) {
    let parts = lake.parts(&AuditEvent::TABLE).unwrap();
    // The fixture's four records sit in two daily partitions; gather them in seq order.
    let batches: Vec<RecordBatch> = parts
        .iter()
        .flat_map(|p| read_parquet(p).unwrap())
        .collect();
    let all = concat_batches(&batches[0].schema(), &batches).unwrap();
    let changed = change(all);
    for part in &parts {
        std::fs::remove_file(part).unwrap();
    }
    let mut writer =
        ArrowWriter::try_new(File::create(&parts[0]).unwrap(), changed.schema(), None).unwrap();
    writer.write(&changed).unwrap();
    writer.close().unwrap();
}

fn rows(batch: &RecordBatch, indices: &[u32]) -> RecordBatch {
    let indices = UInt32Array::from(indices.to_vec());
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| take(c.as_ref(), &indices, None).unwrap())
        .collect();
    RecordBatch::try_new(batch.schema(), columns).unwrap()
}

fn first_problem(lake: &Lake) -> String {
    let result = verify(lake, None).unwrap();
    assert!(!result.is_intact(), "tampering must be detected");
    result.problems[0].clone()
}

#[test]
fn an_untouched_trail_verifies_with_signed_digests() {
    let (_dir, lake) = small_lake();
    let (secret, public) = maestro_datasets::audit_trail::generate_key_pair();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k.key"), &secret).unwrap();
    std::fs::write(dir.path().join("k.pub"), &public).unwrap();
    let key = maestro_datasets::audit_trail::read_signing_key(&dir.path().join("k.key")).unwrap();
    let public = maestro_datasets::audit_trail::read_public_key(&dir.path().join("k.pub")).unwrap();
    let run = digest(&lake, Some(&key)).unwrap();
    assert_eq!(run.added.len(), 2, "one entry per day of records");
    let result = verify(&lake, Some(&public)).unwrap();
    assert!(result.is_intact(), "{:?}", result.problems);
    assert_eq!(
        (result.records, result.signatures_checked, result.undigested),
        (4, 2, 0)
    );
    // A second digest adds nothing: every record is covered.
    assert!(digest(&lake, Some(&key)).unwrap().added.is_empty());
    // Another key's public half does not verify the signatures.
    let (_, other) = maestro_datasets::audit_trail::generate_key_pair();
    std::fs::write(dir.path().join("o.pub"), other).unwrap();
    let other = maestro_datasets::audit_trail::read_public_key(&dir.path().join("o.pub")).unwrap();
    let result = verify(&lake, Some(&other)).unwrap();
    assert!(
        result.problems[0].contains("does not verify"),
        "{:?}",
        result.problems
    );
}

#[test]
fn a_modified_record_is_named() {
    let (_dir, lake) = small_lake();
    tamper(&lake, |batch| {
        let canonical = batch.column_by_name("canonical").unwrap();
        let canonical = canonical.as_any().downcast_ref::<StringArray>().unwrap();
        let edited: StringArray = (0..canonical.len())
            .map(|i| {
                let text = canonical.value(i);
                Some(if i == 1 {
                    text.replace("bob", "eve")
                } else {
                    text.to_string()
                })
            })
            .collect();
        let index = batch.schema().index_of("canonical").unwrap();
        let mut columns = batch.columns().to_vec();
        columns[index] = std::sync::Arc::new(edited);
        RecordBatch::try_new(batch.schema(), columns).unwrap()
    });
    let problem = first_problem(&lake);
    assert!(problem.starts_with("seq 2 "), "{problem}");
    assert!(problem.contains("modified"), "{problem}");
}

#[test]
fn a_modified_column_is_named_though_the_hashed_record_is_intact() {
    let (_dir, lake) = small_lake();
    // The controls read `actor`; the hash covers the canonical record. Editing the column
    // alone leaves the chain intact but no longer matches the record.
    tamper(&lake, |batch| {
        let actor = batch.column_by_name("actor").unwrap();
        let actor = actor.as_any().downcast_ref::<StringArray>().unwrap();
        let edited: StringArray = (0..actor.len())
            .map(|i| Some(if i == 2 { "mallory" } else { actor.value(i) }))
            .collect();
        let index = batch.schema().index_of("actor").unwrap();
        let mut columns = batch.columns().to_vec();
        columns[index] = std::sync::Arc::new(edited);
        RecordBatch::try_new(batch.schema(), columns).unwrap()
    });
    let problem = first_problem(&lake);
    assert!(problem.starts_with("seq 3 "), "{problem}");
    assert!(problem.contains("its actor column"), "{problem}");
}

#[test]
fn a_deleted_record_is_named() {
    let (_dir, lake) = small_lake();
    tamper(&lake, |batch| rows(&batch, &[0, 2, 3]));
    let problem = first_problem(&lake);
    assert!(problem.starts_with("seq 3 "), "{problem}");
    assert!(problem.contains("missing"), "{problem}");
}

#[test]
fn an_inserted_copy_is_named() {
    let (_dir, lake) = small_lake();
    tamper(&lake, |batch| rows(&batch, &[0, 1, 1, 2, 3]));
    let problem = first_problem(&lake);
    assert!(problem.starts_with("seq 2 "), "{problem}");
    assert!(problem.contains("repeats"), "{problem}");
}

#[test]
fn records_cut_off_the_end_are_caught_by_the_digest() {
    let (_dir, lake) = small_lake();
    digest(&lake, None).unwrap();
    // The chain alone cannot see a truncated tail; the day's digest can.
    tamper(&lake, |batch| rows(&batch, &[0, 1, 2]));
    let problem = first_problem(&lake);
    assert!(problem.contains("records deleted or inserted"), "{problem}");
}
