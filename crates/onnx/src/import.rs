//! Graph import: initializers, inputs, nodes and subgraphs into an IR graph, names resolved
//! through nested scopes (a subgraph's reference to an outer value becomes a captured input).

use crate::error::{ImportError, Result};
use crate::ops::{convert, sources, Pending, Source};
use crate::tensor::{tensor_from_proto, value_type, ExternalFiles};
use onnx_protobuf::{GraphProto, NodeProto};
use sparkc_ir::op::Op;
use sparkc_ir::{DType, Graph, TensorType, Value, ValueRef, ValueType};
use std::collections::{HashMap, HashSet};

/// State shared while importing one model.
pub struct Importer<'a> {
    /// Version of the default-domain opset.
    pub opset: i64,
    /// External data files, mapped once each.
    pub external: &'a mut ExternalFiles,
}

fn placeholder(name: &str) -> Value {
    Value {
        name: name.to_string(),
        ty: ValueType::Tensor(TensorType {
            dtype: DType::F32,
            shape: None,
        }),
        known: None,
    }
}

/// The name used for a node in messages: its own, else its first output, else op and position.
pub fn node_label(node: &NodeProto, index: usize) -> String {
    if !node.name.is_empty() {
        node.name.clone()
    } else if let Some(output) = node.output.iter().find(|o| !o.is_empty()) {
        output.clone()
    } else {
        format!("{}#{index}", node.op_type)
    }
}

/// Makes a subgraph's inputs its `formal` parameters followed by `captures` in that order.
fn align_captures(graph: &mut Graph, formal: usize, captures: &[String]) {
    let existing: HashMap<String, _> = graph.inputs[formal..]
        .iter()
        .map(|&id| (graph.node(id).name.clone(), id))
        .collect();
    let mut aligned = graph.inputs[..formal].to_vec();
    for name in captures {
        match existing.get(name) {
            Some(&id) => aligned.push(id),
            None => {
                let v = graph.add_input(name, placeholder(name).ty);
                aligned.push(v.node);
            }
        }
    }
    graph.inputs = aligned;
}

