//! Data movement and pooling: Transpose, Concat, Split, Slice, Gather, Pad, Resize, MaxPool,
//! AveragePool and Shape. One thread per output element (grid-strided), reading the input
//! element(s) it maps to, so stores are always coalesced.
//!
//! Reference: the CPU executor's movement and pooling ops.

use crate::cg::{Cg, Gen, Val};
use crate::{resolve_axis, Family, Generated, KernelError, Launch, Request};
use inkwell::context::Context;
use inkwell::values::{FloatValue, IntValue};
use inkwell::{FloatPredicate, IntPredicate};
use sparkc_ir::formats::int_range;
use sparkc_ir::op::{channels_first, channels_last, AutoPad, Layout, PoolAttrs};
use sparkc_ir::{Dim, Op};

/// Threads per block.
const BLOCK: u32 = 256;

/// True for the ops this family generates.
pub fn handles(op: &Op) -> bool {
    matches!(
        op,
        Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Split { .. }
            | Op::Slice
            | Op::Gather { .. }
            | Op::Pad { .. }
            | Op::Resize(_)
            | Op::GridSample { .. }
            | Op::RoiAlign { .. }
            | Op::MaxPool { .. }
            | Op::AveragePool { .. }
            | Op::LpPool { .. }
            | Op::Shape { .. }
            | Op::Trilu { .. }
            | Op::GatherElements { .. }
            | Op::GatherNd { .. }
            | Op::ScatterNd { .. }
            | Op::ScatterElements { .. }
            | Op::TensorScatter { .. }
            | Op::SpaceToDepth { .. }
            | Op::DepthToSpace { .. }
            | Op::EyeLike { .. }
            | Op::ReverseSequence { .. }
    )
}

/// Integer index `raw` into an axis of `d`, negative ones counted from the end; out-of-range
/// ones read element 0 rather than outside the buffer.
fn wrap_index<'ctx>(cg: &Cg<'ctx>, raw: Val<'ctx>, d: IntValue<'ctx>) -> Gen<IntValue<'ctx>> {
    let fixed = from_end(cg, raw, d)?;
    let ok = cg.and(
        cg.icmp(IntPredicate::SGE, fixed, cg.c(0))?,
        cg.icmp(IntPredicate::SLT, fixed, d)?,
    )?;
    Ok(cg.select(ok, fixed, cg.c(0))?.into_int_value())
}

/// Integer index `raw` into an axis of `d`, a negative one counted from the end (not yet
/// checked against the axis).
fn from_end<'ctx>(cg: &Cg<'ctx>, raw: Val<'ctx>, d: IntValue<'ctx>) -> Gen<IntValue<'ctx>> {
    let Val::I(raw) = raw else {
        return Err(KernelError::Unsupported("indices must be integers".into()));
    };
    let neg = cg.icmp(IntPredicate::SLT, raw, cg.c(0))?;
    Ok(cg.select(neg, cg.add(raw, d)?, raw)?.into_int_value())
}

/// True when integer index `raw` (negative ones counted from the end of an axis of `d`) is
/// `coord`; an index out of range is never any coordinate.
fn index_is<'ctx>(
    cg: &Cg<'ctx>,
    raw: Val<'ctx>,
    d: IntValue<'ctx>,
    coord: IntValue<'ctx>,
) -> Gen<IntValue<'ctx>> {
    let fixed = from_end(cg, raw, d)?;
    cg.icmp(IntPredicate::EQ, fixed, coord)
}

/// A scatter's `reduction`, checked.
fn scatter_reduction(reduction: &str) -> Gen<&str> {
    match reduction {
        "" | "none" | "add" | "mul" | "max" | "min" => Ok(reduction),
        other => Err(KernelError::Unsupported(format!(
            "scatter reduction '{other}' (none, add, mul, max or min)"
        ))),
    }
}

/// `acc` combined with `update` as a scatter with `reduction` writes it, where `hit`.
fn scatter_combine<'ctx>(
    cg: &Cg<'ctx>,
    reduction: &str,
    acc: Val<'ctx>,
    update: Val<'ctx>,
    hit: IntValue<'ctx>,
) -> Gen<Val<'ctx>> {
    Ok(match (acc, update) {
        (Val::F(a), Val::F(u)) => {
            let v = match reduction {
                "add" => cg.fadd(a, u)?,
                "mul" => cg.fmul(a, u)?,
                "max" => cg.fmax(a, u)?,
                "min" => cg.fmin(a, u)?,
                _ => u,
            };
            Val::F(cg.fsel(hit, v, a)?)
        }
        (Val::I(a), Val::I(u)) => {
            let v = match reduction {
                "add" => cg.add(a, u)?,
                "mul" => cg.mul(a, u)?,
                "max" => cg.imax(a, u)?,
                "min" => cg.imin(a, u)?,
                _ => u,
            };
            Val::I(cg.select(hit, v, a)?.into_int_value())
        }
        _ => {
            return Err(KernelError::Unsupported(
                "scatter data and updates of different types".into(),
            ))
        }
    })
}

/// Each output element of a scatter: the data's element, then every update whose index
/// `writes` names it, in the updates' order, combined by `reduction` (the last one wins without
/// a reduction). No element is written by two threads, so the result is deterministic and the
/// order is ONNX's. `candidates` gives, for an output element, the range of update positions
/// to visit and `writes` whether update `j` lands there, with the update's offset.
fn scatter_each<'ctx>(
    cg: &mut Cg<'ctx>,
    req: &Request,
    reduction: &str,
    candidates: impl Fn(&Cg<'ctx>, &[IntValue<'ctx>]) -> Gen<IntValue<'ctx>>,
    writes: impl Fn(
        &Cg<'ctx>,
        IntValue<'ctx>,
        &[IntValue<'ctx>],
    ) -> Gen<(IntValue<'ctx>, IntValue<'ctx>)>,
) -> Gen<()> {
    let reduction = scatter_reduction(reduction)?;
    let (data, updates) = (req.input(0)?.clone(), req.input(2)?.clone());
    let out = req.outputs[0].clone();
    each_output(cg, &out.shape, |cg, idx, oc| {
        let init = cg.load(data.dtype, cg.buffer(req.input_param(0)), idx)?;
        let n = candidates(cg, oc)?;
        let last = cg.fold_range(cg.c(0), n, cg.c(1), vec![init.basic()], |cg, j, state| {
            let (hit, at) = writes(cg, j, oc)?;
            let u = cg.load(updates.dtype, cg.buffer(req.input_param(2)), at)?;
            let next = scatter_combine(cg, reduction, Val::of(state[0]), u, hit)?;
            Ok(vec![next.basic()])
        })?;
        cg.store(out.dtype, cg.buffer(0), idx, Val::of(last[0]))
    })
}

/// ScatterND: update `j` is the slice at index tuple `j` of the indices' last axis.
fn scatter_nd(cg: &mut Cg, req: &Request, reduction: &str) -> Gen<()> {
    let (data, indices) = (req.input(0)?.clone(), req.input(1)?.clone());
    let q = indices.shape.len();
    let depth = q
        .checked_sub(1)
        .and_then(|last| indices.shape[last].as_const())
        .filter(|&d| d >= 0 && d as usize <= data.shape.len())
        .ok_or_else(|| {
            KernelError::Unsupported(
                "ScatterND needs a static index depth no larger than the data's rank".into(),
            )
        })? as usize;
    let tuples = indices.shape[..q - 1].to_vec();
    let tail = data.shape[depth..].to_vec();
    scatter_each(
        cg,
        req,
        reduction,
        |cg, _| cg.product(&tuples),
        |cg, j, oc| {
            let mut hit = cg.icmp(IntPredicate::EQ, cg.c(0), cg.c(0))?;
            for (t, &coord) in oc.iter().enumerate().take(depth) {
                let at = cg.add(cg.mul(j, cg.c(depth as i64))?, cg.c(t as i64))?;
                let raw = cg.load(indices.dtype, cg.buffer(req.input_param(1)), at)?;
                let d = cg.dim(&data.shape[t])?;
                hit = cg.and(hit, index_is(cg, raw, d, coord)?)?;
            }
            let within = linear(cg, &oc[depth..], &tail)?;
            let at = cg.add(cg.mul(j, cg.product(&tail)?)?, within)?;
            Ok((hit, at))
        },
    )
}

/// ScatterElements: the updates that can land on an output element are those at its own
/// coordinates on every axis but `axis` (inside the indices' shape), one per index along it.
fn scatter_elements(cg: &mut Cg, req: &Request, axis: i64, reduction: &str) -> Gen<()> {
    let (data, indices) = (req.input(0)?.clone(), req.input(1)?.clone());
    let a = resolve_axis(axis, data.shape.len())?;
    if indices.shape.len() != data.shape.len() {
        return Err(KernelError::Unsupported(
            "ScatterElements indices must have the data's rank".into(),
        ));
    }
    scatter_each(
        cg,
        req,
        reduction,
        |cg, oc| {
            let mut inside = cg.icmp(IntPredicate::EQ, cg.c(0), cg.c(0))?;
            for (k, &coord) in oc.iter().enumerate() {
                if k != a {
                    let d = cg.dim(&indices.shape[k])?;
                    inside = cg.and(inside, cg.icmp(IntPredicate::SLT, coord, d)?)?;
                }
            }
            let along = cg.dim(&indices.shape[a])?;
            Ok(cg.select(inside, along, cg.c(0))?.into_int_value())
        },
        |cg, j, oc| {
            let mut at = oc.to_vec();
            at[a] = j;
            let off = linear(cg, &at, &indices.shape)?;
            let raw = cg.load(indices.dtype, cg.buffer(req.input_param(1)), off)?;
            let hit = index_is(cg, raw, cg.dim(&data.shape[a])?, oc[a])?;
            Ok((hit, off))
        },
    )
}

