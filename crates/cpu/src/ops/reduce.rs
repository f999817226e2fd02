//! Reductions along axes: `Reduce*`, `ArgMax`/`ArgMin`, softmax family, cumulative ops, `TopK`.

use super::shape::transpose;
use super::{axis, R};
use crate::array::{Array, Data};
use rayon::prelude::*;
use sparkc_ir::op::Reduction;
use sparkc_ir::DType;

/// The sizes before, along and after one axis.
pub(crate) fn split_at_axis(shape: &[usize], a: usize) -> (usize, usize, usize) {
    (
        shape[..a].iter().product(),
        shape[a],
        shape[a + 1..].iter().product(),
    )
}

/// Moves `axes` to the end, returning the permuted array and the kept axes.
fn axes_last(x: &Array, axes: &[usize]) -> R<(Array, Vec<usize>)> {
    let kept: Vec<usize> = (0..x.rank()).filter(|a| !axes.contains(a)).collect();
    let mut perm: Vec<i64> = kept.iter().map(|&a| a as i64).collect();
    perm.extend(axes.iter().map(|&a| a as i64));
    let in_order = perm.iter().enumerate().all(|(i, &p)| i as i64 == p);
    let moved = if in_order {
        x.clone()
    } else {
        transpose(x, &perm)?
    };
    Ok((moved, kept))
}

fn reduce_f64(kind: Reduction, row: &[f64]) -> f64 {
    match kind {
        Reduction::Sum => row.iter().sum(),
        Reduction::Mean => row.iter().sum::<f64>() / row.len() as f64,
        Reduction::Prod => row.iter().product(),
        Reduction::Max => {
            row.iter().copied().fold(
                f64::NEG_INFINITY,
                |m, v| if v > m || v.is_nan() { v } else { m },
            )
        }
        Reduction::Min => {
            row.iter().copied().fold(
                f64::INFINITY,
                |m, v| if v < m || v.is_nan() { v } else { m },
            )
        }
        Reduction::SumSquare => row.iter().map(|v| v * v).sum(),
        Reduction::L1 => row.iter().map(|v| v.abs()).sum(),
        Reduction::L2 => row.iter().map(|v| v * v).sum::<f64>().sqrt(),
        Reduction::LogSum => row.iter().sum::<f64>().ln(),
        Reduction::LogSumExp => {
            let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if m.is_infinite() {
                return row.iter().map(|v| v.exp()).sum::<f64>().ln();
            }
            m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
        }
    }
}

fn reduce_i64(kind: Reduction, row: &[i64], dtype: DType) -> i64 {
    match kind {
        Reduction::Sum => row.iter().fold(0i64, |a, &v| a.wrapping_add(v)),
        Reduction::Mean => {
            if row.is_empty() {
                0
            } else {
                row.iter().fold(0i64, |a, &v| a.wrapping_add(v)) / row.len() as i64
            }
        }
        Reduction::Prod => row.iter().fold(1i64, |a, &v| a.wrapping_mul(v)),
        Reduction::Max => row
            .iter()
            .copied()
            .max()
            .unwrap_or(int_extreme(dtype, false)),
        Reduction::Min => row
            .iter()
            .copied()
            .min()
            .unwrap_or(int_extreme(dtype, true)),
        Reduction::SumSquare => row
            .iter()
            .fold(0i64, |a, &v| a.wrapping_add(v.wrapping_mul(v))),
        Reduction::L1 => row.iter().fold(0i64, |a, &v| a.wrapping_add(v.abs())),
        other => reduce_f64(other, &row.iter().map(|&v| v as f64).collect::<Vec<_>>()) as i64,
    }
}

fn int_extreme(dtype: DType, max: bool) -> i64 {
    let (lo, hi) = match dtype {
        DType::I8 => (i8::MIN as i64, i8::MAX as i64),
        DType::I16 => (i16::MIN as i64, i16::MAX as i64),
        DType::I32 => (i32::MIN as i64, i32::MAX as i64),
        DType::U8 => (0, u8::MAX as i64),
        DType::U16 => (0, u16::MAX as i64),
        DType::U32 => (0, u32::MAX as i64),
        DType::U64 => (0, -1),
        DType::Bool => (0, 1),
        _ => (i64::MIN, i64::MAX),
    };
    if max {
        hi
    } else {
        lo
    }
}

