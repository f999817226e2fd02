//! Quantized products: a product reading dequantized codes (`DequantizeLinear(codes, scale,
//! zero)`), a quantize–dequantize pair (`DequantizeLinear(QuantizeLinear(x, s, z), s, z)`), FP4
//! codes with their block scales, values rounded to FP4 blocks (`RoundToBlocks`) or a value
//! rounded to BF16/FP16 by a `Cast` pair takes those nodes into its fused body. Its kernel then multiplies the codes (or the narrow values) on
//! the tensor cores and applies the scales in its epilogue, instead of a kernel per node
//! expanding every operand to FP32 first. Models quantized by `sparkc compile --quantize` and
//! models that arrive in ONNX's QDQ form both take this path.
//!
//! A quantized weight of a MatMul or Gemm whose rows run along N is stored transposed, as
//! `[N, K]`, so each output column's codes are contiguous along k and the kernel can copy them
//! with `cp.async`; the product reads it transposed.
//!
//! The body is the reference: the CPU executor runs its nodes one by one, exactly as the graph
//! ran them before.

use crate::edit::{rank_of, readers, replace_uses, transpose_2d, with_b_transposed};
use crate::manager::{Pass, PassError};
use sparkc_ir::infer::normalize_axis;
use sparkc_ir::{BodyNode, DType, Fused, Graph, NodeId, Op, Operand, Tensor, ValueRef};
use std::collections::HashMap;

/// Folds quantize/dequantize nodes and rounding casts into the products that read them.
pub struct FoldQuantized;

/// How a product uses one operand: the axis of its output channels (when it has one) and the
/// axis it reduces.
#[derive(Clone, Copy, Debug)]
struct Role {
    channel: Option<usize>,
    reduce: Option<usize>,
}

/// The role of operand `k` (of rank `rank`) of product `op`.
fn role(op: &Op, k: usize, rank: usize) -> Option<Role> {
    if rank < 2 {
        return None;
    }
    let (last, second) = (rank - 1, rank - 2);
    let transposed = match op {
        Op::MatMul => false,
        Op::TransposedMatMul { trans_a, trans_b } => [*trans_a, *trans_b][k],
        Op::Gemm {
            trans_a, trans_b, ..
        } => [*trans_a, *trans_b][k],
        Op::Conv(_) => {
            return Some(match k {
                0 => Role {
                    channel: None,
                    reduce: None,
                },
                _ => Role {
                    channel: Some(0),
                    reduce: Some(1),
                },
            })
        }
        _ => return None,
    };
    // A: [.., M, K]; B: [.., K, N]; transposed operands swap their last two axes.
    let (channel, reduce) = match (k, transposed) {
        (0, false) | (1, true) => (second, last),
        _ => (last, second),
    };
    Some(Role {
        channel: Some(channel),
        reduce: Some(reduce),
    })
}

fn dtype_of(graph: &Graph, v: ValueRef) -> Option<DType> {
    graph.value(v).ty.as_tensor().map(|t| t.dtype)
}

/// The static shape of `v`, when every dim is known.
fn shape_of(graph: &Graph, v: ValueRef) -> Option<Vec<i64>> {
    let t = graph.value(v).ty.as_tensor()?;
    t.shape.as_ref()?.iter().map(|d| d.as_const()).collect()
}

fn numel(shape: &[i64]) -> i64 {
    shape.iter().product()
}

fn constant(graph: &Graph, v: ValueRef) -> Option<&Tensor> {
    match &graph.node(v.node).op {
        Op::Const(t) => Some(t),
        _ => None,
    }
}

/// True for a constant whose every byte is zero (a zero point that changes nothing).
fn all_zero(graph: &Graph, v: ValueRef) -> bool {
    constant(graph, v).is_some_and(|t| t.data.iter().all(|&b| b == 0))
}

/// The 8-bit code types the tensor cores multiply (or decode exactly).
fn byte_codes(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::I8 | DType::U8 | DType::F8E4M3FN | DType::F8E5M2
    )
}

/// The code types stored in blocks along the reduced axis.
fn block_codes(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::F4E2M1 | DType::I4 | DType::U4 | DType::I8 | DType::U8
    )
}

/// One node of a chain to copy into a product's body: its op and its inputs, with zero points
/// of all zeros left out.
#[derive(Clone, Debug)]
struct Link {
    node: NodeId,
    op: Op,
    inputs: Vec<Option<ValueRef>>,
}

