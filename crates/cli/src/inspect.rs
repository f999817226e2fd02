//! `sparkc inspect`: model summary and IR dumps.

use anyhow::{Context, Result};
use sparkc_ir::{print, Model, Op};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

/// Arguments of `sparkc inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model or `.spark` artifact to inspect.
    pub model: PathBuf,
    /// Dump the IR instead of the summary.
    #[arg(long, value_enum)]
    pub dump: Option<Dump>,
    /// List every unsupported op of the model at once (exits non-zero if there are any).
    #[arg(long, conflicts_with = "dump")]
    pub unsupported: bool,
    /// Which graph to show: as imported, or after the optimizer.
    #[arg(long, value_enum, default_value_t = Stage::Import)]
    pub stage: Stage,
    /// Show the graph as it is after this pass of the optimizer (implies `--stage opt`).
    #[arg(long, value_name = "PASS")]
    pub after: Option<String>,
    /// List each fused or rewritten node with the rules that built it, and a summary line.
    #[arg(long, conflicts_with_all = ["dump", "unsupported"])]
    pub explain: bool,
    /// Print a timing line per optimizer pass on standard error.
    #[arg(short, long)]
    pub verbose: bool,
    /// Write the output to this file instead of standard output (a folder for `--dump ptx|llvm`).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// GPU architecture of `--dump ptx|llvm|kernels`: sm_121a (DGX Spark), sm_120a, sm_100a, sm_90a, sm_80
    /// (default: sm_121a for an ONNX model, the artifact's first target for a `.spark`).
    #[arg(long)]
    pub target: Option<sparkc_kernels::Sm>,
    /// Only this node's kernel, for `--dump ptx|llvm|kernels`.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Arithmetic of products: tf32 (tensor cores) or fp32 (exact).
    #[arg(long, default_value = "tf32")]
    pub precision: sparkc_kernels::Precision,
    /// Layout of convolutions: nchw (as ONNX has them) or nhwc (channels last), as `sparkc
    /// compile --layout` chooses it; implies `--stage opt` when nhwc.
    #[arg(long, default_value = "nchw")]
    pub layout: sparkc_ir::op::Layout,
    /// Show the model quantized to this format (as `sparkc compile --quantize` does it, with
    /// seeded calibration inputs); implies `--stage opt`.
    #[arg(long, value_name = "FORMAT", conflicts_with_all = ["after", "explain", "unsupported"])]
    pub quantize: Option<sparkc_passes::quantize::Scheme>,
    /// With `--quantize nvfp4|mxfp4`: round MatMul and Gemm inputs to that block format too
    /// (as `sparkc compile --activations` does).
    #[arg(long, value_name = "FORMAT", requires = "quantize")]
    pub activations: Option<String>,
}

/// The graph `inspect` shows.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// As imported from ONNX.
    Import,
    /// After the optimizer.
    Opt,
}

/// The IR dump formats.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Dump {
    /// One node a line.
    Ir,
    /// Graphviz DOT.
    Dot,
    /// JSON for tools.
    Json,
    /// The generated kernels: launch, shared memory and the IR nodes each covers.
    Kernels,
    /// PTX of every kernel (one file each with `-o DIR`).
    Ptx,
    /// LLVM IR of every kernel, as generated (one file each with `-o DIR`).
    Llvm,
}

impl Args {
    /// The architecture kernels are generated for from an ONNX model.
    pub fn target_or_default(&self) -> sparkc_kernels::Sm {
        self.target.unwrap_or(sparkc_kernels::Sm::ALL[0])
    }
}

/// Runs `sparkc inspect`, returning what goes to standard output (nothing when `-o` is given).
pub fn run(args: &Args) -> Result<String> {
    if crate::run::is_artifact(&args.model) {
        return crate::inspect_artifact::run(args);
    }
    if args.unsupported {
        return unsupported(args);
    }
    let codegen = matches!(args.dump, Some(Dump::Kernels | Dump::Ptx | Dump::Llvm));
    let optimizing = args.stage == Stage::Opt
        || args.after.is_some()
        || args.explain
        || codegen
        || !args.layout.is_nchw();
    // The graph `sparkc compile --target T` builds for the target shown.
    let options = crate::compile::pass_options(args.layout, true, args.precision);
    let model = if let Some(scheme) = args.quantize {
        let mut request = crate::quantize::Request::seeded(Some(scheme));
        request.block_activations =
            crate::quantize::block_activations(Some(scheme), args.activations.as_deref())?;
        request.options = options;
        crate::quantize::optimize_quantized(&args.model, &request)?.0
    } else if optimizing {
        let optimized = crate::optimize::optimize(&args.model, args.after.as_deref(), options)?;
        if args.verbose {
            eprint!("{}", crate::optimize::timings(&optimized.passes));
            eprint!("{}", crate::optimize::summary(&optimized));
        }
        if args.explain {
            return emit(args, &crate::optimize::explain(&optimized)?);
        }
        optimized.model
    } else {
        sparkc_onnx::load(&args.model)?
    };
    let text = match args.dump {
        None => summary(&model),
        Some(Dump::Ir) => print::to_text(&model),
        Some(Dump::Dot) => print::to_dot(&model),
        Some(Dump::Json) => format!("{:#}\n", print::to_json(&model)),
        Some(Dump::Kernels) => crate::codegen::kernel_table(&model, args)?,
        Some(Dump::Ptx) | Some(Dump::Llvm) => {
            let llvm = matches!(args.dump, Some(Dump::Llvm));
            return crate::codegen::dump_code(&model, args, llvm);
        }
    };
    emit(args, &text)
}

