//! Data movement and shape ops: reshape family, transpose, slice, concat, split, pad, tile...

use super::elementwise::{broadcast_shape, expand};
use super::{axis, R};
use crate::array::{strides, Array, Data};

/// Concatenation along an axis.
pub(crate) fn concat(inputs: &[&Array], ax: i64) -> R<Array> {
    let first = inputs.first().ok_or("needs at least one input")?;
    let rank = first.rank();
    let a = axis(ax, rank)?;
    let mut shape = first.shape.clone();
    shape[a] = 0;
    for x in inputs {
        if x.rank() != rank
            || x.shape
                .iter()
                .enumerate()
                .any(|(i, &d)| i != a && d != first.shape[i])
        {
            return Err(format!(
                "inputs of shapes {:?} and {:?} do not concatenate on axis {a}",
                first.shape, x.shape
            ));
        }
        shape[a] += x.shape[a];
    }
    let outer: usize = shape[..a].iter().product();
    let inner: usize = shape[a + 1..].iter().product();
    let mut out = Data::zeros(first.dtype(), 0);
    for o in 0..outer {
        for x in inputs {
            let chunk = x.shape[a] * inner;
            let indices: Vec<usize> = (o * chunk..(o + 1) * chunk).collect();
            out.extend_from(&x.data.take(&indices));
        }
    }
    Ok(Array::new(shape, out))
}

/// Splits along an axis into given sizes, `num_outputs` parts, or `outputs` equal parts.
pub(crate) fn split(
    x: &Array,
    sizes: Option<Vec<i64>>,
    ax: i64,
    num_outputs: i64,
    outputs: usize,
) -> R<Vec<Array>> {
    let a = axis(ax, x.rank())?;
    let len = x.shape[a];
    let sizes: Vec<usize> = match sizes {
        Some(s) => {
            if s.iter().any(|&v| v < 0) || s.iter().sum::<i64>() as usize != len {
                return Err(format!("split sizes {s:?} do not add up to {len}"));
            }
            s.iter().map(|&v| v as usize).collect()
        }
        None => {
            let parts = if num_outputs > 0 {
                num_outputs as usize
            } else {
                outputs
            };
            let each = len.div_ceil(parts.max(1));
            (0..parts)
                .map(|i| each.min(len.saturating_sub(i * each)))
                .collect()
        }
    };
    let mut start = 0;
    sizes
        .iter()
        .map(|&size| {
            let r = slice_axis(x, a, start, size);
            start += size;
            Ok(r)
        })
        .collect()
}

/// `size` entries from `start` along one axis.
pub(crate) fn slice_axis(x: &Array, a: usize, start: usize, size: usize) -> Array {
    let mut shape = x.shape.clone();
    shape[a] = size;
    let st = strides(&x.shape);
    Array::new(
        shape.clone(),
        x.data.gather_strided(&shape, &st, start * st[a]),
    )
}

/// ONNX `Slice`.
pub(crate) fn slice(
    x: &Array,
    starts: &[i64],
    ends: &[i64],
    axes: Option<Vec<i64>>,
    steps: Option<Vec<i64>>,
) -> R<Array> {
    let rank = x.rank();
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("starts, ends, axes and steps must have the same length".into());
    }
    let mut begin = vec![0i64; rank];
    let mut step = vec![1i64; rank];
    let mut shape = x.shape.clone();
    for i in 0..starts.len() {
        let a = axis(axes[i], rank)?;
        let dim = x.shape[a] as i64;
        let s = steps[i];
        if s == 0 {
            return Err("a step is 0".into());
        }
        let clamp = |v: i64, lo: i64, hi: i64| v.clamp(lo, hi);
        let norm = |v: i64| if v < 0 { v + dim } else { v };
        let (b, e) = if s > 0 {
            (clamp(norm(starts[i]), 0, dim), clamp(norm(ends[i]), 0, dim))
        } else {
            (
                clamp(norm(starts[i]), 0, dim - 1),
                clamp(norm(ends[i]), -1, dim - 1),
            )
        };
        let count = if s > 0 {
            ((e - b).max(0) + s - 1) / s
        } else {
            ((b - e).max(0) + (-s) - 1) / (-s)
        };
        begin[a] = b;
        step[a] = s;
        shape[a] = count as usize;
    }
    let st = strides(&x.shape);
    let indices = index_map(&shape, |index| {
        let mut p = 0i64;
        for k in 0..rank {
            p += (begin[k] + index[k] as i64 * step[k]) * st[k] as i64;
        }
        p as usize
    });
    Ok(Array::new(shape, x.data.take(&indices)))
}