/// Output columns above which a product's activation is quantized once, by its own kernel,
/// rather than by the product as it loads it: a tensor-core product reads each activation row
/// once per block of 128 output columns, so past two blocks one pass writing the codes (which
/// the product then copies as they are) costs less than converting them again in every block.
const QUANTIZE_IN_PRODUCT_MAX_COLUMNS: i64 = 256;

/// A `DequantizeLinear` whose scale and zero point the product's kernel can apply: per tensor,
/// per output channel, or per block along the reduced axis; a quantize–dequantize pair's
/// `QuantizeLinear` too when `quantize_in_product`.
fn dequantize(
    graph: &Graph,
    id: NodeId,
    role: Role,
    quantize_in_product: bool,
) -> Option<Vec<Link>> {
    let Op::DequantizeLinear {
        axis, block_size, ..
    } = graph.node(id).op.clone()
    else {
        return None;
    };
    let out = ValueRef {
        node: id,
        output: 0,
    };
    if dtype_of(graph, out) != Some(DType::F32) {
        return None;
    }
    let mut inputs = graph.inputs_of(id);
    let (codes, scale) = (inputs.first().copied()??, inputs.get(1).copied()??);
    let zero = inputs.get(2).copied().flatten();
    let codes_dtype = dtype_of(graph, codes)?;
    let scale_shape = shape_of(graph, scale)?;
    let axis = normalize_axis(axis, rank_of(graph, codes)?);
    if let Some(z) = zero {
        if all_zero(graph, z) {
            inputs.truncate(2);
        } else if block_size > 0
            || numel(&shape_of(graph, z)?) != 1
            || !matches!(codes_dtype, DType::I8 | DType::U8)
        {
            return None;
        }
    }
    let mut chain = Vec::new();
    if block_size > 0 {
        if !block_codes(codes_dtype) || axis != role.reduce || inputs.len() > 2 {
            return None;
        }
        // NVFP4: E4M3 block scales times one f32 tensor scale.
        if let Op::DequantizeLinear { block_size: 0, .. } = graph.node(scale.node).op {
            let inner = graph.inputs_of(scale.node);
            let tensor_scale = inner.get(1).copied().flatten()?;
            let single = shape_of(graph, tensor_scale).is_some_and(|s| numel(&s) == 1);
            if inner.len() > 2 && inner[2].is_some() || !single {
                return None;
            }
            chain.push(Link {
                node: scale.node,
                op: graph.node(scale.node).op.clone(),
                inputs: inner,
            });
        }
    } else {
        if !byte_codes(codes_dtype) {
            return None;
        }
        let per_channel = scale_shape.len() == 1 && scale_shape[0] != 1;
        if per_channel && (axis != role.channel || role.channel.is_none()) {
            return None;
        }
        if numel(&scale_shape) != 1 && !per_channel {
            return None;
        }
        // A quantize-dequantize pair of one scale: the kernel quantizes as it loads.
        if let Op::QuantizeLinear {
            block_size: 0,
            output_dtype,
            saturate,
            ..
        } = graph.node(codes.node).op.clone()
        {
            let q_inputs = graph.inputs_of(codes.node);
            let same = q_inputs.get(1).copied().flatten() == Some(scale)
                && q_inputs.get(2).copied().flatten() == zero;
            if same && numel(&scale_shape) == 1 && quantize_in_product {
                let mut q_inputs = q_inputs;
                q_inputs.truncate(inputs.len());
                // An elementwise op whose value only this quantization reads is computed as
                // the kernel stages its input.
                if let Some(Some(x)) = q_inputs.first() {
                    let producer = graph.node(x.node);
                    let only_reader = readers(graph, *x).len() == 1 && !graph.outputs.contains(x);
                    if only_reader
                        && producer.outputs.len() == 1
                        && sparkc_ir::fused::is_elementwise(&producer.op)
                    {
                        chain.push(Link {
                            node: x.node,
                            op: producer.op.clone(),
                            inputs: graph.inputs_of(x.node),
                        });
                    }
                }
                chain.push(Link {
                    node: codes.node,
                    op: Op::QuantizeLinear {
                        axis: 1,
                        block_size: 0,
                        output_dtype: output_dtype.or(Some(codes_dtype)),
                        saturate,
                    },
                    inputs: q_inputs,
                });
            }
        }
    }
    chain.push(Link {
        node: id,
        op: graph.node(id).op.clone(),
        inputs,
    });
    Some(chain)
}

