//! What a job's inputs are, as one hash: unchanged inputs mean the job can be skipped.
//!
//! Lake parts are named by the sha256 of their bytes and never modified in place, so the list
//! of a table's part paths is already a fingerprint of its content: nothing is re-read. Other
//! files (models, report charts, the digest file) are small and hashed whole. Landing folders
//! are fingerprinted by path, size and modification time, as make does: ingest itself skips
//! any file whose sha256 it has already taken, so a touched but unchanged file costs one read.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::Context;
use maestro_datasets::Lake;
use maestro_datasets::schema::TableDef;
use sha2::{Digest, Sha256};

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every file under `dir` (or `dir` itself, when it is a file), sorted, as paths relative to
/// `base`. A missing folder has none.
pub fn files_under(dir: &Path, base: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if dir.is_file() {
        files.push(dir.strip_prefix(base).unwrap_or(dir).to_path_buf());
        return Ok(files);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        let entries = match fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("listing {}", folder.display())),
        };
        for entry in entries {
            let path = entry
                .with_context(|| format!("listing {}", folder.display()))?
                .path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path.strip_prefix(base).unwrap_or(&path).to_path_buf());
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Folds a folder of the lake into `hasher`: part names as they are, other files by content.
pub fn hash_lake_folder(lake: &Lake, dir: &Path, hasher: &mut Sha256) -> anyhow::Result<()> {
    for relative in files_under(dir, lake.root())? {
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update(b"\n");
        if !is_part(&relative) {
            let path = lake.root().join(&relative);
            let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            hasher.update(Sha256::digest(&bytes));
        }
    }
    Ok(())
}

/// Folds landing folders into `hasher` by each file's path, size and modification time.
pub fn hash_landing(folders: &[PathBuf], hasher: &mut Sha256) -> anyhow::Result<()> {
    for folder in folders {
        for relative in files_under(folder, folder)? {
            let path = folder.join(&relative);
            let meta =
                fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            hasher.update(format!("{}\t{}\t{modified}\n", path.display(), meta.len()).as_bytes());
        }
    }
    Ok(())
}

fn is_part(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("part-") && n.ends_with(".parquet"))
}

/// A date-partitioned table's parts by date (`YYYY-MM-DD`), as paths relative to the lake.
pub fn parts_by_date(
    lake: &Lake,
    table: &TableDef,
) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut by_date: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for part in lake.parts(table)? {
        let relative = part.strip_prefix(lake.root()).unwrap_or(&part);
        let date = relative
            .components()
            .find_map(|c| c.as_os_str().to_str()?.strip_prefix("date="))
            .unwrap_or("")
            .to_string();
        by_date
            .entry(date)
            .or_default()
            .push(relative.to_string_lossy().into_owned());
    }
    Ok(by_date)
}

/// Rows of every part of `tables`, from the Parquet footers.
pub fn rows_of(lake: &Lake, tables: &[TableDef]) -> anyhow::Result<u64> {
    let mut rows = 0;
    for table in tables {
        for part in lake.parts(table)? {
            rows += maestro_datasets::lake::parquet_rows(&part)?;
        }
    }
    Ok(rows)
}

/// The finished hash as hex.
pub fn finish(hasher: Sha256) -> String {
    hex(&hasher.finalize())
}
