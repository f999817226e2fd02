//! `sparkc inspect --dump kernels|ptx|llvm`: the kernels codegen makes for a model.

use crate::inspect::Args;
use anyhow::{Context, Result};
use sparkc_ir::Model;
use sparkc_kernels::{lower_graph, Output};
use std::fmt::Write;

/// One line per kernel: name, family and variant, launch, shared memory, the nodes it covers.
pub fn kernel_table(model: &Model, args: &Args) -> Result<String> {
    let target = args.target_or_default();
    let lowering = lower_graph(
        &model.graph,
        Output::Info(target),
        args.precision,
        args.node.as_deref(),
    )?;
    let info = target.info();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} kernels for {} ({} SMs, {} KiB shared memory per block; registers: run ptxas -v on `--dump ptx -o DIR`)",
        lowering.kernels.len(),
        target,
        info.sm_count,
        info.max_shared_per_block / 1024
    );
    for k in &lowering.kernels {
        let i = &k.info;
        let syms = if i.symbols.is_empty() {
            String::new()
        } else {
            format!(" symbols={}", i.symbols.join(","))
        };
        let dynamic = match i.launch.dynamic_shared_bytes {
            0 => String::new(),
            bytes => format!("+{bytes}B dynamic"),
        };
        let _ = writeln!(
            out,
            "  {}  {:?} [{}]  grid={} block={} smem={}B{dynamic}{syms}  node {} = {}",
            i.name,
            i.family,
            i.variant,
            i.launch.grid,
            i.launch.block,
            i.launch.shared_bytes,
            i.node,
            i.covers.join("+"),
        );
    }
    if !lowering.views.is_empty() {
        let names: Vec<String> = lowering
            .views
            .iter()
            .map(|v| format!("{} ({})", v.node, v.op))
            .collect();
        let _ = writeln!(out, "views (no kernel): {}", names.join(", "));
    }
    Ok(out)
}

/// PTX or LLVM IR of every kernel: concatenated on standard output, or one file per kernel in
/// the folder given by `-o`.
pub fn dump_code(model: &Model, args: &Args, llvm: bool) -> Result<String> {
    let target = args.target_or_default();
    let output = if llvm {
        Output::Llvm(target)
    } else {
        Output::Ptx(target)
    };
    let lowering = lower_graph(&model.graph, output, args.precision, args.node.as_deref())?;
    let ext = if llvm { "ll" } else { "ptx" };
    match &args.output {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            for k in &lowering.kernels {
                let path = dir.join(format!("{}.{ext}", k.info.name));
                std::fs::write(&path, &k.text)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            eprintln!(
                "wrote {} .{ext} files for {} to {}",
                lowering.kernels.len(),
                target,
                dir.display()
            );
            Ok(String::new())
        }
        None => Ok(lowering.kernels.iter().map(|k| k.text.as_str()).collect()),
    }
}
