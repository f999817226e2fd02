//! IR back to ONNX: `sparkc optimize` writes the optimized graph as a model that Netron and
//! onnxruntime can read. Ops of the IR that ONNX lacks (fused nodes, transposed products,
//! channels-last convolutions and pooling) are
//! nodes of the `ai.sparkc` domain, each with a model-local function giving its body in
//! standard ops; `RoundToBlocks` (block-scaled rounding of activations) has no function, so a
//! model holding it is read back by sparkc only.

use crate::tensor::dtype_to_onnx;
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_shape_proto::{dimension, Dimension};
use onnx_protobuf::type_proto::{Tensor as TensorTypeProto, Value as TypeValue};
use onnx_protobuf::{
    AttributeProto, FunctionProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use protobuf::{EnumOrUnknown, Message, MessageField};
use sparkc_ir::op::{Binary, ConvAttrs, Layout, PoolAttrs};
use sparkc_ir::{DType, Dim, Graph, Model, Op, Operand, Tensor, ValueRef, ValueType};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// The domain of sparkc's own ops.
pub const DOMAIN: &str = "ai.sparkc";

/// The default-domain opset exported models declare (at least; a newer source opset is kept).
pub const EXPORT_OPSET: i64 = 24;

/// Why a graph could not be written as ONNX.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A node with no ONNX form.
    #[error("node '{node}' ({op}): {message}")]
    Node {
        /// The node's name.
        node: String,
        /// Its op.
        op: String,
        /// What is missing.
        message: String,
    },
    /// The graph itself is invalid.
    #[error(transparent)]
    Ir(#[from] sparkc_ir::IrError),
    /// Encoding or writing failed.
    #[error("{0}")]
    Write(String),
}

type Result<T> = std::result::Result<T, ExportError>;

fn error(node: &str, op: &Op, message: impl Into<String>) -> ExportError {
    ExportError::Node {
        node: node.to_string(),
        op: op.name(),
        message: message.into(),
    }
}

fn tensor_proto(name: &str, tensor: &Tensor) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: tensor.shape.iter().map(|&d| d as i64).collect(),
        data_type: dtype_to_onnx(tensor.dtype),
        raw_data: tensor.data.to_vec(),
        ..TensorProto::default()
    }
}

fn type_proto(ty: &ValueType) -> TypeProto {
    let value = match ty {
        ValueType::Tensor(t) => TypeValue::TensorType(TensorTypeProto {
            elem_type: dtype_to_onnx(t.dtype),
            shape: match &t.shape {
                None => MessageField::none(),
                Some(dims) => MessageField::some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: match d {
                                Dim::Dynamic => None,
                                d => Some(match d.as_const() {
                                    Some(n) => dimension::Value::DimValue(n),
                                    None => dimension::Value::DimParam(d.to_string()),
                                }),
                            },
                            ..Dimension::default()
                        })
                        .collect(),
                    ..TensorShapeProto::default()
                }),
            },
            ..TensorTypeProto::default()
        }),
        ValueType::Sequence(inner) => {
            TypeValue::SequenceType(onnx_protobuf::type_proto::Sequence {
                elem_type: MessageField::some(type_proto(inner)),
                ..Default::default()
            })
        }
        ValueType::Optional(inner) => {
            TypeValue::OptionalType(onnx_protobuf::type_proto::Optional {
                elem_type: MessageField::some(type_proto(inner)),
                ..Default::default()
            })
        }
    };
    TypeProto {
        value: Some(value),
        ..TypeProto::default()
    }
}

fn value_info(name: &str, ty: &ValueType) -> ValueInfoProto {
    ValueInfoProto {
        name: name.to_string(),
        type_: MessageField::some(type_proto(ty)),
        ..ValueInfoProto::default()
    }
}

/// Attributes written only when they differ from this value: newer opsets added them, so
/// writing the default would make the model invalid for readers of the opset it declares.
const OMITTED_DEFAULTS: &[(&str, &str, f64)] = &[
    ("Attention", "is_causal", 0.0),
    ("Attention", "kv_num_heads", 0.0),
    ("Attention", "q_num_heads", 0.0),
    ("Attention", "qk_matmul_output_mode", 0.0),
    ("Attention", "softcap", 0.0),
    ("Attention", "left_window_size", -1.0),
    ("Attention", "right_window_size", -1.0),
];

