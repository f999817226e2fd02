//! Indexing: gathers, scatters, `OneHot`, `NonZero`, `Compress`, `Unique`, `ReverseSequence`.

use super::reduce::split_at_axis;
use super::shape::index_map;
use super::{axis, R};
use crate::array::{strides, Array, Data};

/// Normalizes a possibly negative index into `0..n`.
fn index(i: i64, n: usize) -> R<usize> {
    let j = if i < 0 { i + n as i64 } else { i };
    if j < 0 || j >= n as i64 {
        return Err(format!("index {i} is out of bounds for size {n}"));
    }
    Ok(j as usize)
}

/// `Gather` along an axis.
pub(crate) fn gather(x: &Array, indices: &Array, ax: i64) -> R<Array> {
    let a = axis(ax, x.rank())?;
    let (outer, n, inner) = split_at_axis(&x.shape, a);
    let idx: Vec<usize> = indices
        .data
        .to_i64s()
        .iter()
        .map(|&i| index(i, n))
        .collect::<R<_>>()?;
    let mut picks = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &i in &idx {
            picks.extend((o * n + i) * inner..(o * n + i + 1) * inner);
        }
    }
    let mut shape = x.shape[..a].to_vec();
    shape.extend(&indices.shape);
    shape.extend(&x.shape[a + 1..]);
    Ok(Array::new(shape, x.data.take(&picks)))
}

/// `GatherElements` along an axis.
pub(crate) fn gather_elements(x: &Array, indices: &Array, ax: i64) -> R<Array> {
    let a = axis(ax, x.rank())?;
    if indices.rank() != x.rank() {
        return Err("indices must have the rank of the data".into());
    }
    let idx = indices.data.to_i64s();
    let st = strides(&x.shape);
    let mut position = 0;
    let picks = index_map(&indices.shape, |ix| {
        let mut p = 0usize;
        for k in 0..ix.len() {
            let v = if k == a {
                index(idx[position], x.shape[a])
            } else {
                Ok(ix[k])
            };
            p += v.unwrap_or(usize::MAX / 2) * st[k];
        }
        position += 1;
        p
    });
    if picks.iter().any(|&p| p >= x.len()) {
        return Err("an index is out of bounds".into());
    }
    Ok(Array::new(indices.shape.clone(), x.data.take(&picks)))
}

/// `GatherND` with leading batch dims.
pub(crate) fn gather_nd(x: &Array, indices: &Array, batch_dims: i64) -> R<Array> {
    let b = batch_dims.max(0) as usize;
    let q = indices.rank();
    let k = *indices.shape.last().ok_or("indices must have rank ≥ 1")?;
    if b + k > x.rank() {
        return Err("index tuples are longer than the data's rank".into());
    }
    let idx = indices.data.to_i64s();
    let st = strides(&x.shape);
    let batch: usize = x.shape[..b].iter().product();
    let batch_size: usize = x.shape[b..].iter().product();
    let tuples: usize = indices.shape[..q - 1].iter().product();
    let per_batch = tuples / batch.max(1);
    let slice: usize = x.shape[b + k..].iter().product();
    let mut picks = Vec::with_capacity(tuples * slice);
    for t in 0..tuples {
        let mut p = t / per_batch.max(1) * batch_size;
        for j in 0..k {
            p += index(idx[t * k + j], x.shape[b + j])? * st[b + j];
        }
        picks.extend(p..p + slice);
    }
    let mut shape = indices.shape[..q - 1].to_vec();
    shape.extend(&x.shape[b + k..]);
    Ok(Array::new(shape, x.data.take(&picks)))
}

fn combine(reduction: &str, old: f64, new: f64) -> f64 {
    match reduction {
        "add" => old + new,
        "mul" => old * new,
        "max" => old.max(new),
        "min" => old.min(new),
        _ => new,
    }
}

