//! Test-selection models in the registry: `models/tests/<version>/` holds `model.safetensors`,
//! `manifest.json`, `card.md` and `history.json`, the state of the walk over the lake's test
//! runs at training time, from which `select-tests` features a change without reading the lake.
//! `models/tests/champions.json` names the champion that CI is served from.
//!
//! Training holds back the latest runs: the model learns from the runs before them only, and
//! its manifest carries the replay figures on the held-back runs, beside the baselines'.

use std::path::Path;

use serde::{Deserialize, Serialize};

use maestro_datasets::WriteMode;
use maestro_datasets::lake::Lake;
use maestro_datasets::schema::{TestSelectionVerdict, Ts};

use crate::error::{Error, Result};
use crate::metrics::PlattScaling;
use crate::network::{ModelKind, TrainConfig, TrainReport};
use crate::registry::{CARD, MANIFEST, ModelFolder, micros_to_rfc3339, sha256_hex, to_json};
use crate::risk::{Scaler, Split};
use crate::scoring::DateRange;
use crate::test_health::test_health;
use crate::test_history::{History, TestRun, read_changes, read_runs};
use crate::test_selection::{
    ChangeRequest, CurvePoint, PairWindow, PolicyFigures, ReplayOptions, ReplayReport, Target,
    TestModel, Walk, replay_walk, select_for_change,
};

const HISTORY: &str = "history.json";

const DAY_MICROS: i64 = 86_400_000_000;

/// At most this many of the newest days are held back, so that the model a long history
/// registers has learnt from runs at most this old.
pub const MAX_HELD_BACK_DAYS: i64 = 14;

/// Where the held-back runs start: the newest `eval_fraction` of the runs for a change, at most
/// `MAX_HELD_BACK_DAYS` of them.
fn held_back_from(runs: &[TestRun], eval_fraction: f64) -> Result<i64> {
    let starts: Vec<i64> = runs
        .iter()
        .filter(|r| r.change_id.is_some())
        .map(|r| r.at)
        .collect();
    let Some(last) = starts.last() else {
        return Err(Error::Data(
            "no CI run for a change in the lake: nothing to learn from".into(),
        ));
    };
    let held_back = (((starts.len() as f64) * eval_fraction).ceil() as usize).max(1);
    let by_share = starts[starts.len().saturating_sub(held_back)];
    Ok(by_share.max(last - MAX_HELD_BACK_DAYS * DAY_MICROS))
}
/// The champions file keeps one key: test selection has one model family.
const CHAMPION_KEY: &str = "tests";

/// How the model measured on the held-back runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // fields named for what they hold
pub struct HeldBack {
    pub changes: usize,
    pub failing_changes: usize,
    pub failing_tests: usize,
    /// The model policy's target in the figures.
    pub target: Target,
    /// The model first, then the baselines.
    pub policies: Vec<PolicyFigures>,
    pub curve: Vec<CurvePoint>,
}

impl HeldBack {
    /// The model policy's figures.
    pub fn model(&self) -> Option<&PolicyFigures> {
        self.policies.iter().find(|p| p.policy == "model")
    }
}

/// What `manifest.json` says of a test-selection model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // fields named for what they hold
pub struct TestManifest {
    pub version: String,
    pub model: ModelKind,
    pub weights_sha256: String,
    pub history_sha256: String,
    /// Feature names, in the order the weights expect them.
    pub features: Vec<String>,
    pub scaler: Scaler,
    pub calibration: PlattScaling,
    /// The (change, test) pairs learned from; positives are real failures.
    pub training: Split,
    /// The replay on the runs after the training pairs.
    pub held_back: HeldBack,
    /// Runs and tests the saved history holds.
    pub history_runs_until: i64,
    pub history_tests: usize,
    pub hyperparameters: TrainConfig,
    pub training_report: TrainReport,
    pub seed: u64,
    pub code_version: String,
}

