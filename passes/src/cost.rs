//! The cost model: seconds a node would take on the target, from the bytes it moves to and
//! from memory and the FLOPs it does, plus a launch overhead per kernel.
//!
//! The default target is the GB10 of the DGX Spark (figures and their sources are in
//! `docs/passes.md`). Dims that are symbolic at compile time are costed at [`SYMBOLIC_DIM`].

use sparkc_ir::fused::{is_contraction, is_elementwise};
use sparkc_ir::{DType, Dim, Op, Value};

/// The size assumed for a dim unknown at compile time.
pub const SYMBOLIC_DIM: f64 = 128.0;

/// A target's throughput figures.
#[derive(Clone, Copy, Debug)]
pub struct Machine {
    /// Sustained memory bandwidth, bytes per second.
    pub bandwidth: f64,
    /// Dense tensor-core FLOP/s for 16-bit floats (f16, bf16).
    pub tensor_f16: f64,
    /// Dense tensor-core FLOP/s for 8-bit floats and int8.
    pub tensor_f8: f64,
    /// Dense tensor-core FLOP/s for 4-bit floats.
    pub tensor_f4: f64,
    /// CUDA-core FLOP/s for f32 (fused multiply-add counted as two).
    pub cuda_f32: f64,
    /// Seconds a kernel launch costs.
    pub launch: f64,
}

impl Machine {
    /// The DGX Spark's GB10.
    pub const GB10: Machine = Machine {
        bandwidth: 218e9,
        tensor_f16: 92e12,
        tensor_f8: 184e12,
        tensor_f4: 368e12,
        cuda_f32: 31e12,
        launch: 2e-6,
    };

    /// FLOP/s of a product whose operands have this dtype.
    fn product_rate(&self, dtype: DType) -> f64 {
        match dtype {
            DType::F16 | DType::BF16 => self.tensor_f16,
            DType::F8E4M3FN | DType::F8E5M2 | DType::I8 | DType::U8 => self.tensor_f8,
            DType::F4E2M1 => self.tensor_f4,
            _ => self.cuda_f32,
        }
    }
}

/// Elements of a value, with unknown dims at [`SYMBOLIC_DIM`].
pub fn elements(value: &Value) -> f64 {
    let Some(t) = value.ty.as_tensor() else {
        return 0.0;
    };
    match &t.shape {
        Some(dims) => dims
            .iter()
            .map(|d| d.as_const().map_or(SYMBOLIC_DIM, |n| n as f64))
            .product(),
        None => SYMBOLIC_DIM * SYMBOLIC_DIM,
    }
}

/// Bytes of a value in memory.
pub fn bytes(value: &Value) -> f64 {
    let bits = value.ty.as_tensor().map_or(32.0, |t| t.dtype.bits() as f64);
    elements(value) * bits / 8.0
}

fn dims(value: &Value) -> Vec<f64> {
    value
        .ty
        .as_tensor()
        .and_then(|t| t.shape.as_ref())
        .map(|d| {
            d.iter()
                .map(|d: &Dim| d.as_const().map_or(SYMBOLIC_DIM, |n| n as f64))
                .collect()
        })
        .unwrap_or_default()
}

/// True for ops that only relabel a buffer (no kernel, no traffic).
pub fn is_view(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape { .. }
            | Op::Squeeze
            | Op::Unsqueeze
            | Op::Flatten { .. }
            | Op::BitCast { .. }
            | Op::Input
            | Op::Const(_)
            | Op::Unary(sparkc_ir::op::Unary::Identity)
    )
}

/// FLOPs of one node.
pub fn flops(op: &Op, inputs: &[Option<&Value>], outputs: &[Value]) -> f64 {
    let out = outputs.first().map_or(0.0, elements);
    let reduced = |i: usize| {
        inputs.get(i).copied().flatten().map_or(0.0, |v| {
            let d = dims(v);
            d.last().copied().unwrap_or(1.0)
        })
    };
    match op {
        Op::MatMul
        | Op::TransposedMatMul { trans_a: false, .. }
        | Op::Gemm { trans_a: false, .. } => 2.0 * out * reduced(0),
        Op::TransposedMatMul { .. } | Op::Gemm { .. } => {
            let d = inputs
                .first()
                .copied()
                .flatten()
                .map(dims)
                .unwrap_or_default();
            2.0 * out * d.get(d.len().saturating_sub(2)).copied().unwrap_or(1.0)
        }
        Op::Conv(_) => {
            let w = inputs
                .get(1)
                .copied()
                .flatten()
                .map(dims)
                .unwrap_or_default();
            let per_output: f64 = w.iter().skip(1).product();
            2.0 * out * per_output
        }
        Op::Attention(_) => {
            let q = inputs
                .first()
                .copied()
                .flatten()
                .map(dims)
                .unwrap_or_default();
            let k = inputs
                .get(1)
                .copied()
                .flatten()
                .map(dims)
                .unwrap_or_default();
            let kv = k.get(k.len().saturating_sub(2)).copied().unwrap_or(1.0);
            4.0 * q.iter().product::<f64>() * kv
        }
        Op::Fused(f) => f.body.len() as f64 * out,
        _ => {
            let input: f64 = inputs
                .iter()
                .flatten()
                .map(|v| elements(v))
                .fold(0.0, f64::max);
            input.max(out)
        }
    }
}

/// Seconds one node takes on `machine`: memory traffic or arithmetic, whichever bounds it,
/// plus a launch.
pub fn node_seconds(
    machine: &Machine,
    op: &Op,
    inputs: &[Option<&Value>],
    outputs: &[Value],
) -> f64 {
    if is_view(op) {
        return 0.0;
    }
    let moved: f64 = inputs.iter().flatten().map(|v| bytes(v)).sum::<f64>()
        + outputs.iter().map(bytes).sum::<f64>();
    let dtype = inputs
        .first()
        .copied()
        .flatten()
        .and_then(|v| v.ty.as_tensor())
        .map_or(DType::F32, |t| t.dtype);
    let rate = if is_contraction(op) || matches!(op, Op::Attention(_)) {
        machine.product_rate(dtype)
    } else if is_elementwise(op) {
        machine.cuda_f32
    } else {
        machine.cuda_f32 / 2.0
    };
    let compute = flops(op, inputs, outputs) / rate;
    (moved / machine.bandwidth).max(compute) + machine.launch
}
