//! Removal of ops that do nothing at inference: `Identity`, inference-mode `Dropout`, a `Cast`
//! to the type a value already has, a `Reshape` or `Transpose` that keeps the shape and order, a
//! `Sum`, `Mean`, `Max` or `Min` of one input; a `Sum` of two written as the `Add` it is, a
//! `CastLike` of a known target type as the `Cast` it is, a `Gather` or `Slice` of dims of a
//! `Shape` as the `Shape` of those axes, a `MatMul` of a vector as the matrix product between
//! reshapes it is, and a `Transpose` that only moves axes of size 1 as the `Reshape` it is.

use crate::edit::{
    add_tensor_node, fresh_name, has_output, is_identity, rank_of, readers, replace_uses,
    set_input, truncate_inputs, Builder,
};
use crate::manager::{Pass, PassError};
use sparkc_ir::op::{Binary, Unary, Variadic};
use sparkc_ir::{DType, Dim, Graph, Known, NodeId, Op, Tensor, TensorType, ValueRef, ValueType};

/// Bypasses no-op nodes.
pub struct Cleanup;

/// The input a no-op node passes through unchanged, if the node is one.
fn passthrough(graph: &Graph, id: NodeId) -> Option<ValueRef> {
    let node = graph.node(id);
    let inputs = graph.inputs_of(id);
    let x = inputs.first().copied().flatten()?;
    let same_type = graph.value(x).ty == node.outputs.first()?.ty;
    let removable = match &node.op {
        Op::Unary(Unary::Identity) => true,
        Op::Dropout { .. } => {
            let training = inputs.get(2).copied().flatten();
            let inference = match training {
                None => true,
                Some(t) => {
                    matches!(&graph.value(t).known, Some(Known::Ints(v)) if v.iter().all(|d| d.as_const() == Some(0)))
                }
            };
            let mask_unused = node.outputs.len() < 2
                || readers(
                    graph,
                    ValueRef {
                        node: id,
                        output: 1,
                    },
                )
                .is_empty();
            inference && mask_unused
        }
        Op::Cast { .. } => same_type,
        Op::Reshape { .. } => {
            same_type
                && matches!(&node.outputs[0].ty, ValueType::Tensor(t)
                    if t.shape.as_ref().is_some_and(|d| d.iter().all(|d| d.as_const().is_some())))
        }
        Op::Transpose { perm } => is_identity(perm) && same_type,
        Op::Variadic(_) => inputs.len() == 1,
        _ => false,
    };
    (removable && same_type).then_some(x)
}

impl Pass for Cleanup {
    fn name(&self) -> &'static str {
        "cleanup"
    }

    fn run(&mut self, graph: &mut Graph) -> Result<String, PassError> {
        let shape_parts = shape_parts_as_shapes(graph)?;
        let vector_products = vector_products_as_matrix_products(graph)?;
        let mut removed = 0;
        let mut sums = 0;
        let mut casts = 0;
        for id in graph.topo_order()? {
            // A sum of two is an Add, which the rules and fusion know.
            let node = &mut graph.dag[id];
            if matches!(node.op, Op::Variadic(Variadic::Sum)) && node.arity == 2 {
                node.op = Op::Binary(Binary::Add);
                sums += 1;
            }
            if cast_like_as_cast(graph, id) {
                casts += 1;
            }
            let Some(x) = passthrough(graph, id) else {
                continue;
            };
            if has_output(graph, id) {
                // A graph result: the value passed through takes its name, when nothing else
                // reads it and it is computed (not an input or constant, whose names are fixed).
                let out = ValueRef {
                    node: id,
                    output: 0,
                };
                let computed = !matches!(graph.node(x.node).op, Op::Input | Op::Const(_));
                if computed && readers(graph, x).len() == 1 && !graph.outputs.contains(&x) {
                    let name = graph.value(out).name.clone();
                    graph.dag[x.node].outputs[x.output].name = name;
                    for o in graph.outputs.iter_mut().filter(|o| **o == out) {
                        *o = x;
                    }
                    graph.dag.remove_node(id);
                    removed += 1;
                }
                continue;
            }
            {
                replace_uses(
                    graph,
                    ValueRef {
                        node: id,
                        output: 0,
                    },
                    x,
                );
                graph.dag.remove_node(id);
                removed += 1;
            }
        }
        let reshapes = unit_moves_as_reshapes(graph)?;
        Ok(format!(
            "removed {removed} no-op node(s), rewrote {sums} two-input Sum(s) as Add, {casts} \
             CastLike(s) as Cast, {shape_parts} dim(s) read from a Shape as the Shape of those \
             axes, {vector_products} product(s) of a vector as matrix products and {reshapes} \
             transpose(s) of unit axes as Reshape"
        ))
    }
}

