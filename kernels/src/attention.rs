//! Fused scaled-dot-product attention in the flash-attention manner: one pass over the keys
//! and values per query row with an online softmax (running maximum and sum, the output
//! accumulator rescaled as the maximum grows), so the `S×S` score matrix never exists.
//! Handles 3-D (`[B, S, H*D]`) and 4-D (`[B, H, S, D]`) layouts, grouped KV heads, boolean or
//! additive masks with broadcasting, causal and sliding-window masking and soft capping. Rows whose keys are all
//! masked produce zeros, as the CPU reference does.
//!
//! Reference: the CPU executor's Attention.

use crate::cg::{Gen, Val};
use crate::elementwise::{layout, offsets};
use crate::{Family, Generated, KernelError, Launch, Request};
use inkwell::context::Context;
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
    if req.inputs.iter().skip(4).any(|t| t.is_some()) {
        return Err(KernelError::Unsupported(
            "past key/value caches and padding lengths have no GPU kernel yet".into(),
        ));
    }
    if req.outputs.len() > 1 {
        return Err(KernelError::Unsupported(
            "Attention's cache and score outputs have no GPU kernel yet".into(),
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
    let (hkv, skv, _) = heads_of(&k, attrs.kv_num_heads)?;
    let (_, _, dv) = heads_of(&v, attrs.kv_num_heads)?;
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
    let mask_lay = match req.inputs.get(3).and_then(|t| t.as_ref()) {
        Some(m) => {
            let full = [batch.clone(), hq.clone(), sq.clone(), skv.clone()];
            Some((m.dtype, layout(&full, &[Some(&m.shape)])?))
        }
        None => None,
    };
    let mut cg = req.begin(cx, BLOCK);
    let f32t = cg.f32t();
    let acc = cg.b.build_alloca(f32t.array_type(dv_c as u32), "acc")?;
    let qrow = cg.b.build_alloca(f32t.array_type(dk_c as u32), "q")?;
    let (hq_v, sq_v, skv_v) = (cg.c(hq_c), cg.dim(&sq)?, cg.dim(&skv)?);
    let rows = cg.mul(cg.mul(cg.dim(&batch)?, hq_v)?, sq_v)?;
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
    cg.for_each_thread_item(cg.c(0), rows, |cg, row| {
        let i = cg.rem(row, sq_v)?;
        let bh = cg.div(row, sq_v)?;
        let h = cg.rem(bh, hq_v)?;
        let b = cg.div(bh, hq_v)?;
        let kh = cg.div(h, cg.c(group))?;
        for d in 0..dk_c {
            let off = at(cg, b, h, i, cg.c(d), hq_c, sq_v, dk_c)?;
            let x = cg.load(q.dtype, cg.buffer(qp), off)?.float(cg)?;
            cg.store_raw(f32t.into(), qrow, cg.c(d), cg.fmul(x, cg.f(scale))?.into())?;
        }
        for d in 0..dv_c {
            cg.store_raw(f32t.into(), acc, cg.c(d), cg.f(0.0).into())?;
        }
        let init = vec![cg.f(f64::NEG_INFINITY).into(), cg.f(0.0).into()];
        let state = cg.fold_range(cg.c(0), skv_v, cg.c(1), init, |cg, j, st| {
            let (m, l) = (st[0].into_float_value(), st[1].into_float_value());
            let mut s = cg.f(0.0);
            for d in 0..dk_c {
                let qd = cg.load_raw(f32t.into(), qrow, cg.c(d))?.into_float_value();
                let off = at(cg, b, kh, j, cg.c(d), hkv_c, skv_v, dk_c)?;
                let kd = cg.load(k.dtype, cg.buffer(kp), off)?.float(cg)?;
                s = cg.fma(qd, kd, s)?;
            }
            if attrs.softcap > 0.0 {
                let c = cg.f(attrs.softcap as f64);
                s = cg.fmul(cg.tanh(cg.fdiv(s, c)?)?, c)?;
            }
            if let Some((dtype, lay)) = &mask_lay {
                let flat = cg.add(cg.mul(row, skv_v)?, j)?;
                let off = offsets(cg, lay, flat)?[0].unwrap_or(cg.c(0));
                let mv = cg.load(*dtype, cg.buffer(req.input_param(3)), off)?;
                s = match (dtype, mv) {
                    (DType::Bool, Val::I(keep)) => {
                        let keep = cg.icmp(IntPredicate::NE, keep, cg.c(0))?;
                        cg.fsel(keep, s, cg.f(f64::NEG_INFINITY))?
                    }
                    (_, mv) => cg.fadd(s, mv.float(cg)?)?,
                };
            }
            // Query row i sits at key position i (no past cache): causal and window masks.
            let diff = cg.sub(i, j)?;
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
            let m_new = cg.fcall2("llvm.maxnum.f32", m, s)?;
            // A row still all masked keeps its state (and avoids inf - inf).
            let live = cg.fcmp(FloatPredicate::ONE, m_new, cg.f(f64::NEG_INFINITY))?;
            let safe_m = cg.fsel(live, m_new, cg.f(0.0))?;
            let alpha = cg.exp(cg.fsub(m, safe_m)?)?;
            let p = cg.exp(cg.fsub(s, safe_m)?)?;
            let l_new = cg.fma(l, alpha, p)?;
            for d in 0..dv_c {
                let off = at(cg, b, kh, j, cg.c(d), hkv_c, skv_v, dv_c)?;
                let vd = cg.load(v.dtype, cg.buffer(vp), off)?.float(cg)?;
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
