//! Quantization: `QuantizeLinear`, `DequantizeLinear` (per tensor, per axis, blocked),
//! `DynamicQuantizeLinear`, the integer and `QLinear*` products, and `RoundToBlocks` (the
//! NVFP4/MXFP4 rounding of activations).

use super::shape::index_map;
use super::{axis, R};
use crate::array::{strides, Array, Data};
use sparkc_ir::formats::{self as minifloat, round_half_even};
use sparkc_ir::DType;

/// For each element of `x`, the index of its scale (per tensor, per axis or per block).
fn scale_index(x: &Array, scale: &Array, ax: i64, block_size: i64) -> R<Vec<usize>> {
    if scale.len() == 1 {
        return Ok(vec![0; x.len()]);
    }
    let a = axis(ax, x.rank())?;
    if block_size > 0 {
        if scale.rank() != x.rank() {
            return Err(format!(
                "blocked scale {:?} must have the rank of x {:?}",
                scale.shape, x.shape
            ));
        }
        let st = strides(&scale.shape);
        let b = block_size as usize;
        return Ok(index_map(&x.shape, |ix| {
            ix.iter()
                .enumerate()
                .map(|(k, &i)| if k == a { i / b } else { i } * st[k])
                .sum()
        }));
    }
    if scale.rank() != 1 || scale.len() != x.shape[a] {
        return Err(format!(
            "per-axis scale {:?} must have {} values (axis {a} of {:?})",
            scale.shape, x.shape[a], x.shape
        ));
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

/// `RoundToBlocks`: each block along the last axis rounded to `format` (the IR's block codec,
/// which also quantizes weights), returned as the values the codes stand for.
pub(crate) fn round_to_blocks(
    x: &Array,
    tensor_scale: Option<&Array>,
    format: minifloat::BlockFormat,
) -> R<Array> {
    let scale = match tensor_scale {
        Some(t) if t.len() == 1 => t.data.to_f32s()[0],
        Some(t) => {
            return Err(format!(
                "the tensor scale must be one value, found {:?}",
                t.shape
            ))
        }
        None => 1.0,
    };
    if x.rank() == 0 {
        return Err("rounds blocks along the last axis of a tensor of rank 1 or more".into());
    }
    let q = minifloat::BlockQuantized::quantize_with(
        format,
        &x.data.f32s(),
        &x.shape,
        x.rank() - 1,
        scale,
    )
    .map_err(|e| e.to_string())?;
    Ok(Array::f32(x.shape.clone(), q.dequantize()))
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
    let dtype = zero_point
        .map(|z| z.dtype())
        .or(output_dtype)
        .unwrap_or(DType::U8);
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
            let q = if single {
                f64::from(v as f32 / scales[i] as f32)
            } else {
                v / scales[i]
            };
            if dtype.is_float() {
                q + z
            } else {
                let (lo, hi) = int_limits(dtype);
                (round_half_even(q) + z).clamp(lo, hi)
            }
        })
        .collect();
    Ok(Array::new(
        x.shape.clone(),
        Data::from_f64s(dtype, scaled, saturate),
    ))
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
    let centered = |(&v, &i): (&f64, &usize)| v - zeros.as_ref().map_or(0.0, |z| z[i]);
    if dtype == DType::F32 {
        // Computed in f32 like the reference, so results round identically.
        let s32 = scale.data.to_f32s();
        let out: Vec<f32> = values
            .iter()
            .zip(&index)
            .map(|pair| centered(pair) as f32 * s32[*pair.1])
            .collect();
        return Ok(Array::f32(x.shape.clone(), out));
    }
    let out: Vec<f64> = values
        .iter()
        .zip(&index)
        .map(|pair| centered(pair) * scales[*pair.1])
        .collect();
    Ok(Array::new(
        x.shape.clone(),
        Data::from_f64s(dtype, out, false),
    ))
}

/// `DynamicQuantizeLinear`: u8 values, scale and zero point from the data's range.
pub(crate) fn dynamic_quantize(x: &Array) -> Vec<Array> {
    let values = x.data.to_f32s();
    let lo = values.iter().copied().fold(0f32, f32::min);
    let hi = values.iter().copied().fold(0f32, f32::max);
    let scale = (hi - lo) / 255.0;
    let zero = if scale == 0.0 {
        0.0
    } else {
        round_half_even(f64::from((0.0 - lo) / scale)).clamp(0.0, 255.0)
    };
    let q: Vec<u8> = values
        .iter()
        .map(|&v| {
            let s = if scale == 0.0 {
                0.0
            } else {
                f64::from(v / scale)
            };
            (round_half_even(s) + zero).clamp(0.0, 255.0) as u8
        })
        .collect();
    vec![
        Array::new(x.shape.clone(), Data::U8(q)),
        Array::f32(vec![], vec![scale]),
        Array::new(vec![], Data::U8(vec![zero as u8])),
    ]
}

/// Subtracts a zero point (scalar, or one per row of the trailing matrices when `per_row`,
/// else one per column) from integer values.
fn centered(x: &Array, zero: Option<&Array>, per_row: bool) -> Vec<f64> {
    let mut values = x.data.to_f64s();
    let Some(z) = zero.map(|z| z.data.to_f64s()) else {
        return values;
    };
    let cols = *x.shape.last().unwrap_or(&1);
    let rows = if x.rank() >= 2 {
        x.shape[x.rank() - 2]
    } else {
        1
    };
    for (p, v) in values.iter_mut().enumerate() {
        let k = if z.len() == 1 {
            0
        } else if per_row {
            (p / cols.max(1)) % rows.max(1)
        } else {
            p % cols.max(1)
        };
        *v -= z.get(k).copied().unwrap_or(0.0);
    }
    values
}