/// Row-major coordinates of `idx` in `dims`.
pub fn coords<'ctx>(cg: &Cg<'ctx>, idx: IntValue<'ctx>, dims: &[Dim]) -> Gen<Vec<IntValue<'ctx>>> {
    let mut out = vec![cg.c(0); dims.len()];
    let mut rest = idx;
    for k in (0..dims.len()).rev() {
        if k == 0 {
            out[k] = rest;
        } else {
            let d = cg.dim(&dims[k])?;
            out[k] = cg.rem(rest, d)?;
            rest = cg.div(rest, d)?;
        }
    }
    Ok(out)
}

/// The row-major offset of `coords` in `dims`.
pub fn linear<'ctx>(cg: &Cg<'ctx>, coords: &[IntValue<'ctx>], dims: &[Dim]) -> Gen<IntValue<'ctx>> {
    let mut off = cg.c(0);
    for (c, d) in coords.iter().zip(dims) {
        off = cg.add(cg.mul(off, cg.dim(d)?)?, *c)?;
    }
    Ok(off)
}

/// Generates the kernel of a movement or pooling node.
pub fn generate<'ctx>(cx: &'ctx Context, req: &Request) -> Gen<Generated<'ctx>> {
    let mut cg = req.begin(cx, BLOCK);
    let out = req.outputs[0].clone();
    let x = req.input(0)?.clone();
    let variant = match req.op {
        Op::Transpose { perm } => {
            let rank = x.shape.len();
            let perm: Vec<usize> = if perm.is_empty() {
                (0..rank).rev().collect()
            } else {
                perm.iter()
                    .map(|&p| resolve_axis(p, rank))
                    .collect::<Gen<_>>()?
            };
            each_output(&mut cg, &out.shape, |cg, idx, oc| {
                let mut ic = vec![cg.c(0); rank];
                for (k, &p) in perm.iter().enumerate() {
                    ic[p] = oc[k];
                }
                let off = linear(cg, &ic, &x.shape)?;
                copy(cg, req, 0, off, idx)
            })?;
            "transpose"
        }
        Op::Concat { axis } => {
            let a = resolve_axis(*axis, out.shape.len())?;
            let present: Vec<usize> = (0..req.inputs.len())
                .filter(|&i| req.inputs[i].is_some())
                .collect();
            each_output(&mut cg, &out.shape, |cg, idx, oc| {
                let mut start = cg.c(0);
                for &i in &present {
                    let shape = req.input(i)?.shape.clone();
                    let end = cg.add(start, cg.dim(&shape[a])?)?;
                    let inside = cg.and(
                        cg.icmp(IntPredicate::SGE, oc[a], start)?,
                        cg.icmp(IntPredicate::SLT, oc[a], end)?,
                    )?;
                    let mut ic = oc.to_vec();
                    ic[a] = cg.sub(oc[a], start)?;
                    cg.if_then(inside, |cg| {
                        let off = linear(cg, &ic, &shape)?;
                        copy(cg, req, i, off, idx)
                    })?;
                    start = end;
                }
                Ok(())
            })?;
            "concat"
        }
        Op::Split { axis, .. } => {
            let a = resolve_axis(*axis, x.shape.len())?;
            let mut start = Dim::known(0);
            for (k, o) in req.outputs.iter().enumerate() {
                let first = start.clone();
                cg.for_each_thread_item(cg.c(0), cg.product(&o.shape)?, |cg, idx| {
                    let mut ic = coords(cg, idx, &o.shape)?;
                    ic[a] = cg.add(ic[a], cg.dim(&first)?)?;
                    let off = linear(cg, &ic, &x.shape)?;
                    let v = cg.load(x.dtype, cg.buffer(req.input_param(0)), off)?;
                    cg.store(o.dtype, cg.buffer(k), idx, v)
                })?;
                start = start + o.shape[a].clone();
            }
            "split"
        }
        Op::Slice => {
            let rank = x.shape.len();
            let starts = req.known_ints(1)?.to_vec();
            let axes = axes_input(req, 3, rank, starts.len())?;
            let steps: Vec<i64> = match req.inputs.get(4).and_then(|t| t.as_ref()) {
                Some(_) => req.known_ints(4)?.to_vec(),
                None => vec![1; starts.len()],
            };
            let mut begin = vec![0i64; rank];
            let mut step = vec![1i64; rank];
            for ((&a, &s), &st) in axes.iter().zip(&starts).zip(&steps) {
                let d = x.shape[a].as_const().ok_or_else(|| {
                    KernelError::Unsupported("slicing a symbolic axis needs static bounds".into())
                })?;
                let s = if s < 0 { s + d } else { s };
                begin[a] = if st > 0 {
                    s.clamp(0, d)
                } else {
                    s.clamp(0, d - 1)
                };
                step[a] = st;
            }
            each_output(&mut cg, &out.shape, |cg, idx, oc| {
                let ic: Vec<_> = (0..rank)
                    .map(|k| cg.add(cg.c(begin[k]), cg.mul(oc[k], cg.c(step[k]))?))
                    .collect::<Gen<_>>()?;
                let off = linear(cg, &ic, &x.shape)?;
                copy(cg, req, 0, off, idx)
            })?;
            "slice"
        }
        Op::Gather { axis } => {
            let a = resolve_axis(*axis, x.shape.len())?;
            let indices = req.input(1)?.clone();
            let q = indices.shape.len();
            each_output(&mut cg, &out.shape, |cg, idx, oc| {
                let ipos = linear(cg, &oc[a..a + q], &indices.shape)?;
                let raw = cg.load(indices.dtype, cg.buffer(req.input_param(1)), ipos)?;
                let fixed = wrap_index(cg, raw, cg.dim(&x.shape[a])?)?;
                let mut ic: Vec<_> = oc[..a].to_vec();
                ic.push(fixed);
                ic.extend_from_slice(&oc[a + q..]);
                let off = linear(cg, &ic, &x.shape)?;
                copy(cg, req, 0, off, idx)
            })?;
            "gather"
        }
        Op::Pad { mode } => {
            let rank = x.shape.len();
            let pads = req.known_ints(1)?.to_vec();
            let axes = axes_input(req, 3, rank, rank)?;
            let mut before = vec![0i64; rank];
            for (k, &a) in axes.iter().enumerate() {
                before[a] = pads[k];
            }
            let fill = if req.inputs.get(2).and_then(|t| t.as_ref()).is_some() {
                req.known_ints(2)?.first().copied().unwrap_or(0) as f64
            } else {
                0.0
            };
            let mode = mode.clone();
            each_output(&mut cg, &out.shape, |cg, idx, oc| {
                let mut inside = cg.icmp(IntPredicate::EQ, cg.c(0), cg.c(0))?;
                let mut ic = Vec::with_capacity(rank);
                for k in 0..rank {
                    let d = cg.dim(&x.shape[k])?;
                    let raw = cg.sub(oc[k], cg.c(before[k]))?;
                    let last = cg.sub(d, cg.c(1))?;
                    let c = match mode.as_str() {
                        "edge" => cg.imin(cg.imax(raw, cg.c(0))?, last)?,
                        "reflect" => {
                            let r = cg.imax(raw, cg.sub(cg.c(0), raw)?)?;
                            let over = cg.sub(r, last)?;
                            let folded = cg.sub(last, over)?;
                            let big = cg.icmp(IntPredicate::SGT, r, last)?;
                            cg.select(big, folded, r)?.into_int_value()
                        }
                        _ => {
                            let ok = cg.and(
                                cg.icmp(IntPredicate::SGE, raw, cg.c(0))?,
                                cg.icmp(IntPredicate::SLT, raw, d)?,
                            )?;
                            inside = cg.and(inside, ok)?;
                            cg.imin(cg.imax(raw, cg.c(0))?, last)?
                        }
                    };
                    ic.push(c);
                }
                let off = linear(cg, &ic, &x.shape)?;
                let v = cg.load(x.dtype, cg.buffer(req.input_param(0)), off)?;
                let v = match v {
                    Val::F(f) => Val::F(cg.fsel(inside, f, cg.f(fill))?),
                    Val::I(i) => Val::I(cg.select(inside, i, cg.c(fill as i64))?.into_int_value()),
                };
                cg.store(out.dtype, cg.buffer(0), idx, v)
            })?;
            "pad"
        }
        Op::Resize(attrs) => {
            let rank = x.shape.len();
            let mode = attrs.mode.clone();
            let ctm = attrs.coordinate_transformation_mode.clone();
            let nearest = attrs.nearest_mode.clone();
            let listed = resized_axes(&attrs.axes, rank)?;
            let scales = resize_scales(req, attrs, &x.shape, rank)?;
            let crop = ctm == "tf_crop_and_resize";
            let roi = if crop {
                resize_roi(req, &attrs.axes, rank)?
            } else {
                Vec::new()
            };
            // Antialiasing widens the filter of each downscaled axis by 1/scale: such an axis
            // gets every tap of the widened filter, the others their usual two or four.
            let filtered = attrs.antialias && mode != "nearest";
            let widths: Vec<Option<f64>> = (0..rank)
                .map(|k| -> Gen<Option<f64>> {
                    if !filtered {
                        return Ok(None);
                    }
                    let scale = match &scales {
                        Some(s) => s[k],
                        None => match (x.shape[k].as_const(), out.shape[k].as_const()) {
                            (Some(i), Some(o)) => o as f64 / i as f64,
                            _ => {
                                return Err(KernelError::Unsupported(
                                    "an antialiased Resize needs static sizes".into(),
                                ))
                            }
                        },
                    };
                    Ok((scale < 1.0).then_some(scale))
                })
                .collect::<Gen<_>>()?;
            let a = f64::from(attrs.cubic_coeff_a);
            each_output(&mut cg, &out.shape, |cg, idx, oc| {
                // Per axis: the source coordinate as a float. Given scales are used as given
                // (the output size is their rounded product); sizes give the ratio.
                let mut lo = Vec::with_capacity(rank);
                let mut hi = Vec::with_capacity(rank);
                let mut frac = Vec::with_capacity(rank);
                let mut taps = Vec::with_capacity(rank);
                let mut outside = None;
                for (k, &o_k) in oc.iter().enumerate() {
                    let (din, dout) = (cg.dim(&x.shape[k])?, cg.dim(&out.shape[k])?);
                    let fin = cg.itof(din)?;
                    let (scale, fout) = match &scales {
                        Some(s) => (cg.f(s[k]), cg.fmul(fin, cg.f(s[k]))?),
                        None => {
                            let fout = cg.itof(dout)?;
                            (cg.fdiv(fout, fin)?, fout)
                        }
                    };
                    let o = cg.itof(o_k)?;
                    let past_one = cg.fcmp(FloatPredicate::OGT, fout, cg.f(1.0))?;
                    let src = match ctm.as_str() {
                        _ if !listed[k] => o,
                        "asymmetric" => cg.fdiv(o, scale)?,
                        "align_corners" => {
                            let num = cg.fmul(o, cg.fsub(fin, cg.f(1.0))?)?;
                            let den =
                                cg.fcall2("llvm.maxnum.f32", cg.fsub(fout, cg.f(1.0))?, cg.f(1.0))?;
                            cg.fdiv(num, den)?
                        }
                        "pytorch_half_pixel" => {
                            let s = cg.fsub(cg.fdiv(cg.fadd(o, cg.f(0.5))?, scale)?, cg.f(0.5))?;
                            cg.fsel(past_one, s, cg.f(0.0))?
                        }
                        "half_pixel_symmetric" => {
                            // The output's centre maps to the input's, whatever the rounding of
                            // the output length.
                            let adjustment = cg.fdiv(cg.itof(dout)?, fout)?;
                            let offset =
                                cg.fmul(cg.fmul(fin, cg.f(0.5))?, cg.fsub(cg.f(1.0), adjustment)?)?;
                            let s = cg.fsub(cg.fdiv(cg.fadd(o, cg.f(0.5))?, scale)?, cg.f(0.5))?;
                            cg.fadd(offset, s)?
                        }
                        "tf_crop_and_resize" => {
                            let (start, end) = roi[k];
                            let span = cg.fsub(fin, cg.f(1.0))?;
                            let step = cg.fdiv(
                                cg.fmul(cg.f(end - start), span)?,
                                cg.fsub(fout, cg.f(1.0))?,
                            )?;
                            let s = cg.fma(o, step, cg.fmul(cg.f(start), span)?)?;
                            let centre = cg.fmul(cg.f(0.5 * (start + end)), span)?;
                            let s = cg.fsel(past_one, s, centre)?;
                            // Outside the input: the extrapolation value.
                            let out_k = cg.b.build_or(
                                cg.fcmp(FloatPredicate::OLT, s, cg.f(0.0))?,
                                cg.fcmp(FloatPredicate::OGT, s, span)?,
                                "",
                            )?;
                            outside = Some(match outside {
                                Some(before) => cg.b.build_or(before, out_k, "")?,
                                None => out_k,
                            });
                            s
                        }
                        _ => cg.fsub(cg.fdiv(cg.fadd(o, cg.f(0.5))?, scale)?, cg.f(0.5))?,
                    };
                    let last = cg.sub(din, cg.c(1))?;
                    let clamp =
                        |cg: &Cg<'ctx>, v: IntValue<'ctx>| cg.imin(cg.imax(v, cg.c(0))?, last);
                    let unchanged = !crop
                        && x.shape[k] == out.shape[k]
                        && scales.as_ref().is_none_or(|s| s[k] == 1.0);
                    if let Some(scale) = widths[k] {
                        taps.push(filter_taps(
                            cg,
                            src,
                            din,
                            &mode,
                            scale,
                            a,
                            attrs.exclude_outside,
                        )?);
                    } else if mode == "cubic" && unchanged {
                        taps.push(vec![(o_k, cg.f(1.0))]);
                    } else if mode == "cubic" {
                        taps.push(cubic_taps(cg, src, din, a, attrs.exclude_outside)?);
                    } else if mode == "nearest" {
                        let r = match nearest.as_str() {
                            "floor" => cg.fcall1("llvm.floor.f32", src)?,
                            "ceil" => cg.fcall1("llvm.ceil.f32", src)?,
                            "round_prefer_ceil" => cg.fcall1("llvm.round.f32", src)?,
                            // round_prefer_floor: halves go down.
                            _ => cg.fcall1("llvm.ceil.f32", cg.fsub(src, cg.f(0.5))?)?,
                        };
                        let i = cg.ftoi(r)?;
                        lo.push(clamp(cg, i)?);
                    } else {
                        let src = cg.fcall2("llvm.maxnum.f32", src, cg.f(0.0))?;
                        let f0 = cg.fcall1("llvm.floor.f32", src)?;
                        let i0 = cg.ftoi(f0)?;
                        let i0c = clamp(cg, i0)?;
                        let i1 = clamp(cg, cg.add(i0, cg.c(1))?)?;
                        let beyond = cg.icmp(IntPredicate::SGE, i0, last)?;
                        let t = cg.fsel(beyond, cg.f(0.0), cg.fsub(src, f0)?)?;
                        if filtered {
                            taps.push(vec![(i0c, cg.fsub(cg.f(1.0), t)?), (i1, t)]);
                        } else {
                            lo.push(i0c);
                            hi.push(i1);
                            frac.push(t);
                        }
                    }
                }
                let v = if mode == "cubic" || filtered {
                    Val::F(weighted_taps(
                        cg,
                        req,
                        (&x.shape, x.dtype),
                        &taps,
                        0,
                        &mut oc.to_vec(),
                    )?)
                } else if mode == "nearest" {
                    let off = linear(cg, &lo, &x.shape)?;
                    cg.load(x.dtype, cg.buffer(req.input_param(0)), off)?
                } else {
                    Val::F(lerp_corners(
                        cg,
                        req,
                        &x.shape,
                        x.dtype,
                        &lo,
                        &hi,
                        &frac,
                        0,
                        &mut lo.clone(),
                    )?)
                };
                let fill = f64::from(attrs.extrapolation_value);
                let v = match (v, outside) {
                    // Interpolated integers are rounded and saturated, as the CPU executor
                    // stores them (a conversion would truncate and wrap).
                    (Val::F(f), outside) if out.dtype.is_integer() => {
                        let f = match outside {
                            Some(out_k) => cg.fsel(out_k, cg.f(fill), f)?,
                            None => f,
                        };
                        Val::I(truncate_to_integer(cg, out.dtype, f)?)
                    }
                    (Val::F(f), Some(out_k)) => Val::F(cg.fsel(out_k, cg.f(fill), f)?),
                    (Val::I(i), Some(out_k)) => {
                        let (lo, hi) = int_range(out.dtype);
                        let fill = cg.c((fill.trunc() as i64).clamp(lo, hi));
                        Val::I(cg.select(out_k, fill, i)?.into_int_value())
                    }
                    (v, None) => v,
                };
                cg.store(out.dtype, cg.buffer(0), idx, v)
            })?;
            match (mode.as_str(), filtered) {
                ("nearest", _) => "resize-nearest",
                ("cubic", false) => "resize-cubic",
                ("cubic", true) => "resize-cubic-antialias",
                (_, true) => "resize-linear-antialias",
                _ => "resize-linear",
            }
        }
        Op::MaxPool {
            pool,
            storage_order,
        } => {
            let indices = (req.outputs.len() > 1).then_some(*storage_order);
            pool_kernel(&mut cg, req, pool, Pooling::Max { indices })?;
            "maxpool"
        }
        Op::AveragePool {
            pool,
            count_include_pad,
        } => {
            pool_kernel(
                &mut cg,
                req,
                pool,
                Pooling::Average {
                    include_pad: *count_include_pad,
                },
            )?;
            "avgpool"
        }
        Op::LpPool { pool, p } => {
            if *p < 1 {
                return Err(KernelError::Unsupported(format!(
                    "LpPool with p = {p}: the norm order must be at least 1"
                )));
            }
            pool_kernel(&mut cg, req, pool, Pooling::Lp { p: *p })?;
            "lppool"
        }
        Op::RoiAlign {
            coordinate_transformation_mode,
            mode,
            sampling_ratio,
            spatial_scale,
            ..
        } => {
            let half_pixel = coordinate_transformation_mode == "half_pixel";
            let max = mode == "max";
            roi_align(
                &mut cg,
                req,
                half_pixel,
                max,
                *sampling_ratio,
                *spatial_scale,
            )?;
            if max {
                "roi-align max"
            } else {
                "roi-align avg"
            }
        }
        Op::TensorScatter { axis, mode } => {
            // Each cache element comes from the update when its position, less the batch
            // entry's write index (modulo the cache length when circular), falls in it.
            let update = req.input(1)?.clone();
            let a = resolve_axis(*axis, x.shape.len())?;
            let writes = req.inputs.get(2).cloned().flatten();
            let circular = mode == "circular";
            each_output(&mut cg, &out.shape, |cg, idx, oc| {
                let w = match &writes {
                    Some(t) => match cg.load(t.dtype, cg.buffer(req.input_param(2)), oc[0])? {
                        Val::I(w) => w,
                        Val::F(_) => {
                            return Err(KernelError::Unsupported(
                                "write indices must be integers".into(),
                            ))
                        }
                    },
                    None => cg.c(0),
                };
                let len = cg.dim(&out.shape[a])?;
                let mut at = cg.sub(oc[a], w)?;
                if circular {
                    at = cg.rem(cg.add(cg.rem(at, len)?, len)?, len)?;
                }
                let inside = cg.and(
                    cg.icmp(IntPredicate::SGE, at, cg.c(0))?,
                    cg.icmp(IntPredicate::SLT, at, cg.dim(&update.shape[a])?)?,
                )?;
                copy(cg, req, 0, idx, idx)?;
                let mut uc = oc.to_vec();
                uc[a] = at;
                let from = linear(cg, &uc, &update.shape)?;
                cg.if_then(inside, |cg| copy(cg, req, 1, from, idx))
            })?;
            if circular {
                "tensor scatter circular"
            } else {
                "tensor scatter"
            }
        }
        Op::GridSample {
            align_corners,
            mode,
            padding_mode,
        } => {
            grid_sample(&mut cg, req, *align_corners, mode, padding_mode)?;
            match mode.as_str() {
                "nearest" => "grid-sample-nearest",
                "cubic" | "bicubic" => "grid-sample-cubic",
                _ => "grid-sample-linear",
            }
        }
        Op::ScatterNd { reduction } => {
            scatter_nd(&mut cg, req, reduction)?;
            "scatternd"
        }
        Op::ScatterElements { axis, reduction } => {
            scatter_elements(&mut cg, req, *axis, reduction)?;
            "scatter elements"
        }
        Op::GatherElements { axis } => {
            let a = resolve_axis(*axis, x.shape.len())?;
            let indices = req.input(1)?.clone();
            each_output(&mut cg, &out.shape, |cg, idx, oc| {
                let raw = cg.load(indices.dtype, cg.buffer(req.input_param(1)), idx)?;
                let mut ic = oc.to_vec();
                ic[a] = wrap_index(cg, raw, cg.dim(&x.shape[a])?)?;
                let off = linear(cg, &ic, &x.shape)?;
                copy(cg, req, 0, off, idx)
            })?;
            "gather elements"
        }
        Op::GatherNd { batch_dims } => {
            // Output coords: the indices' leading coords, then the slice's; each index tuple
            // (the indices' last axis) picks data coords after the batch dims.
            let indices = req.input(1)?.clone();
            let q = indices.shape.len();
            let depth = indices.shape[q - 1].as_const().ok_or_else(|| {
                KernelError::Unsupported("GatherND's index depth must be static".into())
            })? as usize;
            let b = *batch_dims as usize;
            each_output(&mut cg, &out.shape, |cg, idx, oc| {
                let mut ic: Vec<IntValue> = oc[..b].to_vec();
                for t in 0..depth {
                    let mut at = oc[..q - 1].to_vec();
                    at.push(cg.c(t as i64));
                    let pos = linear(cg, &at, &indices.shape)?;
                    let raw = cg.load(indices.dtype, cg.buffer(req.input_param(1)), pos)?;
                    ic.push(wrap_index(cg, raw, cg.dim(&x.shape[b + t])?)?);
                }
                ic.extend_from_slice(&oc[q - 1..]);
                let off = linear(cg, &ic, &x.shape)?;
                copy(cg, req, 0, off, idx)
            })?;
            "gather nd"
        }
        Op::SpaceToDepth { blocksize, mode } => {
            // Output channel `oc` of an `h/b × w/b` image holds input channel `c`'s pixel
            // (y·b + dy, x·b + dx): `oc = (dy·b + dx)·C + c` (DCR) or `c·b² + dy·b + dx` (CRD).
            let b = *blocksize;
            let crd = mode == "CRD";
            let c_in = cg.dim(&x.shape[1])?;
            each_output(&mut cg, &out.shape, |cg, idx, oc| {
                let (block, c) = if crd {
                    (cg.rem(oc[1], cg.c(b * b))?, cg.div(oc[1], cg.c(b * b))?)
                } else {
                    (cg.div(oc[1], c_in)?, cg.rem(oc[1], c_in)?)
                };
                let (dy, dx) = (cg.div(block, cg.c(b))?, cg.rem(block, cg.c(b))?);
                let y = cg.add(cg.mul(oc[2], cg.c(b))?, dy)?;
                let xx = cg.add(cg.mul(oc[3], cg.c(b))?, dx)?;
                let off = linear(cg, &[oc[0], c, y, xx], &x.shape)?;
                copy(cg, req, 0, off, idx)
            })?;
            "space to depth"
        }
        Op::DepthToSpace { blocksize, mode } => {
            // Output pixel (y, x) of channel `oc` comes from input pixel (y/b, x/b) of channel
            // `(dy·b + dx)·C_out + oc` (DCR) or `oc·b² + dy·b + dx` (CRD), dy = y mod b.
            let b = *blocksize;
            let crd = mode == "CRD";
            let c_out = cg.dim(&out.shape[1])?;
            each_output(&mut cg, &out.shape, |cg, idx, oc| {
                let (dy, dx) = (cg.rem(oc[2], cg.c(b))?, cg.rem(oc[3], cg.c(b))?);
                let block = cg.add(cg.mul(dy, cg.c(b))?, dx)?;
                let c = if crd {
                    cg.add(cg.mul(oc[1], cg.c(b * b))?, block)?
                } else {
                    cg.add(cg.mul(block, c_out)?, oc[1])?
                };
                let (y, xx) = (cg.div(oc[2], cg.c(b))?, cg.div(oc[3], cg.c(b))?);
                let off = linear(cg, &[oc[0], c, y, xx], &x.shape)?;
                copy(cg, req, 0, off, idx)
            })?;
            "depth to space"
        }
        Op::EyeLike { k, .. } => {
            let k = *k;
            each_output(&mut cg, &out.shape, |cg, idx, oc| {
                let on = cg.icmp(IntPredicate::EQ, cg.sub(oc[1], oc[0])?, cg.c(k))?;
                let one = cg.b.build_int_z_extend(on, cg.i64t(), "")?;
                cg.store(out.dtype, cg.buffer(0), idx, Val::I(one))
            })?;
            "eye"
        }
        Op::ReverseSequence {
            batch_axis,
            time_axis,
        } => {
            // Within each batch entry's first `lens[b]` steps, step t reads step lens[b]-1-t.
            let rank = x.shape.len();
            let (ba, ta) = (
                resolve_axis(*batch_axis, rank)?,
                resolve_axis(*time_axis, rank)?,
            );
            let lens = req.input(1)?.clone();
            each_output(&mut cg, &out.shape, |cg, idx, oc| {
                let len = match cg.load(lens.dtype, cg.buffer(req.input_param(1)), oc[ba])? {
                    Val::I(l) => l,
                    Val::F(f) => cg.ftoi(f)?,
                };
                let t = oc[ta];
                let inside = cg.icmp(IntPredicate::SLT, t, len)?;
                let mirrored = cg.sub(cg.sub(len, cg.c(1))?, t)?;
                let mut ic = oc.to_vec();
                ic[ta] = cg.select(inside, mirrored, t)?.into_int_value();
                let off = linear(cg, &ic, &x.shape)?;
                copy(cg, req, 0, off, idx)
            })?;
            "reverse sequence"
        }
        Op::Trilu { upper } => {
            // Keep element (.., r, c) when c - r >= k (upper) or c - r <= k (lower); k is a
            // constant, or read from its buffer when it is computed at run time.
            let rank = out.shape.len();
            if rank < 2 {
                return Err(KernelError::Unsupported(
                    "Trilu needs rank 2 or more".into(),
                ));
            }
            let k = match req.inputs.get(1).and_then(|t| t.as_ref()) {
                Some(k) => match req.known_ints(1) {
                    Ok(known) => cg.c(*known.first().ok_or_else(|| {
                        KernelError::Unsupported("Trilu's k input is empty".into())
                    })?),
                    Err(_) => match cg.load(k.dtype, cg.buffer(req.input_param(1)), cg.c(0))? {
                        Val::I(k) => k,
                        Val::F(_) => {
                            return Err(KernelError::Unsupported(
                                "Trilu's k must be an integer".into(),
                            ))
                        }
                    },
                },
                None => cg.c(0),
            };
            let upper = *upper;
            each_output(&mut cg, &out.shape, |cg, idx, oc| {
                let offset = cg.sub(oc[rank - 1], oc[rank - 2])?;
                let keep = if upper {
                    cg.icmp(IntPredicate::SGE, offset, k)?
                } else {
                    cg.icmp(IntPredicate::SLE, offset, k)?
                };
                let v = cg.load(x.dtype, cg.buffer(req.input_param(0)), idx)?;
                let zero = match v {
                    Val::F(_) => Val::F(cg.f(0.0)),
                    Val::I(_) => Val::I(cg.c(0)),
                };
                let v = match (v, zero) {
                    (Val::F(a), Val::F(z)) => Val::F(cg.fsel(keep, a, z)?),
                    (Val::I(a), Val::I(z)) => Val::I(cg.select(keep, a, z)?.into_int_value()),
                    _ => unreachable!("a value and a zero of its kind"),
                };
                cg.store(out.dtype, cg.buffer(0), idx, v)
            })?;
            "triangle"
        }
        Op::Shape { start, .. } => {
            let rank = x.shape.len() as i64;
            let first = if *start < 0 {
                (start + rank).max(0)
            } else {
                (*start).min(rank)
            } as usize;
            let t0 = cg.icmp(IntPredicate::EQ, cg.add(cg.tid()?, cg.ctaid()?)?, cg.c(0))?;
            let dims: Vec<Dim> =
                x.shape[first..first + out.shape[0].as_const().unwrap_or(0) as usize].to_vec();
            cg.if_then(t0, |cg| {
                for (k, d) in dims.iter().enumerate() {
                    cg.store(out.dtype, cg.buffer(0), cg.c(k as i64), Val::I(cg.dim(d)?))?;
                }
                Ok(())
            })?;
            "shape"
        }
        other => {
            return Err(KernelError::Unsupported(format!(
                "{} is not a movement op",
                other.name()
            )))
        }
    };
    let launch = Launch {
        grid: match req.op {
            Op::Shape { .. } => Dim::known(1),
            _ => req
                .outputs
                .iter()
                .map(|o| o.numel())
                .fold(Dim::known(0), |a, b| a + b)
                .ceil_div(&Dim::known(BLOCK as i64)),
        },
        block: BLOCK,
        shared_bytes: 0,
        dynamic_shared_bytes: 0,
    };
    let info = req.describe(Family::Movement, variant, vec![req.op.name()], launch);
    Ok(Generated {
        info,
        module: cg.finish()?,
    })
}