/// `text` written to the `-o` file, or returned for standard output.
pub(crate) fn emit(args: &Args, text: &str) -> Result<String> {
    match &args.output {
        Some(path) => {
            std::fs::write(path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(String::new())
        }
        None => Ok(text.to_string()),
    }
}

fn unsupported(args: &Args) -> Result<String> {
    let (opset, ops) = sparkc_onnx::unsupported_ops(&args.model)?;
    let mut text = String::new();
    if ops.is_empty() {
        let _ = writeln!(
            text,
            "every op of {} is supported (opset {opset})",
            args.model.display()
        );
        return emit(args, &text);
    }
    let _ = writeln!(
        text,
        "{} unsupported op(s) in {} (opset {opset}):",
        ops.len(),
        args.model.display()
    );
    for op in &ops {
        let shown: Vec<&str> = op.nodes.iter().take(5).map(String::as_str).collect();
        let more = if op.nodes.len() > 5 {
            format!(", … {} more", op.nodes.len() - 5)
        } else {
            String::new()
        };
        let _ = writeln!(
            text,
            "  {}::{} ({} node(s): {}{more})",
            op.domain,
            op.op,
            op.nodes.len(),
            shown.join(", ")
        );
    }
    anyhow::bail!("{text}{} unsupported op(s)", ops.len())
}

/// `bytes` in the largest binary unit that keeps the value at 1 or more (`13.5 MiB`).
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The summary: signature, op histogram, parameters and opset.
fn summary(model: &Model) -> String {
    let graph = &model.graph;
    let mut out = String::new();
    let _ = writeln!(out, "model     {}", graph.name);
    let _ = writeln!(
        out,
        "opset     {} (ir_version {})",
        model.opset, model.ir_version
    );
    if !model.producer.is_empty() {
        let _ = writeln!(out, "producer  {}", model.producer);
    }
    let _ = writeln!(out, "inputs");
    for &id in &graph.inputs {
        let value = &graph.node(id).outputs[0];
        let _ = writeln!(out, "  {:<24} {}", value.name, value.ty);
    }
    let _ = writeln!(out, "outputs");
    for &v in &graph.outputs {
        let value = graph.value(v);
        let _ = writeln!(out, "  {:<24} {}", value.name, value.ty);
    }
    let mut histogram: BTreeMap<String, usize> = BTreeMap::new();
    let (mut params, mut bytes) = (0u64, 0u64);
    let mut ops = 0;
    count(graph, &mut histogram, &mut params, &mut bytes, &mut ops);
    let _ = writeln!(out, "parameters {params} ({})", human_bytes(bytes));
    let _ = writeln!(out, "ops       {ops} nodes, {} kinds", histogram.len());
    let mut sorted: Vec<_> = histogram.into_iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (op, n) in sorted {
        let _ = writeln!(out, "  {op:<24} {n}");
    }
    out
}

fn count(
    graph: &sparkc_ir::Graph,
    histogram: &mut BTreeMap<String, usize>,
    params: &mut u64,
    bytes: &mut u64,
    ops: &mut usize,
) {
    for id in graph.dag.node_indices() {
        let node = graph.node(id);
        match &node.op {
            Op::Input => {}
            Op::Const(tensor) => {
                *params += tensor.len() as u64;
                *bytes += tensor.data.len() as u64;
            }
            op => {
                *ops += 1;
                *histogram.entry(op.name()).or_default() += 1;
                for (_, subgraph) in op.subgraphs() {
                    count(subgraph, histogram, params, bytes, ops);
                }
            }
        }
    }
}
