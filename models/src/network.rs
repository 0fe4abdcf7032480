//! The candle models: logistic regression (no hidden layer) and a multi-layer perceptron (ReLU
//! hidden layers), trained with AdamW on a class-weighted logistic loss, with early stopping on a
//! validation slice.
//!
//! Everything random (initial weights, batch order) comes from one seeded ChaCha generator and
//! the training loop runs in a fixed order, so the same data and seed give the same weights, bit
//! for bit.

use std::collections::HashMap;

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

/// Fixes the thread count candle works with, once, before any thread exists: call it first in
/// `main`. candle asks for its thread count on every matrix product, and unless
/// `RAYON_NUM_THREADS` is set that reads /proc/cpuinfo each time (candle 0.11): a fifth of the
/// time of selecting tests for a year of changes went there. It is set to what rayon would use
/// anyway, the available parallelism; a value the user set is kept.
#[allow(unsafe_code)] // setting an environment variable, while the process has one thread
pub fn settle_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: called first in `main`, before any other thread can read the environment.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    }
}

/// Which model to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Logistic regression: exact, additive explanations.
    Logistic,
    /// A multi-layer perceptron with ReLU hidden layers.
    Mlp,
}

impl ModelKind {
    /// The kind's name in configuration and manifests.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Logistic => "logistic",
            ModelKind::Mlp => "mlp",
        }
    }
}

/// How to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // fields named for what they hold
pub struct TrainConfig {
    pub kind: ModelKind,
    /// Widths of the hidden layers (MLP only).
    pub hidden: Vec<usize>,
    pub max_epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Epochs without a better validation loss before training stops.
    pub patience: usize,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            kind: ModelKind::Mlp,
            hidden: vec![64, 64],
            max_epochs: 200,
            batch_size: 256,
            learning_rate: 3e-3,
            weight_decay: 1e-3,
            patience: 15,
            seed: 42,
        }
    }
}

/// Rows of standardised features, row-major, with their labels.
#[allow(missing_docs)] // fields named for what they hold
pub struct Matrix<'a> {
    pub x: &'a [f32],
    pub y: &'a [f32],
    pub columns: usize,
}

impl Matrix<'_> {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.y.len()
    }
}

/// What training did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // fields named for what they hold
pub struct TrainReport {
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub best_validation_loss: f64,
    /// Weight of a positive row in the loss: negatives over positives in the training rows.
    pub positive_weight: f64,
}

/// A trained network: a stack of affine layers, ReLU between them, a logit out.
#[derive(Debug, Clone)]
pub struct Network {
    /// (weight `in x out`, bias `out`) per layer.
    layers: Vec<(Tensor, Tensor)>,
}

type CandleResult<T> = candle_core::Result<T>;

