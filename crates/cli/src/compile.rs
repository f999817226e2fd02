//! `sparkc compile`: a model optimized, lowered for each target, and written as one `.spark`
//! artifact (see `docs/artifact.md`).

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use onnx_protobuf::tensor_proto::DataLocation;
use onnx_protobuf::{Message, StringStringEntryProto};
use protobuf::EnumOrUnknown;
use sparkc_artifact::{
    arrange, push_weight, Artifact, Buffer, BufferKind, DimBound, Factor, Header, Kernel,
    KernelPlan, MemoryPlan, OutputAccuracy, ProductQuantization, Quantization, SizeExpr,
    TensorSpec, Term, WEIGHTS_LOCATION,
};
use sparkc_ir::op::Layout;
use sparkc_ir::{Atom, Dim, Graph, NodeId, Op, ValueRef, ValueType};
use sparkc_kernels::plan::is_view;
use sparkc_kernels::{lower_graph, Lowered, Output, Precision, Role, Sm};
use sparkc_passes::quantize::Scheme;
use std::collections::HashMap;
use std::fmt::Write;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `sparkc compile`.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX model to compile.
    pub model: PathBuf,
    /// The artifact to write (default: the model's path with a `.spark` extension).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// GPU architectures to generate kernels for, comma-separated (`all` for every one,
    /// `none` for an artifact that runs on the CPU only).
    #[arg(long, default_value = "sm_121a", value_delimiter = ',')]
    pub target: Vec<String>,
    /// Arithmetic for products: tf32 (FP32 models on tensor cores) or fp32 (exact).
    #[arg(long, default_value = "tf32")]
    pub precision: Precision,
    /// Layout of convolutions: nchw (as ONNX has them) or nhwc (channels last: a patch's
    /// channels are contiguous, and transposes remain only where the layout changes).
    #[arg(long, default_value = "nchw")]
    pub layout: Layout,
    /// Upper bound of a symbolic dim, as NAME=VALUE (repeatable); runs above it are refused,
    /// and the summary's peak memory is computed at the bounds.
    #[arg(long = "max", value_name = "NAME=VALUE")]
    pub max: Vec<String>,
    /// Quantize products to this format: bf16, fp16, fp8, nvfp4, mxfp4 or int8.
    #[arg(long, value_name = "FORMAT")]
    pub quantize: Option<Scheme>,
    /// Calibration inputs: a folder of input sets, one subfolder per set holding NAME.npy per
    /// input (default: seeded random inputs).
    #[arg(long, value_name = "DIR")]
    pub calibrate: Option<PathBuf>,
    /// Keep these product nodes in full precision (repeatable, or comma-separated).
    #[arg(long, value_name = "NODE", value_delimiter = ',')]
    pub keep: Vec<String>,
    /// Print the quantizer's decision for every product.
    #[arg(long)]
    pub report: bool,
    /// The cosine similarity against FP32 the quantized model must keep on the calibration
    /// inputs; the most sensitive products keep full precision until it does (default: 0.999
    /// for fp8 and int8, 0.99 for nvfp4 and mxfp4).
    #[arg(long, value_name = "X")]
    pub min_cosine: Option<f64>,
    /// What MatMul and Gemm inputs are rounded to: bf16 (the default for nvfp4 and mxfp4), or
    /// the weights' own block format, nvfp4 or mxfp4 (4-bit activations for the FP4 tensor
    /// cores of the sm_120 family).
    #[arg(long, value_name = "FORMAT")]
    pub activations: Option<String>,
}

/// The optimizer's options for an artifact with kernels for GPUs (`gpu`) or for the CPU only.
pub fn pass_options(layout: Layout, gpu: bool, precision: Precision) -> sparkc_passes::Options {
    sparkc_passes::Options {
        layout,
        // Exact FP32 products run on CUDA cores, whose kernel reads `[K, N]` weights as they are.
        transposed_weights: gpu && precision == Precision::Tf32,
    }
}

fn targets(names: &[String]) -> Result<Vec<Sm>> {
    if names.iter().any(|n| n == "all") {
        return Ok(Sm::ALL.to_vec());
    }
    if names.iter().any(|n| n == "none") {
        if names.len() > 1 {
            bail!("--target none (a CPU-only artifact) cannot be combined with architectures");
        }
        return Ok(Vec::new());
    }
    let mut out: Vec<Sm> = Vec::new();
    for name in names {
        let sm: Sm = name.parse().map_err(anyhow::Error::msg)?;
        if !out.contains(&sm) {
            out.push(sm);
        }
    }
    if out.is_empty() {
        bail!("--target needs at least one architecture");
    }
    Ok(out)
}