/// Rewrites a `CastLike` whose target type is known as the `Cast` to that type (which folds
/// when its input is constant); true if it did.
fn cast_like_as_cast(graph: &mut Graph, id: NodeId) -> bool {
    let Op::CastLike {
        saturate,
        round_mode,
    } = &graph.node(id).op
    else {
        return false;
    };
    let like = graph.inputs_of(id).get(1).copied().flatten();
    let Some(to) = like.and_then(|v| graph.value(v).ty.as_tensor().map(|t| t.dtype)) else {
        return false;
    };
    let cast = Op::Cast {
        to,
        saturate: *saturate,
        round_mode: round_mode.clone(),
    };
    truncate_inputs(graph, id, 1);
    graph.dag[id].op = cast;
    true
}

/// Rewrites each `MatMul` with a vector operand as the matrix product it is between reshapes,
/// which are views: `[K]·[.., K, N]` multiplies `[1, K]` and `[K]` multiplies as `[K, 1]`, and
/// the unit axis this adds to the product is dropped after. Product kernels, weight layouts and
/// quantization then see matrices only. Returns how many.
fn vector_products_as_matrix_products(graph: &mut Graph) -> Result<usize, PassError> {
    let mut count = 0;
    for id in graph.topo_order()? {
        if !matches!(graph.node(id).op, Op::MatMul) {
            continue;
        }
        let inputs = graph.inputs_of(id);
        let (Some(Some(a)), Some(Some(b))) = (inputs.first().copied(), inputs.get(1).copied())
        else {
            continue;
        };
        let out = ValueRef {
            node: id,
            output: 0,
        };
        let (Some(ra), Some(rb), Some(dtype)) = (
            rank_of(graph, a),
            rank_of(graph, b),
            graph.value(out).ty.as_tensor().map(|t| t.dtype),
        ) else {
            continue;
        };
        if ra != 1 && rb != 1 {
            continue;
        }
        // What the product's result keeps: every axis but the added unit one (a `0` copies an
        // axis of the product, `-1` takes what is left).
        let target: Vec<i64> = match (ra, rb) {
            (1, 1) => Vec::new(),
            (1, _) => [vec![0; rb - 2], vec![-1]].concat(),
            _ => vec![0; ra - 1],
        };
        let mut builder = Builder {
            base: graph.node(id).name.clone(),
            graph,
            dtype,
            rule: "cleanup",
        };
        let a = match ra {
            1 => {
                let row = builder.ints(&[1, -1], "row_shape")?;
                builder.add(
                    Op::Reshape { allowzero: false },
                    "row",
                    &[Some(a), Some(row)],
                )
            }
            _ => a,
        };
        let b = match rb {
            1 => {
                let column = builder.ints(&[-1, 1], "column_shape")?;
                let reshape = Op::Reshape { allowzero: false };
                builder.add(reshape, "column", &[Some(b), Some(column)])
            }
            _ => b,
        };
        let product = builder.add(Op::MatMul, "matrix_product", &[Some(a), Some(b)]);
        let target = builder.ints(&target, "result_shape")?;
        graph.dag[id].op = Op::Reshape { allowzero: false };
        set_input(graph, id, 0, product);
        set_input(graph, id, 1, target);
        count += 1;
    }
    if count > 0 {
        sparkc_ir::infer_graph(graph)?;
    }
    Ok(count)
}

/// The constant feeding input `slot` of `id` when it is one integer (`None` for an absent
/// input, an unknown value or several elements).
fn known_int(graph: &Graph, id: NodeId, slot: usize) -> Option<i64> {
    let v = graph.inputs_of(id).get(slot).copied().flatten()?;
    match &graph.value(v).known {
        Some(Known::Ints(dims)) if dims.len() == 1 => dims[0].as_const(),
        _ => None,
    }
}

/// The axes `[first, last)` of its input that a `Shape` node reads, and that input.
fn shape_axes(graph: &Graph, id: NodeId) -> Option<(ValueRef, i64, i64)> {
    let Op::Shape { start, end } = graph.node(id).op else {
        return None;
    };
    let x = graph.inputs_of(id).first().copied().flatten()?;
    let rank = graph.value(x).ty.as_tensor()?.shape.as_ref()?.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank);
    let (first, last) = (clamp(start), clamp(end.unwrap_or(rank)));
    Some((x, first, last.max(first)))
}

