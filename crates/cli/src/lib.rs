//! The sparkc command line as a library, so tests can run commands in process.

pub mod bench;
pub mod codegen;
pub mod compile;
pub mod inputs;
pub mod inspect;
pub mod inspect_artifact;
pub mod npy;
pub mod optimize;
pub mod quantize;
pub mod run;

use clap::{Parser, Subcommand};

/// sparkc: an ahead-of-time model compiler and lean runtime for NVIDIA DGX Spark.
#[derive(Parser)]
#[command(name = "sparkc", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Summarize a model or artifact, or dump its IR (text, DOT, JSON) or its kernels (list, PTX,
    /// LLVM IR).
    Inspect(inspect::Args),
    /// Compile a model into one self-contained .spark artifact (kernels for each target,
    /// weights, memory plan).
    Compile(compile::Args),
    /// Optimize a model and write it back as ONNX.
    Optimize(optimize::Args),
    /// Run a model once on .npy or random inputs; save each output as NAME.npy.
    Run(run::Args),
    /// Measure latency and throughput, optionally per op.
    Bench(bench::Args),
}

/// Runs a parsed command line, returning what it prints on standard output.
pub fn execute(cli: &Cli) -> anyhow::Result<String> {
    match &cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Compile(args) => compile::run(args),
        Command::Optimize(args) => optimize::run(args),
        Command::Run(args) => run::run(args),
        Command::Bench(args) => bench::run(args),
    }
}

/// Parses `argv` (program name first) and runs it; the error of a bad command line included.
pub fn execute_args<I, T>(argv: I) -> anyhow::Result<String>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    execute(&Cli::try_parse_from(argv)?)
}