fn is_omitted_default(op: &str, key: &str, value: &serde_json::Value) -> bool {
    let number = match value {
        serde_json::Value::Bool(b) => Some(f64::from(u8::from(*b))),
        v => v.as_f64(),
    };
    OMITTED_DEFAULTS
        .iter()
        .any(|&(o, k, d)| o == op && k == key && number == Some(d))
}

/// The ONNX spelling of an attribute the IR names differently.
fn attribute_name(key: &str) -> &str {
    match key {
        "trans_a" => "transA",
        "trans_b" => "transB",
        other => other,
    }
}

fn attribute(key: &str, value: &serde_json::Value) -> Option<AttributeProto> {
    use serde_json::Value as J;
    let mut a = AttributeProto {
        name: attribute_name(key).to_string(),
        ..AttributeProto::default()
    };
    let dtype_key = matches!(
        key,
        "to" | "stash_type" | "dtype" | "output_datatype" | "output_dtype" | "softmax_precision"
    );
    let kind = match value {
        J::Null => return None,
        J::Bool(b) => {
            a.i = i64::from(*b);
            AttributeType::INT
        }
        J::Number(n) if n.is_i64() => {
            a.i = n.as_i64().unwrap_or_default();
            AttributeType::INT
        }
        J::Number(n) => {
            a.f = n.as_f64().unwrap_or_default() as f32;
            AttributeType::FLOAT
        }
        J::String(s) if dtype_key => {
            a.i = i64::from(dtype_to_onnx(DType::from_name(s)?));
            AttributeType::INT
        }
        J::String(s) => {
            a.s = s.as_bytes().to_vec();
            AttributeType::STRING
        }
        J::Array(items) if items.iter().all(|v| v.is_i64()) && !items.is_empty() => {
            a.ints = items.iter().filter_map(|v| v.as_i64()).collect();
            AttributeType::INTS
        }
        J::Array(items) if items.iter().all(|v| v.is_number()) && !items.is_empty() => {
            a.floats = items
                .iter()
                .filter_map(|v| v.as_f64())
                .map(|f| f as f32)
                .collect();
            AttributeType::FLOATS
        }
        J::Array(items) if items.iter().all(|v| v.is_string()) && !items.is_empty() => {
            a.strings = items
                .iter()
                .filter_map(|v| v.as_str())
                .map(|s| s.as_bytes().to_vec())
                .collect();
            AttributeType::STRINGS
        }
        J::Array(_) => return None,
        J::Object(_) => return None,
    };
    a.type_ = EnumOrUnknown::new(kind);
    Some(a)
}

/// Fields of control-flow ops that record how the IR lays out captured inputs; ONNX has no
/// such attributes (subgraphs name outer values directly).
const SUBGRAPH_BOOKKEEPING: &[&str] = &["carried", "captured", "batched"];

/// Builds model-local functions for sparkc ops, one per distinct op.
#[derive(Default)]
struct Functions {
    protos: Vec<FunctionProto>,
    /// Whether a node of the `ai.sparkc` domain without a function (RoundToBlocks) was written.
    custom: bool,
    by_key: HashMap<String, String>,
    opset: i64,
}

