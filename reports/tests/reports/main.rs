//! Tests of the SQL reports over small fixture lakes: golden results in sqllogictest files
//! (`tests/slt/*.slt`), waivers, the audit trail, and the executive report's rendering.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod audit;
mod executive;
mod slt;

use std::path::{Path, PathBuf};

use maestro_datasets::Lake;
use maestro_datasets::ingest::{IngestOptions, ingest};
use maestro_datasets::schema::Ts;
use maestro_reports::compliance::{Waiver, load_waivers};
use maestro_reports::definitions;
use maestro_reports::run::{Period, ReportRun, run_reports};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A lake holding the `small` fixture: five changes, four deployments (one rolled back, one
/// causing a sev1 incident), four audit records, twenty minutes of request metrics, SLOs, and
/// the test runs of two changes.
fn small_lake() -> (tempfile::TempDir, Lake) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().join("lake")).unwrap();
    let report = ingest(
        &lake,
        &[fixtures().join("small")],
        &IngestOptions::default(),
        &|_| {},
    )
    .unwrap();
    assert_eq!(report.rejected, 0, "the fixture ingests cleanly");
    (dir, lake)
}

fn waivers() -> Vec<Waiver> {
    load_waivers(&fixtures().join("waivers.toml")).unwrap()
}

fn day(date: &str) -> Ts {
    Ts::parse(&format!("{date}T00:00:00Z")).unwrap()
}

/// Every report over the lake for the given dates, written to the lake.
fn reports(lake: &Lake, from: &str, to: &str) -> ReportRun {
    let definitions = definitions::load(None).unwrap();
    runtime()
        .block_on(run_reports(
            lake,
            &definitions,
            &waivers(),
            Some(Period::days(day(from), day(to))),
        ))
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}
