//! Row-wise ops along one axis that a block reduction does not fit: ArgMax and ArgMin (the
//! index of the extreme), Hardmax, CumSum and CumProd (running totals) and LpNormalization.
//! Each `(outer, inner)` row belongs to one thread, which walks the axis.
//!
//! Reference: the CPU executor's ops of the same names.

use crate::cg::{Cg, Gen, Val};
use crate::{resolve_axis, Family, Generated, KernelError, Launch, Request};
use inkwell::context::Context;
use inkwell::values::{BasicValueEnum, IntValue};
use inkwell::{FloatPredicate, IntPredicate};
use sparkc_ir::{Dim, Op};

/// Threads per block.
const BLOCK: u32 = 256;

/// True for the ops this family generates.
pub fn handles(op: &Op) -> bool {
    matches!(
        op,
        Op::ArgMax { .. }
            | Op::ArgMin { .. }
            | Op::Hardmax { .. }
            | Op::CumSum { .. }
            | Op::CumProd { .. }
            | Op::LpNormalization { .. }
    )
}

/// A tensor viewed as rows along one axis: `[outer, len, inner]`.
struct Rows<'ctx> {
    len: IntValue<'ctx>,
    inner: IntValue<'ctx>,
    count: IntValue<'ctx>,
}

impl<'ctx> Rows<'ctx> {
    fn new(cg: &Cg<'ctx>, shape: &[Dim], axis: usize) -> Gen<Rows<'ctx>> {
        let outer = cg.product(&shape[..axis])?;
        let len = cg.dim(&shape[axis])?;
        let inner = cg.product(&shape[axis + 1..])?;
        Ok(Rows {
            len,
            inner,
            count: cg.mul(outer, inner)?,
        })
    }

    /// The flat index of element `k` of row `row`.
    fn at(&self, cg: &Cg<'ctx>, row: IntValue<'ctx>, k: IntValue<'ctx>) -> Gen<IntValue<'ctx>> {
        let (o, i) = (cg.div(row, self.inner)?, cg.rem(row, self.inner)?);
        cg.add(cg.mul(cg.add(cg.mul(o, self.len)?, k)?, self.inner)?, i)
    }
}

/// `a > b` (or `a < b`), on floats or integers.
fn beats<'ctx>(cg: &Cg<'ctx>, max: bool, a: Val<'ctx>, b: Val<'ctx>) -> Gen<IntValue<'ctx>> {
    match (a, b) {
        (Val::I(a), Val::I(b)) => cg.icmp(
            if max {
                IntPredicate::SGT
            } else {
                IntPredicate::SLT
            },
            a,
            b,
        ),
        (a, b) => cg.fcmp(
            if max {
                FloatPredicate::OGT
            } else {
                FloatPredicate::OLT
            },
            a.float(cg)?,
            b.float(cg)?,
        ),
    }
}

fn equal<'ctx>(cg: &Cg<'ctx>, a: Val<'ctx>, b: Val<'ctx>) -> Gen<IntValue<'ctx>> {
    match (a, b) {
        (Val::I(a), Val::I(b)) => cg.icmp(IntPredicate::EQ, a, b),
        (a, b) => cg.fcmp(FloatPredicate::OEQ, a.float(cg)?, b.float(cg)?),
    }
}

/// The index of the first (or, with `last`, the last) extreme of a row.
fn extreme<'ctx>(
    cg: &mut Cg<'ctx>,
    req: &Request,
    rows: &Rows<'ctx>,
    row: IntValue<'ctx>,
    (max, last): (bool, bool),
) -> Gen<IntValue<'ctx>> {
    let x = req.input(0)?;
    let load = |cg: &Cg<'ctx>, k: IntValue<'ctx>| -> Gen<Val<'ctx>> {
        cg.load(x.dtype, cg.buffer(req.input_param(0)), rows.at(cg, row, k)?)
    };
    let first = load(cg, cg.c(0))?;
    let init = vec![first.basic(), cg.c(0).into()];
    let state = cg.fold_range(cg.c(1), rows.len, cg.c(1), init, |cg, k, st| {
        let (best, at) = (Val::of(st[0]), st[1].into_int_value());
        let v = load(cg, k)?;
        let mut take = beats(cg, max, v, best)?;
        if last {
            take = cg.b.build_or(take, equal(cg, v, best)?, "")?;
        }
        Ok(vec![
            cg.select(take, v.basic(), best.basic())?,
            cg.select(take, k, at)?,
        ])
    })?;
    Ok(state[1].into_int_value())
}

