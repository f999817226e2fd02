//! The state-carrying mixers of Mamba and Gated DeltaNet layers: `CausalConvWithState` (a
//! short depthwise causal convolution continuing from a past state) and `LinearAttention`
//! (the recurrence `S ← decay·S + k ⊗ β(v − decay·Sᵀk)`, read as `scale·qᵀS`). Reference: the
//! CPU executor's `ops::stateful`.
//!
//! The convolution computes one output (or carried state) element per thread iteration. The
//! recurrence gives each thread one column of one head's state: the decay, the retrieval
//! `Sᵀk`, the update and every query head's read touch only that column, so the columns of
//! a `[B, H_kv, d_k, d_v]` state run in parallel and each walks the tokens in order with its
//! column in registers (`d_k` up to 256), read from the past state and written to the present
//! one once.

use crate::cg::{Cg, Gen, Val};
use crate::{Family, Generated, KernelError, Launch, Request, TensorSig};
use inkwell::context::Context;
use inkwell::values::{FloatValue, IntValue, PointerValue};
use inkwell::IntPredicate;
use sparkc_ir::{DType, Dim, Op};

const BLOCK: u32 = 128;

/// The widest key (`d_k`) whose state column a thread keeps in registers.
const MAX_KEY_WIDTH: i64 = 256;

/// True for the ops this family generates.
pub fn handles(op: &Op) -> bool {
    matches!(
        op,
        Op::CausalConvWithState { .. } | Op::LinearAttention { .. }
    )
}

/// Generates a `CausalConvWithState` or `LinearAttention` kernel.
pub fn generate<'ctx>(cx: &'ctx Context, req: &Request) -> Gen<Generated<'ctx>> {
    match req.op {
        Op::CausalConvWithState { activation } => causal_conv(cx, req, activation),
        Op::LinearAttention {
            kv_num_heads,
            q_num_heads,
            scale,
            update_rule,
            ..
        } => linear_attention(cx, req, *q_num_heads, *kv_num_heads, *scale, update_rule),
        _ => unreachable!("plan dispatches only stateful mixers here"),
    }
}

/// A dimension known at compile time, or an error naming it.
fn known(d: &Dim, what: &str) -> Gen<i64> {
    d.as_const().ok_or_else(|| {
        KernelError::Unsupported(format!("{what} must be known at compile time, found {d}"))
    })
}

/// The dimensions of a rank-`rank` tensor, or an error naming it.
fn dims<'a>(t: &'a TensorSig, what: &str, rank: usize) -> Gen<&'a [Dim]> {
    if t.shape.len() != rank {
        return Err(KernelError::Unsupported(format!(
            "{what} must have rank {rank}, found rank {}",
            t.shape.len()
        )));
    }
    Ok(&t.shape)
}

/// The kernel, launched with `threads` threads in blocks of [`BLOCK`].
fn finish<'ctx>(
    cg: Cg<'ctx>,
    req: &Request,
    family: Family,
    variant: String,
    threads: Dim,
) -> Gen<Generated<'ctx>> {
    let launch = Launch {
        grid: threads.ceil_div(&Dim::known(i64::from(BLOCK))),
        block: BLOCK,
        shared_bytes: 0,
        dynamic_shared_bytes: 0,
    };
    let info = req.describe(family, variant, vec![req.op.name()], launch);
    Ok(Generated {
        info,
        module: cg.finish()?,
    })
}