impl Importer<'_> {
    fn node_error(&self, label: &str, node: &NodeProto, message: String) -> ImportError {
        ImportError::Node {
            node: label.to_string(),
            op: node.op_type.clone(),
            opset: self.opset,
            message,
        }
    }

    /// Imports a graph; `outer` holds the names of enclosing scopes. Returns the graph and the
    /// outer names it captures, in the order its capture inputs were added.
    pub fn graph(
        &mut self,
        proto: &mut GraphProto,
        outer: &[&HashSet<String>],
        subgraph: bool,
    ) -> Result<(Graph, Vec<String>)> {
        let mut graph = Graph::new(proto.name.clone());
        let mut local: HashMap<String, ValueRef> = HashMap::new();
        for init in proto.initializer.iter_mut() {
            let name = init.name.clone();
            let tensor =
                tensor_from_proto(init, self.external).map_err(|message| ImportError::Value {
                    what: "initializer",
                    name: name.clone(),
                    message,
                })?;
            local.insert(name.clone(), graph.add_const(&name, tensor));
        }
        if !proto.sparse_initializer.is_empty() {
            return Err(ImportError::Model(
                "sparse initializers are not supported".into(),
            ));
        }
        for input in &proto.input {
            if local.contains_key(&input.name) {
                continue; // An initializer also listed as an input (IR < 4) is a constant.
            }
            let ty = match (input.type_.as_ref(), subgraph) {
                (Some(t), _) => value_type(&input.name, t),
                (None, true) => Ok(placeholder(&input.name).ty),
                (None, false) => Err("the input has no type".to_string()),
            }
            .map_err(|message| ImportError::Value {
                what: "input",
                name: input.name.clone(),
                message,
            })?;
            local.insert(input.name.clone(), graph.add_input(&input.name, ty));
        }
        let mut defined: HashSet<String> = local.keys().cloned().collect();
        defined.extend(
            proto
                .node
                .iter()
                .flat_map(|n| n.output.iter().filter(|o| !o.is_empty()).cloned()),
        );
        let mut scopes = outer.to_vec();
        scopes.push(&defined);

        let mut pending = Vec::new();
        for (index, node) in proto.node.iter_mut().enumerate() {
            let label = node_label(node, index);
            if node.domain == "ai.sparkc" {
                let converted = crate::ops::convert_sparkc(node, &label)
                    .map_err(|m| self.node_error(&label, node, m))?;
                pending.extend(converted.into_iter().map(|p| (index, p)));
                continue;
            }
            if node.domain == crate::contrib::DOMAIN {
                let constants = |name: &str| {
                    let v = local.get(name)?;
                    match &graph.node(v.node).op {
                        Op::Const(t) => Some(t.clone()),
                        _ => None,
                    }
                };
                let converted = crate::contrib::convert(node, &label, &constants)
                    .map_err(|m| self.node_error(&label, node, m))?;
                pending.extend(converted.into_iter().map(|p| (index, p)));
                continue;
            }
            if !(node.domain.is_empty() || node.domain == "ai.onnx") {
                return Err(self.node_error(
                    &label,
                    node,
                    format!(
                        "op '{}' of domain '{}' is not supported",
                        node.op_type, node.domain
                    ),
                ));
            }
            let converted = match node.op_type.as_str() {
                "If" | "Loop" | "Scan" | "SequenceMap" => {
                    self.control_flow(node, &label, &scopes)?
                }
                "Constant" => {
                    let tensor = constant(node).map_err(|m| self.node_error(&label, node, m))?;
                    let output = node.output.first().cloned().unwrap_or_default();
                    vec![Pending {
                        name: output.clone(),
                        op: Op::Const(tensor),
                        inputs: Vec::new(),
                        outputs: vec![output],
                    }]
                }
                _ => convert(node, &label, self.opset)
                    .map_err(|m| self.node_error(&label, node, m))?,
            };
            pending.extend(converted.into_iter().map(|p| (index, p)));
        }

        let mut wiring = Vec::new();
        for (index, p) in pending {
            let outputs = p.outputs.iter().map(|o| placeholder(o)).collect();
            let id = match p.op {
                Op::Const(tensor) => graph.add_const(&p.name, tensor).node,
                op => graph.add_node(p.name.clone(), op, &vec![None; p.inputs.len()], outputs),
            };
            for (slot, name) in p.outputs.iter().enumerate() {
                if name.is_empty() {
                    continue;
                }
                if local
                    .insert(
                        name.clone(),
                        ValueRef {
                            node: id,
                            output: slot,
                        },
                    )
                    .is_some()
                {
                    return Err(self.node_error(
                        &p.name,
                        &proto.node[index],
                        format!("value '{name}' is produced twice"),
                    ));
                }
            }
            wiring.push((index, id, p.inputs));
        }
        let mut captures: Vec<String> = Vec::new();
        let mut resolve = |graph: &mut Graph, name: &str| -> Option<ValueRef> {
            if let Some(&v) = local.get(name) {
                return Some(v);
            }
            outer.iter().any(|scope| scope.contains(name)).then(|| {
                let v = graph.add_input(name, placeholder(name).ty);
                local.insert(name.to_string(), v);
                captures.push(name.to_string());
                v
            })
        };
        for (index, id, inputs) in wiring {
            for (slot, source) in inputs.into_iter().enumerate() {
                let value = match source {
                    Source::Absent => continue,
                    Source::Const(tensor) => {
                        let name = format!("{}::input{slot}", graph.node(id).name);
                        graph.add_const(&name, tensor)
                    }
                    Source::Name(name) => resolve(&mut graph, &name).ok_or_else(|| {
                        let node = &proto.node[index];
                        self.node_error(
                            &graph.node(id).name,
                            node,
                            format!("input '{name}' is never produced: it is not a graph input, an initializer or a node output"),
                        )
                    })?,
                };
                graph.dag.add_edge(
                    value.node,
                    id,
                    sparkc_ir::Edge {
                        output: value.output,
                        input: slot,
                    },
                );
            }
        }
        for output in &proto.output {
            let v = resolve(&mut graph, &output.name).ok_or_else(|| ImportError::Value {
                what: "output",
                name: output.name.clone(),
                message: "is never produced by any node, input or initializer".into(),
            })?;
            graph.outputs.push(v);
        }
        if subgraph {
            // Captures were appended to the inputs as they were met; keep them after the formal ones.
            let formal = graph.inputs.len() - captures.len();
            align_captures(&mut graph, formal, &captures);
        }
        Ok((graph, captures))
    }

    fn control_flow(
        &mut self,
        node: &mut NodeProto,
        label: &str,
        scopes: &[&HashSet<String>],
    ) -> Result<Vec<Pending>> {
        let subgraph = |importer: &mut Self,
                        name: &str,
                        node: &mut NodeProto|
         -> Result<(Graph, Vec<String>)> {
            let position = node
                .attribute
                .iter()
                .position(|a| a.name == name)
                .ok_or_else(|| {
                    importer.node_error(
                        label,
                        node,
                        format!("required attribute '{name}' is missing"),
                    )
                })?;
            let mut proto = node.attribute[position].g.take().ok_or_else(|| {
                importer.node_error(label, node, format!("attribute '{name}' must be a graph"))
            })?;
            importer.graph(&mut proto, scopes, true)
        };
        let mut inputs = sources(node);
        let op = if node.op_type == "If" {
            let (mut then_branch, then_caps) = subgraph(self, "then_branch", node)?;
            let (mut else_branch, else_caps) = subgraph(self, "else_branch", node)?;
            let mut union = then_caps;
            for name in else_caps {
                if !union.contains(&name) {
                    union.push(name);
                }
            }
            for branch in [&mut then_branch, &mut else_branch] {
                let formal = branch.inputs.len()
                    - branch
                        .inputs
                        .iter()
                        .filter(|&&id| union.contains(&branch.node(id).name))
                        .count();
                if formal != 0 {
                    return Err(self.node_error(
                        label,
                        node,
                        "If branches must not declare inputs".into(),
                    ));
                }
                align_captures(branch, 0, &union);
            }
            inputs.truncate(1);
            inputs.extend(union.into_iter().map(Source::Name));
            Op::If {
                then_branch: Box::new(then_branch),
                else_branch: Box::new(else_branch),
            }
        } else if node.op_type == "SequenceMap" {
            let (body, captures) = subgraph(self, "body", node)?;
            let op = Op::SequenceMap {
                body: Box::new(body),
                captured: captures.len(),
            };
            inputs.extend(captures.into_iter().map(Source::Name));
            op
        } else if node.op_type == "Scan" {
            let batched = self.opset < 9;
            let (body, captures) = subgraph(self, "body", node)?;
            let a = crate::attrs::Attrs::new(node);
            let attr = |r: Result<Vec<i64>, String>| {
                r.map_err(|message| self.node_error(label, node, message))
            };
            let num_scan_inputs = a
                .req_int("num_scan_inputs")
                .map_err(|message| self.node_error(label, node, message))?;
            let op = Op::Scan {
                body: Box::new(body),
                num_scan_inputs,
                captured: captures.len(),
                batched,
                scan_input_axes: attr(a.ints("scan_input_axes"))?,
                scan_input_directions: attr(a.ints(if batched {
                    "directions"
                } else {
                    "scan_input_directions"
                }))?,
                scan_output_axes: attr(a.ints("scan_output_axes"))?,
                scan_output_directions: attr(a.ints("scan_output_directions"))?,
            };
            inputs.extend(captures.into_iter().map(Source::Name));
            op
        } else {
            let (body, captures) = subgraph(self, "body", node)?;
            let carried = node.input.len().saturating_sub(2);
            let formal = body.inputs.len() - captures.len();
            if formal != carried + 2 {
                return Err(self.node_error(
                    label,
                    node,
                    format!(
                        "body takes {formal} inputs, expected 2 + {carried} loop-carried values"
                    ),
                ));
            }
            while inputs.len() < 2 {
                inputs.push(Source::Absent);
            }
            inputs.extend(captures.into_iter().map(Source::Name));
            Op::Loop {
                body: Box::new(body),
                carried,
            }
        };
        Ok(vec![Pending {
            name: label.to_string(),
            op,
            inputs,
            outputs: node.output.clone(),
        }])
    }
}

