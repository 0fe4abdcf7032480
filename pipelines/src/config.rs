//! `maestro.toml`: settings that hold across runs. Flags change one run only. Unknown keys are
//! rejected, so a misspelt setting is an error rather than silently ignored.
//!
//! ```toml
//! [risk]
//! model = "logistic"       # or "mlp"
//! hidden = [64, 64]
//! max_epochs = 200
//! batch_size = 256
//! learning_rate = 0.003
//! weight_decay = 0.001
//! patience = 15
//! seed = 42
//! eval_fraction = 0.2
//! incident_window_hours = 24
//! canary_above = 0.3       # a deployment this likely to go bad goes out as a canary first
//! hold_above = 0.5         # and this likely is held
//!
//! [canary]                 # the canary judge
//! window_minutes = 30
//! min_samples = 10
//! alpha = 0.01
//! min_effect_size = 0.3
//! tolerance = 0.2
//! pass_score = 90
//! marginal_score = 60
//!
//! [rollback]               # the rollback judge
//! watch_minutes = 120
//! baseline_hours = 6
//! error_ratio = 3.0
//! latency_ratio = 1.4
//! error_rate_floor = 0.001
//! immediate_blast_radius = 3
//!
//! [tests]                  # test selection
//! confidence = 0.95        # select-tests' default target
//! must_run = ["api.smoke_test::test_health"]   # test ids always selected
//!
//! [reports]
//! sql_dir = "reports"      # your own report and control .sql files, beside Maestro's
//! waivers = "waivers.toml" # exceptions to compliance controls, each with an expiry date
//!
//! [run]                    # the nightly `maestro run`
//! landing = ["landing"]    # folders whose new files each run ingests
//! retrain_days = 7         # retrain a model at least this often when its data changed
//! retrain_growth = 0.2     # or sooner, once its input rows grew by this share
//! max_age_hours = 26       # `maestro status` calls a daily table stale after this
//! ```
//!
//! Paths are relative to the folder of the configuration file.

use std::path::{Path, PathBuf};

use anyhow::Context;
use maestro_models::network::ModelKind;
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub risk: RiskConfig,
    #[serde(default)]
    pub canary: maestro_models::canary::CanaryConfig,
    #[serde(default)]
    pub rollback: maestro_models::rollback::RollbackConfig,
    #[serde(default)]
    pub tests: TestsConfig,
    #[serde(default)]
    pub reports: ReportsConfig,
    #[serde(default)]
    pub run: RunConfig,
    /// sha256 of the file's bytes (empty for the defaults): a changed setting reruns the jobs.
    #[serde(skip)]
    pub sha256: String,
}

/// `[run]`: the nightly pipeline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Folders whose new files each run ingests.
    #[serde(default = "RunConfig::default_landing")]
    pub landing: Vec<PathBuf>,
    /// A model whose inputs changed is retrained once its last training is this many days old.
    #[serde(default = "RunConfig::default_retrain_days")]
    pub retrain_days: f64,
    /// Or sooner, once the rows of its inputs grew by this share since it was trained.
    #[serde(default = "RunConfig::default_retrain_growth")]
    pub retrain_growth: f64,
    /// `maestro status` calls a table written every run stale after this many hours.
    #[serde(default = "RunConfig::default_max_age_hours")]
    pub max_age_hours: f64,
}

impl RunConfig {
    fn default_landing() -> Vec<PathBuf> {
        vec![PathBuf::from("landing")]
    }
    fn default_retrain_days() -> f64 {
        7.0
    }
    fn default_retrain_growth() -> f64 {
        0.2
    }
    fn default_max_age_hours() -> f64 {
        26.0
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            landing: RunConfig::default_landing(),
            retrain_days: RunConfig::default_retrain_days(),
            retrain_growth: RunConfig::default_retrain_growth(),
            max_age_hours: RunConfig::default_max_age_hours(),
        }
    }
}

/// `[reports]`: SQL reports and compliance controls.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportsConfig {
    /// A folder of the user's own `.sql` reports and controls.
    pub sql_dir: Option<PathBuf>,
    /// A TOML file of `[[waiver]]` entries.
    pub waivers: Option<PathBuf>,
}

/// `[tests]`: test selection.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestsConfig {
    /// Default confidence target of `select-tests`.
    pub confidence: Option<f64>,
    /// Test ids selected whatever the model says.
    #[serde(default)]
    pub must_run: Vec<String>,
}

/// `[risk]`: how risk models are trained.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskConfig {
    pub model: Option<ModelKind>,
    pub hidden: Option<Vec<usize>>,
    pub max_epochs: Option<usize>,
    pub batch_size: Option<usize>,
    pub learning_rate: Option<f64>,
    pub weight_decay: Option<f64>,
    pub patience: Option<usize>,
    pub seed: Option<u64>,
    pub eval_fraction: Option<f64>,
    /// An incident beginning this many hours after a deployment started makes it bad.
    pub incident_window_hours: Option<i64>,
    /// Probability from which a deployment needs a canary.
    pub canary_above: Option<f64>,
    /// Probability from which a deployment is held.
    pub hold_above: Option<f64>,
}

impl RiskConfig {
    /// The scoring thresholds, defaults where unset.
    pub fn thresholds(&self) -> maestro_models::scoring::Thresholds {
        let defaults = maestro_models::scoring::Thresholds::default();
        maestro_models::scoring::Thresholds {
            canary_above: self.canary_above.unwrap_or(defaults.canary_above),
            hold_above: self.hold_above.unwrap_or(defaults.hold_above),
        }
    }
}

/// Reads `explicit`, else `maestro.toml` in the current folder when there is one, else defaults.
pub fn load(explicit: Option<&Path>) -> anyhow::Result<Config> {
    let path: PathBuf = match explicit {
        Some(path) => path.to_path_buf(),
        None => {
            let default = PathBuf::from("maestro.toml");
            if !default.exists() {
                return Ok(Config::default());
            }
            default
        }
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the configuration {}", path.display()))?;
    let mut config: Config =
        toml::from_str(&text).with_context(|| format!("configuration {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    for relative in [&mut config.reports.sql_dir, &mut config.reports.waivers]
        .into_iter()
        .flatten()
        .chain(config.run.landing.iter_mut())
    {
        *relative = base.join(&*relative);
    }
    config.sha256 = crate::nightly::fingerprint::sha256_hex(text.as_bytes());
    Ok(config)
}
