//! Publishing a run: `<lake>/published/<run-id>/` holds the champion models, the verdict
//! tables and the reports, with `manifest.json` (sha256 of every file, the inputs, the code
//! and model versions); then `published/latest` is switched to it in one rename.
//!
//! The folder is assembled under a temporary name and renamed whole, so a reader of `latest`
//! never sees half a publication. Lake files are never modified in place (a rewrite is a new
//! file renamed over the old), so they are hard-linked rather than copied where the file
//! system allows.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use maestro_datasets::Lake;
use serde::Serialize;

use super::fingerprint::{files_under, sha256_hex};

/// The tables published as they are: the derived tables the publish job declares it reads,
/// so the list lives in one place.
fn published_tables() -> Vec<&'static str> {
    super::JOBS
        .iter()
        .filter(|job| job.name == "publish")
        .flat_map(|job| job.reads.iter().copied())
        .filter(|name| {
            maestro_datasets::schema::DERIVED_TABLES
                .iter()
                .any(|t| t.name == *name)
        })
        .collect()
}

/// Model families under `<lake>/models/`.
pub const MODEL_FAMILIES: [&str; 2] = ["risk", "tests"];

/// `manifest.json` of a publication.
#[derive(Debug, Serialize)]
pub struct PublishManifest {
    pub run_id: String,
    pub code_version: &'static str,
    /// The input fingerprint each job ran (or was skipped) with.
    pub inputs: BTreeMap<String, String>,
    /// Champion version per model family and key.
    pub models: BTreeMap<String, String>,
    pub files: Vec<PublishedFile>,
}

/// One published file.
#[derive(Debug, Serialize)]
pub struct PublishedFile {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

/// The folder of all publications.
pub fn published_root(lake: &Lake) -> PathBuf {
    lake.root().join("published")
}

/// `published/latest`, the publication readers use.
pub fn latest(lake: &Lake) -> PathBuf {
    published_root(lake).join("latest")
}

/// Publishes the lake's current champions, verdicts and reports as `run_id`, then points
/// `latest` at it. Returns the publication's folder.
pub fn publish(
    lake: &Lake,
    run_id: &str,
    inputs: BTreeMap<String, String>,
) -> anyhow::Result<(PathBuf, PublishManifest)> {
    let root = published_root(lake);
    // A run killed while publishing leaves its staging folder; the lock says none is in use.
    if let Ok(entries) = fs::read_dir(&root) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".staging-") {
                fs::remove_dir_all(entry.path())?;
            }
        }
    }
    let staging = root.join(format!(".staging-{run_id}"));
    fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;

    let mut models = BTreeMap::new();
    for family in MODEL_FAMILIES {
        let family_dir = lake.root().join("models").join(family);
        let champions_path = family_dir.join("champions.json");
        let Ok(text) = fs::read_to_string(&champions_path) else {
            continue;
        };
        let champions: BTreeMap<String, Vec<String>> = serde_json::from_str(&text)
            .with_context(|| format!("reading {}", champions_path.display()))?;
        link_tree(
            &champions_path,
            &staging.join("models").join(family).join("champions.json"),
        )?;
        for (key, versions) in champions {
            let Some(version) = versions.last() else {
                continue;
            };
            link_tree(
                &family_dir.join(version),
                &staging.join("models").join(family).join(version),
            )?;
            models.insert(format!("{family}/{key}"), version.clone());
        }
    }
    for table in published_tables() {
        link_tree(
            &lake.root().join("derived").join(table),
            &staging.join("verdicts").join(table),
        )?;
    }
    link_tree(&lake.root().join("reports"), &staging.join("reports"))?;

    let mut files = Vec::new();
    for relative in files_under(&staging, &staging)? {
        let bytes = fs::read(staging.join(&relative))?;
        files.push(PublishedFile {
            path: relative.to_string_lossy().into_owned(),
            sha256: sha256_hex(&bytes),
            bytes: bytes.len() as u64,
        });
    }
    let manifest = PublishManifest {
        run_id: run_id.to_string(),
        code_version: env!("CARGO_PKG_VERSION"),
        inputs,
        models,
        files,
    };
    maestro_datasets::lake::write_synced(
        &staging.join("manifest.json"),
        &serde_json::to_vec_pretty(&manifest)?,
    )?;
    let target = root.join(run_id);
    fs::rename(&staging, &target).with_context(|| format!("publishing {}", target.display()))?;

    // A new link beside `latest`, renamed over it: readers see the old or the new, never none.
    let next = root.join(".latest-next");
    let _ = fs::remove_file(&next);
    std::os::unix::fs::symlink(run_id, &next)?;
    fs::rename(&next, latest(lake))?;
    maestro_datasets::lake::sync_dir(&root)?;
    Ok((target, manifest))
}

/// Hard-links (or copies) a file, or a folder recursively, to `to`. A missing source is skipped.
fn link_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    if !from.exists() {
        return Ok(());
    }
    let files = if from.is_dir() {
        files_under(from, from)?
    } else {
        vec![PathBuf::new()]
    };
    for relative in files {
        let (source, target) = if relative.as_os_str().is_empty() {
            (from.to_path_buf(), to.to_path_buf())
        } else {
            (from.join(&relative), to.join(&relative))
        };
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        if fs::hard_link(&source, &target).is_err() {
            fs::copy(&source, &target)
                .with_context(|| format!("copying {} to {}", source.display(), target.display()))?;
        }
    }
    Ok(())
}
