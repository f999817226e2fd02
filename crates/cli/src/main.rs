//! `sparkc`: the command line of the sparkc model compiler.

mod inspect;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// sparkc: an ahead-of-time model compiler and lean runtime for NVIDIA DGX Spark.
#[derive(Parser)]
#[command(name = "sparkc", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Summarize a model, or dump its IR as text, Graphviz DOT or JSON.
    Inspect(inspect::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