/// A value rounded to BF16/FP16 and widened back (`Cast(Cast(x, bf16), f32)`), or a BF16/FP16
/// value widened (`Cast(w, f32)`).
fn widen(graph: &Graph, id: NodeId) -> Option<Vec<Link>> {
    let Op::Cast { to: DType::F32, .. } = graph.node(id).op else {
        return None;
    };
    let inputs = graph.inputs_of(id);
    let x = inputs.first().copied()??;
    if !matches!(dtype_of(graph, x)?, DType::BF16 | DType::F16) {
        return None;
    }
    let mut chain = Vec::new();
    if let Op::Cast {
        to: DType::BF16 | DType::F16,
        ..
    } = graph.node(x.node).op
    {
        chain.push(Link {
            node: x.node,
            op: graph.node(x.node).op.clone(),
            inputs: graph.inputs_of(x.node),
        });
    }
    chain.push(Link {
        node: id,
        op: graph.node(id).op.clone(),
        inputs,
    });
    Some(chain)
}

/// Values rounded block by block to FP4 (`RoundToBlocks`), when its blocks run along the
/// product's reduced axis.
fn rounded(graph: &Graph, id: NodeId, role: Role) -> Option<Vec<Link>> {
    let inputs = graph.inputs_of(id);
    let rank = rank_of(graph, inputs.first().copied()??)?;
    (role.reduce == Some(rank - 1)).then(|| {
        vec![Link {
            node: id,
            op: graph.node(id).op.clone(),
            inputs,
        }]
    })
}

/// The chain computing operand `v` of a product that its kernel can take in.
fn operand_chain(
    graph: &Graph,
    v: ValueRef,
    role: Role,
    quantize_in_product: bool,
) -> Option<Vec<Link>> {
    if v.output != 0 {
        return None;
    }
    match graph.node(v.node).op {
        Op::DequantizeLinear { .. } => dequantize(graph, v.node, role, quantize_in_product),
        Op::Cast { .. } => widen(graph, v.node),
        Op::RoundToBlocks { .. } => rounded(graph, v.node, role),
        _ => None,
    }
}

/// A weight chain rewritten to read its 2-D constants transposed, and the transposed constants
/// (each with the value it replaces).
struct Transposed {
    chain: Vec<Link>,
    constants: Vec<(ValueRef, Tensor)>,
}

/// Rewrites a weight chain to read its 2-D constants transposed (`[K, N]` → `[N, K]`), when it
/// owns them.
fn transposed_chain(graph: &Graph, chain: &[Link]) -> Option<Transposed> {
    let inside = |v: &ValueRef| chain.iter().any(|l| l.node == v.node);
    let mut constants = Vec::new();
    for link in chain {
        for v in link.inputs.iter().flatten().filter(|v| !inside(v)) {
            if rank_of(graph, *v)? < 2 {
                continue;
            }
            let t = constant(graph, *v)?;
            if readers(graph, *v).len() != 1 || t.shape.len() != 2 {
                return None;
            }
            constants.push((*v, transpose_2d(t)?));
        }
    }
    // Every link's value is read only inside the chain (or by the product), so no other
    // reader sees the new layout.
    for link in chain {
        let v = ValueRef {
            node: link.node,
            output: 0,
        };
        if readers(graph, v).len() != 1 || graph.outputs.contains(&v) {
            return None;
        }
    }
    if constants.is_empty() {
        return None;
    }
    let mut out = chain.to_vec();
    for link in &mut out {
        if let Op::DequantizeLinear {
            axis,
            block_size,
            output_dtype,
        } = link.op.clone()
        {
            let codes = link.inputs.first().copied().flatten()?;
            if inside(&codes) {
                continue;
            }
            let rank = rank_of(graph, codes)?;
            let scale_rank = rank_of(graph, link.inputs.get(1).copied().flatten()?)?;
            let moves = block_size > 0 || scale_rank == 1;
            let axis = match normalize_axis(axis, rank) {
                Some(a) if moves => 1 - a as i64,
                _ => axis,
            };
            link.op = Op::DequantizeLinear {
                axis,
                block_size,
                output_dtype,
            };
        }
    }
    Some(Transposed {
        chain: out,
        constants,
    })
}

