//! A product's activation input rounded to BF16/FP16 (a `Cast` pair), quantized to FP8 or
//! INT8 with a static scale from calibration (a `QuantizeLinear`/`DequantizeLinear` pair), or
//! rounded block by block to NVFP4/MXFP4 (`RoundToBlocks`, NVFP4's tensor scale calibrated).

use super::{Config, Product, Scheme};
use crate::edit::add_tensor_node;
use crate::manager::PassError;
use bytes::Bytes;
use sparkc_ir::formats::{max_finite, BlockFormat};
use sparkc_ir::{DType, Graph, Op, Tensor, TensorType, ValueRef};

/// Rounds or quantizes `product`'s activation as `config` asks, returning the format used
/// (`f32` when there is no calibrated range for an FP8 or INT8 scale).
pub fn quantize(
    graph: &mut Graph,
    config: &Config,
    product: &Product,
) -> Result<String, PassError> {
    let Some(Some(x)) = graph.inputs_of(product.id).get(product.activation).copied() else {
        return Ok("f32".into());
    };
    let value = graph.value(x).clone();
    let Some(ty) = value.ty.as_tensor().cloned() else {
        return Ok("f32".into());
    };
    if ty.dtype != DType::F32 {
        return Ok(ty.dtype.name().into());
    }
    let narrow = config.scheme.activation_dtype();
    let name = format!("{}.{}", graph.node(product.id).name, narrow);
    let restored = match config.scheme {
        Scheme::Fp8 | Scheme::Int8 => {
            let Some(range) = config.ranges.get(&value.name) else {
                return Ok("f32".into());
            };
            // FP8 has the dynamic range for outliers; INT8 clips them at the percentile.
            let (bound, top) = match config.scheme {
                Scheme::Fp8 => (range.max, max_finite(narrow).unwrap_or(448.0) as f32),
                _ => (range.percentile, 127.0),
            };
            let scale = if bound > 0.0 { bound / top } else { 1.0 };
            let data = Bytes::from(scale.to_le_bytes().to_vec());
            let scale = graph.add_const(
                &format!("{name}.scale"),
                Tensor::new(DType::F32, vec![], data)?,
            );
            let quantize = Op::QuantizeLinear {
                axis: 1,
                block_size: 0,
                output_dtype: Some(narrow),
                saturate: true,
            };
            let q = push(
                graph,
                format!("{name}.q"),
                quantize,
                &[Some(x), Some(scale)],
                narrow,
                &ty,
            );
            let dequantize = Op::DequantizeLinear {
                axis: 1,
                block_size: 0,
                output_dtype: Some(DType::F32),
            };
            push(
                graph,
                format!("{name}.dq"),
                dequantize,
                &[Some(q), Some(scale)],
                DType::F32,
                &ty,
            )
        }
        Scheme::Nvfp4 | Scheme::Mxfp4
            if config.block_activations && along_last_axis(graph, product) =>
        {
            let format = match config.scheme {
                Scheme::Nvfp4 => BlockFormat::Nvfp4,
                _ => BlockFormat::Mxfp4,
            };
            let mut inputs = vec![Some(x)];
            if format == BlockFormat::Nvfp4 {
                let Some(range) = config.ranges.get(&value.name) else {
                    return Ok("f32".into());
                };
                let scale = format.tensor_scale(range.max);
                let data = Bytes::from(scale.to_le_bytes().to_vec());
                inputs.push(Some(graph.add_const(
                    &format!("{}.{}.scale", graph.node(product.id).name, format.name()),
                    Tensor::new(DType::F32, vec![], data)?,
                )));
            }
            let name = format!("{}.{}", graph.node(product.id).name, format.name());
            let rounded = push(
                graph,
                name,
                Op::RoundToBlocks { format },
                &inputs,
                DType::F32,
                &ty,
            );
            crate::edit::set_input(graph, product.id, product.activation, rounded);
            return Ok(format.name().into());
        }
        Scheme::Bf16 | Scheme::Fp16 | Scheme::Nvfp4 | Scheme::Mxfp4 => {
            let cast = |to| Op::Cast {
                to,
                saturate: true,
                round_mode: "nearest".into(),
            };
            let r = push(graph, name.clone(), cast(narrow), &[Some(x)], narrow, &ty);
            push(
                graph,
                format!("{name}.f32"),
                cast(DType::F32),
                &[Some(r)],
                DType::F32,
                &ty,
            )
        }
    };
    crate::edit::set_input(graph, product.id, product.activation, restored);
    Ok(narrow.name().into())
}

/// True when `product` reduces its activation along the activation's last axis (MatMul, a
/// Gemm that does not read it transposed), the axis `RoundToBlocks` blocks.
fn along_last_axis(graph: &Graph, product: &Product) -> bool {
    match graph.node(product.id).op {
        Op::MatMul => true,
        Op::Gemm { trans_a, .. } => !trans_a,
        _ => false,
    }
}

/// Adds a node with one output of `dtype` and the shape of `like`.
fn push(
    graph: &mut Graph,
    name: String,
    op: Op,
    inputs: &[Option<ValueRef>],
    dtype: DType,
    like: &TensorType,
) -> ValueRef {
    let ty = TensorType {
        dtype,
        shape: like.shape.clone(),
    };
    add_tensor_node(graph, name, op, inputs, ty)
}
