//! `maestro sql`: read-only SQL over every lake table.

use anyhow::Context;
use maestro_datasets::Lake;
use maestro_reports::{LakeSession, OutputFormat, render};

use crate::Outcome;
use crate::cli::{SqlArgs, SqlFormat};
use crate::output::print;

pub fn run(args: &SqlArgs) -> anyhow::Result<Outcome> {
    let lake = Lake::open_existing(&args.lake.lake)
        .with_context(|| format!("opening the lake at {}", args.lake.lake.display()))?;
    let format = match args.format {
        SqlFormat::Table => OutputFormat::Table,
        SqlFormat::Csv => OutputFormat::Csv,
        SqlFormat::Json => OutputFormat::Json,
    };
    let text = super::runtime()?.block_on(async {
        let session = LakeSession::open(&lake).await?;
        let batches = session.query(&args.query).await?;
        render(&batches, format)
    })?;
    print(&text)?;
    Ok(Outcome::Ok)
}