/// The node's body and inputs, a bare product seen as a body of one node.
fn body_of(graph: &Graph, id: NodeId) -> (Vec<BodyNode>, Vec<ValueRef>, Vec<String>) {
    let node = graph.node(id);
    let slots = graph.inputs_of(id);
    match &node.op {
        Op::Fused(f) => (
            f.body.clone(),
            slots.into_iter().flatten().collect(),
            f.provenance.clone(),
        ),
        op => {
            let mut inputs = Vec::new();
            let args = slots
                .into_iter()
                .map(|v| {
                    v.map(|v| {
                        inputs.push(v);
                        Operand::Input(inputs.len() - 1)
                    })
                })
                .collect();
            (
                vec![BodyNode {
                    op: op.clone(),
                    args,
                }],
                inputs,
                Vec::new(),
            )
        }
    }
}

fn is_product(op: &Op) -> bool {
    sparkc_ir::fused::is_contraction(op)
}

/// Folds what product `id` can take in; returns whether it changed anything.
fn fold(graph: &mut Graph, id: NodeId) -> Result<bool, PassError> {
    let (body, inputs, mut provenance) = body_of(graph, id);
    let Some(a) = body.iter().position(|n| is_product(&n.op)) else {
        return Ok(false);
    };
    let mut anchor_op = body[a].op.clone();
    // The product's output columns, known even where a batch dim is symbolic.
    let output = graph
        .value(ValueRef {
            node: id,
            output: 0,
        })
        .ty
        .as_tensor();
    let columns = output.and_then(|t| t.shape.as_ref()?.last()?.as_const());
    let quantize_in_product = columns.is_none_or(|n| n <= QUANTIZE_IN_PRODUCT_MAX_COLUMNS);
    let mut chains: [Option<Vec<Link>>; 2] = [None, None];
    let mut replaced: HashMap<ValueRef, ValueRef> = HashMap::new();
    for (k, chain) in chains.iter_mut().enumerate() {
        let Some(Some(Operand::Input(i))) = body[a].args.get(k) else {
            continue;
        };
        let v = inputs[*i];
        let Some(rank) = rank_of(graph, v) else {
            continue;
        };
        let Some(role) = role(&anchor_op, k, rank) else {
            continue;
        };
        let Some(mut found) = operand_chain(graph, v, role, quantize_in_product) else {
            continue;
        };
        if k == 1 && rank == 2 {
            if let Some(op) = with_b_transposed(&anchor_op) {
                if let Some(Transposed { chain, constants }) = transposed_chain(graph, &found) {
                    for (old, t) in constants {
                        let name = format!("{}.t", graph.value(old).name);
                        let name = crate::edit::fresh_name(graph, &name);
                        let new = graph.add_const(&name, t);
                        replaced.insert(old, new);
                    }
                    found = chain;
                    anchor_op = op;
                }
            }
        }
        *chain = Some(found);
    }
    if chains.iter().all(Option::is_none) {
        return Ok(false);
    }
    // The new body: both chains, then the old body with its node indices shifted.
    let prefix: Vec<&Link> = chains.iter().flatten().flatten().collect();
    let mut new_inputs: Vec<ValueRef> = Vec::new();
    let input_index = |v: ValueRef, new_inputs: &mut Vec<ValueRef>| -> usize {
        let v = replaced.get(&v).copied().unwrap_or(v);
        new_inputs.iter().position(|x| *x == v).unwrap_or_else(|| {
            new_inputs.push(v);
            new_inputs.len() - 1
        })
    };
    let mut new_body: Vec<BodyNode> = Vec::new();
    let mut position: HashMap<NodeId, usize> = HashMap::new();
    for link in &prefix {
        let args = link
            .inputs
            .iter()
            .map(|v| {
                v.map(|v| match position.get(&v.node) {
                    Some(&j) if v.output == 0 => Operand::Node(j),
                    _ => Operand::Input(input_index(v, &mut new_inputs)),
                })
            })
            .collect();
        position.insert(link.node, new_body.len());
        new_body.push(BodyNode {
            op: link.op.clone(),
            args,
        });
    }
    let shift = new_body.len();
    let ends: Vec<Option<usize>> = chains
        .iter()
        .map(|c| c.as_ref().and_then(|c| c.last()).map(|l| position[&l.node]))
        .collect();
    for (j, node) in body.iter().enumerate() {
        let mut args: Vec<Option<Operand>> = node
            .args
            .iter()
            .map(|arg| {
                arg.map(|arg| match arg {
                    Operand::Node(d) => Operand::Node(d + shift),
                    Operand::Input(i) => Operand::Input(input_index(inputs[i], &mut new_inputs)),
                })
            })
            .collect();
        let mut op = node.op.clone();
        if j == a {
            op = anchor_op.clone();
            for (k, end) in ends.iter().enumerate() {
                if let Some(end) = end {
                    args[k] = Some(Operand::Node(*end));
                }
            }
        }
        new_body.push(BodyNode { op, args });
    }
    // Inputs only the replaced operands read drop out.
    let mut used = vec![false; new_inputs.len()];
    for arg in new_body.iter().flat_map(|n| n.args.iter().flatten()) {
        if let Operand::Input(i) = arg {
            used[*i] = true;
        }
    }
    let mut renumber = vec![0; new_inputs.len()];
    let mut kept = Vec::new();
    for (i, v) in new_inputs.iter().enumerate() {
        if used[i] {
            renumber[i] = kept.len();
            kept.push(Some(*v));
        }
    }
    for arg in new_body
        .iter_mut()
        .flat_map(|n| n.args.iter_mut().flatten())
    {
        if let Operand::Input(i) = arg {
            *i = renumber[*i];
        }
    }
    provenance.push("fold-quantized".to_string());
    let fused = Fused {
        body: new_body,
        provenance,
    };
    let node = graph.node(id).clone();
    let mut rules = node.rules.clone();
    rules.push("fold-quantized".to_string());
    let new = graph.add_node(
        node.name.clone(),
        Op::Fused(Box::new(fused)),
        &kept,
        node.outputs.clone(),
    );
    graph.dag[new].rules = rules;
    for output in 0..node.outputs.len() {
        let from = ValueRef { node: id, output };
        let to = ValueRef { node: new, output };
        replace_uses(graph, from, to);
        for out in graph.outputs.iter_mut().filter(|v| **v == from) {
            *out = to;
        }
    }
    graph.dag.remove_node(id);
    Ok(true)
}

