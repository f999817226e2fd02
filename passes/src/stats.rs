//! Figures of a graph for reports: nodes, kernels and the bytes its intermediates move.

use crate::cost::{bytes, is_view};
use crate::edit::readers;
use sparkc_ir::{Graph, Op, ValueRef};

/// Size figures of one graph.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GraphStats {
    /// Nodes, inputs and constants excluded.
    pub nodes: usize,
    /// Nodes that launch a kernel (views such as `Reshape` excluded).
    pub kernels: usize,
    /// Bytes written to and read back from memory for values that are neither graph inputs,
    /// constants nor outputs (unknown dims at the cost model's default size).
    pub intermediate_bytes: f64,
}

/// Counts `graph`'s nodes and kernels and its intermediate traffic.
pub fn stats(graph: &Graph) -> GraphStats {
    let mut out = GraphStats {
        nodes: 0,
        kernels: 0,
        intermediate_bytes: 0.0,
    };
    for id in graph.dag.node_indices() {
        let node = graph.node(id);
        if matches!(node.op, Op::Input | Op::Const(_)) {
            continue;
        }
        out.nodes += 1;
        if is_view(&node.op) {
            continue;
        }
        out.kernels += 1;
        for (output, value) in node.outputs.iter().enumerate() {
            let v = ValueRef { node: id, output };
            if graph.outputs.contains(&v) {
                continue;
            }
            let reads = readers(graph, v).len() as f64;
            out.intermediate_bytes += bytes(value) * (1.0 + reads);
        }
    }
    out
}
