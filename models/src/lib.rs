//! Maestro's models: feature engineering (polars), the candle risk model, training, evaluation,
//! calibration and the model registry.
//!
//! In: the lake's raw tables (Parquet, read with polars). Out: trained models in the registry
//! (`models/risk/<version>/` and `models/tests/<version>/`: safetensors weights, manifest, card)
//! and evaluation rows for the `risk_evaluation` and `test_selection_replay` tables. polars stays inside `features`, candle inside `network`.

pub mod canary;
pub mod error;
pub mod features;
pub mod metrics;
pub mod network;
pub mod registry;
pub mod risk;
pub mod rollback;
pub mod scoring;
pub mod telemetry;
pub mod test_health;
pub mod test_history;
pub mod test_registry;
pub mod test_selection;
pub mod train;

pub use error::{Error, Result};
