//! Matrix products (MatMul with numpy batch broadcasting, Gemm, TransposedMatMul) with the
//! optimizer's fused epilogue applied in registers before the store.
//!
//! The kernel tiles the output in 64×64 blocks staged through shared memory in 16-deep
//! k-slices; each of 256 threads accumulates a 4×4 register tile in FP32. The same tiled core
//! ([`tiled`]) runs convolutions as implicit GEMM (`conv.rs`), with loaders that gather the
//! image patches.
//!
//! Reference: the CPU executor's MatMul and Gemm (`gemm` crate), then its elementwise ops.

use crate::cg::{Cg, Gen, Val};
use crate::elementwise::{layout, offsets};
use crate::operand::{combine, split, Factor, ScaleKind};
use crate::reduce::{operand_input, Reader};
use crate::{mma, product, Family, Generated, KernelError, Launch, Request, Target};
use inkwell::context::Context;
use inkwell::values::{FloatValue, IntValue};
use inkwell::IntPredicate;
use sparkc_ir::{BodyNode, DType, Dim, Op};

/// Block tile rows.
pub const TILE_M: i64 = 64;
/// Block tile columns.
pub const TILE_N: i64 = 64;
/// k-slice depth staged per step.
pub const TILE_K: i64 = 16;
/// Threads per block on a GPU.
pub const THREADS: u32 = 256;

/// True for the products this family generates.
pub fn handles(op: &Op) -> bool {
    matches!(
        op,
        Op::MatMul | Op::Gemm { .. } | Op::TransposedMatMul { .. }
    )
}

/// Loads element `(row, k)` of A or `(k, col)` of B for one work unit; out-of-range elements
/// must load as zero.
pub type Loader<'a, 'ctx> = dyn Fn(&mut Cg<'ctx>, IntValue<'ctx>, IntValue<'ctx>, IntValue<'ctx>) -> Gen<FloatValue<'ctx>>
    + 'a;

