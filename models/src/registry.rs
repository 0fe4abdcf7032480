//! The model registry: `models/risk/<version>/` in the lake holds `model.safetensors`,
//! `manifest.json` and `card.md`; `models/risk/champions.json` holds, per level, the champion
//! and the champions before it (for rollback).
//!
//! A version folder is written under a temporary name, fsynced and renamed, so it is whole or
//! absent. Loading checks the weights against the sha256 in the manifest and refuses a mismatch.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use maestro_datasets::lake::{replace_file, sync_dir, write_synced};

use crate::error::{Error, Result};
use crate::features::Level;
use crate::metrics::{Evaluation, PlattScaling};
use crate::network::{ModelKind, Network, TrainConfig, TrainReport};
use crate::risk::{RiskEvaluationReport, RiskModel, Scaler, Split, TrainedRisk};

const WEIGHTS: &str = "model.safetensors";
pub(crate) const MANIFEST: &str = "manifest.json";
pub(crate) const CARD: &str = "card.md";
const CHAMPIONS: &str = "champions.json";

/// What `manifest.json` says of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // fields named for what they hold
pub struct Manifest {
    pub version: String,
    pub level: Level,
    pub model: ModelKind,
    pub weights_sha256: String,
    /// Feature names, in the order the weights expect them.
    pub features: Vec<String>,
    pub scaler: Scaler,
    pub calibration: PlattScaling,
    pub training: Split,
    pub validation: Split,
    pub evaluation: Split,
    pub training_data_sha256: String,
    pub metrics: RiskEvaluationReport,
    pub hyperparameters: TrainConfig,
    pub training_report: TrainReport,
    pub seed: u64,
    pub code_version: String,
}

/// One family of versioned models under `<lake>/models/<family>/`: version folders written
/// whole or not at all, weights checked against their manifest on load, and a champions file
/// (per key, the champion and the champions before it).
#[derive(Debug, Clone)]
pub(crate) struct ModelFolder {
    root: PathBuf,
}

/// Champions per key: the last entry is the current one.
type Champions = BTreeMap<String, Vec<String>>;

impl ModelFolder {
    pub(crate) fn new(lake_root: &Path, family: &str) -> ModelFolder {
        ModelFolder {
            root: lake_root.join("models").join(family),
        }
    }

