//! `Resize` (nearest, linear, cubic; every coordinate mode; antialiasing), applied axis by axis;
//! integers are truncated toward zero, as onnxruntime and the ONNX reference store them, and
//! saturated to their type.

use super::elementwise::min_tasks;
use super::reduce::split_at_axis;
use super::shape::index_map;
use super::{axis, Args, R};
use crate::array::{Array, Data};
use rayon::prelude::*;
use sparkc_ir::op::ResizeAttrs;

/// Taps of one output position along one axis, and whether it falls outside the crop.
struct Taps {
    taps: Vec<(usize, f64)>,
    outside: bool,
}

/// The cubic convolution kernel with coefficient `a`.
pub(crate) fn cubic(x: f64, a: f64) -> f64 {
    let x = x.abs();
    if x <= 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

#[allow(clippy::too_many_arguments)]
fn axis_taps(
    attrs: &ResizeAttrs,
    input: usize,
    output: usize,
    scale: f64,
    roi: (f64, f64),
) -> R<Vec<Taps>> {
    let in_f = input as f64;
    // The reference uses the unrounded output length `input·scale` in the coordinate transforms.
    let out_f = in_f * scale;
    (0..output)
        .map(|o| {
            let x = o as f64;
            let x_ori = match attrs.coordinate_transformation_mode.as_str() {
                "half_pixel" => (x + 0.5) / scale - 0.5,
                "half_pixel_symmetric" => {
                    let adjustment = output as f64 / out_f;
                    let offset = in_f / 2.0 * (1.0 - adjustment);
                    offset + (x + 0.5) / scale - 0.5
                }
                "pytorch_half_pixel" => {
                    if out_f > 1.0 {
                        (x + 0.5) / scale - 0.5
                    } else {
                        0.0
                    }
                }
                "align_corners" => {
                    if out_f == 1.0 {
                        0.0
                    } else {
                        x * (in_f - 1.0) / (out_f - 1.0)
                    }
                }
                "asymmetric" => x / scale,
                "tf_crop_and_resize" => {
                    if out_f > 1.0 {
                        roi.0 * (in_f - 1.0) + x * (roi.1 - roi.0) * (in_f - 1.0) / (out_f - 1.0)
                    } else {
                        0.5 * (roi.0 + roi.1) * (in_f - 1.0)
                    }
                }
                other => {
                    return Err(format!(
                        "coordinate_transformation_mode '{other}' is not supported"
                    ))
                }
            };
            let outside = attrs.coordinate_transformation_mode == "tf_crop_and_resize"
                && (x_ori < 0.0 || x_ori > in_f - 1.0);
            let clamp = |i: i64| i.clamp(0, input as i64 - 1) as usize;
            let taps = match attrs.mode.as_str() {
                "nearest" => {
                    let i = match attrs.nearest_mode.as_str() {
                        "round_prefer_ceil" => (x_ori + 0.5).floor(),
                        "floor" => x_ori.floor(),
                        "ceil" => x_ori.ceil(),
                        _ => {
                            if x_ori.fract() == 0.5 || x_ori.fract() == -0.5 {
                                x_ori.floor()
                            } else {
                                x_ori.round()
                            }
                        }
                    };
                    vec![(clamp(i as i64), 1.0)]
                }
                "linear" | "cubic" => {
                    let (radius, kernel): (f64, Box<dyn Fn(f64) -> f64>) = if attrs.mode == "linear"
                    {
                        (1.0, Box::new(|t: f64| (1.0 - t.abs()).max(0.0)))
                    } else {
                        let a = f64::from(attrs.cubic_coeff_a);
                        (2.0, Box::new(move |t: f64| cubic(t, a)))
                    };
                    let s = if attrs.antialias && scale < 1.0 {
                        scale
                    } else {
                        1.0
                    };
                    let base = x_ori.floor();
                    let ratio = x_ori - base;
                    let start = (-radius / s).floor() as i64 + 1;
                    let mut taps: Vec<(i64, f64)> = (start..=1 - start)
                        .map(|i| (base as i64 + i, kernel(s * (i as f64 - ratio))))
                        .collect();
                    if attrs.antialias && s < 1.0 {
                        let sum: f64 = taps.iter().map(|t| t.1).sum();
                        taps.iter_mut().for_each(|t| t.1 /= sum);
                    }
                    if attrs.exclude_outside {
                        taps.iter_mut()
                            .filter(|t| t.0 < 0 || t.0 >= input as i64)
                            .for_each(|t| t.1 = 0.0);
                        let sum: f64 = taps.iter().map(|t| t.1).sum();
                        if sum != 0.0 {
                            taps.iter_mut().for_each(|t| t.1 /= sum);
                        }
                    }
                    taps.into_iter().map(|(i, w)| (clamp(i), w)).collect()
                }
                other => return Err(format!("mode '{other}' is not supported")),
            };
            Ok(Taps { taps, outside })
        })
        .collect()
}

/// ONNX `Resize`; inputs `x, roi?, scales?, sizes?`.
pub(crate) fn resize(args: &Args, attrs: &ResizeAttrs) -> R<Array> {
    let x = args.tensor(0)?;
    let rank = x.rank();
    let axes: Vec<usize> = if attrs.axes.is_empty() {
        (0..rank).collect()
    } else {
        attrs
            .axes
            .iter()
            .map(|&a| axis(a, rank))
            .collect::<R<_>>()?
    };
    let roi = args
        .opt_tensor(1)?
        .map(|r| r.data.to_f64s())
        .filter(|r| !r.is_empty());
    let scales = args
        .opt_tensor(2)?
        .map(|s| s.data.to_f64s())
        .filter(|s| !s.is_empty());
    let sizes = args.opt_ints(3)?.filter(|s| !s.is_empty());
    let mut out_sizes = x.shape.clone();
    let mut axis_scales = vec![1.0f64; rank];
    match (scales, sizes) {
        (Some(scales), None) => {
            if scales.len() != axes.len() {
                return Err(format!(
                    "scales has {} values for {} axes",
                    scales.len(),
                    axes.len()
                ));
            }
            for (k, &a) in axes.iter().enumerate() {
                if scales[k] <= 0.0 {
                    return Err(format!("scale {} must be positive", scales[k]));
                }
                axis_scales[a] = scales[k];
                out_sizes[a] = (x.shape[a] as f64 * scales[k]).floor() as usize;
            }
        }
        (None, Some(sizes)) => {
            if sizes.len() != axes.len() {
                return Err(format!(
                    "sizes has {} values for {} axes",
                    sizes.len(),
                    axes.len()
                ));
            }
            let ratios: Vec<f64> = axes
                .iter()
                .enumerate()
                .map(|(k, &a)| sizes[k] as f64 / x.shape[a] as f64)
                .collect();
            let common = match attrs.keep_aspect_ratio_policy.as_str() {
                "not_larger" => Some(ratios.iter().copied().fold(f64::INFINITY, f64::min)),
                "not_smaller" => Some(ratios.iter().copied().fold(0.0, f64::max)),
                _ => None,
            };
            for (k, &a) in axes.iter().enumerate() {
                match common {
                    Some(s) => {
                        axis_scales[a] = s;
                        out_sizes[a] = (s * x.shape[a] as f64).round() as usize;
                    }
                    None => {
                        axis_scales[a] = ratios[k];
                        out_sizes[a] = sizes[k].max(0) as usize;
                    }
                }
            }
        }
        _ => return Err("exactly one of scales and sizes must be given".into()),
    }
    super::checked_len(&out_sizes)?;
    let roi_of = |a: usize, k: usize| -> (f64, f64) {
        match &roi {
            Some(r) if r.len() == 2 * axes.len() => (r[k], r[k + axes.len()]),
            Some(r) if r.len() == 2 * rank => (r[a], r[a + rank]),
            _ => (0.0, 1.0),
        }
    };
    let mut shape = x.shape.clone();
    let mut passes = Vec::new();
    let mut outside: Vec<(usize, Vec<bool>)> = Vec::new();
    for (k, &a) in axes.iter().enumerate() {
        if out_sizes[a] == shape[a]
            && axis_scales[a] == 1.0
            && attrs.coordinate_transformation_mode != "tf_crop_and_resize"
        {
            continue;
        }
        let taps = axis_taps(attrs, shape[a], out_sizes[a], axis_scales[a], roi_of(a, k))?;
        if taps.iter().any(|t| t.outside) {
            outside.push((a, taps.iter().map(|t| t.outside).collect::<Vec<bool>>()));
        }
        passes.push(Pass {
            axis: a,
            shape: shape.clone(),
            taps,
        });
        shape[a] = out_sizes[a];
    }
    let mask = (!outside.is_empty())
        .then(|| index_map(&shape, |ix| outside.iter().any(|(a, flags)| flags[ix[*a]])));
    let data = match &x.data {
        // f32 data interpolates in f32, as onnxruntime does: a few taps per output and axis.
        Data::F32(values) => {
            let mut values = interpolate(values, &passes);
            if let Some(mask) = &mask {
                fill_outside(&mut values, mask, attrs.extrapolation_value);
            }
            Data::F32(values)
        }
        _ => {
            let mut values = interpolate(&x.data.to_f64s(), &passes);
            if let Some(mask) = &mask {
                fill_outside(&mut values, mask, f64::from(attrs.extrapolation_value));
            }
            if x.dtype().is_integer() {
                // Truncated (onnxruntime's and the reference's `astype`) and saturated: a cubic
                // overshoot of a u8 image stops at 0 and 255, where `astype` would wrap it.
                let (lo, hi) = super::quant::int_limits(x.dtype());
                Data::from_f64s(
                    x.dtype(),
                    values
                        .into_iter()
                        .map(|v| v.trunc().clamp(lo, hi))
                        .collect(),
                    true,
                )
            } else {
                Data::from_f64s(x.dtype(), values, false)
            }
        }
    };
    Ok(Array::new(shape, data))
}

/// One axis of a resize: the shape before it and the taps of each output position along it.
struct Pass {
    axis: usize,
    shape: Vec<usize>,
    taps: Vec<Taps>,
}

/// A type resize interpolates in.
trait Sample:
    Copy + Default + Send + Sync + std::iter::Sum + std::ops::Mul<Output = Self> + std::ops::AddAssign
{
    /// A tap's weight in this type.
    fn weight(w: f64) -> Self;
}

impl Sample for f32 {
    fn weight(w: f64) -> f32 {
        w as f32
    }
}

impl Sample for f64 {
    fn weight(w: f64) -> f64 {
        w
    }
}

/// Applies each pass in turn to `input`.
fn interpolate<T: Sample>(input: &[T], passes: &[Pass]) -> Vec<T> {
    let mut values: Option<Vec<T>> = None;
    for pass in passes {
        let (outer, n, inner) = split_at_axis(&pass.shape, pass.axis);
        let taps: Vec<Vec<(usize, T)>> = pass
            .taps
            .iter()
            .map(|t| {
                t.taps
                    .iter()
                    .filter(|&&(_, w)| w != 0.0)
                    .map(|&(i, w)| (i, T::weight(w)))
                    .collect()
            })
            .collect();
        let m = taps.len();
        let mut next = vec![T::default(); outer * m * inner];
        let values_ref = values.as_deref().unwrap_or(input);
        if inner == 1 {
            // The last axis: one multiply-add per tap, no row slices.
            next.par_chunks_mut(m.max(1))
                .with_min_len(min_tasks(m * 2))
                .enumerate()
                .for_each(|(o, row)| {
                    let src = &values_ref[o * n..(o + 1) * n];
                    for (d, t) in row.iter_mut().zip(&taps) {
                        *d = t.iter().map(|&(i, w)| w * src[i]).sum();
                    }
                });
        } else {
            next.par_chunks_mut((m * inner).max(1))
                .with_min_len(min_tasks(m * inner * 2))
                .enumerate()
                .for_each(|(o, block)| {
                    for (t, dst) in taps.iter().zip(block.chunks_mut(inner)) {
                        for &(i, w) in t {
                            let src = &values_ref[(o * n + i) * inner..(o * n + i + 1) * inner];
                            for (d, &s) in dst.iter_mut().zip(src) {
                                *d += w * s;
                            }
                        }
                    }
                });
        }
        values = Some(next);
    }
    values.unwrap_or_else(|| input.to_vec())
}

/// Sets the positions outside a `tf_crop_and_resize` crop to the extrapolation value.
fn fill_outside<T: Copy>(values: &mut [T], outside: &[bool], fill: T) {
    values
        .iter_mut()
        .zip(outside)
        .filter(|(_, &o)| o)
        .for_each(|(v, _)| *v = fill);
}
