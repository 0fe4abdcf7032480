//! Running the DAG: deciding per job (and per date) whether its inputs changed, running what
//! must run, and recording every decision in `_runs`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::Context;
use maestro_datasets::ingest::IngestOptions;
use maestro_datasets::ledger::JobRun;
use maestro_datasets::schema::{TableDef, Ts};
use maestro_datasets::{Lake, WriteMode};
use maestro_models::features::Level;
use maestro_models::network::TrainConfig;
use maestro_models::registry::Registry;
use maestro_models::scoring::{DateRange, score_deployments};
use maestro_models::test_registry::{TestRegistry, train_tests};
use maestro_models::test_selection::ReplayOptions;

use super::{
    Cadence, Dag, Inputs, Job, JobReport, Ledger, Partitioning, RunOptions, RunReport,
    contiguous_ranges, fingerprint, lock, peak_mb, publish, reset_peak, table_named,
};
use crate::commands;
use crate::config::Config;
use crate::output::print;

/// Share of the latest suite runs a test-selection model is judged on.
const TEST_EVAL_FRACTION: f64 = 0.2;

/// What a job did when it ran.
#[derive(Debug, Default)]
struct Done {
    rows_read: u64,
    rows_written: u64,
    rows_rejected: u64,
    /// Rows written per date, for date-partitioned jobs.
    by_date: BTreeMap<String, u64>,
    /// What the user reads.
    summary: String,
    /// A training to mark finished once its run is recorded.
    training: Option<TrainingGuard>,
}

