//! Quantization of the generated whole models with the default policy, on the CPU reference:
//! FP8 must keep a cosine similarity of at least 0.999 to the FP32 model and NVFP4 at least
//! 0.99 (with BF16 activations, and with activations rounded to NVFP4 too), while actually
//! quantizing products and shrinking the weights. (The onnx package's
//! `light_*` models are left out: their weights are constant fills, so any format reproduces
//! them, and their 224×224 convolutions make each of the ~20 calibration and comparison runs
//! slow on 2 cores.) Prints the table of
//! `docs/quantization.md`. Models that arrive quantized keep their weights compressed.

use sparkc_cli::quantize::{optimize_quantized, Request};
use sparkc_ir::graph::MAX_KNOWN_ELEMENTS;
use sparkc_ir::{DType, Op};
use sparkc_passes::quantize::sensitivity::default_target;
use sparkc_passes::quantize::Scheme;
use sparkc_tests::{qdq_models, whole_models};

#[test]
fn whole_models_keep_their_accuracy_when_quantized() {
    let mut table = String::from(
        "| model | format | products quantized | weights before | weights after | worst cosine | max abs error |\n|---|---|---|---|---|---|---|\n",
    );
    let mib = |b: usize| format!("{:.2} MiB", b as f64 / (1 << 20) as f64);
    let generated = whole_models()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("light_"));
    for (name, path) in generated {
        for (scheme, block_activations) in [
            (Scheme::Fp8, false),
            (Scheme::Nvfp4, false),
            (Scheme::Nvfp4, true),
        ] {
            let mut request = Request::seeded(Some(scheme));
            request.block_activations = block_activations;
            let (_, summary) = optimize_quantized(&path, &request)
                .unwrap_or_else(|e| panic!("{name}/{scheme}: {e:#}"));
            let format = if block_activations {
                format!("{scheme}, {scheme} activations")
            } else {
                scheme.to_string()
            };
            let summary = summary.expect("a quantization summary");
            let r = &summary.report;
            let cosine = summary
                .accuracy
                .iter()
                .map(|a| a.cosine)
                .fold(1.0, f64::min);
            let error = summary
                .accuracy
                .iter()
                .map(|a| a.max_abs_error)
                .fold(0.0, f64::max);
            table.push_str(&format!(
                "| {name} | {format} | {} of {} | {} | {} | {cosine:.6} | {error:.3e} |\n",
                r.quantized(),
                r.decisions.len(),
                mib(r.weight_bytes_before),
                mib(r.weight_bytes_after),
            ));
            let target = default_target(scheme).expect("a target");
            assert!(
                cosine >= target,
                "{name}/{format}: cosine {cosine} < {target}"
            );
            // Products the static policy left eligible (not first, last or small); the accuracy
            // search may keep some, but a format that keeps them all is no use.
            let eligible = r.decisions.iter().any(|d| {
                d.kept_because.as_deref().is_none_or(|why| {
                    why.starts_with("sensitive") || why.starts_with("weight error")
                })
            });
            if eligible {
                assert!(r.quantized() > 0, "{name}/{format}: nothing was quantized");
                assert!(
                    r.weight_bytes_after < r.weight_bytes_before,
                    "{name}/{format}: weights did not shrink"
                );
            }
        }
    }
    print!("{table}");
}

#[test]
fn qdq_models_keep_their_weights_quantized() {
    for (name, path) in qdq_models() {
        let fp32 = sparkc_onnx::load(&path).expect("imports");
        let request = Request::seeded(None);
        let (model, summary) = optimize_quantized(&path, &request).expect("optimizes");
        let summary = summary.expect("the imported products are reported");
        // Products reading a dequantized weight too large to fold (small ones become f32).
        let graph = &fp32.graph;
        let large = |op: &Op| matches!(op, Op::Const(t) if t.len() > MAX_KNOWN_ELEMENTS);
        let products = graph
            .dag
            .node_indices()
            .filter(|&id| {
                matches!(
                    graph.node(id).op,
                    Op::Conv(_) | Op::Gemm { .. } | Op::MatMul | Op::TransposedMatMul { .. }
                )
            })
            .filter(|&id| {
                let Some(Some(w)) = graph.inputs_of(id).get(1).copied() else {
                    return false;
                };
                let codes = graph.inputs_of(w.node).first().copied().flatten();
                matches!(graph.node(w.node).op, Op::DequantizeLinear { .. })
                    && codes.is_some_and(|c| large(&graph.node(c.node).op))
            })
            .count()
            // Integer products (dynamic quantization) and QOperator products read their codes
            // directly: the weight is input 1 of the former, input 3 of the latter.
            + graph
                .dag
                .node_indices()
                .filter_map(|id| match graph.node(id).op {
                    Op::MatMulInteger | Op::ConvInteger(_) => Some((id, 1)),
                    Op::QLinearMatMul | Op::QLinearConv(_) => Some((id, 3)),
                    _ => None,
                })
                .filter(|&(id, slot)| {
                    let w = graph.inputs_of(id).get(slot).copied().flatten();
                    w.is_some_and(|w| large(&graph.node(w.node).op))
                })
                .count();
        let stored = summary
            .report
            .decisions
            .iter()
            .filter(|d| {
                d.weight_format.ends_with("(imported)") && !d.weight_format.starts_with("f32")
            })
            .count();
        print!("{name}:\n{}", summary.report.table());
        assert!(products > 0, "{name}: the model has quantized products");
        assert_eq!(
            stored, products,
            "{name}: every large weight stays in its stored format"
        );
        // No weight was decompressed to f32 by constant folding.
        let big_f32 = model.graph.dag.node_weights().any(|n| match &n.op {
            Op::Const(t) => t.dtype == DType::F32 && t.len() > MAX_KNOWN_ELEMENTS,
            _ => false,
        });
        assert!(!big_f32, "{name}: a weight was folded back to f32");
    }
}
