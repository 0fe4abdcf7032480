//! Training and evaluating the risk model: split by time, standardise, train, calibrate, and
//! measure the model beside two baselines (lines added alone; logistic regression on the JIT
//! metrics) and, on generated history, the generator's own probabilities.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::features::{FeatureTable, JIT_METRICS, Level};
use crate::metrics::{Evaluation, PlattScaling, evaluate, roc_auc};
use crate::network::{Matrix, ModelKind, Network, TrainConfig, TrainReport};

/// Fewest labelled rows worth training on.
pub const MIN_ROWS: usize = 40;

/// How to train a risk model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // fields named for what they hold
pub struct RiskTrainOptions {
    pub level: Level,
    pub train: TrainConfig,
    /// Share of the labelled rows, the newest, held back for evaluation.
    pub eval_fraction: f64,
    /// Share of the training part, its newest, used for early stopping and calibration.
    pub validation_fraction: f64,
    /// Hours after its start during which a deployment's label may still change (an incident
    /// it causes): training rows closer than this to the evaluation window are left out, so no
    /// label from the evaluation period leaks into training.
    pub label_horizon_hours: i64,
}

impl Default for RiskTrainOptions {
    fn default() -> Self {
        RiskTrainOptions {
            level: Level::Deployment,
            // Logistic regression: on generated history it ranked held-back deployments better
            // than the MLP (ROC-AUC 0.700 against 0.679 over 150 days of 16 services, 0.753
            // against 0.745 before the generator's test breakages), and its attributions are
            // exact.
            train: TrainConfig {
                kind: ModelKind::Logistic,
                ..TrainConfig::default()
            },
            eval_fraction: 0.2,
            validation_fraction: 0.2,
            label_horizon_hours: 24,
        }
    }
}

/// Per-feature mean and standard deviation of the training rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // fields named for what they hold
pub struct Scaler {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Scaler {
    /// Fits to `rows` of row-major `values` of `width` columns.
    pub fn fit(values: &[f64], width: usize, rows: &[usize]) -> Scaler {
        let row = |i: usize| &values[i * width..(i + 1) * width];
        let n = rows.len().max(1) as f64;
        let mut mean = vec![0.0; width];
        for i in rows {
            for (m, v) in mean.iter_mut().zip(row(*i)) {
                *m += v / n;
            }
        }
        let mut var = vec![0.0; width];
        for i in rows {
            for ((s, v), m) in var.iter_mut().zip(row(*i)).zip(&mean) {
                *s += (v - m).powi(2) / n;
            }
        }
        // A constant feature keeps a unit scale, so it standardises to zero, not to NaN.
        let std = var
            .into_iter()
            .map(|v| if v > 1e-12 { v.sqrt() } else { 1.0 })
            .collect();
        Scaler { mean, std }
    }

    /// Standardised row-major values of `rows` of `table`, as f32 for candle.
    pub fn transform(&self, table: &FeatureTable, rows: &[usize]) -> Vec<f32> {
        self.transform_rows(&table.values, rows)
    }

    /// Standardised `rows` of row-major `values` with this scaler's width, as f32 for candle.
    pub fn transform_rows(&self, values: &[f64], rows: &[usize]) -> Vec<f32> {
        let width = self.mean.len();
        let mut out = Vec::with_capacity(rows.len() * width);
        for i in rows {
            out.extend(
                values[i * width..(i + 1) * width]
                    .iter()
                    .zip(self.mean.iter().zip(&self.std))
                    .map(|(v, (m, s))| ((v - m) / s) as f32),
            );
        }
        out
    }
}

/// A trained scorer: features in order, their scaler, the network and its calibration.
#[derive(Debug, Clone)]
#[allow(missing_docs)] // fields named for what they hold
pub struct RiskModel {
    pub level: Level,
    pub kind: ModelKind,
    pub features: Vec<String>,
    pub scaler: Scaler,
    pub network: Network,
    pub calibration: PlattScaling,
}

impl RiskModel {
    /// Calibrated probabilities of `rows` of `table`, whose features must include the model's.
    pub fn predict(&self, table: &FeatureTable, rows: &[usize]) -> Result<Vec<f64>> {
        let own = self.own_columns(table)?;
        let x = self.scaler.transform(&own, rows);
        Ok(self
            .network
            .predict(&x, self.features.len())?
            .into_iter()
            .map(|p| self.calibration.apply(p))
            .collect())
    }

