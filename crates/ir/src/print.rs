//! Dumps of a graph: readable text (one node a line), Graphviz DOT, and JSON for tools.

use crate::graph::{Graph, Model, NodeId, ValueRef};
use crate::op::Op;
use crate::types::{Known, ValueType};
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::fmt::Write;

/// Constants with at most this many elements print their values inline.
const INLINE_VALUES: usize = 8;

/// Stable short names for values: `%k` for computed values, `@wk` for constants.
struct Names {
    names: HashMap<ValueRef, String>,
}

impl Names {
    fn new(graph: &Graph, order: &[NodeId]) -> Names {
        let (mut values, mut weights) = (0, 0);
        let mut names = HashMap::new();
        for &id in order {
            for output in 0..graph.node(id).outputs.len() {
                let name = if matches!(graph.node(id).op, Op::Const(_)) {
                    weights += 1;
                    format!("@w{}", weights - 1)
                } else {
                    values += 1;
                    format!("%{}", values - 1)
                };
                names.insert(ValueRef { node: id, output }, name);
            }
        }
        Names { names }
    }

    fn of(&self, v: Option<ValueRef>) -> &str {
        v.and_then(|v| self.names.get(&v))
            .map_or("_", String::as_str)
    }
}

fn order_of(graph: &Graph) -> Vec<NodeId> {
    // Dumps must work on graphs the verifier rejects, so a cycle falls back to id order.
    graph
        .topo_order()
        .unwrap_or_else(|_| graph.dag.node_indices().collect())
}

fn format_attributes(op: &Op) -> String {
    let attrs: Vec<String> = op
        .attributes()
        .into_iter()
        .filter(|(_, v)| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if attrs.is_empty() {
        String::new()
    } else {
        format!(" {{{}}}", attrs.join(", "))
    }
}

fn format_known(known: &Known) -> String {
    let items: Vec<String> = match known {
        Known::Ints(v) => v.iter().map(ToString::to_string).collect(),
        Known::Floats(v) => v.iter().map(|x| format!("{x}")).collect(),
    };
    format!("[{}]", items.join(", "))
}

fn write_graph(out: &mut String, graph: &Graph, indent: usize) {
    let pad = " ".repeat(indent);
    let order = order_of(graph);
    let names = Names::new(graph, &order);
    for &id in &order {
        let node = graph.node(id);
        let outputs: Vec<String> = node
            .outputs
            .iter()
            .enumerate()
            .map(|(i, v)| {
                format!(
                    "{}: {}",
                    names.of(Some(ValueRef {
                        node: id,
                        output: i
                    })),
                    v.ty
                )
            })
            .collect();
        let outputs = outputs.join(", ");
        match &node.op {
            Op::Input => {
                let _ = writeln!(out, "{pad}{outputs} = input \"{}\"", node.outputs[0].name);
            }
            Op::Const(tensor) => {
                let values = match &node.outputs[0].known {
                    Some(k) if tensor.len() <= INLINE_VALUES => format!(" {}", format_known(k)),
                    _ => String::new(),
                };
                let _ = writeln!(out, "{pad}{outputs} = const \"{}\"{values}", node.name);
            }
            Op::Fused(fused) => {
                let args: Vec<&str> = graph
                    .inputs_of(id)
                    .into_iter()
                    .map(|v| names.of(v))
                    .collect();
                let _ = writeln!(
                    out,
                    "{pad}{outputs} = Fused[{}]({})  # {} ({})",
                    fused.label(),
                    args.join(", "),
                    node.name,
                    fused.provenance.join(", ")
                );
                write_body(out, fused, &args, indent + 4);
            }
            op => {
                let args: Vec<&str> = graph
                    .inputs_of(id)
                    .into_iter()
                    .map(|v| names.of(v))
                    .collect();
                let rules = if node.rules.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", node.rules.join(", "))
                };
                let _ = writeln!(
                    out,
                    "{pad}{outputs} = {}({}){}  # {}{rules}",
                    op.name(),
                    args.join(", "),
                    format_attributes(op),
                    node.name
                );
                for (label, subgraph) in op.subgraphs() {
                    let _ = writeln!(out, "{pad}  {label}: graph \"{}\"", subgraph.name);
                    write_graph(out, subgraph, indent + 4);
                }
            }
        }
    }
    let results: Vec<String> = graph
        .outputs
        .iter()
        .map(|&v| format!("{} \"{}\"", names.of(Some(v)), graph.value(v).name))
        .collect();
    let _ = writeln!(out, "{pad}return {}", results.join(", "));
}

