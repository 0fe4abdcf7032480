//! Model benchmarks: training and scoring speed on one core, and the risk model's and the
//! canary judge's quality on generated history.

use std::time::Instant;

use maestro_datasets::Lake;
use maestro_datasets::generate::{GenerateOptions, generate};
use maestro_datasets::ingest::{IngestOptions, ingest};
use maestro_models::canary::{CanaryConfig, judge_canaries};
use maestro_models::network::{Matrix, ModelKind, Network, TrainConfig};
use maestro_models::risk::{RiskTrainOptions, read_oracle};
use maestro_models::scoring::{DateRange, Thresholds, score_deployments};
use maestro_models::telemetry;
use maestro_models::train::train_risk;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::peak_rss_mb;

/// Rows with standardised features and labels drawn from a known logistic model.
fn synthetic(rows: usize, columns: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let truth: Vec<f32> = (0..columns).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut x = Vec::with_capacity(rows * columns);
    let mut y = Vec::with_capacity(rows);
    for _ in 0..rows {
        let mut logit = -1.5f32;
        for w in &truth {
            let v: f32 = rng.random_range(-1.7..1.7);
            logit += w * v;
            x.push(v);
        }
        let p = 1.0 / (1.0 + (-logit).exp());
        y.push(if rng.random::<f32>() < p { 1.0 } else { 0.0 });
    }
    (x, y)
}

/// Seconds per epoch of logistic regression and the MLP, and scoring rows per second. Run with
/// RAYON_NUM_THREADS=1 for one core (candle's CPU kernels take their thread count from it).
pub fn training_speed(rows: usize, columns: usize) -> anyhow::Result<()> {
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    println!("training on {rows} rows x {columns} features, threads: {threads}");
    let (x, y) = synthetic(rows, columns, 7);
    let (vx, vy) = synthetic(rows / 20, columns, 8);
    let train = Matrix {
        x: &x,
        y: &y,
        columns,
    };
    let valid = Matrix {
        x: &vx,
        y: &vy,
        columns,
    };
    for (kind, batch_size, epochs) in [
        (ModelKind::Logistic, 256, 2),
        (ModelKind::Logistic, 4096, 3),
        (ModelKind::Mlp, 256, 1),
        (ModelKind::Mlp, 4096, 2),
    ] {
        let config = TrainConfig {
            kind,
            hidden: vec![64, 64],
            max_epochs: epochs,
            batch_size,
            patience: epochs,
            ..Default::default()
        };
        let started = Instant::now();
        let (network, report) = Network::train(&config, &train, &valid)?;
        let per_epoch = started.elapsed().as_secs_f64() / report.epochs_run as f64;
        println!(
            "  {:<8} batch {batch_size:>5}: {per_epoch:>6.2} s per epoch ({:.0} rows/s), validation loss {:.4}",
            kind.name(),
            rows as f64 / per_epoch,
            report.best_validation_loss
        );
        let started = Instant::now();
        let probabilities = network.predict(&x, columns)?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "  {:<8} scoring: {} rows in {seconds:.2} s, {:.0} rows/s",
            kind.name(),
            probabilities.len(),
            probabilities.len() as f64 / seconds
        );
    }
    println!("peak memory {:.0} MB", peak_rss_mb());
    Ok(())
}

/// Generates `days` of history for `services`, ingests it, trains both model kinds with the
/// oracle beside them, scores every deployment, and judges every canary.
pub fn risk_quality(days: u32, services: usize) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let started = Instant::now();
    generate(
        scratch.path(),
        &GenerateOptions {
            days,
            services,
            ..Default::default()
        },
    )?;
    let lake = Lake::open(scratch.path().join("lake"))?;
    ingest(
        &lake,
        &[scratch.path().join("sources")],
        &IngestOptions::default(),
        &|_| {},
    )?;
    println!(
        "{days} days x {services} services generated and ingested in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let oracle = read_oracle(&scratch.path().join("truth/deployments.csv"))?;
    for kind in [ModelKind::Logistic, ModelKind::Mlp] {
        let options = RiskTrainOptions {
            train: TrainConfig {
                kind,
                ..Default::default()
            },
            ..Default::default()
        };
        let started = Instant::now();
        let outcome = train_risk(&lake, &options, Some(&oracle))?;
        let m = &outcome.manifest.metrics;
        let auc = |e: &maestro_models::metrics::Evaluation| e.roc_auc.unwrap_or(f64::NAN);
        let oracle_auc = m.oracle.as_ref().map_or(f64::NAN, auc);
        let gap_closed = (auc(&m.model) - 0.5) / (oracle_auc - 0.5);
        println!(
            "  {:<8} ROC-AUC {:.3} on {} evaluation rows; lines-added baseline {:.3}, JIT logistic baseline {:.3}, oracle {:.3}: closes {:.0}% of the gap, beats both baselines: {} ({:.1} s)",
            kind.name(),
            auc(&m.model),
            outcome.manifest.evaluation.rows,
            auc(&m.baseline_lines_added),
            auc(&m.baseline_jit_logistic),
            oracle_auc,
            100.0 * gap_closed,
            auc(&m.model) > auc(&m.baseline_lines_added)
                && auc(&m.model) > auc(&m.baseline_jit_logistic),
            started.elapsed().as_secs_f64()
        );
    }
    let started = Instant::now();
    let scored = score_deployments(&lake, &Thresholds::default(), &DateRange::default())?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "  scoring the lake (features, probabilities, attributions, write): {} deployments in {seconds:.2} s, {:.0} rows/s",
        scored.verdicts.len(),
        scored.verdicts.len() as f64 / seconds
    );
    let started = Instant::now();
    let canaries = judge_canaries(&lake, &CanaryConfig::default())?;
    let catch = canaries.against_outcomes(&telemetry::deployments(&lake)?);
    println!(
        "  canary judge: {} injected regressions, {} caught ({:.1}%); {} healthy canaries, {} failed ({:.1}%); {:.2} s",
        catch.regressions,
        catch.regressions_failed,
        100.0 * catch.regressions_failed as f64 / catch.regressions.max(1) as f64,
        catch.healthy,
        catch.healthy_failed,
        100.0 * catch.healthy_failed as f64 / catch.healthy.max(1) as f64,
        started.elapsed().as_secs_f64()
    );
    println!("peak memory {:.0} MB", peak_rss_mb());
    Ok(())
}
