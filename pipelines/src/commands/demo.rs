//! `maestro demo`: generate a realistic history, ingest it into a fresh lake, train the
//! deployment-risk model on it (judged against the generator's true probabilities), and show
//! what the lake holds. The embedded default of the nightly pipeline.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::Context;
use maestro_datasets::Lake;
use maestro_datasets::generate::generate;
use maestro_datasets::ingest::IngestOptions;
use maestro_datasets::ledger::LEDGER_TABLES;
use maestro_datasets::schema::{DERIVED_TABLES, RAW_TABLES};
use maestro_models::network::TrainConfig;
use maestro_models::risk::{RiskTrainOptions, read_oracle};
use maestro_models::scoring::{DateRange, score_deployments};
use maestro_models::test_registry::{TestRegistry, train_tests};
use maestro_models::test_selection::ReplayOptions;
use maestro_models::train::train_risk;
use maestro_reports::LakeSession;

use crate::Outcome;
use crate::cli::DemoArgs;
use crate::config::Config;
use crate::output::print;

/// Share of the latest suite runs the demo's test-selection model is judged on.
const TEST_EVAL_FRACTION: f64 = 0.2;

pub fn run(args: &DemoArgs) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let sources = args.dir.join("sources");
    let lake_dir = args.dir.join("lake");
    if lake_dir.exists() {
        std::fs::remove_dir_all(&lake_dir)
            .with_context(|| format!("clearing {}", lake_dir.display()))?;
    }
    let options = args.history.options();
    let generated = generate(&args.dir, &options)
        .with_context(|| format!("generating into {}", args.dir.display()))?;
    let generate_seconds = started.elapsed().as_secs_f64();
    print(&super::generate::describe(
        &generated,
        &args.dir,
        generate_seconds,
    ))?;

    let lake = Lake::open(&lake_dir)?;
    let ingest_started = Instant::now();
    let report = super::ingest::run_ingest(
        &lake,
        std::slice::from_ref(&sources),
        &IngestOptions::default(),
    )?;
    print(&super::ingest::describe(
        &report,
        ingest_started.elapsed().as_secs_f64(),
    ))?;

    // The deployment-risk model, judged against the generator's own probabilities.
    let oracle = read_oracle(&args.dir.join("truth").join("deployments.csv"))?;
    let options = RiskTrainOptions {
        train: TrainConfig {
            seed: args.history.seed,
            ..RiskTrainOptions::default().train
        },
        ..Default::default()
    };
    // A history too short to train on is not a failed demo: say so and go on.
    let trained = match train_risk(&lake, &options, Some(&oracle)) {
        Ok(trained) => {
            print(&super::train::describe(&trained))?;
            Some(trained)
        }
        Err(maestro_models::Error::Data(reason)) => {
            print(&format!("risk model not trained: {reason}\n"))?;
            None
        }
        Err(e) => return Err(e).context("training the deployment-risk model"),
    };

    // The champion scores every deployment; the judges look at canaries and rollbacks. The
    // demo runs on Maestro's defaults, whatever maestro.toml says.
    let config = Config::default();
    if trained.is_some() {
        let scored = score_deployments(&lake, &config.risk.thresholds(), &DateRange::default())
            .context("scoring deployments")?;
        print(&super::risk::describe_many(&scored, &DateRange::default()))?;
    }
    print(&super::judge::judge(&lake, &config)?)?;
    let test_model = test_selection(&lake, args.history.seed, &config)?;

    // The audit trail's daily digests, then every SQL report and the executive report of the
    // history's last month.
    let digested = maestro_datasets::audit_trail::digest(&lake, None)?;
    print(&format!(
        "audit trail digested: {} days\n",
        digested.added.len()
    ))?;
    let reports_started = Instant::now();
    let run = super::report::compute(&lake, &config, None)?;
    print(&super::report::describe(
        &run,
        reports_started.elapsed().as_secs_f64(),
    ))?;
    let report_html =
        super::report::write_executive(&lake, &config, &run, &args.dir.join("report"))?;

    let summary = super::runtime()?.block_on(lake_summary(&lake))?;
    print(&summary)?;

    let mut next = format!(
        "executive report: {report}\ndemo finished in {:.1} s. Explore it with:\n  maestro sql --lake {lake} \"select service, outcome, count(*) as deployments from deployments group by 1, 2 order by 1, 2\"\n  maestro sql --lake {lake} \"select deployment_id, severity, strategy, target_version, minutes_to_detect, was_rolled_back, rolled_back_after_minutes from rollback_verdicts where should_roll_back order by started_at limit 10\"\n  maestro sql --lake {lake} \"select slo_id, window, attainment, error_budget_remaining_share, status from slo_status\"\n  maestro sql --lake {lake} \"select control_id, status, count(*) from compliance_results group by 1, 2 order by 1, 2\"\n  maestro audit verify --lake {lake}\n",
        started.elapsed().as_secs_f64(),
        lake = lake_dir.display(),
        report = report_html.display(),
    );
    if let Some(version) = test_model {
        let _ = writeln!(
            next,
            "  maestro models show --lake {lake} {version}\n  open {chart}",
            lake = lake_dir.display(),
            chart = super::eval::curve_chart_path(&lake).display(),
        );
        let latest = super::runtime()?.block_on(latest_changed_file(&lake))?;
        if let Some((service, file)) = latest {
            let _ = writeln!(
                next,
                "  maestro select-tests --lake {} --service {service} -- {file}",
                lake_dir.display()
            );
        }
    }
    if let Some(trained) = trained {
        let _ = writeln!(
            next,
            "  maestro models show --lake {} {}\n  maestro sql --lake {} \"select deployment_id, service, probability, decision, top_features from risk_verdicts order by probability desc limit 10\"",
            lake_dir.display(),
            trained.manifest.version,
            lake_dir.display(),
        );
    }
    print(&next)?;
    Ok(if report.rejected > 0 {
        Outcome::CheckFailed
    } else {
        Outcome::Ok
    })
}