/// Stores the finished `(row, col)` value of one work unit (called only in range).
pub type Storer<'a, 'ctx> = dyn Fn(&mut Cg<'ctx>, IntValue<'ctx>, IntValue<'ctx>, IntValue<'ctx>, FloatValue<'ctx>) -> Gen<()>
    + 'a;

/// The tiled core: for each of `units` independent products of `m×k` by `k×n` (a batch entry,
/// a group), accumulates tiles and hands each output to `store`. Loaders get the unit index.
#[allow(clippy::too_many_arguments)]
pub fn tiled<'ctx>(
    cg: &mut Cg<'ctx>,
    units: IntValue<'ctx>,
    m: IntValue<'ctx>,
    n: IntValue<'ctx>,
    k: IntValue<'ctx>,
    load_a: &Loader<'_, 'ctx>,
    load_b: &Loader<'_, 'ctx>,
    store: &Storer<'_, 'ctx>,
) -> Gen<()> {
    let f32t = cg.f32t();
    let a_s = cg.shared_array(f32t.into(), (TILE_K * TILE_M) as u32);
    let b_s = cg.shared_array(f32t.into(), (TILE_K * TILE_N) as u32);
    // Register tiles per thread: one on a GPU (256 threads), all 256 on the host (one thread).
    let per_thread: i64 = match cg.target {
        crate::Target::Gpu(_) => 1,
        crate::Target::Host => 256,
    };
    let acc_ty = f32t.array_type((per_thread * 16) as u32);
    let acc = cg.b.build_alloca(acc_ty, "acc")?;
    let tiles_m = cg.div(cg.add(m, cg.c(TILE_M - 1))?, cg.c(TILE_M))?;
    let tiles_n = cg.div(cg.add(n, cg.c(TILE_N - 1))?, cg.c(TILE_N))?;
    let per_unit = cg.mul(tiles_m, tiles_n)?;
    let work = cg.mul(units, per_unit)?;
    cg.for_each_block_unit(work, |cg, w| {
        let unit = cg.div(w, per_unit)?;
        let t = cg.rem(w, per_unit)?;
        let m0 = cg.mul(cg.div(t, tiles_n)?, cg.c(TILE_M))?;
        let n0 = cg.mul(cg.rem(t, tiles_n)?, cg.c(TILE_N))?;
        cg.for_range(cg.c(0), cg.c(per_thread * 16), cg.c(1), |cg, i| {
            cg.store_raw(f32t.into(), acc, i, cg.f(0.0).into())
        })?;
        cg.for_range(cg.c(0), k, cg.c(TILE_K), |cg, k0| {
            cg.barrier()?;
            cg.for_each_block_item(cg.c(TILE_M * TILE_K), |cg, e| {
                let (i, kk) = (cg.div(e, cg.c(TILE_K))?, cg.rem(e, cg.c(TILE_K))?);
                let (row, col) = (cg.add(m0, i)?, cg.add(k0, kk)?);
                let v = load_a(cg, unit, row, col)?;
                cg.store_raw(
                    f32t.into(),
                    a_s,
                    cg.add(cg.mul(kk, cg.c(TILE_M))?, i)?,
                    v.into(),
                )
            })?;
            cg.for_each_block_item(cg.c(TILE_N * TILE_K), |cg, e| {
                let (kk, j) = (cg.div(e, cg.c(TILE_N))?, cg.rem(e, cg.c(TILE_N))?);
                let (row, col) = (cg.add(k0, kk)?, cg.add(n0, j)?);
                let v = load_b(cg, unit, row, col)?;
                cg.store_raw(
                    f32t.into(),
                    b_s,
                    cg.add(cg.mul(kk, cg.c(TILE_N))?, j)?,
                    v.into(),
                )
            })?;
            cg.barrier()?;
            cg.for_range(cg.c(0), cg.c(per_thread), cg.c(1), |cg, mt| {
                let micro = cg.add(cg.mul(mt, cg.ntid()?)?, cg.tid()?)?;
                let (ty, tx) = (cg.div(micro, cg.c(16))?, cg.rem(micro, cg.c(16))?);
                let base = cg.mul(mt, cg.c(16))?;
                let mut sums = Vec::with_capacity(16);
                for e in 0..16 {
                    let v = cg.load_raw(f32t.into(), acc, cg.add(base, cg.c(e))?)?;
                    sums.push(v);
                }
                let sums =
                    cg.fold_range(cg.c(0), cg.c(TILE_K), cg.c(1), sums, |cg, kk, mut s| {
                        let mut a = Vec::with_capacity(4);
                        let mut b = Vec::with_capacity(4);
                        for r in 0..4 {
                            let ai = cg.add(
                                cg.mul(kk, cg.c(TILE_M))?,
                                cg.add(cg.mul(ty, cg.c(4))?, cg.c(r))?,
                            )?;
                            a.push(cg.load_raw(f32t.into(), a_s, ai)?.into_float_value());
                            let bi = cg.add(
                                cg.mul(kk, cg.c(TILE_N))?,
                                cg.add(cg.mul(tx, cg.c(4))?, cg.c(r))?,
                            )?;
                            b.push(cg.load_raw(f32t.into(), b_s, bi)?.into_float_value());
                        }
                        for (r, &ar) in a.iter().enumerate() {
                            for (c, &bc) in b.iter().enumerate() {
                                let e = r * 4 + c;
                                s[e] = cg.fma(ar, bc, s[e].into_float_value())?.into();
                            }
                        }
                        Ok(s)
                    })?;
                for (e, v) in sums.iter().enumerate() {
                    cg.store_raw(f32t.into(), acc, cg.add(base, cg.c(e as i64))?, *v)?;
                }
                Ok(())
            })?;
            Ok(())
        })?;
        cg.for_range(cg.c(0), cg.c(per_thread), cg.c(1), |cg, mt| {
            let micro = cg.add(cg.mul(mt, cg.ntid()?)?, cg.tid()?)?;
            let (ty, tx) = (cg.div(micro, cg.c(16))?, cg.rem(micro, cg.c(16))?);
            for r in 0..4 {
                for c in 0..4 {
                    let row = cg.add(m0, cg.add(cg.mul(ty, cg.c(4))?, cg.c(r))?)?;
                    let col = cg.add(n0, cg.add(cg.mul(tx, cg.c(4))?, cg.c(c))?)?;
                    let ok = cg.and(
                        cg.icmp(IntPredicate::SLT, row, m)?,
                        cg.icmp(IntPredicate::SLT, col, n)?,
                    )?;
                    let e = cg.add(cg.mul(mt, cg.c(16))?, cg.c(r * 4 + c))?;
                    let v = cg.load_raw(f32t.into(), acc, e)?.into_float_value();
                    cg.if_then(ok, |cg| store(cg, unit, row, col, v))?;
                }
            }
            Ok(())
        })?;
        Ok(())
    })
}

