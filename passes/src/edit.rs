//! Graph editing shared by the passes: readers of a value, rewiring uses, graph outputs.

use crate::manager::PassError;
use bytes::Bytes;
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use sparkc_ir::{DType, Edge, Graph, NodeId, Op, Tensor, TensorType, Value, ValueRef, ValueType};

/// The `(node, input slot)` pairs reading `v`.
pub fn readers(graph: &Graph, v: ValueRef) -> Vec<(NodeId, usize)> {
    graph
        .dag
        .edges_directed(v.node, Direction::Outgoing)
        .filter(|e| e.weight().output == v.output)
        .map(|e| (e.target(), e.weight().input))
        .collect()
}

/// True when any output of `id` is a graph result.
pub fn has_output(graph: &Graph, id: NodeId) -> bool {
    graph.outputs.iter().any(|v| v.node == id)
}

/// Makes every reader of `from` read `to` instead (graph outputs are left alone).
pub fn replace_uses(graph: &mut Graph, from: ValueRef, to: ValueRef) {
    let edges: Vec<_> = graph
        .dag
        .edges_directed(from.node, Direction::Outgoing)
        .filter(|e| e.weight().output == from.output)
        .map(|e| (e.id(), e.target(), e.weight().input))
        .collect();
    for (edge, target, input) in edges {
        graph.dag.remove_edge(edge);
        graph.dag.add_edge(
            to.node,
            target,
            Edge {
                output: to.output,
                input,
            },
        );
    }
}

/// The rank of `v`, when known.
pub fn rank_of(graph: &Graph, v: ValueRef) -> Option<usize> {
    Some(graph.value(v).ty.as_tensor()?.shape.as_ref()?.len())
}

/// The constant tensor feeding input `slot` of `id`, if that input is a constant.
pub fn const_input(graph: &Graph, id: NodeId, slot: usize) -> Option<&Tensor> {
    let v = graph.inputs_of(id).get(slot).copied().flatten()?;
    match &graph.node(v.node).op {
        Op::Const(t) => Some(t),
        _ => None,
    }
}

/// Turns node `id` into a constant holding `tensor`, keeping its name and output name.
pub fn make_const(graph: &mut Graph, id: NodeId, tensor: Tensor) {
    truncate_inputs(graph, id, 0);
    let name = graph.node(id).outputs[0].name.clone();
    let node = &mut graph.dag[id];
    node.outputs = vec![sparkc_ir::graph::const_value(&name, &tensor)];
    node.op = Op::Const(tensor);
}

/// Disconnects every input of `id` from slot `first` on and sets its arity to `first`.
pub fn truncate_inputs(graph: &mut Graph, id: NodeId, first: usize) {
    disconnect(graph, id, |slot| slot >= first);
    graph.dag[id].arity = first;
}

/// Removes the edges into `id` whose input slot `which` selects.
fn disconnect(graph: &mut Graph, id: NodeId, which: impl Fn(usize) -> bool) {
    let old: Vec<_> = graph
        .dag
        .edges_directed(id, Direction::Incoming)
        .filter(|e| which(e.weight().input))
        .map(|e| e.id())
        .collect();
    for e in old {
        graph.dag.remove_edge(e);
    }
}

/// Makes input `slot` of `id` read `value`, replacing whatever it read.
pub fn set_input(graph: &mut Graph, id: NodeId, slot: usize, value: ValueRef) {
    disconnect(graph, id, |s| s == slot);
    graph.dag.add_edge(
        value.node,
        id,
        Edge {
            output: value.output,
            input: slot,
        },
    );
}

/// Adds a node of `op` reading `inputs`, with one tensor output of type `ty` named `name`.
pub fn add_tensor_node(
    graph: &mut Graph,
    name: String,
    op: Op,
    inputs: &[Option<ValueRef>],
    ty: TensorType,
) -> ValueRef {
    let value = Value {
        name: name.clone(),
        ty: ValueType::Tensor(ty),
        known: None,
    };
    let node = graph.add_node(name, op, inputs, vec![value]);
    ValueRef { node, output: 0 }
}

/// `base`, or `base_2`, `base_3`… if a value of the graph already has that name.
pub fn fresh_name(graph: &Graph, base: &str) -> String {
    let taken = |name: &str| {
        graph
            .dag
            .node_weights()
            .any(|n| n.outputs.iter().any(|v| v.name == name))
    };
    let mut name = base.to_string();
    let mut k = 2;
    while taken(&name) {
        name = format!("{base}_{k}");
        k += 1;
    }
    name
}

/// True for the permutation that leaves every axis where it is.
pub fn is_identity(perm: &[i64]) -> bool {
    perm.iter().enumerate().all(|(i, &p)| p == i as i64)
}

/// Makes `new` take `old`'s place: its readers, its place among the graph outputs, its name and
/// its type. `old`'s node is left for the caller to remove.
pub fn take_place(graph: &mut Graph, old: ValueRef, new: ValueRef) {
    for (reader, slot) in readers(graph, old) {
        set_input(graph, reader, slot, new);
    }
    for out in &mut graph.outputs {
        if *out == old {
            *out = new;
        }
    }
    let value = graph.value(old).clone();
    let slot = &mut graph.dag[new.node].outputs[new.output];
    slot.name = value.name;
    slot.ty = value.ty;
}

