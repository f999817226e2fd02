//! Normalizations: batch, instance, layer, group, RMS, Lp, mean-variance and LRN.

use super::elementwise::{expand, min_tasks};
use super::{axis, Args, R};
use crate::array::{Array, Data};
use rayon::prelude::*;
use sparkc_ir::DType;

/// Mean and population variance of a slice, accumulated in f64.
fn moments(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, var)
}

/// `BatchNormalization`: inference with running statistics, or training with batch statistics.
pub(crate) fn batch_norm(
    args: &Args,
    epsilon: f32,
    momentum: f32,
    training: bool,
) -> R<Vec<Array>> {
    let x = args.tensor(0)?;
    let (scale, bias, mean, var) = (
        args.tensor(1)?.data.to_f64s(),
        args.tensor(2)?.data.to_f64s(),
        args.tensor(3)?.data.to_f64s(),
        args.tensor(4)?.data.to_f64s(),
    );
    if x.rank() < 2 {
        return Err(format!("input must have rank ≥ 2, found {:?}", x.shape));
    }
    let (n, c) = (x.shape[0], x.shape[1]);
    let inner: usize = x.shape[2..].iter().product();
    if [&scale, &bias, &mean, &var].iter().any(|v| v.len() != c) {
        return Err(format!("scale, bias, mean and var must have {c} values"));
    }
    let values = x.data.to_f64s();
    let (use_mean, use_var) = if training {
        let mut bm = vec![0.0; c];
        let mut bv = vec![0.0; c];
        for ch in 0..c {
            let lane: Vec<f64> = (0..n)
                .flat_map(|b| {
                    values[(b * c + ch) * inner..(b * c + ch + 1) * inner]
                        .iter()
                        .copied()
                })
                .collect();
            (bm[ch], bv[ch]) = moments(&lane);
        }
        (bm, bv)
    } else {
        (mean.clone(), var.clone())
    };
    let eps = f64::from(epsilon);
    let out: Vec<f64> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = (i / inner.max(1)) % c;
            (v - use_mean[ch]) / (use_var[ch] + eps).sqrt() * scale[ch] + bias[ch]
        })
        .collect();
    let y = Array::new(x.shape.clone(), Data::from_f64s(x.dtype(), out, false));
    if !training {
        return Ok(vec![y]);
    }
    let m = f64::from(momentum);
    let running = |old: &[f64], new: &[f64]| -> Array {
        let v: Vec<f64> = old
            .iter()
            .zip(new)
            .map(|(o, b)| o * m + b * (1.0 - m))
            .collect();
        Array::new(
            vec![c],
            Data::from_f64s(
                args.tensor(3).map(|t| t.dtype()).unwrap_or(DType::F32),
                v,
                false,
            ),
        )
    };
    Ok(vec![y, running(&mean, &use_mean), running(&var, &use_var)])
}

/// Inference `BatchNormalization` of f32 data, in place: `x·a[c] + b[c]` per channel.
pub(crate) fn batch_norm_inference(
    mut x: Array,
    scale: &[f64],
    bias: &[f64],
    mean: &[f64],
    var: &[f64],
    epsilon: f32,
) -> R<Array> {
    let c = *x.shape.get(1).ok_or("input must have rank ≥ 2")?;
    if [scale, bias, mean, var].iter().any(|v| v.len() != c) {
        return Err(format!("scale, bias, mean and var must have {c} values"));
    }
    let inner: usize = x.shape[2..].iter().product();
    let a: Vec<f32> = (0..c)
        .map(|k| (scale[k] / (var[k] + f64::from(epsilon)).sqrt()) as f32)
        .collect();
    let b: Vec<f32> = (0..c)
        .map(|k| (bias[k] - mean[k] * scale[k] / (var[k] + f64::from(epsilon)).sqrt()) as f32)
        .collect();
    if let Data::F32(values) = &mut x.data {
        values
            .par_chunks_mut(inner.max(1))
            .with_min_len(min_tasks(inner))
            .enumerate()
            .for_each(|(plane, chunk)| {
                let k = plane % c;
                chunk.iter_mut().for_each(|v| *v = *v * a[k] + b[k]);
            });
    }
    Ok(x)
}