/// The axes `scales`, `sizes` and `roi` list values for, in their order (`axes`, or all).
fn axes_in_order(axes: &[i64], rank: usize) -> Gen<Vec<usize>> {
    if axes.is_empty() {
        return Ok((0..rank).collect());
    }
    axes.iter().map(|&a| crate::resolve_axis(a, rank)).collect()
}

/// Which axes a Resize resizes (`axes`, or all of them).
fn resized_axes(axes: &[i64], rank: usize) -> Gen<Vec<bool>> {
    let mut listed = vec![axes.is_empty(); rank];
    for &a in axes {
        listed[crate::resolve_axis(a, rank)?] = true;
    }
    Ok(listed)
}

/// Resize's scale per axis when its `scales` input is given (it must be constant), or when
/// `sizes` keeps the aspect ratio (one scale for every resized axis, from static sizes);
/// `None` when `sizes` stretches each axis (its ratio, computed in the kernel).
fn resize_scales(
    req: &Request,
    attrs: &sparkc_ir::op::ResizeAttrs,
    shape: &[Dim],
    rank: usize,
) -> Gen<Option<Vec<f64>>> {
    let listed = resized_axes(&attrs.axes, rank)?;
    let positions = axes_in_order(&attrs.axes, rank)?;
    let given = matches!(req.inputs.get(2), Some(Some(t)) if t.numel().as_const() != Some(0));
    if !given {
        let policy = attrs.keep_aspect_ratio_policy.as_str();
        if !matches!(policy, "not_larger" | "not_smaller") {
            return Ok(None);
        }
        let sizes = req.known_ints(3)?;
        let mut ratios = Vec::with_capacity(positions.len());
        for (&k, &size) in positions.iter().zip(sizes) {
            let input = shape[k].as_const().ok_or_else(|| {
                KernelError::Unsupported(
                    "a Resize keeping its aspect ratio needs static input sizes".into(),
                )
            })?;
            ratios.push(size as f64 / input as f64);
        }
        let common = if policy == "not_larger" {
            ratios.iter().copied().fold(f64::INFINITY, f64::min)
        } else {
            ratios.iter().copied().fold(0.0, f64::max)
        };
        return Ok(Some(
            (0..rank)
                .map(|k| if listed[k] { common } else { 1.0 })
                .collect(),
        ));
    }
    let values = req
        .known_floats
        .get(2)
        .cloned()
        .flatten()
        .ok_or_else(|| KernelError::Unsupported("Resize scales must be constant".into()))?;
    if values.len() != positions.len() {
        return Err(KernelError::Unsupported(format!(
            "{} Resize scales for {} axes",
            values.len(),
            positions.len()
        )));
    }
    let mut scales = vec![1.0; rank];
    for (&k, &v) in positions.iter().zip(&values) {
        scales[k] = v;
    }
    Ok(Some(scales))
}