/// `CausalConvWithState`: inputs `input [B, C, L]`, `weight [C, 1, k]`, `bias [C]?`,
/// `past_state [B, C, k−1]?`; outputs the convolution and the last `k − 1` positions of the
/// input preceded by the past state.
fn causal_conv<'ctx>(cx: &'ctx Context, req: &Request, activation: &str) -> Gen<Generated<'ctx>> {
    let silu = match activation {
        "none" | "" => false,
        "silu" | "swish" => true,
        other => {
            return Err(KernelError::Unsupported(format!(
                "activation '{other}' is not one of none, silu and swish"
            )))
        }
    };
    let x = req.input(0)?.clone();
    let w = req.input(1)?.clone();
    let bias = req.inputs.get(2).cloned().flatten();
    let past = req.inputs.get(3).cloned().flatten();
    let [batch, channels, length] = dims(&x, "input", 3)? else {
        unreachable!("rank checked")
    };
    let taps = known(&dims(&w, "weight", 3)?[2], "the kernel width")?;
    if taps < 1 {
        return Err(KernelError::Unsupported(format!(
            "the kernel width must be at least 1, found {taps}"
        )));
    }
    let carried = taps - 1;
    let (out, present) = (req.outputs[0].clone(), req.outputs[1].clone());
    let mut cg = req.begin(cx, BLOCK);
    let rows = cg.mul(cg.dim(batch)?, cg.dim(channels)?)?;
    let length_v = cg.dim(length)?;
    let outputs = cg.mul(rows, length_v)?;
    let states = cg.mul(rows, cg.c(carried))?;
    let x_at = cg.buffer(req.input_param(0));
    let w_at = cg.buffer(req.input_param(1));
    let bias_at = bias.as_ref().map(|_| cg.buffer(req.input_param(2)));
    let past_at = past.as_ref().map(|_| cg.buffer(req.input_param(3)));
    let channels_v = cg.dim(channels)?;
    // Position `i` of row `row` of the past state followed by the input (zeros for no state).
    let padded =
        |cg: &mut Cg<'ctx>, row: IntValue<'ctx>, i: IntValue<'ctx>| -> Gen<FloatValue<'ctx>> {
            let in_past = cg.icmp(IntPredicate::SLT, i, cg.c(carried))?;
            let from_x = cg.add(
                cg.mul(row, length_v)?,
                cg.imax(cg.sub(i, cg.c(carried))?, cg.c(0))?,
            )?;
            let xv = cg.load(x.dtype, x_at, from_x)?.float(cg)?;
            // A zero-width state has nothing to read; the select below never takes it then.
            let pv = match (&past, past_at) {
                (Some(p), Some(at)) if carried > 0 => {
                    let within = cg.imin(i, cg.c(carried - 1))?;
                    let from_past = cg.add(cg.mul(row, cg.c(carried))?, within)?;
                    cg.load(p.dtype, at, from_past)?.float(cg)?
                }
                _ => cg.f(0.0),
            };
            cg.fsel(in_past, pv, xv)
        };
    let (out_at, present_at) = (cg.buffer(0), cg.buffer(1));
    let total = cg.add(outputs, states)?;
    cg.for_each_thread_item(cg.c(0), total, |cg, item| {
        let is_output = cg.icmp(IntPredicate::SLT, item, outputs)?;
        cg.if_then(is_output, |cg| {
            let row = cg.div(item, length_v)?;
            let t = cg.rem(item, length_v)?;
            let c = cg.rem(row, channels_v)?;
            let mut y = match (&bias, bias_at) {
                (Some(b), Some(at)) => cg.load(b.dtype, at, c)?.float(cg)?,
                _ => cg.f(0.0),
            };
            for j in 0..taps {
                let tap = cg.load(w.dtype, w_at, cg.add(cg.mul(c, cg.c(taps))?, cg.c(j))?)?;
                let v = padded(cg, row, cg.add(t, cg.c(j))?)?;
                y = cg.fma(tap.float(cg)?, v, y)?;
            }
            if silu {
                y = cg.fmul(y, cg.sigmoid(y)?)?;
            }
            cg.store(out.dtype, out_at, item, Val::F(y))
        })?;
        let is_state = cg.icmp(IntPredicate::SGE, item, outputs)?;
        cg.if_then(is_state, |cg| {
            let s = cg.sub(item, outputs)?;
            let row = cg.div(s, cg.c(carried.max(1)))?;
            let i = cg.rem(s, cg.c(carried.max(1)))?;
            let v = padded(cg, row, cg.add(length_v, i)?)?;
            cg.store(present.dtype, present_at, s, Val::F(v))
        })
    })?;
    let threads = x.numel() + present.numel();
    let variant = format!(
        "causal depthwise, {taps} taps{}",
        if silu { ", SiLU" } else { "" }
    );
    finish(cg, req, Family::Conv, variant, threads)
}

/// A per-token gate or rate `[B, T, heads·width]` of `LinearAttention`, read for KV head `h`
/// and index `i` (width 1: one value per head, or one for all heads).
struct PerToken<'ctx> {
    dtype: DType,
    at: PointerValue<'ctx>,
    heads: i64,
    width: i64,
}

