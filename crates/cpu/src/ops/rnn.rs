//! Recurrent layers: `LSTM` (gates i, o, f, c), `GRU` (z, r, h) and `RNN`, every direction and layout.

use super::{Args, R};
use crate::array::{Array, Data};
use sparkc_ir::op::RnnAttrs;

/// Which recurrent cell.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Cell {
    /// Long short-term memory.
    Lstm,
    /// Gated recurrent unit.
    Gru,
    /// Plain recurrence.
    Rnn,
}

fn activation(name: &str, alpha: Option<f32>, beta: Option<f32>) -> R<Box<dyn Fn(f64) -> f64>> {
    let a = alpha.map(f64::from);
    let b = beta.map(f64::from);
    Ok(match name.to_ascii_lowercase().as_str() {
        "sigmoid" => Box::new(|x: f64| 1.0 / (1.0 + (-x).exp())),
        "tanh" => Box::new(f64::tanh),
        "relu" => Box::new(|x: f64| x.max(0.0)),
        "affine" => {
            let (a, b) = (a.unwrap_or(1.0), b.unwrap_or(0.0));
            Box::new(move |x| a * x + b)
        }
        "leakyrelu" => {
            let a = a.unwrap_or(0.01);
            Box::new(move |x| if x >= 0.0 { x } else { a * x })
        }
        "thresholdedrelu" => {
            let a = a.unwrap_or(1.0);
            Box::new(move |x| if x > a { x } else { 0.0 })
        }
        "scaledtanh" => {
            let (a, b) = (a.unwrap_or(1.0), b.unwrap_or(1.0));
            Box::new(move |x| a * (b * x).tanh())
        }
        "hardsigmoid" => {
            let (a, b) = (a.unwrap_or(0.2), b.unwrap_or(0.5));
            Box::new(move |x| (a * x + b).clamp(0.0, 1.0))
        }
        "elu" => {
            let a = a.unwrap_or(1.0);
            Box::new(move |x| if x >= 0.0 { x } else { a * (x.exp() - 1.0) })
        }
        "softsign" => Box::new(|x: f64| x / (1.0 + x.abs())),
        "softplus" => Box::new(|x: f64| x.exp().ln_1p()),
        other => return Err(format!("activation '{other}' is not supported")),
    })
}

/// `[a, b, n]` to `[b, a, n]`.
fn swap_leading(v: &[f64], a: usize, b: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; v.len()];
    for i in 0..a {
        for j in 0..b {
            out[(j * a + i) * n..(j * a + i + 1) * n]
                .copy_from_slice(&v[(i * b + j) * n..(i * b + j + 1) * n]);
        }
    }
    out
}

/// `y[j] += sum_k m[j·cols + k] · v[k]` for `rows` outputs.
fn mat_vec(m: &[f64], v: &[f64], rows: usize, y: &mut [f64]) {
    let cols = v.len();
    for j in 0..rows {
        y[j] += m[j * cols..(j + 1) * cols]
            .iter()
            .zip(v)
            .map(|(a, b)| a * b)
            .sum::<f64>();
    }
}