/// A per-tensor quantize–dequantize pair of 8-bit integer codes on the output of `id`, read
/// by nothing else: the pair's `QuantizeLinear` and `DequantizeLinear` nodes, and the
/// quantization as a fused body computes it (its codes' type explicit).
fn output_pair(graph: &Graph, id: NodeId) -> Option<(NodeId, NodeId, Op)> {
    let node = graph.node(id);
    let foldable = match &node.op {
        Op::Fused(_) => true,
        op => sparkc_ir::fused::is_elementwise(op) || is_product(op),
    };
    if !foldable || node.outputs.len() != 1 {
        return None;
    }
    let only_reader = |v: ValueRef| -> Option<NodeId> {
        match readers(graph, v)[..] {
            [(reader, 0)] if !graph.outputs.contains(&v) => Some(reader),
            _ => None,
        }
    };
    let q = only_reader(ValueRef {
        node: id,
        output: 0,
    })?;
    let Op::QuantizeLinear {
        axis,
        block_size: 0,
        saturate,
        ..
    } = graph.node(q).op
    else {
        return None;
    };
    let d = only_reader(ValueRef { node: q, output: 0 })?;
    let Op::DequantizeLinear { block_size: 0, .. } = graph.node(d).op else {
        return None;
    };
    let (q_in, d_in) = (graph.inputs_of(q), graph.inputs_of(d));
    let codes = dtype_of(graph, ValueRef { node: q, output: 0 })?;
    let scalar =
        |v: &Option<ValueRef>| v.is_none_or(|v| shape_of(graph, v).is_some_and(|s| numel(&s) == 1));
    let same = q_in.get(1) == d_in.get(1)
        && q_in.get(2).copied().flatten() == d_in.get(2).copied().flatten();
    let ints = matches!(codes, DType::I8 | DType::U8);
    let f32_out = dtype_of(graph, ValueRef { node: d, output: 0 }) == Some(DType::F32);
    let quantize = Op::QuantizeLinear {
        axis,
        block_size: 0,
        output_dtype: Some(codes),
        saturate,
    };
    (same && ints && f32_out && q_in.iter().skip(1).all(scalar)).then_some((q, d, quantize))
}