/// Reads one dim or a run of dims of a `Shape` (`x.size(1)`, `x.shape[:2]` as exporters write
/// them: a `Gather` or `Slice` of the whole shape) as the `Shape` of just those axes: one
/// kernel writing the dims where there were two. A scalar index keeps its rank through a
/// reshape, which is a view. Returns how many.
fn shape_parts_as_shapes(graph: &mut Graph) -> Result<usize, PassError> {
    let mut count = 0;
    for id in graph.topo_order()? {
        let op = graph.node(id).op.clone();
        if !matches!(op, Op::Gather { .. } | Op::Slice) {
            continue;
        }
        let Some(dims) = graph.inputs_of(id).first().copied().flatten() else {
            continue;
        };
        let Some((x, first, last)) = shape_axes(graph, dims.node) else {
            continue;
        };
        let len = last - first;
        let from_end = |v: i64| if v < 0 { v + len } else { v };
        // The axes read, and whether the result is a scalar (a Gather by a scalar index).
        let (start, end, scalar) = match op {
            Op::Gather { axis: 0 | -1 } => {
                let index_rank = graph
                    .inputs_of(id)
                    .get(1)
                    .copied()
                    .flatten()
                    .and_then(|v| rank_of(graph, v));
                let (Some(rank @ 0..=1), Some(i)) = (index_rank, known_int(graph, id, 1)) else {
                    continue;
                };
                let i = from_end(i);
                if !(0..len).contains(&i) {
                    continue;
                }
                (first + i, first + i + 1, rank == 0)
            }
            Op::Slice => {
                let absent = |slot| graph.inputs_of(id).get(slot).copied().flatten().is_none();
                let axes_ok = absent(3) || matches!(known_int(graph, id, 3), Some(0 | -1));
                let steps_ok = absent(4) || known_int(graph, id, 4) == Some(1);
                let (Some(s), Some(e)) = (known_int(graph, id, 1), known_int(graph, id, 2)) else {
                    continue;
                };
                if !(axes_ok && steps_ok) {
                    continue;
                }
                let (s, e) = (from_end(s).clamp(0, len), from_end(e).clamp(0, len));
                (first + s, first + e.max(s), false)
            }
            _ => continue,
        };
        let shape = Op::Shape {
            start,
            end: Some(end),
        };
        if scalar {
            // The one dim as a `[1]` Shape, reshaped to the scalar the Gather gave.
            let out = ValueRef {
                node: id,
                output: 0,
            };
            let name = fresh_name(graph, &format!("{}_dim", graph.node(id).name));
            let ty = TensorType::new(DType::I64, vec![Dim::known(1)]);
            let dim = add_tensor_node(graph, name, shape, &[Some(x)], ty);
            graph.dag[dim.node].outputs[0].known = graph.value(out).known.clone();
            let name = fresh_name(graph, &format!("{}_rank", graph.node(id).name));
            let target = graph.add_const(&name, Tensor::from_i64s(vec![0], &[])?);
            graph.dag[id].op = Op::Reshape { allowzero: false };
            set_input(graph, id, 0, dim);
            set_input(graph, id, 1, target);
        } else {
            set_input(graph, id, 0, x);
            truncate_inputs(graph, id, 1);
            graph.dag[id].op = shape;
        }
        count += 1;
    }
    Ok(count)
}