/// Writes `updates` at positions into a copy of `x`, combined by `reduction`.
fn scatter(x: &Array, positions: &[usize], updates: &Array, reduction: &str) -> R<Array> {
    if reduction == "none" || reduction.is_empty() {
        let mut all = x.data.clone();
        all.extend_from(&updates.data);
        let mut picks: Vec<usize> = (0..x.len()).collect();
        for (u, &p) in positions.iter().enumerate() {
            picks[p] = x.len() + u;
        }
        return Ok(Array::new(x.shape.clone(), all.take(&picks)));
    }
    if x.dtype().is_integer() {
        let mut values = x.data.to_i64s();
        let new = updates.data.to_i64s();
        for (u, &p) in positions.iter().enumerate() {
            values[p] = combine(reduction, values[p] as f64, new[u] as f64) as i64;
        }
        return Ok(Array::new(
            x.shape.clone(),
            Data::from_i64s(x.dtype(), values),
        ));
    }
    let mut values = x.data.to_f64s();
    let new = updates.data.to_f64s();
    for (u, &p) in positions.iter().enumerate() {
        values[p] = combine(reduction, values[p], new[u]);
    }
    Ok(Array::new(
        x.shape.clone(),
        Data::from_f64s(x.dtype(), values, false),
    ))
}

/// `ScatterND`.
pub(crate) fn scatter_nd(x: &Array, indices: &Array, updates: &Array, reduction: &str) -> R<Array> {
    let k = *indices.shape.last().ok_or("indices must have rank ≥ 1")?;
    if k > x.rank() {
        return Err("index tuples are longer than the data's rank".into());
    }
    let idx = indices.data.to_i64s();
    let st = strides(&x.shape);
    let slice: usize = x.shape[k..].iter().product();
    let tuples = idx.len() / k.max(1);
    let mut positions = Vec::with_capacity(tuples * slice);
    for t in 0..tuples {
        let mut p = 0;
        for j in 0..k {
            p += index(idx[t * k + j], x.shape[j])? * st[j];
        }
        positions.extend(p..p + slice);
    }
    if positions.len() != updates.len() {
        return Err(format!(
            "updates {:?} do not match the indexed slices",
            updates.shape
        ));
    }
    scatter(x, &positions, updates, reduction)
}

/// `ScatterElements` along an axis.
pub(crate) fn scatter_elements(
    x: &Array,
    indices: &Array,
    updates: &Array,
    ax: i64,
    reduction: &str,
) -> R<Array> {
    let a = axis(ax, x.rank())?;
    let idx = indices.data.to_i64s();
    let st = strides(&x.shape);
    let mut positions = Vec::with_capacity(idx.len());
    let mut position = 0;
    let mut error = None;
    index_map(&indices.shape, |ix| {
        let mut p = 0usize;
        for k in 0..ix.len() {
            let v = if k == a {
                index(idx[position], x.shape[a]).unwrap_or_else(|e| {
                    error = Some(e);
                    0
                })
            } else {
                ix[k]
            };
            p += v * st[k];
        }
        position += 1;
        positions.push(p);
    });
    if let Some(e) = error {
        return Err(e);
    }
    scatter(x, &positions, updates, reduction)
}

/// `OneHot`: `values[0]` everywhere, `values[1]` at each index, along a new axis.
pub(crate) fn one_hot(indices: &Array, depth: &Array, values: &Array, ax: i64) -> R<Array> {
    let depth = depth
        .data
        .to_f64s()
        .first()
        .copied()
        .ok_or("depth is empty")? as i64;
    if depth <= 0 {
        return Err(format!("depth {depth} must be positive"));
    }
    let rank = indices.rank() + 1;
    let a = axis(ax, rank)?;
    let idx = indices.data.to_f64s();
    let mut shape = indices.shape.clone();
    shape.insert(a, depth as usize);
    super::checked_len(&shape)?;
    let (outer, _, inner) = split_at_axis(&shape, a);
    let d = depth as usize;
    let mut picks = vec![0usize; outer * d * inner];
    for o in 0..outer {
        for i in 0..inner {
            let mut v = idx[o * inner + i] as i64;
            if v < 0 {
                v += depth;
            }
            if (0..depth).contains(&v) {
                picks[(o * d + v as usize) * inner + i] = 1;
            }
        }
    }
    Ok(Array::new(shape, values.data.take(&picks)))
}

