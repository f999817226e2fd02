//! `sparkc bench`: latency percentiles and throughput, with an optional per-op profile.

use crate::inputs::{self, InputArgs};
use crate::run::{prepare, set_threads, Device, Runnable};
use anyhow::{bail, Result};
use sparkc_cpu::Profile;
use std::fmt::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Arguments of `sparkc bench`.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model or `.spark` artifact to benchmark.
    pub model: PathBuf,
    /// Inputs (random ones unless given; the shapes are the declared ones).
    #[command(flatten)]
    pub inputs: InputArgs,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
    /// Untimed runs first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Print time per op kind (`--profile`), or per node, slowest first (`--profile=nodes`).
    #[arg(long, value_enum, num_args = 0..=1, require_equals = true, default_missing_value = "ops")]
    pub profile: Option<ProfileBy>,
    /// Run the graph as imported, without the optimizer.
    #[arg(long)]
    pub no_opt: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print one JSON object instead of the table (for scripts).
    #[arg(long)]
    pub json: bool,
}

/// How `--profile` groups the time on the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProfileBy {
    /// One row per op kind.
    Ops,
    /// One row per node (fused regions under their last node), with its output.
    Nodes,
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `p`-th percentile (0–100) of sorted samples, nearest rank.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs `sparkc bench`.
pub fn run(args: &Args) -> Result<String> {
    if args.iters == 0 {
        bail!("--iters must be at least 1");
    }
    set_threads(args.threads);
    let runnable = prepare(&args.model, args.no_opt, args.device)?;
    let exec = runnable.executor();
    let mut input_args = args.inputs.clone();
    input_args.random_inputs = true;
    let inputs = inputs::build(exec, &input_args)?;
    for _ in 0..args.warmup {
        runnable.run(inputs.clone())?;
    }
    // On a GPU: one run with CUDA events around every kernel; on the CPU: per-op timing.
    let kernels = match &runnable {
        Runnable::Artifact(session) if args.profile.is_some() => {
            session.profile_kernels(inputs.clone())?
        }
        _ => None,
    };
    let mut samples = Vec::with_capacity(args.iters);
    let mut profile = Profile::default();
    for _ in 0..args.iters {
        let batch = inputs.clone();
        let start = Instant::now();
        if args.profile.is_some() && kernels.is_none() {
            runnable.run_profiled(batch, &mut profile)?;
        } else {
            runnable.run(batch)?;
        }
        samples.push(start.elapsed());
    }
    samples.sort();
    let total: Duration = samples.iter().sum();
    let mean = total / samples.len() as u32;
    let (min, median, p90, p99) = (
        samples[0],
        percentile(&samples, 50.0),
        percentile(&samples, 90.0),
        percentile(&samples, 99.0),
    );
    let throughput = 1.0 / mean.as_secs_f64();
    let threads = sparkc_cpu::threads();
    if args.json {
        let value = serde_json::json!({
            "model": args.model.display().to_string(),
            "device": runnable.device(),
            "threads": threads,
            "iters": args.iters,
            "min_ms": millis(min),
            "median_ms": millis(median),
            "p90_ms": millis(p90),
            "p99_ms": millis(p99),
            "mean_ms": millis(mean),
            "throughput_per_s": throughput,
        });
        return Ok(format!("{value}\n"));
    }
    let mut text = String::new();
    writeln!(
        text,
        "model: {}  (device {}, {threads} threads, {} warm-up, {} timed runs)",
        args.model.display(),
        runnable.device(),
        args.warmup,
        args.iters
    )?;
    writeln!(
        text,
        "latency ms: min {:.3}  median {:.3}  p90 {:.3}  p99 {:.3}",
        millis(min),
        millis(median),
        millis(p90),
        millis(p99)
    )?;
    writeln!(text, "throughput: {throughput:.1} inferences/s")?;
    if let Some(kernels) = &kernels {
        let sum: f32 = kernels.iter().map(|k| k.ms).sum();
        let mut rows: Vec<_> = kernels.iter().collect();
        rows.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        writeln!(
            text,
            "\n{:<32} {:<40} {:>9} {:>7}",
            "kernel", "variant", "ms", "share"
        )?;
        for k in rows {
            writeln!(
                text,
                "{:<32} {:<40} {:>9.4} {:>6.1}%",
                k.kernel,
                k.variant,
                k.ms,
                100.0 * k.ms / sum.max(1e-12)
            )?;
        }
        writeln!(text, "(one run, CUDA events around each kernel, no graph)")?;
    } else if args.profile == Some(ProfileBy::Nodes) {
        let sum: Duration = profile.nodes.iter().map(|t| t.total).sum();
        let mut rows: Vec<_> = profile.nodes.iter().collect();
        rows.sort_by_key(|row| std::cmp::Reverse(row.total));
        writeln!(
            text,
            "\n{:<28} {:<28} {:<34} {:>9} {:>7}",
            "node", "op", "output", "ms", "share"
        )?;
        for node in rows {
            writeln!(
                text,
                "{:<28} {:<28} {:<34} {:>9.3} {:>6.1}%",
                node.name,
                node.op,
                node.output.trim_start_matches("a tensor "),
                millis(node.total) / args.iters as f64,
                100.0 * node.total.as_secs_f64() / sum.as_secs_f64().max(1e-12)
            )?;
        }
        writeln!(text, "(time per run)")?;
    } else if args.profile.is_some() {
        let sum: Duration = profile.ops.values().map(|t| t.total).sum();
        let mut rows: Vec<_> = profile.ops.iter().collect();
        rows.sort_by_key(|row| std::cmp::Reverse(row.1.total));
        writeln!(
            text,
            "\n{:<24} {:>7} {:>12} {:>7}",
            "op", "count", "total ms", "share"
        )?;
        for (op, timing) in rows {
            writeln!(
                text,
                "{:<24} {:>7} {:>12.3} {:>6.1}%",
                op,
                timing.count / args.iters,
                millis(timing.total) / args.iters as f64,
                100.0 * timing.total.as_secs_f64() / sum.as_secs_f64().max(1e-12)
            )?;
        }
        writeln!(text, "(count and time are per run)")?;
    }
    Ok(text)
}