fn bounds(pairs: &[String]) -> Result<Vec<DimBound>> {
    pairs
        .iter()
        .map(|p| {
            let (name, value) = p
                .split_once('=')
                .with_context(|| format!("--max {p}: expected NAME=VALUE"))?;
            let max: i64 = value
                .parse()
                .ok()
                .filter(|v| *v >= 1)
                .with_context(|| format!("--max {p}: the bound must be a positive integer"))?;
            Ok(DimBound {
                symbol: name.to_string(),
                max,
            })
        })
        .collect()
}

/// A size expression of the artifact format from an IR dim.
pub fn size_expr(dim: &Dim) -> SizeExpr {
    let Dim::Expr(poly) = dim else {
        return SizeExpr {
            terms: Vec::new(),
            dynamic: true,
        };
    };
    let terms = poly
        .terms()
        .map(|(atoms, coefficient)| Term {
            coefficient,
            factors: atoms
                .iter()
                .map(|atom| match atom {
                    Atom::Sym(name) => Factor {
                        symbol: name.to_string(),
                        ..Factor::default()
                    },
                    Atom::FloorDiv(num, divisor) => Factor {
                        numerator: Some(Box::new(size_expr(&Dim::Expr((**num).clone())))),
                        divisor: *divisor,
                        ..Factor::default()
                    },
                })
                .collect(),
        })
        .collect();
    SizeExpr {
        terms,
        dynamic: false,
    }
}

fn spec(graph: &Graph, v: ValueRef) -> TensorSpec {
    let value = graph.value(v);
    let (dtype, shape) = match &value.ty {
        ValueType::Tensor(t) => (
            t.dtype.name().to_string(),
            t.shape
                .as_ref()
                .map(|dims| dims.iter().map(size_expr).collect())
                .unwrap_or_default(),
        ),
        other => (other.to_string(), Vec::new()),
    };
    TensorSpec {
        name: value.name.clone(),
        dtype,
        shape,
    }
}