/// `NonZero`: the indices of non-zero elements, one row per axis.
pub(crate) fn non_zero(x: &Array) -> Array {
    let values = x.data.to_f64s();
    let rank = x.rank();
    let mut coords: Vec<Vec<i64>> = vec![Vec::new(); rank];
    let mut found = 0;
    let mut position = 0;
    index_map(&x.shape, |ix| {
        if values[position] != 0.0 {
            found += 1;
            for (k, &i) in ix.iter().enumerate() {
                coords[k].push(i as i64);
            }
        }
        position += 1;
    });
    Array::i64(vec![rank, found], coords.concat())
}

/// `Compress`: the slices along `axis` (or of the flattened input) where the condition holds.
pub(crate) fn compress(x: &Array, condition: &Array, ax: Option<i64>) -> R<Array> {
    let cond = condition.data.to_i64s();
    let (x, a) = match ax {
        Some(ax) => (x.clone(), axis(ax, x.rank())?),
        None => (x.clone().reshaped(vec![x.len()]), 0),
    };
    let (outer, n, inner) = split_at_axis(&x.shape, a);
    let kept: Vec<usize> = (0..n.min(cond.len())).filter(|&i| cond[i] != 0).collect();
    let mut picks = Vec::new();
    for o in 0..outer {
        for &i in &kept {
            picks.extend((o * n + i) * inner..(o * n + i + 1) * inner);
        }
    }
    let mut shape = x.shape.clone();
    shape[a] = kept.len();
    Ok(Array::new(shape, x.data.take(&picks)))
}

/// `TensorScatter`: `past` with `update` written along `axis` from each batch entry's write
/// index, wrapping around when `circular`.
pub(crate) fn tensor_scatter(
    past: &Array,
    update: &Array,
    writes: Option<&Array>,
    ax: i64,
    circular: bool,
) -> R<Array> {
    let rank = past.rank();
    let a = axis(ax, rank)?;
    let fits = a > 0
        && update.rank() == rank
        && (0..rank).all(|k| k == a || update.shape[k] == past.shape[k])
        && update.shape[a] <= past.shape[a];
    if !fits {
        return Err(format!(
            "update {:?} does not fit cache {:?} along axis {a}",
            update.shape, past.shape
        ));
    }
    let writes = writes.map(|w| w.data.to_i64s()).unwrap_or_default();
    if !writes.is_empty() && writes.len() != past.shape[0] {
        return Err(format!(
            "{} write indices for a batch of {}",
            writes.len(),
            past.shape[0]
        ));
    }
    let (max, len) = (past.shape[a] as i64, update.shape[a] as i64);
    if !circular {
        if let Some((b, w)) = writes
            .iter()
            .enumerate()
            .find(|(_, &w)| w < 0 || w + len > max)
        {
            return Err(format!(
                "write index {w} of batch entry {b} does not fit {len} rows into the cache's {max}"
            ));
        }
    }
    let (from_past, from_update) = (strides(&past.shape), strides(&update.shape));
    let base = past.len();
    let picks = index_map(&past.shape, |ix| {
        let w = writes.get(ix[0]).copied().unwrap_or(0);
        let at = ix[a] as i64 - w;
        let at = if circular && max > 0 {
            at.rem_euclid(max)
        } else {
            at
        };
        if (0..len).contains(&at) {
            let offset: usize = ix
                .iter()
                .enumerate()
                .map(|(k, &i)| if k == a { at as usize } else { i } * from_update[k])
                .sum();
            base + offset
        } else {
            ix.iter().zip(&from_past).map(|(i, s)| i * s).sum()
        }
    });
    let both = Data::concat(past.dtype(), &[&past.data, &update.data]);
    Ok(Array::new(past.shape.clone(), both.take(&picks)))
}