    /// Each feature's contribution to the logit of each row (see `Network::contributions`).
    pub fn contributions(&self, table: &FeatureTable, rows: &[usize]) -> Result<Vec<Vec<f64>>> {
        let own = self.own_columns(table)?;
        let x = self.scaler.transform(&own, rows);
        Ok(self.network.contributions(&x, self.features.len())?)
    }

    fn own_columns(&self, table: &FeatureTable) -> Result<FeatureTable> {
        if table.names == self.features {
            return Ok(table.clone());
        }
        let names: Vec<&str> = self.features.iter().map(String::as_str).collect();
        table.select(&names)
    }
}

/// The rows of one split, by time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // fields named for what they hold
pub struct Split {
    pub rows: usize,
    pub positives: usize,
    /// First and last time of the rows, microseconds.
    pub from: i64,
    pub to: i64,
}

/// How a model measured, beside its baselines and the oracle, on the same evaluation rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskEvaluationReport {
    /// The model, calibrated on the validation slice.
    pub model: Evaluation,
    /// Lines added alone, calibrated on the validation slice.
    pub baseline_lines_added: Evaluation,
    /// Logistic regression on the 14 JIT metrics.
    pub baseline_jit_logistic: Evaluation,
    /// The generator's true probabilities, when given.
    pub oracle: Option<Evaluation>,
    /// ROC-AUC and rows per service.
    pub per_service: BTreeMap<String, ServiceEvaluation>,
}

/// A service's share of the evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // fields named for what they hold
pub struct ServiceEvaluation {
    pub rows: usize,
    pub positives: usize,
    pub roc_auc: Option<f64>,
}

/// Everything one training produced.
#[allow(missing_docs)] // fields named for what they hold
pub struct TrainedRisk {
    pub model: RiskModel,
    pub report: TrainReport,
    pub training: Split,
    pub validation: Split,
    pub evaluation: Split,
    pub metrics: RiskEvaluationReport,
    /// sha256 over the training rows (ids, times, labels, features).
    pub training_data_sha256: String,
    /// Evaluation rows: id, service, time, label, calibrated probability.
    pub predictions: Vec<Prediction>,
    /// Row indexes of the evaluation part, into the feature table.
    pub evaluation_rows: Vec<usize>,
}

/// One evaluation row's probability.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // fields named for what they hold
pub struct Prediction {
    pub subject_id: String,
    pub service: String,
    pub at: i64,
    pub label: bool,
    pub probability: f64,
}

/// Row indexes of training, validation and evaluation, in time order.
struct Parts {
    fit: Vec<usize>,
    validation: Vec<usize>,
    evaluation: Vec<usize>,
}

fn split(table: &FeatureTable, options: &RiskTrainOptions) -> Result<Parts> {
    let labelled: Vec<usize> = (0..table.rows())
        .filter(|i| table.label[*i].is_some())
        .collect();
    if labelled.len() < MIN_ROWS {
        return Err(Error::Data(format!(
            "{} labelled {} rows: at least {MIN_ROWS} are needed to train and evaluate",
            labelled.len(),
            options.level.name()
        )));
    }
    let n_eval = ((labelled.len() as f64 * options.eval_fraction).ceil() as usize)
        .clamp(1, labelled.len() - 1);
    // Rows sharing the boundary time all go to evaluation, so training is strictly older.
    let mut boundary = labelled.len() - n_eval;
    while boundary > 0 && table.at[labelled[boundary - 1]] == table.at[labelled[boundary]] {
        boundary -= 1;
    }
    let eval_start = table.at[labelled[boundary]];
    let horizon = options.label_horizon_hours * 3_600_000_000;
    let training: Vec<usize> = labelled[..boundary]
        .iter()
        .copied()
        .filter(|i| table.at[*i] + horizon <= eval_start)
        .collect();
    let n_valid = ((training.len() as f64 * options.validation_fraction).ceil() as usize)
        .min(training.len().saturating_sub(1));
    let (fit, validation) = training.split_at(training.len() - n_valid);
    let parts = Parts {
        fit: fit.to_vec(),
        validation: validation.to_vec(),
        evaluation: labelled[boundary..].to_vec(),
    };
    for (name, rows) in [
        ("training", &parts.fit),
        ("validation", &parts.validation),
        ("evaluation", &parts.evaluation),
    ] {
        let positives = rows
            .iter()
            .filter(|i| table.label[**i] == Some(true))
            .count();
        if positives == 0 || positives == rows.len() {
            return Err(Error::Data(format!(
                "the {name} part ({} rows) holds only one class: more history is needed",
                rows.len()
            )));
        }
    }
    Ok(parts)
}

