//! Channels-last convolutions (`--layout nhwc`): each float `Conv` with constant weights runs
//! in the NHWC layout between two transposes, then the transposes back to channels first sink
//! through the elementwise ops after them (and global pooling becomes a reduction over the
//! spatial axes; windowed pooling and concatenation run channels last too) and inverse pairs
//! cancel, so that chains of convolutions and their neighbours (activations, residual adds,
//! pooling, concatenations) run channels last, with transposes left only where the layout must
//! change: graph inputs and outputs, and ops that need channels first (resizing, reshapes,
//! LRN). The model's own transposes are left alone. The transposed weights are folded by the
//! constant folder after it.

use crate::edit::{const_input, fresh_name, readers, set_input};
use crate::manager::{Pass, PassError};
use sparkc_ir::fused::is_elementwise;
use sparkc_ir::op::{channels_last, to_channels_first, to_channels_last, Layout, Reduction};
use sparkc_ir::{Dim, Graph, NodeId, Op, Tensor, TensorType, Value, ValueRef, ValueType};

/// Rewrites float convolutions with constant weights to channels last and sinks the
/// transposes that result.
pub struct ChannelsLast;

impl Pass for ChannelsLast {
    fn name(&self) -> &'static str {
        "layout"
    }

    fn run(&mut self, graph: &mut Graph) -> Result<String, PassError> {
        let convs = convert(graph)?;
        let (sunk, cancelled) = if convs > 0 { sink(graph)? } else { (0, 0) };
        let reshapes = crate::cleanup::unit_moves_as_reshapes(graph)?;
        sparkc_ir::infer_graph(graph)?;
        Ok(format!(
            "{convs} convolution(s) channels last, {sunk} transpose(s) sunk past elementwise \
             ops, {cancelled} transpose pair(s) cancelled, {reshapes} left as reshapes"
        ))
    }
}

/// The tensor type of `v`, when its shape is known.
fn shaped(graph: &Graph, v: ValueRef) -> Option<(TensorType, Vec<Dim>)> {
    let ty = graph.value(v).ty.as_tensor()?.clone();
    let dims = ty.shape.clone()?;
    Some((ty, dims))
}

/// `dims` permuted as `Transpose` permutes them: axis `i` of the result is axis `perm[i]`.
fn permuted(dims: &[Dim], perm: &[i64]) -> Vec<Dim> {
    perm.iter().map(|&p| dims[p as usize].clone()).collect()
}

/// The permutation undoing `perm`.
fn inverse(perm: &[i64]) -> Vec<i64> {
    let mut out = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        out[p as usize] = i as i64;
    }
    out
}

/// Adds `Transpose(value, perm)` with a fresh node name, its output named `name`.
fn add_transpose(
    graph: &mut Graph,
    value: ValueRef,
    perm: Vec<i64>,
    name: String,
    ty: TensorType,
) -> ValueRef {
    let node_name = fresh_name(graph, &format!("{name}_transpose"));
    let out = Value {
        name,
        ty: ValueType::Tensor(ty),
        known: None,
    };
    let node = graph.add_node(node_name, Op::Transpose { perm }, &[Some(value)], vec![out]);
    ValueRef { node, output: 0 }
}

/// Gives `value` the layout `ty` and a fresh name, and puts `Transpose(value, perm)` in its
/// place: the transpose takes over its readers, its name and its place among the graph outputs.
fn present(graph: &mut Graph, value: ValueRef, ty: TensorType, perm: Vec<i64>) {
    let old = graph.value(value).clone();
    let users = readers(graph, value);
    let renamed = fresh_name(graph, &format!("{}_nhwc", old.name));
    let slot = &mut graph.dag[value.node].outputs[value.output];
    slot.name = renamed;
    slot.ty = ValueType::Tensor(ty);
    slot.known = None;
    let old_ty = old.ty.as_tensor().cloned().unwrap_or(TensorType {
        dtype: sparkc_ir::DType::F32,
        shape: None,
    });
    let t = add_transpose(graph, value, perm, old.name, old_ty);
    for (node, slot) in users {
        set_input(graph, node, slot, t);
    }
    for out in &mut graph.outputs {
        if *out == value {
            *out = t;
        }
    }
}

