//! The `maestro` command: the CLI over Maestro's datasets, models and reports.
//!
//! `main` parses arguments ([`cli`]), sets up logging on stderr, runs one subcommand from
//! [`commands`], and owns the exit code: 0 ok, 1 ran but a check failed, 2 error. Results go to
//! stdout, progress and logs to stderr; a closed stdout pipe ends the command quietly.

mod cli;
mod commands;
mod config;
mod nightly;
mod output;
mod plan;

use std::process::ExitCode;

use clap::Parser;

/// Ingest builds and drops millions of small strings and JSON nodes. With mimalloc instead of
/// the system allocator, one-core audit ingest measured 45% less time (JUnit about the same).
/// It is built without transparent huge pages (the `no_thp` feature): with them, memory it
/// freed and took again was zeroed by the kernel 2 MB at a time, which measured 10% of JUnit
/// ingest.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How a command ended, when it did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything held.
    Ok,
    /// The command ran, but a check or gate it applies failed (exit code 1).
    CheckFailed,
}

fn main() -> ExitCode {
    maestro_models::network::settle_thread_count();
    let args = cli::Cli::parse();
    init_logging(&args);
    match commands::run(args) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::CheckFailed) => ExitCode::from(1),
        Err(error) => {
            if output::is_broken_pipe(&error) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(args: &cli::Cli) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAESTRO_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if args.verbose { "debug" } else { "warn" })
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        cli::LogFormat::Text => builder.init(),
        cli::LogFormat::Json => builder.json().init(),
    }
}
