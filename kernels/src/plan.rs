//! Picks a generator for each node of a graph and lowers the graph to one kernel per node.

use crate::cg::Gen;
use crate::target::{Sm, Target};
use crate::{
    attention, axis, conv, elementwise, emit, expr, gemm, loss, movement, quant, reduce, signal,
    stateful, Generated, KernelError, KernelInfo, Request, TensorSig,
};
use inkwell::context::Context;
use serde::Serialize;
use sparkc_ir::{FusedKind, Graph, NodeId, Op, ValueType};
use std::str::FromStr;

/// Arithmetic used for matrix products and convolutions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Precision {
    /// FP32 tensors multiply on tensor cores in TF32 with FP32 accumulation (the default).
    #[default]
    Tf32,
    /// Exact FP32 on CUDA cores.
    Fp32,
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Precision, String> {
        match s {
            "tf32" => Ok(Precision::Tf32),
            "fp32" => Ok(Precision::Fp32),
            other => Err(format!("unknown precision `{other}`; known: tf32, fp32")),
        }
    }
}

/// True for ops that only reinterpret their input's buffer (no kernel, no copy).
pub fn is_view(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Squeeze
            | Op::Unsqueeze
            | Op::Dropout { .. }
            | Op::BitCast { .. }
            | Op::Unary(sparkc_ir::op::Unary::Identity)
    )
}

/// Why view node `id` cannot be planned as a view of its input's buffer, if it cannot: its
/// output's shape must follow from the input shapes alone, and a Dropout must be the
/// identity (inference) with its mask unread.
fn view_problem(graph: &Graph, id: NodeId) -> Option<String> {
    let node = graph.node(id);
    let static_shape = node.outputs.first().is_some_and(|v| match &v.ty {
        ValueType::Tensor(t) => t
            .shape
            .as_ref()
            .is_some_and(|dims| dims.iter().all(|d| !d.is_dynamic())),
        _ => false,
    });
    if !static_shape {
        return Some(
            "its output's shape depends on tensor data (an input's values, such as a shape or \
             axes given at run time); a GPU plan needs shapes that follow from the input shapes"
                .into(),
        );
    }
    if !matches!(node.op, Op::Dropout { .. }) {
        return None;
    }
    let inputs = graph.inputs_of(id);
    // An absent input, or a constant of zeros: no training, or a ratio of zero.
    let zero = |slot: usize| {
        inputs
            .get(slot)
            .copied()
            .flatten()
            .is_none_or(|v| match &graph.node(v.node).op {
                Op::Const(c) => c.to_f64s().is_some_and(|v| v.iter().all(|&x| x == 0.0)),
                _ => false,
            })
    };
    let present = |slot: usize| inputs.get(slot).copied().flatten().is_some();
    let identity = zero(2) || (present(1) && zero(1));
    if !identity {
        return Some("training-mode Dropout (random masks) has no GPU kernel".into());
    }
    let mask_read = graph.outputs.iter().any(|v| v.node == id && v.output == 1)
        || graph
            .dag
            .edges_directed(id, petgraph::Direction::Outgoing)
            .any(|e| e.weight().output == 1);
    mask_read.then(|| "Dropout's mask output has no GPU kernel".into())
}

/// True for nodes that are not computed: inputs and constants.
pub fn is_leaf(op: &Op) -> bool {
    matches!(op, Op::Input | Op::Const(_))
}

fn sig(ty: &ValueType, what: &str) -> Gen<TensorSig> {
    let t = ty
        .as_tensor()
        .ok_or_else(|| KernelError::Unsupported(format!("{what} is not a tensor")))?;
    let shape = t
        .shape
        .clone()
        .ok_or_else(|| KernelError::Unsupported(format!("{what} has an unknown rank")))?;
    if shape.iter().any(|d| d.is_dynamic()) {
        return Err(KernelError::Unsupported(format!(
            "{what} has a data-dependent size"
        )));
    }
    Ok(TensorSig {
        dtype: t.dtype,
        shape,
    })
}