/// The convolutions to rewrite: NCHW `Conv` over floats with constant float weights.
fn convertible(graph: &Graph, id: NodeId) -> bool {
    let node = graph.node(id);
    let Op::Conv(attrs) = &node.op else {
        return false;
    };
    let float_const = const_input(graph, id, 1).is_some_and(|t| t.dtype.is_float());
    let x_float = graph
        .inputs_of(id)
        .first()
        .copied()
        .flatten()
        .is_some_and(|x| {
            shaped(graph, x).is_some_and(|(ty, dims)| ty.dtype.is_float() && dims.len() >= 3)
        });
    attrs.layout.is_nchw() && float_const && x_float && node.outputs.len() == 1
}

/// Rewrites every convertible convolution; returns how many.
fn convert(graph: &mut Graph) -> Result<usize, PassError> {
    let ids: Vec<NodeId> = graph
        .topo_order()?
        .into_iter()
        .filter(|&id| convertible(graph, id))
        .collect();
    for &id in &ids {
        let inputs = graph.inputs_of(id);
        for slot in [0, 1] {
            let Some(v) = inputs[slot] else { continue };
            let Some((mut ty, dims)) = shaped(graph, v) else {
                continue;
            };
            // An image or weights read by several convolutions is transposed once.
            let forward = to_channels_last(dims.len());
            let made = readers(graph, v).into_iter().find(|&(reader, _)| {
                matches!(&graph.node(reader).op, Op::Transpose { perm } if *perm == forward)
            });
            let t = match made {
                Some((reader, _)) => ValueRef {
                    node: reader,
                    output: 0,
                },
                None => {
                    ty.shape = Some(channels_last(&dims));
                    let name = fresh_name(graph, &format!("{}_nhwc", graph.value(v).name));
                    add_transpose(graph, v, forward, name, ty)
                }
            };
            set_input(graph, id, slot, t);
        }
        if let Op::Conv(attrs) = &mut graph.dag[id].op {
            attrs.layout = Layout::Nhwc;
        }
        graph.dag[id].rules.push("layout".into());
        let y = ValueRef {
            node: id,
            output: 0,
        };
        if let Some((_, dims)) = shaped(graph, y) {
            present_channels_last(graph, y, &dims);
        }
    }
    Ok(ids.len())
}

/// How one input of an elementwise op follows a transpose sunk past it.
enum Follow {
    /// A transpose's input, read directly.
    Source(ValueRef),
    /// A constant, transposed by the inverse permutation (after padding its rank with ones).
    Constant(ValueRef),
    /// A value with one element, which broadcasts the same in any layout.
    Scalar,
}

/// How each input of elementwise node `id` follows if the transposes feeding it sink below it,
/// and their permutation; `None` when they cannot (an input in another layout, a shape not
/// known, no transpose at all).
fn sinkable(graph: &Graph, id: NodeId) -> Option<(Vec<Option<Follow>>, Vec<i64>)> {
    let node = graph.node(id);
    let pointwise = is_elementwise(&node.op) || matches!(node.op, Op::Variadic(_));
    if !pointwise || node.outputs.len() != 1 {
        return None;
    }
    let (_, out_dims) = shaped(
        graph,
        ValueRef {
            node: id,
            output: 0,
        },
    )?;
    let rank = out_dims.len();
    let perm = to_channels_first(rank);
    let mut moved = false;
    let mut follows = Vec::new();
    for input in graph.inputs_of(id) {
        let Some(v) = input else {
            follows.push(None);
            continue;
        };
        let (_, dims) = shaped(graph, v)?;
        let follow = if dims.iter().all(|d| d.as_const() == Some(1)) {
            Follow::Scalar
        } else if let Some((source, transposed_back)) = channels_last_form(graph, v, rank) {
            moved |= transposed_back;
            Follow::Source(source)
        } else if matches!(graph.node(v.node).op, Op::Const(_)) && dims.len() <= rank {
            Follow::Constant(v)
        } else {
            return None;
        };
        follows.push(Some(follow));
    }
    if !moved {
        return None;
    }
    Some((follows, perm))
}

