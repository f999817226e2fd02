//! `sparkc run`: runs a model once on given or random inputs and saves its outputs as `.npy`.

use crate::inputs::{self, InputArgs};
use crate::npy;
use anyhow::{Context, Result};
use sparkc_cpu::{Array, Executor, Value};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Where a model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// A GPU when one can run the model, else the CPU (the choice is printed).
    #[default]
    Auto,
    /// The CPU executor, on all cores.
    Cpu,
    /// The first CUDA GPU; an error when there is none.
    Cuda,
}

/// A model made ready to run: an ONNX file through the optimizer, or a `.spark` artifact
/// through the runtime.
pub enum Runnable {
    /// An ONNX model on the CPU executor.
    Onnx(Box<Executor>),
    /// A compiled artifact's session.
    Artifact(Box<sparkc_runtime::Session>),
}

impl Runnable {
    /// The executor that runs it.
    pub fn executor(&self) -> &Executor {
        match self {
            Runnable::Onnx(exec) => exec,
            Runnable::Artifact(session) => session.executor(),
        }
    }

    /// Runs on the CPU executor, adding each op's time to `profile` (after the artifact's
    /// input checks).
    pub fn run_profiled(
        &self,
        inputs: Vec<Value>,
        profile: &mut sparkc_cpu::Profile,
    ) -> Result<Vec<Value>> {
        if let Runnable::Artifact(session) = self {
            session.check_bounds(&inputs)?;
        }
        Ok(self.executor().run_profiled(inputs, profile)?)
    }

    /// Runs on inputs in signature order, on the device chosen.
    pub fn run(&self, inputs: Vec<Value>) -> Result<Vec<Value>> {
        Ok(match self {
            Runnable::Onnx(exec) => exec.run(inputs)?,
            Runnable::Artifact(session) => session.run_values(inputs)?,
        })
    }

    /// The device it runs on, with the reason when `auto` chose the CPU.
    pub fn device(&self) -> String {
        match self {
            Runnable::Onnx(_) => "cpu".to_string(),
            Runnable::Artifact(session) => session.device().to_string(),
        }
    }
}

/// True when the file starts with the `.spark` magic bytes.
pub fn is_artifact(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == sparkc_artifact::MAGIC
}

/// Loads an ONNX model (optimized unless `raw`) or a `.spark` artifact for `device`.
pub fn prepare(path: &Path, raw: bool, device: Device) -> Result<Runnable> {
    if is_artifact(path) {
        let artifact = sparkc_runtime::Artifact::open(path)?;
        let device = match device {
            Device::Auto => sparkc_runtime::Device::Auto,
            Device::Cpu => sparkc_runtime::Device::Cpu,
            Device::Cuda => sparkc_runtime::Device::Cuda,
        };
        let session = sparkc_runtime::Session::new(&artifact, device)
            .with_context(|| format!("{}", path.display()))?;
        return Ok(Runnable::Artifact(Box::new(session)));
    }
    if device == Device::Cuda {
        anyhow::bail!(
            "--device cuda runs compiled artifacts: `sparkc compile {0}` first, then run the .spark file",
            path.display()
        );
    }
    let model = crate::optimize::load(path, raw)?;
    Ok(Runnable::Onnx(Box::new(Executor::new(&model.graph)?)))
}

/// Arguments of `sparkc run`.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model or `.spark` artifact to run.
    pub model: PathBuf,
    /// Inputs.
    #[command(flatten)]
    pub inputs: InputArgs,
    /// Folder for one NAME.npy per output.
    #[arg(long, default_value = ".")]
    pub output_dir: PathBuf,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
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
    let runnable = prepare(&args.model, args.no_opt, args.device)?;
    let exec = runnable.executor();
    let inputs = inputs::build(exec, &args.inputs)?;
    let outputs = runnable.run(inputs)?;
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("cannot create {}", args.output_dir.display()))?;
    let mut text = String::new();
    if let Runnable::Artifact(session) = &runnable {
        writeln!(text, "device: {}", session.device())?;
    }
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