/// `Reduce*` over `axes` (all when absent, unless `noop_with_empty_axes`).
pub(crate) fn reduce(
    kind: Reduction,
    x: &Array,
    axes: Option<Vec<i64>>,
    keepdims: bool,
    noop_with_empty_axes: bool,
) -> R<Array> {
    let rank = x.rank();
    let axes = axes.unwrap_or_default();
    if axes.is_empty() && noop_with_empty_axes {
        return Ok(x.clone());
    }
    let mut axes: Vec<usize> = if axes.is_empty() {
        (0..rank).collect()
    } else {
        axes.iter().map(|&a| axis(a, rank)).collect::<R<_>>()?
    };
    axes.sort_unstable();
    axes.dedup();
    let (moved, kept) = axes_last(x, &axes)?;
    let row: usize = axes.iter().map(|&a| x.shape[a]).product();
    let rows: usize = kept.iter().map(|&a| x.shape[a]).product();
    let shape: Vec<usize> = if keepdims {
        (0..rank)
            .map(|a| if axes.contains(&a) { 1 } else { x.shape[a] })
            .collect()
    } else {
        kept.iter().map(|&a| x.shape[a]).collect()
    };
    let dtype = x.dtype();
    let data = if dtype.is_integer() || dtype == DType::Bool {
        let values = moved.data.to_i64s();
        let out: Vec<i64> = (0..rows)
            .map(|r| reduce_i64(kind, &values[r * row..(r + 1) * row], dtype))
            .collect();
        Data::from_i64s(dtype, out)
    } else if let Data::F32(values) = &moved.data {
        let reduce_row = |r: usize| -> f32 {
            let slice = &values[r * row..(r + 1) * row];
            match kind {
                Reduction::Sum | Reduction::Mean => {
                    let s = super::norm::lane_sum(slice, |v| v);
                    (if kind == Reduction::Mean {
                        s / row as f64
                    } else {
                        s
                    }) as f32
                }
                Reduction::Max => slice.iter().copied().fold(f32::NEG_INFINITY, |m, v| {
                    if v > m || v.is_nan() {
                        v
                    } else {
                        m
                    }
                }),
                _ => reduce_f64(
                    kind,
                    &slice.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
                ) as f32,
            }
        };
        let out: Vec<f32> = if rows * row >= super::elementwise::PARALLEL_MIN {
            (0..rows).into_par_iter().map(reduce_row).collect()
        } else {
            (0..rows).map(reduce_row).collect()
        };
        Data::F32(out)
    } else {
        let values = moved.data.to_f64s();
        let out: Vec<f64> = (0..rows)
            .map(|r| reduce_f64(kind, &values[r * row..(r + 1) * row]))
            .collect();
        Data::from_f64s(dtype, out, false)
    };
    Ok(Array::new(shape, data))
}

/// Index of the maximum (or minimum) along an axis.
pub(crate) fn arg(max: bool, x: &Array, ax: i64, keepdims: bool, last: bool) -> R<Array> {
    let a = axis(ax, x.rank())?;
    let (outer, n, inner) = split_at_axis(&x.shape, a);
    if n == 0 {
        return Err("cannot take the arg max/min of an empty axis".into());
    }
    let values = x.data.to_f64s();
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let mut best = 0;
            for k in 1..n {
                let v = values[(o * n + k) * inner + i];
                let b = values[(o * n + best) * inner + i];
                let better = if max { v > b } else { v < b };
                if better || (last && v == b) {
                    best = k;
                }
            }
            out.push(best as i64);
        }
    }
    let mut shape = x.shape.clone();
    if keepdims {
        shape[a] = 1;
    } else {
        shape.remove(a);
    }
    Ok(Array::i64(shape, out))
}

