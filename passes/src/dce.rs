//! Dead-code elimination: removes every node no graph output depends on.

use crate::manager::{Pass, PassError};
use petgraph::Direction;
use sparkc_ir::Graph;
use std::collections::HashSet;

/// Removes nodes whose values reach no graph output (graph inputs always stay).
pub struct DeadCode;

impl Pass for DeadCode {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn run(&mut self, graph: &mut Graph) -> Result<String, PassError> {
        let mut live: HashSet<_> = graph.inputs.iter().copied().collect();
        let mut stack: Vec<_> = graph.outputs.iter().map(|v| v.node).collect();
        while let Some(id) = stack.pop() {
            if live.insert(id) {
                stack.extend(graph.dag.neighbors_directed(id, Direction::Incoming));
            }
        }
        let dead: Vec<_> = graph
            .dag
            .node_indices()
            .filter(|id| !live.contains(id))
            .collect();
        for &id in &dead {
            graph.dag.remove_node(id);
        }
        Ok(format!("removed {} node(s)", dead.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::DeadCode;
    use crate::testing::{graph_of, ops, push, run_checked, X};
    use sparkc_ir::op::Unary;
    use sparkc_ir::Op;

    #[test]
    fn unread_nodes_go_and_inputs_stay() {
        let mut g = graph_of("(Relu x)", &[X]);
        g.add_input("unused", crate::testing::tensor_type("f32[3]"));
        let relu = g.outputs[0];
        push(&mut g, Op::Unary(Unary::Exp), &[Some(relu)]);
        let after = run_checked(&mut DeadCode, &g);
        assert_eq!(ops(&after), ["Relu"]);
        assert_eq!(after.inputs.len(), 2);
    }
}
