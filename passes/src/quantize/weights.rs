//! A product's constant weight stored in a narrower format, behind the `DequantizeLinear`
//! (or `Cast`) that restores it: per output channel for FP8 and INT8, per block along the
//! reduced axis for NVFP4 and MXFP4, a plain cast for BF16 and FP16.

use super::{Product, Scheme};
use crate::edit::add_tensor_node;
use bytes::Bytes;
use half::{bf16, f16};
use sparkc_ir::formats::{quantize_channels, BlockFormat, BlockQuantized};
use sparkc_ir::{DType, Dim, Graph, Op, Result, Tensor, TensorType, ValueRef};

/// How a weight is stored.
#[derive(Clone, Debug)]
enum Recipe {
    /// A BF16 or FP16 copy, cast back to f32.
    Cast(Tensor),
    /// Codes with one f32 scale per index of `axis`.
    Channel {
        codes: Tensor,
        scales: Tensor,
        axis: usize,
    },
    /// E2M1 codes with block scales along `axis` (and NVFP4's tensor scale).
    Block {
        codes: Tensor,
        scales: Tensor,
        tensor_scale: Option<Tensor>,
        axis: usize,
        block: usize,
    },
}

/// A quantized weight, ready to replace the original.
#[derive(Clone, Debug)]
pub struct Stored {
    /// The format, as the report shows it.
    pub format: String,
    /// Relative RMS error against the original.
    pub error: f64,
    recipe: Recipe,
}

fn relative_error(original: &[f32], restored: &[f32]) -> f64 {
    let (mut diff, mut norm) = (0f64, 0f64);
    for (&a, &b) in original.iter().zip(restored) {
        diff += (f64::from(a) - f64::from(b)).powi(2);
        norm += f64::from(a).powi(2);
    }
    if norm == 0.0 {
        0.0
    } else {
        (diff / norm).sqrt()
    }
}

fn f32s(tensor: &Tensor) -> Vec<f32> {
    tensor
        .data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn f32_tensor(shape: Vec<usize>, values: &[f32]) -> Result<Tensor> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Tensor::new(DType::F32, shape, Bytes::from(data))
}

/// Quantizes `tensor`, the weight of `product`, to `scheme`'s weight format.
pub fn quantize(scheme: Scheme, tensor: &Tensor, product: &Product) -> Result<Stored> {
    let values = f32s(tensor);
    let shape = tensor.shape.clone();
    let (format, recipe, restored): (String, Recipe, Vec<f32>) = match scheme {
        Scheme::Bf16 | Scheme::Fp16 => {
            let (dtype, bits, back): (DType, Vec<u16>, Vec<f32>) = if scheme == Scheme::Bf16 {
                let h: Vec<bf16> = values.iter().map(|&v| bf16::from_f32(v)).collect();
                let back = h.iter().map(|v| v.to_f32()).collect();
                (DType::BF16, h.iter().map(|v| v.to_bits()).collect(), back)
            } else {
                let h: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
                let back = h.iter().map(|v| v.to_f32()).collect();
                (DType::F16, h.iter().map(|v| v.to_bits()).collect(), back)
            };
            let data: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
            let cast = Tensor::new(dtype, shape, Bytes::from(data))?;
            (dtype.name().to_string(), Recipe::Cast(cast), back)
        }
        Scheme::Fp8 | Scheme::Int8 => {
            let dtype = if scheme == Scheme::Fp8 {
                DType::F8E4M3FN
            } else {
                DType::I8
            };
            let axis = product.channel_axis;
            let q = quantize_channels(dtype, &values, &shape, axis)?;
            let channels = shape[axis];
            let restored = q.dequantize();
            let recipe = Recipe::Channel {
                codes: Tensor::new(dtype, shape, Bytes::from(q.codes))?,
                scales: f32_tensor(vec![channels], &q.scales)?,
                axis,
            };
            (format!("{dtype}/channel"), recipe, restored)
        }
        Scheme::Nvfp4 | Scheme::Mxfp4 => {
            let format = if scheme == Scheme::Nvfp4 {
                BlockFormat::Nvfp4
            } else {
                BlockFormat::Mxfp4
            };
            let axis = product.reduce_axis;
            let q = BlockQuantized::quantize(format, &values, &shape, axis)?;
            let restored = q.dequantize();
            let scales = Tensor::new(
                format.scale_dtype(),
                q.scale_shape(),
                Bytes::from(q.scales.clone()),
            )?;
            let tensor_scale = match format {
                BlockFormat::Nvfp4 => Some(f32_tensor(vec![], &[q.tensor_scale])?),
                BlockFormat::Mxfp4 => None,
            };
            let recipe = Recipe::Block {
                codes: Tensor::new(DType::F4E2M1, shape, Bytes::from(q.packed_codes()))?,
                scales,
                tensor_scale,
                axis,
                block: format.block_size(),
            };
            (format.name().to_string(), recipe, restored)
        }
    };
    Ok(Stored {
        format,
        error: relative_error(&values, &restored),
        recipe,
    })
}

