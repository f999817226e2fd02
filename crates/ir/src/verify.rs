//! The verifier: structural and type checks that every pass can run after it rewrites a graph.

use crate::error::{IrError, Result};
use crate::graph::{Edge, Graph};
use crate::infer::infer_node;
use crate::op::Op;
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::HashSet;

/// Checks that `graph` is acyclic, every input is wired to an existing output, names are
/// unique, and every node's output types are what inference derives from its inputs.
pub fn verify(graph: &Graph) -> Result<()> {
    let order = graph.topo_order()?;
    let mut names = HashSet::new();
    for &id in &order {
        let node = graph.node(id);
        let fail = |message: String| IrError::Node {
            node: node.name.clone(),
            op: node.op.name(),
            message,
        };
        let mut slots = HashSet::new();
        for edge in graph.dag.edges_directed(id, Direction::Incoming) {
            let Edge { output, input } = *edge.weight();
            if input >= node.arity || !slots.insert(input) {
                return Err(fail(format!(
                    "input slot {input} is wired twice or is out of range"
                )));
            }
            if output >= graph.node(edge.source()).outputs.len() {
                return Err(fail(format!(
                    "input {input} reads output {output} of a node that has fewer"
                )));
            }
        }
        for value in &node.outputs {
            if !value.name.is_empty() && !names.insert(value.name.as_str()) {
                return Err(fail(format!(
                    "value name '{}' is defined twice",
                    value.name
                )));
            }
        }
        if !matches!(node.op, Op::Input | Op::Const(_)) {
            let inferred = infer_node(graph, id)?;
            for (i, (value, inferred)) in node.outputs.iter().zip(&inferred).enumerate() {
                if value.ty != inferred.ty {
                    return Err(fail(format!(
                        "output {i} ('{}') is typed {} but its inputs give {}",
                        value.name, value.ty, inferred.ty
                    )));
                }
            }
        }
        for (name, subgraph) in node.op.subgraphs() {
            verify(subgraph).map_err(|e| fail(format!("in {name}: {e}")))?;
        }
    }
    for (i, output) in graph.outputs.iter().enumerate() {
        if !graph.dag.contains_node(output.node)
            || output.output >= graph.node(output.node).outputs.len()
        {
            return Err(IrError::Graph(format!(
                "graph output {i} refers to a value that does not exist"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dim::Dim;
    use crate::dtype::DType;
    use crate::graph::ValueRef;
    use crate::op::Unary;
    use crate::types::{TensorType, Value, ValueType};

    fn f32_value(name: &str, dims: &[i64]) -> Value {
        Value {
            name: name.to_string(),
            ty: ValueType::Tensor(TensorType::new(
                DType::F32,
                dims.iter().map(|&d| Dim::known(d)).collect(),
            )),
            known: None,
        }
    }

    #[test]
    fn accepts_a_well_typed_graph() {
        let mut g = Graph::new("g");
        let x = g.add_input(
            "x",
            ValueType::Tensor(TensorType::new(
                DType::F32,
                vec![Dim::sym("N"), Dim::known(4)],
            )),
        );
        let mut y = f32_value("y", &[]);
        y.ty = g.value(x).ty.clone();
        let relu = g.add_node("relu".into(), Op::Unary(Unary::Relu), &[Some(x)], vec![y]);
        g.outputs.push(ValueRef {
            node: relu,
            output: 0,
        });
        verify(&g).unwrap();
    }

    #[test]
    fn rejects_a_cycle() {
        let mut g = Graph::new("g");
        let a = g.add_node(
            "a".into(),
            Op::Unary(Unary::Relu),
            &[None],
            vec![f32_value("a", &[1])],
        );
        let b = g.add_node(
            "b".into(),
            Op::Unary(Unary::Relu),
            &[Some(ValueRef { node: a, output: 0 })],
            vec![f32_value("b", &[1])],
        );
        g.dag.add_edge(
            b,
            a,
            Edge {
                output: 0,
                input: 0,
            },
        );
        let err = verify(&g).unwrap_err().to_string();
        assert!(err.contains("cycle"), "{err}");
    }

    #[test]
    fn rejects_a_wrong_output_type() {
        let mut g = Graph::new("g");
        let x = g.add_input("x", f32_value("x", &[2, 3]).ty);
        let relu = g.add_node(
            "relu".into(),
            Op::Unary(Unary::Relu),
            &[Some(x)],
            vec![f32_value("y", &[3, 2])],
        );
        g.outputs.push(ValueRef {
            node: relu,
            output: 0,
        });
        let err = verify(&g).unwrap_err().to_string();
        assert!(
            err.contains("node 'relu' (Relu)") && err.contains("f32[3,2]"),
            "{err}"
        );
    }
}
