//! Attention: scaled dot-product `Attention` (past keys, grouped heads, masks, causal, softcap)
//! and `RotaryEmbedding`.

use super::elementwise::{exp_f32, expand};
use super::linalg::{matmul_into, Mat};
use super::reduce::softmax_row;
use super::{Args, R};
use crate::array::{Array, Data};
use rayon::prelude::*;
use sparkc_ir::op::AttentionAttrs;
use sparkc_ir::DType;

/// A `[batch, heads, seq, head]` tensor in f32.
struct Heads {
    data: Vec<f32>,
    batch: usize,
    heads: usize,
    seq: usize,
    size: usize,
}

impl Heads {
    /// Reads a 4-D input as is, or a 3-D `[batch, seq, heads·size]` one split into `heads`.
    fn read(x: &Array, heads: i64, what: &str) -> R<Heads> {
        let values = x.data.f32s();
        match x.shape[..] {
            [batch, h, seq, size] => Ok(Heads {
                data: values.into_owned(),
                batch,
                heads: h,
                seq,
                size,
            }),
            [batch, seq, width] => {
                let h = heads.max(0) as usize;
                if h == 0 || width % h != 0 {
                    return Err(format!(
                        "{what} width {width} does not split into {heads} heads"
                    ));
                }
                let size = width / h;
                let mut data = vec![0f32; values.len()];
                for b in 0..batch {
                    for s in 0..seq {
                        for hh in 0..h {
                            let src = ((b * seq + s) * h + hh) * size;
                            let dst = ((b * h + hh) * seq + s) * size;
                            data[dst..dst + size].copy_from_slice(&values[src..src + size]);
                        }
                    }
                }
                Ok(Heads {
                    data,
                    batch,
                    heads: h,
                    seq,
                    size,
                })
            }
            _ => Err(format!("{what} must be 3-D or 4-D, found {:?}", x.shape)),
        }
    }

    fn matrix(&self, b: usize, h: usize) -> &[f32] {
        let len = self.seq * self.size;
        &self.data[(b * self.heads + h) * len..(b * self.heads + h + 1) * len]
    }

    /// Appends `next` along the sequence axis.
    fn concat(past: Option<Heads>, next: Heads) -> Heads {
        let Some(past) = past else { return next };
        let seq = past.seq + next.seq;
        let mut data = Vec::with_capacity(past.batch * past.heads * seq * next.size);
        for b in 0..next.batch {
            for h in 0..next.heads {
                data.extend_from_slice(past.matrix(b, h));
                data.extend_from_slice(next.matrix(b, h));
            }
        }
        Heads {
            data,
            batch: next.batch,
            heads: next.heads,
            seq,
            size: next.size,
        }
    }

    fn array(&self, dtype: DType) -> Array {
        Array::new(
            vec![self.batch, self.heads, self.seq, self.size],
            Data::from_f32s(dtype, self.data.clone()),
        )
    }
}