/// A fused node's body, one op a line: `$k` is the body's `k`-th value; inputs are shown as
/// the fused node's arguments.
fn write_body(out: &mut String, fused: &crate::fused::Fused, args: &[&str], indent: usize) {
    let pad = " ".repeat(indent);
    for (k, node) in fused.body.iter().enumerate() {
        let operands: Vec<String> = node
            .args
            .iter()
            .map(|a| match a {
                None => "_".to_string(),
                Some(crate::fused::Operand::Input(i)) => {
                    args.get(*i).copied().unwrap_or("?").to_string()
                }
                Some(crate::fused::Operand::Node(j)) => format!("${j}"),
            })
            .collect();
        let _ = writeln!(
            out,
            "{pad}${k} = {}({}){}",
            node.op.name(),
            operands.join(", "),
            format_attributes(&node.op)
        );
    }
}

/// The readable text form: one line per node, e.g.
/// `%12: f32[N,64,56,56] = Conv(%11, @w3, @w4) {pads=[1,1,1,1], strides=[1,1]}  # conv2`.
pub fn to_text(model: &Model) -> String {
    let mut out = format!(
        "graph \"{}\" (opset {}, ir_version {}, producer \"{}\")\n",
        model.graph.name, model.opset, model.ir_version, model.producer
    );
    write_graph(&mut out, &model.graph, 2);
    out
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The Graphviz DOT form: one box per node, edges labelled with the value's type.
pub fn to_dot(model: &Model) -> String {
    let graph = &model.graph;
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n  edge [fontname=\"monospace\", fontsize=9];\n",
        dot_escape(&graph.name)
    );
    for id in order_of(graph) {
        let node = graph.node(id);
        let (label, style) = match &node.op {
            Op::Input => (
                format!("input\\n{}", dot_escape(&node.outputs[0].name)),
                ", shape=ellipse",
            ),
            Op::Const(_) => (
                format!("const\\n{}", dot_escape(&node.name)),
                ", shape=note, color=gray",
            ),
            Op::Fused(fused) => (
                format!(
                    "Fused\\n{}\\n{}",
                    dot_escape(&fused.label()),
                    dot_escape(&node.name)
                ),
                ", style=rounded",
            ),
            op => (format!("{}\\n{}", op.name(), dot_escape(&node.name)), ""),
        };
        let _ = writeln!(out, "  n{} [label=\"{label}\"{style}];", id.index());
        for input in graph.inputs_of(id).into_iter().flatten() {
            let _ = writeln!(
                out,
                "  n{} -> n{} [label=\"{}\"];",
                input.node.index(),
                id.index(),
                dot_escape(&graph.value(input).ty.to_string())
            );
        }
    }
    for (i, output) in graph.outputs.iter().enumerate() {
        let _ = writeln!(
            out,
            "  out{i} [label=\"output\\n{}\", shape=ellipse];\n  n{} -> out{i} [label=\"{}\"];",
            dot_escape(&graph.value(*output).name),
            output.node.index(),
            dot_escape(&graph.value(*output).ty.to_string())
        );
    }
    out.push_str("}\n");
    out
}

fn type_json(ty: &ValueType) -> Json {
    json!({"text": ty.to_string(), "structured": ty})
}

fn graph_json(graph: &Graph) -> Json {
    let order = order_of(graph);
    let names = Names::new(graph, &order);
    let nodes: Vec<Json> = order
        .iter()
        .map(|&id| {
            let node = graph.node(id);
            let outputs: Vec<Json> = node
                .outputs
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    json!({
                        "id": names.of(Some(ValueRef { node: id, output: i })),
                        "name": v.name,
                        "type": type_json(&v.ty),
                        "known": v.known.as_ref().map(format_known),
                    })
                })
                .collect();
            let subgraphs: serde_json::Map<String, Json> = node
                .op
                .subgraphs()
                .into_iter()
                .map(|(label, g)| (label.to_string(), graph_json(g)))
                .collect();
            json!({
                "name": node.name,
                "op": node.op.name(),
                "attributes": node.op.attributes(),
                "inputs": graph.inputs_of(id).into_iter().map(|v| v.map(|v| names.of(Some(v)).to_string())).collect::<Vec<_>>(),
                "outputs": outputs,
                "subgraphs": subgraphs,
            })
        })
        .collect();
    json!({
        "name": graph.name,
        "inputs": graph.inputs.iter().map(|&id| names.of(Some(ValueRef { node: id, output: 0 })).to_string()).collect::<Vec<_>>(),
        "outputs": graph.outputs.iter().map(|&v| names.of(Some(v)).to_string()).collect::<Vec<_>>(),
        "nodes": nodes,
    })
}

/// The JSON form: model metadata and every node with its op, attributes, inputs and typed outputs.
pub fn to_json(model: &Model) -> Json {
    json!({
        "format": "sparkc-ir",
        "version": 1,
        "opset": model.opset,
        "ir_version": model.ir_version,
        "producer": model.producer,
        "graph": graph_json(&model.graph),
    })
}
