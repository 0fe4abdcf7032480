//! The train-risk job: features from the lake, a trained and evaluated model stored as a new
//! registry version, its evaluation rows in `risk_evaluation`, and a challenge against the
//! champion on the same evaluation rows: the new model becomes champion only if it is not worse.

use std::collections::HashMap;

use maestro_datasets::WriteMode;
use maestro_datasets::lake::Lake;
use maestro_datasets::schema::{RiskEvaluation, Ts};

use crate::error::Result;
use crate::features::{self, FeatureOptions, FeatureTable};
use crate::metrics::roc_auc;
use crate::registry::{Manifest, Registry};
use crate::risk::{self, RiskTrainOptions, TrainedRisk};

/// What the job did.
#[allow(missing_docs)] // fields named for what they hold
pub struct TrainOutcome {
    pub manifest: Manifest,
    /// The champion before this run and its ROC-AUC on the new model's evaluation rows.
    pub challenged: Option<(String, Option<f64>)>,
    /// Whether the new model is now champion.
    pub promoted: bool,
    /// Why it was or was not promoted.
    pub reason: String,
}

/// Trains a risk model on the lake's history and registers it.
pub fn train_risk(
    lake: &Lake,
    options: &RiskTrainOptions,
    oracle: Option<&HashMap<String, f64>>,
) -> Result<TrainOutcome> {
    let table = features::build(
        lake,
        options.level,
        &FeatureOptions {
            incident_window_hours: options.label_horizon_hours,
            ..Default::default()
        },
    )?;
    tracing::info!(
        rows = table.rows(),
        features = table.names.len(),
        "features built"
    );
    let trained = risk::train(&table, options, oracle)?;
    let registry = Registry::new(lake.root());
    let manifest = registry.store(&trained, options.train.seed, &options.train)?;
    write_evaluation(lake, &manifest.version, &trained)?;

    let new_auc = trained.metrics.model.roc_auc;
    let (challenged, promoted, reason) = match registry.champion(options.level)? {
        None => (None, true, "no champion yet".to_string()),
        Some(champion) => {
            let champion_auc = champion_auc(&registry, &champion, &table, &trained)?;
            let promoted = match (new_auc, champion_auc) {
                (Some(new), Some(old)) => new >= old,
                (_, None) => true,
                (None, Some(_)) => false,
            };
            let reason = format!(
                "ROC-AUC on the same evaluation rows: new {} vs champion {champion} {}",
                fmt_auc(new_auc),
                fmt_auc(champion_auc)
            );
            (Some((champion, champion_auc)), promoted, reason)
        }
    };
    if promoted {
        registry.promote(&manifest.version)?;
    }
    Ok(TrainOutcome {
        manifest,
        challenged,
        promoted,
        reason,
    })
}

fn fmt_auc(auc: Option<f64>) -> String {
    auc.map_or("n/a".into(), |v| format!("{v:.4}"))
}

/// The champion's ROC-AUC on the rows the new model was evaluated on; `None` when the champion
/// needs features this table does not have.
fn champion_auc(
    registry: &Registry,
    champion: &str,
    table: &FeatureTable,
    trained: &TrainedRisk,
) -> Result<Option<f64>> {
    let model = registry.load(champion)?;
    if !model.features.iter().all(|f| table.names.contains(f)) {
        return Ok(None);
    }
    let probability = model.predict(table, &trained.evaluation_rows)?;
    let labels: Vec<bool> = trained.predictions.iter().map(|p| p.label).collect();
    Ok(roc_auc(&probability, &labels))
}

fn write_evaluation(lake: &Lake, version: &str, trained: &TrainedRisk) -> Result<()> {
    let rows: Vec<RiskEvaluation> = trained
        .predictions
        .iter()
        .map(|p| RiskEvaluation {
            model_version: version.to_string(),
            level: trained.model.level.name().to_string(),
            subject_id: p.subject_id.clone(),
            service: p.service.clone(),
            at: Ts(p.at),
            label: p.label,
            probability: p.probability,
        })
        .collect();
    let mut txn = lake.begin()?;
    txn.write(&rows, WriteMode::Upsert)?;
    txn.commit()?;
    Ok(())
}
