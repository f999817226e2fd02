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
        let _ = writeln!(
            out,
            "  {}  {:?} [{}]  {}  node {} = {}",
            i.name,
            i.family,
            i.variant,
            launch_text(
                &i.launch.grid.to_string(),
                i.launch.block,
                (i.launch.shared_bytes, i.launch.dynamic_shared_bytes),
                &i.symbols
            ),
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
    let files = lowering
        .kernels
        .iter()
        .map(|k| (k.info.name.as_str(), k.text.as_str()));
    write_kernel_code(args, ext, &target.to_string(), files)
}

/// A kernel's launch as `--dump kernels` shows it: grid, block, shared memory, symbols.
pub(crate) fn launch_text(
    grid: &str,
    block: u32,
    (shared, dynamic): (u32, u32),
    symbols: &[String],
) -> String {
    let dynamic = match dynamic {
        0 => String::new(),
        bytes => format!("+{bytes}B dynamic"),
    };
    let symbols = if symbols.is_empty() {
        String::new()
    } else {
        format!(" symbols={}", symbols.join(","))
    };
    format!("grid={grid} block={block} smem={shared}B{dynamic}{symbols}")
}

/// Kernels' code, `(name, text)`: concatenated for standard output, or written one `NAME.ext`
/// file each into the folder given by `-o`.
pub(crate) fn write_kernel_code<'a>(
    args: &Args,
    ext: &str,
    target: &str,
    files: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<String> {
    let Some(dir) = &args.output else {
        return Ok(files.map(|(_, text)| text).collect());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = 0;
    for (name, text) in files {
        let path = dir.join(format!("{name}.{ext}"));
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        written += 1;
    }
    eprintln!(
        "wrote {written} .{ext} files for {target} to {}",
        dir.display()
    );
    Ok(String::new())
}
