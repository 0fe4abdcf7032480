//! Command-line arguments, one struct per subcommand.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Maestro: release-engineering analytics over a Parquet lake.
#[derive(Debug, Parser)]
#[command(name = "maestro", version, about)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log debug detail on stderr (or set MAESTRO_LOG, e.g. MAESTRO_LOG=info).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Configuration file [default: maestro.toml in the current folder, when there is one].
    #[arg(long, env = "MAESTRO_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a realistic history, then run the nightly pipeline over all of it in a fresh
    /// lake (`maestro run`), and say where the report, the models and the verdicts are.
    Demo(DemoArgs),
    /// Write a realistic generated history in the real source formats.
    Generate(GenerateArgs),
    /// Take source files and folders into the lake.
    Ingest(IngestArgs),
    /// Run a read-only SQL query over every lake table.
    Sql(SqlArgs),
    /// Train a model on the lake's history and register it.
    #[command(subcommand)]
    Train(TrainCommand),
    /// List, inspect, promote or roll back registered models.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Score deployments with the champion risk model: one pending deployment for a CI gate
    /// (exit 1 on hold), or the lake's deployments into `risk_verdicts`.
    Risk(RiskArgs),
    /// Judge every canary deployment (canary_verdicts) and whether every deployment should
    /// roll back (rollback_verdicts), and how the judges did against what happened.
    Judge(LakeArgs),
    /// Replay a model over history in time order and compare it with baselines.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Verify the audit trail, or digest and sign it.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Compute every SQL report and compliance control over the lake into its report table.
    Report(ReportArgs),
    /// Which tests a change needs: the champion test-selection model ranks its service's suite
    /// and selects to a confidence or a budget, with a reason per test, in a runner's syntax.
    SelectTests(SelectTestsArgs),
    /// Run the nightly pipeline: ingest the landing folders, train when due, score, judge,
    /// select tests, compute the reports and publish; jobs whose inputs are unchanged are
    /// skipped. Exit 1 when a job failed, 2 when the run could not start (another holds the lake).
    Run(RunArgs),
    /// Draw the pipeline's job DAG, as derived from what each job reads and writes.
    Graph(GraphArgs),
    /// The last runs of every job, failures, and the freshness of every table: exit 1 when
    /// something failed or is stale, so it serves as a monitoring check.
    Status(StatusArgs),
    /// Plan a cross-service rollout: deployment waves (dependencies first), canary steps by
    /// risk, expected durations from history, the critical path and each service's blast
    /// radius, written to `rollout_plans`. Exit 1, naming each cycle, when there is no order.
    Plan(PlanArgs),
}

/// `maestro plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Services to deploy, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub services: Vec<String>,
    /// Every service of the graph, and every service that has deployed.
    #[arg(long)]
    pub all: bool,
    /// At most this many services deploy at once.
    #[arg(long, default_value_t = 10)]
    pub parallel: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Table)]
    pub format: PlanFormat,
}

/// How `maestro plan` prints its plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// Waves and services as text.
    Table,
    /// The whole plan as JSON.
    Json,
    /// Graphviz DOT, a cluster per wave.
    Dot,
    /// A Mermaid flowchart, a subgraph per wave.
    Mermaid,
}

/// `maestro run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Only this date of the date-partitioned jobs (YYYY-MM-DD).
    #[arg(long, conflicts_with_all = ["from", "to"], value_parser = parse_date)]
    pub date: Option<String>,
    /// Backfill from this date (included).
    #[arg(long, value_parser = parse_date)]
    pub from: Option<String>,
    /// Backfill up to this date (included).
    #[arg(long, value_parser = parse_date)]
    pub to: Option<String>,
    /// Only these jobs, whatever their inputs say (see `maestro graph`).
    #[arg(long, num_args = 1..)]
    pub select: Vec<String>,
    /// Rerun every job (or every selected one) even where its inputs are unchanged.
    #[arg(long)]
    pub force: bool,
    /// Say what would run and why, run nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `maestro graph`.
#[derive(Debug, Args)]
pub struct GraphArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
}

/// A graph's text format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Graphviz DOT.
    Dot,
    /// A Mermaid flowchart.
    Mermaid,
}

/// `maestro status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Judge freshness as of this instant (RFC 3339) [default: now].
    #[arg(long)]
    pub at: Option<String>,
    /// How many of the latest runs to list.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

