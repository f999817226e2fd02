//! Fused scaled-dot-product attention in the flash-attention manner: one pass over the keys
//! and values per query row with an online softmax (running maximum and sum, the output
//! accumulator rescaled as the maximum grows), so the `S×S` score matrix never exists.
//! Handles 3-D (`[B, S, H*D]`) and 4-D (`[B, H, S, D]`) layouts, grouped KV heads, boolean or
//! additive masks with broadcasting, causal and sliding-window masking, soft capping, a past
//! key/value cache (the keys are the cache followed by the new ones; the present cache is
//! written out, and queries sit after the cache for the causal and window masks) and
//! per-batch key lengths (`nonpad_kv_seqlen`), and the optional score output (the
//! `[B, H, S, S_kv]` scores or probabilities the caller asked for, written as they are
//! computed). Rows whose keys are all masked produce zeros, as the CPU reference does.
//!
//! Reference: the CPU executor's Attention.

use crate::cg::{Cg, Gen, Val};
use crate::elementwise::{layout, offsets};
use crate::{Family, Generated, KernelError, Launch, Request};
use inkwell::context::Context;
use inkwell::values::{FloatValue, IntValue};
use inkwell::{FloatPredicate, IntPredicate};
use sparkc_ir::{DType, Dim, Op};

/// Threads per block (each thread owns one query row).
const BLOCK: u32 = 128;
/// The largest head size whose accumulator is kept in registers.
const MAX_HEAD: i64 = 256;

