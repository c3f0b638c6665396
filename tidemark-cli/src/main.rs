//! `tidemark`: Tidemark's command-line tool. One command so far, `fetch`, which downloads a
//! bundle (an OpenSpace resource: identifier, file version, application version) through the
//! resolve endpoint of one or more Tidemark servers.
//!
//! # Layout
//!
//! - [`resolve`]: asks each repository in turn for the bundle's file list.
//! - [`record`]: the completion record: which contents (by sha256) are already in place.
//! - [`download`]: one file: `.part`, `Range` resume, retries, the sha256 check, the rename.
//! - [`fetch`]: the command: plan, parallel downloads, progress bar, summary.

mod download;
mod fetch;
mod record;
mod resolve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Tidemark's command-line tool.
#[derive(Debug, Parser)]
#[command(name = "tidemark", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Downloads a bundle's files, verified by sha256, resuming where an earlier run stopped.
    Fetch(fetch::FetchArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Fetch(args) => fetch::run(args).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
