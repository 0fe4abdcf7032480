//! `maestro models list|show|promote|rollback`: the model registries in the lake, risk models
//! (`deployment-NNNN`, `change-NNNN`) and test-selection models (`tests-NNNN`).

use std::fmt::Write as _;

use maestro_datasets::Lake;
use maestro_models::features::Level;
use maestro_models::registry::Registry;
use maestro_models::test_registry::TestRegistry;

use crate::Outcome;
use crate::cli::{ChampionArg, LakeArgs, LevelArg, ModelsCommand};
use crate::output::print;

pub fn run(command: &ModelsCommand) -> anyhow::Result<Outcome> {
    match command {
        ModelsCommand::List(lake) => list(lake),
        ModelsCommand::Show(args) => {
            let (card, manifest) = match registry_of(&args.lake, &args.version)? {
                Family::Risk(registry) => (
                    registry.card(&args.version)?,
                    registry.root().join(&args.version),
                ),
                Family::Tests(registry) => (
                    registry.card(&args.version)?,
                    registry.root().join(&args.version),
                ),
            };
            print(&card)?;
            print(&format!(
                "\nmanifest: {}\n",
                manifest.join("manifest.json").display()
            ))?;
            Ok(Outcome::Ok)
        }
        ModelsCommand::Promote(args) => {
            // Loading checks the weights: a tampered model is never promoted.
            match registry_of(&args.lake, &args.version)? {
                Family::Risk(registry) => {
                    registry.load(&args.version)?;
                    registry.promote(&args.version)?;
                }
                Family::Tests(registry) => {
                    registry.load(&args.version)?;
                    registry.promote(&args.version)?;
                }
            }
            print(&format!("{} is now champion\n", args.version))?;
            Ok(Outcome::Ok)
        }
        ModelsCommand::Rollback(args) => {
            let lake = Lake::open_existing(&args.lake.lake)?;
            let restored = match args.champion {
                ChampionArg::Deployment => {
                    Registry::new(lake.root()).rollback(Level::Deployment)?
                }
                ChampionArg::Change => Registry::new(lake.root()).rollback(Level::Change)?,
                ChampionArg::Tests => TestRegistry::new(lake.root()).rollback()?,
            };
            print(&format!("rolled back: {restored} is champion again\n"))?;
            Ok(Outcome::Ok)
        }
    }
}

/// The registry a version belongs to, by its name.
enum Family {
    Risk(Registry),
    Tests(TestRegistry),
}

fn registry_of(args: &LakeArgs, version: &str) -> anyhow::Result<Family> {
    let lake = Lake::open_existing(&args.lake)?;
    Ok(if version.starts_with("tests-") {
        Family::Tests(TestRegistry::new(lake.root()))
    } else {
        Family::Risk(Registry::new(lake.root()))
    })
}

pub(crate) fn level(arg: LevelArg) -> Level {
    match arg {
        LevelArg::Deployment => Level::Deployment,
        LevelArg::Change => Level::Change,
    }
}

fn list(args: &LakeArgs) -> anyhow::Result<Outcome> {
    let lake = Lake::open_existing(&args.lake)?;
    let risk = Registry::new(lake.root());
    let tests = TestRegistry::new(lake.root());
    let (risk_versions, test_versions) = (risk.versions()?, tests.versions()?);
    if risk_versions.is_empty() && test_versions.is_empty() {
        print("no models yet: train one with `maestro train risk` or `maestro train tests`\n")?;
        return Ok(Outcome::Ok);
    }
    let star = |is_champion: bool| if is_champion { "*" } else { "" };
    let mut text = String::new();
    if !risk_versions.is_empty() {
        let champions = [
            risk.champion(Level::Deployment)?,
            risk.champion(Level::Change)?,
        ];
        let _ = writeln!(
            text,
            "{:<18} {:<9} {:>8} {:>8} {:>8} {:>8}  champion",
            "version", "model", "rows", "ROC-AUC", "PR-AUC", "Brier"
        );
        for m in risk_versions {
            let metric = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.3}"));
            let _ = writeln!(
                text,
                "{:<18} {:<9} {:>8} {:>8} {:>8} {:>8.4}  {}",
                m.version,
                m.model.name(),
                m.training.rows,
                metric(m.metrics.model.roc_auc),
                metric(m.metrics.model.pr_auc),
                m.metrics.model.brier,
                star(champions.iter().flatten().any(|c| *c == m.version))
            );
        }
    }
    if !test_versions.is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        let champion = tests.champion()?;
        let _ = writeln!(
            text,
            "{:<18} {:<9} {:>8} {:>10} {:>16} {:>6}  champion   (held back)",
            "version", "model", "pairs", "test time", "failing changes", "APFD"
        );
        for m in test_versions {
            let figures = m.held_back.model();
            let share = |v: Option<f64>| {
                v.filter(|v| v.is_finite())
                    .map_or("n/a".into(), |v| format!("{:.1}%", 100.0 * v))
            };
            let _ = writeln!(
                text,
                "{:<18} {:<9} {:>8} {:>10} {:>16} {:>6}  {}",
                m.version,
                m.model.name(),
                m.training.rows,
                share(figures.map(|f| f.time_share)),
                share(figures.map(|f| f.failing_changes_caught)),
                figures
                    .filter(|f| f.apfd.is_finite())
                    .map_or("n/a".into(), |f| format!("{:.3}", f.apfd)),
                star(champion.as_deref() == Some(m.version.as_str()))
            );
        }
    }
    print(&text)?;
    Ok(Outcome::Ok)
}