/// `maestro audit`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain of every audit record and check the daily digests: any
    /// modified, deleted, inserted or reordered record is named (exit 1).
    Verify {
        #[command(flatten)]
        lake: LakeArgs,
        /// Check every digest's ed25519 signature with this public key (64 hex digits).
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Append a digest entry per day for the audit records not yet digested, signed with the
    /// key given.
    Digest {
        #[command(flatten)]
        lake: LakeArgs,
        /// ed25519 secret key file (64 hex digits), as `maestro audit keygen` writes.
        #[arg(long)]
        signing_key: Option<PathBuf>,
    },
    /// Write a new ed25519 key pair: PREFIX.key (secret, mode 0600) and PREFIX.pub.
    Keygen {
        /// Path prefix of the two files.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `maestro report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// The calendar month of the executive report, YYYY-MM, compared with the month before
    /// [default: the month of the lake's latest event, up to its end].
    #[arg(long, conflicts_with_all = ["from", "to"], value_parser = parse_month)]
    pub period: Option<String>,
    /// First date of the period instead, compared with as many days before.
    #[arg(long, requires = "to", value_parser = parse_date)]
    pub from: Option<String>,
    /// Last date of the period (included).
    #[arg(long, requires = "from", value_parser = parse_date)]
    pub to: Option<String>,
    /// Folder of the executive report: report.html, report.md and report.json.
    #[arg(long, default_value = "report")]
    pub out: PathBuf,
}

fn parse_month(text: &str) -> Result<String, String> {
    match maestro_datasets::schema::Ts::parse(&format!("{text}-01T00:00:00Z")) {
        Some(ts) if ts.date() == format!("{text}-01") => Ok(text.to_string()),
        _ => Err(format!("{text:?} is not a month like 2026-10")),
    }
}

/// `maestro select-tests`.
#[derive(Debug, Args)]
pub struct SelectTestsArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// A file of changed paths, one per line ("-" for stdin), as `git diff --name-only` prints.
    #[arg(long, conflicts_with = "paths")]
    pub changed_files: Option<PathBuf>,
    /// Changed paths, after `--`. Without them or --changed-files, history alone ranks.
    #[arg(last = true)]
    pub paths: Vec<String>,
    /// Service whose suite runs [default: the only service the history holds].
    #[arg(long)]
    pub service: Option<String>,
    /// Author of the change, whose record is a feature.
    #[arg(long)]
    pub author: Option<String>,
    /// Lines added plus deleted by the change.
    #[arg(long)]
    pub lines_changed: Option<f64>,
    /// A file of the suite's test ids (`classname::name`), one per line [default: the tests of
    /// the service's latest full run]. Ids never seen are new tests, always selected.
    #[arg(long)]
    pub tests: Option<PathBuf>,
    /// Select until the estimated chance of catching a failing change reaches this
    /// [default: [tests] confidence of maestro.toml, else 0.95].
    #[arg(long, conflicts_with = "budget")]
    pub confidence: Option<f64>,
    /// Select within a budget instead: a share of the suite's time ("30%") or a duration
    /// ("90s", "15m").
    #[arg(long)]
    pub budget: Option<String>,
    /// Model version [default: the champion].
    #[arg(long)]
    pub model: Option<String>,
    /// When the suite runs (RFC 3339) [default: now]: recent failure windows end here.
    #[arg(long)]
    pub at: Option<String>,
    /// Select for every change of the lake merged on this UTC date (YYYY-MM-DD) instead, into
    /// the `test_selection` table.
    #[arg(long, conflicts_with_all = ["from", "to", "changed_files", "paths", "tests", "shard"], value_parser = parse_date)]
    pub date: Option<String>,
    /// First date of changes to select for, into `test_selection`.
    #[arg(long, conflicts_with_all = ["changed_files", "paths", "tests", "shard"], value_parser = parse_date)]
    pub from: Option<String>,
    /// Last date of changes to select for, into `test_selection`.
    #[arg(long, conflicts_with_all = ["changed_files", "paths", "tests", "shard"], value_parser = parse_date)]
    pub to: Option<String>,
    /// Split the selected tests into this many shards of about equal expected time.
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Print only this shard (1-based) in a runner's syntax.
    #[arg(long, requires = "shards")]
    pub shard: Option<usize>,
    /// Output: text or JSON with reasons, or the selected tests in a runner's syntax.
    #[arg(long, value_enum, default_value_t = SelectFormat::Text)]
    pub format: SelectFormat,
}

