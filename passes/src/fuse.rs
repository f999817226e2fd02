//! Fusion into bodies: a contraction or reduction with the elementwise ops after it, and
//! chains of elementwise ops of any length (with broadcasting: arithmetic, comparisons, logic,
//! `Where` and casts, as index and mask arithmetic needs), each become one `Fused` node whose
//! body is the expression DAG of the ops it replaces.
//!
//! A node joins the group of the value it reads when that value has no other reader and is not
//! a graph output, so no intermediate is both fused away and needed elsewhere. An epilogue
//! after a contraction or reduction must keep the anchor's shape (a broadcast that widens the
//! result would make the kernel write more than its product).

use crate::edit::{readers, replace_uses};
use crate::manager::{Pass, PassError};
use sparkc_ir::fused::{is_contraction, is_pointwise};
use sparkc_ir::{BodyNode, DType, Fused, Graph, NodeId, Op, Operand, ValueRef};
use std::collections::HashMap;

/// Groups anchors with their elementwise neighbours into fused nodes.
pub struct FuseBodies;

/// What a group is built around.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Anchor {
    /// Only elementwise ops so far.
    None,
    /// A matrix product or convolution.
    Contraction,
    /// A reduction or normalization.
    Reduction,
}

/// True for ops that reduce along axes and can take elementwise producers and consumers.
fn is_reduction(op: &Op) -> bool {
    matches!(
        op,
        Op::Reduce { .. }
            | Op::Softmax { .. }
            | Op::LayerNormalization { .. }
            | Op::RmsNormalization { .. }
    )
}

/// True when node `id` has one tensor output whose type passes `keep`.
fn single_output(graph: &Graph, id: NodeId, keep: impl Fn(DType) -> bool) -> bool {
    let node = graph.node(id);
    node.outputs.len() == 1
        && node.outputs[0]
            .ty
            .as_tensor()
            .is_some_and(|t| keep(t.dtype))
}

/// True for the types a pointwise op may produce inside a body: floats, and i64 and bool,
/// which kernels compute in i64 exactly (a narrower integer would need wrapping after each op).
fn pointwise_dtype(dtype: DType) -> bool {
    dtype.is_float() || matches!(dtype, DType::I64 | DType::Bool)
}

struct Group {
    nodes: Vec<NodeId>,
    anchor: Anchor,
}

