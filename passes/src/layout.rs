//! Channels-last convolutions (`--layout nhwc`): each float `Conv` with constant weights runs
//! in the NHWC layout between two transposes, then the transposes back to channels first sink
//! through the elementwise ops after them (and global pooling becomes a reduction over the
//! spatial axes) and inverse pairs cancel, so that chains of convolutions and their elementwise
//! neighbours (activations, residual adds) run channels last, with transposes left only where
//! the layout must change: graph inputs and outputs, and ops that need channels first (windowed
//! pooling, resizing, reshapes). The model's own transposes are left alone. The transposed
//! weights are folded by the constant folder after it.

use crate::edit::{fresh_name, readers, set_input};
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
        sparkc_ir::infer_graph(graph)?;
        Ok(format!(
            "{convs} convolution(s) channels last, {sunk} transpose(s) sunk past elementwise \
             ops, {cancelled} transpose pair(s) cancelled"
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
fn present(graph: &mut Graph, value: ValueRef, ty: TensorType, perm: Vec<i64>) -> ValueRef {
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
    t
}

/// The convolutions to rewrite: NCHW `Conv` over floats with constant float weights.
fn convertible(graph: &Graph, id: NodeId) -> bool {
    let node = graph.node(id);
    let Op::Conv(attrs) = &node.op else {
        return false;
    };
    let inputs = graph.inputs_of(id);
    let float_const = inputs
        .get(1)
        .copied()
        .flatten()
        .is_some_and(|w| matches!(&graph.node(w.node).op, Op::Const(t) if t.dtype.is_float()));
    let x_float = inputs.first().copied().flatten().is_some_and(|x| {
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
            ty.shape = Some(channels_last(&dims));
            let name = fresh_name(graph, &format!("{}_nhwc", graph.value(v).name));
            let t = add_transpose(graph, v, to_channels_last(dims.len()), name, ty);
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
        if let Some((mut ty, dims)) = shaped(graph, y) {
            ty.shape = Some(channels_last(&dims));
            present(graph, y, ty, to_channels_first(dims.len()));
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
    if !is_elementwise(&node.op) || node.outputs.len() != 1 {
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
    let inputs = graph.inputs_of(id);
    // The transposes that sink: back to channels first, of a value computed channels last
    // (a transposed constant is one this pass made, and stays where it is).
    let perm = to_channels_first(rank);
    let moving = |v: ValueRef| -> Option<ValueRef> {
        let Op::Transpose { perm: p } = &graph.node(v.node).op else {
            return None;
        };
        let source = graph.inputs_of(v.node).first().copied().flatten()?;
        let constant = matches!(graph.node(source.node).op, Op::Const(_));
        (*p == perm && !constant).then_some(source)
    };
    inputs.iter().flatten().find_map(|&v| moving(v))?;
    let back = inverse(&perm);
    let mut follows = Vec::new();
    for input in inputs {
        let Some(v) = input else {
            follows.push(None);
            continue;
        };
        let (_, dims) = shaped(graph, v)?;
        let follow = if dims.iter().all(|d| d.as_const() == Some(1)) {
            Follow::Scalar
        } else if let Some(source) = moving(v) {
            Follow::Source(source)
        } else if matches!(graph.node(v.node).op, Op::Const(_)) && dims.len() <= rank {
            Follow::Constant(v)
        } else {
            // A value already transposed the other way for another reader (the skip connection
            // of a residual block) is read in that form.
            let other = readers(graph, v).into_iter().find(|&(reader, _)| {
                matches!(&graph.node(reader).op, Op::Transpose { perm: q } if *q == back)
            })?;
            Follow::Source(ValueRef {
                node: other.0,
                output: 0,
            })
        };
        follows.push(Some(follow));
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
            } else if pool_channels_last(graph, id) {
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
    let Some(t) = graph.inputs_of(id).first().copied().flatten() else {
        return false;
    };
    let Op::Transpose { perm } = &graph.node(t.node).op else {
        return false;
    };
    let Some(source) = graph.inputs_of(t.node).first().copied().flatten() else {
        return false;
    };
    let out = ValueRef {
        node: id,
        output: 0,
    };
    let Some((mut ty, dims)) = shaped(graph, out) else {
        return false;
    };
    if *perm != to_channels_first(dims.len()) {
        return false;
    }
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
    ty.shape = Some(channels_last(&dims));
    present(graph, out, ty, to_channels_first(dims.len()));
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
    use sparkc_ir::op::{AutoPad, Binary, ConvAttrs, Layout, PoolAttrs, Unary};
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

    #[test]
    fn transposes_stay_around_an_op_that_needs_channels_first() {
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
        };
        let pooled = push(
            &mut g,
            Op::MaxPool {
                pool,
                storage_order: 0,
            },
            &[Some(c1)],
        );
        let c2 = conv(&mut g, pooled, w2, 1);
        g.outputs = vec![c2];
        let after = channels_last(&g);
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
}