/// The tensor of a `Constant` node, from whichever `value*` attribute it has.
fn constant(node: &mut NodeProto) -> Result<sparkc_ir::Tensor, String> {
    use sparkc_ir::Tensor;
    let attr = node
        .attribute
        .first_mut()
        .ok_or("a Constant needs a value attribute")?;
    let f32s = |v: &[f32], shape: Vec<usize>| {
        Tensor::new(
            DType::F32,
            shape,
            v.iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<_>>()
                .into(),
        )
    };
    let result = match attr.name.as_str() {
        "value" => {
            let mut t = attr.t.take().ok_or("attribute 'value' must be a tensor")?;
            return tensor_from_proto(&mut t, &mut ExternalFiles::new(None));
        }
        "value_float" => f32s(&[attr.f], vec![]),
        "value_floats" => f32s(&attr.floats, vec![attr.floats.len()]),
        "value_int" => Tensor::from_i64s(vec![], &[attr.i]),
        "value_ints" => Tensor::from_i64s(vec![attr.ints.len()], &attr.ints),
        "value_string" | "value_strings" => return Err("string constants are not supported".into()),
        "sparse_value" => return Err("sparse constants are not supported".into()),
        other => return Err(format!("unknown attribute '{other}'")),
    };
    result.map_err(|e| e.to_string())
}
