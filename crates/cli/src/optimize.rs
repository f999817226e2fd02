//! Loading a model through the optimizer, shared by every command, and `sparkc optimize`.

use anyhow::Result;
use sparkc_ir::op::Layout;
use sparkc_ir::Model;
use sparkc_passes::stats::{stats, GraphStats};
use sparkc_passes::PassReport;
use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Arguments of `sparkc optimize`.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model to optimize.
    pub model: std::path::PathBuf,
    /// Where to write the optimized model (fused nodes in the `ai.sparkc` domain, each with a
    /// model-local function holding its body).
    #[arg(short, long)]
    pub output: std::path::PathBuf,
    /// Print a timing line per pass on standard error.
    #[arg(short, long)]
    pub verbose: bool,
    /// Layout of convolutions: nchw (as ONNX has them) or nhwc (channels last; each such
    /// convolution is written as an `ai.sparkc` function of transposes around an ONNX `Conv`).
    #[arg(long, default_value = "nchw")]
    pub layout: Layout,
}

/// Runs `sparkc optimize`, returning its summary line.
pub fn run(args: &Args) -> Result<String> {
    let options = sparkc_passes::Options {
        layout: args.layout,
        ..sparkc_passes::Options::default()
    };
    let optimized = optimize(&args.model, None, options)?;
    if args.verbose {
        eprint!("{}", timings(&optimized.passes));
    }
    sparkc_onnx::export::save(&optimized.model, &args.output)?;
    Ok(format!(
        "wrote {}: {}",
        args.output.display(),
        summary(&optimized)
    ))
}

/// What optimizing a model did.
pub struct Optimized {
    /// The model, optimized as far as asked.
    pub model: Model,
    /// One report per pass run.
    pub passes: Vec<PassReport>,
    /// Figures before optimizing.
    pub before: GraphStats,
    /// Figures after.
    pub after: GraphStats,
    /// Total time in the passes.
    pub time: Duration,
}

/// Imports `path` and runs the standard pipeline on it with `options`, up to and including
/// pass `after` (every pass when `None`).
pub fn optimize(
    path: &Path,
    after: Option<&str>,
    options: sparkc_passes::Options,
) -> Result<Optimized> {
    let mut model = sparkc_onnx::load(path)?;
    let before = stats(&model.graph);
    let start = Instant::now();
    let passes = sparkc_passes::standard_with(options)?.run_until(&mut model.graph, after)?;
    Ok(Optimized {
        after: stats(&model.graph),
        model,
        passes,
        before,
        time: start.elapsed(),
    })
}

/// Imports `path`, optimized unless `raw`.
pub fn load(path: &Path, raw: bool) -> Result<Model> {
    if raw {
        Ok(sparkc_onnx::load(path)?)
    } else {
        Ok(optimize(path, None, sparkc_passes::Options::default())?.model)
    }
}

/// One line per pass: its time, the node count it left and what it did.
pub fn timings(passes: &[PassReport]) -> String {
    let mut out = String::new();
    for p in passes {
        let _ = writeln!(
            out,
            "pass {:<16} {:>9.3} ms  {:>6} -> {:<6} nodes  {}",
            p.name,
            p.time.as_secs_f64() * 1e3,
            p.nodes_before,
            p.nodes_after,
            p.summary
        );
    }
    out
}

fn mib(bytes: f64) -> String {
    format!("{:.2} MiB", bytes / (1024.0 * 1024.0))
}

/// The summary line: nodes, kernels and traffic before and after, e-graph figures and time.
pub fn summary(o: &Optimized) -> String {
    let egraph = o
        .passes
        .iter()
        .find(|p| p.name == "saturate")
        .map_or_else(|| "e-graph not run".to_string(), |p| p.summary.clone());
    format!(
        "nodes {} -> {}, kernels {} -> {}, intermediate traffic {} -> {}, e-graph {}, optimize {:.1} ms\n",
        o.before.nodes,
        o.after.nodes,
        o.before.kernels,
        o.after.kernels,
        mib(o.before.intermediate_bytes),
        mib(o.after.intermediate_bytes),
        egraph,
        o.time.as_secs_f64() * 1e3
    )
}

/// Each node a rule or pass built, with the rules that built it, then the summary line.
pub fn explain(o: &Optimized) -> Result<String> {
    let graph = &o.model.graph;
    let mut out = String::new();
    for id in graph.topo_order()? {
        let node = graph.node(id);
        let (label, rules) = match &node.op {
            sparkc_ir::Op::Fused(f) => (format!("Fused({})", f.label()), f.provenance.clone()),
            op if !node.rules.is_empty() => (op.name(), node.rules.clone()),
            _ => continue,
        };
        let _ = writeln!(out, "{:<32} {:<40} {}", node.name, label, rules.join(", "));
    }
    out.push_str(&summary(o));
    Ok(out)
}
