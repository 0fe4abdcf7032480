//! One module per subcommand; each takes its parsed arguments and returns an [`Outcome`].

pub(crate) mod audit;
pub(crate) mod demo;
pub(crate) mod eval;
pub(crate) mod generate;
pub(crate) mod ingest;
pub(crate) mod judge;
pub(crate) mod models;
pub(crate) mod plan;
pub(crate) mod report;
pub(crate) mod risk;
pub(crate) mod run;
pub(crate) mod select_tests;
pub(crate) mod sql;
pub(crate) mod train;

use crate::Outcome;
use crate::cli::{Cli, Command};

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Generate(args) => generate::run(&args),
        Command::Ingest(args) => ingest::run(&args),
        Command::Sql(args) => sql::run(&args),
        Command::Train(command) => train::run(&command, cli.config.as_deref()),
        Command::Models(command) => models::run(&command),
        Command::Risk(args) => risk::run(&args, cli.config.as_deref()),
        Command::Judge(args) => judge::run(&args, cli.config.as_deref()),
        Command::Eval(command) => eval::run(&command),
        Command::Audit(command) => audit::run(&command),
        Command::Report(args) => report::run(&args, cli.config.as_deref()),
        Command::SelectTests(args) => select_tests::run(&args, cli.config.as_deref()),
        Command::Run(args) => run::run(&args, cli.config.as_deref()),
        Command::Graph(args) => run::graph(&args),
        Command::Status(args) => run::status(&args, cli.config.as_deref()),
        Command::Plan(args) => plan::run(&args, cli.config.as_deref()),
    }
}

/// A tokio runtime for the DataFusion parts of a command.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
