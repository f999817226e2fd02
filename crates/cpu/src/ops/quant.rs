//! Quantization: `QuantizeLinear`, `DequantizeLinear` (per tensor, per axis, blocked),
//! `DynamicQuantizeLinear`, and the integer and `QLinear*` products.

use super::shape::index_map;
use super::{axis, R};
use crate::array::{strides, Array, Data};
use crate::minifloat::{self, round_half_even};
use sparkc_ir::DType;

/// For each element of `x`, the index of its scale (per tensor, per axis or per block).
fn scale_index(x: &Array, scale: &Array, ax: i64, block_size: i64) -> R<Vec<usize>> {
    if scale.len() == 1 {
        return Ok(vec![0; x.len()]);
    }
    let a = axis(ax, x.rank())?;
    if block_size > 0 {
        if scale.rank() != x.rank() {
            return Err(format!("blocked scale {:?} must have the rank of x {:?}", scale.shape, x.shape));
        }
        let st = strides(&scale.shape);
        let b = block_size as usize;
        return Ok(index_map(&x.shape, |ix| {
            ix.iter().enumerate().map(|(k, &i)| if k == a { i / b } else { i } * st[k]).sum()
        }));
    }
    if scale.rank() != 1 || scale.len() != x.shape[a] {
        return Err(format!("per-axis scale {:?} must have {} values (axis {a} of {:?})", scale.shape, x.shape[a], x.shape));
    }
    let (_, n, inner) = super::reduce::split_at_axis(&x.shape, a);
    Ok((0..x.len()).map(|p| (p / inner.max(1)) % n).collect())
}

fn int_limits(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::U8 => (0.0, 255.0),
        DType::I8 => (-128.0, 127.0),
        DType::U16 => (0.0, 65535.0),
        DType::I16 => (-32768.0, 32767.0),
        DType::I32 => (i32::MIN as f64, i32::MAX as f64),
        DType::U32 => (0.0, u32::MAX as f64),
        d => {
            let (lo, hi) = minifloat::int_range(d);
            (lo as f64, hi as f64)
        }
    }
}

/// `QuantizeLinear`.
pub(crate) fn quantize(
    x: &Array,
    scale: &Array,
    zero_point: Option<&Array>,
    ax: i64,
    block_size: i64,
    output_dtype: Option<DType>,
    saturate: bool,
) -> R<Array> {
    let dtype = zero_point.map(|z| z.dtype()).or(output_dtype).unwrap_or(DType::U8);
    let index = scale_index(x, scale, ax, block_size)?;
    let scales = scale.data.to_f64s();
    let zeros = zero_point.map(|z| z.data.to_f64s());
    let values = x.data.to_f64s();
    // f32 inputs divide in f32, as the reference does, so ties round the same way.
    let single = x.dtype() != DType::F64;
    let scaled: Vec<f64> = values
        .iter()
        .zip(&index)
        .map(|(&v, &i)| {
            let z = zeros.as_ref().map_or(0.0, |z| z[i]);
            let q = if single { f64::from(v as f32 / scales[i] as f32) } else { v / scales[i] };
            if dtype.is_float() {
                q + z
            } else {
                let (lo, hi) = int_limits(dtype);
                (round_half_even(q) + z).clamp(lo, hi)
            }
        })
        .collect();
    Ok(Array::new(x.shape.clone(), Data::from_f64s(dtype, scaled, saturate)))
}

/// `DequantizeLinear`.
pub(crate) fn dequantize(
    x: &Array,
    scale: &Array,
    zero_point: Option<&Array>,
    ax: i64,
    block_size: i64,
    output_dtype: Option<DType>,
) -> R<Array> {
    let dtype = output_dtype.unwrap_or(scale.dtype());
    let index = scale_index(x, scale, ax, block_size)?;
    let scales = scale.data.to_f64s();
    let zeros = zero_point.map(|z| z.data.to_f64s());
    let values = x.data.to_f64s();
    let out: Vec<f64> = values
        .iter()
        .zip(&index)
        .map(|(&v, &i)| (v - zeros.as_ref().map_or(0.0, |z| z[i])) * scales[i])
        .collect();
    if dtype == DType::F32 {
        // Computed in f32 like the reference, so results round identically.
        let s32 = scale.data.to_f32s();
        let out: Vec<f32> = values
            .iter()
            .zip(&index)
            .map(|(&v, &i)| (v - zeros.as_ref().map_or(0.0, |z| z[i])) as f32 * s32[i])
            .collect();
        return Ok(Array::f32(x.shape.clone(), out));
    }
    Ok(Array::new(x.shape.clone(), Data::from_f64s(dtype, out, false)))
}

/// `DynamicQuantizeLinear`: u8 values, scale and zero point from the data's range.
pub(crate) fn dynamic_quantize(x: &Array) -> Vec<Array> {
    let values = x.data.to_f32s();
    let lo = values.iter().copied().fold(0f32, f32::min);
    let hi = values.iter().copied().fold(0f32, f32::max);
    let scale = (hi - lo) / 255.0;
    let zero = if scale == 0.0 { 0.0 } else { round_half_even(f64::from((0.0 - lo) / scale)).clamp(0.0, 255.0) };
    let q: Vec<u8> = values
        .iter()
        .map(|&v| {
            let s = if scale == 0.0 { 0.0 } else { f64::from(v / scale) };
            (round_half_even(s) + zero).clamp(0.0, 255.0) as u8
        })
        .collect();
    vec![
        Array::new(x.shape.clone(), Data::U8(q)),
        Array::f32(vec![], vec![scale]),
        Array::new(vec![], Data::U8(vec![zero as u8])),
    ]
}