/// Generates the kernel of an Attention node.
pub fn generate<'ctx>(cx: &'ctx Context, req: &Request) -> Gen<Generated<'ctx>> {
    let Op::Attention(attrs) = req.op else {
        return Err(KernelError::Unsupported("not an Attention node".into()));
    };
    // The score output and what it saves: 0 and 1 the (soft-capped) scores, 2 the scores
    // with the masks added, 3 the probabilities.
    let scores = match req.outputs.get(3) {
        Some(t) if (0..=3).contains(&attrs.qk_matmul_output_mode) => {
            Some((t.dtype, attrs.qk_matmul_output_mode))
        }
        Some(_) => {
            return Err(KernelError::Unsupported(format!(
                "qk_matmul_output_mode {}",
                attrs.qk_matmul_output_mode
            )))
        }
        None => None,
    };
    let present = |i: usize| req.inputs.get(i).cloned().flatten();
    let (past_k, past_v, lengths) = (present(4), present(5), present(6));
    if past_k.is_some() != past_v.is_some() {
        return Err(KernelError::Unsupported(
            "a past key cache needs its past value cache".into(),
        ));
    }
    if past_k.as_ref().is_some_and(|t| t.shape.len() != 4) {
        return Err(KernelError::Unsupported(
            "past key/value caches must be [batch, heads, length, size]".into(),
        ));
    }
    let (q, k, v) = (
        req.input(0)?.clone(),
        req.input(1)?.clone(),
        req.input(2)?.clone(),
    );
    let rank = q.shape.len();
    // Per tensor: (heads, seq, size), and whether heads are packed in the last axis.
    let heads_of = |t: &crate::TensorSig, heads: i64| -> Gen<(Dim, Dim, Dim)> {
        match t.shape.len() {
            4 => Ok((t.shape[1].clone(), t.shape[2].clone(), t.shape[3].clone())),
            3 => {
                let size = t.shape[2].div_exact(&Dim::known(heads)).ok_or_else(|| {
                    KernelError::Unsupported("hidden size does not split into heads".into())
                })?;
                Ok((Dim::known(heads), t.shape[1].clone(), size))
            }
            r => Err(KernelError::Unsupported(format!(
                "Attention inputs of rank {r}"
            ))),
        }
    };
    let (hq, sq, dk) = heads_of(&q, attrs.q_num_heads)?;
    let (hkv, s_new, _) = heads_of(&k, attrs.kv_num_heads)?;
    let (_, _, dv) = heads_of(&v, attrs.kv_num_heads)?;
    // The keys are the past cache (if any) followed by the new ones.
    let past_len = match &past_k {
        Some(t) => t.shape[2].clone(),
        None => Dim::known(0),
    };
    let skv = past_len.clone() + s_new.clone();
    let (Some(dk_c), Some(dv_c), Some(hq_c), Some(hkv_c)) =
        (dk.as_const(), dv.as_const(), hq.as_const(), hkv.as_const())
    else {
        return Err(KernelError::Unsupported(
            "head counts and sizes must be static".into(),
        ));
    };
    if dk_c > MAX_HEAD || dv_c > MAX_HEAD {
        return Err(KernelError::Unsupported(format!(
            "head sizes above {MAX_HEAD}"
        )));
    }
    let group = (hq_c / hkv_c.max(1)).max(1);
    let scale = attrs
        .scale
        .map(f64::from)
        .unwrap_or(1.0 / (dk_c as f64).sqrt());
    let batch = q.shape[0].clone();
    // A mask narrower than the keys masks the keys past its last column.
    let mask_lay = match req.inputs.get(3).and_then(|t| t.as_ref()) {
        Some(m) => {
            let width = m
                .shape
                .last()
                .cloned()
                .ok_or_else(|| KernelError::Unsupported("a mask of rank 0".into()))?;
            let full = [batch.clone(), hq.clone(), sq.clone(), width.clone()];
            Some((m.dtype, layout(&full, &[Some(&m.shape)])?, width))
        }
        None => None,
    };
    let mut cg = req.begin(cx, BLOCK);
    let f32t = cg.f32t();
    let acc = cg.b.build_alloca(f32t.array_type(dv_c as u32), "acc")?;
    let qrow = cg.b.build_alloca(f32t.array_type(dk_c as u32), "q")?;
    let (hq_v, sq_v, skv_v) = (cg.c(hq_c), cg.dim(&sq)?, cg.dim(&skv)?);
    let (past_n, new_n) = (cg.dim(&past_len)?, cg.dim(&s_new)?);
    let batch_v = cg.dim(&batch)?;
    let rows = cg.mul(cg.mul(batch_v, hq_v)?, sq_v)?;
    // Element offsets of (batch, head, row, col) in each layout.
    let at = |cg: &crate::cg::Cg<'ctx>, b, h, s, d, heads: i64, seq, size: i64| -> Gen<_> {
        if rank == 4 {
            let bh = cg.add(cg.mul(b, cg.c(heads))?, h)?;
            cg.add(cg.mul(cg.add(cg.mul(bh, seq)?, s)?, cg.c(size))?, d)
        } else {
            let bs = cg.add(cg.mul(b, seq)?, s)?;
            cg.add(cg.mul(cg.add(cg.mul(bs, cg.c(heads))?, h)?, cg.c(size))?, d)
        }
    };
    let (qp, kp, vp) = (req.input_param(0), req.input_param(1), req.input_param(2));
    let out = req.outputs[0].clone();
    let caches = past_k.as_ref().zip(past_v.as_ref()).map(|(pk, pv)| {
        (
            (pk.dtype, req.input_param(4)),
            (pv.dtype, req.input_param(5)),
        )
    });
    // Element d of key (or value) row j of KV head kh: from the past cache, or the new rows.
    let kv_at = |cg: &crate::cg::Cg<'ctx>,
                 which: usize,
                 (b, kh, j, d): (
        IntValue<'ctx>,
        IntValue<'ctx>,
        IntValue<'ctx>,
        IntValue<'ctx>,
    )|
     -> Gen<FloatValue<'ctx>> {
        let (t, param, size) = match which {
            0 => (&k, kp, dk_c),
            _ => (&v, vp, dv_c),
        };
        let fresh = cg.imax(cg.sub(j, past_n)?, cg.c(0))?;
        let off = at(cg, b, kh, fresh, d, hkv_c, new_n, size)?;
        let x = cg.load(t.dtype, cg.buffer(param), off)?.float(cg)?;
        let Some(caches) = caches else {
            return Ok(x);
        };
        let (dtype, param) = if which == 0 { caches.0 } else { caches.1 };
        let old = cg.imin(j, cg.imax(cg.sub(past_n, cg.c(1))?, cg.c(0))?)?;
        let bh = cg.add(cg.mul(b, cg.c(hkv_c))?, kh)?;
        let off = cg.add(cg.mul(cg.add(cg.mul(bh, past_n)?, old)?, cg.c(size))?, d)?;
        let y = cg.load(dtype, cg.buffer(param), off)?.float(cg)?;
        let cached = cg.icmp(IntPredicate::SLT, j, past_n)?;
        cg.fsel(cached, y, x)
    };
    // The present caches (outputs 1 and 2): [batch, kv heads, past + new, size].
    for (slot, which, size) in [(1usize, 0usize, dk_c), (2, 1, dv_c)] {
        let Some(cache) = req.outputs.get(slot).cloned() else {
            continue;
        };
        let total = cg.mul(cg.mul(cg.mul(batch_v, cg.c(hkv_c))?, skv_v)?, cg.c(size))?;
        cg.for_each_thread_item(cg.c(0), total, |cg, e| {
            let d = cg.rem(e, cg.c(size))?;
            let rest = cg.div(e, cg.c(size))?;
            let j = cg.rem(rest, skv_v)?;
            let bh = cg.div(rest, skv_v)?;
            let (b, kh) = (cg.div(bh, cg.c(hkv_c))?, cg.rem(bh, cg.c(hkv_c))?);
            let value = kv_at(cg, which, (b, kh, j, d))?;
            cg.store(cache.dtype, cg.buffer(slot), e, Val::F(value))
        })?;
    }
    let length_of = |cg: &crate::cg::Cg<'ctx>, b: IntValue<'ctx>| -> Gen<Option<IntValue<'ctx>>> {
        match &lengths {
            Some(t) => Ok(Some(
                match cg.load(t.dtype, cg.buffer(req.input_param(6)), b)? {
                    Val::I(l) => l,
                    Val::F(f) => cg.ftoi(f)?,
                },
            )),
            None => Ok(None),
        }
    };
    cg.for_each_thread_item(cg.c(0), rows, |cg, row| {
        let i = cg.rem(row, sq_v)?;
        let bh = cg.div(row, sq_v)?;
        let h = cg.rem(bh, hq_v)?;
        let b = cg.div(bh, hq_v)?;
        let kh = cg.div(h, cg.c(group))?;
        let length = length_of(cg, b)?;
        // Where query row i sits among the keys: after the cache, or before the padding.
        let offset = match (&past_k, length) {
            (Some(_), _) => past_n,
            (None, Some(l)) => cg.sub(l, sq_v)?,
            (None, None) => cg.c(0),
        };
        for d in 0..dk_c {
            let off = at(cg, b, h, i, cg.c(d), hq_c, sq_v, dk_c)?;
            let x = cg.load(q.dtype, cg.buffer(qp), off)?.float(cg)?;
            cg.store_raw(f32t.into(), qrow, cg.c(d), cg.fmul(x, cg.f(scale))?.into())?;
        }
        for d in 0..dv_c {
            cg.store_raw(f32t.into(), acc, cg.c(d), cg.f(0.0).into())?;
        }
        // Key j's score: after the soft cap (what modes 0 and 1 of the score output save), and
        // after the mask, padding, causal and window biases.
        let score = |cg: &mut crate::cg::Cg<'ctx>,
                     j: IntValue<'ctx>|
         -> Gen<(FloatValue<'ctx>, FloatValue<'ctx>)> {
            let mut s = cg.f(0.0);
            for d in 0..dk_c {
                let qd = cg.load_raw(f32t.into(), qrow, cg.c(d))?.into_float_value();
                let kd = kv_at(cg, 0, (b, kh, j, cg.c(d)))?;
                s = cg.fma(qd, kd, s)?;
            }
            if attrs.softcap > 0.0 {
                let c = cg.f(attrs.softcap as f64);
                s = cg.fmul(cg.tanh(cg.fdiv(s, c)?)?, c)?;
            }
            let capped = s;
            if let Some((dtype, lay, width)) = &mask_lay {
                let width = cg.dim(width)?;
                let inside = cg.icmp(IntPredicate::SLT, j, width)?;
                let column = cg.imin(j, cg.sub(width, cg.c(1))?)?;
                let flat = cg.add(cg.mul(row, width)?, column)?;
                let off = offsets(cg, lay, flat)?[0].unwrap_or(cg.c(0));
                let mv = cg.load(*dtype, cg.buffer(req.input_param(3)), off)?;
                let masked = match (dtype, mv) {
                    (DType::Bool, Val::I(keep)) => {
                        let keep = cg.icmp(IntPredicate::NE, keep, cg.c(0))?;
                        cg.fsel(keep, s, cg.f(f64::NEG_INFINITY))?
                    }
                    (_, mv) => cg.fadd(s, mv.float(cg)?)?,
                };
                s = cg.fsel(inside, masked, cg.f(f64::NEG_INFINITY))?;
            }
            if let Some(l) = length {
                let padding = cg.icmp(IntPredicate::SGE, j, l)?;
                s = cg.fsel(padding, cg.f(f64::NEG_INFINITY), s)?;
            }
            // Causal and window masks, with query row i at key position i + offset.
            let diff = cg.sub(cg.add(i, offset)?, j)?;
            if attrs.is_causal {
                let future = cg.icmp(IntPredicate::SLT, diff, cg.c(0))?;
                s = cg.fsel(future, cg.f(f64::NEG_INFINITY), s)?;
            }
            if attrs.left_window_size >= 0 {
                let far = cg.icmp(IntPredicate::SGT, diff, cg.c(attrs.left_window_size))?;
                s = cg.fsel(far, cg.f(f64::NEG_INFINITY), s)?;
            }
            if attrs.right_window_size >= 0 {
                let far = cg.icmp(
                    IntPredicate::SGT,
                    cg.sub(cg.c(0), diff)?,
                    cg.c(attrs.right_window_size),
                )?;
                s = cg.fsel(far, cg.f(f64::NEG_INFINITY), s)?;
            }
            Ok((capped, s))
        };
        // Element (row, j) of the score output.
        let score_at = |cg: &crate::cg::Cg<'ctx>, j: IntValue<'ctx>| cg.add(cg.mul(row, skv_v)?, j);
        let init = vec![cg.f(f64::NEG_INFINITY).into(), cg.f(0.0).into()];
        let state = cg.fold_range(cg.c(0), skv_v, cg.c(1), init, |cg, j, st| {
            let (m, l) = (st[0].into_float_value(), st[1].into_float_value());
            let (capped, s) = score(cg, j)?;
            if let Some((dtype, mode)) = scores {
                if mode < 3 {
                    let saved = if mode < 2 { capped } else { s };
                    cg.store(dtype, cg.buffer(3), score_at(cg, j)?, Val::F(saved))?;
                }
            }
            let m_new = cg.fcall2("llvm.maxnum.f32", m, s)?;
            // A row still all masked keeps its state (and avoids inf - inf).
            let live = cg.fcmp(FloatPredicate::ONE, m_new, cg.f(f64::NEG_INFINITY))?;
            let safe_m = cg.fsel(live, m_new, cg.f(0.0))?;
            let alpha = cg.exp(cg.fsub(m, safe_m)?)?;
            let p = cg.exp(cg.fsub(s, safe_m)?)?;
            let l_new = cg.fma(l, alpha, p)?;
            for d in 0..dv_c {
                let vd = kv_at(cg, 1, (b, kh, j, cg.c(d)))?;
                let a = cg.load_raw(f32t.into(), acc, cg.c(d))?.into_float_value();
                let a = cg.fma(p, vd, cg.fmul(a, alpha)?)?;
                cg.store_raw(f32t.into(), acc, cg.c(d), a.into())?;
            }
            Ok(vec![
                cg.fsel(live, m_new, m)?.into(),
                cg.fsel(live, l_new, l)?.into(),
            ])
        })?;
        let l = state[1].into_float_value();
        let empty = cg.fcmp(FloatPredicate::OEQ, l, cg.f(0.0))?;
        let inv = cg.fsel(empty, cg.f(0.0), cg.fdiv(cg.f(1.0), l)?)?;
        if let Some((dtype, 3)) = scores {
            // The probabilities: a second pass over the keys with the row's final maximum.
            let m = state[0].into_float_value();
            let live = cg.fcmp(FloatPredicate::ONE, m, cg.f(f64::NEG_INFINITY))?;
            let safe_m = cg.fsel(live, m, cg.f(0.0))?;
            cg.for_range(cg.c(0), skv_v, cg.c(1), |cg, j| {
                let (_, s) = score(cg, j)?;
                let p = cg.fmul(cg.exp(cg.fsub(s, safe_m)?)?, inv)?;
                cg.store(dtype, cg.buffer(3), score_at(cg, j)?, Val::F(p))
            })?;
        }
        for d in 0..dv_c {
            let a = cg.load_raw(f32t.into(), acc, cg.c(d))?.into_float_value();
            let off = at(cg, b, h, i, cg.c(d), hq_c, sq_v, dv_c)?;
            cg.store(out.dtype, cg.buffer(0), off, Val::F(cg.fmul(a, inv)?))?;
        }
        Ok(())
    })?;
    let launch = Launch {
        grid: (batch * hq * sq).ceil_div(&Dim::known(BLOCK as i64)),
        block: BLOCK,
        shared_bytes: 0,
        dynamic_shared_bytes: 0,
    };
    let info = req.describe(
        Family::Attention,
        "flash-online-softmax row-per-thread",
        vec![req.op.name()],
        launch,
    );
    Ok(Generated {
        info,
        module: cg.finish()?,
    })
}