/// The request for one node.
pub fn request<'g>(
    graph: &'g Graph,
    id: NodeId,
    name: String,
    target: Target,
    precision: Precision,
) -> Gen<Request<'g>> {
    let node = graph.node(id);
    let mut inputs = Vec::with_capacity(node.arity);
    for (slot, v) in graph.inputs_of(id).into_iter().enumerate() {
        inputs.push(match v {
            Some(v) => Some(sig(&graph.value(v).ty, &format!("input {slot}"))?),
            None => None,
        });
    }
    let known_of = |v: Option<sparkc_ir::ValueRef>| v.and_then(|v| graph.value(v).known.as_ref());
    let known = graph
        .inputs_of(id)
        .into_iter()
        .map(|v| known_of(v).and_then(|k| k.as_i64s()))
        .collect();
    let known_floats = graph
        .inputs_of(id)
        .into_iter()
        .map(|v| known_of(v).and_then(|k| k.as_f64s()))
        .collect();
    let outputs = node
        .outputs
        .iter()
        .enumerate()
        .map(|(i, v)| sig(&v.ty, &format!("output {i}")))
        .collect::<Gen<Vec<_>>>()?;
    Ok(Request {
        name,
        node: node.name.clone(),
        op: &node.op,
        inputs,
        outputs,
        known,
        known_floats,
        target,
        precision,
    })
}

/// Generates the kernel of one request.
pub fn generate<'ctx>(cx: &'ctx Context, req: &Request) -> Gen<Generated<'ctx>> {
    match req.op {
        Op::Fused(f) => match f.kind() {
            FusedKind::Elementwise => elementwise::generate(cx, req, &f.body),
            FusedKind::Contraction => match f
                .body
                .iter()
                .find(|n| sparkc_ir::fused::is_contraction(&n.op))
            {
                Some(n) if matches!(n.op, Op::Conv(_)) => conv::generate(cx, req, &f.body),
                _ => gemm::generate(cx, req, &f.body),
            },
            FusedKind::Reduction => reduce::generate(cx, req, &f.body),
        },
        Op::ConstantOfShape { value } => elementwise::generate_fill(cx, req, value),
        Op::Range => elementwise::generate_range(cx, req),
        // CastLike is a Cast to its second input's type; Expand broadcasts input 0 to the
        // output shape.
        Op::CastLike {
            saturate,
            round_mode,
        } => {
            let cast = Op::Cast {
                to: req.outputs[0].dtype,
                saturate: *saturate,
                round_mode: round_mode.clone(),
            };
            let body = elementwise::single_op_body(&cast, 1, |_| true);
            elementwise::generate(cx, req, &body)
        }
        Op::Expand => {
            let identity = Op::Unary(sparkc_ir::op::Unary::Identity);
            elementwise::generate(
                cx,
                req,
                &elementwise::single_op_body(&identity, 1, |_| true),
            )
        }
        op if axis::handles(op) => axis::generate(cx, req),
        Op::RotaryEmbedding { .. } => attention::generate_rotary(cx, req),
        // A scale (and zero point) per index of `axis` does not broadcast as numpy aligns
        // shapes: the quantization kernel indexes it along its axis.
        Op::QuantizeLinear { .. } | Op::DequantizeLinear { .. } if per_axis_scale(req) => {
            quant::generate(cx, req)
        }
        op if expr::is_scalar_op(op) => {
            let body =
                elementwise::single_op_body(op, req.inputs.len(), |i| req.inputs[i].is_some());
            elementwise::generate(cx, req, &body)
        }
        op if gemm::handles(op) => gemm::generate(cx, req, &single(req)),
        Op::ConvTranspose(_) => conv::generate_transpose(cx, req, &single(req)),
        op if conv::handles(op) => conv::generate(cx, req, &single(req)),
        op if reduce::handles(op) => reduce::generate(cx, req, &single(req)),
        Op::Attention(_) => attention::generate(cx, req),
        op if movement::handles(op) => movement::generate(cx, req),
        op if quant::handles(op) => quant::generate(cx, req),
        op if signal::handles(op) => signal::generate(cx, req),
        op if loss::handles(op) => loss::generate(cx, req),
        op if stateful::handles(op) => stateful::generate(cx, req),
        other => Err(KernelError::Unsupported(format!(
            "{} has no GPU kernel yet",
            other.name()
        ))),
    }
}

/// True when a quantize or dequantize node's scale may hold more than one value.
fn per_axis_scale(req: &Request) -> bool {
    req.inputs
        .get(1)
        .and_then(|t| t.as_ref())
        .is_some_and(|scale| scale.numel().as_const() != Some(1))
}

