//! Common-subexpression elimination: one node for each op applied to the same inputs, and one
//! constant for each distinct tensor.

use crate::edit::{has_output, replace_uses};
use crate::manager::{Pass, PassError};
use sparkc_ir::{Graph, Op, ValueRef};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

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
            if matches!(node.op, Op::Input) || nondeterministic(&node.op) || has_output(graph, id) {
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