/// The `tf_crop_and_resize` region of each axis, `(start, end)` as fractions of its extent:
/// from the constant `roi` input (one pair per resized axis, or per axis), or the whole axis.
fn resize_roi(req: &Request, axes: &[i64], rank: usize) -> Gen<Vec<(f64, f64)>> {
    let given = matches!(req.inputs.get(1), Some(Some(t)) if t.numel().as_const() != Some(0));
    if !given {
        return Ok(vec![(0.0, 1.0); rank]);
    }
    let roi = req
        .known_floats
        .get(1)
        .cloned()
        .flatten()
        .ok_or_else(|| KernelError::Unsupported("Resize's roi must be constant".into()))?;
    let positions = axes_in_order(axes, rank)?;
    let n = positions.len();
    let mut regions = vec![(0.0, 1.0); rank];
    if roi.len() == 2 * n {
        for (j, &k) in positions.iter().enumerate() {
            regions[k] = (roi[j], roi[j + n]);
        }
    } else if roi.len() == 2 * rank {
        for (k, region) in regions.iter_mut().enumerate() {
            *region = (roi[k], roi[k + rank]);
        }
    } else {
        return Err(KernelError::Unsupported(format!(
            "Resize's roi has {} values for {n} axes",
            roi.len()
        )));
    }
    Ok(regions)
}