/// `(a - a_zero) · (b - b_zero)` exactly (in f64), from the inputs at `[a, a_zero, b, b_zero]`.
fn integer_product(args: &super::Args, at: [usize; 4]) -> R<Array> {
    let (a, b) = (args.tensor(at[0])?, args.tensor(at[2])?);
    super::linalg::matmul(
        &Array::new(
            a.shape.clone(),
            Data::F64(centered(a, args.opt_tensor(at[1])?, true)),
        ),
        &Array::new(
            b.shape.clone(),
            Data::F64(centered(b, args.opt_tensor(at[3])?, false)),
        ),
    )
}

/// `MatMulInteger`: `(a - a_zero) · (b - b_zero)` as i32.
pub(crate) fn matmul_integer(args: &super::Args) -> R<Array> {
    let product = integer_product(args, [0, 2, 1, 3])?;
    Ok(Array::new(
        product.shape.clone(),
        Data::from_f64s(DType::I32, product.data.to_f64s(), false),
    ))
}

fn requantize(
    values: Vec<f64>,
    scale: &dyn Fn(usize) -> f64,
    zero: Option<&Array>,
    dtype: DType,
    shape: Vec<usize>,
) -> Array {
    let z = zero.map(|z| z.data.to_f64s());
    let (lo, hi) = int_limits(dtype);
    let out: Vec<f64> = values
        .iter()
        .enumerate()
        .map(|(p, &v)| {
            (round_half_even(v * scale(p)) + z.as_ref().map_or(0.0, |z| z[0])).clamp(lo, hi)
        })
        .collect();
    Array::new(shape, Data::from_f64s(dtype, out, true))
}

/// `QLinearMatMul`; inputs `a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero`.
pub(crate) fn qlinear_matmul(args: &super::Args) -> R<Array> {
    let product = integer_product(args, [0, 2, 3, 5])?;
    let (sa, sb, sy) = (
        args.tensor(1)?.data.to_f32s(),
        args.tensor(4)?.data.to_f32s(),
        args.tensor(6)?.data.to_f32s(),
    );
    let n = *product.shape.last().unwrap_or(&1);
    let scale = |p: usize| f64::from(sa[0] * sb[if sb.len() == 1 { 0 } else { p % n }] / sy[0]);
    let dtype = args.tensor(7)?.dtype();
    Ok(requantize(
        product.data.to_f64s(),
        &scale,
        args.opt_tensor(7)?,
        dtype,
        product.shape.clone(),
    ))
}

/// `conv(x - x_zero, w - w_zero) (+ bias)` of the inputs at `[x, x_zero, w, w_zero]`, exact for
/// 8-bit data (computed in f32).
fn integer_conv(
    args: &super::Args,
    at: [usize; 4],
    bias: Option<Vec<f32>>,
    attrs: &sparkc_ir::op::ConvAttrs,
) -> R<(Vec<f32>, Vec<usize>)> {
    let (x, w) = (args.tensor(at[0])?, args.tensor(at[2])?);
    let xz = match args.opt_tensor(at[1])? {
        Some(z) => *z
            .data
            .to_f64s()
            .first()
            .ok_or("the input zero point is empty")?,
        None => 0.0,
    };
    let xf: Vec<f32> = x
        .data
        .to_f64s()
        .into_iter()
        .map(|v| (v - xz) as f32)
        .collect();
    let wf: Vec<f32> = centered_weights(w, args.opt_tensor(at[3])?)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    super::conv::conv_f32(&xf, &x.shape, &wf, &w.shape, bias.as_deref(), attrs, None)
}

/// Per-output-channel zero point subtraction for weights `[m, ...]`.
fn centered_weights(w: &Array, zero: Option<&Array>) -> Vec<f64> {
    let mut values = w.data.to_f64s();
    if let Some(z) = zero.map(|z| z.data.to_f64s()) {
        let per = values.len() / w.shape.first().copied().unwrap_or(1).max(1);
        for (p, v) in values.iter_mut().enumerate() {
            *v -= if z.len() == 1 {
                z[0]
            } else {
                z[p / per.max(1)]
            };
        }
    }
    values
}

/// `ConvInteger`: `conv(x - x_zero, w - w_zero)` as i32.
pub(crate) fn conv_integer(args: &super::Args, attrs: &sparkc_ir::op::ConvAttrs) -> R<Array> {
    let (out, shape) = integer_conv(args, [0, 2, 1, 3], None, attrs)?;
    Ok(Array::new(
        shape,
        Data::I32(out.into_iter().map(|v| v.round() as i32).collect()),
    ))
}

/// `QLinearConv`; inputs `x, x_scale, x_zero, w, w_scale, w_zero, y_scale, y_zero, bias?`.
pub(crate) fn qlinear_conv(args: &super::Args, attrs: &sparkc_ir::op::ConvAttrs) -> R<Array> {
    let bias = args.opt_tensor(8)?.map(|b| b.data.to_f32s());
    let (out, shape) = integer_conv(args, [0, 2, 3, 5], bias, attrs)?;
    let (sx, sw, sy) = (
        args.tensor(1)?.data.to_f32s(),
        args.tensor(4)?.data.to_f32s(),
        args.tensor(6)?.data.to_f32s(),
    );
    let m = shape[1];
    let inner: usize = shape[2..].iter().product();
    let scale = |p: usize| {
        let ch = (p / inner.max(1)) % m;
        f64::from(sx[0] * sw[if sw.len() == 1 { 0 } else { ch }] / sy[0])
    };
    let dtype = args.tensor(7)?.dtype();
    Ok(requantize(
        out.into_iter().map(f64::from).collect(),
        &scale,
        args.opt_tensor(7)?,
        dtype,
        shape,
    ))
}