/// Removes size-1 axes.
pub(crate) fn squeeze(x: Array, axes: Option<Vec<i64>>) -> R<Array> {
    let rank = x.rank();
    let shape = match axes {
        Some(axes) => {
            let axes: Vec<usize> = axes.iter().map(|&a| axis(a, rank)).collect::<R<_>>()?;
            for &a in &axes {
                if x.shape[a] != 1 {
                    return Err(format!("cannot squeeze axis {a} of size {}", x.shape[a]));
                }
            }
            x.shape
                .iter()
                .enumerate()
                .filter(|(i, _)| !axes.contains(i))
                .map(|(_, &d)| d)
                .collect()
        }
        None => x.shape.iter().copied().filter(|&d| d != 1).collect(),
    };
    Ok(x.reshaped(shape))
}

/// Inserts size-1 axes.
pub(crate) fn unsqueeze(x: Array, axes: &[i64]) -> R<Array> {
    let rank = x.rank() + axes.len();
    let mut axes: Vec<usize> = axes.iter().map(|&a| axis(a, rank)).collect::<R<_>>()?;
    axes.sort_unstable();
    let mut shape = x.shape.clone();
    for a in axes {
        shape.insert(a, 1);
    }
    Ok(x.reshaped(shape))
}

/// ONNX `Reshape` (0 copies the input dim unless `allowzero`, -1 is inferred).
pub(crate) fn reshape(x: Array, target: &[i64], allowzero: bool) -> R<Array> {
    let mut shape = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        shape.push(match t {
            0 if !allowzero => *x.shape.get(i).ok_or("0 copies a dim the input lacks")?,
            -1 => {
                if infer.replace(i).is_some() {
                    return Err("more than one -1 in the shape".into());
                }
                1
            }
            t if t < 0 => return Err(format!("invalid dim {t}")),
            t => t as usize,
        });
    }
    if let Some(i) = infer {
        let known: usize = shape.iter().product();
        if known == 0 || x.len() % known != 0 {
            return Err(format!("cannot reshape {:?} to {target:?}", x.shape));
        }
        shape[i] = x.len() / known;
    }
    if shape.iter().product::<usize>() != x.len() {
        return Err(format!("cannot reshape {:?} to {target:?}", x.shape));
    }
    Ok(x.reshaped(shape))
}

/// Flattens to 2-D at an axis.
pub(crate) fn flatten(x: Array, ax: i64) -> R<Array> {
    let rank = x.rank();
    let a = if ax < 0 { ax + rank as i64 } else { ax };
    if a < 0 || a > rank as i64 {
        return Err(format!("axis {ax} is out of range for rank {rank}"));
    }
    let outer = x.shape[..a as usize].iter().product();
    let inner = x.shape[a as usize..].iter().product();
    Ok(x.reshaped(vec![outer, inner]))
}

/// Permutes axes (reverses them when `perm` is empty).
pub(crate) fn transpose(x: &Array, perm: &[i64]) -> R<Array> {
    let rank = x.rank();
    let perm: Vec<usize> = if perm.is_empty() {
        (0..rank).rev().collect()
    } else {
        perm.iter().map(|&p| axis(p, rank)).collect::<R<_>>()?
    };
    let st = strides(&x.shape);
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let pst: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
    Ok(Array::new(
        shape.clone(),
        x.data.gather_strided(&shape, &pst, 0),
    ))
}

