//! `sparkc run`: runs a model once on given or random inputs and saves its outputs as `.npy`.

use crate::inputs::{self, InputArgs};
use crate::npy;
use anyhow::{Context, Result};
use sparkc_cpu::{Array, Executor, Value};
use std::fmt::Write;
use std::path::PathBuf;

/// Where a model runs.
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum Device {
    /// The CPU executor, on all cores.
    #[default]
    Cpu,
}

/// Arguments of `sparkc run`.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model to run.
    pub model: PathBuf,
    /// Inputs.
    #[command(flatten)]
    pub inputs: InputArgs,
    /// Folder for one NAME.npy per output.
    #[arg(long, default_value = ".")]
    pub output_dir: PathBuf,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// Run the graph as imported, without the optimizer.
    #[arg(long)]
    pub no_opt: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Sets the size of the global thread pool, once per process.
pub fn set_threads(threads: Option<usize>) {
    if let Some(n) = threads {
        // A second call in the same process (tests) keeps the first pool.
        sparkc_cpu::set_threads(n);
    }
}

/// An output name made safe as a file name: characters outside `[A-Za-z0-9_.-]` become `_`.
pub fn file_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    match safe.as_str() {
        "" | "." | ".." => format!("output{safe}"),
        _ => safe,
    }
}

/// `dtype[shape] min max mean` of an array.
pub fn summary(array: &Array) -> String {
    let values = array.data.to_f64s();
    let mut line = format!("{}{:?}", array.dtype(), array.shape);
    if !values.is_empty() {
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let _ = write!(line, "  min {min:.6}  max {max:.6}  mean {mean:.6}");
    }
    line
}

/// Runs `sparkc run`.
pub fn run(args: &Args) -> Result<String> {
    set_threads(args.threads);
    let model = crate::optimize::load(&args.model, args.no_opt)?;
    let exec = Executor::new(&model.graph)?;
    let inputs = inputs::build(&exec, &args.inputs)?;
    let outputs = exec.run(inputs)?;
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("cannot create {}", args.output_dir.display()))?;
    let mut text = String::new();
    for (name, value) in exec.output_names().iter().zip(&outputs) {
        match value {
            Value::Tensor(array) => {
                let path = args.output_dir.join(format!("{}.npy", file_name(name)));
                npy::write(&path, array)?;
                writeln!(text, "{name}: {}  -> {}", summary(array), path.display())?;
            }
            other => writeln!(text, "{name}: {other} (not saved)")?,
        }
    }
    Ok(text)
}
