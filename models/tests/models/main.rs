//! Maestro's models end to end, on generated history ingested into a lake.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod risk;
mod test_selection;

use std::path::Path;

use maestro_datasets::Lake;
use maestro_datasets::generate::{GenerateOptions, generate};
use maestro_datasets::ingest::{IngestOptions, ingest};

/// A lake holding `days` of generated history for four services, and the generator's folder.
fn lake_with_history(root: &Path, days: u32) -> Lake {
    let sources = root.join("history");
    generate(
        &sources,
        &GenerateOptions {
            days,
            services: 4,
            ..Default::default()
        },
    )
    .unwrap();
    let lake = Lake::open(root.join("lake")).unwrap();
    ingest(
        &lake,
        &[sources.join("sources")],
        &IngestOptions::default(),
        &|_| {},
    )
    .unwrap();
    lake
}