/// The axes given by optional input `slot` (known at compile time), or the first `default`
/// axes when it is omitted.
fn axes_input(req: &Request, slot: usize, rank: usize, default: usize) -> Gen<Vec<usize>> {
    match req.inputs.get(slot).and_then(|t| t.as_ref()) {
        Some(_) => req
            .known_ints(slot)?
            .iter()
            .map(|&a| resolve_axis(a, rank))
            .collect(),
        None => Ok((0..default).collect()),
    }
}

/// Runs `body(idx, coords)` for every element of an output of `shape`.
fn each_output<'ctx>(
    cg: &mut Cg<'ctx>,
    shape: &[Dim],
    mut body: impl FnMut(&mut Cg<'ctx>, IntValue<'ctx>, &[IntValue<'ctx>]) -> Gen<()>,
) -> Gen<()> {
    let n = cg.product(shape)?;
    cg.for_each_thread_item(cg.c(0), n, |cg, idx| {
        let oc = coords(cg, idx, shape)?;
        body(cg, idx, &oc)
    })
}

/// Copies input `slot`'s element `from` to output element `to`.
fn copy<'ctx>(
    cg: &Cg<'ctx>,
    req: &Request,
    slot: usize,
    from: IntValue<'ctx>,
    to: IntValue<'ctx>,
) -> Gen<()> {
    let t = req.input(slot)?;
    let v = cg.load(t.dtype, cg.buffer(req.input_param(slot)), from)?;
    cg.store(req.outputs[0].dtype, cg.buffer(0), to, v)
}

/// The weights of the four taps at offsets -1, 0, 1, 2 from the sample below a point at
/// fraction `t` past it, under the cubic kernel with coefficient `a`.
fn cubic_weights<'ctx>(cg: &Cg<'ctx>, t: FloatValue<'ctx>, a: f64) -> Gen<[FloatValue<'ctx>; 4]> {
    let mut out = [t; 4];
    for (k, i) in (-1i64..=2).enumerate() {
        // |i - t| lies in [1, 2] for the outer taps and [0, 1] for the inner ones.
        let d = cg.fcall1("llvm.fabs.f32", cg.fsub(cg.f(i as f64), t)?)?;
        out[k] = if (0..=1).contains(&i) {
            let inner = cg.fmul(cg.fsub(cg.fmul(cg.f(a + 2.0), d)?, cg.f(a + 3.0))?, d)?;
            cg.fma(inner, d, cg.f(1.0))?
        } else {
            let p = cg.fma(cg.f(a), d, cg.f(-5.0 * a))?;
            let p = cg.fma(p, d, cg.f(8.0 * a))?;
            cg.fma(p, d, cg.f(-4.0 * a))?
        };
    }
    Ok(out)
}

/// `x` folded back into `[lo, hi]` by reflecting at its ends as often as needed (`lo` when the
/// range is empty), as GridSample's reflection padding does.
fn reflect<'ctx>(
    cg: &Cg<'ctx>,
    x: FloatValue<'ctx>,
    lo: FloatValue<'ctx>,
    hi: FloatValue<'ctx>,
) -> Gen<FloatValue<'ctx>> {
    let range = cg.fsub(hi, lo)?;
    // Distance past the end it crossed, whole ranges of it, and what is left.
    let fold = |past: FloatValue<'ctx>,
                near: FloatValue<'ctx>,
                far: FloatValue<'ctx>,
                toward_far: bool|
     -> Gen<FloatValue<'ctx>> {
        let n = cg.ftoi(cg.fdiv(past, range)?)?;
        let r = cg.fsub(past, cg.fmul(cg.itof(n)?, range)?)?;
        let even = cg.icmp(IntPredicate::EQ, cg.b.build_and(n, cg.c(1), "")?, cg.c(0))?;
        let (into_near, into_far) = if toward_far {
            (cg.fadd(near, r)?, cg.fsub(far, r)?)
        } else {
            (cg.fsub(near, r)?, cg.fadd(far, r)?)
        };
        cg.fsel(even, into_near, into_far)
    };
    let below = fold(cg.fsub(lo, x)?, lo, hi, true)?;
    let above = fold(cg.fsub(x, hi)?, hi, lo, false)?;
    let v = cg.fsel(cg.fcmp(FloatPredicate::OLT, x, lo)?, below, x)?;
    let v = cg.fsel(cg.fcmp(FloatPredicate::OGT, x, hi)?, above, v)?;
    cg.fsel(cg.fcmp(FloatPredicate::OLE, range, cg.f(0.0))?, lo, v)
}

