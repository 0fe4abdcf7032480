//! The one error type of `maestro-models`.

use std::path::PathBuf;

/// Errors of feature building, training and the registry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lake could not be read or written.
    #[error(transparent)]
    Lake(#[from] maestro_datasets::Error),
    /// polars refused a feature computation.
    #[error("features: {0}")]
    Polars(#[from] polars::error::PolarsError),
    /// candle refused a tensor operation.
    #[error("model: {0}")]
    Candle(#[from] candle_core::Error),
    /// The file system refused an operation.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The data cannot give what was asked (too few rows, one class only, a missing table).
    #[error("{0}")]
    Data(String),
    /// A model in the registry is missing, unreadable or not what its manifest says.
    #[error("{0}")]
    Registry(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;