impl Functions {
    /// The op type naming `op`'s function, made on first use.
    fn function(&mut self, node: &str, op: &Op, inputs: usize) -> Result<String> {
        let key = format!("{op:?}/{inputs}");
        if let Some(name) = self.by_key.get(&key) {
            return Ok(name.clone());
        }
        let base = match op {
            Op::Fused(_) => "Fused",
            Op::TransposedMatMul { .. } => "TransposedMatMul",
            other => &format!("{}Nhwc", other.name()),
        };
        let name = format!("{base}{}", self.protos.len());
        let inputs_names: Vec<String> = (0..inputs).map(|i| format!("x{i}")).collect();
        let mut nodes = Vec::new();
        let output = match op {
            Op::Fused(f) => {
                for (k, b) in f.body.iter().enumerate() {
                    let args: Vec<String> = b
                        .args
                        .iter()
                        .map(|a| match a {
                            None => String::new(),
                            Some(Operand::Input(i)) => inputs_names[*i].clone(),
                            Some(Operand::Node(j)) => format!("t{j}"),
                        })
                        .collect();
                    nodes.push(self.node(
                        &format!("{name}_{k}"),
                        &b.op,
                        args,
                        vec![format!("t{k}")],
                    )?);
                }
                format!("t{}", f.body.len().saturating_sub(1))
            }
            Op::TransposedMatMul { trans_a, trans_b } => {
                let mut operand = |i: usize, swap: bool| {
                    if swap {
                        let out = format!("s{i}");
                        nodes.push(swap_last_two(&inputs_names[i], &out, i));
                        out
                    } else {
                        inputs_names[i].clone()
                    }
                };
                let (a, b) = (operand(0, *trans_a), operand(1, *trans_b));
                nodes.push(NodeProto {
                    name: format!("{name}_matmul"),
                    op_type: "MatMul".to_string(),
                    input: vec![a, b],
                    output: vec!["y".to_string()],
                    ..NodeProto::default()
                });
                "y".to_string()
            }
            Op::Conv(_) | Op::MaxPool { .. } | Op::AveragePool { .. } => {
                // Channels last: the ONNX op between transposes (as Einsums, which need no
                // rank) of its image (and a convolution's weights) and of its result.
                let (nchw, transposed) = channels_first_twin(op)
                    .ok_or_else(|| error(node, op, "has no ONNX function form"))?;
                let mut args = inputs_names.clone();
                let equations = ["n...c->nc...", "o...i->oi..."];
                for (i, equation) in equations.iter().enumerate().take(transposed) {
                    args[i] = format!("{}f", inputs_names[i]);
                    nodes.push(einsum(equation, &inputs_names[i], &args[i], i));
                }
                nodes.push(self.node(&format!("{name}_op"), &nchw, args, vec!["yf".into()])?);
                nodes.push(einsum("nc...->n...c", "yf", "y", transposed));
                "y".to_string()
            }
            other => return Err(error(node, other, "has no ONNX function form")),
        };
        self.protos.push(FunctionProto {
            name: name.clone(),
            domain: DOMAIN.to_string(),
            input: inputs_names,
            output: vec![output],
            node: nodes,
            opset_import: vec![opset_id("", self.opset), opset_id(DOMAIN, 1)],
            ..FunctionProto::default()
        });
        self.by_key.insert(key, name.clone());
        Ok(name)
    }

    /// One node, as a standard op or a call of a sparkc function.
    fn node(
        &mut self,
        name: &str,
        op: &Op,
        inputs: Vec<String>,
        outputs: Vec<String>,
    ) -> Result<NodeProto> {
        let mut proto = NodeProto {
            name: name.to_string(),
            input: inputs,
            output: outputs,
            ..NodeProto::default()
        };
        match op {
            op if channels_first_twin(op).is_some() => {
                proto.op_type = self.function(name, op, proto.input.len())?;
                proto.domain = DOMAIN.to_string();
            }
            Op::Fused(_) | Op::TransposedMatMul { .. } => {
                proto.op_type = self.function(name, op, proto.input.len())?;
                proto.domain = DOMAIN.to_string();
            }
            Op::Scan { batched: true, .. } => {
                return Err(error(
                    name,
                    op,
                    format!(
                        "an opset-8 Scan (batched, with sequence_lens) has no form in opset {}",
                        self.opset
                    ),
                ))
            }
            op if !op.subgraphs().is_empty() => {
                // The subgraphs themselves are attached by `graph_proto`, which knows the scope.
                proto.op_type = op.name();
                proto.attribute = op
                    .attributes()
                    .iter()
                    .filter(|(k, _)| !SUBGRAPH_BOOKKEEPING.contains(&k.as_str()))
                    .filter_map(|(k, v)| attribute(k, v))
                    .collect();
            }
            Op::RoundToBlocks { .. } => {
                proto.op_type = op.name();
                proto.domain = DOMAIN.to_string();
                proto.attribute = op
                    .attributes()
                    .iter()
                    .filter_map(|(k, v)| attribute(k, v))
                    .collect();
                self.custom = true;
            }
            Op::Input | Op::Const(_) => return Err(error(name, op, "is not a node")),
            Op::Binary(Binary::BitShift { left }) => {
                proto.op_type = "BitShift".to_string();
                let direction = if *left { "LEFT" } else { "RIGHT" };
                proto.attribute.push(AttributeProto {
                    name: "direction".to_string(),
                    s: direction.as_bytes().to_vec(),
                    type_: EnumOrUnknown::new(AttributeType::STRING),
                    ..AttributeProto::default()
                });
            }
            Op::Optional { ty: Some(ty) } => {
                proto.op_type = op.name();
                proto.attribute.push(AttributeProto {
                    name: "type".to_string(),
                    tp: MessageField::some(type_proto(ty)),
                    type_: EnumOrUnknown::new(AttributeType::TYPE_PROTO),
                    ..AttributeProto::default()
                });
            }
            Op::ConstantOfShape { value } => {
                proto.op_type = op.name();
                proto.attribute.push(AttributeProto {
                    name: "value".to_string(),
                    t: MessageField::some(tensor_proto("value", value)),
                    type_: EnumOrUnknown::new(AttributeType::TENSOR),
                    ..AttributeProto::default()
                });
            }
            op => {
                proto.op_type = op.name();
                proto.attribute = op
                    .attributes()
                    .iter()
                    .filter(|(k, v)| !is_omitted_default(&proto.op_type, k, v))
                    .filter_map(|(k, v)| attribute(k, v))
                    .collect();
            }
        }
        Ok(proto)
    }
}