/// The activation arena `buffers` need with each symbolic dim at its bound (1 where it has
/// none), and those dims in words.
pub fn peak_memory(buffers: &[Buffer], bounds: &[DimBound]) -> Result<(u64, String), String> {
    let bind = |s: &str| Some(bounds.iter().find(|b| b.symbol == s).map_or(1, |b| b.max));
    let peak = arrange(buffers, &bind)?.arena_bytes;
    let at = if bounds.is_empty() {
        "every symbolic dim at 1".to_string()
    } else {
        bounds
            .iter()
            .map(|b| format!("{}={}", b.symbol, b.max))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok((peak, at))
}

/// The value a view chain reads in the end.
fn root(graph: &Graph, mut v: ValueRef) -> ValueRef {
    while is_view(&graph.node(v.node).op) {
        match graph.inputs_of(v.node).first().copied().flatten() {
            Some(input) => v = input,
            None => break,
        }
    }
    v
}

/// The optimized graph as ONNX bytes, its initializers moved to the weight section; returns
/// the bytes and each initializer's offset in the section.
fn embed_graph(
    model: &sparkc_ir::Model,
    section: &mut Vec<u8>,
) -> Result<(Vec<u8>, HashMap<String, u64>)> {
    let mut proto = sparkc_onnx::export::to_proto(model)?;
    let mut offsets = HashMap::new();
    if let Some(graph) = proto.graph.as_mut() {
        for t in graph
            .initializer
            .iter_mut()
            .filter(|t| !t.raw_data.is_empty())
        {
            let at = push_weight(section, &t.raw_data);
            let entry = |key: &str, value: String| StringStringEntryProto {
                key: key.to_string(),
                value,
                ..StringStringEntryProto::default()
            };
            t.external_data = vec![
                entry("location", WEIGHTS_LOCATION.to_string()),
                entry("offset", at.to_string()),
                entry("length", t.raw_data.len().to_string()),
            ];
            t.data_location = EnumOrUnknown::new(DataLocation::EXTERNAL);
            t.raw_data = Vec::new();
            offsets.insert(t.name.clone(), at);
        }
    }
    let bytes = proto
        .write_to_bytes()
        .context("cannot encode the optimized graph")?;
    Ok((bytes, offsets))
}

/// Buffers of every value the kernels touch, with their lifetimes over the kernel sequence.
fn memory_plan(
    graph: &Graph,
    kernels: &[Lowered],
    weights: &HashMap<String, u64>,
) -> Result<(MemoryPlan, Vec<Vec<u32>>)> {
    let ids: HashMap<&str, NodeId> = graph
        .dag
        .node_indices()
        .map(|id| (graph.node(id).name.as_str(), id))
        .collect();
    let mut index: HashMap<ValueRef, u32> = HashMap::new();
    let mut buffers: Vec<Buffer> = Vec::new();
    let outputs: Vec<ValueRef> = graph.outputs.iter().map(|&v| root(graph, v)).collect();
    let last = kernels.len().saturating_sub(1) as u32;
    let mut touch = |v: ValueRef, step: u32, buffers: &mut Vec<Buffer>| -> Result<u32> {
        if let Some(&i) = index.get(&v) {
            let b = &mut buffers[i as usize];
            b.first = b.first.min(step);
            b.last = b.last.max(step);
            return Ok(i);
        }
        let value = graph.value(v);
        let t = value
            .ty
            .as_tensor()
            .with_context(|| format!("value '{}' is not a tensor", value.name))?;
        let shape = t
            .shape
            .as_ref()
            .with_context(|| format!("value '{}' has no known rank", value.name))?;
        let elems = shape.iter().fold(Dim::known(1), |acc, d| acc * d.clone());
        // Sub-byte types are packed, as ONNX stores them: two 4-bit elements to a byte.
        let bytes = (elems * Dim::known(t.dtype.bits() as i64)).ceil_div(&Dim::known(8));
        let node = graph.node(v.node);
        let mut b = Buffer {
            name: value.name.clone(),
            bytes: Some(size_expr(&bytes)),
            first: step,
            last: step,
            ..Buffer::default()
        };
        let kind = if let Some(pos) = graph.inputs.iter().position(|&n| n == v.node) {
            b.position = pos as u32;
            b.first = 0;
            BufferKind::Input
        } else if matches!(node.op, Op::Const(_)) {
            b.weight_offset = match weights.get(&value.name) {
                Some(&at) => at,
                // An empty constant has no bytes in the section, and nothing reads it.
                None if bytes.as_const() == Some(0) => 0,
                None => anyhow::bail!("constant '{}' is not in the weight section", value.name),
            };
            BufferKind::Weight
        } else if let Some(pos) = outputs.iter().position(|&o| o == v) {
            b.position = pos as u32;
            b.last = last;
            BufferKind::Output
        } else {
            BufferKind::Activation
        };
        b.set_kind(kind);
        let i = buffers.len() as u32;
        buffers.push(b);
        index.insert(v, i);
        Ok(i)
    };
    let mut bindings = Vec::with_capacity(kernels.len());
    for (step, k) in kernels.iter().enumerate() {
        let id = *ids
            .get(k.info.node.as_str())
            .with_context(|| format!("kernel {} names no node", k.info.name))?;
        let inputs = graph.inputs_of(id);
        let mut bound = Vec::with_capacity(k.info.buffers.len());
        for arg in &k.info.buffers {
            let v = match arg.role {
                Role::Output => ValueRef {
                    node: id,
                    output: arg.slot,
                },
                Role::Input => inputs.get(arg.slot).copied().flatten().with_context(|| {
                    format!("kernel {}: input {} is absent", k.info.name, arg.slot)
                })?,
            };
            bound.push(touch(root(graph, v), step as u32, &mut buffers)?);
        }
        bindings.push(bound);
    }
    let output_buffers = outputs
        .iter()
        .map(|&v| touch(v, last, &mut buffers))
        .collect::<Result<_>>()?;
    Ok((
        MemoryPlan {
            buffers,
            outputs: output_buffers,
        },
        bindings,
    ))
}

/// The artifact's record of a quantization summary.
fn record(q: &crate::quantize::Summary) -> Quantization {
    Quantization {
        scheme: q.scheme.map(|s| s.to_string()).unwrap_or_default(),
        products: q
            .report
            .decisions
            .iter()
            .map(|d| ProductQuantization {
                node: d.node.clone(),
                op: d.op.clone(),
                weight_format: d.weight_format.clone(),
                activation_format: d.activation_format.clone(),
                kept_because: d.kept_because.clone().unwrap_or_default(),
                weight_error: d.weight_error,
            })
            .collect(),
        weight_bytes_before: q.report.weight_bytes_before as u64,
        weight_bytes_after: q.report.weight_bytes_after as u64,
        outputs: q
            .accuracy
            .iter()
            .map(|a| OutputAccuracy {
                name: a.name.clone(),
                cosine: a.cosine,
                max_abs_error: a.max_abs_error,
            })
            .collect(),
        compared_on: q.inputs.clone(),
    }
}

/// Runs `sparkc compile`.
pub fn run(args: &Args) -> Result<String> {
    let start = Instant::now();
    let sms = targets(&args.target)?;
    let bounds = bounds(&args.max)?;
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| args.model.with_extension("spark"));
    let bar = ProgressBar::new(sms.len() as u64 + 2);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if args.quantize.is_none()
        && (args.calibrate.is_some()
            || !args.keep.is_empty()
            || args.min_cosine.is_some()
            || args.activations.is_some())
    {
        bail!("--calibrate, --keep, --min-cosine and --activations need --quantize FORMAT");
    }
    let block_activations =
        crate::quantize::block_activations(args.quantize, args.activations.as_deref())?;
    if let Some(x) = args.min_cosine.filter(|x| !(-1.0..=1.0).contains(x)) {
        bail!("--min-cosine {x}: a cosine similarity lies between -1 and 1");
    }
    bar.set_message(match args.quantize {
        Some(q) => format!("calibrating and quantizing to {q}"),
        None => "optimizing".to_string(),
    });
    let request = crate::quantize::Request {
        scheme: args.quantize,
        calibrate: args.calibrate.as_deref(),
        keep: &args.keep,
        bounds: bounds.iter().map(|b| (b.symbol.clone(), b.max)).collect(),
        min_cosine: args.min_cosine,
        block_activations,
        options: pass_options(args.layout, !sms.is_empty(), args.precision),
    };
    let (model, quantized) = crate::quantize::optimize_quantized(&args.model, &request)?;
    bar.inc(1);
    bar.set_message("embedding the graph and weights");
    let mut weights = Vec::new();
    let (graph_bytes, offsets) = embed_graph(&model, &mut weights)?;
    bar.inc(1);
    let graph = &model.graph;
    let mut plans = Vec::new();
    let mut memory = None;
    let mut kernel_count = 0;
    for sm in &sms {
        bar.set_message(format!("generating {sm} kernels"));
        let lowering =
            lower_graph(graph, Output::Ptx(*sm), args.precision, None).with_context(|| {
                format!("codegen for {sm} (--target none writes an artifact for the CPU only)")
            })?;
        let (plan, bindings) = memory_plan(graph, &lowering.kernels, &offsets)?;
        kernel_count = lowering.kernels.len();
        let kernels = lowering
            .kernels
            .into_iter()
            .zip(bindings)
            .map(|(k, buffers)| Kernel {
                name: k.info.name,
                node: k.info.node,
                ptx: k.text,
                grid: Some(size_expr(&k.info.launch.grid)),
                block: k.info.launch.block,
                shared_bytes: k.info.launch.shared_bytes,
                dynamic_shared_bytes: k.info.launch.dynamic_shared_bytes,
                buffers,
                symbols: k.info.symbols,
                variant: format!("{:?} {}", k.info.family, k.info.variant),
            })
            .collect();
        plans.push(KernelPlan {
            target: sm.name().to_string(),
            kernels,
        });
        memory.get_or_insert(plan);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let memory = memory.unwrap_or_default();
    let (peak, at) = peak_memory(&memory.buffers, &bounds).map_err(anyhow::Error::msg)?;
    let header = Header {
        producer: format!("sparkc {}", env!("CARGO_PKG_VERSION")),
        model_name: graph.name.clone(),
        targets: sms.iter().map(|s| s.name().to_string()).collect(),
        inputs: graph
            .inputs
            .iter()
            .map(|&n| spec(graph, ValueRef { node: n, output: 0 }))
            .collect(),
        outputs: graph.outputs.iter().map(|&v| spec(graph, v)).collect(),
        graph: graph_bytes,
        plans,
        memory: Some(memory),
        precision: format!("{:?}", args.precision).to_lowercase(),
        bounds: bounds.clone(),
        quantization: quantized.as_ref().map(record),
    };
    let written = Artifact::write(&output, &header, &weights)?;
    let mut text = String::new();
    if let Some(q) = &quantized {
        if args.report {
            text.push_str(&q.report.table());
        }
        text.push_str(&q.describe());
    }
    let size = written as f64 / (1 << 20) as f64;
    if header.targets.is_empty() {
        writeln!(
            text,
            "wrote {} ({size:.1} MiB): no GPU kernels (--target none), it runs on the CPU",
            output.display()
        )?;
        writeln!(
            text,
            "weights {:.2} MiB, compiled in {:.2} s",
            weights.len() as f64 / (1 << 20) as f64,
            start.elapsed().as_secs_f64()
        )?;
        return Ok(text);
    }
    writeln!(
        text,
        "wrote {} ({size:.1} MiB): {kernel_count} kernels per target for {}",
        output.display(),
        header.targets.join(", ")
    )?;
    writeln!(
        text,
        "weights {:.2} MiB, peak activation memory {:.2} MiB ({at}), compiled in {:.2} s",
        weights.len() as f64 / (1 << 20) as f64,
        peak as f64 / (1 << 20) as f64,
        start.elapsed().as_secs_f64()
    )?;
    Ok(text)
}