/// A stored model with the history it features changes from.
pub struct ServedModel {
    #[allow(missing_docs)]
    pub manifest: TestManifest,
    #[allow(missing_docs)]
    pub model: TestModel,
    #[allow(missing_docs)]
    pub history: History,
}

/// The registry of test-selection models in a lake.
pub struct TestRegistry {
    folder: ModelFolder,
}

impl TestRegistry {
    /// The registry under `<lake>/models/tests`.
    pub fn new(lake_root: &Path) -> TestRegistry {
        TestRegistry {
            folder: ModelFolder::new(lake_root, "tests"),
        }
    }

    /// The registry that serves CI/CD: the models of the last published run, or the lake's
    /// registry when nothing is published yet.
    pub fn serving(lake_root: &Path) -> TestRegistry {
        TestRegistry {
            folder: ModelFolder::serving(lake_root, "tests"),
        }
    }

    /// The registry's folder.
    pub fn root(&self) -> &Path {
        self.folder.root()
    }

    /// Every version, oldest first.
    pub fn versions(&self) -> Result<Vec<TestManifest>> {
        self.folder
            .version_names()?
            .iter()
            .map(|n| self.manifest(n))
            .collect()
    }

    /// The manifest of `version`.
    pub fn manifest(&self, version: &str) -> Result<TestManifest> {
        self.folder.manifest(version)
    }

    /// The card of `version`.
    pub fn card(&self, version: &str) -> Result<String> {
        self.folder.card(version)
    }

    /// The champion, if any.
    pub fn champion(&self) -> Result<Option<String>> {
        self.folder.champion(CHAMPION_KEY)
    }

    /// Makes `version` the champion.
    pub fn promote(&self, version: &str) -> Result<()> {
        self.manifest(version)?;
        self.folder.promote(CHAMPION_KEY, version)
    }

    /// Restores the previous champion; returns it.
    pub fn rollback(&self) -> Result<String> {
        self.folder.rollback(CHAMPION_KEY)
    }

    /// Loads `version` and its history, refusing files whose sha256 differs from the manifest's.
    pub fn load(&self, version: &str) -> Result<ServedModel> {
        let manifest = self.manifest(version)?;
        let network =
            self.folder
                .load_network(version, &manifest.weights_sha256, manifest.features.len())?;
        let history_bytes = self
            .folder
            .read_checked(version, HISTORY, &manifest.history_sha256)?;
        let history: History = serde_json::from_slice(&history_bytes)
            .map_err(|e| Error::Registry(format!("{version}: {HISTORY}: {e}")))?;
        let model = TestModel {
            kind: manifest.model,
            features: manifest.features.clone(),
            scaler: manifest.scaler.clone(),
            network,
            calibration: manifest.calibration,
            report: manifest.training_report.clone(),
        };
        Ok(ServedModel {
            manifest,
            model,
            history,
        })
    }

    /// Loads the champion; a clear error when there is none.
    pub fn load_champion(&self) -> Result<ServedModel> {
        let version = self.champion()?.ok_or_else(|| {
            Error::Registry(format!(
                "no test-selection model in {}: train one with `maestro train tests`",
                self.root().display()
            ))
        })?;
        self.load(&version)
    }
}

/// What `train_tests` did.
#[allow(missing_docs)] // fields named for what they hold
pub struct TestTrainOutcome {
    pub manifest: TestManifest,
    /// The champion before, and its APFD on the same held-back runs.
    pub challenged: Option<(String, f64)>,
    pub promoted: bool,
    pub reason: String,
    /// Rows written to `test_health`, and how many suggest quarantine or are redundant.
    pub health_rows: usize,
    pub quarantine: usize,
    pub redundant: usize,
    /// The new model's replay on the held-back runs, beside the baselines.
    pub replay: ReplayReport,
}