impl Network {
    /// Trains on `train`, stopping early on the loss over `valid`; keeps the weights of the best
    /// validation epoch.
    pub fn train(
        config: &TrainConfig,
        train: &Matrix<'_>,
        valid: &Matrix<'_>,
    ) -> CandleResult<(Network, TrainReport)> {
        let device = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let widths: Vec<usize> = match config.kind {
            ModelKind::Logistic => vec![train.columns, 1],
            ModelKind::Mlp => std::iter::once(train.columns)
                .chain(config.hidden.iter().copied())
                .chain(std::iter::once(1))
                .collect(),
        };
        let mut vars = Vec::new();
        for pair in widths.windows(2) {
            let (fan_in, fan_out) = (pair[0], pair[1]);
            // He initialisation for ReLU layers; the logistic model starts at zero.
            let weights: Vec<f32> = if config.kind == ModelKind::Logistic {
                vec![0.0; fan_in * fan_out]
            } else {
                let normal = Normal::new(0.0, (2.0 / fan_in as f64).sqrt())
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                (0..fan_in * fan_out)
                    .map(|_| normal.sample(&mut rng) as f32)
                    .collect()
            };
            vars.push(Var::from_tensor(&Tensor::from_vec(
                weights,
                (fan_in, fan_out),
                &device,
            )?)?);
            vars.push(Var::zeros(fan_out, DType::F32, &device)?);
        }
        let positives = train.y.iter().filter(|y| **y > 0.5).count().max(1);
        let negatives = (train.rows() - positives.min(train.rows())).max(1);
        let positive_weight = negatives as f64 / positives as f64;
        let mut optimizer = AdamW::new(
            vars.clone(),
            ParamsAdamW {
                lr: config.learning_rate,
                weight_decay: config.weight_decay,
                ..Default::default()
            },
        )?;
        let x_train = Tensor::from_slice(train.x, (train.rows(), train.columns), &device)?;
        let y_train = Tensor::from_slice(train.y, train.rows(), &device)?;
        let x_valid = Tensor::from_slice(valid.x, (valid.rows(), valid.columns), &device)?;
        let y_valid = Tensor::from_slice(valid.y, valid.rows(), &device)?;
        let network = |vars: &[Var]| Network {
            layers: vars
                .chunks(2)
                .map(|pair| (pair[0].as_tensor().clone(), pair[1].as_tensor().clone()))
                .collect(),
        };
        let mut best = (f64::INFINITY, 0usize, network(&vars).detached()?);
        let mut order: Vec<u32> = (0..train.rows() as u32).collect();
        let mut epochs_run = 0;
        for epoch in 1..=config.max_epochs {
            epochs_run = epoch;
            order.shuffle(&mut rng);
            for batch in order.chunks(config.batch_size.max(1)) {
                let index = Tensor::from_slice(batch, batch.len(), &device)?;
                let x = x_train.index_select(&index, 0)?;
                let y = y_train.index_select(&index, 0)?;
                let logits = network(&vars).logits(&x)?;
                let loss = weighted_logistic_loss(&logits, &y, positive_weight)?;
                optimizer.backward_step(&loss)?;
            }
            // Validation loss weighs classes as training does, so it tracks what is optimised.
            let valid_loss = if valid.rows() == 0 {
                f64::from(
                    weighted_logistic_loss(
                        &network(&vars).logits(&x_train)?,
                        &y_train,
                        positive_weight,
                    )?
                    .to_scalar::<f32>()?,
                )
            } else {
                f64::from(
                    weighted_logistic_loss(
                        &network(&vars).logits(&x_valid)?,
                        &y_valid,
                        positive_weight,
                    )?
                    .to_scalar::<f32>()?,
                )
            };
            if valid_loss < best.0 {
                best = (valid_loss, epoch, network(&vars).detached()?);
            } else if epoch - best.1 >= config.patience {
                break;
            }
        }
        let (best_validation_loss, best_epoch, model) = best;
        Ok((
            model,
            TrainReport {
                epochs_run,
                best_epoch,
                best_validation_loss,
                positive_weight,
            },
        ))
    }

    /// A copy whose tensors no longer track the training variables.
    fn detached(&self) -> CandleResult<Network> {
        Ok(Network {
            layers: self
                .layers
                .iter()
                .map(|(w, b)| Ok((w.detach().copy()?, b.detach().copy()?)))
                .collect::<CandleResult<_>>()?,
        })
    }