    /// The family as the nightly run last published it (`<lake>/published/latest`), or the
    /// lake's own registry when nothing is published yet.
    pub(crate) fn serving(lake_root: &Path, family: &str) -> ModelFolder {
        let published = lake_root.join("published").join("latest");
        let folder = ModelFolder::new(&published, family);
        if folder.root.join(CHAMPIONS).exists() {
            folder
        } else {
            ModelFolder::new(lake_root, family)
        }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Names of every whole version, in order.
    pub(crate) fn version_names(&self) -> Result<Vec<String>> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&self.root, e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(MANIFEST).is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    /// The manifest of `version`.
    pub(crate) fn manifest<T: DeserializeOwned>(&self, version: &str) -> Result<T> {
        let path = self.root.join(version).join(MANIFEST);
        let text = fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Registry(format!(
                "no model version {version:?} in {}",
                self.root.display()
            )),
            _ => Error::io(&path, e),
        })?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Registry(format!("{}: not a model manifest: {e}", path.display())))
    }

    /// The card of `version`.
    pub(crate) fn card(&self, version: &str) -> Result<String> {
        let path = self.root.join(version).join(CARD);
        fs::read_to_string(&path).map_err(|e| Error::io(&path, e))
    }

    /// The bytes of `file` of `version`, refused when their sha256 is not `sha256`.
    pub(crate) fn read_checked(&self, version: &str, file: &str, sha256: &str) -> Result<Vec<u8>> {
        let path = self.root.join(version).join(file);
        let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let actual = sha256_hex(&bytes);
        if actual != sha256 {
            return Err(Error::Registry(format!(
                "{}: sha256 {actual} differs from the manifest's {sha256}: the file was changed; refusing to load it",
                path.display(),
            )));
        }
        Ok(bytes)
    }

    /// The network of `version`, checked against the manifest's sha256 and feature count.
    pub(crate) fn load_network(
        &self,
        version: &str,
        sha256: &str,
        features: usize,
    ) -> Result<Network> {
        let bytes = self.read_checked(version, WEIGHTS, sha256)?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
        let network = Network::from_tensors(&tensors)?;
        if network.columns() != features {
            return Err(Error::Registry(format!(
                "{version}: the weights take {} features but the manifest names {features}",
                network.columns(),
            )));
        }
        Ok(network)
    }

    /// The next version name with `prefix`: `<prefix>-0001`, `<prefix>-0002`...
    pub(crate) fn next_version(&self, prefix: &str) -> String {
        let prefix = format!("{prefix}-");
        let mut highest = 0u32;
        if let Ok(entries) = fs::read_dir(&self.root) {
            for entry in entries.filter_map(|e| e.ok()) {
                let name = entry.file_name().to_string_lossy().into_owned();
                // Staged folders count too, so a half-written version's name is never reused.
                let name = name.trim_start_matches(".staging-");
                if let Some(n) = name.strip_prefix(&prefix).and_then(|n| n.parse().ok()) {
                    highest = highest.max(n);
                }
            }
        }
        format!("{prefix}{:04}", highest + 1)
    }

    /// Writes `version`: the network's weights, then the files `describe` makes from the
    /// weights' sha256 (the manifest and card among them), all staged, fsynced and renamed.
    pub(crate) fn store(
        &self,
        version: &str,
        network: &Network,
        describe: impl FnOnce(String) -> Result<Vec<(&'static str, Vec<u8>)>>,
    ) -> Result<()> {
        fs::create_dir_all(&self.root).map_err(|e| Error::io(&self.root, e))?;
        let staged = self.root.join(format!(".staging-{version}"));
        if staged.exists() {
            fs::remove_dir_all(&staged).map_err(|e| Error::io(&staged, e))?;
        }
        fs::create_dir_all(&staged).map_err(|e| Error::io(&staged, e))?;
        let weights_path = staged.join(WEIGHTS);
        candle_core::safetensors::save(&network.tensors(), &weights_path)?;
        let weights = fs::read(&weights_path).map_err(|e| Error::io(&weights_path, e))?;
        for (name, bytes) in describe(sha256_hex(&weights))? {
            write_synced(&staged.join(name), &bytes)?;
        }
        sync_dir(&weights_path)?;
        let target = self.root.join(version);
        fs::rename(&staged, &target).map_err(|e| Error::io(&target, e))?;
        Ok(sync_dir(&self.root)?)
    }

    fn champions(&self) -> Result<Champions> {
        let path = self.root.join(CHAMPIONS);
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| Error::Registry(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Champions::new()),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn save_champions(&self, champions: &Champions) -> Result<()> {
        let json = serde_json::to_string_pretty(champions)
            .map_err(|e| Error::Registry(format!("champions: {e}")))?;
        Ok(replace_file(&self.root.join(CHAMPIONS), json.as_bytes())?)
    }

    /// The champion under `key`, if any.
    pub(crate) fn champion(&self, key: &str) -> Result<Option<String>> {
        Ok(self.champions()?.get(key).and_then(|h| h.last().cloned()))
    }

    /// Makes `version` the champion under `key`.
    pub(crate) fn promote(&self, key: &str, version: &str) -> Result<()> {
        let mut champions = self.champions()?;
        let history = champions.entry(key.to_string()).or_default();
        if history.last().map(String::as_str) != Some(version) {
            history.push(version.to_string());
        }
        self.save_champions(&champions)
    }

    /// Restores the previous champion under `key`; returns it.
    pub(crate) fn rollback(&self, key: &str) -> Result<String> {
        let mut champions = self.champions()?;
        let history = champions.entry(key.to_string()).or_default();
        if history.len() < 2 {
            return Err(Error::Registry(format!(
                "no earlier {key} champion to roll back to"
            )));
        }
        history.pop();
        let restored = history.last().cloned().unwrap_or_default();
        self.save_champions(&champions)?;
        Ok(restored)
    }
}

/// The registry of risk models in a lake.
pub struct Registry {
    folder: ModelFolder,
}

impl Registry {
    /// The registry under `<lake>/models/risk`.
    pub fn new(lake_root: &Path) -> Registry {
        Registry {
            folder: ModelFolder::new(lake_root, "risk"),
        }
    }

    /// The registry that serves CI/CD: the models of the last published run, or the lake's
    /// registry when nothing is published yet.
    pub fn serving(lake_root: &Path) -> Registry {
        Registry {
            folder: ModelFolder::serving(lake_root, "risk"),
        }
    }

    /// The registry's folder.
    pub fn root(&self) -> &Path {
        self.folder.root()
    }

    /// Every version, oldest first.
    pub fn versions(&self) -> Result<Vec<Manifest>> {
        self.folder
            .version_names()?
            .iter()
            .map(|n| self.manifest(n))
            .collect()
    }

    /// The manifest of `version`.
    pub fn manifest(&self, version: &str) -> Result<Manifest> {
        self.folder.manifest(version)
    }

    /// The card of `version`.
    pub fn card(&self, version: &str) -> Result<String> {
        self.folder.card(version)
    }

    /// Loads `version`, refusing weights whose sha256 differs from the manifest's.
    pub fn load(&self, version: &str) -> Result<RiskModel> {
        let manifest = self.manifest(version)?;
        let network =
            self.folder
                .load_network(version, &manifest.weights_sha256, manifest.features.len())?;
        Ok(RiskModel {
            level: manifest.level,
            kind: manifest.model,
            features: manifest.features,
            scaler: manifest.scaler,
            network,
            calibration: manifest.calibration,
        })
    }

    /// Stores a trained model as a new version and returns its manifest.
    pub fn store(
        &self,
        trained: &TrainedRisk,
        seed: u64,
        config: &TrainConfig,
    ) -> Result<Manifest> {
        let version = self.folder.next_version(trained.model.level.name());
        let mut stored = None;
        self.folder
            .store(&version, &trained.model.network, |weights_sha256| {
                let manifest = Manifest {
                    version: version.clone(),
                    level: trained.model.level,
                    model: trained.model.kind,
                    weights_sha256,
                    features: trained.model.features.clone(),
                    scaler: trained.model.scaler.clone(),
                    calibration: trained.model.calibration,
                    training: trained.training.clone(),
                    validation: trained.validation.clone(),
                    evaluation: trained.evaluation.clone(),
                    training_data_sha256: trained.training_data_sha256.clone(),
                    metrics: trained.metrics.clone(),
                    hyperparameters: config.clone(),
                    training_report: trained.report.clone(),
                    seed,
                    code_version: env!("CARGO_PKG_VERSION").to_string(),
                };
                let files = vec![
                    (MANIFEST, to_json(&manifest)?),
                    (CARD, card(&manifest).into_bytes()),
                ];
                stored = Some(manifest);
                Ok(files)
            })?;
        stored.ok_or_else(|| Error::Registry(format!("{version}: no manifest written")))
    }

    /// The champion of `level`, if any.
    pub fn champion(&self, level: Level) -> Result<Option<String>> {
        self.folder.champion(level.name())
    }

    /// Makes `version` the champion of its level.
    pub fn promote(&self, version: &str) -> Result<()> {
        let manifest = self.manifest(version)?;
        self.folder.promote(manifest.level.name(), version)
    }

    /// Restores the previous champion of `level`; returns it.
    pub fn rollback(&self, level: Level) -> Result<String> {
        self.folder.rollback(level.name())
    }
}

/// Pretty JSON of a manifest.
pub(crate) fn to_json(value: &impl Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|e| Error::Registry(format!("manifest: {e}")))
}