/// Trains a test-selection model on the newest `max_training_pairs` pairs before the latest
/// `eval_fraction` of the runs for a change (at most `MAX_HELD_BACK_DAYS` of them), replays it
/// on those, stores it with the whole history, and promotes it unless the champion ranks the
/// same held-back runs better (APFD). Writes every test's health to `test_health`. The replay
/// comes back in the outcome, its rankings kept when `options.keep_rows` is set.
pub fn train_tests(
    lake: &Lake,
    options: &ReplayOptions,
    eval_fraction: f64,
) -> Result<TestTrainOutcome> {
    let runs = read_runs(lake)?;
    let cut = held_back_from(&runs, eval_fraction)?;
    let window = PairWindow {
        from: cut,
        before: options.max_training_pairs,
    };
    let walk = Walk::of_runs(lake, runs, window)?;
    let pairs = &walk.pairs;
    let held_back_options = ReplayOptions {
        from: Some(cut),
        to: None,
        // Train once, on the pairs before the cut.
        min_history_days: 0,
        retrain_days: i64::MAX / (2 * DAY_MICROS),
        ..options.clone()
    };
    let report = replay_walk(&walk, &held_back_options)?;
    let (model, trained_on) = report
        .last_model
        .clone()
        .ok_or_else(|| Error::Data("no model was trained: no held-back run".into()))?;
    let held_back = HeldBack {
        changes: report.changes,
        failing_changes: report.failing_changes,
        failing_tests: report.failing_tests,
        target: options.target,
        policies: report.policies.clone(),
        curve: report.curve.clone(),
    };
    let new_apfd = held_back.model().map_or(f64::NAN, |m| m.apfd);

    let registry = TestRegistry::new(lake.root());
    let champion = match registry.champion()? {
        Some(version) => {
            let served = registry.load(&version)?;
            let same_features = served.model.features == model.features;
            let apfd = if same_features {
                let replayed = replay_walk(
                    &walk,
                    &ReplayOptions {
                        fixed_model: Some(served.model),
                        keep_rows: false,
                        ..held_back_options.clone()
                    },
                )?;
                replayed
                    .policies
                    .iter()
                    .find(|p| p.policy == "model")
                    .map_or(f64::NAN, |p| p.apfd)
            } else {
                f64::NAN
            };
            Some((version, apfd))
        }
        None => None,
    };
    let (promoted, reason) = match &champion {
        None => (true, "no champion yet".to_string()),
        Some((version, apfd)) if apfd.is_nan() => (
            true,
            format!("the champion {version} takes other features: it cannot rank these runs"),
        ),
        Some((version, apfd)) => (
            new_apfd >= *apfd,
            format!(
                "APFD on the same held-back runs: new {new_apfd:.4} vs champion {version} {apfd:.4}"
            ),
        ),
    };

    let version = registry.folder.next_version("tests");
    let history_bytes = serde_json::to_vec(&walk.history)
        .map_err(|e| Error::Registry(format!("{HISTORY}: {e}")))?;
    let positives = trained_on.iter().filter(|i| pairs.failed[**i]).count();
    let training = Split {
        rows: trained_on.len(),
        positives,
        from: trained_on.first().map_or(0, |i| pairs.at[*i]),
        to: trained_on.last().map_or(0, |i| pairs.at[*i]),
    };
    let mut stored = None;
    registry
        .folder
        .store(&version, &model.network, |weights_sha256| {
            let manifest = TestManifest {
                version: version.clone(),
                model: model.kind,
                weights_sha256,
                history_sha256: sha256_hex(&history_bytes),
                features: model.features.clone(),
                scaler: model.scaler.clone(),
                calibration: model.calibration,
                training,
                held_back,
                history_runs_until: walk.runs.last().map_or(0, |r| r.at),
                history_tests: walk.history.test_count(),
                hyperparameters: options.train.clone(),
                training_report: model.report.clone(),
                seed: options.train.seed,
                code_version: env!("CARGO_PKG_VERSION").to_string(),
            };
            let files = vec![
                (MANIFEST, to_json(&manifest)?),
                (CARD, card(&manifest).into_bytes()),
                (HISTORY, history_bytes.clone()),
            ];
            stored = Some(manifest);
            Ok(files)
        })?;
    let manifest =
        stored.ok_or_else(|| Error::Registry(format!("{version}: no manifest written")))?;
    if promoted {
        registry.promote(&version)?;
    }
    let health = test_health(&walk);
    let mut txn = lake.begin()?;
    txn.write(&health, WriteMode::Upsert)?;
    txn.commit()?;
    Ok(TestTrainOutcome {
        manifest,
        challenged: champion,
        promoted,
        reason,
        health_rows: health.len(),
        quarantine: health
            .iter()
            .filter(|h| h.suggestion == "quarantine")
            .count(),
        redundant: health.iter().filter(|h| h.redundant_with.is_some()).count(),
        replay: report,
    })
}