/// `v` where `ok`, else zero: loaders read a clamped (always valid) element and then mask it.
pub fn masked<'ctx>(
    cg: &Cg<'ctx>,
    ok: IntValue<'ctx>,
    v: FloatValue<'ctx>,
) -> Gen<FloatValue<'ctx>> {
    cg.fsel(ok, v, cg.f(0.0))
}

/// `i` clamped to `0..len` (`len` ≥ 1 whenever a loader runs).
pub fn clamp_index<'ctx>(
    cg: &Cg<'ctx>,
    i: IntValue<'ctx>,
    len: IntValue<'ctx>,
) -> Gen<IntValue<'ctx>> {
    cg.imin(i, cg.sub(len, cg.c(1))?)
}

/// Checks that an operand's scales lie where the kernel applies them: per channel along the
/// output's rows (A) or columns (B), per block along k.
pub(crate) fn check_scales(f: &Factor, rows_axis: usize, k_axis: usize) -> Gen<()> {
    match f.scale_kind {
        ScaleKind::Channel(axis) if axis != rows_axis => Err(KernelError::Unsupported(format!(
            "a per-channel scale along axis {axis} of a product operand: only the output's channels can be scaled"
        ))),
        ScaleKind::Blocks(axis) if axis != k_axis => Err(KernelError::Unsupported(format!(
            "block scales along axis {axis} of a product operand: blocks must run along the reduced axis"
        ))),
        _ => Ok(()),
    }
}

/// True when an operand's buffer holds exactly what `kind` stages, so `cp.async` can copy it.
pub(crate) fn stages_as_is(kind: mma::Kind, plain: Option<(usize, DType)>) -> Option<usize> {
    let (slot, dtype) = plain?;
    let fits = if kind.codes() {
        dtype.bits() == 8
    } else if kind.blocks() {
        dtype == DType::F4E2M1
    } else {
        dtype == kind.dtype()
    };
    fits.then_some(slot)
}

/// The zero-point correction of the one operand of `kind`'s codes that has a zero point.
pub(crate) fn correction<'ctx>(
    cg: &Cg<'ctx>,
    kind: Option<mma::Kind>,
    a: &Factor<'ctx>,
    b: &Factor<'ctx>,
) -> Gen<Option<mma::Correction<'ctx>>> {
    if !kind.is_some_and(|k| k.codes()) {
        return Ok(None);
    }
    Ok(if a.has_zero() {
        Some(mma::Correction {
            side: mma::Side::A,
            zero: a.zero_code(cg)?,
        })
    } else if b.has_zero() {
        Some(mma::Correction {
            side: mma::Side::B,
            zero: b.zero_code(cg)?,
        })
    } else {
        None
    })
}

/// An operand's element as `kind` stages it: its code, or the zero point's where `ok` is false;
/// or its unscaled value, zero where `ok` is false.
pub(crate) fn element<'ctx>(
    cg: &Cg<'ctx>,
    req: &Request,
    f: &Factor<'ctx>,
    codes: bool,
    ok: IntValue<'ctx>,
    index: IntValue<'ctx>,
) -> Gen<Val<'ctx>> {
    if codes {
        let code = f.code(cg, req, index)?;
        Ok(Val::I(
            cg.select(ok, code, f.pad_code(cg)?)?.into_int_value(),
        ))
    } else {
        Ok(Val::F(masked(cg, ok, f.value(cg, req, index)?)?))
    }
}