fn describe(table: &FeatureTable, rows: &[usize]) -> Split {
    Split {
        rows: rows.len(),
        positives: rows
            .iter()
            .filter(|i| table.label[**i] == Some(true))
            .count(),
        from: rows.first().map_or(0, |i| table.at[*i]),
        to: rows.last().map_or(0, |i| table.at[*i]),
    }
}

fn labels(table: &FeatureTable, rows: &[usize]) -> Vec<bool> {
    rows.iter().map(|i| table.label[*i] == Some(true)).collect()
}

fn label_f32(table: &FeatureTable, rows: &[usize]) -> Vec<f32> {
    labels(table, rows)
        .into_iter()
        .map(|l| f32::from(u8::from(l)))
        .collect()
}

/// Fits a scaler on `fit`, trains on it, early-stops and calibrates on `validation`.
fn fit_model(
    table: &FeatureTable,
    parts: &Parts,
    level: Level,
    config: &TrainConfig,
) -> Result<(RiskModel, TrainReport)> {
    let scaler = Scaler::fit(&table.values, table.names.len(), &parts.fit);
    let (x_fit, y_fit) = (
        scaler.transform(table, &parts.fit),
        label_f32(table, &parts.fit),
    );
    let (x_valid, y_valid) = (
        scaler.transform(table, &parts.validation),
        label_f32(table, &parts.validation),
    );
    let columns = table.names.len();
    let (network, report) = Network::train(
        config,
        &Matrix {
            x: &x_fit,
            y: &y_fit,
            columns,
        },
        &Matrix {
            x: &x_valid,
            y: &y_valid,
            columns,
        },
    )?;
    let raw_valid = network.predict(&x_valid, columns)?;
    let calibration = PlattScaling::fit(&raw_valid, &labels(table, &parts.validation));
    Ok((
        RiskModel {
            level,
            kind: config.kind,
            features: table.names.clone(),
            scaler,
            network,
            calibration,
        },
        report,
    ))
}