/// What `select_changes` did.
#[allow(missing_docs)] // fields named for what they hold
pub struct ChangeSelections {
    pub model_version: String,
    pub verdicts: Vec<TestSelectionVerdict>,
    /// Changes of the dates whose service has no known suite: nothing to select from.
    pub without_suite: usize,
}

/// The selection `served` makes for every change of the lake merged on the dates of `range`,
/// as CI would have asked at its merge time.
pub fn select_changes(
    lake: &Lake,
    served: &ServedModel,
    target: Target,
    must_run: &[String],
    range: &DateRange,
) -> Result<ChangeSelections> {
    let mut changes: Vec<(String, crate::test_history::ChangeFacts)> = read_changes(lake)?
        .into_iter()
        .filter(|(_, c)| range.contains(&Ts(c.merged_at).date()))
        .collect();
    changes.sort_by(|a, b| (a.1.merged_at, &a.0).cmp(&(b.1.merged_at, &b.0)));
    let mut verdicts = Vec::with_capacity(changes.len());
    let mut without_suite = 0;
    for (change_id, change) in changes {
        if served.history.suite(&change.service).is_empty() {
            without_suite += 1;
            continue;
        }
        let request = ChangeRequest {
            service: Some(change.service.clone()),
            files: change.files.clone(),
            author: change.author.clone(),
            size: Some(change.size),
            at: change.merged_at,
            tests: None,
        };
        let selection =
            select_for_change(&served.model, &served.history, &request, target, must_run)?;
        verdicts.push(TestSelectionVerdict {
            change_id,
            service: change.service,
            merged_at: Ts(change.merged_at),
            model_version: served.manifest.version.clone(),
            target: target.label(),
            confidence: selection.confidence,
            selected_tests: selection.selected_tests as i64,
            suite_tests: selection.tests.len() as i64,
            selected_seconds: selection.selected_seconds,
            suite_seconds: selection.total_seconds,
            tests: selection
                .tests
                .iter()
                .filter(|t| t.selected)
                .map(|t| t.test_id.clone())
                .collect(),
        });
    }
    Ok(ChangeSelections {
        model_version: served.manifest.version.clone(),
        verdicts,
        without_suite,
    })
}

