//! `sparkc`: the command line of the sparkc model compiler.

use clap::Parser;
use sparkc_cli::{execute, Cli};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(&cli) {
        Ok(text) => {
            // A closed pipe (`sparkc inspect ... | head`) is not an error worth reporting.
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