/// Runs a recurrent layer; outputs `Y, Y_h` (and `Y_c` for LSTM).
pub(crate) fn recurrent(cell: Cell, args: &Args, attrs: &RnnAttrs) -> R<Vec<Array>> {
    let x = args.tensor(0)?;
    let dtype = x.dtype();
    let (w, r) = (args.tensor(1)?, args.tensor(2)?);
    let hidden = attrs.hidden_size.max(0) as usize;
    let gates = match cell {
        Cell::Lstm => 4,
        Cell::Gru => 3,
        Cell::Rnn => 1,
    };
    let dirs = if attrs.direction == "bidirectional" {
        2
    } else {
        1
    };
    if x.rank() != 3
        || w.shape != [dirs, gates * hidden, x.shape[2]]
        || r.shape != [dirs, gates * hidden, hidden]
    {
        return Err(format!(
            "X {:?}, W {:?} and R {:?} do not agree with hidden_size {hidden}",
            x.shape, w.shape, r.shape
        ));
    }
    let batch_first = attrs.layout == 1;
    let (seq, batch, input) = if batch_first {
        (x.shape[1], x.shape[0], x.shape[2])
    } else {
        (x.shape[0], x.shape[1], x.shape[2])
    };
    let xv = x.data.to_f64s();
    let at = |t: usize, b: usize| -> &[f64] {
        let start = if batch_first {
            (b * seq + t) * input
        } else {
            (t * batch + b) * input
        };
        &xv[start..start + input]
    };
    let wv = w.data.to_f64s();
    let rv = r.data.to_f64s();
    let bias = args
        .opt_tensor(3)?
        .map(|b| b.data.to_f64s())
        .unwrap_or_else(|| vec![0.0; dirs * 2 * gates * hidden]);
    let lens: Vec<usize> = args
        .opt_tensor(4)?
        .map(|l| {
            l.data
                .to_i64s()
                .iter()
                .map(|&v| v.max(0) as usize)
                .collect()
        })
        .unwrap_or_else(|| vec![seq; batch]);
    let state = |i: usize| -> R<Vec<f64>> {
        Ok(match args.opt_tensor(i)? {
            Some(t) => {
                let v = t.data.to_f64s();
                if batch_first {
                    swap_leading(&v, batch, dirs, hidden)
                } else {
                    v
                }
            }
            None => vec![0.0; dirs * batch * hidden],
        })
    };
    let h0 = state(5)?;
    let c0 = if cell == Cell::Lstm {
        state(6)?
    } else {
        Vec::new()
    };
    let peep = if cell == Cell::Lstm {
        args.opt_tensor(7)?.map(|p| p.data.to_f64s())
    } else {
        None
    };
    let defaults: &[&str] = match cell {
        Cell::Lstm => &["Sigmoid", "Tanh", "Tanh"],
        Cell::Gru => &["Sigmoid", "Tanh"],
        Cell::Rnn => &["Tanh"],
    };
    let per_dir = defaults.len();
    let mut acts = Vec::new();
    for k in 0..per_dir * dirs {
        let name = attrs
            .activations
            .get(k)
            .map_or(defaults[k % per_dir], String::as_str);
        acts.push(activation(
            name,
            attrs.activation_alpha.get(k).copied(),
            attrs.activation_beta.get(k).copied(),
        )?);
    }
    let clip = |v: f64| {
        if attrs.clip > 0.0 {
            v.clamp(-f64::from(attrs.clip), f64::from(attrs.clip))
        } else {
            v
        }
    };
    let mut y = vec![0.0; seq * dirs * batch * hidden];
    let mut yh = vec![0.0; dirs * batch * hidden];
    let mut yc = vec![0.0; dirs * batch * hidden];
    let gh = gates * hidden;
    for d in 0..dirs {
        let reverse = attrs.direction == "reverse" || d == 1;
        let wd = &wv[d * gh * input..(d + 1) * gh * input];
        let rd = &rv[d * gh * hidden..(d + 1) * gh * hidden];
        let wb = &bias[d * 2 * gh..d * 2 * gh + gh];
        let rb = &bias[d * 2 * gh + gh..(d + 1) * 2 * gh];
        let f = &acts[d * per_dir];
        for b in 0..batch {
            let mut h = h0[(d * batch + b) * hidden..(d * batch + b + 1) * hidden].to_vec();
            let mut c = if cell == Cell::Lstm {
                c0[(d * batch + b) * hidden..(d * batch + b + 1) * hidden].to_vec()
            } else {
                Vec::new()
            };
            let len = lens.get(b).copied().unwrap_or(seq).min(seq);
            for step in 0..len {
                let t = if reverse { len - 1 - step } else { step };
                let mut xw = wb.to_vec();
                mat_vec(wd, at(t, b), gh, &mut xw);
                let mut hr = rb.to_vec();
                match cell {
                    Cell::Lstm => {
                        mat_vec(rd, &h, gh, &mut hr);
                        let (g, hh) = (&acts[d * per_dir + 1], &acts[d * per_dir + 2]);
                        let p = |k: usize, j: usize| {
                            peep.as_ref()
                                .map_or(0.0, |p| p[d * 3 * hidden + k * hidden + j])
                        };
                        for j in 0..hidden {
                            let pre = |k: usize| xw[k * hidden + j] + hr[k * hidden + j];
                            let i_gate = f(clip(pre(0) + p(0, j) * c[j]));
                            let f_gate = if attrs.input_forget {
                                1.0 - i_gate
                            } else {
                                f(clip(pre(2) + p(2, j) * c[j]))
                            };
                            let c_new = f_gate * c[j] + i_gate * g(clip(pre(3)));
                            let o_gate = f(clip(pre(1) + p(1, j) * c_new));
                            c[j] = c_new;
                            h[j] = o_gate * hh(c_new);
                        }
                    }
                    Cell::Gru => {
                        let g = &acts[d * per_dir + 1];
                        let mut hz = rb[..2 * hidden].to_vec();
                        mat_vec(&rd[..2 * hidden * hidden], &h, 2 * hidden, &mut hz);
                        let z: Vec<f64> = (0..hidden).map(|j| f(clip(xw[j] + hz[j]))).collect();
                        let rg: Vec<f64> = (0..hidden)
                            .map(|j| f(clip(xw[hidden + j] + hz[hidden + j])))
                            .collect();
                        let rh = &rd[2 * hidden * hidden..];
                        let mut cand = vec![0.0; hidden];
                        if attrs.linear_before_reset {
                            let mut lin = rb[2 * hidden..].to_vec();
                            mat_vec(rh, &h, hidden, &mut lin);
                            for j in 0..hidden {
                                cand[j] = g(clip(xw[2 * hidden + j] + rg[j] * lin[j]));
                            }
                        } else {
                            let reset: Vec<f64> = (0..hidden).map(|j| rg[j] * h[j]).collect();
                            let mut lin = rb[2 * hidden..].to_vec();
                            mat_vec(rh, &reset, hidden, &mut lin);
                            for j in 0..hidden {
                                cand[j] = g(clip(xw[2 * hidden + j] + lin[j]));
                            }
                        }
                        for j in 0..hidden {
                            h[j] = (1.0 - z[j]) * cand[j] + z[j] * h[j];
                        }
                    }
                    Cell::Rnn => {
                        mat_vec(rd, &h, gh, &mut hr);
                        for j in 0..hidden {
                            h[j] = f(clip(xw[j] + hr[j]));
                        }
                    }
                }
                y[((t * dirs + d) * batch + b) * hidden..((t * dirs + d) * batch + b + 1) * hidden]
                    .copy_from_slice(&h);
            }
            yh[(d * batch + b) * hidden..(d * batch + b + 1) * hidden].copy_from_slice(&h);
            if cell == Cell::Lstm {
                yc[(d * batch + b) * hidden..(d * batch + b + 1) * hidden].copy_from_slice(&c);
            }
        }
    }
    let store = |v: Vec<f64>| Data::from_f64s(dtype, v, false);
    let (y, yh, yc, y_shape, s_shape) = if batch_first {
        let mut yt = vec![0.0; y.len()];
        for t in 0..seq {
            for d in 0..dirs {
                for b in 0..batch {
                    for h in 0..hidden {
                        yt[((b * seq + t) * dirs + d) * hidden + h] =
                            y[((t * dirs + d) * batch + b) * hidden + h];
                    }
                }
            }
        }
        let swap = |v: &[f64]| swap_leading(v, dirs, batch, hidden);
        (
            yt,
            swap(&yh),
            swap(&yc),
            vec![batch, seq, dirs, hidden],
            vec![batch, dirs, hidden],
        )
    } else {
        (
            y,
            yh,
            yc,
            vec![seq, dirs, batch, hidden],
            vec![dirs, batch, hidden],
        )
    };
    let mut out = vec![
        Array::new(y_shape, store(y)),
        Array::new(s_shape.clone(), store(yh)),
    ];
    if cell == Cell::Lstm {
        out.push(Array::new(s_shape, store(yc)));
    }
    Ok(out)
}