/// GridSample: each output element interpolates its channel of the input at the grid's point
/// (the grid lists the last spatial axis first), with its taps outside the input read as zeros
/// or moved inside by the padding mode.
fn grid_sample(
    cg: &mut Cg,
    req: &Request,
    align_corners: bool,
    mode: &str,
    padding: &str,
) -> Gen<()> {
    let (x, grid) = (req.input(0)?.clone(), req.input(1)?.clone());
    let out = req.outputs[0].clone();
    let rank = x.shape.len();
    if rank < 3 || grid.shape.len() != rank || out.shape.len() != rank {
        return Err(KernelError::Unsupported(
            "GridSample's input, grid and output ranks do not agree".into(),
        ));
    }
    if !matches!(padding, "zeros" | "border" | "reflection") {
        return Err(KernelError::Unsupported(format!(
            "GridSample padding '{padding}'"
        )));
    }
    let spatial = rank - 2;
    each_output(cg, &out.shape, |cg, idx, oc| {
        let mut taps: Vec<Vec<(IntValue, FloatValue)>> = Vec::with_capacity(spatial);
        for k in 0..spatial {
            let len = cg.dim(&x.shape[2 + k])?;
            let lenf = cg.itof(len)?;
            // grid[n, o..., spatial - 1 - k]
            let mut at = vec![oc[0]];
            at.extend(&oc[2..]);
            at.push(cg.c((spatial - 1 - k) as i64));
            let off = linear(cg, &at, &grid.shape)?;
            let v = cg
                .load(grid.dtype, cg.buffer(req.input_param(1)), off)?
                .float(cg)?;
            let one = cg.f(1.0);
            let (mut loc, lo, hi) = if align_corners {
                let last = cg.fsub(lenf, one)?;
                let loc = cg.fmul(cg.fmul(cg.fadd(v, one)?, cg.f(0.5))?, last)?;
                (loc, cg.f(0.0), last)
            } else {
                // ((v + 1)·len − 1) / 2 with one rounding, so that points a hair from a
                // half-way mark stay on their side of it.
                let half = cg.fmul(lenf, cg.f(0.5))?;
                let loc = cg.fma(cg.fadd(v, one)?, half, cg.f(-0.5))?;
                (loc, cg.f(-0.5), cg.fsub(lenf, cg.f(0.5))?)
            };
            match padding {
                "border" => {
                    let last = cg.fsub(lenf, one)?;
                    loc = cg.fmin(cg.fmax(loc, cg.f(0.0))?, last)?;
                }
                "reflection" => loc = reflect(cg, loc, lo, hi)?,
                _ => {}
            }
            let floor = cg.fcall1("llvm.floor.f32", loc)?;
            let base = cg.ftoi(floor)?;
            let t = cg.fsub(loc, floor)?;
            let raw: Vec<(IntValue, FloatValue)> = match mode {
                "nearest" => {
                    let r = cg.fcall1("llvm.roundeven.f32", loc)?;
                    vec![(cg.ftoi(r)?, one)]
                }
                "cubic" | "bicubic" => {
                    let w = cubic_weights(cg, t, -0.75)?;
                    let mut v = Vec::with_capacity(4);
                    for (i, w) in (-1i64..=2).zip(w) {
                        v.push((cg.add(base, cg.c(i))?, w));
                    }
                    v
                }
                _ => vec![(base, cg.fsub(one, t)?), (cg.add(base, cg.c(1))?, t)],
            };
            // Each tap's index inside the axis, its weight zero where zeros padding reads
            // outside it.
            let last = cg.sub(len, cg.c(1))?;
            let mut axis_taps = Vec::with_capacity(raw.len());
            for (i, w) in raw {
                let inside = cg.and(
                    cg.icmp(IntPredicate::SGE, i, cg.c(0))?,
                    cg.icmp(IntPredicate::SLE, i, last)?,
                )?;
                let (i, w) = match padding {
                    "zeros" => (i, cg.fsel(inside, w, cg.f(0.0))?),
                    "reflection" => {
                        let r = reflect(cg, cg.itof(i)?, lo, hi)?;
                        (cg.ftoi(r)?, w)
                    }
                    _ => (i, w),
                };
                axis_taps.push((cg.imin(cg.imax(i, cg.c(0))?, last)?, w));
            }
            taps.push(axis_taps);
        }
        let counts: Vec<usize> = taps.iter().map(Vec::len).collect();
        let combinations: usize = counts.iter().product();
        let mut sum = cg.f(0.0);
        for mut combo in 0..combinations {
            let mut at = vec![oc[0], oc[1]];
            let mut weight = cg.f(1.0);
            let mut pick = vec![0; spatial];
            for k in (0..spatial).rev() {
                pick[k] = combo % counts[k];
                combo /= counts[k];
            }
            for (k, &j) in pick.iter().enumerate() {
                at.push(taps[k][j].0);
                weight = cg.fmul(weight, taps[k][j].1)?;
            }
            let off = linear(cg, &at, &x.shape)?;
            let v = cg
                .load(x.dtype, cg.buffer(req.input_param(0)), off)?
                .float(cg)?;
            sum = cg.fma(weight, v, sum)?;
        }
        cg.store(out.dtype, cg.buffer(0), idx, Val::F(sum))
    })
}

/// The two taps of RoiAlign's bilinear sample at `v` on an axis of `len` samples: the indices
/// below and above (both the last past it) and the weight of the upper one.
fn roi_taps<'ctx>(
    cg: &Cg<'ctx>,
    v: FloatValue<'ctx>,
    len: IntValue<'ctx>,
) -> Gen<(IntValue<'ctx>, IntValue<'ctx>, FloatValue<'ctx>)> {
    let v = cg.fmax(v, cg.f(0.0))?;
    let lo = cg.ftoi(v)?;
    let last = cg.sub(len, cg.c(1))?;
    let past = cg.icmp(IntPredicate::SGE, lo, last)?;
    let frac = cg.fsub(v, cg.itof(lo)?)?;
    let lo = cg.select(past, last, lo)?.into_int_value();
    let hi = cg
        .select(past, last, cg.add(lo, cg.c(1))?)?
        .into_int_value();
    Ok((lo, hi, cg.fsel(past, cg.f(0.0), frac)?))
}

/// RoiAlign: each output `[roi, channel, y, x]` averages (or takes the largest of) bilinear
/// samples on a grid over its bin of the region, the grid `sampling_ratio` points a side or,
/// when that is 0, as many as the bin is wide in input pixels (rounded up).
fn roi_align<'ctx>(
    cg: &mut Cg<'ctx>,
    req: &Request,
    half_pixel: bool,
    max: bool,
    sampling_ratio: i64,
    spatial_scale: f32,
) -> Gen<()> {
    let (x, rois, batch) = (
        req.input(0)?.clone(),
        req.input(1)?.clone(),
        req.input(2)?.clone(),
    );
    let out = req.outputs[0].clone();
    if x.shape.len() != 4 || out.shape.len() != 4 {
        return Err(KernelError::Unsupported(
            "RoiAlign input and output must be 4-D".into(),
        ));
    }
    let offset = if half_pixel { 0.5 } else { 0.0 };
    each_output(cg, &out.shape, |cg, idx, oc| {
        let (i, ch, py, px) = (oc[0], oc[1], oc[2], oc[3]);
        let (h, w) = (cg.dim(&x.shape[2])?, cg.dim(&x.shape[3])?);
        let (pooled_h, pooled_w) = (
            cg.itof(cg.dim(&out.shape[2])?)?,
            cg.itof(cg.dim(&out.shape[3])?)?,
        );
        let corner = |cg: &Cg<'ctx>, k: i64| -> Gen<FloatValue<'ctx>> {
            let at = cg.add(cg.mul(i, cg.c(4))?, cg.c(k))?;
            let v = cg
                .load(rois.dtype, cg.buffer(req.input_param(1)), at)?
                .float(cg)?;
            cg.fsub(cg.fmul(v, cg.f(f64::from(spatial_scale)))?, cg.f(offset))
        };
        let (start_x, start_y) = (corner(cg, 0)?, corner(cg, 1)?);
        let (mut width, mut height) = (
            cg.fsub(corner(cg, 2)?, start_x)?,
            cg.fsub(corner(cg, 3)?, start_y)?,
        );
        if !half_pixel {
            width = cg.fmax(width, cg.f(1.0))?;
            height = cg.fmax(height, cg.f(1.0))?;
        }
        let (bin_h, bin_w) = (cg.fdiv(height, pooled_h)?, cg.fdiv(width, pooled_w)?);
        let grid = |cg: &Cg<'ctx>, bin: FloatValue<'ctx>| -> Gen<IntValue<'ctx>> {
            if sampling_ratio > 0 {
                Ok(cg.c(sampling_ratio))
            } else {
                let up = cg.fcall1("llvm.ceil.f32", bin)?;
                Ok(cg.ftoi(up)?)
            }
        };
        let (grid_h, grid_w) = (grid(cg, bin_h)?, grid(cg, bin_w)?);
        let image = match cg.load(batch.dtype, cg.buffer(req.input_param(2)), i)? {
            Val::I(b) => {
                let last = cg.sub(cg.dim(&x.shape[0])?, cg.c(1))?;
                cg.imin(cg.imax(b, cg.c(0))?, last)?
            }
            Val::F(_) => {
                return Err(KernelError::Unsupported(
                    "RoiAlign batch indices must be integers".into(),
                ))
            }
        };
        let plane = cg.mul(
            cg.add(cg.mul(image, cg.dim(&x.shape[1])?)?, ch)?,
            cg.mul(h, w)?,
        )?;
        // The distance between samples of the grid along each axis.
        let step_y = cg.fdiv(bin_h, cg.itof(grid_h)?)?;
        let step_x = cg.fdiv(bin_w, cg.itof(grid_w)?)?;
        let base_y = cg.fma(cg.itof(py)?, bin_h, start_y)?;
        let base_x = cg.fma(cg.itof(px)?, bin_w, start_x)?;
        let init = if max { f64::NEG_INFINITY } else { 0.0 };
        let state = vec![cg.f(init).into(), cg.c(0).into()];
        let done = cg.fold_range(cg.c(0), grid_h, cg.c(1), state, |cg, iy, state| {
            let y = cg.fma(cg.fadd(cg.itof(iy)?, cg.f(0.5))?, step_y, base_y)?;
            cg.fold_range(cg.c(0), grid_w, cg.c(1), state, |cg, ix, state| {
                let xv = cg.fma(cg.fadd(cg.itof(ix)?, cg.f(0.5))?, step_x, base_x)?;
                let outside = {
                    let lo = cg.f(-1.0);
                    let y_out = cg.b.build_or(
                        cg.fcmp(FloatPredicate::OLT, y, lo)?,
                        cg.fcmp(FloatPredicate::OGT, y, cg.itof(h)?)?,
                        "",
                    )?;
                    let x_out = cg.b.build_or(
                        cg.fcmp(FloatPredicate::OLT, xv, lo)?,
                        cg.fcmp(FloatPredicate::OGT, xv, cg.itof(w)?)?,
                        "",
                    )?;
                    cg.b.build_or(y_out, x_out, "")?
                };
                let (y0, y1, ly) = roi_taps(cg, y, h)?;
                let (x0, x1, lx) = roi_taps(cg, xv, w)?;
                let (hy, hx) = (cg.fsub(cg.f(1.0), ly)?, cg.fsub(cg.f(1.0), lx)?);
                let mut terms = Vec::with_capacity(4);
                for (row, wy) in [(y0, hy), (y1, ly)] {
                    for (col, wx) in [(x0, hx), (x1, lx)] {
                        let at = cg.add(plane, cg.add(cg.mul(row, w)?, col)?)?;
                        let v = cg
                            .load(x.dtype, cg.buffer(req.input_param(0)), at)?
                            .float(cg)?;
                        let t = cg.fmul(cg.fmul(wy, wx)?, v)?;
                        terms.push(cg.fsel(outside, cg.f(0.0), t)?);
                    }
                }
                let (acc, any) = (state[0].into_float_value(), state[1].into_int_value());
                let next = if max {
                    let m = terms[1..]
                        .iter()
                        .try_fold(terms[0], |m, &t| cg.fmax(m, t))?;
                    let first = cg.icmp(IntPredicate::EQ, any, cg.c(0))?;
                    cg.fsel(first, m, cg.fmax(acc, m)?)?
                } else {
                    terms.iter().try_fold(acc, |a, &t| cg.fadd(a, t))?
                };
                Ok(vec![next.into(), cg.c(1).into()])
            })
        })?;
        let (acc, any) = (done[0].into_float_value(), done[1].into_int_value());
        let value = if max {
            cg.fsel(cg.icmp(IntPredicate::EQ, any, cg.c(0))?, cg.f(0.0), acc)?
        } else {
            let count = cg.imax(cg.mul(grid_h, grid_w)?, cg.c(1))?;
            cg.fdiv(acc, cg.itof(count)?)?
        };
        cg.store(out.dtype, cg.buffer(0), idx, Val::F(value))
    })
}