/// The model card: what the model is for, what it learned from, how it measured, and its limits.
fn card(m: &Manifest) -> String {
    let pct = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.3}"));
    let row = |name: &str, e: &Evaluation| {
        format!(
            "| {name} | {} | {} | {:.4} | {} | {} |\n",
            pct(e.roc_auc),
            pct(e.pr_auc),
            e.brier,
            pct(e.recall_at_20pct_effort),
            pct(e.popt)
        )
    };
    let subject = match m.level {
        Level::Deployment => "deployment",
        Level::Change => "change",
    };
    let mut text = format!(
        "# Risk model {version}\n\n\
         ## Intended use\n\n\
         Estimates the probability that a {subject} goes bad ({bad}), to gate releases: allow, \
         allow with a canary, or hold. It ranks risk; it does not prove safety. A human decides \
         on holds.\n\n\
         ## Model\n\n\
         {kind} over {n} features, standardised with the training rows' mean and deviation, \
         calibrated (Platt) on the validation slice. Seed {seed}; trained for {epochs} epochs, \
         best at epoch {best}.\n\n\
         ## Data\n\n\
         | part | rows | bad | from | to |\n|---|---|---|---|---|\n",
        version = m.version,
        bad = match m.level {
            Level::Deployment => "failed, rolled back, or caused an incident soon after it started",
            Level::Change => "introduced a defect",
        },
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
    );
    for (name, split) in [
        ("training", &m.training),
        ("validation", &m.validation),
        ("evaluation", &m.evaluation),
    ] {
        text.push_str(&format!(
            "| {name} | {} | {} | {} | {} |\n",
            split.rows,
            split.positives,
            micros_to_rfc3339(split.from),
            micros_to_rfc3339(split.to)
        ));
    }
    text.push_str(&format!(
        "\nTraining data sha256: `{}`.\n\n## Metrics on the evaluation rows\n\n\
         | scorer | ROC-AUC | PR-AUC | Brier | recall at 20% effort | Popt |\n|---|---|---|---|---|---|\n",
        m.training_data_sha256
    ));
    text.push_str(&row("this model", &m.metrics.model));
    text.push_str(&row(
        "baseline: lines added",
        &m.metrics.baseline_lines_added,
    ));
    text.push_str(&row(
        "baseline: logistic regression on JIT metrics",
        &m.metrics.baseline_jit_logistic,
    ));
    if let Some(oracle) = &m.metrics.oracle {
        text.push_str(&row("oracle (generator's true probability)", oracle));
    }
    text.push_str("\n### Per service\n\n| service | rows | bad | ROC-AUC |\n|---|---|---|---|\n");
    for (service, e) in &m.metrics.per_service {
        text.push_str(&format!(
            "| {service} | {} | {} | {} |\n",
            e.rows,
            e.positives,
            pct(e.roc_auc)
        ));
    }
    text.push_str(
        "\n## Limitations\n\n\
         - Learned from this lake's history only: a new service, team or way of deploying is \
           outside what it has seen until it has history of its own.\n\
         - Labels come from recorded outcomes and attributed incidents; a bad deployment nobody \
           attributed an incident to counts as good.\n\
         - Per-service figures on few rows are noisy; `n/a` marks a service whose evaluation rows \
           hold one class only.\n\
         - The service graph is today's, not the graph at each deployment's time.\n",
    );
    text
}

pub(crate) fn micros_to_rfc3339(micros: i64) -> String {
    maestro_datasets::schema::Ts(micros).to_rfc3339()
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}
