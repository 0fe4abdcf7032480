//! `maestro demo`: generate a realistic history, then run the nightly pipeline (`maestro run`)
//! over all of it in a fresh lake: ingest, train and judge the models (the risk model also
//! against the generator's true probabilities), score, select tests, compute the reports and
//! publish. The embedded default of the nightly pipeline.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::Context;
use maestro_datasets::Lake;
use maestro_datasets::generate::generate;
use maestro_datasets::ledger::LEDGER_TABLES;
use maestro_datasets::schema::{DERIVED_TABLES, RAW_TABLES};
use maestro_reports::LakeSession;

use crate::Outcome;
use crate::cli::DemoArgs;
use crate::config::{Config, RunConfig};
use crate::nightly::{self, RunOptions, publish};
use crate::output::print;

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

    // Maestro's defaults, whatever maestro.toml says, with the generated sources as the
    // landing folder and the history's seed for the models.
    let mut config = Config {
        run: RunConfig {
            landing: vec![sources],
            ..RunConfig::default()
        },
        ..Config::default()
    };
    config.risk.seed = Some(args.history.seed);
    let lake = Lake::open(&lake_dir)?;
    let run = nightly::run(
        &lake,
        &config,
        &RunOptions {
            risk_oracle: Some(args.dir.join("truth").join("deployments.csv")),
            ..RunOptions::default()
        },
    )?;
    print(&super::run::describe(&run))?;

    let summary = super::runtime()?.block_on(lake_summary(&lake))?;
    print(&summary)?;

    let latest = publish::latest(&lake);
    let mut next = format!(
        "published (latest): {latest}\n  executive report: {latest}/reports/executive/report.html\n  models: {latest}/models\n  verdict tables: {latest}/verdicts\n\
         demo finished in {:.1} s. Explore it with:\n  maestro status --lake {lake}\n  maestro sql --lake {lake} \"select service, outcome, count(*) as deployments from deployments group by 1, 2 order by 1, 2\"\n  maestro sql --lake {lake} \"select deployment_id, severity, strategy, target_version, minutes_to_detect, was_rolled_back, rolled_back_after_minutes from rollback_verdicts where should_roll_back order by started_at limit 10\"\n  maestro sql --lake {lake} \"select slo_id, window, attainment, error_budget_remaining_share, status from slo_status\"\n  maestro sql --lake {lake} \"select control_id, status, count(*) from compliance_results group by 1, 2 order by 1, 2\"\n  maestro audit verify --lake {lake}\n",
        started.elapsed().as_secs_f64(),
        latest = latest.display(),
        lake = lake_dir.display(),
    );
    let registry = maestro_models::test_registry::TestRegistry::new(lake.root());
    if let Some(version) = registry.champion()? {
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
    let risk = maestro_models::registry::Registry::new(lake.root());
    if let Some(version) = risk.champion(maestro_models::features::Level::Deployment)? {
        let _ = writeln!(
            next,
            "  maestro models show --lake {} {version}\n  maestro sql --lake {} \"select deployment_id, service, probability, decision, top_features from risk_verdicts order by probability desc limit 10\"",
            lake_dir.display(),
            lake_dir.display(),
        );
    }
    print(&next)?;
    Ok(if run.failed() {
        Outcome::CheckFailed
    } else {
        Outcome::Ok
    })
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