impl Pass for FuseBodies {
    fn name(&self) -> &'static str {
        "fuse"
    }

    fn run(&mut self, graph: &mut Graph) -> Result<String, PassError> {
        let order = graph.topo_order()?;
        let position: HashMap<NodeId, usize> =
            order.iter().enumerate().map(|(k, &n)| (n, k)).collect();
        let mut groups: Vec<Group> = Vec::new();
        let mut root_of: HashMap<NodeId, usize> = HashMap::new();
        for &id in &order {
            let op = &graph.node(id).op;
            let role = if is_pointwise(op) && single_output(graph, id, pointwise_dtype) {
                Anchor::None
            } else if !single_output(graph, id, |d| d.is_float()) {
                continue;
            } else if is_contraction(op) {
                Anchor::Contraction
            } else if is_reduction(op) && graph.node(id).outputs.len() == 1 {
                Anchor::Reduction
            } else {
                continue;
            };
            let out_ty = &graph.node(id).outputs[0].ty;
            let joinable = |v: &ValueRef| -> Option<usize> {
                let g = *root_of.get(&v.node)?;
                (v.output == 0 && readers(graph, *v).len() == 1 && !graph.outputs.contains(v))
                    .then_some(g)
            };
            // The groups this node can join: every producer group, at most one of them
            // anchored, and an anchored group only if this node keeps the anchor's shape.
            let mut joined: Vec<usize> = Vec::new();
            if role != Anchor::Contraction {
                for v in graph.inputs_of(id).iter().flatten() {
                    let Some(g) = joinable(v) else { continue };
                    if joined.contains(&g) {
                        continue;
                    }
                    let anchored = groups[g].anchor != Anchor::None;
                    let fits = match (anchored, role) {
                        (false, _) => true,
                        (true, Anchor::None) => graph.value(*v).ty == *out_ty,
                        (true, _) => false,
                    };
                    let one_anchor = !anchored
                        || (role == Anchor::None
                            && joined.iter().all(|&j| groups[j].anchor == Anchor::None));
                    if fits && one_anchor {
                        joined.push(g);
                    }
                }
            }
            let g = match joined.split_first() {
                Some((&first, rest)) => {
                    for &other in rest {
                        let nodes = std::mem::take(&mut groups[other].nodes);
                        let anchor = groups[other].anchor;
                        groups[first].nodes.extend(nodes);
                        if anchor != Anchor::None {
                            groups[first].anchor = anchor;
                        }
                    }
                    root_of.retain(|_, r| !joined.contains(r));
                    groups[first].nodes.push(id);
                    if role != Anchor::None {
                        groups[first].anchor = role;
                    }
                    groups[first].nodes.sort_by_key(|n| position[n]);
                    first
                }
                None => {
                    groups.push(Group {
                        nodes: vec![id],
                        anchor: role,
                    });
                    groups.len() - 1
                }
            };
            root_of.insert(id, g);
        }
        let mut fused = 0;
        for group in groups.iter().filter(|g| g.nodes.len() > 1) {
            build(graph, &group.nodes)?;
            fused += 1;
        }
        Ok(format!("built {fused} fused node(s)"))
    }
}

