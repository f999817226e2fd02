//! Models that arrive quantized: products whose weight is a `DequantizeLinear` of constant
//! codes, and activations passed through `QuantizeLinear`/`DequantizeLinear` pairs.
//!
//! Constant folding leaves such weights compressed (see [`crate::fold`]), so they reach the
//! artifact in their stored format; this module reports them alongside the products the
//! quantizer itself rewrote.

use super::{Decision, QuantReport};
use crate::manager::PassError;
use sparkc_ir::{Graph, Op, ValueRef};

/// The `DequantizeLinear` feeding `v`, if it dequantizes a constant.
fn dequantized_constant(graph: &Graph, v: ValueRef) -> Option<String> {
    let node = graph.node(v.node);
    let Op::DequantizeLinear { block_size, .. } = node.op else {
        return None;
    };
    let codes = graph.inputs_of(v.node).first().copied().flatten()?;
    let Op::Const(t) = &graph.node(codes.node).op else {
        return None;
    };
    let layout = if block_size > 0 {
        format!("block{block_size}")
    } else {
        "channel".to_string()
    };
    Some(format!("{}/{layout}", t.dtype))
}

/// The activation format of a `QuantizeLinear`→`DequantizeLinear` pair feeding `v`, or of a
/// `Cast` pair rounding it to BF16/FP16.
fn quantized_activation(graph: &Graph, v: ValueRef) -> Option<String> {
    let inner = graph.inputs_of(v.node).first().copied().flatten()?;
    let paired = matches!(
        (&graph.node(v.node).op, &graph.node(inner.node).op),
        (Op::DequantizeLinear { .. }, Op::QuantizeLinear { .. })
            | (Op::Cast { .. }, Op::Cast { .. })
    );
    let ty = graph.value(inner).ty.as_tensor()?;
    paired.then(|| ty.dtype.name().to_string())
}

/// One decision per product that reads a dequantized constant weight.
pub fn imported(graph: &Graph) -> Result<QuantReport, PassError> {
    let mut decisions = Vec::new();
    for id in graph.topo_order()? {
        let node = graph.node(id);
        if !matches!(
            node.op,
            Op::MatMul | Op::TransposedMatMul { .. } | Op::Gemm { .. } | Op::Conv(_)
        ) {
            continue;
        }
        let inputs = graph.inputs_of(id);
        let Some(Some(w)) = inputs.get(1).copied() else {
            continue;
        };
        let Some(weight_format) = dequantized_constant(graph, w) else {
            continue;
        };
        let activation_format = inputs
            .first()
            .copied()
            .flatten()
            .and_then(|x| quantized_activation(graph, x))
            .unwrap_or_else(|| "f32".into());
        let weight_shape = graph
            .value(w)
            .ty
            .as_tensor()
            .and_then(|t| t.shape.as_ref())
            .map(|dims| {
                dims.iter()
                    .map(|d| d.as_const().unwrap_or(0) as usize)
                    .collect()
            })
            .unwrap_or_default();
        decisions.push(Decision {
            node: node.name.clone(),
            op: node.op.name(),
            weight_shape,
            weight_format: format!("{weight_format} (imported)"),
            activation_format,
            kept_because: None,
            weight_error: 0.0,
        });
    }
    let bytes = super::constant_bytes(graph);
    Ok(QuantReport {
        decisions,
        weight_bytes_before: bytes,
        weight_bytes_after: bytes,
    })
}