impl<'ctx> PerToken<'ctx> {
    fn new(
        cg: &Cg<'ctx>,
        req: &Request,
        slot: usize,
        what: &str,
        forms: &[(i64, i64)],
    ) -> Gen<PerToken<'ctx>> {
        let t = req.input(slot)?;
        let last = known(&dims(t, what, 3)?[2], &format!("{what}'s last dim"))?;
        let &(heads, width) = forms.iter().find(|(h, w)| h * w == last).ok_or_else(|| {
            let sizes: Vec<String> = forms.iter().map(|(h, w)| (h * w).to_string()).collect();
            KernelError::Unsupported(format!(
                "{what}'s last dim {last} must be one of {}",
                sizes.join(", ")
            ))
        })?;
        Ok(PerToken {
            dtype: t.dtype,
            at: cg.buffer(req.input_param(slot)),
            heads,
            width,
        })
    }

    /// The value for token `token` (`b·T + t`), head `h` and index `i`.
    fn read(
        &self,
        cg: &Cg<'ctx>,
        token: IntValue<'ctx>,
        h: IntValue<'ctx>,
        i: IntValue<'ctx>,
    ) -> Gen<FloatValue<'ctx>> {
        let h = cg.imin(h, cg.c(self.heads - 1))?;
        let i = cg.imin(i, cg.c(self.width - 1))?;
        let at = cg.add(
            cg.mul(
                cg.add(cg.mul(token, cg.c(self.heads))?, h)?,
                cg.c(self.width),
            )?,
            i,
        )?;
        cg.load(self.dtype, self.at, at)?.float(cg)
    }
}

