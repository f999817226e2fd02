//! Common-subexpression elimination: one node for each op applied to the same inputs, and one
//! constant for each distinct tensor.

use crate::edit::{has_output, replace_uses};
use crate::manager::{Pass, PassError};
use sparkc_ir::{Graph, Op, ValueRef};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// Constants larger than this (bytes) are not compared: duplicated weights are rare (tied weights
/// share one initializer), and hashing a multi-gigabyte model's weights would dominate compile
/// time.
pub const MAX_HASHED_CONSTANT: usize = 1 << 20;

/// Merges nodes that compute the same thing from the same values.
pub struct CommonSubexpressions;

/// True for ops whose result depends on more than their inputs (random draws).
fn nondeterministic(op: &Op) -> bool {
    matches!(op, Op::Dropout { .. })
}

impl Pass for CommonSubexpressions {
    fn name(&self) -> &'static str {
        "cse"
    }

    fn run(&mut self, graph: &mut Graph) -> Result<String, PassError> {
        let mut seen: HashMap<String, Vec<sparkc_ir::NodeId>> = HashMap::new();
        let mut merged = 0;
        for id in graph.topo_order()? {
            let node = graph.node(id);
            let large = matches!(&node.op, Op::Const(t) if t.data.len() > MAX_HASHED_CONSTANT);
            if matches!(node.op, Op::Input)
                || large
                || nondeterministic(&node.op)
                || has_output(graph, id)
            {
                continue;
            }
            let key = match &node.op {
                Op::Const(t) => {
                    let mut hasher = std::collections::hash_map::DefaultHasher::new();
                    t.data.hash(&mut hasher);
                    format!("const {} {:?} {:x}", t.dtype, t.shape, hasher.finish())
                }
                op => format!("{op:?} {:?} {}", graph.inputs_of(id), node.outputs.len()),
            };
            let same = |other: &sparkc_ir::NodeId| match (&graph.node(*other).op, &node.op) {
                (Op::Const(a), Op::Const(b)) => a == b,
                _ => true,
            };
            match seen.get(&key).and_then(|c| c.iter().copied().find(same)) {
                Some(first) => {
                    for output in 0..graph.node(id).outputs.len() {
                        replace_uses(
                            graph,
                            ValueRef { node: id, output },
                            ValueRef {
                                node: first,
                                output,
                            },
                        );
                    }
                    graph.dag.remove_node(id);
                    merged += 1;
                }
                None => seen.entry(key).or_default().push(id),
            }
        }
        Ok(format!("merged {merged} node(s)"))
    }
}

#[cfg(test)]
mod tests {
    use super::CommonSubexpressions;
    use crate::testing::{ops, push, run_checked, tensor_type};
    use sparkc_ir::op::{Binary, Unary};
    use sparkc_ir::{DType, Graph, Op, Tensor};

    #[test]
    fn equal_nodes_and_equal_constants_merge() {
        let mut g = Graph::new("g");
        let x = g.add_input("x", tensor_type("f32[N,4]"));
        let c1 = g.add_const("c1", Tensor::from_f64s(DType::F32, vec![], &[2.0]).unwrap());
        let c2 = g.add_const("c2", Tensor::from_f64s(DType::F32, vec![], &[2.0]).unwrap());
        let a = push(&mut g, Op::Binary(Binary::Mul), &[Some(x), Some(c1)]);
        let b = push(&mut g, Op::Binary(Binary::Mul), &[Some(x), Some(c2)]);
        let (ea, eb) = (
            push(&mut g, Op::Unary(Unary::Exp), &[Some(a)]),
            push(&mut g, Op::Unary(Unary::Exp), &[Some(b)]),
        );
        let sum = push(&mut g, Op::Binary(Binary::Add), &[Some(ea), Some(eb)]);
        g.outputs = vec![sum];
        let after = run_checked(&mut CommonSubexpressions, &g);
        assert_eq!(ops(&after), ["Add", "Exp", "Mul"]);
        let constants = after
            .dag
            .node_weights()
            .filter(|n| matches!(n.op, Op::Const(_)))
            .count();
        assert_eq!(constants, 1);
    }
}
