//! `maestro models list|show|promote|rollback`: the risk model registry in the lake.

use std::fmt::Write as _;

use maestro_datasets::Lake;
use maestro_models::features::Level;
use maestro_models::registry::Registry;

use crate::Outcome;
use crate::cli::{LakeArgs, LevelArg, ModelsCommand};
use crate::output::print;

pub fn run(command: &ModelsCommand) -> anyhow::Result<Outcome> {
    match command {
        ModelsCommand::List(lake) => list(lake),
        ModelsCommand::Show(args) => {
            let registry = registry(&args.lake)?;
            let manifest = registry.manifest(&args.version)?;
            print(&registry.card(&args.version)?)?;
            print(&format!(
                "\nmanifest: {}\n",
                registry
                    .root()
                    .join(&manifest.version)
                    .join("manifest.json")
                    .display()
            ))?;
            Ok(Outcome::Ok)
        }
        ModelsCommand::Promote(args) => {
            let registry = registry(&args.lake)?;
            // Loading checks the weights: a tampered model is never promoted.
            registry.load(&args.version)?;
            registry.promote(&args.version)?;
            print(&format!("{} is now champion\n", args.version))?;
            Ok(Outcome::Ok)
        }
        ModelsCommand::Rollback(args) => {
            let registry = registry(&args.lake)?;
            let restored = registry.rollback(level(args.level))?;
            print(&format!("rolled back: {restored} is champion again\n"))?;
            Ok(Outcome::Ok)
        }
    }
}

fn registry(args: &LakeArgs) -> anyhow::Result<Registry> {
    let lake = Lake::open_existing(&args.lake)?;
    Ok(Registry::new(lake.root()))
}

pub(crate) fn level(arg: LevelArg) -> Level {
    match arg {
        LevelArg::Deployment => Level::Deployment,
        LevelArg::Change => Level::Change,
    }
}

fn list(args: &LakeArgs) -> anyhow::Result<Outcome> {
    let registry = registry(args)?;
    let versions = registry.versions()?;
    if versions.is_empty() {
        print("no models yet: train one with `maestro train risk`\n")?;
        return Ok(Outcome::Ok);
    }
    let champions = [
        registry.champion(Level::Deployment)?,
        registry.champion(Level::Change)?,
    ];
    let mut text = format!(
        "{:<18} {:<9} {:>8} {:>8} {:>8} {:>8}  champion\n",
        "version", "model", "rows", "ROC-AUC", "PR-AUC", "Brier"
    );
    for m in versions {
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
            if champions.iter().flatten().any(|c| *c == m.version) {
                "*"
            } else {
                ""
            }
        );
    }
    print(&text)?;
    Ok(Outcome::Ok)
}
