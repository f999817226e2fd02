//! The graph: a petgraph stable graph of nodes, each an op with typed outputs.
//!
//! Nodes are ops (graph inputs and constants are nodes too, so every value has a producer);
//! edges carry values from one node's output to another node's input slot. A `StableGraph`
//! keeps node ids valid while passes add and remove nodes.

use crate::error::{IrError, Result};
use crate::op::Op;
use crate::tensor::Tensor;
use crate::types::{Known, TensorType, Value, ValueType};
use crate::Dim;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

/// Identifies a node; stays valid while other nodes are added or removed.
pub type NodeId = NodeIndex;

/// One output of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueRef {
    /// The producing node.
    pub node: NodeId,
    /// Which of its outputs.
    pub output: usize,
}

/// An edge: the producer's output slot feeding the consumer's input slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    /// Output slot of the source node.
    pub output: usize,
    /// Input slot of the target node.
    pub input: usize,
}

/// A node: an op, its name, its input count and its typed outputs.
#[derive(Clone, Debug)]
pub struct Node {
    /// Name in the source model (generated when the model gave none).
    pub name: String,
    /// The operation.
    pub op: Op,
    /// Number of input slots, omitted optional inputs included.
    pub arity: usize,
    /// Output values, in order.
    pub outputs: Vec<Value>,
    /// The rewrite rules and passes that built this node (empty for imported nodes).
    pub rules: Vec<String>,
}

/// A graph: nodes and edges, with its inputs and outputs in order.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// Name in the source model.
    pub name: String,
    /// Nodes and value edges.
    pub dag: StableDiGraph<Node, Edge>,
    /// The `Input` nodes, in signature order (for subgraphs: formal inputs, then captures).
    pub inputs: Vec<NodeId>,
    /// The graph's results.
    pub outputs: Vec<ValueRef>,
}

impl Graph {
    /// An empty graph.
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            ..Graph::default()
        }
    }

    /// Adds a node whose outputs are named and typed as given, wiring its inputs.
    pub fn add_node(
        &mut self,
        name: String,
        op: Op,
        inputs: &[Option<ValueRef>],
        outputs: Vec<Value>,
    ) -> NodeId {
        let id = self.dag.add_node(Node {
            name,
            op,
            arity: inputs.len(),
            outputs,
            rules: Vec::new(),
        });
        for (slot, input) in inputs.iter().enumerate() {
            if let Some(v) = input {
                self.dag.add_edge(
                    v.node,
                    id,
                    Edge {
                        output: v.output,
                        input: slot,
                    },
                );
            }
        }
        id
    }

    /// Adds a graph input of the given type.
    pub fn add_input(&mut self, name: &str, ty: ValueType) -> ValueRef {
        let value = Value {
            name: name.to_string(),
            ty,
            known: None,
        };
        let id = self.add_node(name.to_string(), Op::Input, &[], vec![value]);
        self.inputs.push(id);
        ValueRef {
            node: id,
            output: 0,
        }
    }

    /// Adds a constant node holding `tensor`.
    pub fn add_const(&mut self, name: &str, tensor: Tensor) -> ValueRef {
        let value = const_value(name, &tensor);
        let id = self.add_node(name.to_string(), Op::Const(tensor), &[], vec![value]);
        ValueRef {
            node: id,
            output: 0,
        }
    }

    /// The node with this id.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.dag[id]
    }

    /// The value a reference points at.
    pub fn value(&self, v: ValueRef) -> &Value {
        &self.dag[v.node].outputs[v.output]
    }

    /// The inputs of a node in slot order, `None` for omitted optional inputs.
    pub fn inputs_of(&self, id: NodeId) -> Vec<Option<ValueRef>> {
        let mut inputs = vec![None; self.dag[id].arity];
        for edge in self.dag.edges_directed(id, Direction::Incoming) {
            if let Some(slot) = inputs.get_mut(edge.weight().input) {
                *slot = Some(ValueRef {
                    node: edge.source(),
                    output: edge.weight().output,
                });
            }
        }
        inputs
    }

    /// Nodes in an order where every producer comes before its consumers.
    pub fn topo_order(&self) -> Result<Vec<NodeId>> {
        petgraph::algo::toposort(&self.dag, None).map_err(|cycle| {
            let node = &self.dag[cycle.node_id()];
            IrError::Node {
                node: node.name.clone(),
                op: node.op.name(),
                message: "the graph has a cycle through this node".to_string(),
            }
        })
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.dag.node_count()
    }

    /// Replaces an input with a constant, so that shapes depending on its value can be resolved.
    pub fn bind_input(&mut self, name: &str, tensor: Tensor) -> Result<()> {
        let position = self
            .inputs
            .iter()
            .position(|&id| self.dag[id].name == name)
            .ok_or_else(|| IrError::Graph(format!("graph has no input named '{name}'")))?;
        let id = self.inputs.remove(position);
        let node = &mut self.dag[id];
        node.outputs[0] = const_value(name, &tensor);
        node.op = Op::Const(tensor);
        Ok(())
    }
}

/// Constants up to this many elements carry their values for shape resolution.
pub const MAX_KNOWN_ELEMENTS: usize = 1024;

/// The typed value of a constant node, with its elements when small.
pub fn const_value(name: &str, tensor: &Tensor) -> Value {
    let known = if tensor.len() > MAX_KNOWN_ELEMENTS {
        None
    } else if tensor.dtype.is_float() {
        tensor.to_f64s().map(Known::Floats)
    } else {
        tensor
            .to_i64s()
            .map(|v| Known::Ints(v.into_iter().map(Dim::known).collect()))
    };
    let shape = tensor.shape.iter().map(|&d| Dim::known(d as i64)).collect();
    Value {
        name: name.to_string(),
        ty: ValueType::Tensor(TensorType::new(tensor.dtype, shape)),
        known,
    }
}

/// A whole model: the main graph and what the source file said about it.
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// The main graph.
    pub graph: Graph,
    /// Version of the default (`ai.onnx`) opset the model was written for.
    pub opset: i64,
    /// ONNX IR version of the file.
    pub ir_version: i64,
    /// The program that wrote the file.
    pub producer: String,
}
