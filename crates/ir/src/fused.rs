//! Fused nodes: a small expression DAG of ops that runs as one kernel.
//!
//! The optimizer builds them (an anchor such as MatMul or a reduction, with its elementwise
//! producers and consumers); kernel generators lower the body as a whole, and the CPU executor
//! runs it as the reference.

use crate::op::{Binary, Op, Unary, Variadic};
use crate::DType;
use serde::Serialize;

/// Where a body node reads an operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Operand {
    /// The fused node's `i`-th input.
    Input(usize),
    /// The value of the body's `i`-th node.
    Node(usize),
}

/// One op of a body, with its operands in the op's input order (`None` for omitted optionals).
#[derive(Clone, Debug, Serialize)]
pub struct BodyNode {
    /// The op, with its attributes.
    pub op: Op,
    /// Its operands.
    pub args: Vec<Option<Operand>>,
}

/// What a fused node computes, for display and for choosing a kernel family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FusedKind {
    /// Only elementwise ops.
    Elementwise,
    /// A matrix product or convolution with an elementwise epilogue (and prologue).
    Contraction,
    /// A reduction with elementwise producers and consumers.
    Reduction,
}

/// A fused node's body and the rules that built it.
#[derive(Clone, Debug, Serialize)]
pub struct Fused {
    /// The body's nodes in execution order; the last node's value is the fused node's result.
    pub body: Vec<BodyNode>,
    /// The rules and passes that built this node, in the order they fired.
    pub provenance: Vec<String>,
}

impl Fused {
    /// The body's ops joined by `+`, as `MatMul+Add+Relu`.
    pub fn label(&self) -> String {
        let names: Vec<String> = self.body.iter().map(|n| n.op.name()).collect();
        names.join("+")
    }

    /// The kernel family: contraction if the body has a product, reduction if it reduces.
    pub fn kind(&self) -> FusedKind {
        // Per-tensor quantize-dequantize pairs folded after an elementwise body keep it one.
        let pointwise = |op: &Op| {
            is_pointwise(op)
                || matches!(
                    op,
                    Op::QuantizeLinear { block_size: 0, .. }
                        | Op::DequantizeLinear { block_size: 0, .. }
                )
        };
        if self.body.iter().any(|n| is_contraction(&n.op)) {
            FusedKind::Contraction
        } else if self.body.iter().any(|n| !pointwise(&n.op)) {
            FusedKind::Reduction
        } else {
            FusedKind::Elementwise
        }
    }
}

/// True for the products a fused node may be anchored on.
pub fn is_contraction(op: &Op) -> bool {
    matches!(
        op,
        Op::MatMul | Op::TransposedMatMul { .. } | Op::Gemm { .. } | Op::Conv(_)
    )
}

/// True for ops computed element by element with numpy broadcasting, on float tensors.
pub fn is_elementwise(op: &Op) -> bool {
    match op {
        Op::Unary(u) => !matches!(
            u,
            Unary::Identity | Unary::Not | Unary::IsNaN | Unary::IsInf { .. } | Unary::BitwiseNot
        ),
        Op::Binary(b) => matches!(
            b,
            Binary::Add | Binary::Sub | Binary::Mul | Binary::Div | Binary::Pow | Binary::PRelu
        ),
        Op::Clip => true,
        _ => false,
    }
}

/// True for the ops a fused body computes element by element: the float arithmetic of
/// [`is_elementwise`], comparisons, logic, `Max`, `Min`, `Where`, and casts to f32, i64 and
/// bool.
pub fn is_pointwise(op: &Op) -> bool {
    is_elementwise(op)
        || match op {
            Op::Binary(b) => matches!(
                b,
                Binary::Equal
                    | Binary::Less
                    | Binary::LessOrEqual
                    | Binary::Greater
                    | Binary::GreaterOrEqual
                    | Binary::And
                    | Binary::Or
                    | Binary::Xor
            ),
            Op::Unary(u) => matches!(u, Unary::Not),
            Op::Variadic(v) => matches!(v, Variadic::Max | Variadic::Min),
            Op::Where => true,
            Op::Cast { to, .. } => matches!(to, DType::F32 | DType::I64 | DType::Bool),
            _ => false,
        }
}