/// Broadcasts to a shape (which itself broadcasts with the input's).
pub(crate) fn expand_to(x: &Array, shape: &[i64]) -> R<Array> {
    let target: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    let out = broadcast_shape(&[&x.shape, &target])?;
    super::checked_len(&out)?;
    Ok(expand(x, &out))
}

/// Repeats along each axis.
pub(crate) fn tile(x: &Array, repeats: &[i64]) -> R<Array> {
    if repeats.len() != x.rank() {
        return Err(format!(
            "repeats {repeats:?} must have one entry per axis of {:?}",
            x.shape
        ));
    }
    let shape: Vec<usize> = x
        .shape
        .iter()
        .zip(repeats)
        .map(|(&d, &r)| d.saturating_mul(r.max(0) as usize))
        .collect();
    super::checked_len(&shape)?;
    let st = strides(&x.shape);
    let indices = index_map(&shape, |index| {
        index
            .iter()
            .enumerate()
            .map(|(k, &i)| (i % x.shape[k]) * st[k])
            .sum()
    });
    Ok(Array::new(shape, x.data.take(&indices)))
}

/// Calls `f` with each multi-index of `shape` in row-major order and collects the results.
pub(crate) fn index_map<T>(shape: &[usize], mut f: impl FnMut(&[usize]) -> T) -> Vec<T> {
    let len: usize = shape.iter().product();
    let mut out = Vec::with_capacity(len);
    if len == 0 {
        return out;
    }
    let mut index = vec![0usize; shape.len()];
    for _ in 0..len {
        out.push(f(&index));
        for k in (0..shape.len()).rev() {
            index[k] += 1;
            if index[k] < shape[k] {
                break;
            }
            index[k] = 0;
        }
    }
    out
}

/// ONNX `Pad` in every mode.
pub(crate) fn pad(
    x: &Array,
    pads: &[i64],
    value: Option<&Array>,
    axes: Option<Vec<i64>>,
    mode: &str,
) -> R<Array> {
    let rank = x.rank();
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&v| axis(v, rank)).collect::<R<_>>()?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(format!(
            "pads {pads:?} must have two entries per padded axis"
        ));
    }
    let mut before = vec![0i64; rank];
    let mut after = vec![0i64; rank];
    for (i, &a) in axes.iter().enumerate() {
        before[a] = pads[i];
        after[a] = pads[i + axes.len()];
    }
    let mut shape = Vec::with_capacity(rank);
    for k in 0..rank {
        let d = x.shape[k] as i64 + before[k] + after[k];
        if d < 0 {
            return Err(format!("pads {pads:?} remove more than axis {k} holds"));
        }
        shape.push(d as usize);
    }
    super::checked_len(&shape)?;
    let st = strides(&x.shape);
    let indices = index_map(&shape, |index| {
        let mut p = 0usize;
        for k in 0..rank {
            let n = x.shape[k] as i64;
            let mut i = index[k] as i64 - before[k];
            if i < 0 || i >= n {
                if n == 0 {
                    return None;
                }
                i = match mode {
                    "reflect" => {
                        if n == 1 {
                            0
                        } else {
                            let period = 2 * (n - 1);
                            let m = i.rem_euclid(period);
                            if m < n {
                                m
                            } else {
                                period - m
                            }
                        }
                    }
                    "edge" => i.clamp(0, n - 1),
                    "wrap" => i.rem_euclid(n),
                    _ => return None,
                };
            }
            p += i as usize * st[k];
        }
        Some(p)
    });
    let fill = match value {
        Some(v) if !v.is_empty() => v.data.cast(x.dtype(), false),
        _ => Data::zeros(x.dtype(), 1),
    };
    Ok(Array::new(shape, x.data.take_or(&indices, &fill)))
}