/// Replaces a group's nodes (in execution order, the last one's value escaping) with one
/// fused node.
fn build(graph: &mut Graph, nodes: &[NodeId]) -> Result<(), PassError> {
    let position: HashMap<NodeId, usize> = nodes.iter().enumerate().map(|(k, &n)| (n, k)).collect();
    let mut inputs: Vec<ValueRef> = Vec::new();
    let mut body = Vec::new();
    let mut provenance: Vec<String> = Vec::new();
    for &id in nodes {
        let args = graph
            .inputs_of(id)
            .into_iter()
            .map(|v| {
                v.map(|v| match position.get(&v.node) {
                    Some(&k) => Operand::Node(k),
                    None => {
                        Operand::Input(inputs.iter().position(|x| *x == v).unwrap_or_else(|| {
                            inputs.push(v);
                            inputs.len() - 1
                        }))
                    }
                })
            })
            .collect();
        let node = graph.node(id);
        for rule in &node.rules {
            if !provenance.contains(rule) {
                provenance.push(rule.clone());
            }
        }
        body.push(BodyNode {
            op: node.op.clone(),
            args,
        });
    }
    let fused = Fused { body, provenance };
    let kind = match fused.kind() {
        sparkc_ir::FusedKind::Elementwise => "fuse-elementwise",
        sparkc_ir::FusedKind::Contraction => "fuse-epilogue",
        sparkc_ir::FusedKind::Reduction => "fuse-reduction",
    };
    let mut fused = fused;
    fused.provenance.push(kind.to_string());
    let root = *nodes
        .last()
        .ok_or_else(|| PassError::Graph("an empty fusion group".into()))?;
    let root_value = ValueRef {
        node: root,
        output: 0,
    };
    let outputs = graph.node(root).outputs.clone();
    let name = format!("fused_{}", graph.node(root).name);
    let refs: Vec<Option<ValueRef>> = inputs.iter().map(|&v| Some(v)).collect();
    let id = graph.add_node(name, Op::Fused(Box::new(fused)), &refs, outputs);
    graph.dag[id].rules = vec![kind.to_string()];
    replace_uses(
        graph,
        root_value,
        ValueRef {
            node: id,
            output: 0,
        },
    );
    for out in graph.outputs.iter_mut().filter(|v| **v == root_value) {
        *out = ValueRef {
            node: id,
            output: 0,
        };
    }
    for &n in nodes {
        graph.dag.remove_node(n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::FuseBodies;
    use crate::testing::{graph_of, ops, push, run_checked, tensor_type, X};
    use sparkc_ir::op::Binary;
    use sparkc_ir::{DType, Graph, Op, Tensor};

    #[test]
    fn an_elementwise_chain_with_broadcasting_becomes_one_node() {
        let g = graph_of("(Relu (Mul (Add x b) (Sigmoid x)))", &[X, ("b", "f32[4]")]);
        let after = run_checked(&mut FuseBodies, &g);
        assert_eq!(ops(&after), ["Fused(Sigmoid+Add+Mul+Relu)"]);
    }

    #[test]
    fn a_product_takes_its_epilogue() {
        let g = graph_of(
            "(Relu (Add (MatMul a w) b))",
            &[("a", "f32[B,S,8]"), ("w", "f32[8,4]"), ("b", "f32[4]")],
        );
        let after = run_checked(&mut FuseBodies, &g);
        assert_eq!(ops(&after), ["Fused(MatMul+Add+Relu)"]);
    }

    #[test]
    fn a_product_read_elsewhere_keeps_its_own_node() {
        let g = graph_of(
            "(Mul (Relu (MatMul a w)) (MatMul a w))",
            &[("a", "f32[S,8]"), ("w", "f32[8,4]")],
        );
        let after = run_checked(&mut FuseBodies, &g);
        assert_eq!(ops(&after), ["Fused(Relu+Mul)", "MatMul"]);
    }

    #[test]
    fn an_epilogue_that_widens_the_product_stays_out() {
        let g = graph_of(
            "(Add (MatMul a w) c)",
            &[("a", "f32[S,8]"), ("w", "f32[8,4]"), ("c", "f32[2,S,4]")],
        );
        let after = run_checked(&mut FuseBodies, &g);
        assert_eq!(ops(&after), ["Add", "MatMul"]);
    }

    #[test]
    fn index_and_mask_arithmetic_fuses_in_i64_and_bool_only() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", tensor_type("f32[B,S]"));
        let p = g.add_input("p", tensor_type("i64[B,1]"));
        let q = g.add_input("q", tensor_type("i32[B,1]"));
        let steps = g.add_input("s", tensor_type("i64[S]"));
        // x where p + s < 2p, else 0: i64 and bool steps join the float Where.
        let at = push(&mut g, Op::Binary(Binary::Add), &[Some(p), Some(steps)]);
        let twice = push(&mut g, Op::Binary(Binary::Add), &[Some(p), Some(p)]);
        let kept = push(&mut g, Op::Binary(Binary::Less), &[Some(at), Some(twice)]);
        let zero = g.add_const(
            "zero",
            Tensor::from_f64s(DType::F32, vec![], &[0.0]).unwrap(),
        );
        let masked = push(&mut g, Op::Where, &[Some(kept), Some(x), Some(zero)]);
        // (q + q) / q in i32 would need wrapping after the sum: its steps stay apart.
        let sum = push(&mut g, Op::Binary(Binary::Add), &[Some(q), Some(q)]);
        let ratio = push(&mut g, Op::Binary(Binary::Div), &[Some(sum), Some(q)]);
        g.outputs = vec![masked, ratio];
        let after = run_checked(&mut FuseBodies, &g);
        assert_eq!(ops(&after), ["Add", "Div", "Fused(Add+Add+Less+Where)"]);
    }

    #[test]
    fn a_reduction_takes_its_producers_and_consumers() {
        let g = graph_of("(Sqrt (Add (ReduceMean (Mul x x) i:-1) 0.001))", &[X]);
        let after = run_checked(&mut FuseBodies, &g);
        assert_eq!(ops(&after), ["Fused(Mul+ReduceMean+Add+Sqrt)"]);
    }
}