/// Generates the kernel of one of this family's ops.
pub fn generate<'ctx>(cx: &'ctx Context, req: &Request) -> Gen<Generated<'ctx>> {
    let mut cg = req.begin(cx, BLOCK);
    let x = req.input(0)?.clone();
    let out = req.outputs[0].clone();
    let rank = x.shape.len();
    let axis = match req.op {
        Op::ArgMax { axis, .. }
        | Op::ArgMin { axis, .. }
        | Op::Hardmax { axis }
        | Op::LpNormalization { axis, .. } => *axis,
        Op::CumSum { .. } | Op::CumProd { .. } => *req
            .known_ints(1)?
            .first()
            .ok_or_else(|| KernelError::Unsupported("the scan axis input is empty".into()))?,
        other => {
            return Err(KernelError::Unsupported(format!(
                "{} is not a row-wise op",
                other.name()
            )))
        }
    };
    let axis = resolve_axis(axis, rank)?;
    let rows = Rows::new(&cg, &x.shape, axis)?;
    let input = req.input_param(0);
    let variant = match req.op {
        Op::ArgMax {
            select_last_index, ..
        }
        | Op::ArgMin {
            select_last_index, ..
        } => {
            let max = matches!(req.op, Op::ArgMax { .. });
            cg.for_each_thread_item(cg.c(0), rows.count, |cg, row| {
                let best = extreme(cg, req, &rows, row, (max, *select_last_index))?;
                cg.store(out.dtype, cg.buffer(0), row, Val::I(best))
            })?;
            "index of the extreme, row per thread"
        }
        Op::Hardmax { .. } => {
            cg.for_each_thread_item(cg.c(0), rows.count, |cg, row| {
                let best = extreme(cg, req, &rows, row, (true, false))?;
                cg.for_range(cg.c(0), rows.len, cg.c(1), |cg, k| {
                    let hit = cg.icmp(IntPredicate::EQ, k, best)?;
                    let one = cg.fsel(hit, cg.f(1.0), cg.f(0.0))?;
                    cg.store(out.dtype, cg.buffer(0), rows.at(cg, row, k)?, Val::F(one))
                })
            })?;
            "one-hot of the maximum, row per thread"
        }
        Op::CumSum { exclusive, reverse } | Op::CumProd { exclusive, reverse } => {
            let product = matches!(req.op, Op::CumProd { .. });
            let (exclusive, reverse) = (*exclusive, *reverse);
            let integer = !x.dtype.is_float();
            cg.for_each_thread_item(cg.c(0), rows.count, |cg, row| {
                let identity = if product { 1 } else { 0 };
                let init: BasicValueEnum = if integer {
                    cg.c(identity).into()
                } else {
                    cg.f(identity as f64).into()
                };
                cg.fold_range(cg.c(0), rows.len, cg.c(1), vec![init], |cg, step, st| {
                    let k = if reverse {
                        cg.sub(cg.sub(rows.len, cg.c(1))?, step)?
                    } else {
                        step
                    };
                    let at = rows.at(cg, row, k)?;
                    let v = cg.load(x.dtype, cg.buffer(input), at)?;
                    let acc = Val::of(st[0]);
                    let next = match (acc, v) {
                        (Val::I(a), v) => {
                            let b = match v {
                                Val::I(b) => b,
                                Val::F(f) => cg.ftoi(f)?,
                            };
                            Val::I(if product {
                                cg.mul(a, b)?
                            } else {
                                cg.add(a, b)?
                            })
                        }
                        (a, v) => {
                            let (a, b) = (a.float(cg)?, v.float(cg)?);
                            Val::F(if product {
                                cg.fmul(a, b)?
                            } else {
                                cg.fadd(a, b)?
                            })
                        }
                    };
                    let written = if exclusive { acc } else { next };
                    cg.store(out.dtype, cg.buffer(0), at, written)?;
                    Ok(vec![next.basic()])
                })?;
                Ok(())
            })?;
            "running total, row per thread"
        }
        Op::LpNormalization { p, .. } => {
            let p = *p;
            if p != 1 && p != 2 {
                return Err(KernelError::Unsupported(format!(
                    "LpNormalization with p = {p}"
                )));
            }
            cg.for_each_thread_item(cg.c(0), rows.count, |cg, row| {
                let init = vec![cg.f(0.0).into()];
                let sum = cg.fold_range(cg.c(0), rows.len, cg.c(1), init, |cg, k, st| {
                    let v = cg
                        .load(x.dtype, cg.buffer(input), rows.at(cg, row, k)?)?
                        .float(cg)?;
                    let term = if p == 1 {
                        cg.fcall1("llvm.fabs.f32", v)?
                    } else {
                        cg.fmul(v, v)?
                    };
                    Ok(vec![cg.fadd(st[0].into_float_value(), term)?.into()])
                })?;
                let sum = sum[0].into_float_value();
                let norm = if p == 1 {
                    sum
                } else {
                    cg.fcall1("llvm.sqrt.f32", sum)?
                };
                let zero = cg.fcmp(FloatPredicate::OEQ, norm, cg.f(0.0))?;
                let divisor = cg.fsel(zero, cg.f(1.0), norm)?;
                cg.for_range(cg.c(0), rows.len, cg.c(1), |cg, k| {
                    let at = rows.at(cg, row, k)?;
                    let v = cg.load(x.dtype, cg.buffer(input), at)?.float(cg)?;
                    cg.store(out.dtype, cg.buffer(0), at, Val::F(cg.fdiv(v, divisor)?))
                })
            })?;
            "unit norm, row per thread"
        }
        _ => unreachable!("the axis was found for these ops"),
    };
    let count = crate::product(&x.shape).floor_div(&x.shape[axis]);
    let launch = Launch {
        grid: count.ceil_div(&Dim::known(i64::from(BLOCK))),
        block: BLOCK,
        shared_bytes: 0,
        dynamic_shared_bytes: 0,
    };
    let info = req.describe(Family::Reduction, variant, vec![req.op.name()], launch);
    Ok(Generated {
        info,
        module: cg.finish()?,
    })
}