/// `LinearAttention`: one thread per `(batch, KV head, value column)` walks the tokens.
fn linear_attention<'ctx>(
    cx: &'ctx Context,
    req: &Request,
    q_heads: i64,
    kv_heads: i64,
    scale: f32,
    update_rule: &str,
) -> Gen<Generated<'ctx>> {
    if q_heads <= 0 || kv_heads <= 0 || q_heads % kv_heads != 0 {
        return Err(KernelError::Unsupported(format!(
            "q_num_heads {q_heads} must be a positive multiple of kv_num_heads {kv_heads}"
        )));
    }
    let (gated, delta) = match update_rule {
        "linear" => (false, false),
        "gated" => (true, false),
        "delta" => (false, true),
        "gated_delta" => (true, true),
        other => {
            return Err(KernelError::Unsupported(format!(
                "update rule '{other}' is not one of linear, gated, delta and gated_delta"
            )))
        }
    };
    let q = req.input(0)?.clone();
    let k = req.input(1)?.clone();
    let v = req.input(2)?.clone();
    let past = req.inputs.get(3).cloned().flatten();
    let [batch, tokens, q_width] = dims(&q, "query", 3)? else {
        unreachable!("rank checked")
    };
    let q_width = known(q_width, "query's last dim")?;
    let v_width = known(&dims(&v, "value", 3)?[2], "value's last dim")?;
    if q_width % q_heads != 0 || v_width % kv_heads != 0 {
        return Err(KernelError::Unsupported(format!(
            "query's last dim {q_width} and value's {v_width} must be multiples of \
             {q_heads} and {kv_heads} heads"
        )));
    }
    let (dk, dv) = (q_width / q_heads, v_width / kv_heads);
    if dk > MAX_KEY_WIDTH {
        return Err(KernelError::Unsupported(format!(
            "a key width (d_k) of {dk} is above the {MAX_KEY_WIDTH} a thread keeps in registers"
        )));
    }
    let group = q_heads / kv_heads;
    let (out, present) = (req.outputs[0].clone(), req.outputs[1].clone());
    let mut cg = req.begin(cx, BLOCK);
    let need = |slot: usize, what: &str, wanted: bool| -> Gen<bool> {
        let given = req.inputs.get(slot).is_some_and(|t| t.is_some());
        match (wanted, given) {
            (true, false) => Err(KernelError::Unsupported(format!(
                "update rule '{update_rule}' needs {what}"
            ))),
            (false, true) => Err(KernelError::Unsupported(format!(
                "update rule '{update_rule}' takes no {what}"
            ))),
            _ => Ok(wanted),
        }
    };
    let decay = if need(4, "decay", gated)? {
        Some(PerToken::new(
            &cg,
            req,
            4,
            "decay",
            &[(kv_heads, 1), (kv_heads, dk)],
        )?)
    } else {
        None
    };
    let beta = if need(5, "beta", delta)? {
        Some(PerToken::new(
            &cg,
            req,
            5,
            "beta",
            &[(kv_heads, 1), (1, 1)],
        )?)
    } else {
        None
    };
    let scale = if scale == 0.0 {
        1.0 / (dk as f64).sqrt()
    } else {
        f64::from(scale)
    };
    let (q_at, k_at, v_at) = (
        cg.buffer(req.input_param(0)),
        cg.buffer(req.input_param(1)),
        cg.buffer(req.input_param(2)),
    );
    let past_at = past.as_ref().map(|_| cg.buffer(req.input_param(3)));
    let (out_at, state_at) = (cg.buffer(0), cg.buffer(1));
    let tokens_v = cg.dim(tokens)?;
    let columns = cg.mul(cg.mul(cg.dim(batch)?, cg.c(kv_heads))?, cg.c(dv))?;
    cg.for_each_thread_item(cg.c(0), columns, |cg, item| {
        let m = cg.rem(item, cg.c(dv))?;
        let bh = cg.div(item, cg.c(dv))?;
        let h = cg.rem(bh, cg.c(kv_heads))?;
        let b = cg.div(bh, cg.c(kv_heads))?;
        // Element (d, m) of this head's state.
        let cell = |cg: &Cg<'ctx>, d: i64| -> Gen<IntValue<'ctx>> {
            cg.add(
                cg.mul(cg.add(cg.mul(bh, cg.c(dk))?, cg.c(d))?, cg.c(dv))?,
                m,
            )
        };
        let mut column = Vec::with_capacity(dk as usize);
        for d in 0..dk {
            column.push(match (&past, past_at) {
                (Some(p), Some(at)) => cg.load(p.dtype, at, cell(cg, d)?)?.float(cg)?.into(),
                _ => cg.f(0.0).into(),
            });
        }
        let column = cg.fold_range(cg.c(0), tokens_v, cg.c(1), column, |cg, t, column| {
            let mut s: Vec<FloatValue<'ctx>> =
                column.iter().map(|v| v.into_float_value()).collect();
            let token = cg.add(cg.mul(b, tokens_v)?, t)?;
            let k_row = cg.add(cg.mul(token, cg.c(kv_heads))?, h)?;
            let mut key = Vec::with_capacity(dk as usize);
            for d in 0..dk {
                let at = cg.add(cg.mul(k_row, cg.c(dk))?, cg.c(d))?;
                key.push(cg.load(k.dtype, k_at, at)?.float(cg)?);
            }
            if let Some(decay) = &decay {
                let mut gate = None;
                for (d, x) in (0..).zip(s.iter_mut()) {
                    // One gate for every row when the decay has one value per head.
                    let g = match gate {
                        Some(g) if decay.width == 1 => g,
                        _ => cg.exp(decay.read(cg, token, h, cg.c(d))?)?,
                    };
                    gate = Some(g);
                    *x = cg.fmul(*x, g)?;
                }
            }
            let at = cg.add(cg.mul(k_row, cg.c(dv))?, m)?;
            let mut update = cg.load(v.dtype, v_at, at)?.float(cg)?;
            if let Some(beta) = &beta {
                let mut retrieved = cg.f(0.0);
                for (x, kd) in s.iter().zip(&key) {
                    retrieved = cg.fma(*x, *kd, retrieved)?;
                }
                let rate = beta.read(cg, token, h, cg.c(0))?;
                update = cg.fmul(rate, cg.fsub(update, retrieved)?)?;
            }
            for (x, kd) in s.iter_mut().zip(&key) {
                *x = cg.fma(*kd, update, *x)?;
            }
            for j in 0..group {
                let qh = cg.add(cg.mul(h, cg.c(group))?, cg.c(j))?;
                let row = cg.add(cg.mul(token, cg.c(q_heads))?, qh)?;
                let mut read = cg.f(0.0);
                for (d, x) in (0..).zip(&s) {
                    let at = cg.add(cg.mul(row, cg.c(dk))?, cg.c(d))?;
                    let qd = cg.load(q.dtype, q_at, at)?.float(cg)?;
                    read = cg.fma(qd, *x, read)?;
                }
                let o = cg.fmul(read, cg.f(scale))?;
                let at = cg.add(cg.mul(row, cg.c(dv))?, m)?;
                cg.store(out.dtype, out_at, at, Val::F(o))?;
            }
            Ok(s.into_iter().map(Into::into).collect())
        })?;
        for (d, x) in (0..).zip(column) {
            cg.store(
                present.dtype,
                state_at,
                cell(cg, d)?,
                Val::F(x.into_float_value()),
            )?;
        }
        Ok(())
    })?;
    let threads = batch.clone() * Dim::known(kv_heads * dv);
    let variant = format!(
        "{update_rule}, a {dk}-row state column per thread in registers, {group} query heads per KV head"
    );
    finish(cg, req, Family::Attention, variant, threads)
}