/// Sinks transposes past elementwise ops and cancels inverse pairs until neither applies;
/// returns how many of each.
fn sink(graph: &mut Graph) -> Result<(usize, usize), PassError> {
    let (mut sunk, mut cancelled) = (0, 0);
    // Transposes only move down a DAG, so the sweeps end; the bound only guards against a bug.
    for _ in 0..=graph.node_count() {
        let mut changed = false;
        for id in graph.topo_order()? {
            if let Some((follows, perm)) = sinkable(graph, id) {
                move_below(graph, id, &follows, &perm);
                sunk += 1;
                changed = true;
            } else if pool_channels_last(graph, id)
                || window_pool_channels_last(graph, id)
                || concat_channels_last(graph, id)
            {
                sunk += 1;
                changed = true;
            } else if cancel(graph, id) {
                cancelled += 1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    Ok((sunk, cancelled))
}

/// Makes elementwise node `id` read the transposes' sources (and constants transposed back),
/// and puts the transpose after it.
fn move_below(graph: &mut Graph, id: NodeId, follows: &[Option<Follow>], perm: &[i64]) {
    let back = inverse(perm);
    for (slot, follow) in follows.iter().enumerate() {
        match follow {
            Some(Follow::Source(source)) => set_input(graph, id, slot, *source),
            Some(Follow::Constant(c)) => {
                let Op::Const(tensor) = &graph.node(c.node).op else {
                    continue;
                };
                let mut padded = tensor.clone();
                let mut shape = vec![1; back.len() - padded.shape.len()];
                shape.extend_from_slice(&padded.shape);
                padded.shape = shape;
                let base = graph.value(*c).name.clone();
                let dims: Vec<Dim> = padded.shape.iter().map(|&d| Dim::known(d as i64)).collect();
                let ty = TensorType {
                    dtype: padded.dtype,
                    shape: Some(permuted(&dims, &back)),
                };
                let source = graph.add_const(&fresh_name(graph, &format!("{base}_padded")), padded);
                let name = fresh_name(graph, &format!("{base}_nhwc"));
                let t = add_transpose(graph, source, back.clone(), name, ty);
                set_input(graph, id, slot, t);
            }
            Some(Follow::Scalar) | None => {}
        }
    }
    let out = ValueRef {
        node: id,
        output: 0,
    };
    if let Some((mut ty, dims)) = shaped(graph, out) {
        ty.shape = Some(permuted(&dims, &back));
        present(graph, out, ty, perm.to_vec());
    }
}

/// Turns global pooling of a channels-last value transposed back into a reduction over its
/// spatial axes, transposed after: the transpose then moves `[N, 1…, C]`, not the whole image.
/// Returns whether it did.
fn pool_channels_last(graph: &mut Graph, id: NodeId) -> bool {
    let kind = match graph.node(id).op {
        Op::GlobalAveragePool => Reduction::Mean,
        Op::GlobalMaxPool => Reduction::Max,
        _ => return false,
    };
    let Some(Moved { source, out, dims }) = moved_image(graph, id) else {
        return false;
    };
    let spatial: Vec<i64> = (1..dims.len() as i64 - 1).collect();
    let Ok(axes) = Tensor::from_i64s(vec![spatial.len()], &spatial) else {
        return false;
    };
    let name = fresh_name(graph, &format!("{}_axes", graph.node(id).name));
    let axes = graph.add_const(&name, axes);
    set_input(graph, id, 0, source);
    graph.dag[id].arity = 2;
    set_input(graph, id, 1, axes);
    graph.dag[id].op = Op::Reduce {
        kind,
        keepdims: true,
        noop_with_empty_axes: false,
    };
    present_channels_last(graph, out, &dims);
    true
}

/// Runs a `MaxPool` (whose indices nothing reads) or `AveragePool` of a value transposed back
/// to channels first on the channels-last value instead; returns whether it did.
fn window_pool_channels_last(graph: &mut Graph, id: NodeId) -> bool {
    let node = graph.node(id);
    let nchw = match &node.op {
        Op::MaxPool { pool, .. } | Op::AveragePool { pool, .. } => pool.layout.is_nchw(),
        _ => false,
    };
    let indices = ValueRef {
        node: id,
        output: 1,
    };
    let indices_read = node.outputs.len() > 1
        && (!readers(graph, indices).is_empty() || graph.outputs.contains(&indices));
    if !nchw || indices_read {
        return false;
    }
    let Some(Moved { source, out, dims }) = moved_image(graph, id) else {
        return false;
    };
    set_input(graph, id, 0, source);
    let node = &mut graph.dag[id];
    node.outputs.truncate(1);
    if let Op::MaxPool { pool, .. } | Op::AveragePool { pool, .. } = &mut node.op {
        pool.layout = Layout::Nhwc;
    }
    present_channels_last(graph, out, &dims);
    true
}

/// A node whose image (first input) is a channels-last value transposed back.
struct Moved {
    /// The channels-last value.
    source: ValueRef,
    /// The node's first output.
    out: ValueRef,
    /// That output's channels-first dims.
    dims: Vec<Dim>,
}

/// Node `id`'s image, when a transpose back to channels first makes it and the node's first
/// output has a known shape of rank 3 or more.
fn moved_image(graph: &Graph, id: NodeId) -> Option<Moved> {
    let x = graph.inputs_of(id).first().copied().flatten()?;
    let out = ValueRef {
        node: id,
        output: 0,
    };
    let (_, dims) = shaped(graph, out).filter(|(_, d)| d.len() >= 3)?;
    match channels_last_form(graph, x, dims.len())? {
        (source, true) => Some(Moved { source, out, dims }),
        _ => None,
    }
}

/// Makes output `out`, of channels-first `dims`, channels last, behind a transpose back.
fn present_channels_last(graph: &mut Graph, out: ValueRef, dims: &[Dim]) {
    if let Some((mut ty, _)) = shaped(graph, out) {
        ty.shape = Some(channels_last(dims));
        present(graph, out, ty, to_channels_first(dims.len()));
    }
}

/// The channels-last value behind `v`: the input of a transpose back to channels first (not
/// of a constant), or a transpose of `v` to channels last some other reader already made;
/// with whether it is the former.
fn channels_last_form(graph: &Graph, v: ValueRef, rank: usize) -> Option<(ValueRef, bool)> {
    if let Op::Transpose { perm } = &graph.node(v.node).op {
        let source = graph.inputs_of(v.node).first().copied().flatten()?;
        let constant = matches!(graph.node(source.node).op, Op::Const(_));
        if *perm == to_channels_first(rank) && !constant {
            return Some((source, true));
        }
    }
    let forward = to_channels_last(rank);
    readers(graph, v)
        .into_iter()
        .find(|&(reader, _)| matches!(&graph.node(reader).op, Op::Transpose { perm } if *perm == forward))
        .map(|(reader, _)| {
            let made = ValueRef {
                node: reader,
                output: 0,
            };
            (made, false)
        })
}

/// Concatenates channels-last values along the matching axis when every input has a
/// channels-last form and one at least is a transpose back to channels first; returns whether
/// it did.
fn concat_channels_last(graph: &mut Graph, id: NodeId) -> bool {
    let Op::Concat { axis } = graph.node(id).op else {
        return false;
    };
    let out = ValueRef {
        node: id,
        output: 0,
    };
    let Some((_, dims)) = shaped(graph, out) else {
        return false;
    };
    let rank = dims.len();
    let Ok(axis) = usize::try_from(if axis < 0 { axis + rank as i64 } else { axis }) else {
        return false;
    };
    if rank < 3 || axis >= rank {
        return false;
    }
    let forms: Option<Vec<(ValueRef, bool)>> = graph
        .inputs_of(id)
        .into_iter()
        .map(|v| channels_last_form(graph, v?, rank))
        .collect();
    let Some(forms) = forms.filter(|f| f.iter().any(|&(_, moved)| moved)) else {
        return false;
    };
    for (slot, (source, _)) in forms.into_iter().enumerate() {
        set_input(graph, id, slot, source);
    }
    graph.dag[id].op = Op::Concat {
        axis: to_channels_first(rank)[axis],
    };
    present_channels_last(graph, out, &dims);
    true
}

/// Replaces `Transpose(Transpose(x, p), q)` by `x` when `q` undoes `p` and the outer transpose is
/// not a graph output; returns whether it did.
fn cancel(graph: &mut Graph, id: NodeId) -> bool {
    let Op::Transpose { perm: outer } = &graph.node(id).op else {
        return false;
    };
    let Some(inner_value) = graph.inputs_of(id).first().copied().flatten() else {
        return false;
    };
    let Op::Transpose { perm: inner } = &graph.node(inner_value.node).op else {
        return false;
    };
    let out = ValueRef {
        node: id,
        output: 0,
    };
    if inner.len() != outer.len() || inverse(inner) != *outer || graph.outputs.contains(&out) {
        return false;
    }
    let Some(source) = graph.inputs_of(inner_value.node).first().copied().flatten() else {
        return false;
    };
    let users = readers(graph, out);
    if users.is_empty() {
        return false;
    }
    for (node, slot) in users {
        set_input(graph, node, slot, source);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::ChannelsLast;
    use crate::testing::{ops, push, run_checked, tensor_type};
    use crate::Pass;
    use sparkc_ir::op::{AutoPad, Binary, ConvAttrs, Layout, PoolAttrs, Unary, Variadic};
    use sparkc_ir::{DType, Graph, Op, Tensor, ValueRef};

    fn constant(g: &mut Graph, name: &str, shape: Vec<usize>) -> ValueRef {
        let n = shape.iter().product();
        let data: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
        g.add_const(name, Tensor::from_f64s(DType::F32, shape, &data).unwrap())
    }

    fn conv(g: &mut Graph, x: ValueRef, w: ValueRef, group: i64) -> ValueRef {
        let attrs = ConvAttrs {
            auto_pad: AutoPad::NotSet,
            dilations: vec![],
            group,
            kernel_shape: vec![],
            pads: vec![1, 1, 1, 1],
            strides: vec![],
            layout: Layout::Nchw,
        };
        push(g, Op::Conv(attrs), &[Some(x), Some(w), None])
    }

    /// The pass, then what the pipeline runs after it (folding the weights' transposes, DCE).
    fn channels_last(g: &Graph) -> Graph {
        let mut after = run_checked(&mut ChannelsLast, g);
        crate::fold::ConstantFold.run(&mut after).unwrap();
        crate::dce::DeadCode.run_on(&mut after);
        crate::testing::differential(g, &after, 3).unwrap();
        after
    }

    fn layouts(g: &Graph) -> Vec<Layout> {
        g.dag
            .node_weights()
            .filter_map(|n| match &n.op {
                Op::Conv(a) => Some(a.layout),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_residual_block_runs_channels_last_between_two_transposes() {
        let mut g = Graph::new("g");
        let x = g.add_input("x", tensor_type("f32[N,4,6,6]"));
        let w1 = constant(&mut g, "w1", vec![4, 4, 3, 3]);
        let w2 = constant(&mut g, "w2", vec![4, 1, 3, 3]);
        let shift = constant(&mut g, "shift", vec![4, 1, 1]);
        let (lo, hi) = (
            constant(&mut g, "lo", vec![]),
            constant(&mut g, "hi", vec![1]),
        );
        let c1 = conv(&mut g, x, w1, 1);
        let r1 = push(&mut g, Op::Unary(Unary::Relu), &[Some(c1)]);
        let c2 = conv(&mut g, r1, w2, 4);
        let shifted = push(&mut g, Op::Binary(Binary::Add), &[Some(c2), Some(shift)]);
        let sum = push(&mut g, Op::Binary(Binary::Add), &[Some(shifted), Some(r1)]);
        let out = push(&mut g, Op::Clip, &[Some(sum), Some(lo), Some(hi)]);
        g.outputs = vec![out];
        let name = g.value(out).name.clone();
        let after = channels_last(&g);
        assert_eq!(layouts(&after), [Layout::Nhwc, Layout::Nhwc]);
        assert_eq!(
            ops(&after),
            [
                "Add",
                "Add",
                "Clip",
                "Conv",
                "Conv",
                "Relu",
                "Transpose",
                "Transpose"
            ]
        );
        assert_eq!(after.value(after.outputs[0]).name, name);
    }

    /// conv → MaxPool → conv, with the pool's indices also a graph output or not.
    fn pooled(indices: bool) -> Graph {
        let mut g = Graph::new("g");
        let x = g.add_input("x", tensor_type("f32[2,3,8,8]"));
        let w1 = constant(&mut g, "w1", vec![5, 3, 3, 3]);
        let w2 = constant(&mut g, "w2", vec![2, 5, 3, 3]);
        let c1 = conv(&mut g, x, w1, 1);
        let pool = PoolAttrs {
            auto_pad: AutoPad::NotSet,
            ceil_mode: false,
            dilations: vec![],
            kernel_shape: vec![2, 2],
            pads: vec![],
            strides: vec![2, 2],
            layout: Layout::Nchw,
        };
        let op = Op::MaxPool {
            pool,
            storage_order: 0,
        };
        let n = g.node_count();
        let outputs = ["values", "indices"].map(|name| sparkc_ir::Value {
            name: format!("{name}{n}"),
            ty: tensor_type("f32[]"),
            known: None,
        });
        let node = g.add_node("pool".into(), op, &[Some(c1)], outputs.to_vec());
        sparkc_ir::infer_graph(&mut g).unwrap();
        let pooled = ValueRef { node, output: 0 };
        let c2 = conv(&mut g, pooled, w2, 1);
        g.outputs = vec![c2];
        if indices {
            g.outputs.push(ValueRef { node, output: 1 });
        }
        g
    }

    #[test]
    fn pooling_between_convolutions_runs_channels_last() {
        let after = channels_last(&pooled(false));
        assert_eq!(layouts(&after), [Layout::Nhwc, Layout::Nhwc]);
        assert_eq!(ops(&after).iter().filter(|o| *o == "Transpose").count(), 2);
        let pool = after
            .dag
            .node_weights()
            .find_map(|n| match &n.op {
                Op::MaxPool { pool, .. } => Some(pool.layout),
                _ => None,
            })
            .unwrap();
        assert_eq!(pool, Layout::Nhwc);
    }

    #[test]
    fn transposes_stay_around_a_pool_whose_indices_are_read() {
        let after = channels_last(&pooled(true));
        assert_eq!(layouts(&after), [Layout::Nhwc, Layout::Nhwc]);
        assert_eq!(ops(&after).iter().filter(|o| *o == "Transpose").count(), 4);
    }

    #[test]
    fn convolutions_with_computed_weights_keep_their_layout() {
        let mut g = Graph::new("g");
        let x = g.add_input("x", tensor_type("f32[1,2,5,5]"));
        let w = g.add_input("w", tensor_type("f32[3,2,3,3]"));
        let c = conv(&mut g, x, w, 1);
        let two = constant(&mut g, "two", vec![]);
        let out = push(&mut g, Op::Binary(Binary::Mul), &[Some(c), Some(two)]);
        g.outputs = vec![out];
        let after = channels_last(&g);
        assert_eq!(layouts(&after), [Layout::Nchw]);
        assert_eq!(ops(&after), ["Conv", "Mul"]);
    }

    #[test]
    fn a_graph_output_read_inside_the_graph_keeps_its_name_and_layout() {
        let mut g = Graph::new("g");
        let x = g.add_input("x", tensor_type("f32[1,2,4,4]"));
        let w = constant(&mut g, "w", vec![2, 2, 3, 3]);
        let c = conv(&mut g, x, w, 1);
        let r = push(&mut g, Op::Unary(Unary::Relu), &[Some(c)]);
        let s = push(&mut g, Op::Unary(Unary::Sigmoid), &[Some(r)]);
        g.outputs = vec![r, s];
        let names: Vec<String> = g.outputs.iter().map(|&v| g.value(v).name.clone()).collect();
        let after = channels_last(&g);
        let after_names: Vec<String> = after
            .outputs
            .iter()
            .map(|&v| after.value(v).name.clone())
            .collect();
        assert_eq!(after_names, names);
        for &v in &after.outputs {
            assert!(matches!(after.node(v.node).op, Op::Transpose { .. }));
        }
    }

    #[test]
    fn concatenations_and_sums_of_channels_last_values_stay_channels_last() {
        let mut g = Graph::new("g");
        let x = g.add_input("x", tensor_type("f32[N,3,7,5]"));
        let w1 = constant(&mut g, "w1", vec![4, 3, 3, 3]);
        let w2 = constant(&mut g, "w2", vec![2, 3, 3, 3]);
        let w3 = constant(&mut g, "w3", vec![6, 6, 3, 3]);
        let a = conv(&mut g, x, w1, 1);
        let b = conv(&mut g, x, w2, 1);
        let joined = push(&mut g, Op::Concat { axis: -3 }, &[Some(a), Some(b)]);
        let c = conv(&mut g, joined, w3, 1);
        let sum = push(
            &mut g,
            Op::Variadic(Variadic::Sum),
            &[Some(c), Some(joined), Some(c)],
        );
        g.outputs = vec![sum];
        let after = channels_last(&g);
        assert_eq!(
            ops(&after),
            [
                "Concat",
                "Conv",
                "Conv",
                "Conv",
                "Sum",
                "Transpose",
                "Transpose"
            ]
        );
    }

    #[test]
    fn global_pooling_reduces_channels_last_and_reshapes_back() {
        let mut g = Graph::new("g");
        let x = g.add_input("x", tensor_type("f32[N,3,6,5]"));
        let w = constant(&mut g, "w", vec![4, 3, 3, 3]);
        let c = conv(&mut g, x, w, 1);
        let pooled = push(&mut g, Op::GlobalAveragePool, &[Some(c)]);
        g.outputs = vec![pooled];
        let after = channels_last(&g);
        assert_eq!(ops(&after), ["Conv", "ReduceMean", "Reshape", "Transpose"]);
    }
}
