//! `sparkc inspect MODEL.spark`: what a compiled artifact holds (its header, its embedded
//! graph, its kernels and their PTX), read without compiling anything again.

use crate::codegen::{launch_text, write_kernel_code};
use crate::inspect::{human_bytes, Args, Dump, Stage};
use anyhow::{bail, Context, Result};
use sparkc_artifact::{Artifact, BufferKind, KernelPlan, TensorSpec, WEIGHTS_LOCATION};
use sparkc_ir::print;
use std::fmt::Write;

/// Runs `sparkc inspect` on the artifact at `args.model`.
pub fn run(args: &Args) -> Result<String> {
    refuse_source_options(args)?;
    let artifact = Artifact::open(&args.model)?;
    let text = match args.dump {
        None => summary(args, &artifact)?,
        Some(Dump::Ir | Dump::Dot | Dump::Json) => {
            let header = &artifact.header;
            let model = sparkc_onnx::load_with_section(
                &header.graph,
                WEIGHTS_LOCATION,
                artifact.weights().clone(),
            )
            .with_context(|| format!("the graph embedded in {}", args.model.display()))?;
            match args.dump {
                Some(Dump::Dot) => print::to_dot(&model),
                Some(Dump::Json) => format!("{:#}\n", print::to_json(&model)),
                _ => print::to_text(&model),
            }
        }
        Some(Dump::Kernels) => kernel_table(args, plan(args, &artifact)?),
        Some(Dump::Ptx) => return write_ptx(args, plan(args, &artifact)?),
        Some(Dump::Llvm) => bail!(
            "{} is a compiled artifact: it holds PTX, not LLVM IR (run `sparkc inspect` on the ONNX model for `--dump llvm`)",
            args.model.display()
        ),
    };
    crate::inspect::emit(args, &text)
}

/// Options that describe how to compile an ONNX model mean nothing for an artifact.
fn refuse_source_options(args: &Args) -> Result<()> {
    let given = [
        (args.stage == Stage::Opt, "--stage opt"),
        (args.after.is_some(), "--after"),
        (args.explain, "--explain"),
        (args.unsupported, "--unsupported"),
        (args.quantize.is_some(), "--quantize"),
        (!args.layout.is_nchw(), "--layout"),
    ];
    if let Some((_, flag)) = given.iter().find(|(on, _)| *on) {
        bail!(
            "{} is a compiled artifact, already optimized: `{flag}` applies to ONNX models",
            args.model.display()
        );
    }
    Ok(())
}

/// The kernel plan `--target` names, or the artifact's best one when none is named.
fn plan<'a>(args: &Args, artifact: &'a Artifact) -> Result<&'a KernelPlan> {
    let plans = &artifact.header.plans;
    let Some(first) = plans.first() else {
        bail!(
            "{} has no GPU kernels (compiled with `--target none`): it runs on the CPU only",
            args.model.display()
        );
    };
    let Some(sm) = args.target else {
        return Ok(first);
    };
    plans.iter().find(|p| p.target == sm.name()).ok_or_else(|| {
        let have: Vec<&str> = plans.iter().map(|p| p.target.as_str()).collect();
        anyhow::anyhow!(
            "{} has no kernels for {sm}; it has kernels for {}",
            args.model.display(),
            have.join(", ")
        )
    })
}

/// One line per kernel, in launch order: entry point, variant, launch, shared memory, node.
fn kernel_table(args: &Args, plan: &KernelPlan) -> String {
    let kernels: Vec<_> = plan
        .kernels
        .iter()
        .filter(|k| args.node.as_deref().is_none_or(|n| k.node == n))
        .collect();
    let mut out = String::new();
    let _ = writeln!(out, "{} kernels for {}", kernels.len(), plan.target);
    for k in kernels {
        let grid = k.grid.as_ref().map_or("?".to_string(), ToString::to_string);
        let launch = launch_text(
            &grid,
            k.block,
            (k.shared_bytes, k.dynamic_shared_bytes),
            &k.symbols,
        );
        let _ = writeln!(
            out,
            "  {}  [{}]  {launch}  node {}",
            k.name, k.variant, k.node
        );
    }
    out
}