/// `DepthToSpace` in `DCR` or `CRD` order.
pub(crate) fn depth_to_space(x: &Array, blocksize: i64, mode: &str) -> R<Array> {
    let [n, c, h, w] = x.shape[..] else {
        return Err(format!("input must be 4-D, found {:?}", x.shape));
    };
    let b = blocksize as usize;
    if b == 0 || c % (b * b) != 0 {
        return Err(format!(
            "channels {c} are not a multiple of blocksize² {}",
            b * b
        ));
    }
    let co = c / (b * b);
    let (staged, perm): (Vec<i64>, Vec<i64>) = if mode == "CRD" {
        (
            vec![n as i64, co as i64, b as i64, b as i64, h as i64, w as i64],
            vec![0, 1, 4, 2, 5, 3],
        )
    } else {
        (
            vec![n as i64, b as i64, b as i64, co as i64, h as i64, w as i64],
            vec![0, 3, 4, 1, 5, 2],
        )
    };
    let staged = reshape(x.clone(), &staged, false)?;
    let moved = transpose(&staged, &perm)?;
    reshape(
        moved,
        &[n as i64, co as i64, (h * b) as i64, (w * b) as i64],
        false,
    )
}

/// `SpaceToDepth`.
pub(crate) fn space_to_depth(x: &Array, blocksize: i64, mode: &str) -> R<Array> {
    let [n, c, h, w] = x.shape[..] else {
        return Err(format!("input must be 4-D, found {:?}", x.shape));
    };
    let b = blocksize as usize;
    if b == 0 || h % b != 0 || w % b != 0 {
        return Err(format!(
            "spatial dims {h}x{w} are not multiples of blocksize {b}"
        ));
    }
    let staged = reshape(
        x.clone(),
        &[
            n as i64,
            c as i64,
            (h / b) as i64,
            b as i64,
            (w / b) as i64,
            b as i64,
        ],
        false,
    )?;
    let perm: &[i64] = if mode == "CRD" {
        &[0, 1, 3, 5, 2, 4]
    } else {
        &[0, 3, 5, 1, 2, 4]
    };
    let moved = transpose(&staged, perm)?;
    reshape(
        moved,
        &[n as i64, (c * b * b) as i64, (h / b) as i64, (w / b) as i64],
        false,
    )
}

/// The shape as an i64 tensor, sliced to `[start, end)`.
pub(crate) fn shape_of(x: &Array, start: i64, end: Option<i64>) -> Array {
    let rank = x.rank() as i64;
    let norm = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
    let (s, e) = (norm(start), norm(end.unwrap_or(rank)));
    let dims: Vec<i64> = x.shape[s..e.max(s)].iter().map(|&d| d as i64).collect();
    Array::i64(vec![dims.len()], dims)
}

/// A tensor of a given shape filled with one value.
pub(crate) fn constant_of_shape(shape: &[i64], value: &Array) -> R<Array> {
    if shape.iter().any(|&d| d < 0) {
        return Err(format!("shape {shape:?} has a negative dim"));
    }
    let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let len = super::checked_len(&shape)?;
    Ok(Array::new(shape, value.data.take(&vec![0; len])))
}

