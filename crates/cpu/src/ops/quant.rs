//! Quantization: `QuantizeLinear`, `DequantizeLinear` (per tensor, per axis, blocked),
//! `DynamicQuantizeLinear`, the integer and `QLinear*` products, and `RoundToBlocks` (the
//! NVFP4/MXFP4 rounding of activations).

use super::shape::index_map;
use super::{axis, R};
use crate::array::{strides, Array, Data};
use rayon::prelude::*;
use sparkc_ir::formats::{self as minifloat, round_half_even, F32Encoder};
use sparkc_ir::DType;

/// Elements per task when a quantization runs in parallel.
const PIECE: usize = 1 << 15;

/// How per-tensor or per-axis scales lie over `x`: element `p` takes scale
/// `(p / inner) % channels`.
#[derive(Clone, Copy)]
struct Channels {
    channels: usize,
    inner: usize,
}

impl Channels {
    /// The layout of `scale` over `x`; `None` for blocked scales.
    fn of(x: &Array, scale: &Array, ax: i64, block_size: i64) -> R<Option<Channels>> {
        if scale.len() == 1 {
            return Ok(Some(Channels {
                channels: 1,
                inner: x.len().max(1),
            }));
        }
        if block_size > 0 {
            return Ok(None);
        }
        let a = axis(ax, x.rank())?;
        check_per_axis(x, scale, a)?;
        let (_, channels, inner) = super::reduce::split_at_axis(&x.shape, a);
        Ok(Some(Channels {
            channels,
            inner: inner.max(1),
        }))
    }

    /// `f(element, channel)` for every element of `x`, in parallel for large tensors.
    fn map<S: Copy + Sync, T: Copy + Default + Send>(
        self,
        x: &[S],
        f: impl Fn(S, usize) -> T + Sync,
    ) -> Vec<T> {
        let mut out = vec![T::default(); x.len()];
        let fill = |start: usize, dst: &mut [T]| {
            let end = start + dst.len();
            let mut p = start;
            while p < end {
                let row = p / self.inner;
                let stop = ((row + 1) * self.inner).min(end);
                let channel = row % self.channels;
                for (d, &v) in dst[p - start..stop - start].iter_mut().zip(&x[p..stop]) {
                    *d = f(v, channel);
                }
                p = stop;
            }
        };
        if x.len() < 2 * PIECE {
            fill(0, &mut out);
        } else {
            out.par_chunks_mut(PIECE)
                .enumerate()
                .for_each(|(i, dst)| fill(i * PIECE, dst));
        }
        out
    }
}

/// Checks that a per-axis `scale` has one value per index of axis `a` of `x`.
fn check_per_axis(x: &Array, scale: &Array, a: usize) -> R<()> {
    if scale.rank() != 1 || scale.len() != x.shape[a] {
        return Err(format!(
            "per-axis scale {:?} must have {} values (axis {a} of {:?})",
            scale.shape, x.shape[a], x.shape
        ));
    }
    Ok(())
}

/// The zero point's values, one per scale (zeros where there is none); `None` where its
/// shape does not match the scale's.
fn zeros_per_scale(zero_point: Option<&Array>, scales: usize) -> Option<Vec<f64>> {
    match zero_point {
        None => Some(vec![0.0; scales]),
        Some(z) if z.len() == scales => Some(z.data.to_f64s()),
        Some(_) => None,
    }
}

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
    check_per_axis(x, scale, a)?;
    let (_, n, inner) = super::reduce::split_at_axis(&x.shape, a);
    Ok((0..x.len()).map(|p| (p / inner.max(1)) % n).collect())
}