/// How `select-tests` prints its selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SelectFormat {
    /// Every test in run order with its probability and reason.
    Text,
    /// The whole selection as one JSON document.
    Json,
    /// A nextest filter expression: `cargo nextest run -E "$(...)"`.
    Nextest,
    /// A pytest keyword expression: `pytest -k "$(...)"`.
    Pytest,
    /// A Maven Surefire test list: `mvn test -Dtest="$(...)"`.
    Maven,
    /// Gradle test filters: `gradle test $(...)`.
    Gradle,
}

/// `maestro eval`.
#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Test selection: for each change, a model trained only on earlier runs ranks and selects
    /// its tests; prints time run, failures caught and APFD beside the baselines, and keeps every
    /// ranking in `test_selection_replay`.
    Tests(EvalTestsArgs),
}

/// `maestro eval tests`.
#[derive(Debug, Args)]
pub struct EvalTestsArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// First date to replay (YYYY-MM-DD) [default: once 14 days of history are there to learn from].
    #[arg(long, value_parser = parse_date)]
    pub from: Option<String>,
    /// Last date to replay (YYYY-MM-DD).
    #[arg(long, value_parser = parse_date)]
    pub to: Option<String>,
    /// Select until the estimated chance of catching a failing change reaches this.
    #[arg(long, default_value_t = 0.95, conflicts_with = "budget")]
    pub confidence: f64,
    /// Select within a budget instead: a share of the suite's time ("30%") or a duration
    /// ("90s", "15m").
    #[arg(long)]
    pub budget: Option<String>,
    /// Train a new model every this many days.
    #[arg(long, default_value_t = 7)]
    pub retrain_days: i64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
}

/// `maestro risk`.
#[derive(Debug, Args)]
pub struct RiskArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// A pending deployment as one CDEvents service.deployed or service.upgraded event (or a
    /// GitHub deployment payload): score it against the lake's history; nothing is written.
    #[arg(long, conflicts_with_all = ["date", "from", "to"])]
    pub deployment: Option<PathBuf>,
    /// Score the lake's deployments that started on this UTC date (YYYY-MM-DD) into
    /// `risk_verdicts`. Without --deployment, --date, --from or --to: every deployment.
    #[arg(long, conflicts_with_all = ["from", "to"], value_parser = parse_date)]
    pub date: Option<String>,
    /// First date to score (YYYY-MM-DD).
    #[arg(long, value_parser = parse_date)]
    pub from: Option<String>,
    /// Last date to score (YYYY-MM-DD).
    #[arg(long, value_parser = parse_date)]
    pub to: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
}

/// Text for people, JSON for machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Aligned text.
    Text,
    /// One JSON document.
    Json,
}

fn parse_date(text: &str) -> Result<String, String> {
    match maestro_datasets::schema::Ts::parse(&format!("{text}T00:00:00Z")) {
        Some(ts) if ts.date() == text => Ok(text.to_string()),
        _ => Err(format!("{text:?} is not a date like 2026-09-30")),
    }
}

/// `maestro train`.
#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// The deployment-risk model (or, with --level change, the change-risk model).
    Risk(TrainRiskArgs),
    /// The test-selection model: trained on all but the latest runs, replayed on those, stored
    /// with the test history it features changes from, and promoted unless the champion ranks
    /// the same runs better.
    Tests(TrainTestsArgs),
}

/// `maestro train tests`.
#[derive(Debug, Args)]
pub struct TrainTestsArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Share of the latest full suite runs held back to evaluate on.
    #[arg(long, default_value_t = 0.2)]
    pub eval_fraction: f64,
    /// Confidence target of the model policy in the held-back figures.
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
    /// Seed of weight initialisation and batch order [default: 42].
    #[arg(long)]
    pub seed: Option<u64>,
}

