//! `sparkc-run`: runs a `.spark` artifact with the runtime alone (no compiler linked), the
//! binary to carry to a GPU machine. Seeded inputs from the signature; `--check` compares
//! every output with the CPU executor; `--iters` times repeated runs, on a GPU both as
//! CUDA-graph replays and as plain launches; `--profile` times each kernel with CUDA events.
//!
//! ```text
//! sparkc-run MODEL.spark [--device auto|cpu|cuda] [--dim N=2 ...] [--check] [--iters 20] [--profile]
//! ```

use sparkc_runtime::{sample_inputs, Artifact, Device, Session, Tensor};

/// The seed of the sampled inputs, fixed so runs compare.
const SEED: u64 = 0x2545_f491_4f6c_dd1d;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

struct Options {
    model: String,
    device: Device,
    dims: BTreeMap<String, i64>,
    check: bool,
    iters: usize,
    profile: bool,
}

fn parse() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        model: String::new(),
        device: Device::Auto,
        dims: BTreeMap::new(),
        check: false,
        iters: 0,
        profile: false,
    };
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--device" => o.device = value()?.parse()?,
            "--dim" => {
                let v = value()?;
                let (name, size) = v.split_once('=').ok_or(format!("--dim {v}: NAME=SIZE"))?;
                let size = size
                    .parse()
                    .map_err(|_| format!("--dim {v}: SIZE is a number"))?;
                o.dims.insert(name.to_string(), size);
            }
            "--check" => o.check = true,
            "--profile" => o.profile = true,
            "--iters" => o.iters = value()?.parse().map_err(|_| "--iters takes a number")?,
            flag if flag.starts_with("--") => return Err(format!("unknown flag {flag}")),
            path => o.model = path.to_string(),
        }
    }
    if o.model.is_empty() {
        return Err("usage: sparkc-run MODEL.spark [--device auto|cpu|cuda] [--dim N=2 ...] [--check] [--iters 20] [--profile]".into());
    }
    Ok(o)
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let o = parse()?;
    let artifact = Artifact::open(o.model.as_ref()).map_err(|e| e.to_string())?;
    let session = Session::new(&artifact, o.device).map_err(|e| e.to_string())?;
    println!("{}: device {}", o.model, session.device());
    let given = sample_inputs(session.inputs(), &o.dims, SEED)
        .map_err(|e| format!("{e} (give sizes with --dim)"))?;
    let named: Vec<(&str, Tensor)> = given.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let start = Instant::now();
    let outputs = session.run(&named).map_err(|e| e.to_string())?;
    let first = start.elapsed();
    if o.check {
        let cpu = Session::new(&artifact, Device::Cpu).map_err(|e| e.to_string())?;
        let reference = cpu.run(&named).map_err(|e| e.to_string())?;
        for ((name, got), (_, want)) in outputs.iter().zip(&reference) {
            let (g, w) = (got.to_f32(), want.to_f32());
            let worst = g
                .iter()
                .zip(&w)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            let dot: f64 = g
                .iter()
                .zip(&w)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
            let cosine = dot / (norm(&g) * norm(&w)).max(1e-30);
            println!(
                "  {name}: {:?} max abs diff {worst:.3e} cosine {cosine:.6}",
                got.shape()
            );
        }
    }
    if o.iters > 0 {
        let time = |label: &str| -> Result<(), String> {
            let mut samples = Vec::with_capacity(o.iters);
            for _ in 0..o.iters {
                let t = Instant::now();
                session.run(&named).map_err(|e| e.to_string())?;
                samples.push(t.elapsed());
            }
            println!(
                "  {label}: median {:.3} ms over {} runs",
                median(samples),
                o.iters
            );
            Ok(())
        };
        println!(
            "  first run {:.3} ms (plans the arena, captures the graph on a GPU)",
            first.as_secs_f64() * 1e3
        );
        time("runs")?;
        if session.device().starts_with("cuda") {
            session.set_cuda_graphs(false);
            time("plain launches, no graph")?;
            session.set_cuda_graphs(true);
        }
    }
    if o.profile {
        let values: Vec<sparkc_cpu::Value> = given
            .iter()
            .map(|(_, t)| sparkc_cpu::Value::Tensor(sparkc_cpu::Array::from_tensor(t.as_ir())))
            .collect();
        match session.profile_kernels(values).map_err(|e| e.to_string())? {
            None => println!("  --profile times kernels on a GPU only"),
            Some(mut kernels) => {
                let total: f32 = kernels.iter().map(|k| k.ms).sum();
                kernels.sort_by(|a, b| b.ms.total_cmp(&a.ms));
                println!("  {} kernels, {total:.3} ms in all:", kernels.len());
                for k in kernels.iter().take(25) {
                    println!(
                        "    {:>8.4} ms {:>5.1}%  {:<28} {}",
                        k.ms,
                        100.0 * k.ms / total.max(1e-12),
                        k.node,
                        k.variant
                    );
                }
            }
        }
    }
    Ok(())
}