/// ONNX `Attention`; outputs `Y, present_key, present_value, qk_matmul_output`.
pub(crate) fn attention(args: &Args, attrs: &AttentionAttrs, outputs: usize) -> R<Vec<Array>> {
    let q_in = args.tensor(0)?;
    let dtype = q_in.dtype();
    let three_d = q_in.rank() == 3;
    let q = Heads::read(q_in, attrs.q_num_heads, "Q")?;
    let past_key = args
        .opt_tensor(4)?
        .map(|t| Heads::read(t, attrs.kv_num_heads, "past_key"))
        .transpose()?;
    let past_value = args
        .opt_tensor(5)?
        .map(|t| Heads::read(t, attrs.kv_num_heads, "past_value"))
        .transpose()?;
    let k = Heads::concat(
        past_key,
        Heads::read(args.tensor(1)?, attrs.kv_num_heads, "K")?,
    );
    let v = Heads::concat(
        past_value,
        Heads::read(args.tensor(2)?, attrs.kv_num_heads, "V")?,
    );
    if k.size != q.size
        || k.heads == 0
        || q.heads % k.heads != 0
        || v.heads != k.heads
        || v.seq != k.seq
    {
        return Err(format!(
            "Q ({} heads of {}), K ({} heads of {}) and V ({} heads, {} steps) do not agree",
            q.heads, q.size, k.heads, k.size, v.heads, v.seq
        ));
    }
    let (sq, skv, group) = (q.seq, k.seq, q.heads / k.heads);
    // The reference computes in the input type: round to it after every step.
    let round = |v: f32| -> f32 {
        match dtype {
            DType::F16 => half::f16::from_f32(v).to_f32(),
            DType::BF16 => half::bf16::from_f32(v).to_f32(),
            _ => v,
        }
    };
    let softmax_round = |v: f32| {
        if attrs
            .softmax_precision
            .is_some_and(|p| p == DType::F32 || p == DType::F64)
        {
            v
        } else {
            round(v)
        }
    };
    let scale = round(attrs.scale.unwrap_or(1.0 / (q.size as f32).sqrt()).sqrt());
    let mask = match args.opt_tensor(3)? {
        Some(m) => {
            let mut m = m.clone();
            let last = *m.shape.last().ok_or("attn_mask must have rank ≥ 1")?;
            if last < skv {
                let pad: Vec<i64> = (0..2 * m.rank())
                    .map(|i| {
                        if i == 2 * m.rank() - 1 {
                            (skv - last) as i64
                        } else {
                            0
                        }
                    })
                    .collect();
                let fill = if m.dtype() == DType::Bool {
                    Array::scalar(Data::Bool(vec![false]))
                } else {
                    Array::scalar(Data::from_f32s(m.dtype(), vec![f32::NEG_INFINITY]))
                };
                m = super::shape::pad(&m, &pad, Some(&fill), None, "constant")?;
            }
            let target = [q.batch, q.heads, sq, skv];
            let full = super::elementwise::broadcast_shape(&[&m.shape, &target])?;
            if full != target {
                return Err(format!(
                    "attn_mask {:?} does not broadcast to {target:?}",
                    m.shape
                ));
            }
            let e = expand(&m, &target);
            Some(match &e.data {
                Data::Bool(b) => b
                    .iter()
                    .map(|&keep| if keep { 0.0 } else { f32::NEG_INFINITY })
                    .collect::<Vec<f32>>(),
                other => other.to_f32s(),
            })
        }
        None => None,
    };
    let lengths = args.opt_tensor(6)?.map(|t| t.data.to_i64s());
    let past = args.opt_tensor(4)?.map(|t| {
        if t.rank() == 4 {
            t.shape[2]
        } else {
            t.shape[1]
        }
    });
    // Where query row 0 sits among the keys: after the past cache, or before the padding.
    let offset = |b: usize| -> i64 {
        match (past, &lengths) {
            (Some(p), _) => p as i64,
            (None, Some(l)) => l[b] - sq as i64,
            (None, None) => 0,
        }
    };
    let windowed = attrs.left_window_size >= 0 || attrs.right_window_size >= 0;
    let bias = |b: usize, h: usize, i: usize, j: usize| -> f32 {
        let mut v = mask
            .as_ref()
            .map_or(0.0, |m| m[((b * q.heads + h) * sq + i) * skv + j]);
        let diff = i as i64 + offset(b) - j as i64;
        if attrs.is_causal && diff < 0 {
            v = f32::NEG_INFINITY;
        }
        if windowed
            && ((attrs.left_window_size >= 0 && diff > attrs.left_window_size)
                || (attrs.right_window_size >= 0 && -diff > attrs.right_window_size))
        {
            v = f32::NEG_INFINITY;
        }
        if lengths.as_ref().is_some_and(|l| j as i64 >= l[b]) {
            v = f32::NEG_INFINITY;
        }
        v
    };
    let need_qk = outputs > 3;
    let fast_exp = dtype == DType::F32;
    let plain = fast_exp
        && !need_qk
        && attrs.softcap == 0.0
        && !attrs.is_causal
        && !windowed
        && lengths.is_none();
    // The probabilities of one head times its values.
    let weigh_values = |probs: &[f32], kh: usize, b: usize| -> Vec<f32> {
        let mut out = vec![0f32; sq * v.size];
        matmul_into(
            sq,
            v.size,
            skv,
            Mat::rows(probs, skv),
            Mat::rows(v.matrix(b, kh), v.size),
            &mut out,
            false,
            false,
        );
        out
    };
    // One (batch, head) pair: its output rows, and its scores when the 4th output is asked for.
    let head = |bh: usize| -> (Vec<f32>, Vec<f32>) {
        let (b, h) = (bh / q.heads, bh % q.heads);
        let kh = h / group;
        let qs: Vec<f32> = q.matrix(b, h).iter().map(|&x| round(x * scale)).collect();
        let ks: Vec<f32> = k.matrix(b, kh).iter().map(|&x| round(x * scale)).collect();
        let mut scores = vec![0f32; sq * skv];
        matmul_into(
            sq,
            skv,
            q.size,
            Mat::rows(&qs, q.size),
            Mat::transposed(&ks, q.size),
            &mut scores,
            false,
            false,
        );
        if plain {
            // f32 with at most an additive mask: vectorized rows, fully masked rows zeroed.
            for (i, row) in scores.chunks_mut(skv.max(1)).enumerate() {
                if let Some(m) = &mask {
                    let base = ((b * q.heads + h) * sq + i) * skv;
                    row.iter_mut()
                        .zip(&m[base..base + skv])
                        .for_each(|(s, v)| *s += v);
                }
                if row.iter().copied().fold(f32::NEG_INFINITY, f32::max) == f32::NEG_INFINITY {
                    row.fill(0.0);
                } else {
                    softmax_row(row, false);
                }
            }
            return (weigh_values(&scores, kh, b), Vec::new());
        }
        scores.iter_mut().for_each(|s| *s = round(*s));
        if attrs.softcap > 0.0 {
            let c = attrs.softcap;
            scores
                .iter_mut()
                .for_each(|s| *s = round(round(round(*s / c).tanh()) * c));
        }
        let capped = (need_qk && attrs.qk_matmul_output_mode < 2).then(|| scores.clone());
        let mut masked_rows = vec![false; sq];
        for i in 0..sq {
            let mut row_max = f32::NEG_INFINITY;
            for j in 0..skv {
                let bv = bias(b, h, i, j);
                row_max = row_max.max(bv);
                scores[i * skv + j] = round(scores[i * skv + j] + bv);
            }
            masked_rows[i] = row_max == f32::NEG_INFINITY;
        }
        let with_bias = (need_qk && attrs.qk_matmul_output_mode == 2).then(|| scores.clone());
        for (i, row) in scores.chunks_mut(skv.max(1)).enumerate() {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let m = if m == f32::NEG_INFINITY { 0.0 } else { m };
            let mut sum = 0.0;
            for s in row.iter_mut() {
                let shifted = softmax_round(*s - m);
                *s = softmax_round(if fast_exp {
                    exp_f32(shifted)
                } else {
                    shifted.exp()
                });
                sum += *s;
            }
            let sum = softmax_round(sum);
            let sum = if sum == 0.0 { 1.0 } else { sum };
            for s in row.iter_mut() {
                *s = if masked_rows[i] {
                    0.0
                } else {
                    round(softmax_round(*s / sum))
                };
            }
        }
        let saved = match (capped, with_bias) {
            (Some(c), _) => c,
            (_, Some(w)) => w,
            _ if need_qk => scores.clone(),
            _ => Vec::new(),
        };
        (weigh_values(&scores, kh, b), saved)
    };
    let heads: Vec<(Vec<f32>, Vec<f32>)> =
        (0..q.batch * q.heads).into_par_iter().map(head).collect();
    let mut y = Vec::with_capacity(q.batch * q.heads * sq * v.size);
    let mut qk_out = Vec::with_capacity(if need_qk {
        q.batch * q.heads * sq * skv
    } else {
        0
    });
    for (out, saved) in heads {
        y.extend(out);
        qk_out.extend(saved);
    }
    let y = if three_d {
        let mut out = vec![0f32; y.len()];
        for b in 0..q.batch {
            for h in 0..q.heads {
                for s in 0..sq {
                    let src = ((b * q.heads + h) * sq + s) * v.size;
                    let dst = ((b * sq + s) * q.heads + h) * v.size;
                    out[dst..dst + v.size].copy_from_slice(&y[src..src + v.size]);
                }
            }
        }
        Array::new(
            vec![q.batch, sq, q.heads * v.size],
            Data::from_f32s(dtype, out),
        )
    } else {
        Array::new(
            vec![q.batch, q.heads, sq, v.size],
            Data::from_f32s(dtype, y),
        )
    };
    let mut result = vec![y];
    if outputs > 1 {
        result.push(k.array(dtype));
    }
    if outputs > 2 {
        result.push(v.array(dtype));
    }
    if outputs > 3 {
        result.push(Array::new(
            vec![q.batch, q.heads, sq, skv],
            Data::from_f32s(dtype, qk_out),
        ));
    }
    Ok(result)
}

