//! Constant folding: a node whose inputs are all constants is computed now, by the CPU
//! executor, and so is any value whose contents shape inference already knows (the
//! `Shape → Gather → Concat → Reshape` chains exporters emit).

use crate::edit::make_const;
use crate::manager::{Pass, PassError};
use sparkc_cpu::{Executor, Value};
use sparkc_ir::{DType, Graph, Known, NodeId, Op, Tensor, ValueRef, ValueType};

/// Results larger than this many elements are left to run time.
pub const MAX_FOLDED_ELEMENTS: usize = 1 << 24;

/// Replaces computable nodes with constants.
pub struct ConstantFold;

/// The tensor a fully known value holds.
fn known_tensor(value: &sparkc_ir::Value) -> Option<Tensor> {
    let ValueType::Tensor(t) = &value.ty else {
        return None;
    };
    let shape: Vec<usize> = t
        .shape
        .as_ref()?
        .iter()
        .map(|d| d.as_const().and_then(|n| usize::try_from(n).ok()))
        .collect::<Option<_>>()?;
    match value.known.as_ref()? {
        Known::Ints(dims) if t.dtype == DType::I64 => {
            let ints: Vec<i64> = dims.iter().map(|d| d.as_const()).collect::<Option<_>>()?;
            (ints.len() == shape.iter().product::<usize>())
                .then(|| Tensor::from_i64s(shape, &ints).ok())
                .flatten()
        }
        _ => None,
    }
}

/// Runs one node on its constant inputs.
fn evaluate(graph: &Graph, id: NodeId) -> Option<Tensor> {
    let node = graph.node(id);
    let mut scratch = Graph::new("fold");
    let inputs: Vec<Option<ValueRef>> = graph
        .inputs_of(id)
        .iter()
        .map(|v| {
            v.map(|v| match &graph.node(v.node).op {
                Op::Const(t) => Some(scratch.add_const(&graph.value(v).name, t.clone())),
                _ => None,
            })
        })
        .map(|v| v.map_or(Some(None), |v| v.map(Some)))
        .collect::<Option<_>>()?;
    let copy = scratch.add_node(
        node.name.clone(),
        node.op.clone(),
        &inputs,
        node.outputs.clone(),
    );
    scratch.outputs.push(ValueRef {
        node: copy,
        output: 0,
    });
    let executor = Executor::new(&scratch).ok()?;
    match executor.run(Vec::new()).ok()?.into_iter().next()? {
        Value::Tensor(array) => Some(array.to_tensor()),
        _ => None,
    }
}

/// True for nodes that must run at run time even on constant inputs.
fn keep(op: &Op) -> bool {
    matches!(op, Op::Input | Op::Const(_) | Op::Dropout { .. }) || !op.subgraphs().is_empty()
}

/// True for a `DequantizeLinear` or `Cast` that widens a constant: folding it would store the
/// weight decompressed, undoing its quantization. Small constants are folded, except block
/// scales (NVFP4's E4M3 scales times the tensor scale), which the FP4 tensor cores read as
/// stored.
fn decompresses(graph: &Graph, id: NodeId) -> bool {
    let node = graph.node(id);
    if !matches!(node.op, Op::DequantizeLinear { .. } | Op::Cast { .. }) {
        return false;
    }
    let Some(input) = crate::edit::const_input(graph, id, 0) else {
        return false;
    };
    let wider = node.outputs[0]
        .ty
        .as_tensor()
        .is_some_and(|t| t.dtype.bits() > input.dtype.bits());
    let value = ValueRef {
        node: id,
        output: 0,
    };
    let block_scales = crate::edit::readers(graph, value)
        .iter()
        .any(|&(reader, slot)| {
            slot == 1
                && matches!(
                    graph.node(reader).op,
                    Op::DequantizeLinear { block_size, .. } if block_size > 0
                )
        });
    wider && (input.len() > sparkc_ir::graph::MAX_KNOWN_ELEMENTS || block_scales)
}

impl Pass for ConstantFold {
    fn name(&self) -> &'static str {
        "fold"
    }

    fn run(&mut self, graph: &mut Graph) -> Result<String, PassError> {
        let mut folded = 0;
        for id in graph.topo_order()? {
            let node = graph.node(id);
            if keep(&node.op) || node.outputs.len() != 1 || decompresses(graph, id) {
                continue;
            }
            let small = crate::cost::elements(&node.outputs[0]) <= MAX_FOLDED_ELEMENTS as f64
                && node.outputs[0]
                    .ty
                    .as_tensor()
                    .and_then(|t| t.shape.as_ref())
                    .is_some_and(|d| d.iter().all(|d| d.as_const().is_some()));
            let all_const = graph
                .inputs_of(id)
                .iter()
                .flatten()
                .all(|v| matches!(graph.node(v.node).op, Op::Const(_)));
            let tensor = match known_tensor(&node.outputs[0]) {
                Some(t) => Some(t),
                None if all_const && small => evaluate(graph, id),
                None => None,
            };
            if let Some(tensor) = tensor {
                let expected = node.outputs[0].ty.as_tensor().map(|t| t.dtype);
                if expected == Some(tensor.dtype) {
                    make_const(graph, id, tensor);
                    folded += 1;
                }
            }
        }
        if folded > 0 {
            // Constants make some downstream dims and values known.
            sparkc_ir::infer_graph(graph)?;
        }
        Ok(format!("folded {folded} node(s)"))
    }
}

#[cfg(test)]
mod tests {
    use super::ConstantFold;
    use crate::testing::{graph_of, ops, push, run_checked, tensor_type};
    use sparkc_ir::{Graph, Op, Tensor};

    #[test]
    fn constant_subexpressions_are_computed() {
        let g = graph_of("(Add x (Mul 2 (Sqrt 9)))", &[("x", "f32[N,4]")]);
        let after = run_checked(&mut ConstantFold, &g);
        assert_eq!(ops(&after), ["Add"]);
    }

    #[test]
    fn a_shape_chain_folds_once_the_shape_is_known() {
        let mut g = Graph::new("g");
        let x = g.add_input("x", tensor_type("f32[2,3,4]"));
        let shape = push(
            &mut g,
            Op::Shape {
                start: 0,
                end: None,
            },
            &[Some(x)],
        );
        let index = g.add_const("i", Tensor::from_i64s(vec![], &[0]).unwrap());
        let batch = push(&mut g, Op::Gather { axis: 0 }, &[Some(shape), Some(index)]);
        let axes = g.add_const("axes", Tensor::from_i64s(vec![1], &[0]).unwrap());
        let batch1 = push(&mut g, Op::Unsqueeze, &[Some(batch), Some(axes)]);
        let rest = g.add_const("rest", Tensor::from_i64s(vec![1], &[-1]).unwrap());
        let target = push(&mut g, Op::Concat { axis: 0 }, &[Some(batch1), Some(rest)]);
        let flat = push(
            &mut g,
            Op::Reshape { allowzero: false },
            &[Some(x), Some(target)],
        );
        g.outputs = vec![flat];
        let mut after = run_checked(&mut ConstantFold, &g);
        crate::dce::DeadCode.run_on(&mut after);
        assert_eq!(ops(&after), ["Reshape"]);
    }
}