    /// Logits of rows `x` (`n x columns`), shape `n`.
    pub fn logits(&self, x: &Tensor) -> CandleResult<Tensor> {
        let mut h = x.clone();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            h = h.matmul(w)?.broadcast_add(b)?;
            if i + 1 < self.layers.len() {
                h = h.relu()?;
            }
        }
        h.squeeze(D::Minus1)
    }

    /// Probabilities of row-major rows of `columns` features.
    pub fn predict(&self, x: &[f32], columns: usize) -> CandleResult<Vec<f64>> {
        let rows = x.len() / columns.max(1);
        if rows == 0 {
            return Ok(Vec::new());
        }
        // In blocks: a block's hidden activations stay in cache, where a million rows' would
        // not (a 64-wide layer of them is 256 MB).
        const BLOCK_ROWS: usize = 8192;
        let mut out = Vec::with_capacity(rows);
        for block in x.chunks(BLOCK_ROWS * columns) {
            let x = Tensor::from_slice(block, (block.len() / columns, columns), &Device::Cpu)?;
            let p = candle_nn::ops::sigmoid(&self.logits(&x)?)?;
            out.extend(p.to_vec1::<f32>()?.into_iter().map(f64::from));
        }
        Ok(out)
    }

    /// Each feature's contribution to the logit of each row, relative to the all-zero row (the
    /// training mean, after standardisation). For logistic regression these are the exact terms
    /// `w_j * x_j`; for the MLP, integrated gradients along the straight path from zero, which
    /// sum to the logit difference up to the path's discretisation.
    pub fn contributions(&self, x: &[f32], columns: usize) -> CandleResult<Vec<Vec<f64>>> {
        let rows = x.len() / columns.max(1);
        if rows == 0 {
            return Ok(Vec::new());
        }
        let device = Device::Cpu;
        if self.layers.len() == 1 {
            let w = self.layers[0].0.squeeze(1)?.to_vec1::<f32>()?;
            return Ok(x
                .chunks(columns)
                .map(|row| row.iter().zip(&w).map(|(v, w)| f64::from(v * w)).collect())
                .collect());
        }
        const STEPS: usize = 32;
        let input = Tensor::from_slice(x, (rows, columns), &device)?;
        let mut total = Tensor::zeros((rows, columns), DType::F32, &device)?;
        for step in 1..=STEPS {
            // Midpoint rule along the path.
            let alpha = (step as f64 - 0.5) / STEPS as f64;
            let point = Var::from_tensor(&(&input * alpha)?)?;
            let logits = self.logits(point.as_tensor())?;
            let grads = logits.sum_all()?.backward()?;
            let grad = grads
                .get(point.as_tensor())
                .ok_or_else(|| candle_core::Error::Msg("no gradient for the input".into()))?;
            total = (total + grad)?;
        }
        let attributions = ((total / STEPS as f64)? * input)?;
        Ok(attributions
            .to_vec2::<f32>()?
            .into_iter()
            .map(|row| row.into_iter().map(f64::from).collect())
            .collect())
    }

    /// The weights by name (`layer<i>.weight`, `layer<i>.bias`), for safetensors.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, (w, b))| {
                [
                    (format!("layer{i}.weight"), w.clone()),
                    (format!("layer{i}.bias"), b.clone()),
                ]
            })
            .collect()
    }

    /// Rebuilds a network from its named weights.
    pub fn from_tensors(tensors: &HashMap<String, Tensor>) -> CandleResult<Network> {
        let mut layers = Vec::new();
        while let (Some(w), Some(b)) = (
            tensors.get(&format!("layer{}.weight", layers.len())),
            tensors.get(&format!("layer{}.bias", layers.len())),
        ) {
            layers.push((w.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?));
        }
        if layers.is_empty() || layers.len() * 2 != tensors.len() {
            return Err(candle_core::Error::Msg(
                "weights are not a stack of layer<i>.weight / layer<i>.bias".into(),
            ));
        }
        Ok(Network { layers })
    }

    /// Number of input features.
    pub fn columns(&self) -> usize {
        self.layers.first().map_or(0, |(w, _)| w.dims()[0])
    }
}