/// The channels-first form of a channels-last op, and how many of its leading inputs (image,
/// weights) are channels last; `None` for an op in ONNX's layout.
fn channels_first_twin(op: &Op) -> Option<(Op, usize)> {
    match op {
        Op::Conv(a) if !a.layout.is_nchw() => Some((
            Op::Conv(ConvAttrs {
                layout: Layout::Nchw,
                ..a.clone()
            }),
            2,
        )),
        Op::MaxPool {
            pool,
            storage_order,
        } if !pool.layout.is_nchw() => Some((
            Op::MaxPool {
                pool: PoolAttrs {
                    layout: Layout::Nchw,
                    ..pool.clone()
                },
                storage_order: *storage_order,
            },
            1,
        )),
        Op::AveragePool {
            pool,
            count_include_pad,
        } if !pool.layout.is_nchw() => Some((
            Op::AveragePool {
                pool: PoolAttrs {
                    layout: Layout::Nchw,
                    ..pool.clone()
                },
                count_include_pad: *count_include_pad,
            },
            1,
        )),
        _ => None,
    }
}

/// An Einsum swapping the last two axes (a Transpose would need the rank, which a function
/// body does not know).
fn swap_last_two(input: &str, output: &str, k: usize) -> NodeProto {
    einsum("...ij->...ji", input, output, k)
}

/// An Einsum of one input permuting its axes as `equation` says.
fn einsum(equation: &str, input: &str, output: &str, k: usize) -> NodeProto {
    NodeProto {
        name: format!("swap{k}"),
        op_type: "Einsum".to_string(),
        input: vec![input.to_string()],
        output: vec![output.to_string()],
        attribute: vec![AttributeProto {
            name: "equation".to_string(),
            s: equation.as_bytes().to_vec(),
            type_: EnumOrUnknown::new(AttributeType::STRING),
            ..AttributeProto::default()
        }],
        ..NodeProto::default()
    }
}

fn opset_id(domain: &str, version: i64) -> OperatorSetIdProto {
    OperatorSetIdProto {
        domain: domain.to_string(),
        version,
        ..OperatorSetIdProto::default()
    }
}

/// For an Attention whose mask broadcasts along the query axis (`[B,1,1,T]`), adds an Expand of
/// the mask to the query length and returns its name. The spec allows the broadcast, but
/// onnxruntime's kernel requires the mask's query axis to match.
fn expand_query_axis(
    graph: &Graph,
    id: sparkc_ir::NodeId,
    proto: &mut GraphProto,
) -> Option<String> {
    if !matches!(graph.node(id).op, Op::Attention(_)) {
        return None;
    }
    let inputs = graph.inputs_of(id);
    let (q, mask) = (inputs.first().copied()??, inputs.get(3).copied()??);
    let dims = |v: ValueRef| graph.value(v).ty.as_tensor()?.shape.clone();
    let (q_dims, mask_dims) = (dims(q)?, dims(mask)?);
    let queries = match q_dims.len() {
        4 => q_dims[2].as_const()?,
        3 => q_dims[1].as_const()?,
        _ => return None,
    };
    let rank = mask_dims.len();
    if rank < 2 || mask_dims[rank - 2].as_const() != Some(1) || queries == 1 {
        return None;
    }
    let mask_name = graph.value(mask).name.clone();
    let node = &graph.node(id).name;
    let shape_name = format!("{node}/mask_shape");
    let expanded = format!("{node}/mask_expanded");
    let mut target = vec![1i64; rank];
    target[rank - 2] = queries;
    proto.initializer.push(TensorProto {
        name: shape_name.clone(),
        dims: vec![rank as i64],
        data_type: dtype_to_onnx(DType::I64),
        raw_data: target.iter().flat_map(|d| d.to_le_bytes()).collect(),
        ..TensorProto::default()
    });
    proto.node.push(NodeProto {
        name: format!("{node}/expand_mask"),
        op_type: "Expand".to_string(),
        input: vec![mask_name, shape_name],
        output: vec![expanded.clone()],
        ..NodeProto::default()
    });
    Some(expanded)
}