/// `start, start+delta, ...` below `limit`.
pub(crate) fn range(start: &Array, limit: &Array, delta: &Array) -> R<Array> {
    if start.is_empty() || limit.is_empty() || delta.is_empty() {
        return Err("start, limit and delta must each hold one value".into());
    }
    let dtype = start.dtype();
    if dtype.is_integer() {
        let (s, l, d) = (
            start.data.to_i64s()[0],
            limit.data.to_i64s()[0],
            delta.data.to_i64s()[0],
        );
        if d == 0 {
            return Err("delta is 0".into());
        }
        let n = ((l - s) as f64 / d as f64).ceil().max(0.0) as usize;
        super::checked_len(&[n])?;
        let values: Vec<i64> = (0..n as i64).map(|i| s + i * d).collect();
        return Ok(Array::new(vec![n], Data::from_i64s(dtype, values)));
    }
    let (s, l, d) = (
        start.data.to_f64s()[0],
        limit.data.to_f64s()[0],
        delta.data.to_f64s()[0],
    );
    if d == 0.0 {
        return Err("delta is 0".into());
    }
    let n = ((l - s) / d).ceil().max(0.0) as usize;
    super::checked_len(&[n])?;
    if dtype == sparkc_ir::DType::F32 {
        let (s, d) = (s as f32, d as f32);
        let values: Vec<f32> = (0..n).map(|i| s + i as f32 * d).collect();
        return Ok(Array::f32(vec![n], values));
    }
    let values: Vec<f64> = (0..n).map(|i| s + i as f64 * d).collect();
    Ok(Array::new(vec![n], Data::from_f64s(dtype, values, false)))
}

/// Keeps the upper (or lower) triangle of the last two axes, offset by `k`.
pub(crate) fn trilu(x: Array, k: i64, upper: bool) -> R<Array> {
    let rank = x.rank();
    if rank < 2 {
        return Err("input must have rank at least 2".into());
    }
    let (rows, cols) = (x.shape[rank - 2], x.shape[rank - 1]);
    let indices: Vec<Option<usize>> = (0..x.len())
        .map(|p| {
            let (i, j) = (((p / cols) % rows) as i64, (p % cols) as i64);
            let keep = if upper { j - i >= k } else { j - i <= k };
            keep.then_some(p)
        })
        .collect();
    let zero = Data::zeros(x.dtype(), 1);
    Ok(Array::new(x.shape.clone(), x.data.take_or(&indices, &zero)))
}

/// A 2-D tensor shaped like `x` with ones on diagonal `k`.
pub(crate) fn eye_like(x: &Array, dtype: Option<sparkc_ir::DType>, k: i64) -> R<Array> {
    let [rows, cols] = x.shape[..] else {
        return Err(format!("input must be 2-D, found {:?}", x.shape));
    };
    let values: Vec<i64> = (0..rows * cols)
        .map(|p| i64::from((p % cols) as i64 - (p / cols) as i64 == k))
        .collect();
    Ok(Array::new(
        x.shape.clone(),
        Data::from_i64s(dtype.unwrap_or(x.dtype()), values),
    ))
}

/// Crops (centered) or zero-pads (centered) each axis in `axes` to the target size.
pub(crate) fn center_crop_pad(x: &Array, target: &[i64], axes: &[i64]) -> R<Array> {
    let rank = x.rank();
    let axes: Vec<usize> = if axes.is_empty() {
        (0..rank).collect()
    } else {
        axes.iter().map(|&a| axis(a, rank)).collect::<R<_>>()?
    };
    if target.len() != axes.len() {
        return Err(format!(
            "shape {target:?} must have one entry per axis {axes:?}"
        ));
    }
    let mut shape = x.shape.clone();
    let mut offset = vec![0i64; rank];
    for (k, &a) in axes.iter().enumerate() {
        let t = target[k].max(0);
        let d = x.shape[a] as i64;
        offset[a] = if t <= d { (d - t) / 2 } else { -((t - d) / 2) };
        shape[a] = t as usize;
    }
    let st = strides(&x.shape);
    let indices = index_map(&shape, |ix| {
        let mut p = 0usize;
        for k in 0..rank {
            let i = ix[k] as i64 + offset[k];
            if i < 0 || i >= x.shape[k] as i64 {
                return None;
            }
            p += i as usize * st[k];
        }
        Some(p)
    });
    Ok(Array::new(
        shape,
        x.data.take_or(&indices, &Data::zeros(x.dtype(), 1)),
    ))
}