/// The model card.
fn card(m: &TestManifest) -> String {
    let target = match m.held_back.target {
        Target::Confidence(c) => format!("a confidence target of {c}"),
        Target::TimeShare(s) => format!("a budget of {:.0}% of suite time", 100.0 * s),
        Target::Seconds(s) => format!("a budget of {s:.0} s per change"),
    };
    let mut text = format!(
        "# Test-selection model {version}\n\n\
         ## Intended use\n\n\
         Estimates, for a change, the probability that each test of its service's suite fails, \
         so that CI runs the tests most likely to fail per second first and can stop at a \
         confidence target or a time budget (`maestro select-tests`). It orders and trims a \
         suite; it does not replace the full suite that should still run before a release.\n\n\
         ## Model\n\n\
         {kind} over {n} features of a (change, test) pair, standardised with the training \
         pairs' mean and deviation, calibrated (Platt) on the latest 20% of them. Seed {seed}; \
         trained for {epochs} epochs, best at epoch {best}.\n\n\
         ## Data\n\n\
         {rows} pairs of full suite runs ({pos} real failures; a failure that passed on retry is \
         flaky, not failed) from {from} to {to}. The saved history holds {tests} tests and every \
         run until {until}.\n\n\
         ## Held-back replay\n\n\
         The model ranked the {changes} changes after its training data ({failing} of them with \
         a failing test), at {target}. Baselines run for the same time as the model's selection \
         on each change.\n\n\
         | policy | test time | failing tests caught | failing changes caught | APFD |\n\
         |---|---|---|---|---|\n",
        version = m.version,
        kind = match m.model {
            ModelKind::Logistic => "Logistic regression".to_string(),
            ModelKind::Mlp => format!(
                "A multi-layer perceptron (hidden layers {:?})",
                m.hyperparameters.hidden
            ),
        },
        n = m.features.len(),
        seed = m.seed,
        epochs = m.training_report.epochs_run,
        best = m.training_report.best_epoch,
        rows = m.training.rows,
        pos = m.training.positives,
        from = micros_to_rfc3339(m.training.from),
        to = micros_to_rfc3339(m.training.to),
        tests = m.history_tests,
        until = micros_to_rfc3339(m.history_runs_until),
        changes = m.held_back.changes,
        failing = m.held_back.failing_changes,
    );
    for p in &m.held_back.policies {
        text.push_str(&format!(
            "| {} | {:.1}% | {:.1}% | {:.1}% | {:.3} |\n",
            p.policy,
            100.0 * p.time_share,
            100.0 * p.failing_tests_caught,
            100.0 * p.failing_changes_caught,
            p.apfd
        ));
    }
    text.push_str(
        "\n### Confidence curve\n\n| policy | target | test time | failing tests caught | failing changes caught |\n|---|---|---|---|---|\n",
    );
    for point in &m.held_back.curve {
        text.push_str(&format!(
            "| {} | {} | {:.1}% | {:.1}% | {:.1}% |\n",
            point.policy,
            point.target,
            100.0 * point.time_share,
            100.0 * point.failing_tests_caught,
            100.0 * point.failing_changes_caught
        ));
    }
    text.push_str(
        "\n## Limitations\n\n\
         - A test never seen before has no history: it is always selected, never ranked.\n\
         - The confidence assumes tests fail independently; tests that fail together make it \
           optimistic. The curve above shows what each target really caught.\n\
         - A test that breaks for reasons outside the change (a broken environment, a \
           dependency's release) is ranked high from its next run on, by its recent failures; \
           the run in which it breaks cannot be foreseen.\n\
         - Features come from the saved history: retrain to learn from newer runs.\n",
    );
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn run_on(day: i64) -> TestRun {
        TestRun {
            run_id: format!("r{day}"),
            change_id: Some(format!("c{day}")),
            service: "api".into(),
            at: day * DAY_MICROS,
            tests: Vec::new(),
        }
    }

    #[test]
    fn at_most_fourteen_days_are_held_back() {
        // 10 days: the newest 20% (2 runs) start at day 8.
        let short: Vec<TestRun> = (0..10).map(run_on).collect();
        assert_eq!(held_back_from(&short, 0.2).unwrap(), 8 * DAY_MICROS);
        // 100 days: 20% would be 20 days; the cap keeps the last 14.
        let long: Vec<TestRun> = (0..100).map(run_on).collect();
        assert_eq!(
            held_back_from(&long, 0.2).unwrap(),
            (99 - MAX_HELD_BACK_DAYS) * DAY_MICROS
        );
        assert!(held_back_from(&[], 0.2).is_err());
    }
}