/// The four taps of cubic interpolation at source coordinate `src` on an axis of `len`
/// samples: clamped indices and weights of the cubic kernel with coefficient `a`; with
/// `exclude_outside`, taps outside the axis weigh nothing and the rest are renormalized.
fn cubic_taps<'ctx>(
    cg: &Cg<'ctx>,
    src: FloatValue<'ctx>,
    len: IntValue<'ctx>,
    a: f64,
    exclude_outside: bool,
) -> Gen<Vec<(IntValue<'ctx>, FloatValue<'ctx>)>> {
    let base = cg.fcall1("llvm.floor.f32", src)?;
    let t = cg.fsub(src, base)?;
    let base = cg.ftoi(base)?;
    let last = cg.sub(len, cg.c(1))?;
    let mut taps = Vec::with_capacity(4);
    let mut sum = cg.f(0.0);
    for (i, w) in (-1i64..=2).zip(cubic_weights(cg, t, a)?) {
        let at = cg.add(base, cg.c(i))?;
        let w = if exclude_outside {
            let inside = cg.and(
                cg.icmp(IntPredicate::SGE, at, cg.c(0))?,
                cg.icmp(IntPredicate::SLE, at, last)?,
            )?;
            cg.fsel(inside, w, cg.f(0.0))?
        } else {
            w
        };
        sum = cg.fadd(sum, w)?;
        taps.push((cg.imin(cg.imax(at, cg.c(0))?, last)?, w));
    }
    if exclude_outside {
        let nonzero = cg.fcmp(FloatPredicate::UNE, sum, cg.f(0.0))?;
        for tap in &mut taps {
            tap.1 = cg.fsel(nonzero, cg.fdiv(tap.1, sum)?, tap.1)?;
        }
    }
    Ok(taps)
}

/// `f` as integer `dtype`: truncated toward zero, as onnxruntime and the ONNX reference store an
/// interpolated integer, and saturated to the type's range (NaN as 0).
fn truncate_to_integer<'ctx>(
    cg: &Cg<'ctx>,
    dtype: sparkc_ir::DType,
    f: FloatValue<'ctx>,
) -> Gen<IntValue<'ctx>> {
    let wide = cg.ftoi(f)?;
    let (lo, hi) = int_range(dtype);
    cg.imin(cg.imax(wide, cg.c(lo))?, cg.c(hi))
}

/// The taps of an antialiased linear or cubic filter at source coordinate `src` of an axis of
/// `len` samples downscaled by `scale` (< 1): the filter widened by `1/scale`, its weights
/// normalized to sum to one, then those outside the axis zeroed (and the rest renormalized)
/// with `exclude_outside`; indices clamped to the axis.
fn filter_taps<'ctx>(
    cg: &Cg<'ctx>,
    src: FloatValue<'ctx>,
    len: IntValue<'ctx>,
    mode: &str,
    scale: f64,
    a: f64,
    exclude_outside: bool,
) -> Gen<Vec<(IntValue<'ctx>, FloatValue<'ctx>)>> {
    let radius = if mode == "cubic" { 2.0 } else { 1.0 };
    let first = (-radius / scale).floor() as i64 + 1;
    let base = cg.fcall1("llvm.floor.f32", src)?;
    let ratio = cg.fsub(src, base)?;
    let base = cg.ftoi(base)?;
    let last = cg.sub(len, cg.c(1))?;
    let mut taps = Vec::with_capacity((2 - 2 * first) as usize);
    for i in first..=1 - first {
        let t = cg.fmul(cg.f(scale), cg.fsub(cg.f(i as f64), ratio)?)?;
        let w = if mode == "cubic" {
            cubic_kernel(cg, t, a)?
        } else {
            let d = cg.fsub(cg.f(1.0), cg.fcall1("llvm.fabs.f32", t)?)?;
            cg.fcall2("llvm.maxnum.f32", d, cg.f(0.0))?
        };
        taps.push((cg.add(base, cg.c(i))?, w));
    }
    let normalize = |cg: &Cg<'ctx>, taps: &mut [(IntValue<'ctx>, FloatValue<'ctx>)], guard| {
        let mut sum = cg.f(0.0);
        for tap in taps.iter() {
            sum = cg.fadd(sum, tap.1)?;
        }
        let nonzero = cg.fcmp(FloatPredicate::UNE, sum, cg.f(0.0))?;
        for tap in taps.iter_mut() {
            let scaled = cg.fdiv(tap.1, sum)?;
            tap.1 = if guard {
                cg.fsel(nonzero, scaled, tap.1)?
            } else {
                scaled
            };
        }
        Gen::Ok(())
    };
    normalize(cg, &mut taps, false)?;
    if exclude_outside {
        for tap in &mut taps {
            let inside = cg.and(
                cg.icmp(IntPredicate::SGE, tap.0, cg.c(0))?,
                cg.icmp(IntPredicate::SLE, tap.0, last)?,
            )?;
            tap.1 = cg.fsel(inside, tap.1, cg.f(0.0))?;
        }
        normalize(cg, &mut taps, true)?;
    }
    for tap in &mut taps {
        tap.0 = cg.imin(cg.imax(tap.0, cg.c(0))?, last)?;
    }
    Ok(taps)
}

/// The cubic convolution kernel with coefficient `a` at distance `x`.
fn cubic_kernel<'ctx>(cg: &Cg<'ctx>, x: FloatValue<'ctx>, a: f64) -> Gen<FloatValue<'ctx>> {
    let d = cg.fcall1("llvm.fabs.f32", x)?;
    let inner = cg.fmul(cg.fsub(cg.fmul(cg.f(a + 2.0), d)?, cg.f(a + 3.0))?, d)?;
    let inner = cg.fma(inner, d, cg.f(1.0))?;
    let outer = cg.fma(cg.f(a), d, cg.f(-5.0 * a))?;
    let outer = cg.fma(outer, d, cg.f(8.0 * a))?;
    let outer = cg.fma(outer, d, cg.f(-4.0 * a))?;
    let near = cg.fcmp(FloatPredicate::OLE, d, cg.f(1.0))?;
    let within = cg.fcmp(FloatPredicate::OLT, d, cg.f(2.0))?;
    let w = cg.fsel(within, outer, cg.f(0.0))?;
    cg.fsel(near, inner, w)
}