/// `ReverseSequence`: reverses the first `lens[b]` steps of each batch entry.
pub(crate) fn reverse_sequence(
    x: &Array,
    lens: &Array,
    batch_axis: i64,
    time_axis: i64,
) -> R<Array> {
    let (ba, ta) = (axis(batch_axis, x.rank())?, axis(time_axis, x.rank())?);
    let lens = lens.data.to_i64s();
    let st = strides(&x.shape);
    let picks = index_map(&x.shape, |ix| {
        let len = lens.get(ix[ba]).copied().unwrap_or(0).max(0) as usize;
        let t = ix[ta];
        let src_t = if t < len { len - 1 - t } else { t };
        ix.iter()
            .enumerate()
            .map(|(k, &i)| if k == ta { src_t } else { i } * st[k])
            .sum()
    });
    Ok(Array::new(x.shape.clone(), x.data.take(&picks)))
}

/// `Unique`: sorted (or first-occurrence) unique values or slices, with indices, inverse and counts.
pub(crate) fn unique(x: &Array, ax: Option<i64>, sorted: bool) -> R<Vec<Array>> {
    let (x, a) = match ax {
        Some(ax) => (x.clone(), axis(ax, x.rank())?),
        None => (x.clone().reshaped(vec![x.len()]), 0),
    };
    let (outer, n, inner) = split_at_axis(&x.shape, a);
    let values = x.data.to_f64s();
    let slice = |i: usize| -> Vec<f64> {
        (0..outer)
            .flat_map(|o| {
                values[(o * n + i) * inner..(o * n + i + 1) * inner]
                    .iter()
                    .copied()
            })
            .collect()
    };
    let slices: Vec<Vec<f64>> = (0..n).map(slice).collect();
    let mut firsts: Vec<usize> = Vec::new();
    for i in 0..n {
        if !firsts.iter().any(|&f| slices[f] == slices[i]) {
            firsts.push(i);
        }
    }
    if sorted {
        firsts.sort_by(|&p, &q| {
            slices[p]
                .iter()
                .zip(&slices[q])
                .map(|(u, v)| u.total_cmp(v))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    }
    let inverse: Vec<i64> = (0..n)
        .map(|i| {
            firsts
                .iter()
                .position(|&f| slices[f] == slices[i])
                .unwrap_or(0) as i64
        })
        .collect();
    let counts: Vec<i64> = (0..firsts.len())
        .map(|u| inverse.iter().filter(|&&v| v == u as i64).count() as i64)
        .collect();
    let mut picks = Vec::new();
    for o in 0..outer {
        for &i in &firsts {
            picks.extend((o * n + i) * inner..(o * n + i + 1) * inner);
        }
    }
    let mut shape = x.shape.clone();
    shape[a] = firsts.len();
    let k = firsts.len();
    Ok(vec![
        Array::new(shape, x.data.take(&picks)),
        Array::i64(vec![k], firsts.iter().map(|&f| f as i64).collect()),
        Array::i64(vec![n], inverse),
        Array::i64(vec![k], counts),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_cache_writes_must_fit_the_cache() {
        let past = Array::f32(vec![2, 4, 1], vec![0.0; 8]);
        let update = Array::f32(vec![2, 2, 1], vec![1.0, 2.0, 3.0, 4.0]);
        let writes = |w: [i64; 2]| Array::i64(vec![2], w.to_vec());
        let written = tensor_scatter(&past, &update, Some(&writes([2, 0])), 1, false)
            .expect("both writes fit");
        assert_eq!(
            written.data.to_f64s(),
            [0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 0.0, 0.0]
        );
        for (w, message) in [([3, 0], "write index 3 of batch entry 0"), ([0, -1], "-1")] {
            let error =
                tensor_scatter(&past, &update, Some(&writes(w)), 1, false).expect_err(message);
            assert!(error.contains(message), "{error}");
        }
        let wrapped = tensor_scatter(&past, &update, Some(&writes([3, 0])), 1, true)
            .expect("a circular write wraps");
        assert_eq!(
            wrapped.data.to_f64s(),
            [2.0, 0.0, 0.0, 1.0, 3.0, 4.0, 0.0, 0.0]
        );
    }
}