/// Trains and publishes the test-selection model, replays selection over the whole history
/// against the baselines, and records the champion's selection for every change. Returns the
/// version trained, or None when the history is too short to learn from.
fn test_selection(lake: &Lake, seed: u64, config: &Config) -> anyhow::Result<Option<String>> {
    let defaults = ReplayOptions::default();
    let options = ReplayOptions {
        train: TrainConfig {
            seed,
            ..defaults.train.clone()
        },
        must_run: config.tests.must_run.clone(),
        ..defaults
    };
    let trained = match train_tests(lake, &options, TEST_EVAL_FRACTION) {
        Ok(trained) => trained,
        Err(maestro_models::Error::Data(reason)) => {
            print(&format!("test-selection model not trained: {reason}\n"))?;
            return Ok(None);
        }
        Err(e) => return Err(e).context("training the test-selection model"),
    };
    print(&super::train::describe_tests(&trained))?;
    let report = super::eval::replay_and_record(lake, &options)?;
    print(&super::eval::describe(&report, options.target))?;
    let served = TestRegistry::new(lake.root()).load_champion()?;
    print(
        &super::select_tests::record_selections(
            lake,
            &served,
            options.target,
            &options.must_run,
            &DateRange::default(),
        )?
        .0,
    )?;
    Ok(Some(trained.manifest.version))
}

/// The service and first file of the latest change that names its files.
async fn latest_changed_file(lake: &Lake) -> anyhow::Result<Option<(String, String)>> {
    let session = LakeSession::open(lake).await?;
    let batches = session
        .query(
            "select service, files[1] from changes where cardinality(files) > 0 \
             order by merged_at desc, change_id limit 1",
        )
        .await?;
    Ok(batches.first().filter(|b| b.num_rows() > 0).map(|batch| {
        (
            maestro_reports::cell_text(batch, 0, 0),
            maestro_reports::cell_text(batch, 1, 0),
        )
    }))
}

/// Rows, partitions and time range of every table.
async fn lake_summary(lake: &Lake) -> anyhow::Result<String> {
    let session = LakeSession::open(lake).await?;
    let mut text = format!("the lake at {} now holds:\n", lake.root().display());
    let _ = writeln!(
        text,
        "  {:<22} {:>10} {:>11}",
        "table", "rows", "partitions"
    );
    for table in RAW_TABLES
        .iter()
        .chain(DERIVED_TABLES.iter())
        .chain(LEDGER_TABLES.iter())
    {
        let partitions = if table.layout == maestro_datasets::schema::Layout::ByDate {
            "count(distinct date)"
        } else {
            "1"
        };
        let batches = session
            .query(&format!(
                "select count(*), {partitions} from \"{}\"",
                table.name
            ))
            .await?;
        let cell = |column| maestro_reports::cell_text(&batches[0], column, 0);
        let _ = writeln!(text, "  {:<22} {:>10} {:>11}", table.name, cell(0), cell(1));
    }
    Ok(text)
}