/// Softmax of one contiguous row, written so the exponentials vectorize.
pub(crate) fn softmax_row(row: &mut [f32], log: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            #[target_feature(enable = "avx2,fma")]
            fn wide(row: &mut [f32], log: bool) {
                softmax_row_body(row, log)
            }
            // SAFETY: the CPU was just checked to have AVX2 and FMA.
            unsafe { wide(row, log) };
            return;
        }
    }
    softmax_row_body(row, log)
}

#[inline(always)]
fn softmax_row_body(row: &mut [f32], log: bool) {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if log {
        let sum: f32 = row
            .iter()
            .map(|&v| super::elementwise::exp_f32(v - m))
            .sum();
        let shift = m + sum.ln();
        row.iter_mut().for_each(|v| *v -= shift);
        return;
    }
    row.iter_mut()
        .for_each(|v| *v = super::elementwise::exp_f32(*v - m));
    let inv = 1.0 / row.iter().sum::<f32>();
    row.iter_mut().for_each(|v| *v *= inv);
}

fn softmax_lane(values: &mut [f32], n: usize, inner: usize, log: bool) {
    if inner == 1 {
        softmax_row(&mut values[..n], log);
        return;
    }
    let mut m = f32::NEG_INFINITY;
    for k in 0..n {
        m = m.max(values[k * inner]);
    }
    let mut sum = 0f32;
    for k in 0..n {
        let e = super::elementwise::exp_f32(values[k * inner] - m);
        sum += e;
        if !log {
            values[k * inner] = e;
        }
    }
    if log {
        let ls = sum.ln();
        for k in 0..n {
            values[k * inner] = values[k * inner] - m - ls;
        }
    } else {
        let inv = 1.0 / sum;
        for k in 0..n {
            values[k * inner] *= inv;
        }
    }
}

/// Softmax (or log-softmax) along an axis, in place.
pub(crate) fn softmax(x: Array, ax: i64, log: bool) -> R<Array> {
    let a = axis(ax, x.rank())?;
    let (outer, n, inner) = split_at_axis(&x.shape, a);
    let dtype = x.dtype();
    if !dtype.is_float() {
        return Err(format!("softmax of {dtype}"));
    }
    if dtype == DType::F64 {
        let mut values = x.data.to_f64s();
        for o in 0..outer {
            for i in 0..inner {
                let lane: Vec<f64> = (0..n).map(|k| values[(o * n + k) * inner + i]).collect();
                let m = lane.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = lane.iter().map(|v| (v - m).exp()).sum();
                for k in 0..n {
                    let v = &mut values[(o * n + k) * inner + i];
                    *v = if log {
                        *v - m - sum.ln()
                    } else {
                        (*v - m).exp() / sum
                    };
                }
            }
        }
        return Ok(Array::new(x.shape, Data::F64(values)));
    }
    let shape = x.shape.clone();
    let mut values = match x.data {
        Data::F32(v) => v,
        other => other.to_f32s(),
    };
    if n > 0 && inner == 1 {
        if values.len() >= super::elementwise::PARALLEL_MIN {
            values
                .par_chunks_mut(n)
                .for_each(|lane| softmax_lane(lane, n, 1, log));
        } else {
            values
                .chunks_mut(n)
                .for_each(|lane| softmax_lane(lane, n, 1, log));
        }
    } else if n > 0 {
        for o in 0..outer {
            let block = &mut values[o * n * inner..(o + 1) * n * inner];
            for i in 0..inner {
                softmax_lane(&mut block[i..], n, inner, log);
            }
        }
    }
    Ok(Array::new(shape, Data::from_f32s(dtype, values)))
}

/// One-hot of the maximum along an axis (the first among equals).
pub(crate) fn hardmax(x: &Array, ax: i64) -> R<Array> {
    let a = axis(ax, x.rank())?;
    let (outer, n, inner) = split_at_axis(&x.shape, a);
    let values = x.data.to_f64s();
    let mut out = vec![0.0; values.len()];
    for o in 0..outer {
        for i in 0..inner {
            let mut best = 0;
            for k in 1..n {
                if values[(o * n + k) * inner + i] > values[(o * n + best) * inner + i] {
                    best = k;
                }
            }
            if n > 0 {
                out[(o * n + best) * inner + i] = 1.0;
            }
        }
    }
    Ok(Array::new(
        x.shape.clone(),
        Data::from_f64s(x.dtype(), out, false),
    ))
}

