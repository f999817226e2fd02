//! Fusion into bodies: a contraction or reduction with the elementwise ops after it, and
//! chains of elementwise ops of any length (with broadcasting), each become one `Fused` node
//! whose body is the expression DAG of the ops it replaces.
//!
//! A node joins the group of the value it reads when that value has no other reader and is not
//! a graph output, so no intermediate is both fused away and needed elsewhere. An epilogue
//! after a contraction or reduction must keep the anchor's shape (a broadcast that widens the
//! result would make the kernel write more than its product).

use crate::edit::{readers, replace_uses};
use crate::manager::{Pass, PassError};
use sparkc_ir::fused::{is_contraction, is_elementwise};
use sparkc_ir::{BodyNode, Fused, Graph, NodeId, Op, Operand, ValueRef};
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

fn float_output(graph: &Graph, id: NodeId) -> bool {
    let node = graph.node(id);
    node.outputs.len() == 1
        && node.outputs[0]
            .ty
            .as_tensor()
            .is_some_and(|t| t.dtype.is_float())
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
        let mut groups: Vec<Group> = Vec::new();
        let mut root_of: HashMap<NodeId, usize> = HashMap::new();
        for &id in &order {
            let op = &graph.node(id).op;
            if !float_output(graph, id) {
                continue;
            }
            let role = if is_elementwise(op) {
                Anchor::None
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
                let group = &groups[g];
                let fits = match (group.anchor, role) {
                    (Anchor::None, _) => true,
                    (_, Anchor::None) => graph.value(*v).ty == *out_ty,
                    _ => false,
                };
                (v.output == 0
                    && fits
                    && readers(graph, *v).len() == 1
                    && !graph.outputs.contains(v))
                .then_some(g)
            };
            let joined = match role {
                Anchor::Contraction => None,
                _ => graph.inputs_of(id).iter().flatten().find_map(joinable),
            };
            let g = match joined {
                Some(g) => {
                    root_of.retain(|_, r| *r != g);
                    groups[g].nodes.push(id);
                    if role != Anchor::None {
                        groups[g].anchor = role;
                    }
                    g
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