/// A node of `op` reading `inputs`, with one f32 output of `shape`.
fn add_f32(
    graph: &mut Graph,
    name: String,
    op: Op,
    inputs: &[Option<ValueRef>],
    shape: &[usize],
) -> ValueRef {
    let dims = shape.iter().map(|&d| Dim::known(d as i64)).collect();
    add_tensor_node(graph, name, op, inputs, TensorType::new(DType::F32, dims))
}

fn dequantize(axis: usize, block: usize) -> Op {
    Op::DequantizeLinear {
        axis: axis as i64,
        block_size: block as i64,
        output_dtype: Some(DType::F32),
    }
}

/// Makes `product` read its weight from `stored` instead of the f32 constant `old`, returning
/// the restored value (for other products sharing that constant).
pub fn replace(graph: &mut Graph, product: &Product, old: ValueRef, stored: Stored) -> ValueRef {
    let base = graph.value(old).name.clone();
    let shape: Vec<usize> = match &graph.node(old.node).op {
        Op::Const(t) => t.shape.clone(),
        _ => Vec::new(),
    };
    let restored = match stored.recipe {
        Recipe::Cast(tensor) => {
            let v = graph.add_const(&format!("{base}.{}", tensor.dtype), tensor);
            let cast = Op::Cast {
                to: DType::F32,
                saturate: true,
                round_mode: "nearest".into(),
            };
            add_f32(graph, format!("{base}.f32"), cast, &[Some(v)], &shape)
        }
        Recipe::Channel {
            codes,
            scales,
            axis,
        } => {
            let codes = graph.add_const(&format!("{base}.{}", codes.dtype), codes);
            let scales = graph.add_const(&format!("{base}.scale"), scales);
            let op = dequantize(axis, 0);
            add_f32(
                graph,
                format!("{base}.dq"),
                op,
                &[Some(codes), Some(scales)],
                &shape,
            )
        }
        Recipe::Block {
            codes,
            scales,
            tensor_scale,
            axis,
            block,
        } => {
            let codes = graph.add_const(&format!("{base}.f4e2m1"), codes);
            let scale_shape = scales.shape.clone();
            let mut scales = graph.add_const(&format!("{base}.block_scale"), scales);
            if let Some(t) = tensor_scale {
                let t = graph.add_const(&format!("{base}.tensor_scale"), t);
                let op = dequantize(0, 0);
                let name = format!("{base}.block_scale.dq");
                scales = add_f32(graph, name, op, &[Some(scales), Some(t)], &scale_shape);
            }
            let op = dequantize(axis, block);
            add_f32(
                graph,
                format!("{base}.dq"),
                op,
                &[Some(codes), Some(scales)],
                &shape,
            )
        }
    };
    reroute(graph, product, old, restored);
    restored
}

/// Makes `product` read `restored` instead of `old`, dropping `old` once nothing reads it.
pub fn reroute(graph: &mut Graph, product: &Product, old: ValueRef, restored: ValueRef) {
    crate::edit::set_input(graph, product.id, product.weight, restored);
    if crate::edit::readers(graph, old).is_empty() && !graph.outputs.contains(&old) {
        graph.dag.remove_node(old.node);
    }
}
