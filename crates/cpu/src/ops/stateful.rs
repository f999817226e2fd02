//! Ops that carry a state from one call to the next: `CausalConvWithState` (the short
//! convolution of Mamba and Gated DeltaNet layers) and `LinearAttention` (their recurrence).

use super::R;
use crate::array::{Array, Data};

/// Checks that `x` has exactly `shape`.
fn expect_shape(x: &Array, what: &str, shape: &[usize]) -> R<()> {
    if x.shape != shape {
        return Err(format!(
            "{what} must have shape {shape:?}, found {:?}",
            x.shape
        ));
    }
    Ok(())
}

/// `CausalConvWithState`: each channel of `input [B, C, L]`, preceded by `past_state`
/// (zeros when absent), convolved with its own `k` taps; also returns the last `k - 1`
/// positions of that padded input.
pub(crate) fn causal_conv(
    input: &Array,
    weight: &Array,
    bias: Option<&Array>,
    past_state: Option<&Array>,
    silu: bool,
) -> R<Vec<Array>> {
    let [batch, channels, length] = input.shape[..] else {
        return Err(format!(
            "input must have rank 3 [batch, channels, length], found {:?}",
            input.shape
        ));
    };
    let taps = match weight.shape[..] {
        [c, 1, k] if c == channels && k > 0 => k,
        _ => {
            return Err(format!(
                "weight must have shape [{channels}, 1, k] with k > 0, found {:?}",
                weight.shape
            ))
        }
    };
    let carried = taps - 1;
    if let Some(b) = bias {
        expect_shape(b, "bias", &[channels])?;
    }
    if let Some(p) = past_state {
        expect_shape(p, "past_state", &[batch, channels, carried])?;
    }
    let x = input.data.to_f64s();
    let w = weight.data.to_f64s();
    let b = bias.map(|b| b.data.to_f64s());
    let past = past_state.map(|p| p.data.to_f64s());
    let padded_len = carried + length;
    let mut output = Vec::with_capacity(batch * channels * length);
    let mut present = Vec::with_capacity(batch * channels * carried);
    let mut padded = vec![0.0; padded_len];
    for row in 0..batch * channels {
        let c = row % channels;
        match &past {
            Some(p) => padded[..carried].copy_from_slice(&p[row * carried..(row + 1) * carried]),
            None => padded[..carried].fill(0.0),
        }
        padded[carried..].copy_from_slice(&x[row * length..(row + 1) * length]);
        let taps_of_c = &w[c * taps..(c + 1) * taps];
        for t in 0..length {
            let mut y = b.as_ref().map_or(0.0, |b| b[c]);
            for (j, &tap) in taps_of_c.iter().enumerate() {
                y += tap * padded[t + j];
            }
            output.push(if silu { y / (1.0 + (-y).exp()) } else { y });
        }
        present.extend_from_slice(&padded[length..]);
    }
    let dtype = input.dtype();
    Ok(vec![
        Array::new(input.shape.clone(), Data::from_f64s(dtype, output, false)),
        Array::new(
            vec![batch, channels, carried],
            Data::from_f64s(dtype, present, false),
        ),
    ])
}

/// The attributes of `LinearAttention`.
pub(crate) struct LinearAttention<'a> {
    /// Query heads.
    pub q_heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Output scale (0: `1/sqrt(d_k)`).
    pub scale: f32,
    /// `linear`, `gated`, `delta` or `gated_delta`.
    pub update_rule: &'a str,
}

/// The per-token gate or rate of `LinearAttention`, `[B, T, heads·width]`, read for KV head
/// `h` and position `i` of its `width` values (width 1: one value per head, or for all heads).
struct PerToken {
    values: Vec<f64>,
    heads: usize,
    width: usize,
    tokens: usize,
}

impl PerToken {
    fn new(x: &Array, what: &str, b: usize, t: usize, forms: &[(usize, usize)]) -> R<PerToken> {
        let last = match x.shape[..] {
            [xb, xt, last] if xb == b && xt == t => last,
            _ => {
                return Err(format!(
                    "{what} must have shape [{b}, {t}, _], found {:?}",
                    x.shape
                ))
            }
        };
        let &(heads, width) = forms
            .iter()
            .find(|(heads, width)| heads * width == last)
            .ok_or_else(|| {
                let sizes: Vec<String> = forms.iter().map(|(h, w)| (h * w).to_string()).collect();
                format!(
                    "{what}'s last dim {last} must be one of {}",
                    sizes.join(", ")
                )
            })?;
        Ok(PerToken {
            values: x.data.to_f64s(),
            heads,
            width,
            tokens: t,
        })
    }