/// How many trailing inputs of a control-flow node are captured outer values (the same count
/// for each of its subgraphs, whose last inputs stand for them).
fn captured_inputs(node: &str, op: &Op, inputs: usize) -> Result<usize> {
    let count = match op {
        Op::If { .. } => inputs.checked_sub(1),
        Op::Loop { carried, .. } => inputs.checked_sub(2 + carried),
        Op::Scan { captured, .. } | Op::SequenceMap { captured, .. } => Some(*captured),
        _ => Some(0),
    };
    count.filter(|&n| n <= inputs).ok_or_else(|| {
        error(
            node,
            op,
            format!("has {inputs} inputs, too few for its captures"),
        )
    })
}

/// The names values of `graph` are written under. A subgraph's last `captures.len()` inputs
/// take the names of the outer values they stand for; any other value keeps its own name,
/// suffixed where an enclosing scope already uses it (ONNX names are unique across scopes).
fn scope_names(
    graph: &Graph,
    captures: &[String],
    taken: &HashSet<String>,
) -> Result<HashMap<ValueRef, String>> {
    let formal = graph
        .inputs
        .len()
        .checked_sub(captures.len())
        .ok_or_else(|| {
            ExportError::Write(format!(
                "subgraph '{}' has {} inputs, fewer than its {} captures",
                graph.name,
                graph.inputs.len(),
                captures.len()
            ))
        })?;
    let mut names = HashMap::new();
    for (&id, outer) in graph.inputs[formal..].iter().zip(captures) {
        names.insert(
            ValueRef {
                node: id,
                output: 0,
            },
            outer.clone(),
        );
    }
    let own: HashSet<&str> = graph
        .dag
        .node_weights()
        .flat_map(|n| n.outputs.iter().map(|v| v.name.as_str()))
        .collect();
    for id in graph.dag.node_indices() {
        for (output, value) in graph.node(id).outputs.iter().enumerate() {
            let v = ValueRef { node: id, output };
            if names.contains_key(&v) {
                continue;
            }
            let (mut name, mut k) = (value.name.clone(), 0);
            while taken.contains(&name) || (k > 0 && own.contains(name.as_str())) {
                k += 1;
                name = format!("{}_{k}", value.name);
            }
            names.insert(v, name);
        }
    }
    Ok(names)
}

/// Whether two types are the same kind of value with the same element type, whatever their
/// shapes.
fn same_kind(a: &ValueType, b: &ValueType) -> bool {
    match (a, b) {
        (ValueType::Tensor(x), ValueType::Tensor(y)) => x.dtype == y.dtype,
        (ValueType::Sequence(x), ValueType::Sequence(y))
        | (ValueType::Optional(x), ValueType::Optional(y)) => same_kind(x, y),
        _ => false,
    }
}