/// Trains and evaluates a risk model on `table`. `oracle` maps ids to true probabilities.
pub fn train(
    table: &FeatureTable,
    options: &RiskTrainOptions,
    oracle: Option<&HashMap<String, f64>>,
) -> Result<TrainedRisk> {
    let parts = split(table, options)?;
    let (model, report) = fit_model(table, &parts, options.level, &options.train)?;
    let eval_labels = labels(table, &parts.evaluation);
    let effort: Vec<f64> = parts.evaluation.iter().map(|i| table.effort[*i]).collect();
    let probability = model.predict(table, &parts.evaluation)?;
    let model_eval = evaluate(&probability, &eval_labels, &effort);

    // Baseline 1: lines added alone, as a calibrated probability.
    let lines = |rows: &[usize]| -> Vec<f64> {
        rows.iter()
            .map(|i| {
                let x = table.lines_added[*i].max(0.0).ln_1p();
                // Any increasing map to (0, 1) will do before calibration.
                x / (1.0 + x)
            })
            .collect()
    };
    let lines_calibration =
        PlattScaling::fit(&lines(&parts.validation), &labels(table, &parts.validation));
    let lines_probability: Vec<f64> = lines(&parts.evaluation)
        .into_iter()
        .map(|p| lines_calibration.apply(p))
        .collect();
    let baseline_lines_added = evaluate(&lines_probability, &eval_labels, &effort);

    // Baseline 2: logistic regression on the JIT metrics alone.
    let jit_names: Vec<String> = match options.level {
        Level::Change => JIT_METRICS.iter().map(|m| m.to_string()).collect(),
        Level::Deployment => JIT_METRICS
            .iter()
            .flat_map(|m| [format!("sum_{m}"), format!("max_{m}")])
            .collect(),
    };
    let jit_table = table.select(&jit_names.iter().map(String::as_str).collect::<Vec<_>>())?;
    let jit_config = TrainConfig {
        kind: ModelKind::Logistic,
        ..options.train.clone()
    };
    let (jit_model, _) = fit_model(&jit_table, &parts, options.level, &jit_config)?;
    let jit_probability = jit_model.predict(&jit_table, &parts.evaluation)?;
    let baseline_jit_logistic = evaluate(&jit_probability, &eval_labels, &effort);

    let oracle_eval = match oracle {
        Some(truth) => {
            let known: Vec<usize> = (0..parts.evaluation.len())
                .filter(|k| truth.contains_key(&table.ids[parts.evaluation[*k]]))
                .collect();
            (known.len() == parts.evaluation.len()).then(|| {
                let p: Vec<f64> = parts
                    .evaluation
                    .iter()
                    .map(|i| truth[&table.ids[*i]])
                    .collect();
                evaluate(&p, &eval_labels, &effort)
            })
        }
        None => None,
    };

    let mut per_service: BTreeMap<String, (Vec<f64>, Vec<bool>)> = BTreeMap::new();
    for (k, i) in parts.evaluation.iter().enumerate() {
        let entry = per_service.entry(table.services[*i].clone()).or_default();
        entry.0.push(probability[k]);
        entry.1.push(eval_labels[k]);
    }
    let per_service = per_service
        .into_iter()
        .map(|(service, (p, l))| {
            (
                service,
                ServiceEvaluation {
                    rows: l.len(),
                    positives: l.iter().filter(|v| **v).count(),
                    roc_auc: roc_auc(&p, &l),
                },
            )
        })
        .collect();

    let predictions = parts
        .evaluation
        .iter()
        .zip(&probability)
        .map(|(i, p)| Prediction {
            subject_id: table.ids[*i].clone(),
            service: table.services[*i].clone(),
            at: table.at[*i],
            label: table.label[*i] == Some(true),
            probability: *p,
        })
        .collect();
    Ok(TrainedRisk {
        training_data_sha256: data_hash(table, &parts.fit, &parts.validation),
        training: describe(table, &parts.fit),
        validation: describe(table, &parts.validation),
        evaluation: describe(table, &parts.evaluation),
        metrics: RiskEvaluationReport {
            model: model_eval,
            baseline_lines_added,
            baseline_jit_logistic,
            oracle: oracle_eval,
            per_service,
        },
        model,
        report,
        predictions,
        evaluation_rows: parts.evaluation,
    })
}

/// sha256 over what training saw, in order: id, time, label and features of every row.
fn data_hash(table: &FeatureTable, fit: &[usize], validation: &[usize]) -> String {
    let mut hasher = Sha256::new();
    for name in &table.names {
        hasher.update(name.as_bytes());
        hasher.update([0]);
    }
    for i in fit.iter().chain(validation) {
        hasher.update(table.ids[*i].as_bytes());
        hasher.update([0]);
        hasher.update(table.at[*i].to_le_bytes());
        hasher.update([u8::from(table.label[*i] == Some(true))]);
        for v in table.row(*i) {
            hasher.update(v.to_le_bytes());
        }
    }
    format!("{:x}", hasher.finalize())
}

/// The generator's true probabilities (`truth/deployments.csv` or `truth/changes.csv`): the
/// first column is the id, the column named `p_bad` or `p_buggy` the probability.
pub fn read_oracle(path: &Path) -> Result<HashMap<String, f64>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let column = header
        .iter()
        .position(|h| *h == "p_bad" || *h == "p_buggy")
        .ok_or_else(|| {
            Error::Data(format!(
                "{}: no p_bad or p_buggy column: not a truth file of maestro generate",
                path.display()
            ))
        })?;
    let mut truth = HashMap::new();
    for (n, line) in lines.enumerate() {
        let fields: Vec<&str> = line.split(',').collect();
        let p = fields
            .get(column)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| {
                Error::Data(format!("{} line {}: no probability", path.display(), n + 2))
            })?;
        truth.insert(fields[0].to_string(), p);
    }
    Ok(truth)
}