/// Cumulative sum (or product) along an axis.
pub(crate) fn cumulative(x: &Array, ax: Vec<i64>, exclusive: bool, reverse: bool) -> R<Array> {
    scan_axis(x, ax, exclusive, reverse, false)
}

/// Cumulative product along an axis.
pub(crate) fn cumulative_product(
    x: &Array,
    ax: Vec<i64>,
    exclusive: bool,
    reverse: bool,
) -> R<Array> {
    scan_axis(x, ax, exclusive, reverse, true)
}

fn scan_axis(x: &Array, ax: Vec<i64>, exclusive: bool, reverse: bool, product: bool) -> R<Array> {
    let a = axis(*ax.first().ok_or("axis is empty")?, x.rank())?;
    let (outer, n, inner) = split_at_axis(&x.shape, a);
    let identity = if product { 1.0 } else { 0.0 };
    macro_rules! run {
        ($values:expr, $identity:expr, $op:expr) => {{
            let values = $values;
            let mut out = values.clone();
            for o in 0..outer {
                for i in 0..inner {
                    let mut acc = $identity;
                    for step in 0..n {
                        let k = if reverse { n - 1 - step } else { step };
                        let p = (o * n + k) * inner + i;
                        if exclusive {
                            out[p] = acc;
                            acc = $op(acc, values[p]);
                        } else {
                            acc = $op(acc, values[p]);
                            out[p] = acc;
                        }
                    }
                }
            }
            out
        }};
    }
    let data = if x.dtype().is_integer() {
        let op = |a: i64, b: i64| {
            if product {
                a.wrapping_mul(b)
            } else {
                a.wrapping_add(b)
            }
        };
        Data::from_i64s(x.dtype(), run!(x.data.to_i64s(), identity as i64, op))
    } else {
        let op = |a: f64, b: f64| if product { a * b } else { a + b };
        Data::from_f64s(x.dtype(), run!(x.data.to_f64s(), identity, op), false)
    };
    Ok(Array::new(x.shape.clone(), data))
}

/// The `k` largest (or smallest) along an axis: values and i64 indices.
pub(crate) fn top_k(
    x: &Array,
    k: Vec<i64>,
    ax: i64,
    largest: bool,
    _sorted: bool,
) -> R<Vec<Array>> {
    let a = axis(ax, x.rank())?;
    let (outer, n, inner) = split_at_axis(&x.shape, a);
    let k = *k.first().ok_or("k is empty")?;
    if k < 0 || k as usize > n {
        return Err(format!("k = {k} is outside 0..={n}"));
    }
    let k = k as usize;
    let values = x.data.to_f64s();
    let mut picks = Vec::with_capacity(outer * k * inner);
    let mut order = vec![0usize; outer * k * inner];
    for o in 0..outer {
        for i in 0..inner {
            let mut lane: Vec<usize> = (0..n).collect();
            lane.sort_by(|&p, &q| {
                let (u, v) = (
                    values[(o * n + p) * inner + i],
                    values[(o * n + q) * inner + i],
                );
                let ord = if largest {
                    v.total_cmp(&u)
                } else {
                    u.total_cmp(&v)
                };
                ord.then(p.cmp(&q))
            });
            for (j, &idx) in lane[..k].iter().enumerate() {
                order[(o * k + j) * inner + i] = idx;
            }
        }
    }
    for o in 0..outer {
        for j in 0..k {
            for i in 0..inner {
                picks.push((o * n + order[(o * k + j) * inner + i]) * inner + i);
            }
        }
    }
    let mut shape = x.shape.clone();
    shape[a] = k;
    let indices: Vec<i64> = order.iter().map(|&v| v as i64).collect();
    Ok(vec![
        Array::new(shape.clone(), x.data.take(&picks)),
        Array::i64(shape, indices),
    ])
}