/// Types to declare for the formal parameters of `subgraph`, run by `op` on `sources` of
/// `graph`, where the IR's would contradict the node: a loop-carried value the IR typed from
/// the body's result (an optional that becomes a sequence) is declared as the Loop's initial
/// value.
fn parameter_types(
    op: &Op,
    subgraph: &Graph,
    graph: &Graph,
    sources: &[Option<ValueRef>],
) -> Vec<ValueType> {
    let ir = |k: usize| subgraph.node(subgraph.inputs[k]).outputs[0].ty.clone();
    match op {
        Op::Loop { carried, .. } => (0..(2 + carried).min(subgraph.inputs.len()))
            .map(|k| match sources.get(k).copied().flatten() {
                Some(v) if k >= 2 && !same_kind(&graph.value(v).ty, &ir(k)) => {
                    graph.value(v).ty.clone()
                }
                _ => ir(k),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// `graph` as a `GraphProto`; for a subgraph, `captures` names the outer values its last
/// inputs stand for, `declared` overrides the types of its first formal inputs, and
/// `taken` holds the names of the enclosing scopes.
fn graph_proto(
    graph: &Graph,
    functions: &mut Functions,
    captures: &[String],
    declared: &[ValueType],
    taken: &HashSet<String>,
) -> Result<GraphProto> {
    let mut proto = GraphProto {
        name: graph.name.clone(),
        ..GraphProto::default()
    };
    let names = scope_names(graph, captures, taken)?;
    let name_of = |v: ValueRef| names.get(&v).cloned().unwrap_or_default();
    let formal = graph.inputs.len() - captures.len();
    for (k, &id) in graph.inputs[..formal].iter().enumerate() {
        let ty = declared.get(k).unwrap_or(&graph.node(id).outputs[0].ty);
        proto.input.push(value_info(
            &name_of(ValueRef {
                node: id,
                output: 0,
            }),
            ty,
        ));
    }
    let mut inner_taken: Option<HashSet<String>> = None;
    for id in graph.topo_order()? {
        let node = graph.node(id);
        match &node.op {
            Op::Input => {}
            Op::Const(tensor) => proto.initializer.push(tensor_proto(
                &name_of(ValueRef {
                    node: id,
                    output: 0,
                }),
                tensor,
            )),
            op => {
                let sources = graph.inputs_of(id);
                let mut inputs: Vec<String> = sources
                    .iter()
                    .map(|v| v.map(name_of).unwrap_or_default())
                    .collect();
                let captured = captured_inputs(&node.name, op, inputs.len())?;
                let outer = inputs.split_off(inputs.len() - captured);
                while inputs.last().is_some_and(String::is_empty) {
                    inputs.pop();
                }
                if let Some(expanded) = expand_query_axis(graph, id, &mut proto) {
                    inputs[3] = expanded;
                }
                let outputs = (0..node.outputs.len())
                    .map(|output| name_of(ValueRef { node: id, output }))
                    .collect();
                let mut node_proto = functions.node(&node.name, op, inputs, outputs)?;
                for (attribute, subgraph) in op.subgraphs() {
                    let inner = inner_taken.get_or_insert_with(|| {
                        taken
                            .iter()
                            .cloned()
                            .chain(names.values().cloned())
                            .collect()
                    });
                    let types = parameter_types(op, subgraph, graph, &sources);
                    let body = graph_proto(subgraph, functions, &outer, &types, inner)?;
                    node_proto.attribute.push(AttributeProto {
                        name: attribute.to_string(),
                        g: MessageField::some(body),
                        type_: EnumOrUnknown::new(AttributeType::GRAPH),
                        ..AttributeProto::default()
                    });
                }
                proto.node.push(node_proto);
            }
        }
    }
    for &v in &graph.outputs {
        proto
            .output
            .push(value_info(&name_of(v), &graph.value(v).ty));
    }
    Ok(proto)
}

/// The model as an ONNX `ModelProto`.
pub fn to_proto(model: &Model) -> Result<ModelProto> {
    let opset = model.opset.max(EXPORT_OPSET);
    let mut functions = Functions {
        opset,
        ..Functions::default()
    };
    let graph = graph_proto(&model.graph, &mut functions, &[], &[], &HashSet::new())?;
    let mut opsets = vec![opset_id("", opset)];
    if !functions.protos.is_empty() || functions.custom {
        opsets.push(opset_id(DOMAIN, 1));
    }
    Ok(ModelProto {
        ir_version: 10,
        producer_name: "sparkc".to_string(),
        producer_version: env!("CARGO_PKG_VERSION").to_string(),
        opset_import: opsets,
        graph: MessageField::some(graph),
        functions: functions.protos,
        ..ModelProto::default()
    })
}

/// Writes the model as an ONNX file.
pub fn save(model: &Model, path: &Path) -> Result<()> {
    let bytes = to_proto(model)?
        .write_to_bytes()
        .map_err(|e| ExportError::Write(format!("cannot encode the model: {e}")))?;
    std::fs::write(path, bytes)
        .map_err(|e| ExportError::Write(format!("cannot write {}: {e}", path.display())))
}