/// Generates `RotaryEmbedding`: each element rotated with its pair partner by the cosine and
/// sine of its position (from `position_ids`, or its sequence index), over the first
/// `rotary_embedding_dim` elements of each head; the rest are copied. 4-D inputs are
/// `[B, H, S, D]`, 3-D ones `[B, S, H*D]`. Reference: the CPU executor's RotaryEmbedding.
pub fn generate_rotary<'ctx>(cx: &'ctx Context, req: &Request) -> Gen<Generated<'ctx>> {
    let Op::RotaryEmbedding {
        interleaved,
        num_heads,
        rotary_embedding_dim,
    } = req.op
    else {
        return Err(KernelError::Unsupported(
            "not a RotaryEmbedding node".into(),
        ));
    };
    let x = req.input(0)?.clone();
    let cos = req.input(1)?.clone();
    let sin = req.input(2)?.clone();
    let positions = req.inputs.get(3).cloned().flatten();
    let (seq, heads, size) = match x.shape.as_slice() {
        [_, h, s, d] => (s.clone(), h.clone(), d.clone()),
        [_, s, width] if *num_heads > 0 => {
            let size = width.div_exact(&Dim::known(*num_heads)).ok_or_else(|| {
                KernelError::Unsupported("the width does not split into heads".into())
            })?;
            (s.clone(), Dim::known(*num_heads), size)
        }
        _ => {
            return Err(KernelError::Unsupported(
                "RotaryEmbedding takes [B, H, S, D], or [B, S, H*D] with num_heads".into(),
            ))
        }
    };
    let four_d = x.shape.len() == 4;
    let width = cos
        .shape
        .last()
        .cloned()
        .ok_or_else(|| KernelError::Unsupported("a scalar cos_cache".into()))?;
    let (interleaved, rotary_dim) = (*interleaved, *rotary_embedding_dim);
    let mut cg = req.begin(cx, 256);
    let (seq_v, heads_v, size_v) = (cg.dim(&seq)?, cg.dim(&heads)?, cg.dim(&size)?);
    let rot = if rotary_dim > 0 {
        cg.c(rotary_dim)
    } else {
        size_v
    };
    let half = cg.div(rot, cg.c(2))?;
    let width_v = cg.dim(&width)?;
    let rows_v = cg.product(&cos.shape[..cos.shape.len() - 1])?;
    let n = cg.product(&x.shape)?;
    let out = req.outputs[0].clone();
    let xp = req.input_param(0);
    cg.for_each_thread_item(cg.c(0), n, |cg, e| {
        // (b, s, h, d) of element e.
        let d = cg.rem(e, size_v)?;
        let rest = cg.div(e, size_v)?;
        let (b, s, h) = if four_d {
            let s = cg.rem(rest, seq_v)?;
            let bh = cg.div(rest, seq_v)?;
            (cg.div(bh, heads_v)?, s, cg.rem(bh, heads_v)?)
        } else {
            let h = cg.rem(rest, heads_v)?;
            let bs = cg.div(rest, heads_v)?;
            (cg.div(bs, seq_v)?, cg.rem(bs, seq_v)?, h)
        };
        let element = |cg: &Cg<'ctx>, dd: IntValue<'ctx>| -> Gen<IntValue<'ctx>> {
            if four_d {
                let bh = cg.add(cg.mul(b, heads_v)?, h)?;
                cg.add(cg.mul(cg.add(cg.mul(bh, seq_v)?, s)?, size_v)?, dd)
            } else {
                let bs = cg.add(cg.mul(b, seq_v)?, s)?;
                cg.add(cg.mul(cg.add(cg.mul(bs, heads_v)?, h)?, size_v)?, dd)
            }
        };
        let own = cg.load(x.dtype, cg.buffer(xp), e)?.float(cg)?;
        let rotated = cg.icmp(IntPredicate::SLT, d, rot)?;
        // The pair (i1, i2) this element belongs to, its frequency index i, and its side.
        let (i, first, partner) = if interleaved {
            let first = cg.icmp(IntPredicate::EQ, cg.rem(d, cg.c(2))?, cg.c(0))?;
            let partner = cg.b.build_xor(d, cg.c(1), "")?;
            (cg.div(d, cg.c(2))?, first, partner)
        } else {
            let first = cg.icmp(IntPredicate::SLT, d, half)?;
            let i = cg.select(first, d, cg.sub(d, half)?)?.into_int_value();
            let partner = cg.select(first, cg.add(d, half)?, cg.sub(d, half)?)?;
            (i, first, partner.into_int_value())
        };
        let partner = cg.imin(partner, cg.sub(size_v, cg.c(1))?)?;
        let other = cg
            .load(x.dtype, cg.buffer(xp), element(cg, partner)?)?
            .float(cg)?;
        let row = match &positions {
            Some(p) => {
                let at = cg.add(cg.mul(b, seq_v)?, s)?;
                match cg.load(p.dtype, cg.buffer(req.input_param(3)), at)? {
                    Val::I(v) => cg.imax(v, cg.c(0))?,
                    Val::F(f) => cg.ftoi(f)?,
                }
            }
            None => cg.add(cg.mul(b, seq_v)?, s)?,
        };
        // A position past the cache reads its last row rather than outside the buffer.
        let row = cg.imin(row, cg.sub(rows_v, cg.c(1))?)?;
        let at = cg.add(
            cg.mul(row, width_v)?,
            cg.imin(i, cg.sub(width_v, cg.c(1))?)?,
        )?;
        let c = cg
            .load(cos.dtype, cg.buffer(req.input_param(1)), at)?
            .float(cg)?;
        let sn = cg
            .load(sin.dtype, cg.buffer(req.input_param(2)), at)?
            .float(cg)?;
        // First of a pair: c·x1 − s·x2; second: s·x1 + c·x2 (x1 the first element).
        let as_first = cg.fsub(cg.fmul(c, own)?, cg.fmul(sn, other)?)?;
        let as_second = cg.fadd(cg.fmul(sn, other)?, cg.fmul(c, own)?)?;
        let y = cg.fsel(first, as_first, as_second)?;
        let y = cg.fsel(rotated, y, own)?;
        cg.store(out.dtype, cg.buffer(0), e, Val::F(y))
    })?;
    let launch = Launch {
        grid: x.numel().ceil_div(&Dim::known(256)),
        block: 256,
        shared_bytes: 0,
        dynamic_shared_bytes: 0,
    };
    let info = req.describe(
        Family::Attention,
        "rotary embedding",
        vec![req.op.name()],
        launch,
    );
    Ok(Generated {
        info,
        module: cg.finish()?,
    })
}