/// `maestro train risk`.
#[derive(Debug, Args)]
pub struct TrainRiskArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// What a row is: a deployment, or a change (labelled by is_buggy).
    #[arg(long, value_enum, default_value_t = LevelArg::Deployment)]
    pub level: LevelArg,
    /// Model kind [default: from the configuration, else logistic].
    #[arg(long, value_enum)]
    pub model: Option<ModelArg>,
    /// Share of the newest labelled rows held back for evaluation [default: 0.2].
    #[arg(long)]
    pub eval_fraction: Option<f64>,
    /// Seed of weight initialisation and batch order [default: 42].
    #[arg(long)]
    pub seed: Option<u64>,
    /// The generator's truth file (truth/deployments.csv or truth/changes.csv), to report the
    /// oracle's metrics beside the model's.
    #[arg(long)]
    pub oracle: Option<PathBuf>,
}

/// Level of a risk model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LevelArg {
    /// One row per deployment.
    Deployment,
    /// One row per change.
    Change,
}

/// Kind of model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelArg {
    /// Logistic regression.
    Logistic,
    /// Multi-layer perceptron.
    Mlp,
}

/// `maestro models`.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Every registered version, with its metrics and which are champions.
    List(LakeArgs),
    /// A version's manifest and card.
    Show(ModelVersionArgs),
    /// Make a version the champion of its level (a risk model) or of test selection.
    Promote(ModelVersionArgs),
    /// Restore the previous champion.
    Rollback(ModelsRollbackArgs),
}

/// A model version.
#[derive(Debug, Args)]
pub struct ModelVersionArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Version, such as deployment-0003 or tests-0002.
    pub version: String,
}

/// `maestro models rollback`.
#[derive(Debug, Args)]
pub struct ModelsRollbackArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Which champion to roll back.
    #[arg(long, alias = "level", value_enum, default_value_t = ChampionArg::Deployment)]
    pub champion: ChampionArg,
}

/// A champion of the registries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChampionArg {
    /// The deployment-level risk model.
    Deployment,
    /// The change-level risk model.
    Change,
    /// The test-selection model.
    Tests,
}

/// Where the lake is.
#[derive(Debug, Args)]
pub struct LakeArgs {
    /// Lake directory.
    #[arg(long, env = "MAESTRO_LAKE", default_value = "lake")]
    pub lake: PathBuf,
}

/// What history to generate.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Seed of the generator: the same seed gives identical files.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Days of history.
    #[arg(long, default_value_t = 90)]
    pub days: u32,
    /// Number of services.
    #[arg(long, default_value_t = 8)]
    pub services: usize,
}

impl HistoryArgs {
    /// The generator options these flags ask for.
    pub fn options(&self) -> maestro_datasets::generate::GenerateOptions {
        maestro_datasets::generate::GenerateOptions {
            seed: self.seed,
            days: self.days,
            services: self.services,
            ..Default::default()
        }
    }
}

/// `maestro demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Scratch folder for the generated sources and the lake (replaced if it exists).
    #[arg(long, default_value = "maestro-demo")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub history: HistoryArgs,
}

/// `maestro generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Output folder: `sources/` (to ingest) and `truth/` (the hidden probabilities) go in it.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub history: HistoryArgs,
}

/// `maestro ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Read every file as this format instead of detecting it.
    #[arg(long, value_parser = parse_format)]
    pub format: Option<maestro_datasets::readers::Format>,
    /// Exit with code 1 if any record is rejected.
    #[arg(long)]
    pub strict: bool,
    /// Change that test reports without `maestro.change_id` property ran for.
    #[arg(long)]
    pub change_id: Option<String>,
    /// CI run id for test reports without `maestro.run_id` property.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Service for test reports and scrapes that do not name one.
    #[arg(long)]
    pub service: Option<String>,
    /// Time (RFC 3339) for test reports and scrapes that carry none.
    #[arg(long)]
    pub at: Option<String>,
    /// Files and folders (searched recursively); gzipped files are read transparently.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

fn parse_format(text: &str) -> Result<maestro_datasets::readers::Format, String> {
    text.parse()
}

/// `maestro sql`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = SqlFormat::Table)]
    pub format: SqlFormat,
    /// The query (read-only). It may begin with a `--` comment, as the report files do.
    #[arg(allow_hyphen_values = true)]
    pub query: String,
}

/// Output formats of `maestro sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SqlFormat {
    /// Aligned text table.
    Table,
    /// CSV with a header.
    Csv,
    /// JSON array of objects.
    Json,
}
