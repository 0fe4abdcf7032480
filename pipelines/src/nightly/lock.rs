//! One run at a time per lake: an exclusive advisory lock on `<lake>/_lock`.
//!
//! The operating system releases the lock when its holder exits, however it exits, so the
//! lock of a killed run is simply taken by the next one; the file only says who holds it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::PathBuf;

use anyhow::Context;
use maestro_datasets::Lake;

/// Held for as long as this value lives.
#[derive(Debug)]
pub struct RunLock {
    file: File,
}

/// Who holds, or last held, the lock.
fn holder_text(run_id: &str) -> String {
    format!(
        "pid {} on {}, run {run_id}, since {}\n",
        std::process::id(),
        hostname(),
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "this host".into())
}

/// The lock file of a lake.
pub fn lock_path(lake: &Lake) -> PathBuf {
    lake.root().join("_lock")
}

/// Takes the lake's lock for `run_id`, or fails naming the run that holds it.
pub fn acquire(lake: &Lake, run_id: &str) -> anyhow::Result<RunLock> {
    let path = lock_path(lake);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            anyhow::bail!(
                "another maestro run holds the lake at {}: {}",
                lake.root().display(),
                holder.trim()
            );
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    let mut previous = String::new();
    let _ = file.read_to_string(&mut previous);
    if !previous.trim().is_empty() {
        tracing::warn!(
            previous = previous.trim(),
            "took over the lock of a run that ended without releasing it"
        );
    }
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(holder_text(run_id).as_bytes())?;
    file.sync_all()?;
    Ok(RunLock { file })
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // An empty file says nobody holds it; the lock itself goes with the file handle.
        let _ = self.file.set_len(0);
    }
}
