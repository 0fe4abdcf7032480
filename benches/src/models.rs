//! Model benchmarks: training and scoring speed on one core, the risk model's and the canary
//! judge's quality on generated history, test selection's quality against its baselines and an
//! oracle, and how fast test selection answers for a large suite.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use maestro_datasets::Lake;
use maestro_datasets::generate::{GenerateOptions, generate};
use maestro_datasets::ingest::{IngestOptions, ingest};
use maestro_datasets::schema::{TestSelectionReplay, Ts};
use maestro_models::canary::{CanaryConfig, judge_canaries};
use maestro_models::network::{Matrix, ModelKind, Network, TrainConfig};
use maestro_models::risk::{RiskTrainOptions, read_oracle};
use maestro_models::scoring::{DateRange, Thresholds, score_deployments};
use maestro_models::telemetry;
use maestro_models::test_history::{
    ChangeFacts, History, Outcome, TestCase, TestOutcome, TestRun, read_changes,
};
use maestro_models::test_selection::{
    Candidate, ChangeRequest, ReplayOptions, Target, apfd, build_pairs, replay, select,
    select_for_change, train,
};
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

/// A scratch folder with `days` of generated history for `services` (its truth under `truth/`),
/// ingested into a lake there.
fn generated_lake(days: u32, services: usize) -> anyhow::Result<(tempfile::TempDir, Lake)> {
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
    Ok((scratch, lake))
}

