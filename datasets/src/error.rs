//! The one error type of `maestro-datasets`: each variant says what was at fault and where.

use std::path::{Path, PathBuf};

/// Errors of the lake and the readers. A bad *record* is not an error: it becomes a row of
/// `_rejected`. These are failures of the lake, the file system, or Maestro itself.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file system refused an operation.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A Parquet file of the lake could not be read or written.
    #[error("{path}: parquet: {source}")]
    Parquet {
        /// The Parquet file.
        path: PathBuf,
        /// What the Parquet library said.
        source: datafusion::parquet::errors::ParquetError,
    },
    /// Arrow refused data of the lake.
    #[error("{path}: arrow: {source}")]
    Arrow {
        /// The file involved.
        path: PathBuf,
        /// What Arrow said.
        source: datafusion::arrow::error::ArrowError,
    },
    /// A lake file that Maestro wrote is not what it should be.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Data already in the lake does not match the declared schema of its table.
    #[error("table {table}: {reason}")]
    SchemaMismatch {
        /// The table.
        table: String,
        /// How it differs.
        reason: String,
    },
    /// The user asked for something that cannot be done (unknown format name, missing path...).
    #[error("{0}")]
    Usage(String),
    /// A broken invariant inside Maestro: this is a bug, please report it.
    #[error("internal error (a bug in Maestro): {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn parquet(path: &Path, source: datafusion::parquet::errors::ParquetError) -> Error {
        Error::Parquet {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn arrow(path: &Path, source: datafusion::arrow::error::ArrowError) -> Error {
        Error::Arrow {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Result with the datasets error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