/// `InstanceNormalization`: per sample and channel over the spatial axes.
pub(crate) fn instance_norm(x: &Array, scale: &Array, bias: &Array, epsilon: f32) -> R<Array> {
    let (scale, bias) = (scale.data.to_f64s(), bias.data.to_f64s());
    let c = *x.shape.get(1).ok_or("input must have rank ≥ 2")?;
    let inner: usize = x.shape[2..].iter().product();
    let values = x.data.to_f64s();
    let mut out = vec![0.0; values.len()];
    for (plane, dst) in out.chunks_mut(inner.max(1)).enumerate() {
        let src = &values[plane * inner..(plane + 1) * inner];
        let (mean, var) = moments(src);
        let ch = plane % c;
        let inv = 1.0 / (var + f64::from(epsilon)).sqrt();
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = (v - mean) * inv * scale[ch] + bias[ch];
        }
    }
    Ok(Array::new(
        x.shape.clone(),
        Data::from_f64s(x.dtype(), out, false),
    ))
}

/// The f64 sum of `f(v)` over `values`, kept in eight independent lanes so the loop vectorizes.
pub(crate) fn lane_sum(values: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut lanes = [0f64; 8];
    let chunks = values.chunks_exact(8);
    let rest: f64 = chunks.remainder().iter().map(|&v| f(f64::from(v))).sum();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(f64::from(v));
        }
    }
    lanes.iter().sum::<f64>() + rest
}

/// Normalizes each row of `values` (rows of `row` elements) by mean and variance, or by RMS.
fn normalize_rows(
    values: &[f32],
    row: usize,
    epsilon: f32,
    rms: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let rows = values.len() / row.max(1);
    let mut out = vec![0f32; values.len()];
    let mut means = vec![0f32; rows];
    let mut inv_std = vec![0f32; rows];
    out.par_chunks_mut(row.max(1))
        .zip(means.par_iter_mut().zip(inv_std.par_iter_mut()))
        .with_min_len(min_tasks(row))
        .enumerate()
        .for_each(|(r, (dst, (mean_out, inv_out)))| {
            let src = &values[r * row..(r + 1) * row];
            let mean = if rms {
                0.0
            } else {
                lane_sum(src, |v| v) / row as f64
            };
            let var = lane_sum(src, |v| (v - mean) * (v - mean)) / row as f64;
            let inv = 1.0 / (var + f64::from(epsilon)).sqrt();
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = ((f64::from(v) - mean) * inv) as f32;
            }
            *mean_out = mean as f32;
            *inv_out = inv as f32;
        });
    (out, means, inv_std)
}

/// `LayerNormalization` over the axes from `axis`; outputs `Y, Mean, InvStdDev`.
pub(crate) fn layer_norm(
    x: &Array,
    scale: &Array,
    bias: Option<&Array>,
    ax: i64,
    epsilon: f32,
    outputs: usize,
) -> R<Vec<Array>> {
    let a = axis(ax, x.rank())?;
    let norm_shape = &x.shape[a..];
    let row: usize = norm_shape.iter().product();
    let (mut y, means, inv) = normalize_rows(&x.data.f32s(), row, epsilon, false);
    apply_affine(&mut y, norm_shape, scale, bias)?;
    let mut stat_shape = x.shape[..a].to_vec();
    stat_shape.extend(std::iter::repeat_n(1, x.rank() - a));
    let mut result = vec![Array::new(x.shape.clone(), Data::from_f32s(x.dtype(), y))];
    if outputs > 1 {
        result.push(Array::f32(stat_shape.clone(), means));
    }
    if outputs > 2 {
        result.push(Array::f32(stat_shape, inv));
    }
    Ok(result)
}

/// `RMSNormalization` over the axes from `axis`.
pub(crate) fn rms_norm(x: &Array, scale: &Array, ax: i64, epsilon: f32) -> R<Array> {
    let a = axis(ax, x.rank())?;
    let norm_shape = &x.shape[a..];
    let row: usize = norm_shape.iter().product();
    let (mut y, _, _) = normalize_rows(&x.data.f32s(), row, epsilon, true);
    apply_affine(&mut y, norm_shape, scale, None)?;
    Ok(Array::new(x.shape.clone(), Data::from_f32s(x.dtype(), y)))
}

/// Multiplies each row by `scale` and adds `bias`, both broadcast to the row's shape.
fn apply_affine(y: &mut [f32], row_shape: &[usize], scale: &Array, bias: Option<&Array>) -> R<()> {
    let row: usize = row_shape.iter().product();
    let fit = |t: &Array| -> R<Vec<f32>> {
        let target = super::elementwise::broadcast_shape(&[&t.shape, row_shape])?;
        if target != row_shape {
            return Err(format!(
                "{:?} does not broadcast to the normalized shape {row_shape:?}",
                t.shape
            ));
        }
        Ok(expand(t, row_shape).data.to_f32s())
    };
    let s = fit(scale)?;
    let b = bias.map(fit).transpose()?;
    y.par_chunks_mut(row.max(1))
        .with_min_len(min_tasks(row))
        .for_each(|chunk| match &b {
            Some(b) => chunk
                .iter_mut()
                .zip(s.iter().zip(b))
                .for_each(|(v, (&s, &b))| *v = *v * s + b),
            None => chunk.iter_mut().zip(&s).for_each(|(v, &s)| *v *= s),
        });
    Ok(())
}