    fn at(&self, batch: usize, token: usize, head: usize, i: usize) -> f64 {
        let head = head.min(self.heads - 1);
        let i = i.min(self.width - 1);
        self.values[((batch * self.tokens + token) * self.heads + head) * self.width + i]
    }
}

/// `LinearAttention`: the recurrence `S ← decay·S + k ⊗ (β·(v − decay·Sᵀk))` (terms as the
/// update rule has them), read by every query head of the KV head's group as `scale·qᵀS`.
pub(crate) fn linear_attention(
    inputs: [Option<&Array>; 6],
    attrs: &LinearAttention,
) -> R<Vec<Array>> {
    let [Some(query), Some(key), Some(value), past_state, decay, beta] = inputs else {
        return Err("query, key and value are required".into());
    };
    let (hq, hkv) = (attrs.q_heads, attrs.kv_heads);
    if hq == 0 || hkv == 0 || hq % hkv != 0 {
        return Err(format!(
            "q_num_heads {hq} must be a positive multiple of kv_num_heads {hkv}"
        ));
    }
    let [b, t, q_width] = query.shape[..] else {
        return Err(format!("query must have rank 3, found {:?}", query.shape));
    };
    let v_width = value.shape.last().copied().unwrap_or(0);
    if q_width % hq != 0 || v_width % hkv != 0 {
        return Err(format!(
            "query's last dim {q_width} and value's {v_width} must be multiples of {hq} and {hkv} heads"
        ));
    }
    let (dk, dv) = (q_width / hq, v_width / hkv);
    expect_shape(key, "key", &[b, t, hkv * dk])?;
    expect_shape(value, "value", &[b, t, hkv * dv])?;
    let gating = matches!(attrs.update_rule, "gated" | "gated_delta");
    let delta = matches!(attrs.update_rule, "delta" | "gated_delta");
    let decay = match (gating, decay) {
        (true, Some(d)) => Some(PerToken::new(d, "decay", b, t, &[(hkv, 1), (hkv, dk)])?),
        (false, None) => None,
        (true, None) => return Err(format!("update rule '{}' needs decay", attrs.update_rule)),
        (false, Some(_)) => {
            return Err(format!(
                "update rule '{}' takes no decay",
                attrs.update_rule
            ))
        }
    };
    let beta = match (delta, beta) {
        (true, Some(x)) => Some(PerToken::new(x, "beta", b, t, &[(hkv, 1), (1, 1)])?),
        (false, None) => None,
        (true, None) => return Err(format!("update rule '{}' needs beta", attrs.update_rule)),
        (false, Some(_)) => {
            return Err(format!("update rule '{}' takes no beta", attrs.update_rule))
        }
    };
    let state_shape = vec![b, hkv, dk, dv];
    let mut state = match past_state {
        Some(p) => {
            expect_shape(p, "past_state", &state_shape)?;
            p.data.to_f64s()
        }
        None => vec![0.0; b * hkv * dk * dv],
    };
    let scale = if attrs.scale == 0.0 {
        1.0 / (dk as f64).sqrt()
    } else {
        f64::from(attrs.scale)
    };
    let (q, k, v) = (
        query.data.to_f64s(),
        key.data.to_f64s(),
        value.data.to_f64s(),
    );
    let group = hq / hkv;
    let mut out = vec![0.0; b * t * hq * dv];
    let mut update = vec![0.0; dv];
    for bi in 0..b {
        for ti in 0..t {
            let token = bi * t + ti;
            for h in 0..hkv {
                let s = &mut state[(bi * hkv + h) * dk * dv..(bi * hkv + h + 1) * dk * dv];
                let kt = &k[(token * hkv + h) * dk..(token * hkv + h + 1) * dk];
                update.copy_from_slice(&v[(token * hkv + h) * dv..(token * hkv + h + 1) * dv]);
                if let Some(decay) = &decay {
                    for (d, row) in s.chunks_mut(dv).enumerate() {
                        let g = decay.at(bi, ti, h, d).exp();
                        row.iter_mut().for_each(|x| *x *= g);
                    }
                }
                if let Some(beta) = &beta {
                    let rate = beta.at(bi, ti, h, 0);
                    for (m, u) in update.iter_mut().enumerate() {
                        let retrieved: f64 = (0..dk).map(|d| s[d * dv + m] * kt[d]).sum();
                        *u = rate * (*u - retrieved);
                    }
                }
                for (row, &kd) in s.chunks_mut(dv).zip(kt) {
                    row.iter_mut().zip(&update).for_each(|(x, &u)| *x += kd * u);
                }
                for qh in h * group..(h + 1) * group {
                    let qt = &q[(token * hq + qh) * dk..(token * hq + qh + 1) * dk];
                    let o = &mut out[(token * hq + qh) * dv..(token * hq + qh + 1) * dv];
                    for (m, o) in o.iter_mut().enumerate() {
                        *o = scale * (0..dk).map(|d| qt[d] * s[d * dv + m]).sum::<f64>();
                    }
                }
            }
        }
    }
    let state_dtype = past_state.map_or(query.dtype(), Array::dtype);
    Ok(vec![
        Array::new(
            vec![b, t, hq * dv],
            Data::from_f64s(query.dtype(), out, false),
        ),
        Array::new(state_shape, Data::from_f64s(state_dtype, state, false)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 7 + seed * 13) % 17) as f32 - 8.0) / 10.0)
            .collect()
    }

    fn close(a: &Array, b: &Array) {
        assert_eq!(a.shape, b.shape);
        for (x, y) in a.data.to_f64s().iter().zip(b.data.to_f64s()) {
            assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    /// Positions `from..to` of a `[B, T, W]` tensor.
    fn tokens(x: &Array, from: usize, to: usize) -> Array {
        let [b, t, w] = x.shape[..] else { panic!() };
        let v = x.data.to_f32s();
        let picked = (0..b)
            .flat_map(|bi| v[(bi * t + from) * w..(bi * t + to) * w].to_vec())
            .collect();
        Array::f32(vec![b, to - from, w], picked)
    }

    #[test]
    fn causal_conv_prefill_equals_step_by_step_decode() {
        let x = Array::f32(vec![2, 3, 5], values(30, 1));
        let w = Array::f32(vec![3, 1, 4], values(12, 2));
        let bias = Array::f32(vec![3], vec![0.1, -0.2, 0.3]);
        let whole = causal_conv(&x, &w, Some(&bias), None, true).expect("prefill");
        let mut state = Array::f32(vec![2, 3, 3], vec![0.0; 18]);
        let xs = x.data.to_f32s();
        for t in 0..5 {
            let step: Vec<f32> = (0..6).map(|row| xs[row * 5 + t]).collect();
            let step = Array::f32(vec![2, 3, 1], step);
            let out = causal_conv(&step, &w, Some(&bias), Some(&state), true).expect("step");
            let want: Vec<f32> = (0..6)
                .map(|row| whole[0].data.to_f32s()[row * 5 + t])
                .collect();
            close(&out[0], &Array::f32(vec![2, 3, 1], want));
            state = out[1].clone();
        }
        close(&state, &whole[1]);
        let error = causal_conv(&x, &w, None, Some(&bias), false).expect_err("bad state");
        assert!(
            error.contains("past_state must have shape [2, 3, 3]"),
            "{error}"
        );
    }

    #[test]
    fn linear_attention_prefill_equals_two_chunks() {
        let (b, t, hq, hkv, dk, dv) = (1, 6, 4, 2, 3, 2);
        let q = Array::f32(vec![b, t, hq * dk], values(b * t * hq * dk, 3));
        let k = Array::f32(vec![b, t, hkv * dk], values(b * t * hkv * dk, 4));
        let v = Array::f32(vec![b, t, hkv * dv], values(b * t * hkv * dv, 5));
        let decay = Array::f32(vec![b, t, hkv * dk], values(b * t * hkv * dk, 6));
        let beta = Array::f32(vec![b, t, hkv], values(b * t * hkv, 7));
        let attrs = LinearAttention {
            q_heads: hq,
            kv_heads: hkv,
            scale: 0.0,
            update_rule: "gated_delta",
        };
        let run = |from: usize, to: usize, past: Option<&Array>| {
            let pieces = [&q, &k, &v, &decay, &beta].map(|x| tokens(x, from, to));
            let [q, k, v, d, r] = &pieces;
            linear_attention([Some(q), Some(k), Some(v), past, Some(d), Some(r)], &attrs)
                .expect("runs")
        };
        let whole = run(0, t, None);
        let first = run(0, 2, None);
        let second = run(2, t, Some(&first[1]));
        close(&first[0], &tokens(&whole[0], 0, 2));
        close(&second[0], &tokens(&whole[0], 2, t));
        close(&second[1], &whole[1]);
        let no_beta = linear_attention(
            [Some(&q), Some(&k), Some(&v), None, Some(&decay), None],
            &attrs,
        )
        .expect_err("gated_delta needs beta");
        assert!(no_beta.contains("needs beta"), "{no_beta}");
    }
}