/// Mean of `w_i * (softplus(z_i) - y_i z_i)`, with `w = positive_weight` for positives and 1 for
/// negatives: the logistic loss written so large logits cannot overflow.
fn weighted_logistic_loss(
    logits: &Tensor,
    y: &Tensor,
    positive_weight: f64,
) -> CandleResult<Tensor> {
    let softplus = (logits.relu()? + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    let per_row = (softplus - (y * logits)?)?;
    let weights = ((y * (positive_weight - 1.0))? + 1.0)?;
    (per_row * &weights)?.sum_all()? / weights.sum_all()?.to_scalar::<f32>()? as f64
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    /// Two informative features and one of noise; the label follows a known logistic rule.
    fn toy(rows: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let normal = Normal::new(0.0, 1.0).unwrap();
        let mut x = Vec::new();
        let mut y = Vec::new();
        for _ in 0..rows {
            let row: [f32; 3] = std::array::from_fn(|_| normal.sample(&mut rng));
            let p = 1.0 / (1.0 + (-(2.0 * row[0] - 1.5 * row[1] - 1.0)).exp());
            y.push(f32::from(u8::from(rand::Rng::random_bool(
                &mut rng,
                f64::from(p),
            ))));
            x.extend(row);
        }
        (x, y)
    }

    #[test]
    fn the_same_seed_gives_the_same_weights_bit_for_bit() {
        let (x, y) = toy(600, 1);
        let train = Matrix {
            x: &x[..1500],
            y: &y[..500],
            columns: 3,
        };
        let valid = Matrix {
            x: &x[1500..],
            y: &y[500..],
            columns: 3,
        };
        let config = TrainConfig {
            max_epochs: 5,
            ..Default::default()
        };
        let weights = |(network, _): (Network, TrainReport)| -> Vec<Vec<u32>> {
            let tensors = network.tensors();
            let mut names: Vec<&String> = tensors.keys().collect();
            names.sort();
            names
                .into_iter()
                .map(|n| {
                    tensors[n]
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                        .iter()
                        .map(|v| v.to_bits())
                        .collect()
                })
                .collect()
        };
        let first = weights(Network::train(&config, &train, &valid).unwrap());
        let second = weights(Network::train(&config, &train, &valid).unwrap());
        assert_eq!(first, second);
    }

    #[test]
    fn logistic_regression_recovers_the_rule_and_explains_exactly() {
        let (x, y) = toy(3000, 2);
        let train = Matrix {
            x: &x[..7500],
            y: &y[..2500],
            columns: 3,
        };
        let valid = Matrix {
            x: &x[7500..],
            y: &y[2500..],
            columns: 3,
        };
        let config = TrainConfig {
            kind: ModelKind::Logistic,
            ..Default::default()
        };
        let (network, _) = Network::train(&config, &train, &valid).unwrap();
        let w = network.layers[0]
            .0
            .squeeze(1)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(w[0] > 1.2 && w[1] < -0.9 && w[2].abs() < 0.3, "{w:?}");
        // Contributions plus the bias give the logit.
        let row = &x[..3];
        let contributions = network.contributions(row, 3).unwrap();
        let bias = network.layers[0].1.to_vec1::<f32>().unwrap()[0];
        let logit: f64 = contributions[0].iter().sum::<f64>() + f64::from(bias);
        let p = network.predict(row, 3).unwrap()[0];
        assert!((1.0 / (1.0 + (-logit).exp()) - p).abs() < 1e-5);
    }

    #[test]
    fn mlp_attributions_sum_to_the_logit_difference() {
        let (x, y) = toy(800, 3);
        let train = Matrix {
            x: &x[..1800],
            y: &y[..600],
            columns: 3,
        };
        let valid = Matrix {
            x: &x[1800..],
            y: &y[600..],
            columns: 3,
        };
        let config = TrainConfig {
            max_epochs: 20,
            ..Default::default()
        };
        let (network, _) = Network::train(&config, &train, &valid).unwrap();
        let rows = &x[..12];
        let attributions = network.contributions(rows, 3).unwrap();
        let device = Device::Cpu;
        let logits = network
            .logits(&Tensor::from_slice(rows, (4, 3), &device).unwrap())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let zero = network
            .logits(&Tensor::zeros((1, 3), DType::F32, &device).unwrap())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0];
        for (row, logit) in attributions.iter().zip(logits) {
            let sum: f64 = row.iter().sum();
            assert!(
                (sum - f64::from(logit - zero)).abs() < 0.05,
                "{sum} vs {}",
                logit - zero
            );
        }
    }

    #[test]
    fn weights_round_trip_through_their_names() {
        let (x, y) = toy(100, 4);
        let m = Matrix {
            x: &x,
            y: &y,
            columns: 3,
        };
        let config = TrainConfig {
            max_epochs: 1,
            ..Default::default()
        };
        let (network, _) = Network::train(&config, &m, &m).unwrap();
        let back = Network::from_tensors(&network.tensors()).unwrap();
        assert_eq!(
            network.predict(&x[..9], 3).unwrap(),
            back.predict(&x[..9], 3).unwrap()
        );
    }
}
