//! `maestro train risk`: train the deployment- or change-risk model on the lake's history,
//! register it, and print how it measured against its baselines and the champion.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use maestro_datasets::Lake;
use maestro_models::metrics::Evaluation;
use maestro_models::network::{ModelKind, TrainConfig};
use maestro_models::risk::{RiskTrainOptions, read_oracle};
use maestro_models::test_registry::{TestTrainOutcome, train_tests};
use maestro_models::test_selection::{ReplayOptions, ReplayReport, Target};
use maestro_models::train::{TrainOutcome, train_risk};

use crate::Outcome;
use crate::cli::{ModelArg, TrainCommand, TrainRiskArgs};
use crate::config::{self, RiskConfig};
use crate::output::print;

pub fn run(command: &TrainCommand, config_path: Option<&Path>) -> anyhow::Result<Outcome> {
    match command {
        TrainCommand::Risk(args) => {
            let config = config::load(config_path)?;
            let options = options(args, &config.risk)?;
            let lake = Lake::open_existing(&args.lake.lake)?;
            let oracle = args
                .oracle
                .as_deref()
                .map(read_oracle)
                .transpose()
                .context("reading the oracle")?;
            let outcome = train_risk(&lake, &options, oracle.as_ref())
                .with_context(|| format!("training the {} risk model", options.level.name()))?;
            print(&describe(&outcome))?;
            Ok(Outcome::Ok)
        }
        TrainCommand::Tests(args) => {
            if !(0.05..=0.5).contains(&args.eval_fraction) {
                anyhow::bail!(
                    "--eval-fraction {} is outside 0.05..0.5",
                    args.eval_fraction
                );
            }
            if !(args.confidence > 0.0 && args.confidence <= 1.0) {
                anyhow::bail!("--confidence must be above 0 and at most 1");
            }
            let lake = Lake::open_existing(&args.lake.lake)?;
            let defaults = ReplayOptions::default();
            let options = ReplayOptions {
                target: Target::Confidence(args.confidence),
                train: TrainConfig {
                    seed: args.seed.unwrap_or(defaults.train.seed),
                    ..defaults.train.clone()
                },
                // Only the figures of the held-back replay are printed.
                keep_rows: false,
                ..defaults
            };
            let outcome = train_tests(&lake, &options, args.eval_fraction)
                .context("training the test-selection model")?;
            print(&describe_tests(&outcome))?;
            Ok(Outcome::Ok)
        }
    }
}

/// What a user reads after training a test-selection model.
pub(crate) fn describe_tests(outcome: &TestTrainOutcome) -> String {
    let m = &outcome.manifest;
    let mut text = format!(
        "trained {} ({} over {} features) on {} pairs ({} failures); history of {} tests saved with it
",
        m.version,
        m.model.name(),
        m.features.len(),
        m.training.rows,
        m.training.positives,
        m.history_tests,
    );
    let report = ReplayReport {
        changes: m.held_back.changes,
        failing_changes: m.held_back.failing_changes,
        failing_tests: m.held_back.failing_tests,
        trainings: 1,
        first_training_pairs: m.training.rows,
        policies: m.held_back.policies.clone(),
        curve: m.held_back.curve.clone(),
        rows: Vec::new(),
        last_model: None,
    };
    text.push_str("held back: ");
    text.push_str(&super::eval::describe(&report, m.held_back.target));
    let _ = writeln!(
        text,
        "{}: {}",
        if outcome.promoted {
            "promoted to champion"
        } else {
            "not promoted: the champion stays"
        },
        outcome.reason
    );
    let _ = writeln!(
        text,
        "test_health: {} tests, {} to quarantine as flaky, {} redundant (failed in exactly the same runs as another)",
        outcome.health_rows, outcome.quarantine, outcome.redundant
    );
    text
}

/// Flags over the configuration over the defaults.
pub(crate) fn options(
    args: &TrainRiskArgs,
    config: &RiskConfig,
) -> anyhow::Result<RiskTrainOptions> {
    let defaults = RiskTrainOptions::default();
    let train_defaults = defaults.train.clone();
    let level = super::models::level(args.level);
    let kind = match args.model {
        Some(ModelArg::Logistic) => ModelKind::Logistic,
        Some(ModelArg::Mlp) => ModelKind::Mlp,
        None => config.model.unwrap_or(train_defaults.kind),
    };
    let eval_fraction = args
        .eval_fraction
        .or(config.eval_fraction)
        .unwrap_or(defaults.eval_fraction);
    if !(0.05..=0.5).contains(&eval_fraction) {
        anyhow::bail!("--eval-fraction {eval_fraction} is outside 0.05..0.5");
    }
    Ok(RiskTrainOptions {
        level,
        train: TrainConfig {
            kind,
            hidden: config.hidden.clone().unwrap_or(train_defaults.hidden),
            max_epochs: config.max_epochs.unwrap_or(train_defaults.max_epochs),
            batch_size: config.batch_size.unwrap_or(train_defaults.batch_size),
            learning_rate: config.learning_rate.unwrap_or(train_defaults.learning_rate),
            weight_decay: config.weight_decay.unwrap_or(train_defaults.weight_decay),
            patience: config.patience.unwrap_or(train_defaults.patience),
            seed: args.seed.or(config.seed).unwrap_or(train_defaults.seed),
        },
        eval_fraction,
        label_horizon_hours: config
            .incident_window_hours
            .unwrap_or(defaults.label_horizon_hours),
        ..defaults
    })
}

fn metric(value: Option<f64>) -> String {
    value.map_or("n/a".into(), |v| format!("{v:.3}"))
}

fn evaluation_line(name: &str, e: &Evaluation) -> String {
    format!(
        "  {name:<28} {:>7} {:>7} {:>7.4} {:>10} {:>6}\n",
        metric(e.roc_auc),
        metric(e.pr_auc),
        e.brier,
        metric(e.recall_at_20pct_effort),
        metric(e.popt)
    )
}

/// What a user reads after training.
pub(crate) fn describe(outcome: &TrainOutcome) -> String {
    let m = &outcome.manifest;
    let mut text = format!(
        "trained {} ({} over {} features): {} training rows, {} validation, {} evaluation ({} bad)\n",
        m.version,
        m.model.name(),
        m.features.len(),
        m.training.rows,
        m.validation.rows,
        m.evaluation.rows,
        m.evaluation.positives
    );
    let _ = writeln!(
        text,
        "  {:<28} {:>7} {:>7} {:>7} {:>10} {:>6}",
        "on the evaluation rows", "ROC-AUC", "PR-AUC", "Brier", "recall@20%", "Popt"
    );
    text.push_str(&evaluation_line("this model", &m.metrics.model));
    text.push_str(&evaluation_line(
        "baseline: lines added",
        &m.metrics.baseline_lines_added,
    ));
    text.push_str(&evaluation_line(
        "baseline: JIT logistic",
        &m.metrics.baseline_jit_logistic,
    ));
    if let Some(oracle) = &m.metrics.oracle {
        text.push_str(&evaluation_line("oracle", oracle));
        if let (Some(model), Some(best)) = (m.metrics.model.roc_auc, oracle.roc_auc)
            && best > 0.5
        {
            let _ = writeln!(
                text,
                "  the model closes {:.0}% of the gap between random (0.5) and the oracle",
                100.0 * (model - 0.5) / (best - 0.5)
            );
        }
    }
    let _ = writeln!(
        text,
        "{}: {}",
        if outcome.promoted {
            "promoted to champion"
        } else {
            "not promoted: the champion stays"
        },
        outcome.reason
    );
    text
}
