//! Integration tests of the datasets crate: readers against the real corpus, ingest into a lake
//! (idempotence, kills, reconciliation), and malformed input. One binary, several modules.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod corpus;
mod ingest;
mod malformed;

use std::path::PathBuf;

/// The shared conformance corpus, or `None` (with a message saying so) when it is absent.
pub fn corpus_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("MAESTRO_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "corpus not found at {} (set MAESTRO_CORPUS): corpus conformance checks are skipped",
            dir.display()
        );
        None
    }
}