/// `GroupNormalization`: statistics per sample and channel group; scale per channel (or per group, opset 18).
pub(crate) fn group_norm(
    x: &Array,
    scale: &Array,
    bias: &Array,
    groups: i64,
    epsilon: f32,
) -> R<Array> {
    let c = *x.shape.get(1).ok_or("input must have rank ≥ 2")?;
    let groups = groups.max(1) as usize;
    if c % groups != 0 {
        return Err(format!("{c} channels do not split into {groups} groups"));
    }
    let inner: usize = x.shape[2..].iter().product();
    let row = c / groups * inner;
    let (mut y, _, _) = normalize_rows(&x.data.f32s(), row, epsilon, false);
    let (s, b) = (scale.data.to_f32s(), bias.data.to_f32s());
    let per_group = s.len() == groups && groups != c;
    if !per_group && s.len() != c {
        return Err(format!(
            "scale has {} values, expected {c} (or {groups})",
            s.len()
        ));
    }
    for (i, v) in y.iter_mut().enumerate() {
        let ch = (i / inner.max(1)) % c;
        let k = if per_group { ch / (c / groups) } else { ch };
        *v = *v * s[k] + b[k];
    }
    Ok(Array::new(x.shape.clone(), Data::from_f32s(x.dtype(), y)))
}

/// Local response normalization across channels.
pub(crate) fn lrn(x: &Array, alpha: f32, beta: f32, bias: f32, size: i64) -> R<Array> {
    let c = *x.shape.get(1).ok_or("input must have rank ≥ 2")?;
    let n = x.shape[0];
    let inner: usize = x.shape[2..].iter().product();
    let values = x.data.to_f64s();
    let size = size.max(1) as usize;
    let (lo, hi) = ((size - 1) / 2, size.div_ceil(2) - 1);
    let mut out = vec![0.0; values.len()];
    for b in 0..n {
        for ch in 0..c {
            for i in 0..inner {
                let from = ch.saturating_sub(lo);
                let to = (ch + hi).min(c - 1);
                let sum: f64 = (from..=to)
                    .map(|k| values[(b * c + k) * inner + i].powi(2))
                    .sum();
                let p = (b * c + ch) * inner + i;
                out[p] = values[p]
                    / (f64::from(bias) + f64::from(alpha) / size as f64 * sum)
                        .powf(f64::from(beta));
            }
        }
    }
    Ok(Array::new(
        x.shape.clone(),
        Data::from_f64s(x.dtype(), out, false),
    ))
}

/// `LpNormalization` along an axis (p = 1 or 2).
pub(crate) fn lp_normalization(x: &Array, ax: i64, p: i64) -> R<Array> {
    let a = axis(ax, x.rank())?;
    let (outer, n, inner) = super::reduce::split_at_axis(&x.shape, a);
    let mut values = x.data.to_f64s();
    for o in 0..outer {
        for i in 0..inner {
            let lane = |k: usize| (o * n + k) * inner + i;
            let norm = if p == 1 {
                (0..n).map(|k| values[lane(k)].abs()).sum::<f64>()
            } else {
                (0..n).map(|k| values[lane(k)].powi(2)).sum::<f64>().sqrt()
            };
            for k in 0..n {
                if norm != 0.0 {
                    values[lane(k)] /= norm;
                }
            }
        }
    }
    Ok(Array::new(
        x.shape.clone(),
        Data::from_f64s(x.dtype(), values, false),
    ))
}

/// `MeanVarianceNormalization` over `axes`.
pub(crate) fn mean_variance(x: &Array, axes: &[i64]) -> R<Array> {
    use sparkc_ir::op::{Binary, Reduction};
    let mean = super::reduce::reduce(Reduction::Mean, x, Some(axes.to_vec()), true, false)?;
    let centered = super::elementwise::binary(&Binary::Sub, x, &mean)?;
    let squared = super::elementwise::binary(&Binary::Mul, &centered, &centered)?;
    let var = super::reduce::reduce(Reduction::Mean, &squared, Some(axes.to_vec()), true, false)?;
    let std: Vec<f64> = var.data.to_f64s().iter().map(|v| v.sqrt() + 1e-9).collect();
    let std = Array::new(var.shape.clone(), Data::from_f64s(x.dtype(), std, false));
    super::elementwise::binary(&Binary::Div, &centered, &std)
}