/// The weighted sum over every combination of per-axis taps, recursively by axis.
fn weighted_taps<'ctx>(
    cg: &Cg<'ctx>,
    req: &Request,
    (shape, dtype): (&[Dim], sparkc_ir::DType),
    taps: &[Vec<(IntValue<'ctx>, FloatValue<'ctx>)>],
    axis: usize,
    at: &mut Vec<IntValue<'ctx>>,
) -> Gen<FloatValue<'ctx>> {
    if axis == taps.len() {
        let off = linear(cg, at, shape)?;
        return cg
            .load(dtype, cg.buffer(req.input_param(0)), off)?
            .float(cg);
    }
    let mut sum = cg.f(0.0);
    for &(index, weight) in &taps[axis] {
        at[axis] = index;
        let v = weighted_taps(cg, req, (shape, dtype), taps, axis + 1, at)?;
        sum = cg.fma(v, weight, sum)?;
    }
    Ok(sum)
}

/// Multilinear interpolation over the `2^rank` corners, recursively by axis.
#[allow(clippy::too_many_arguments)]
fn lerp_corners<'ctx>(
    cg: &Cg<'ctx>,
    req: &Request,
    shape: &[Dim],
    dtype: sparkc_ir::DType,
    lo: &[IntValue<'ctx>],
    hi: &[IntValue<'ctx>],
    frac: &[FloatValue<'ctx>],
    axis: usize,
    at: &mut Vec<IntValue<'ctx>>,
) -> Gen<FloatValue<'ctx>> {
    if axis == lo.len() {
        let off = linear(cg, at, shape)?;
        return cg
            .load(dtype, cg.buffer(req.input_param(0)), off)?
            .float(cg);
    }
    if shape[axis].as_const() == Some(1) || lo[axis] == hi[axis] {
        at[axis] = lo[axis];
        return lerp_corners(cg, req, shape, dtype, lo, hi, frac, axis + 1, at);
    }
    at[axis] = lo[axis];
    let a = lerp_corners(cg, req, shape, dtype, lo, hi, frac, axis + 1, at)?;
    at[axis] = hi[axis];
    let b = lerp_corners(cg, req, shape, dtype, lo, hi, frac, axis + 1, at)?;
    cg.fma(cg.fsub(b, a)?, frac[axis], a)
}

/// What a pooling kernel computes.
#[derive(Clone, Copy)]
enum Pooling {
    /// The window's maximum; with `indices`, also its position in the input, flattened with
    /// the spatial axes row-major (0) or column-major (1).
    Max { indices: Option<i64> },
    /// The window's mean, over the padded window when `include_pad`.
    Average { include_pad: bool },
    /// The window's `p`-norm, `(sum |x|^p)^(1/p)` (padding counts as zeros).
    Lp { p: i64 },
}

/// Max, average or Lp pooling over an N-D window with pads, strides and dilations.
fn pool_kernel(cg: &mut Cg, req: &Request, pool: &PoolAttrs, pooling: Pooling) -> Gen<()> {
    let max = matches!(pooling, Pooling::Max { .. });
    let mut x = req.input(0)?.clone();
    let mut out = req.outputs[0].clone();
    // Sizes and coordinates in channels-first order whatever the layout; only the loads and
    // the output's flat index (which `each_output` walks in the stored order) differ.
    let nhwc = pool.layout == Layout::Nhwc;
    let stored_x = x.shape.clone();
    if nhwc {
        if matches!(pooling, Pooling::Max { indices: Some(_) }) {
            return Err(KernelError::Unsupported(
                "a channels-last MaxPool has no indices output".into(),
            ));
        }
        x.shape = channels_first(&x.shape);
        out.shape = channels_first(&out.shape);
    }
    let spatial = x.shape.len().saturating_sub(2);
    let kernel = &pool.kernel_shape;
    if kernel.len() != spatial {
        return Err(KernelError::Unsupported(
            "pool kernel rank does not match the input".into(),
        ));
    }
    let get = |v: &[i64], k: usize, default: i64| v.get(k).copied().unwrap_or(default);
    let mut begin = vec![0i64; spatial];
    for (k, b) in begin.iter_mut().enumerate() {
        *b = match pool.auto_pad {
            AutoPad::NotSet | AutoPad::Valid => get(&pool.pads, k, 0),
            AutoPad::SameUpper | AutoPad::SameLower => {
                let (Some(i), Some(o)) = (x.shape[2 + k].as_const(), out.shape[2 + k].as_const())
                else {
                    return Err(KernelError::Unsupported(
                        "SAME padding needs static sizes".into(),
                    ));
                };
                let eff = (kernel[k] - 1) * get(&pool.dilations, k, 1) + 1;
                let total = ((o - 1) * get(&pool.strides, k, 1) + eff - i).max(0);
                if pool.auto_pad == AutoPad::SameUpper {
                    total / 2
                } else {
                    total - total / 2
                }
            }
        };
        if pool.auto_pad == AutoPad::Valid {
            *b = 0;
        }
    }
    let ends: Vec<i64> = (0..spatial)
        .map(|k| get(&pool.pads, spatial + k, 0))
        .collect();
    let window: i64 = kernel.iter().product();
    let stored_out = req.outputs[0].shape.clone();
    each_output(cg, &stored_out, |cg, idx, stored| {
        let logical;
        let oc = if nhwc {
            logical = channels_first(stored);
            &logical[..]
        } else {
            stored
        };
        let mut acc = cg.f(if max { f64::NEG_INFINITY } else { 0.0 });
        let mut count = cg.c(0);
        let mut padded = cg.c(0);
        let mut arg = cg.c(0);
        for w in 0..window {
            // The window position, last axis fastest.
            let mut rest = w;
            let mut pos = vec![0i64; spatial];
            for k in (0..spatial).rev() {
                pos[k] = rest % kernel[k];
                rest /= kernel[k];
            }
            let mut inside = cg.icmp(IntPredicate::EQ, cg.c(0), cg.c(0))?;
            let mut in_padded = cg.icmp(IntPredicate::EQ, cg.c(0), cg.c(0))?;
            let mut ic = vec![oc[0], oc[1]];
            for k in 0..spatial {
                let d = cg.dim(&x.shape[2 + k])?;
                let at = cg.add(
                    cg.sub(
                        cg.mul(oc[2 + k], cg.c(get(&pool.strides, k, 1)))?,
                        cg.c(begin[k]),
                    )?,
                    cg.c(pos[k] * get(&pool.dilations, k, 1)),
                )?;
                let ok = cg.and(
                    cg.icmp(IntPredicate::SGE, at, cg.c(0))?,
                    cg.icmp(IntPredicate::SLT, at, d)?,
                )?;
                let within_pads = cg.icmp(IntPredicate::SLT, at, cg.add(d, cg.c(ends[k]))?)?;
                inside = cg.and(inside, ok)?;
                in_padded = cg.and(in_padded, within_pads)?;
                ic.push(cg.imin(cg.imax(at, cg.c(0))?, cg.sub(d, cg.c(1))?)?);
            }
            let off = if nhwc {
                linear(cg, &channels_last(&ic), &stored_x)?
            } else {
                linear(cg, &ic, &x.shape)?
            };
            let v = cg
                .load(x.dtype, cg.buffer(req.input_param(0)), off)?
                .float(cg)?;
            if let Pooling::Max { indices } = pooling {
                // Strictly greater: the first maximum in scan order wins, as in onnxruntime.
                let better = cg.and(inside, cg.fcmp(FloatPredicate::OGT, v, acc)?)?;
                if let Some(order) = indices {
                    let mut spatial_at = cg.c(0);
                    let axes: Vec<usize> = if order == 1 {
                        (0..spatial).rev().collect()
                    } else {
                        (0..spatial).collect()
                    };
                    for k in axes {
                        let d = cg.dim(&x.shape[2 + k])?;
                        spatial_at = cg.add(cg.mul(spatial_at, d)?, ic[2 + k])?;
                    }
                    let plane = cg.add(cg.mul(oc[0], cg.dim(&x.shape[1])?)?, oc[1])?;
                    let at = cg.add(cg.mul(plane, cg.product(&x.shape[2..])?)?, spatial_at)?;
                    arg = cg.select(better, at, arg)?.into_int_value();
                }
                acc = cg.fsel(better, v, acc)?;
            } else {
                let term = match pooling {
                    Pooling::Lp { p: 1 } => cg.fcall1("llvm.fabs.f32", v)?,
                    Pooling::Lp { p: 2 } => cg.fmul(v, v)?,
                    Pooling::Lp { p } => cg.pow(cg.fcall1("llvm.fabs.f32", v)?, cg.f(p as f64))?,
                    _ => v,
                };
                let s = cg.fadd(acc, term)?;
                acc = cg.fsel(inside, s, acc)?;
            }
            let one = cg.b.build_int_z_extend(inside, cg.i64t(), "")?;
            count = cg.add(count, one)?;
            let one = cg.b.build_int_z_extend(in_padded, cg.i64t(), "")?;
            padded = cg.add(padded, one)?;
        }
        match pooling {
            Pooling::Average { include_pad } => {
                let divisor = if include_pad { padded } else { count };
                acc = cg.fdiv(acc, cg.itof(cg.imax(divisor, cg.c(1))?)?)?;
            }
            Pooling::Max { indices: Some(_) } => {
                cg.store(req.outputs[1].dtype, cg.buffer(1), idx, Val::I(arg))?;
            }
            Pooling::Max { indices: None } => {}
            Pooling::Lp { p: 1 } => {}
            Pooling::Lp { p: 2 } => acc = cg.fcall1("llvm.sqrt.f32", acc)?,
            Pooling::Lp { p } => acc = cg.pow(acc, cg.f(1.0 / p as f64))?,
        }
        cg.store(out.dtype, cg.buffer(0), idx, Val::F(acc))
    })
}