/// Appends the pair (`q`, `d`) on the output of node `id` to its body, as its epilogue.
fn fold_output_pair(graph: &mut Graph, id: NodeId, (q, d, quantize): (NodeId, NodeId, Op)) {
    let (mut body, mut inputs, mut provenance) = body_of(graph, id);
    let mut input_of = |v: ValueRef| -> usize {
        inputs.iter().position(|x| *x == v).unwrap_or_else(|| {
            inputs.push(v);
            inputs.len() - 1
        })
    };
    let last = body.len() - 1;
    let q_inputs = graph.inputs_of(q);
    let scale = q_inputs
        .get(1)
        .copied()
        .flatten()
        .map(|v| Operand::Input(input_of(v)));
    let zero = q_inputs
        .get(2)
        .copied()
        .flatten()
        .map(|v| Operand::Input(input_of(v)));
    body.push(BodyNode {
        op: quantize,
        args: vec![Some(Operand::Node(last)), scale, zero],
    });
    body.push(BodyNode {
        op: graph.node(d).op.clone(),
        args: vec![Some(Operand::Node(last + 1)), scale, zero],
    });
    provenance.push("fold-quantized".to_string());
    let fused = Fused { body, provenance };
    let node = graph.node(id).clone();
    let mut rules = node.rules.clone();
    rules.push("fold-quantized".to_string());
    let refs: Vec<Option<ValueRef>> = inputs.iter().map(|&v| Some(v)).collect();
    let outputs = graph.node(d).outputs.clone();
    let new = graph.add_node(
        node.name.clone(),
        Op::Fused(Box::new(fused)),
        &refs,
        outputs,
    );
    graph.dag[new].rules = rules;
    let (from, to) = (
        ValueRef { node: d, output: 0 },
        ValueRef {
            node: new,
            output: 0,
        },
    );
    replace_uses(graph, from, to);
    for out in graph.outputs.iter_mut().filter(|v| **v == from) {
        *out = to;
    }
    for gone in [id, q, d] {
        graph.dag.remove_node(gone);
    }
}

