//! The risk model and the judges end to end, on generated history ingested into a lake: features are
//! point-in-time correct, training is reproducible bit for bit, the registry refuses tampered
//! weights, and champions are promoted and rolled back.

use maestro_datasets::schema::{RiskEvaluation, Row};
use maestro_models::features::{self, FeatureOptions, Level};
use maestro_models::network::{ModelKind, TrainConfig};
use maestro_models::registry::Registry;
use maestro_models::risk::{RiskTrainOptions, read_oracle};
use maestro_models::train::train_risk;

use crate::lake_with_history;

fn quick(kind: ModelKind, seed: u64) -> RiskTrainOptions {
    RiskTrainOptions {
        train: TrainConfig {
            kind,
            hidden: vec![16, 16],
            max_epochs: 30,
            seed,
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn deployment_features_use_only_the_past() {
    // The generator draws day by day, so a shorter history is a prefix of a longer one. A
    // deployment's features must not change when later days are added.
    let short_dir = tempfile::tempdir().unwrap();
    let long_dir = tempfile::tempdir().unwrap();
    let short = features::build(
        &lake_with_history(short_dir.path(), 12),
        Level::Deployment,
        &FeatureOptions::default(),
    )
    .unwrap();
    let long = features::build(
        &lake_with_history(long_dir.path(), 16),
        Level::Deployment,
        &FeatureOptions::default(),
    )
    .unwrap();
    assert!(long.rows() > short.rows());
    assert_eq!(short.names, long.names);
    let mut compared = 0;
    for i in 0..short.rows() {
        let j = long.ids.iter().position(|id| *id == short.ids[i]).unwrap();
        assert_eq!(
            short.row(i),
            long.row(j),
            "features of {} changed",
            short.ids[i]
        );
        compared += 1;
    }
    assert!(compared > 40, "only {compared} deployments compared");
    // Labels follow the generator's truth: bad means failed, rolled back or caused an incident.
    let truth = read_oracle(&long_dir.path().join("history/truth/deployments.csv")).unwrap();
    let text =
        std::fs::read_to_string(long_dir.path().join("history/truth/deployments.csv")).unwrap();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let i = long.ids.iter().position(|id| id == fields[0]).unwrap();
        assert_eq!(
            long.label[i],
            Some(fields[3] == "true"),
            "label of {}",
            fields[0]
        );
    }
    assert_eq!(truth.len(), long.rows());
}

#[test]
fn training_registers_a_reproducible_model_and_guards_its_weights() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_history(dir.path(), 30);
    let oracle = read_oracle(&dir.path().join("history/truth/deployments.csv")).unwrap();

    let first = train_risk(&lake, &quick(ModelKind::Mlp, 7), Some(&oracle)).unwrap();
    assert!(first.promoted, "the first model becomes champion");
    let manifest = &first.manifest;
    assert_eq!(manifest.version, "deployment-0001");
    assert!(manifest.metrics.oracle.is_some());
    assert!(
        manifest.training.to < manifest.evaluation.from,
        "training is older than evaluation"
    );
    assert_eq!(
        manifest.evaluation.rows,
        lake.read_table(&RiskEvaluation::TABLE)
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>()
    );

    // Same data, same seed: the same weights, byte for byte.
    let second = train_risk(&lake, &quick(ModelKind::Mlp, 7), Some(&oracle)).unwrap();
    let registry = Registry::new(lake.root());
    let weights = |version: &str| {
        std::fs::read(registry.root().join(version).join("model.safetensors")).unwrap()
    };
    assert_eq!(second.manifest.version, "deployment-0002");
    assert_eq!(weights("deployment-0001"), weights("deployment-0002"));
    assert_eq!(
        manifest.training_data_sha256,
        second.manifest.training_data_sha256
    );
    // Equal on the same evaluation rows is not worse: the second is promoted too.
    assert!(second.promoted);
    assert_eq!(
        registry.champion(Level::Deployment).unwrap().as_deref(),
        Some("deployment-0002")
    );
    assert_eq!(
        registry.rollback(Level::Deployment).unwrap(),
        "deployment-0001"
    );
    assert!(
        registry.rollback(Level::Deployment).is_err(),
        "nothing older to roll back to"
    );

    // A changed byte in the weights is refused.
    let path = registry
        .root()
        .join("deployment-0002")
        .join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let error = registry.load("deployment-0002").unwrap_err().to_string();
    assert!(error.contains("refusing"), "{error}");
    assert!(registry.load("deployment-0001").is_ok());
}

#[test]
fn the_change_model_trains_on_jit_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_history(dir.path(), 30);
    let options = RiskTrainOptions {
        level: Level::Change,
        ..quick(ModelKind::Logistic, 1)
    };
    let oracle = read_oracle(&dir.path().join("history/truth/changes.csv")).unwrap();
    let outcome = train_risk(&lake, &options, Some(&oracle)).unwrap();
    let metrics = &outcome.manifest.metrics;
    assert_eq!(outcome.manifest.version, "change-0001");
    assert_eq!(outcome.manifest.features.len(), 14);
    // The generator's bug rule is logistic in these metrics: the model must rank well above
    // chance.
    assert!(metrics.model.roc_auc.unwrap() > 0.65, "{metrics:?}");
    assert!(metrics.oracle.as_ref().unwrap().roc_auc.unwrap() > 0.65);
}

#[test]
fn judges_catch_injected_regressions_and_reruns_replace_their_verdicts() {
    use maestro_datasets::schema::{CanaryVerdict, RollbackVerdict};
    use maestro_models::canary::{CanaryConfig, judge_canaries};
    use maestro_models::rollback::{RollbackConfig, judge_rollbacks};
    use maestro_models::telemetry;

    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_history(dir.path(), 20);
    let deployments = telemetry::deployments(&lake).unwrap();
    let config = CanaryConfig::default();
    let canaries = judge_canaries(&lake, &config).unwrap();
    let catch = canaries.against_outcomes(&deployments);
    assert!(catch.regressions >= 3 && catch.healthy >= 20, "{catch:?}");
    assert_eq!(catch.regressions_failed, catch.regressions, "{catch:?}");
    assert!(catch.healthy_failed * 50 <= catch.healthy, "{catch:?}");

    let rollbacks = judge_rollbacks(
        &lake,
        &canaries,
        config.window_minutes,
        &RollbackConfig::default(),
    )
    .unwrap();
    assert_eq!(rollbacks.rows.len(), deployments.len());
    assert!(
        rollbacks.against_bad.recall().unwrap() >= 0.9,
        "{:?}",
        rollbacks.against_bad
    );
    assert!(
        rollbacks.against_bad.precision().unwrap() >= 0.9,
        "{:?}",
        rollbacks.against_bad
    );
    for row in rollbacks.rows.iter().filter(|r| r.should_roll_back) {
        assert_ne!(row.strategy, "none");
        assert!(row.minutes_to_detect.unwrap() > 0.0);
    }

    // A second run gives the same rows and replaces, never adds.
    let again = judge_canaries(&lake, &config).unwrap();
    assert_eq!(again.rows, canaries.rows);
    let count = |table| {
        lake.read_table(table)
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>()
    };
    assert_eq!(count(&CanaryVerdict::TABLE), canaries.rows.len());
    judge_rollbacks(
        &lake,
        &again,
        config.window_minutes,
        &RollbackConfig::default(),
    )
    .unwrap();
    assert_eq!(count(&RollbackVerdict::TABLE), deployments.len());
}