/// The stored PTX: concatenated on standard output, or one file per kernel in the `-o` folder.
fn write_ptx(args: &Args, plan: &KernelPlan) -> Result<String> {
    let files = plan
        .kernels
        .iter()
        .filter(|k| args.node.as_deref().is_none_or(|n| k.node == n))
        .map(|k| (k.name.as_str(), k.ptx.as_str()));
    write_kernel_code(args, "ptx", &plan.target, files)
}

/// A signature entry: `name  dtype[dims]`, or the whole type of a sequence or optional.
fn signature(spec: &TensorSpec) -> String {
    if sparkc_ir::DType::from_name(&spec.dtype).is_none() {
        return format!("  {:<24} {}", spec.name, spec.dtype);
    }
    let dims: Vec<String> = spec.shape.iter().map(ToString::to_string).collect();
    format!("  {:<24} {}[{}]", spec.name, spec.dtype, dims.join(","))
}

/// The header in a few lines: provenance, signature, targets, memory, quantization.
fn summary(args: &Args, artifact: &Artifact) -> Result<String> {
    let header = &artifact.header;
    let file_bytes = std::fs::metadata(&args.model)
        .with_context(|| format!("cannot read {}", args.model.display()))?
        .len();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "artifact  {} ({}, format {})",
        args.model.display(),
        human_bytes(file_bytes),
        sparkc_artifact::FORMAT_VERSION
    );
    let _ = writeln!(out, "model     {}", header.model_name);
    let _ = writeln!(out, "producer  {}", header.producer);
    let _ = writeln!(out, "precision {}", header.precision);
    let _ = writeln!(out, "inputs");
    for spec in &header.inputs {
        let _ = writeln!(out, "{}", signature(spec));
    }
    let _ = writeln!(out, "outputs");
    for spec in &header.outputs {
        let _ = writeln!(out, "{}", signature(spec));
    }
    if !header.bounds.is_empty() {
        let bounds: Vec<String> = header
            .bounds
            .iter()
            .map(|b| format!("{} <= {}", b.symbol, b.max))
            .collect();
        let _ = writeln!(out, "bounds    {}", bounds.join(", "));
    }
    if header.plans.is_empty() {
        let _ = writeln!(
            out,
            "targets   none: no GPU kernels (--target none), it runs on the CPU"
        );
    } else {
        let targets: Vec<String> = header
            .plans
            .iter()
            .map(|p| format!("{} ({} kernels)", p.target, p.kernels.len()))
            .collect();
        let _ = writeln!(out, "targets   {}", targets.join(", "));
    }
    let _ = writeln!(
        out,
        "weights   {}",
        human_bytes(artifact.weights().len() as u64)
    );
    if let Some(memory) = header.memory.as_ref().filter(|m| !m.buffers.is_empty()) {
        let activations = memory
            .buffers
            .iter()
            .filter(|b| b.kind == BufferKind::Activation as i32)
            .count();
        let peak = match crate::compile::peak_memory(&memory.buffers, &header.bounds) {
            Ok((bytes, at)) => format!("peak activation memory {} ({at})", human_bytes(bytes)),
            Err(why) => format!("peak not computable: {why}"),
        };
        let _ = writeln!(
            out,
            "memory    {} buffers ({activations} activations), {peak}",
            memory.buffers.len()
        );
    }
    if let Some(q) = &header.quantization {
        let kept = q
            .products
            .iter()
            .filter(|p| !p.kept_because.is_empty())
            .count();
        let scheme = if q.scheme.is_empty() {
            "as imported (QDQ)"
        } else {
            &q.scheme
        };
        let _ = writeln!(
            out,
            "quantized {scheme}: {} of {} products, weights {} -> {}",
            q.products.len() - kept,
            q.products.len(),
            human_bytes(q.weight_bytes_before),
            human_bytes(q.weight_bytes_after)
        );
        for o in &q.outputs {
            let _ = writeln!(
                out,
                "  output '{}': cosine {:.6}, max |error| {:.3e} against FP32 on {}",
                o.name, o.cosine, o.max_abs_error, q.compared_on
            );
        }
    }
    Ok(out)
}