impl Pass for FoldQuantized {
    fn name(&self) -> &'static str {
        "fold-quantized"
    }

    fn run(&mut self, graph: &mut Graph) -> Result<String, PassError> {
        let products: Vec<NodeId> = graph
            .topo_order()?
            .into_iter()
            .filter(|&id| match &graph.node(id).op {
                Op::Fused(f) => f.body.iter().any(|n| is_product(&n.op)),
                op => is_product(op),
            })
            .collect();
        let mut folded = 0;
        for id in products {
            if fold(graph, id)? {
                folded += 1;
            }
        }
        // Then the per-tensor quantize-dequantize pairs (onnxruntime's QDQ form puts one after
        // every op) on what products did not take: each becomes its producer's epilogue.
        let mut pairs = 0;
        for id in graph.topo_order()? {
            if !graph.dag.contains_node(id) {
                continue;
            }
            if let Some(pair) = output_pair(graph, id) {
                fold_output_pair(graph, id, pair);
                pairs += 1;
            }
        }
        Ok(format!(
            "folded quantization into {folded} product(s), {pairs} quantize-dequantize pair(s) into their producers"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::FoldQuantized;
    use crate::edit::transpose_2d;
    use crate::fuse::FuseBodies;
    use crate::testing::{ops, push, run_checked, tensor_type};
    use bytes::Bytes;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use sparkc_ir::formats::{encode, Rounding};
    use sparkc_ir::{DType, Graph, Op, Tensor, ValueRef};

    fn constant(
        graph: &mut Graph,
        name: &str,
        dtype: DType,
        shape: &[usize],
        bytes: Vec<u8>,
    ) -> ValueRef {
        let t = Tensor::new(dtype, shape.to_vec(), Bytes::from(bytes)).expect("a tensor");
        graph.add_const(name, t)
    }

    fn f32s(graph: &mut Graph, name: &str, shape: &[usize], values: &[f32]) -> ValueRef {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        constant(graph, name, DType::F32, shape, bytes)
    }

    fn quantize(axis: i64) -> Op {
        Op::QuantizeLinear {
            axis,
            block_size: 0,
            output_dtype: None,
            saturate: true,
        }
    }

    fn dequantize(axis: i64, block_size: i64) -> Op {
        Op::DequantizeLinear {
            axis,
            block_size,
            output_dtype: Some(DType::F32),
        }
    }

    /// `x: f32[N,5,40]` through a uint8 quantize–dequantize pair, times int8 weights `[40, 24]`
    /// with a per-channel scale (and a zero point of zeros), plus a bias.
    fn int8_matmul(activation_scale: &[usize], weight_zero: i8) -> Graph {
        int8_product(activation_scale, weight_zero, 24)
    }

    /// `int8_matmul` with `columns` output columns.
    fn int8_product(activation_scale: &[usize], weight_zero: i8, columns: usize) -> Graph {
        let mut rng = StdRng::seed_from_u64(3);
        let mut g = Graph::new("q");
        let x = g.add_input("x", tensor_type("f32[N,5,40]"));
        let n: usize = activation_scale.iter().product();
        let xs = f32s(&mut g, "xs", activation_scale, &vec![0.02; n]);
        let xz = constant(&mut g, "xz", DType::U8, activation_scale, vec![128; n]);
        let q = push(&mut g, quantize(-1), &[Some(x), Some(xs), Some(xz)]);
        let xd = push(&mut g, dequantize(-1, 0), &[Some(q), Some(xs), Some(xz)]);
        let codes: Vec<u8> = (0..40 * columns)
            .map(|_| rng.random_range(-127i8..=127) as u8)
            .collect();
        let w = constant(&mut g, "w", DType::I8, &[40, columns], codes);
        let scales: Vec<f32> = (0..columns)
            .map(|_| rng.random_range(0.001..0.01))
            .collect();
        let ws = f32s(&mut g, "ws", &[columns], &scales);
        let wz = constant(
            &mut g,
            "wz",
            DType::I8,
            &[columns],
            vec![weight_zero as u8; columns],
        );
        let wd = push(&mut g, dequantize(1, 0), &[Some(w), Some(ws), Some(wz)]);
        let p = push(&mut g, Op::MatMul, &[Some(xd), Some(wd)]);
        let bias = f32s(&mut g, "b", &[columns], &vec![0.5; columns]);
        let y = push(
            &mut g,
            Op::Binary(sparkc_ir::op::Binary::Add),
            &[Some(p), Some(bias)],
        );
        g.outputs.push(y);
        g
    }

    fn folded(g: &Graph) -> Graph {
        let fused = run_checked(&mut FuseBodies, g);
        let mut after = run_checked(&mut FoldQuantized, &fused);
        crate::dce::DeadCode.run_on(&mut after);
        after
    }

    fn constant_shape(g: &Graph, dtype: DType) -> Vec<Vec<usize>> {
        g.dag
            .node_weights()
            .filter_map(|n| match &n.op {
                Op::Const(t) if t.dtype == dtype => Some(t.shape.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_activation_pair_and_a_channel_weight_fold_into_the_product() {
        let after = folded(&int8_matmul(&[], 0));
        assert_eq!(
            ops(&after),
            ["Fused(QuantizeLinear+DequantizeLinear+DequantizeLinear+TransposedMatMul+Add)"]
        );
        // The weight is stored [N, K]; its zero point of zeros is gone.
        assert_eq!(constant_shape(&after, DType::I8), [vec![24, 40]]);
    }

    #[test]
    fn a_wide_product_reads_codes_its_own_kernel_quantized() {
        let after = folded(&int8_product(&[], 0, 300));
        let mut names = ops(&after);
        names.sort();
        assert_eq!(
            names,
            [
                "Fused(DequantizeLinear+DequantizeLinear+TransposedMatMul+Add)",
                "QuantizeLinear"
            ]
        );
    }

    #[test]
    fn a_zero_point_per_weight_channel_is_not_folded() {
        let after = folded(&int8_matmul(&[], 3));
        assert!(
            ops(&after).contains(&"DequantizeLinear".to_string()),
            "{:?}",
            ops(&after)
        );
        assert!(
            ops(&after)
                .iter()
                .any(|o| o == "Fused(QuantizeLinear+DequantizeLinear+MatMul+Add)"),
            "{:?}",
            ops(&after)
        );
    }

    #[test]
    fn an_activation_scaled_per_channel_is_not_quantized_in_the_product() {
        let after = folded(&int8_matmul(&[40], 0));
        let names = ops(&after);
        assert!(names.contains(&"QuantizeLinear".to_string()), "{names:?}");
        assert!(
            names
                .iter()
                .any(|o| o == "Fused(DequantizeLinear+TransposedMatMul+Add)"),
            "{names:?}"
        );
    }

    #[test]
    fn fp4_blocks_with_their_tensor_scale_fold_and_transpose() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut g = Graph::new("fp4");
        let x = g.add_input("x", tensor_type("f32[3,64]"));
        let packed: Vec<u8> = (0..64 * 12 / 2).map(|_| rng.random::<u8>()).collect();
        let codes = constant(&mut g, "w", DType::F4E2M1, &[64, 12], packed);
        let bs: Vec<u8> = (0..4 * 12)
            .map(|_| {
                let v = rng.random_range(0.25..4.0);
                encode(DType::F8E4M3FN, v, true, Rounding::Nearest)
            })
            .collect();
        let bs = constant(&mut g, "bs", DType::F8E4M3FN, &[4, 12], bs);
        let ts = f32s(&mut g, "ts", &[], &[0.125]);
        let scales = push(&mut g, dequantize(0, 0), &[Some(bs), Some(ts)]);
        let w = push(&mut g, dequantize(0, 16), &[Some(codes), Some(scales)]);
        let y = push(&mut g, Op::MatMul, &[Some(x), Some(w)]);
        g.outputs.push(y);
        let after = folded(&g);
        assert_eq!(
            ops(&after),
            ["Fused(DequantizeLinear+DequantizeLinear+TransposedMatMul)"]
        );
        assert_eq!(constant_shape(&after, DType::F4E2M1), [vec![12, 64]]);
        assert_eq!(constant_shape(&after, DType::F8E4M3FN), [vec![12, 4]]);
    }

    #[test]
    fn values_rounded_to_bf16_fold_with_bf16_weights() {
        let mut g = Graph::new("bf16");
        let x = g.add_input("x", tensor_type("f32[N,8]"));
        let cast = |to| Op::Cast {
            to,
            saturate: true,
            round_mode: "nearest".into(),
        };
        let r = push(&mut g, cast(DType::BF16), &[Some(x)]);
        let xr = push(&mut g, cast(DType::F32), &[Some(r)]);
        let bits: Vec<u8> = (0..8 * 6)
            .flat_map(|i| {
                half::bf16::from_f32(i as f32 / 7.0 - 3.0)
                    .to_bits()
                    .to_le_bytes()
            })
            .collect();
        let w = constant(&mut g, "w", DType::BF16, &[8, 6], bits);
        let wf = push(&mut g, cast(DType::F32), &[Some(w)]);
        let y = push(&mut g, Op::MatMul, &[Some(xr), Some(wf)]);
        g.outputs.push(y);
        let after = folded(&g);
        assert_eq!(ops(&after), ["Fused(Cast+Cast+Cast+TransposedMatMul)"]);
        assert_eq!(constant_shape(&after, DType::BF16), [vec![6, 8]]);
    }

    /// `Relu(x)` through a uint8 quantize-dequantize pair, scaled per tensor or per channel.
    fn relu_pair(channels: usize) -> Graph {
        let mut g = Graph::new("pair");
        let x = g.add_input("x", tensor_type("f32[N,4]"));
        let r = push(&mut g, Op::Unary(sparkc_ir::op::Unary::Relu), &[Some(x)]);
        let shape: &[usize] = if channels == 1 { &[] } else { &[channels] };
        let s = f32s(&mut g, "s", shape, &vec![0.05; channels]);
        let z = constant(&mut g, "z", DType::U8, shape, vec![3; channels]);
        let q = push(&mut g, quantize(1), &[Some(r), Some(s), Some(z)]);
        let y = push(&mut g, dequantize(1, 0), &[Some(q), Some(s), Some(z)]);
        g.outputs.push(y);
        g
    }

    #[test]
    fn a_quantize_dequantize_pair_becomes_its_producers_epilogue() {
        let after = folded(&relu_pair(1));
        assert_eq!(ops(&after), ["Fused(Relu+QuantizeLinear+DequantizeLinear)"]);
        let per_channel = folded(&relu_pair(4));
        assert_eq!(
            ops(&per_channel),
            ["DequantizeLinear", "QuantizeLinear", "Relu"]
        );
    }

    #[test]
    fn four_bit_codes_transpose_nibble_by_nibble() {
        let mut rng = StdRng::seed_from_u64(9);
        let (rows, cols) = (5usize, 7usize);
        let codes: Vec<u8> = (0..rows * cols).map(|_| rng.random_range(0..16)).collect();
        let mut packed = vec![0u8; (rows * cols).div_ceil(2)];
        for (i, c) in codes.iter().enumerate() {
            packed[i / 2] |= c << ((i % 2) * 4);
        }
        let t = Tensor::new(DType::F4E2M1, vec![rows, cols], Bytes::from(packed)).expect("fp4");
        let u = transpose_2d(&t).expect("transposes");
        assert_eq!(u.shape, [cols, rows]);
        for r in 0..rows {
            for c in 0..cols {
                let at = c * rows + r;
                let nibble = (u.data[at / 2] >> ((at % 2) * 4)) & 0xF;
                assert_eq!(nibble, codes[r * cols + c], "element ({r}, {c})");
            }
        }
    }
}