/// The range of an integer type, as floats.
pub(crate) fn int_limits(dtype: DType) -> (f64, f64) {
    let (lo, hi) = minifloat::int_range(dtype);
    (lo as f64, hi as f64)
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
    if let (Data::F32(values), Some(layout)) = (&x.data, Channels::of(x, scale, ax, block_size)?) {
        let scales = scale.data.to_f32s();
        if let Some(data) = quantize_f32(values, layout, &scales, zero_point, dtype, saturate) {
            return Ok(Array::new(x.shape.clone(), data));
        }
    }
    quantize_general(x, scale, zero_point, ax, block_size, dtype, saturate)
}

/// `QuantizeLinear` into `dtype` for any input type and scale layout, computed in f64.
#[allow(clippy::too_many_arguments)]
fn quantize_general(
    x: &Array,
    scale: &Array,
    zero_point: Option<&Array>,
    ax: i64,
    block_size: i64,
    dtype: DType,
    saturate: bool,
) -> R<Array> {
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

/// `QuantizeLinear` of f32 values into 8-bit integers, or into FP8/FP4 with a zero zero point,
/// per tensor or per axis; `None` for the other cases. Rounds exactly as the general path.
fn quantize_f32(
    values: &[f32],
    layout: Channels,
    scales: &[f32],
    zero_point: Option<&Array>,
    dtype: DType,
    saturate: bool,
) -> Option<Data> {
    let zeros = zeros_per_scale(zero_point, scales.len())?;
    let (lo, hi) = int_limits(dtype);
    let integer = |v: f32, c: usize| {
        // Values beyond ±1024 clamp alike; within, adding and taking back 1.5·2^23 rounds half
        // to even in f32 arithmetic (no libm call where SSE4.1 is not assumed).
        const ROUNDER: f32 = 12_582_912.0;
        let q = (v / scales[c]).clamp(-1024.0, 1024.0);
        (f64::from((q + ROUNDER) - ROUNDER) + zeros[c]).clamp(lo, hi)
    };
    match dtype {
        DType::I8 => Some(Data::I8(layout.map(values, |v, c| integer(v, c) as i8))),
        DType::U8 => Some(Data::U8(layout.map(values, |v, c| integer(v, c) as u8))),
        _ => {
            let encoder = F32Encoder::new(dtype, saturate)?;
            // A zero of either sign adds to an f32 exactly as to its f64 widening.
            let zeros = zeros
                .iter()
                .map(|&z| (z == 0.0).then_some(z as f32))
                .collect::<Option<Vec<f32>>>()?;
            let codes = layout.map(values, |v, c| encoder.encode(v / scales[c] + zeros[c]));
            Some(Data::Bits(dtype, codes))
        }
    }
}

/// `DequantizeLinear` of 8-bit (or narrower) codes into f32, per tensor or per axis; `None` for
/// the other cases. Computes exactly as the general path.
fn dequantize_codes(
    x: &Array,
    layout: Channels,
    scales: &[f32],
    zero_point: Option<&Array>,
) -> Option<Vec<f32>> {
    let zeros = zeros_per_scale(zero_point, scales.len())?;
    // Each code's value, from a table of the 256 bit patterns.
    let decoder = |decode: &dyn Fn(u8) -> f64| {
        let table: Vec<f64> = (0..=255u8).map(decode).collect();
        move |code: u8, c: usize| ((table[usize::from(code)] - zeros[c]) as f32) * scales[c]
    };
    Some(match &x.data {
        Data::I8(codes) => {
            let value = decoder(&|b| f64::from(b as i8));
            layout.map(codes, |b, c| value(b as u8, c))
        }
        Data::U8(codes) => layout.map(codes, decoder(&f64::from)),
        Data::Bits(dtype, codes) => layout.map(codes, decoder(&|b| minifloat::decode(*dtype, b))),
        _ => return None,
    })
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
    if let (DType::F32, Some(layout)) = (dtype, Channels::of(x, scale, ax, block_size)?) {
        if let Some(out) = dequantize_codes(x, layout, &scale.data.to_f32s(), zero_point) {
            return Ok(Array::f32(x.shape.clone(), out));
        }
    }
    dequantize_general(x, scale, zero_point, ax, block_size, dtype)
}

/// `DequantizeLinear` into `dtype` for any code type and scale layout.
fn dequantize_general(
    x: &Array,
    scale: &Array,
    zero_point: Option<&Array>,
    ax: i64,
    block_size: i64,
    dtype: DType,
) -> R<Array> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Values around every rounding case: ties at several scales, the formats' limits, signed
    /// zeros, subnormals, infinities and NaN.
    fn awkward_values(len: usize) -> Vec<f32> {
        let special = [
            0.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e-30,
            -1e-30,
            f32::MAX,
            f32::MIN_POSITIVE / 4.0,
        ];
        (0..len)
            .map(|i| match i % 4 {
                0 => special[(i / 4) % special.len()],
                1 => (i as f32 - len as f32 / 2.0) * 0.25,
                2 => ((i * 7919) % 2003) as f32 * 0.37 - 370.0,
                _ => 2f32.powi((i % 40) as i32 - 20) * if i % 8 == 3 { -1.0 } else { 1.0 },
            })
            .collect()
    }

    fn bits(data: &Data) -> Vec<u64> {
        data.to_f64s().iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn fast_quantize_matches_the_general_path() {
        // Large enough to run in parallel, with channel rows across the tasks' borders.
        let x = Array::f32(vec![3, 8, 3000], awkward_values(72_000));
        let layouts = [
            (Array::f32(vec![], vec![0.5]), 1),
            (
                Array::f32(vec![8], (1..=8).map(|k| k as f32 * 0.3).collect()),
                1,
            ),
            (Array::f32(vec![3], vec![0.25, 1.0, 7.5]), 0),
        ];
        let zero = |dtype: DType, channels: usize, value: f64| {
            Array::new(
                if channels == 1 {
                    vec![]
                } else {
                    vec![channels]
                },
                Data::from_f64s(dtype, vec![value; channels], true),
            )
        };
        let formats = [
            (DType::I8, -3.0),
            (DType::U8, 128.0),
            (DType::F8E4M3FN, 0.0),
            (DType::F8E4M3FNUZ, 0.0),
            (DType::F8E5M2, 0.0),
            (DType::F4E2M1, 0.0),
        ];
        for (scale, ax) in &layouts {
            for &(dtype, z) in &formats {
                for saturate in [true, false] {
                    let zp = zero(dtype, scale.len(), z);
                    let fast = quantize(&x, scale, Some(&zp), *ax, 0, None, saturate).unwrap();
                    let general =
                        quantize_general(&x, scale, Some(&zp), *ax, 0, dtype, saturate).unwrap();
                    assert_eq!(fast, general, "{dtype:?} per {:?}", scale.shape);
                }
            }
        }
    }

    #[test]
    fn fast_dequantize_matches_the_general_path() {
        let codes: Vec<u8> = (0..4 * 256).map(|i| (i % 256) as u8).collect();
        let inputs = [
            (
                Data::U8(codes.clone()),
                Some(Data::U8(vec![0, 3, 128, 255])),
            ),
            (
                Data::I8(codes.iter().map(|&c| c as i8).collect()),
                Some(Data::I8(vec![-128, -1, 0, 127])),
            ),
            (Data::Bits(DType::F8E4M3FN, codes.clone()), None),
            (Data::Bits(DType::F8E5M2FNUZ, codes.clone()), None),
        ];
        let scale = Array::f32(vec![4], vec![0.5, 3.0e-3, 1.0, 7.25]);
        for (data, zero) in inputs {
            let x = Array::new(vec![4, 256], data);
            let zp = zero.map(|z| Array::new(vec![4], z));
            let fast = dequantize(&x, &scale, zp.as_ref(), 0, 0, None).unwrap();
            let general = dequantize_general(&x, &scale, zp.as_ref(), 0, 0, DType::F32).unwrap();
            assert_eq!(bits(&fast.data), bits(&general.data), "{:?}", x.dtype());
        }
    }
}