/// Generates `days` of history for `services`, ingests it, trains both model kinds with the
/// oracle beside them, scores every deployment, and judges every canary.
pub fn risk_quality(days: u32, services: usize) -> anyhow::Result<()> {
    let (scratch, lake) = generated_lake(days, services)?;
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

/// Times `select_for_change` on one service's suite of `tests` tests, after the model and its
/// history are in memory: a synthetic history of 12 runs over 500 modules (each test covers its
/// module's files), a logistic model trained on its pairs, then 20 selections for changes of
/// 1–3 files. Prints the median and slowest answer.
pub fn select_tests_speed(tests: usize) -> anyhow::Result<()> {
    const MODULES: usize = 500;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let started = Instant::now();
    let suite: Vec<(String, usize)> = (0..tests)
        .map(|t| {
            let module = t % MODULES;
            (format!("svc.m{module}_test::test_{t:06}"), module)
        })
        .collect();
    let mut runs = Vec::new();
    let mut changes = HashMap::new();
    for r in 0..12 {
        let touched: Vec<usize> = (0..rng.random_range(1..4))
            .map(|_| rng.random_range(0..MODULES))
            .collect();
        let buggy = rng.random_bool(0.5);
        let change_id = format!("c{r}");
        changes.insert(
            change_id.clone(),
            ChangeFacts {
                service: "svc".into(),
                author: Some(format!("dev{}", r % 4)),
                files: touched.iter().map(|m| format!("src/m{m}/lib.rs")).collect(),
                size: 40.0,
                merged_at: i64::from(r) * 86_400_000_000,
            },
        );
        let outcomes = suite
            .iter()
            .map(|(id, module)| {
                let p = if buggy && touched.contains(module) {
                    0.6
                } else {
                    0.002
                };
                let (classname, name) = id.split_once("::").unwrap_or((id, id));
                TestOutcome {
                    case: Arc::new(TestCase {
                        test_id: id.clone(),
                        name: name.to_string(),
                        suite: "svc-tests".into(),
                        file: Some(format!("tests/m{module}_test.rs")),
                        classname: Some(classname.to_string()),
                    }),
                    outcome: if rng.random_bool(p) {
                        Outcome::Failed
                    } else {
                        Outcome::Passed
                    },
                    duration_s: rng.random_range(0.01..2.0),
                }
            })
            .collect();
        runs.push(TestRun {
            run_id: format!("r{r}"),
            change_id: Some(change_id),
            service: "svc".into(),
            at: i64::from(r) * 86_400_000_000,
            tests: outcomes,
        });
    }
    let (pairs, history) = build_pairs(&runs, &changes, History::default());
    let rows: Vec<usize> = (0..pairs.len()).collect();
    let options = ReplayOptions::default();
    let config = TrainConfig {
        kind: ModelKind::Logistic,
        max_epochs: 3,
        batch_size: 4096,
        ..options.train
    };
    let model = train(&pairs, &rows, &config, options.validation_share)?;
    println!(
        "select-tests on a suite of {tests} tests: history of {} runs and a model trained on {} pairs in {:.1} s",
        runs.len(),
        pairs.len(),
        started.elapsed().as_secs_f64()
    );
    let mut times = Vec::new();
    let mut selected = 0;
    for i in 0..20 {
        let request = ChangeRequest {
            service: Some("svc".into()),
            files: (0..1 + i % 3)
                .map(|_| format!("src/m{}/lib.rs", rng.random_range(0..MODULES)))
                .collect(),
            author: Some("dev1".into()),
            size: Some(25.0),
            at: 12 * 86_400_000_000,
            tests: None,
        };
        let started = Instant::now();
        let selection =
            select_for_change(&model, &history, &request, Target::Confidence(0.95), &[])?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        selected += selection.selected_tests;
    }
    times.sort_by(f64::total_cmp);
    println!(
        "  20 selections: median {:.1} ms, slowest {:.1} ms, {:.0} tests selected on average; peak memory {:.0} MB",
        times[times.len() / 2],
        times[times.len() - 1],
        selected as f64 / 20.0,
        peak_rss_mb()
    );
    Ok(())
}

/// Replays test selection over generated history at a budget of a third of the suite's time,
/// and sets it beside the baselines and an oracle that knows the generator's true failure
/// probabilities: the most any policy can catch in that time. A failing change whose only
/// failures are tests breaking in that very run (for reasons outside the change) cannot be
/// foreseen; the figures say how many there are and what each policy caught of the rest.
pub fn test_selection_quality(days: u32, services: usize) -> anyhow::Result<()> {
    let (scratch, lake) = generated_lake(days, services)?;
    let truth = TestTruth::read(scratch.path())?;
    let changes = read_changes(&lake)?;
    let budget = Target::TimeShare(1.0 / 3.0);
    let started = Instant::now();
    let report = replay(
        &lake,
        &ReplayOptions {
            target: budget,
            ..Default::default()
        },
    )?;
    println!(
        "replay: {} changes, {} failing, {} models trained in {:.1} s",
        report.changes,
        report.failing_changes,
        report.trainings,
        started.elapsed().as_secs_f64()
    );

    // Each replayed change's suite as the model's policy saw it, in run order.
    let mut runs: BTreeMap<(i64, String), Vec<&TestSelectionReplay>> = BTreeMap::new();
    for row in report.rows.iter().filter(|r| r.policy == "model") {
        runs.entry((row.started_at.0, row.run_id.clone()))
            .or_default()
            .push(row);
    }
    let mut figures: BTreeMap<&str, CaughtCounts> = BTreeMap::new();
    for rows in runs.values() {
        let change = changes.get(&rows[0].change_id);
        let buggy = truth.buggy.contains(&rows[0].change_id);
        let touches = |test_id: &str| {
            change.is_some_and(|c| {
                truth
                    .covers
                    .get(test_id)
                    .is_some_and(|covered| c.files.iter().any(|f| covered.contains(f)))
            })
        };
        let failed: Vec<bool> = rows.iter().map(|r| r.outcome == "failed").collect();
        if !failed.iter().any(|f| *f) {
            continue;
        }
        let at = rows[0].started_at;
        let foreseeable = rows
            .iter()
            .zip(&failed)
            .any(|(r, f)| *f && (touches(&r.test_id) || truth.known_broken(&r.test_id, at)));
        let oracle: Vec<Candidate> = rows
            .iter()
            .map(|r| Candidate {
                test_id: r.test_id.clone(),
                probability: match (touches(&r.test_id), buggy) {
                    _ if truth.known_broken(&r.test_id, at) => 1.0,
                    (true, true) => 0.65,
                    (true, false) => 0.08,
                    // A test breaking in this very run: 0.0005, the generator's breakage rate.
                    _ => 0.0005,
                },
                duration_s: truth
                    .mean_duration_s
                    .get(&r.test_id)
                    .copied()
                    .unwrap_or(1.0),
                seen_before: true,
                must_run: false,
            })
            .collect();
        let oracle = select(&oracle, budget);
        let caught_by =
            |selected: &dyn Fn(usize) -> bool| (0..rows.len()).any(|i| failed[i] && selected(i));
        let model_caught = caught_by(&|i| rows[i].selected);
        let oracle_caught = caught_by(&|i| oracle.selected(i));
        for (policy, caught) in [("model", model_caught), ("oracle", oracle_caught)] {
            figures.entry(policy).or_default().add(caught, foreseeable);
        }
        figures.entry("oracle apfd").or_default().apfd += apfd(&oracle.order, &failed);
    }
    let model = report.policies.iter().find(|p| p.policy == "model");
    let counts = figures.get("model").cloned().unwrap_or_default();
    println!(
        "{} failing changes: {} with a failure in a test covering a changed file or already broken, {} failing only in tests that broke in that very run",
        counts.failing,
        counts.foreseeable,
        counts.failing - counts.foreseeable
    );
    println!(
        "at a budget of a third of suite time (baselines get the model's time on each change):"
    );
    println!(
        "  {:<16} {:>10} {:>16} {:>28} {:>7}",
        "policy", "test time", "failing changes", "foreseeable failing changes", "APFD"
    );
    for p in &report.policies {
        let foreseen = (p.policy == "model").then(|| counts.foreseeable_share());
        println!(
            "  {:<16} {:>9.1}% {:>15.1}% {:>28} {:>7.3}",
            p.policy,
            100.0 * p.time_share,
            100.0 * p.failing_changes_caught,
            foreseen.map_or("".into(), |s| format!("{:.1}%", 100.0 * s)),
            p.apfd
        );
    }
    if let Some(oracle) = figures.get("oracle") {
        println!(
            "  {:<16} {:>10} {:>15.1}% {:>27.1}% {:>7.3}",
            "oracle",
            "<= 33.3%",
            100.0 * oracle.caught as f64 / oracle.failing.max(1) as f64,
            100.0 * oracle.foreseeable_share(),
            figures["oracle apfd"].apfd / oracle.failing.max(1) as f64
        );
    }
    if let Some(model) = model {
        let best_baseline = report
            .policies
            .iter()
            .filter(|p| p.policy != "model" && p.policy != "run_all")
            .map(|p| p.apfd)
            .fold(f64::NAN, f64::max);
        println!(
            "model APFD {:.3} against the best baseline's {:.3} (run_all {:.3})",
            model.apfd,
            best_baseline,
            report
                .policies
                .iter()
                .find(|p| p.policy == "run_all")
                .map_or(f64::NAN, |p| p.apfd)
        );
    }
    println!("confidence curve of the model:");
    for point in report.curve.iter().filter(|p| p.policy == "model") {
        println!(
            "  {:<18} {:>6.1}% of test time {:>6.1}% of failing changes",
            point.target,
            100.0 * point.time_share,
            100.0 * point.failing_changes_caught
        );
    }
    println!("peak memory {:.0} MB", peak_rss_mb());
    Ok(())
}

/// Failing changes, and how many of them a policy caught, overall and among the foreseeable.
#[derive(Debug, Clone, Default)]
struct CaughtCounts {
    failing: usize,
    caught: usize,
    foreseeable: usize,
    foreseeable_caught: usize,
    apfd: f64,
}

impl CaughtCounts {
    fn add(&mut self, caught: bool, foreseeable: bool) {
        self.failing += 1;
        self.caught += usize::from(caught);
        self.foreseeable += usize::from(foreseeable);
        self.foreseeable_caught += usize::from(caught && foreseeable);
    }

    fn foreseeable_share(&self) -> f64 {
        self.foreseeable_caught as f64 / self.foreseeable.max(1) as f64
    }
}

/// What the generator knows of its tests and changes (`truth/tests.csv`, `truth/changes.csv`,
/// `truth/test_breakages.csv`).
struct TestTruth {
    covers: HashMap<String, HashSet<String>>,
    mean_duration_s: HashMap<String, f64>,
    buggy: HashSet<String>,
    /// Per test, when it broke for reasons outside any change and when it was fixed.
    breakages: HashMap<String, Vec<(Ts, Ts)>>,
}

impl TestTruth {
    fn read(dir: &Path) -> anyhow::Result<TestTruth> {
        let mut truth = TestTruth {
            covers: HashMap::new(),
            mean_duration_s: HashMap::new(),
            buggy: HashSet::new(),
            breakages: HashMap::new(),
        };
        let mut tests = csv::Reader::from_path(dir.join("truth/tests.csv"))?;
        for record in tests.deserialize::<HashMap<String, String>>() {
            let record = record?;
            let id = record["test_id"].clone();
            truth.covers.insert(
                id.clone(),
                record["covered_files"]
                    .split(';')
                    .map(String::from)
                    .collect(),
            );
            truth
                .mean_duration_s
                .insert(id, record["mean_duration_s"].parse()?);
        }
        let mut changes = csv::Reader::from_path(dir.join("truth/changes.csv"))?;
        for record in changes.deserialize::<HashMap<String, String>>() {
            let record = record?;
            if record["is_buggy"] == "true" {
                truth.buggy.insert(record["change_id"].clone());
            }
        }
        let mut breakages = csv::Reader::from_path(dir.join("truth/test_breakages.csv"))?;
        for record in breakages.deserialize::<HashMap<String, String>>() {
            let record = record?;
            let time = |column: &str| {
                Ts::parse(&record[column]).with_context(|| format!("{column} is not a time"))
            };
            truth
                .breakages
                .entry(record["test_id"].clone())
                .or_default()
                .push((time("broken_at")?, time("fixed_at")?));
        }
        Ok(truth)
    }

    /// Whether `test_id` was known broken at `at`: it broke in an earlier run, not yet fixed.
    fn known_broken(&self, test_id: &str, at: Ts) -> bool {
        self.breakages.get(test_id).is_some_and(|spans| {
            spans
                .iter()
                .any(|(broke, fixed)| *broke < at && at < *fixed)
        })
    }
}