/// Offset of element (batch, seq, head, index) of a rotary input.
type ElementOffset = Box<dyn Fn(usize, usize, usize, usize) -> usize>;

/// ONNX `RotaryEmbedding`; inputs `X, cos_cache, sin_cache, position_ids?`.
pub(crate) fn rotary(args: &Args, interleaved: bool, num_heads: i64, rotary_dim: i64) -> R<Array> {
    let x = args.tensor(0)?;
    let (cos, sin) = (
        args.tensor(1)?.data.to_f32s(),
        args.tensor(2)?.data.to_f32s(),
    );
    let cache_width = *args
        .tensor(1)?
        .shape
        .last()
        .ok_or("cos_cache must not be a scalar")?;
    let positions = args.opt_tensor(3)?.map(|p| p.data.to_i64s());
    // Element (b, s, h, d) of the [batch, seq, heads, head] view, as an offset into x.
    let (batch, seq, heads, size, offset): (usize, usize, usize, usize, ElementOffset) =
        match x.shape[..] {
            [b, h, s, d] => (
                b,
                s,
                h,
                d,
                Box::new(move |bi, si, hi, di| ((bi * h + hi) * s + si) * d + di),
            ),
            [b, s, width] => {
                let h = num_heads.max(0) as usize;
                if h == 0 || width % h != 0 {
                    return Err(format!(
                        "width {width} does not split into num_heads {num_heads}"
                    ));
                }
                let d = width / h;
                (
                    b,
                    s,
                    h,
                    d,
                    Box::new(move |bi, si, hi, di| ((bi * s + si) * h + hi) * d + di),
                )
            }
            _ => return Err(format!("input must be 3-D or 4-D, found {:?}", x.shape)),
        };
    let rot = if rotary_dim > 0 {
        rotary_dim as usize
    } else {
        size
    };
    if rot > size || rot % 2 != 0 {
        return Err(format!(
            "rotary_embedding_dim {rot} is not an even number of at most the head size {size}"
        ));
    }
    let half = rot / 2;
    if cache_width != half || cos.len() != sin.len() {
        return Err(format!(
            "cos_cache and sin_cache must have {half} columns and one shape; found {:?} and {:?}",
            args.tensor(1)?.shape,
            args.tensor(2)?.shape
        ));
    }
    let rows = cos.len().checked_div(cache_width).unwrap_or(0);
    if let Some(p) = &positions {
        if p.len() != batch * seq {
            return Err(format!(
                "position_ids holds {} values; the input needs one per (batch, position), {}",
                p.len(),
                batch * seq
            ));
        }
        if let Some(bad) = p.iter().find(|&&v| v < 0 || v as usize >= rows) {
            return Err(format!(
                "position id {bad} is outside the {rows} rows of cos_cache"
            ));
        }
    } else if rows < batch * seq {
        return Err(format!(
            "without position_ids, cos_cache needs a row per (batch, position), {}; it has {rows}",
            batch * seq
        ));
    }
    let values = x.data.to_f32s();
    let mut out = values.clone();
    for b in 0..batch {
        for s in 0..seq {
            let row = match &positions {
                Some(p) => p[b * seq + s] as usize,
                None => b * seq + s,
            };
            for h in 0..heads {
                for i in 0..half {
                    let (c, sn) = (cos[row * cache_width + i], sin[row * cache_width + i]);
                    let (i1, i2) = if interleaved {
                        (2 * i, 2 * i + 1)
                    } else {
                        (i, i + half)
                    };
                    let (x1, x2) = (values[offset(b, s, h, i1)], values[offset(b, s, h, i2)]);
                    out[offset(b, s, h, i1)] = c * x1 - sn * x2;
                    out[offset(b, s, h, i2)] = sn * x1 + c * x2;
                }
            }
        }
    }
    Ok(Array::new(x.shape.clone(), Data::from_f32s(x.dtype(), out)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Arg;
    use crate::value::Value;

    /// Rotates a [1, 2, 1, 4] input (one head of 4) by caches of `rows` rows of 2 at `positions`.
    fn rotate(rows: usize, positions: Option<Vec<i64>>, rotary_dim: i64) -> R<Array> {
        let x = Value::Tensor(Array::f32(
            vec![1, 1, 2, 4],
            (0..8).map(|v| v as f32).collect(),
        ));
        let cos = Value::Tensor(Array::f32(vec![rows, 2], vec![1.0; rows * 2]));
        let sin = Value::Tensor(Array::f32(vec![rows, 2], vec![0.0; rows * 2]));
        let ids = positions.map(|p| Value::Tensor(Array::new(vec![1, p.len()], Data::I64(p))));
        let items = [Some(&x), Some(&cos), Some(&sin), ids.as_ref()]
            .into_iter()
            .map(|v| v.map(Arg::Borrowed))
            .collect();
        rotary(&Args::new(items), false, 0, rotary_dim)
    }

    #[test]
    fn rotary_inputs_that_do_not_fit_are_errors() {
        let unrotated = rotate(4, Some(vec![3, 0]), 0).expect("positions within the cache");
        assert_eq!(
            unrotated.data.to_f64s(),
            (0..8).map(f64::from).collect::<Vec<_>>()
        );
        let cases = [
            (
                rotate(4, Some(vec![4, 0]), 0),
                "position id 4 is outside the 4 rows",
            ),
            (rotate(4, Some(vec![-1, 0]), 0), "position id -1"),
            (rotate(4, Some(vec![1]), 0), "position_ids holds 1 values"),
            (
                rotate(1, None, 0),
                "cos_cache needs a row per (batch, position), 2",
            ),
            (
                rotate(4, None, 2),
                "cos_cache and sin_cache must have 1 columns",
            ),
            (rotate(4, None, 6), "rotary_embedding_dim 6"),
        ];
        for (result, message) in cases {
            let error = result.expect_err(message);
            assert!(error.contains(message), "{error}");
        }
    }
}