fn single(req: &Request) -> Vec<sparkc_ir::BodyNode> {
    elementwise::single_op_body(req.op, req.inputs.len(), |i| req.inputs[i].is_some())
}

/// What to produce for each kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Only the description, for an architecture.
    Info(Sm),
    /// PTX for an architecture.
    Ptx(Sm),
    /// LLVM IR for an architecture, as generated (before optimization).
    Llvm(Sm),
}

/// One lowered node: its kernel's description and, if asked, its text.
#[derive(Clone, Debug, Serialize)]
pub struct Lowered {
    /// The kernel.
    pub info: KernelInfo,
    /// PTX or LLVM IR (empty for [`Output::Info`]).
    #[serde(skip)]
    pub text: String,
}

/// A view: a node that reinterprets its input's buffer and gets no kernel.
#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    /// The node's name.
    pub node: String,
    /// The op.
    pub op: String,
}

/// The kernels of a graph.
#[derive(Clone, Debug, Serialize)]
pub struct Lowering {
    /// One per computed node, in execution order.
    pub kernels: Vec<Lowered>,
    /// Views: nodes that reinterpret a buffer and need no kernel.
    pub views: Vec<Skipped>,
}

/// Lowers every computed node of `graph` (or only the node named `only`).
pub fn lower_graph(
    graph: &Graph,
    output: Output,
    precision: Precision,
    only: Option<&str>,
) -> Result<Lowering, KernelError> {
    let sm = match output {
        Output::Info(sm) | Output::Ptx(sm) | Output::Llvm(sm) => sm,
    };
    let max_shared = sm.info().max_shared_per_block;
    let order = graph
        .topo_order()
        .map_err(|e| KernelError::Unsupported(e.to_string()))?;
    let mut kernels = Vec::new();
    let mut views = Vec::new();
    let mut found = only.is_none();
    for (k, id) in order.into_iter().enumerate() {
        let node = graph.node(id);
        if is_leaf(&node.op) {
            continue;
        }
        if let Some(name) = only {
            if node.name != name {
                continue;
            }
            found = true;
        }
        if is_view(&node.op) {
            if let Some(problem) = view_problem(graph, id) {
                return Err(KernelError::Node {
                    node: node.name.clone(),
                    op: node.op.name(),
                    cause: Box::new(KernelError::Unsupported(problem)),
                });
            }
            views.push(Skipped {
                node: node.name.clone(),
                op: node.op.name(),
            });
            continue;
        }
        let name = kernel_name(k, &node.name);
        let wrap = |e: KernelError| KernelError::Node {
            node: node.name.clone(),
            op: node.op.name(),
            cause: Box::new(e),
        };
        let req = request(graph, id, name, Target::Gpu(sm), precision).map_err(wrap)?;
        let cx = Context::create();
        let generated = generate(&cx, &req).map_err(wrap)?;
        let launch = &generated.info.launch;
        let shared = launch.shared_bytes + launch.dynamic_shared_bytes;
        if shared > max_shared {
            return Err(wrap(KernelError::Unsupported(format!(
                "needs {shared} bytes of shared memory per block; {sm} has {max_shared}"
            ))));
        }
        let text = match output {
            Output::Info(_) => String::new(),
            Output::Ptx(sm) => {
                let ptx = emit::ptx(&generated.module, sm).map_err(wrap)?;
                // A barrier only some threads reach hangs the GPU: refuse to ship one.
                if let Some(d) = crate::uniformity::divergent_barriers(&ptx).first() {
                    return Err(wrap(KernelError::Unsafe(format!("the PTX for {sm}: {d}"))));
                }
                ptx
            }
            Output::Llvm(_) => emit::llvm(&generated.module),
        };
        kernels.push(Lowered {
            info: generated.info,
            text,
        });
    }
    if !found {
        return Err(KernelError::Unsupported(format!(
            "no node named `{}`",
            only.unwrap_or_default()
        )));
    }
    Ok(Lowering { kernels, views })
}

/// A kernel's entry-point name: its position and the node's name, as a PTX identifier.
pub fn kernel_name(index: usize, node: &str) -> String {
    let clean: String = node
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(48)
        .collect();
    format!("k{index}_{clean}")
}