/// A training in progress: `models/<family>/.training` holds the registry as it was before,
/// until the job's run is recorded in `_runs`. A run killed in between leaves the file, and
/// the next training first puts the registry back as it was, so it trains the same version
/// under the same name rather than adding another.
#[derive(Debug)]
struct TrainingGuard {
    marker: std::path::PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RegistryBefore {
    versions: Vec<String>,
    champions: Option<String>,
}

impl TrainingGuard {
    fn begin(lake: &Lake, family: &str) -> anyhow::Result<TrainingGuard> {
        let folder = lake.root().join("models").join(family);
        let marker = folder.join(".training");
        let champions_path = folder.join("champions.json");
        if let Ok(bytes) = std::fs::read(&marker) {
            let before: RegistryBefore = serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", marker.display()))?;
            for entry in std::fs::read_dir(&folder)? {
                let path = entry?.path();
                let name = path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                if path.is_dir() && !before.versions.contains(&name) {
                    tracing::warn!(version = %name, "removing a model version whose training run was never recorded");
                    std::fs::remove_dir_all(&path)?;
                }
            }
            match before.champions {
                Some(text) => {
                    maestro_datasets::lake::replace_file(&champions_path, text.as_bytes())?
                }
                None => {
                    let _ = std::fs::remove_file(&champions_path);
                }
            }
        }
        std::fs::create_dir_all(&folder)?;
        let mut versions = Vec::new();
        for entry in std::fs::read_dir(&folder)? {
            let path = entry?.path();
            if path.is_dir() {
                versions.push(
                    path.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
        versions.sort();
        let before = RegistryBefore {
            versions,
            champions: std::fs::read_to_string(&champions_path).ok(),
        };
        maestro_datasets::lake::replace_file(&marker, &serde_json::to_vec(&before)?)?;
        Ok(TrainingGuard { marker })
    }

    /// The run is recorded: the new version stays.
    fn finish(self) -> anyhow::Result<()> {
        std::fs::remove_file(&self.marker)
            .with_context(|| format!("removing {}", self.marker.display()))
    }
}

/// Why a job did not run though it was due.
struct NotRun(String);

/// Runs the pipeline over `lake` under its lock.
pub fn run(lake: &Lake, config: &Config, options: &RunOptions) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let run_id = format!(
        "{}{}",
        super::RUN_ID_PREFIX,
        chrono::Utc::now().format("%Y%m%dT%H%M%S%6fZ")
    );
    let _lock = lock::acquire(lake, &run_id)?;
    let dag = Dag::new()?;
    for name in &options.select {
        if !super::JOBS.iter().any(|j| j.name == name) {
            anyhow::bail!(
                "no job named {name}; the jobs are {}",
                super::JOBS.map(|j| j.name).join(", ")
            );
        }
    }
    let ledger = Ledger::load(lake)?;
    let inputs = Inputs { lake, config };
    let mut reports: Vec<JobReport> = Vec::new();
    let mut fingerprints: BTreeMap<String, String> = BTreeMap::new();
    let mut published = None;
    for job in dag.order()? {
        if !options.select.is_empty() && !options.select.iter().any(|s| s == job.name) {
            continue;
        }
        let upstream = dag.upstream(job.name);
        let blocked_by = reports
            .iter()
            .find(|r| upstream.contains(&r.job) && (r.status == "failed" || r.status == "blocked"));
        if let Some(failed) = blocked_by {
            reports.push(JobReport {
                job: job.name,
                status: "blocked",
                partitions: Vec::new(),
                seconds: 0.0,
                rows_written: 0,
                peak_mb: peak_mb(),
                message: format!("not run: {} did not succeed", failed.job),
            });
            continue;
        }
        // In a dry run nothing upstream really runs, so a job downstream of one that would
        // run is reported as running too.
        let upstream_would_run = options.dry_run
            && reports
                .iter()
                .any(|r| upstream.contains(&r.job) && r.status == "would run");
        reset_peak();
        let job_started = Instant::now();
        let report = match job.partitioning {
            Partitioning::Whole => run_whole(
                lake,
                config,
                options,
                &ledger,
                &inputs,
                job,
                &run_id,
                upstream_would_run,
                &mut fingerprints,
                &mut published,
            ),
            Partitioning::ByDate(table) => run_by_date(
                lake,
                config,
                options,
                &ledger,
                &inputs,
                job,
                table,
                &run_id,
                upstream_would_run,
                &mut fingerprints,
            ),
        };
        let mut report = match report {
            Ok(report) => report,
            Err(error) => {
                let message = format!("{error:#}");
                if !options.dry_run {
                    record(
                        lake,
                        &[ledger_row(
                            &run_id,
                            job,
                            "all",
                            "",
                            &Done::default(),
                            "failed",
                            Some(message.clone()),
                            job_started,
                        )],
                    )?;
                }
                tracing::error!(job = job.name, error = %message, "job failed");
                JobReport {
                    job: job.name,
                    status: "failed",
                    partitions: Vec::new(),
                    seconds: 0.0,
                    rows_written: 0,
                    peak_mb: 0.0,
                    message,
                }
            }
        };
        report.seconds = job_started.elapsed().as_secs_f64();
        report.peak_mb = peak_mb();
        print(&format!(
            "job {:<13} {:<9} {:>7.1} s  {}\n",
            report.job, report.status, report.seconds, report.message
        ))?;
        reports.push(report);
    }
    Ok(RunReport {
        run_id,
        jobs: reports,
        published,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A whole-lake job: run it when its fingerprint changed (and, for training, when due).
#[allow(clippy::too_many_arguments)]
fn run_whole(
    lake: &Lake,
    config: &Config,
    options: &RunOptions,
    ledger: &Ledger,
    inputs: &Inputs<'_>,
    job: &'static Job,
    run_id: &str,
    upstream_would_run: bool,
    fingerprints: &mut BTreeMap<String, String>,
    published: &mut Option<std::path::PathBuf>,
) -> anyhow::Result<JobReport> {
    let started = Instant::now();
    if job.name == "ingest" && !config.run.landing.iter().any(|f| f.exists()) {
        return Ok(JobReport {
            job: job.name,
            status: "skipped",
            partitions: Vec::new(),
            seconds: 0.0,
            rows_written: 0,
            peak_mb: 0.0,
            message: no_landing(config),
        });
    }
    let fingerprint = inputs.whole(job)?;
    fingerprints.insert(job.name.to_string(), fingerprint.clone());
    let unchanged = ledger.fingerprint(job.name, "all") == Some(fingerprint.as_str());
    let selected = options.select.iter().any(|s| s == job.name);
    let mut reason = if options.force || selected {
        None
    } else if unchanged && !upstream_would_run {
        Some("inputs unchanged".to_string())
    } else {
        None
    };
    if reason.is_none() && job.cadence == Cadence::Retrain && !options.force && !selected {
        reason = retrain_not_due(lake, config, ledger, job)?;
    }
    let report = |status, message: String, rows| JobReport {
        job: job.name,
        status,
        partitions: vec!["all".into()],
        seconds: 0.0,
        rows_written: rows,
        peak_mb: 0.0,
        message,
    };
    if let Some(reason) = reason {
        if !options.dry_run {
            record_skip(lake, run_id, job, &fingerprint, &reason, started)?;
        }
        return Ok(report("skipped", reason, 0));
    }
    if options.dry_run {
        return Ok(report("would run", job.about.to_string(), 0));
    }
    let done = match execute_whole(lake, config, options, job, run_id, fingerprints, published)? {
        Ok(done) => done,
        Err(NotRun(reason)) => {
            record_skip(lake, run_id, job, &fingerprint, &reason, started)?;
            return Ok(report("skipped", reason, 0));
        }
    };
    print(&done.summary)?;
    // The fingerprint recorded is of the inputs as they were read: a job that writes what it
    // reads (none does today) would simply run again next time.
    record(
        lake,
        &[ledger_row(
            run_id,
            job,
            "all",
            &fingerprint,
            &done,
            "succeeded",
            None,
            started,
        )],
    )?;
    if let Some(guard) = done.training {
        guard.finish()?;
    }
    Ok(report(
        "succeeded",
        format!("{} rows written", done.rows_written),
        done.rows_written,
    ))
}

/// A date-partitioned job: run it for the dates whose inputs changed, in contiguous ranges.
#[allow(clippy::too_many_arguments)]
fn run_by_date(
    lake: &Lake,
    config: &Config,
    options: &RunOptions,
    ledger: &Ledger,
    inputs: &Inputs<'_>,
    job: &'static Job,
    table: &'static str,
    run_id: &str,
    upstream_would_run: bool,
    fingerprints: &mut BTreeMap<String, String>,
) -> anyhow::Result<JobReport> {
    let started = Instant::now();
    let table_def = table_named(table).context("a date-partitioned job names its table")?;
    let dates: Vec<String> = fingerprint::parts_by_date(lake, &table_def)?
        .into_keys()
        .filter(|d| options.in_range(d))
        .collect();
    let by_date = inputs.by_date(job, &dates)?;
    let force = options.force || options.select.iter().any(|s| s == job.name);
    let stale: BTreeSet<String> = dates
        .iter()
        .filter(|d| {
            force
                || upstream_would_run
                || ledger.fingerprint(job.name, d) != by_date.get(*d).map(String::as_str)
        })
        .cloned()
        .collect();
    fingerprints.insert(
        job.name.to_string(),
        fingerprint::sha256_hex(format!("{by_date:?}").as_bytes()),
    );
    let mut report = JobReport {
        job: job.name,
        status: "skipped",
        partitions: stale.iter().cloned().collect(),
        seconds: 0.0,
        rows_written: 0,
        peak_mb: 0.0,
        message: String::new(),
    };
    if stale.is_empty() {
        report.message = format!("inputs of all {} dates unchanged", dates.len());
        if !options.dry_run {
            let fingerprint = fingerprints[job.name].clone();
            record_skip(lake, run_id, job, &fingerprint, &report.message, started)?;
        }
        return Ok(report);
    }
    let ranges = contiguous_ranges(&dates, &stale);
    if options.dry_run {
        report.status = "would run";
        report.message = format!(
            "{} of {} dates: {}",
            stale.len(),
            dates.len(),
            describe_ranges(&ranges)
        );
        return Ok(report);
    }
    let mut rows = Vec::new();
    for (from, to) in &ranges {
        let range_started = Instant::now();
        let range = DateRange {
            from: Some(from.clone()),
            to: Some(to.clone()),
        };
        let done = match execute_by_date(lake, config, job, &range)? {
            Ok(done) => done,
            Err(NotRun(reason)) => {
                report.message = reason.clone();
                record_skip(lake, run_id, job, "", &reason, started)?;
                report.partitions.clear();
                return Ok(report);
            }
        };
        print(&done.summary)?;
        for date in dates.iter().filter(|d| range.contains(d)) {
            let per_date = Done {
                rows_written: done.by_date.get(date).copied().unwrap_or(0),
                ..Done::default()
            };
            report.rows_written += per_date.rows_written;
            rows.push(ledger_row(
                run_id,
                job,
                date,
                &by_date[date],
                &per_date,
                "succeeded",
                None,
                range_started,
            ));
        }
    }
    record(lake, &rows)?;
    report.status = "succeeded";
    report.message = format!(
        "{} of {} dates ({}), {} rows written",
        stale.len(),
        dates.len(),
        describe_ranges(&ranges),
        report.rows_written
    );
    Ok(report)
}

fn describe_ranges(ranges: &[(String, String)]) -> String {
    let shown: Vec<String> = ranges
        .iter()
        .take(3)
        .map(|(a, b)| {
            if a == b {
                a.clone()
            } else {
                format!("{a}..{b}")
            }
        })
        .collect();
    let more = ranges.len().saturating_sub(3);
    if more > 0 {
        format!("{} and {more} more ranges", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// For a training job whose inputs changed: None when it should retrain now, else why not.
fn retrain_not_due(
    lake: &Lake,
    config: &Config,
    ledger: &Ledger,
    job: &Job,
) -> anyhow::Result<Option<String>> {
    let has_champion = match job.name {
        "train_risk" => Registry::new(lake.root())
            .champion(Level::Deployment)?
            .is_some(),
        _ => TestRegistry::new(lake.root()).champion()?.is_some(),
    };
    let Some(last) = ledger.last_success(job.name, "all") else {
        return Ok(None);
    };
    if !has_champion {
        return Ok(None);
    }
    let age_days = (chrono::Utc::now().timestamp_micros() - last.finished_at.0) as f64 / 86_400e6;
    if age_days >= config.run.retrain_days {
        return Ok(None);
    }
    let rows = fingerprint::rows_of(lake, &tables(job.reads))?;
    let grown = rows as f64 / (last.rows_read.max(1)) as f64 - 1.0;
    if grown >= config.run.retrain_growth {
        return Ok(None);
    }
    Ok(Some(format!(
        "trained {:.1} days ago; its inputs grew {:.1}% since (retrains after {} days or {:.0}% growth)",
        age_days,
        100.0 * grown,
        config.run.retrain_days,
        100.0 * config.run.retrain_growth
    )))
}

/// The lake tables among a job's declared resources (`job.reads` or `job.writes`).
fn tables(resources: &[&str]) -> Vec<TableDef> {
    resources.iter().filter_map(|r| table_named(r)).collect()
}

/// Runs a whole-lake job.
fn execute_whole(
    lake: &Lake,
    config: &Config,
    run_options: &RunOptions,
    job: &Job,
    run_id: &str,
    fingerprints: &BTreeMap<String, String>,
    published: &mut Option<std::path::PathBuf>,
) -> anyhow::Result<Result<Done, NotRun>> {
    let mut done = Done::default();
    match job.name {
        "ingest" => {
            let folders: Vec<_> = config
                .run
                .landing
                .iter()
                .filter(|f| f.exists())
                .cloned()
                .collect();
            if folders.is_empty() {
                return Ok(Err(NotRun(no_landing(config))));
            }
            let ingest_started = Instant::now();
            let report = commands::ingest::run_ingest(lake, &folders, &IngestOptions::default())?;
            done.rows_read = report.read;
            done.rows_written = report.rows.values().sum();
            done.rows_rejected = report.rejected;
            done.summary =
                commands::ingest::describe(&report, ingest_started.elapsed().as_secs_f64());
        }
        "audit_digest" => {
            let digested = maestro_datasets::audit_trail::digest(lake, None)?;
            done.rows_written = digested.added.len() as u64;
            done.summary = format!("audit trail digested: {} new days\n", digested.added.len());
        }
        "train_risk" => {
            let guard = TrainingGuard::begin(lake, "risk")?;
            let args = crate::cli::TrainRiskArgs {
                lake: crate::cli::LakeArgs {
                    lake: lake.root().to_path_buf(),
                },
                level: crate::cli::LevelArg::Deployment,
                model: None,
                eval_fraction: None,
                seed: None,
                oracle: None,
            };
            let options = commands::train::options(&args, &config.risk)?;
            done.rows_read = fingerprint::rows_of(lake, &tables(job.reads))?;
            let oracle = run_options
                .risk_oracle
                .as_deref()
                .map(maestro_models::risk::read_oracle)
                .transpose()
                .context("reading the oracle")?;
            match maestro_models::train::train_risk(lake, &options, oracle.as_ref()) {
                Ok(trained) => {
                    done.rows_written = trained.manifest.evaluation.rows as u64;
                    done.summary = commands::train::describe(&trained);
                    done.training = Some(guard);
                }
                Err(maestro_models::Error::Data(reason)) => return Ok(Err(NotRun(reason))),
                Err(e) => return Err(e).context("training the deployment-risk model"),
            }
        }
        "train_tests" => {
            let guard = TrainingGuard::begin(lake, "tests")?;
            let defaults = ReplayOptions::default();
            let options = ReplayOptions {
                train: TrainConfig {
                    seed: config.risk.seed.unwrap_or(defaults.train.seed),
                    ..defaults.train.clone()
                },
                must_run: config.tests.must_run.clone(),
                ..defaults
            };
            done.rows_read = fingerprint::rows_of(lake, &tables(job.reads))?;
            let trained = match train_tests(lake, &options, TEST_EVAL_FRACTION) {
                Ok(trained) => trained,
                Err(maestro_models::Error::Data(reason)) => return Ok(Err(NotRun(reason))),
                Err(e) => return Err(e).context("training the test-selection model"),
            };
            let mut summary = commands::train::describe_tests(&trained);
            commands::eval::record_replay(lake, &trained.replay)?;
            summary.push_str(&commands::eval::describe(&trained.replay, options.target));
            done.rows_written = (trained.health_rows + trained.replay.rows.len()) as u64;
            done.summary = summary;
            done.training = Some(guard);
        }
        "judge" => {
            done.summary = commands::judge::judge(lake, config)?;
            done.rows_written = fingerprint::rows_of(lake, &tables(job.writes))?;
        }
        "reports" => {
            if fingerprint::rows_of(lake, &tables(job.reads))? == 0 {
                return Ok(Err(NotRun("the lake holds no history yet".into())));
            }
            let reports_started = Instant::now();
            let computed = commands::report::compute(lake, config, None)?;
            let html = commands::report::write_executive(
                lake,
                config,
                &computed,
                &lake.root().join("reports").join("executive"),
            )?;
            done.rows_written = computed.timings.iter().map(|t| t.rows as u64).sum();
            done.summary = format!(
                "{}executive report: {}\n",
                commands::report::describe(&computed, reports_started.elapsed().as_secs_f64()),
                html.display()
            );
        }
        "publish" => {
            let (folder, manifest) = publish::publish(lake, run_id, fingerprints.clone())?;
            done.rows_written = manifest.files.len() as u64;
            done.summary = format!(
                "published {} files to {} (latest)\n",
                manifest.files.len(),
                folder.display()
            );
            *published = Some(folder);
        }
        other => anyhow::bail!("job {other} is not partitioned by date but has no whole-lake step"),
    }
    Ok(Ok(done))
}

fn no_landing(config: &Config) -> String {
    format!(
        "no landing folder: {} (set [run] landing in maestro.toml)",
        config
            .run
            .landing
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Runs a date-partitioned job over one range of dates.
fn execute_by_date(
    lake: &Lake,
    config: &Config,
    job: &Job,
    range: &DateRange,
) -> anyhow::Result<Result<Done, NotRun>> {
    let mut done = Done::default();
    match job.name {
        "score" => {
            let scored = match score_deployments(lake, &config.risk.thresholds(), range) {
                Ok(scored) => scored,
                Err(maestro_models::Error::Data(reason)) => return Ok(Err(NotRun(reason))),
                Err(e) => return Err(e).context("scoring deployments"),
            };
            for verdict in &scored.verdicts {
                *done.by_date.entry(verdict.started_at.date()).or_insert(0) += 1;
            }
            done.summary = commands::risk::describe_many(&scored, range);
        }
        "select_tests" => {
            let registry = TestRegistry::new(lake.root());
            if registry.champion()?.is_none() {
                return Ok(Err(NotRun("no champion test-selection model".into())));
            }
            let served = registry.load_champion()?;
            let defaults = ReplayOptions::default();
            let (summary, by_date) = commands::select_tests::record_selections(
                lake,
                &served,
                defaults.target,
                &config.tests.must_run,
                range,
            )?;
            done.by_date = by_date;
            done.summary = summary;
        }
        other => anyhow::bail!("job {other} has no per-date step"),
    }
    Ok(Ok(done))
}

#[allow(clippy::too_many_arguments)]
fn ledger_row(
    run_id: &str,
    job: &Job,
    partition: &str,
    fingerprint: &str,
    done: &Done,
    status: &str,
    message: Option<String>,
    started: Instant,
) -> JobRun {
    let now = chrono::Utc::now().timestamp_micros();
    let elapsed = started.elapsed().as_micros() as i64;
    JobRun {
        run_id: run_id.to_string(),
        job: job.name.to_string(),
        partition: partition.to_string(),
        inputs_sha256: if fingerprint.is_empty() {
            Vec::new()
        } else {
            vec![fingerprint.to_string()]
        },
        outputs: job.writes.iter().map(|w| w.to_string()).collect(),
        rows_read: done.rows_read as i64,
        rows_written: done.rows_written as i64,
        rows_rejected: done.rows_rejected as i64,
        status: status.to_string(),
        message,
        started_at: Ts(now - elapsed),
        finished_at: Ts(now),
    }
}

/// Records that a job did not run this time, and why.
fn record_skip(
    lake: &Lake,
    run_id: &str,
    job: &Job,
    fingerprint: &str,
    reason: &str,
    started: Instant,
) -> anyhow::Result<()> {
    let row = ledger_row(
        run_id,
        job,
        "all",
        fingerprint,
        &Done::default(),
        "skipped",
        Some(reason.to_string()),
        started,
    );
    record(lake, &[row])
}

/// Appends rows to `_runs` in one transaction.
fn record(lake: &Lake, rows: &[JobRun]) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut txn = lake.begin()?;
    txn.write(rows, WriteMode::Append)?;
    txn.commit()?;
    Ok(())
}