/// Adds the nodes that replace one node (a lowering), named after it and marked with the rule
/// that built them; their types are left to inference.
pub struct Builder<'g> {
    /// The graph being edited.
    pub graph: &'g mut Graph,
    /// The replaced node's name, which new names start with.
    pub base: String,
    /// The element type of the values added.
    pub dtype: DType,
    /// The rule recorded on every node added.
    pub rule: &'static str,
}

impl Builder<'_> {
    /// Adds `op` on `inputs`, with one output of the builder's element type.
    pub fn add(&mut self, op: Op, suffix: &str, inputs: &[Option<ValueRef>]) -> ValueRef {
        self.add_outputs(op, suffix, inputs, 1)[0]
    }

    /// Adds `op` on `inputs`, with `count` outputs of the builder's element type.
    pub fn add_outputs(
        &mut self,
        op: Op,
        suffix: &str,
        inputs: &[Option<ValueRef>],
        count: usize,
    ) -> Vec<ValueRef> {
        let name = fresh_name(self.graph, &format!("{}_{suffix}", self.base));
        let names: Vec<String> = match count {
            1 => vec![name.clone()],
            _ => (0..count)
                .map(|k| fresh_name(self.graph, &format!("{name}_{k}")))
                .collect(),
        };
        let outputs = names
            .into_iter()
            .map(|name| Value {
                name,
                ty: ValueType::Tensor(TensorType {
                    dtype: self.dtype,
                    shape: None,
                }),
                known: None,
            })
            .collect();
        let node = self.graph.add_node(name, op, inputs, outputs);
        self.graph.dag[node].rules = vec![self.rule.to_string()];
        (0..count).map(|output| ValueRef { node, output }).collect()
    }

    /// Adds `op` on `inputs`, with one output of element type `dtype`.
    pub fn add_as(
        &mut self,
        dtype: DType,
        op: Op,
        suffix: &str,
        inputs: &[Option<ValueRef>],
    ) -> ValueRef {
        let own = std::mem::replace(&mut self.dtype, dtype);
        let value = self.add(op, suffix, inputs);
        self.dtype = own;
        value
    }

    /// An `i64` vector constant.
    pub fn ints(&mut self, values: &[i64], suffix: &str) -> Result<ValueRef, PassError> {
        let name = fresh_name(self.graph, &format!("{}_{suffix}", self.base));
        let tensor = Tensor::from_i64s(vec![values.len()], values)?;
        Ok(self.graph.add_const(&name, tensor))
    }

    /// An `i64` scalar constant.
    pub fn int(&mut self, value: i64, suffix: &str) -> Result<ValueRef, PassError> {
        let name = fresh_name(self.graph, &format!("{}_{suffix}", self.base));
        let tensor = Tensor::from_i64s(Vec::new(), &[value])?;
        Ok(self.graph.add_const(&name, tensor))
    }

    /// `Unsqueeze(x, axes)`.
    pub fn unsqueeze(&mut self, x: ValueRef, axes: &[i64]) -> Result<ValueRef, PassError> {
        let axes = self.ints(axes, "axes")?;
        Ok(self.add(Op::Unsqueeze, "unsqueeze", &[Some(x), Some(axes)]))
    }

    /// A scalar constant of the builder's element type.
    pub fn scalar(&mut self, value: f64, suffix: &str) -> Result<ValueRef, PassError> {
        let name = fresh_name(self.graph, &format!("{}_{suffix}", self.base));
        let tensor = Tensor::from_f64s(self.dtype, Vec::new(), &[value])?;
        Ok(self.graph.add_const(&name, tensor))
    }
}

/// A 2-D tensor transposed (any element width, 4-bit codes included).
pub fn transpose_2d(t: &Tensor) -> Option<Tensor> {
    let [rows, cols] = t.shape[..] else {
        return None;
    };
    let bits = t.dtype.bits();
    let get = |i: usize| -> u64 {
        match bits {
            4 => u64::from((t.data[i / 2] >> ((i % 2) * 4)) & 0xF),
            8 | 16 | 32 | 64 => {
                let w = bits / 8;
                let mut b = [0u8; 8];
                b[..w].copy_from_slice(&t.data[i * w..(i + 1) * w]);
                u64::from_le_bytes(b)
            }
            _ => 0,
        }
    };
    if !matches!(bits, 4 | 8 | 16 | 32 | 64) {
        return None;
    }
    let mut out = vec![0u8; t.data.len()];
    for r in 0..rows {
        for c in 0..cols {
            let (from, to) = (r * cols + c, c * rows + r);
            let v = get(from);
            match bits {
                4 => out[to / 2] |= (v as u8) << ((to % 2) * 4),
                _ => {
                    let w = bits / 8;
                    out[to * w..(to + 1) * w].copy_from_slice(&v.to_le_bytes()[..w]);
                }
            }
        }
    }
    Tensor::new(t.dtype, vec![cols, rows], Bytes::from(out)).ok()
}

/// The product op reading its B operand transposed, when B is read `[K, N]` today.
pub fn with_b_transposed(op: &Op) -> Option<Op> {
    match op {
        Op::MatMul => Some(Op::TransposedMatMul {
            trans_a: false,
            trans_b: true,
        }),
        Op::TransposedMatMul {
            trans_a,
            trans_b: false,
        } => Some(Op::TransposedMatMul {
            trans_a: *trans_a,
            trans_b: true,
        }),
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b: false,
        } => Some(Op::Gemm {
            alpha: *alpha,
            beta: *beta,
            trans_a: *trans_a,
            trans_b: true,
        }),
        _ => None,
    }
}
