//! Maestro's models: feature engineering, the candle risk and test-selection models, training,
//! evaluation, calibration and the model registry.
//!
//! In: lake tables as Arrow batches. Out: model artifacts and verdict tables. This crate holds
//! no model yet: the deployment-risk and test-selection models are the next pieces of work, and
//! the `maestro` command offers no `train` or `risk` subcommand until they exist.