/// Generates the kernel of a product node, fused or not.
pub fn generate<'ctx>(cx: &'ctx Context, req: &Request, body: &[BodyNode]) -> Gen<Generated<'ctx>> {
    let parts = split(body, req.inputs.len(), handles)?;
    let anchor = &body[parts.anchor];
    let (trans_a, trans_b, alpha, beta) = match anchor.op {
        Op::MatMul => (false, false, 1.0, 1.0),
        Op::TransposedMatMul { trans_a, trans_b } => (trans_a, trans_b, 1.0, 1.0),
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => (trans_a, trans_b, alpha, beta),
        _ => unreachable!("split found a product"),
    };
    let c_slot = operand_input(anchor, 2);
    let mut cg = req.begin(cx, THREADS);
    let a = Factor::new(&mut cg, req, &parts.chains[0])?;
    let b = Factor::new(&mut cg, req, &parts.chains[1])?;
    let a_shape = a.shape.clone();
    let b_shape = b.shape.clone();
    if a_shape.len() < 2 || b_shape.len() < 2 {
        return Err(KernelError::Unsupported(
            "1-D MatMul operands should be reshaped by the importer".into(),
        ));
    }
    let out_shape = req.outputs[0].shape.clone();
    let sink = if parts.epilogue.is_empty() {
        None
    } else {
        Some(Reader::new(req, &parts.epilogue, &out_shape)?)
    };
    let (ar, br) = (a_shape.len(), b_shape.len());
    let (m_axis, ka_axis) = if trans_a {
        (ar - 1, ar - 2)
    } else {
        (ar - 2, ar - 1)
    };
    let (n_axis, kb_axis) = if trans_b {
        (br - 2, br - 1)
    } else {
        (br - 1, br - 2)
    };
    check_scales(&a, m_axis, ka_axis)?;
    check_scales(&b, n_axis, kb_axis)?;
    let (m_dim, k_dim) = (a_shape[m_axis].clone(), a_shape[ka_axis].clone());
    let n_dim = b_shape[n_axis].clone();
    let batch: Vec<Dim> = out_shape[..out_shape.len() - 2].to_vec();
    let batch_lay = layout(
        &batch,
        &[Some(&a_shape[..ar - 2]), Some(&b_shape[..br - 2])],
    )?;
    let (m, n, k) = (cg.dim(&m_dim)?, cg.dim(&n_dim)?, cg.dim(&k_dim)?);
    let units_dim = product(&batch);
    let units = cg.dim(&units_dim)?;
    let a_mat = cg.mul(m, k)?;
    let b_mat = cg.mul(k, n)?;
    let batch_offsets = |cg: &Cg<'ctx>, unit| -> Gen<(IntValue<'ctx>, IntValue<'ctx>)> {
        let offs = offsets(cg, &batch_lay, unit)?;
        let a = offs[0].unwrap_or(cg.c(0));
        let b = offs[1].unwrap_or(cg.c(0));
        Ok((cg.mul(a, a_mat)?, cg.mul(b, b_mat)?))
    };
    // Element (row, col) of A and (row, col) of B: whether it lies inside, and its index.
    let index_a = |cg: &Cg<'ctx>, unit, row, col| -> Gen<(IntValue<'ctx>, IntValue<'ctx>)> {
        let ok = cg.and(
            cg.icmp(IntPredicate::SLT, row, m)?,
            cg.icmp(IntPredicate::SLT, col, k)?,
        )?;
        let (base, _) = batch_offsets(cg, unit)?;
        let (row, col) = (clamp_index(cg, row, m)?, clamp_index(cg, col, k)?);
        let at = if trans_a {
            cg.add(cg.mul(col, m)?, row)?
        } else {
            cg.add(cg.mul(row, k)?, col)?
        };
        Ok((ok, cg.add(base, at)?))
    };
    let index_b = |cg: &Cg<'ctx>, unit, row, col| -> Gen<(IntValue<'ctx>, IntValue<'ctx>)> {
        let ok = cg.and(
            cg.icmp(IntPredicate::SLT, row, k)?,
            cg.icmp(IntPredicate::SLT, col, n)?,
        )?;
        let (_, base) = batch_offsets(cg, unit)?;
        let (row, col) = (clamp_index(cg, row, k)?, clamp_index(cg, col, n)?);
        let at = if trans_b {
            cg.add(cg.mul(col, k)?, row)?
        } else {
            cg.add(cg.mul(row, n)?, col)?
        };
        Ok((ok, cg.add(base, at)?))
    };
    let kind = match req.target {
        Target::Gpu(sm) => mma::Kind::choose(
            sm,
            req.precision,
            (a.class, a.has_zero()),
            (b.class, b.has_zero()),
        ),
        Target::Host => None,
    };
    // Block-scaled FP4 needs both operands' blocks contiguous along k.
    let kind = match kind {
        Some(k) if k.blocks() && (trans_a || !trans_b) => Some(mma::Kind::Bf16),
        other => other,
    };
    let codes = kind.is_some_and(|k| k.codes());
    let load_a = |cg: &mut Cg<'ctx>, unit, row, col| -> Gen<Val<'ctx>> {
        let (ok, i) = index_a(cg, unit, row, col)?;
        element(cg, req, &a, codes, ok, i)
    };
    let load_b = |cg: &mut Cg<'ctx>, unit, row, col| -> Gen<Val<'ctx>> {
        let (ok, i) = index_b(cg, unit, row, col)?;
        element(cg, req, &b, codes, ok, i)
    };
    // 32 FP4 elements along k from (row, k0) of A, or (k0, column) of B.
    let chunk =
        |cg: &Cg<'ctx>, f: &Factor<'ctx>, rows, row, k0, at: (IntValue<'ctx>, IntValue<'ctx>)| {
            let inside = cg.icmp(IntPredicate::SLT, row, rows)?;
            let left = cg.imax(cg.imin(cg.sub(k, k0)?, cg.c(32))?, cg.c(0))?;
            let valid = cg.select(inside, left, cg.c(0))?.into_int_value();
            f.fp4_chunk(cg, req, at.1, valid)
        };
    let chunk_a = |cg: &mut Cg<'ctx>, unit, row, k0| {
        let at = index_a(cg, unit, row, k0)?;
        chunk(cg, &a, m, row, k0, at)
    };
    let chunk_b = |cg: &mut Cg<'ctx>, unit, column, k0| {
        let at = index_b(cg, unit, k0, column)?;
        chunk(cg, &b, n, column, k0, at)
    };
    let value_a = |cg: &mut Cg<'ctx>, unit, row, col| load_a(cg, unit, row, col)?.float(cg);
    let value_b = |cg: &mut Cg<'ctx>, unit, row, col| load_b(cg, unit, row, col)?.float(cg);
    let c_info = match c_slot {
        Some(i) => Some((i, req.input(i)?.clone())),
        None => None,
    };
    let out_dtype = req.outputs[0].dtype;
    let store = |cg: &mut Cg<'ctx>, unit, row, col, acc: FloatValue<'ctx>| -> Gen<()> {
        let scale = combine(cg, a.scale(cg, req, row)?, b.scale(cg, req, col)?)?;
        let acc = match scale {
            Some(s) => cg.fmul(acc, s)?,
            None => acc,
        };
        let mut y = if alpha != 1.0 {
            cg.fmul(acc, cg.f(alpha as f64))?
        } else {
            acc
        };
        if let Some((slot, t)) = &c_info {
            // C broadcasts to [M, N].
            let r = t.shape.len();
            let rows_full = r >= 2 && t.shape[r - 2] == m_dim && m_dim.as_const() != Some(1);
            let cols_full = r >= 1 && t.shape[r - 1] == n_dim && n_dim.as_const() != Some(1);
            let mut off = cg.c(0);
            if rows_full {
                off = cg.mul(row, cg.dim(&t.shape[r - 1])?)?;
            }
            if cols_full {
                off = cg.add(off, col)?;
            }
            let cv = cg
                .load(t.dtype, cg.buffer(req.input_param(*slot)), off)?
                .float(cg)?;
            y = cg.fma(cv, cg.f(beta as f64), y)?;
        }
        let q = cg.add(cg.mul(cg.add(cg.mul(unit, m)?, row)?, n)?, col)?;
        let v = match &sink {
            None => Val::F(y),
            Some(s) => s.eval(cg, req, q, Some(Val::F(y)))?,
        };
        cg.store(out_dtype, cg.buffer(0), q, v)
    };
    let tensor_cores = match req.target {
        Target::Gpu(sm) => kind.map(|kind| (kind, sm)),
        Target::Host => None,
    };
    let (variant, launch) = if let Some((kind, sm)) = tensor_cores {
        let aligned = k_dim
            .as_const()
            .is_some_and(|k| k % kind.chunk_elems() == 0);
        let a_offset = |cg: &Cg<'ctx>, unit| Ok(batch_offsets(cg, unit)?.0);
        let b_offset = |cg: &Cg<'ctx>, unit| Ok(batch_offsets(cg, unit)?.1);
        let blocks = kind.blocks();
        let a_op = mma::Operand {
            load: &load_a,
            fp4: blocks.then_some(&chunk_a as &mma::Fp4Chunk),
            direct: stages_as_is(kind, a.plain)
                .filter(|_| aligned && !trans_a)
                .map(|slot| mma::Direct {
                    base: cg.buffer(req.input_param(slot)),
                    rows: mma::Rows::Strided {
                        row_stride: k,
                        unit_offset: &a_offset,
                    },
                }),
            k_contiguous: !trans_a,
        };
        // A plain [K, N] B is copied as it is when its rows are whole chunks.
        let k_major = !trans_b
            && kind.reads_k_major()
            && n_dim
                .as_const()
                .is_some_and(|n| n % kind.chunk_elems() == 0);
        let b_rows = if trans_b {
            aligned.then_some(mma::Rows::Strided {
                row_stride: k,
                unit_offset: &b_offset,
            })
        } else {
            k_major.then_some(mma::Rows::KMajor {
                row_stride: n,
                unit_offset: &b_offset,
            })
        };
        let b_op = mma::Operand {
            load: &load_b,
            fp4: blocks.then_some(&chunk_b as &mma::Fp4Chunk),
            direct: stages_as_is(kind, b.plain)
                .zip(b_rows)
                .map(|(slot, rows)| mma::Direct {
                    base: cg.buffer(req.input_param(slot)),
                    rows,
                }),
            k_contiguous: trans_b,
        };
        let tile = mma::Tile::choose(
            sm,
            kind,
            a_op.direct.is_some() && b_op.direct.is_some(),
            m_dim.as_const(),
            n_dim.as_const(),
            units_dim.as_const(),
        );
        let fix = correction(&cg, Some(kind), &a, &b)?;
        mma::tiled(
            &mut cg,
            kind,
            tile,
            units,
            (m, n, k),
            &a_op,
            &b_op,
            fix,
            &store,
        )?;
        let tiles =
            m_dim.ceil_div(&Dim::known(tile.block_m)) * n_dim.ceil_div(&Dim::known(tile.block_n()));
        let launch = Launch {
            grid: units_dim * tiles,
            block: tile.threads(),
            shared_bytes: 0,
            dynamic_shared_bytes: tile.shared_bytes(kind),
        };
        let b_reads = if b_op.k_major().is_some() {
            ", B k-major by ldmatrix.trans"
        } else {
            ""
        };
        (format!("{}{b_reads}", tile.describe(kind)), launch)
    } else {
        tiled(&mut cg, units, m, n, k, &value_a, &value_b, &store)?;
        let tiles = m_dim.ceil_div(&Dim::known(TILE_M)) * n_dim.ceil_div(&Dim::known(TILE_N));
        let launch = Launch {
            grid: units_dim * tiles,
            block: THREADS,
            shared_bytes: ((TILE_M + TILE_N) * TILE_K * 4) as u32,
            dynamic_shared_bytes: 0,
        };
        (format!("simt-fp32 {TILE_M}x{TILE_N}x{TILE_K}"), launch)
    };
    let covers = body.iter().map(|n| n.op.name()).collect();
    let info = req.describe(Family::Gemm, variant, covers, launch);
    Ok(Generated {
        info,
        module: cg.finish()?,
    })
}