/// Turns each transpose that only moves axes of size 1 (`[B, 1, H, D]` to `[B, H, 1, D]` in a
/// decoding step, `[N, 1, 1, C]` to `[N, C, 1, 1]` after global pooling channels last) into the
/// reshape it is, which needs no kernel; returns how many.
pub(crate) fn unit_moves_as_reshapes(graph: &mut Graph) -> Result<usize, PassError> {
    let mut count = 0;
    for id in graph.topo_order()? {
        let Op::Transpose { perm } = &graph.node(id).op else {
            continue;
        };
        let Some(x) = graph.inputs_of(id).first().copied().flatten() else {
            continue;
        };
        let out = ValueRef {
            node: id,
            output: 0,
        };
        let dims = |v: ValueRef| graph.value(v).ty.as_tensor().and_then(|t| t.shape.clone());
        let (Some(from), Some(to)) = (dims(x), dims(out)) else {
            continue;
        };
        if perm.len() != from.len() {
            continue;
        }
        let moved: Vec<usize> = perm
            .iter()
            .map(|&p| p as usize)
            .filter(|&p| from[p].as_const() != Some(1))
            .collect();
        if !moved.windows(2).all(|w| w[0] < w[1]) {
            continue;
        }
        // The target shape: known sizes as they are, an unknown one copied (0) from the same
        // axis of the input.
        let shape: Option<Vec<i64>> = to
            .iter()
            .enumerate()
            .map(|(i, d)| {
                d.as_const()
                    .or_else(|| (from.get(i) == Some(d)).then_some(0))
            })
            .collect();
        let Some(shape) = shape else { continue };
        let Ok(tensor) = Tensor::from_i64s(vec![shape.len()], &shape) else {
            continue;
        };
        let name = fresh_name(graph, &format!("{}_shape", graph.node(id).name));
        let shape = graph.add_const(&name, tensor);
        let node = &mut graph.dag[id];
        node.op = Op::Reshape { allowzero: false };
        node.arity = 2;
        set_input(graph, id, 1, shape);
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::Cleanup;
    use crate::testing::{graph_of, ops, push, run_checked, tensor_type, X};
    use crate::Pass;
    use sparkc_ir::op::{Binary, Unary, Variadic};
    use sparkc_ir::{DType, Graph, Op, Tensor, ValueRef};

    #[test]
    fn identity_and_inference_dropout_are_bypassed() {
        let mut g = graph_of("(Relu x)", &[X]);
        let relu = g.outputs[0];
        let id = push(&mut g, Op::Unary(Unary::Identity), &[Some(relu)]);
        let drop = push(&mut g, Op::Dropout { seed: None }, &[Some(id)]);
        let out = push(&mut g, Op::Unary(Unary::Sigmoid), &[Some(drop)]);
        g.outputs = vec![out];
        let after = run_checked(&mut Cleanup, &g);
        assert_eq!(ops(&after), ["Relu", "Sigmoid"]);
    }

    #[test]
    fn an_identity_at_the_output_hands_over_its_name() {
        let mut g = graph_of("(Relu x)", &[X]);
        let relu = g.outputs[0];
        let id = push(&mut g, Op::Unary(Unary::Identity), &[Some(relu)]);
        g.outputs = vec![id];
        let name = g.value(id).name.clone();
        let after = run_checked(&mut Cleanup, &g);
        assert_eq!(ops(&after), ["Relu"]);
        assert_eq!(after.value(after.outputs[0]).name, name);
    }

    #[test]
    fn a_transpose_that_reorders_stays() {
        let mut g = graph_of("(Relu x)", &[X]);
        let relu: ValueRef = g.outputs[0];
        let t = push(&mut g, Op::Transpose { perm: vec![1, 0] }, &[Some(relu)]);
        let out = push(&mut g, Op::Unary(Unary::Exp), &[Some(t)]);
        g.outputs = vec![out];
        let after = run_checked(&mut Cleanup, &g);
        assert_eq!(ops(&after), ["Exp", "Relu", "Transpose"]);
    }

    #[test]
    fn a_transpose_of_unit_axes_is_a_reshape() {
        // [N, 1, 4, 3] to [N, 4, 1, 3]: the data's order is unchanged; to [N, 3, 1, 4] it is not.
        for (perm, reshaped) in [(vec![0, 2, 1, 3], true), (vec![0, 3, 1, 2], false)] {
            let mut g = Graph::new("test");
            let x = g.add_input("x", tensor_type("f32[N,1,4,3]"));
            let t = push(&mut g, Op::Transpose { perm }, &[Some(x)]);
            let out = push(&mut g, Op::Unary(Unary::Exp), &[Some(t)]);
            g.outputs = vec![out];
            let after = run_checked(&mut Cleanup, &g);
            let kept = if reshaped { "Reshape" } else { "Transpose" };
            assert_eq!(ops(&after), ["Exp", kept]);
        }
    }

    #[test]
    fn a_cast_like_of_a_known_type_is_a_cast_and_folds_away() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", tensor_type("i64[4]"));
        let zero = g.add_const(
            "zero",
            Tensor::from_f64s(DType::F32, vec![], &[0.0]).unwrap(),
        );
        let like = Op::CastLike {
            saturate: true,
            round_mode: "up".into(),
        };
        let cast = push(&mut g, like, &[Some(zero), Some(x)]);
        let out = push(&mut g, Op::Binary(Binary::Add), &[Some(x), Some(cast)]);
        g.outputs = vec![out];
        let after = run_checked(&mut Cleanup, &g);
        assert_eq!(ops(&after), ["Add", "Cast"]);
        let mut folded = after.clone();
        crate::Pass::run(&mut crate::fold::ConstantFold, &mut folded).unwrap();
        assert_eq!(ops(&folded), ["Add"]);
    }

    #[test]
    fn dims_read_from_a_shape_are_the_shape_of_those_axes() {
        let ints = |g: &mut Graph, name: &str, shape: Vec<usize>, v: &[i64]| {
            g.add_const(name, Tensor::from_i64s(shape, v).unwrap())
        };
        let mut g = Graph::new("t");
        let x = g.add_input("x", tensor_type("f32[N,T,4]"));
        let dims = push(
            &mut g,
            Op::Shape {
                start: 0,
                end: None,
            },
            &[Some(x)],
        );
        // x.size(-2), x.size(0) as a one-element vector, and x.shape[:2].
        let (minus_two, zero, start, end) = (
            ints(&mut g, "minus_two", vec![], &[-2]),
            ints(&mut g, "zero", vec![1], &[0]),
            ints(&mut g, "start", vec![1], &[0]),
            ints(&mut g, "end", vec![1], &[2]),
        );
        let gather = Op::Gather { axis: 0 };
        let t = push(&mut g, gather.clone(), &[Some(dims), Some(minus_two)]);
        let n = push(&mut g, gather.clone(), &[Some(dims), Some(zero)]);
        let nt = push(&mut g, Op::Slice, &[Some(dims), Some(start), Some(end)]);
        g.outputs = vec![t, n, nt];
        let mut after = run_checked(&mut Cleanup, &g);
        crate::dce::DeadCode.run_on(&mut after);
        assert_eq!(ops(&after), ["Reshape", "Shape", "Shape", "Shape"]);
        let read: Vec<(i64, Option<i64>)> = after
            .dag
            .node_weights()
            .filter_map(|n| match n.op {
                Op::Shape { start, end } => Some((start, end)),
                _ => None,
            })
            .collect();
        for axes in [(1, Some(2)), (0, Some(1)), (0, Some(2))] {
            assert!(read.contains(&axes), "{read:?} lacks {axes:?}");
        }
        // An index past the rank is left for the run to report.
        let five = ints(&mut g, "five", vec![], &[5]);
        let bad = push(&mut g, gather, &[Some(dims), Some(five)]);
        g.outputs = vec![bad];
        Cleanup.run(&mut g).unwrap();
        assert_eq!(ops(&g).iter().filter(|op| *op == "Gather").count(), 1);
    }

    #[test]
    fn products_of_vectors_are_matrix_products_between_reshapes() {
        let cases = [
            ("f32[5]", "f32[2,5,3]", "f32[2,3]"),
            ("f32[N,4,5]", "f32[5]", "f32[N,4]"),
            ("f32[5]", "f32[5]", "f32[]"),
            ("f32[5]", "f32[5,3]", "f32[3]"),
        ];
        for (a_type, b_type, result) in cases {
            let mut g = Graph::new("t");
            let a = g.add_input("a", tensor_type(a_type));
            let b = g.add_input("b", tensor_type(b_type));
            let product = push(&mut g, Op::MatMul, &[Some(a), Some(b)]);
            g.outputs = vec![product];
            let after = run_checked(&mut Cleanup, &g);
            let output = after.outputs[0];
            assert_eq!(after.value(output).ty, tensor_type(result));
            let matmul = after
                .dag
                .node_indices()
                .find(|&id| matches!(after.node(id).op, Op::MatMul))
                .expect("a product remains");
            for operand in after.inputs_of(matmul).into_iter().flatten() {
                let rank = after.value(operand).ty.as_tensor().unwrap().rank();
                assert!(
                    rank >= Some(2),
                    "{a_type}·{b_type}: an operand of rank {rank:?}"
                );
            }
        }
    }

    #[test]
    fn a_sum_of_two_is_an_add_and_a_sum_of_one_goes() {
        let mut g = graph_of("(Relu x)", &[X]);
        let relu = g.outputs[0];
        let one = push(&mut g, Op::Variadic(Variadic::Sum), &[Some(relu)]);
        let two = push(
            &mut g,
            Op::Variadic(Variadic::Sum),
            &[Some(one), Some(relu)],
        );
        let three = push(
            &mut g,
            Op::Variadic(Variadic::Sum),
            &[Some(two), Some(relu), Some(one)],
        );
        g.outputs = vec![three];
        let after = run_checked(&mut Cleanup, &g);
        assert_eq!(ops(&after), ["Add", "Relu", "Sum"]);
    }
}
