//! Scalar code for one elementwise op, shared by every family that applies a fused body
//! (elementwise kernels, GEMM and convolution epilogues, normalization consumers).

use crate::cg::{Cg, Gen, Val};
use crate::narrow;
use crate::KernelError;
use inkwell::values::FloatValue;
use inkwell::{FloatPredicate, IntPredicate};
use sparkc_ir::formats::Rounding;
use sparkc_ir::op::{Binary, GeluApproximation, Unary, Variadic};
use sparkc_ir::{BodyNode, DType, Op, Operand};

/// Evaluates a fused body on scalars; `input(i)` gives the fused node's `i`-th input.
pub fn eval_body<'ctx>(
    cg: &Cg<'ctx>,
    body: &[BodyNode],
    mut input: impl FnMut(usize) -> Gen<Val<'ctx>>,
) -> Gen<Val<'ctx>> {
    let mut values: Vec<Val<'ctx>> = Vec::with_capacity(body.len());
    for node in body {
        let mut args = Vec::with_capacity(node.args.len());
        for arg in &node.args {
            args.push(match arg {
                None => None,
                Some(Operand::Input(i)) => Some(input(*i)?),
                Some(Operand::Node(j)) => Some(values[*j]),
            });
        }
        values.push(eval_op(cg, &node.op, &args)?);
    }
    values
        .pop()
        .ok_or_else(|| KernelError::Unsupported("an empty fused body".into()))
}

/// True when [`eval_op`] generates code for `op`.
pub fn is_scalar_op(op: &Op) -> bool {
    matches!(
        op,
        Op::Unary(_)
            | Op::Binary(_)
            | Op::Clip
            | Op::Where
            | Op::Variadic(_)
            | Op::Cast { .. }
            | Op::QuantizeLinear {
                block_size: 0,
                output_dtype: Some(_),
                ..
            }
            | Op::DequantizeLinear { block_size: 0, .. }
    )
}

fn arg<'ctx>(args: &[Option<Val<'ctx>>], i: usize, op: &Op) -> Gen<Val<'ctx>> {
    args.get(i)
        .copied()
        .flatten()
        .ok_or_else(|| KernelError::Unsupported(format!("{} is missing operand {i}", op.name())))
}

/// Generates one op on scalars.
pub fn eval_op<'ctx>(cg: &Cg<'ctx>, op: &Op, args: &[Option<Val<'ctx>>]) -> Gen<Val<'ctx>> {
    match op {
        Op::Unary(u) => match arg(args, 0, op)? {
            Val::F(x) => match u {
                Unary::IsNaN | Unary::IsInf { .. } => classify(cg, u, x),
                _ => Ok(Val::F(unary_f32(cg, u, x)?)),
            },
            Val::I(x) => unary_int(cg, u, x),
        },
        Op::Binary(b) => binary(cg, b, arg(args, 0, op)?, arg(args, 1, op)?),
        Op::Clip => {
            let x = arg(args, 0, op)?;
            let mut v = x;
            if let Some(lo) = args.get(1).copied().flatten() {
                v = Val::F(cg.fcall2("llvm.maxnum.f32", v.float(cg)?, lo.float(cg)?)?);
            }
            if let Some(hi) = args.get(2).copied().flatten() {
                v = Val::F(cg.fcall2("llvm.minnum.f32", v.float(cg)?, hi.float(cg)?)?);
            }
            match x {
                Val::I(_) => Ok(Val::I(cg.ftoi(v.float(cg)?)?)),
                Val::F(_) => Ok(v),
            }
        }
        Op::Where => {
            let cond = truthy(cg, arg(args, 0, op)?)?;
            match (arg(args, 1, op)?, arg(args, 2, op)?) {
                (Val::I(a), Val::I(b)) => Ok(Val::I(cg.select(cond, a, b)?.into_int_value())),
                (a, b) => Ok(Val::F(cg.fsel(cond, a.float(cg)?, b.float(cg)?)?)),
            }
        }
        Op::Variadic(v) => {
            let present: Vec<Val> = args.iter().flatten().copied().collect();
            let mut acc = present
                .first()
                .copied()
                .ok_or_else(|| KernelError::Unsupported(format!("{} of nothing", op.name())))?
                .float(cg)?;
            for x in &present[1..] {
                let x = x.float(cg)?;
                acc = match v {
                    Variadic::Sum | Variadic::Mean => cg.fadd(acc, x)?,
                    Variadic::Max => cg.fmax(acc, x)?,
                    Variadic::Min => cg.fmin(acc, x)?,
                };
            }
            if *v == Variadic::Mean {
                acc = cg.fdiv(acc, cg.f(present.len() as f64))?;
            }
            Ok(Val::F(acc))
        }
        Op::Cast {
            to,
            saturate,
            round_mode,
        } => cast(cg, arg(args, 0, op)?, *to, *saturate, round_mode),
        Op::QuantizeLinear {
            block_size: 0,
            output_dtype: Some(dtype),
            ..
        } => {
            // Integer codes with one scale and zero point (a fused body holds only those).
            let q = cg.fdiv(arg(args, 0, op)?.float(cg)?, arg(args, 1, op)?.float(cg)?)?;
            let zero = match args.get(2).copied().flatten() {
                Some(z) => Some(z.float(cg)?),
                None => None,
            };
            Ok(Val::I(crate::quant::quantize_int(cg, *dtype, q, zero)?))
        }
        Op::DequantizeLinear { block_size: 0, .. } => match arg(args, 0, op)? {
            Val::I(code) => {
                let centered = match args.get(2).copied().flatten() {
                    Some(Val::I(z)) => cg.sub(code, z)?,
                    Some(Val::F(_)) => {
                        return Err(KernelError::Unsupported(
                            "an integer code with a float zero point".into(),
                        ))
                    }
                    None => code,
                };
                Ok(Val::F(
                    cg.fmul(cg.itof(centered)?, arg(args, 1, op)?.float(cg)?)?,
                ))
            }
            // FP8 and FP4 codes, already decoded (as is their zero point).
            Val::F(code) => {
                let centered = match args.get(2).copied().flatten() {
                    Some(z) => cg.fsub(code, z.float(cg)?)?,
                    None => code,
                };
                Ok(Val::F(cg.fmul(centered, arg(args, 1, op)?.float(cg)?)?))
            }
        },
        other => Err(KernelError::Unsupported(format!(
            "{} is not an elementwise op",
            other.name()
        ))),
    }
}

fn truthy<'ctx>(cg: &Cg<'ctx>, v: Val<'ctx>) -> Gen<inkwell::values::IntValue<'ctx>> {
    match v {
        Val::I(i) => cg.icmp(IntPredicate::NE, i, cg.c(0)),
        Val::F(f) => cg.fcmp(FloatPredicate::UNE, f, cg.f(0.0)),
    }
}

/// `v` converted to `to` as ONNX's `Cast` converts, as the compute value the stored result
/// holds: FP8 and FP4 targets round (and saturate, or not) as the CPU executor does, E8M0 by
/// `round_mode` (`up`, the default, `down` or `nearest`).
fn cast<'ctx>(
    cg: &Cg<'ctx>,
    v: Val<'ctx>,
    to: DType,
    saturate: bool,
    round_mode: &str,
) -> Gen<Val<'ctx>> {
    if to == DType::Bool {
        let t = truthy(cg, v)?;
        return Ok(Val::I(cg.b.build_int_z_extend(t, cg.i64t(), "")?));
    }
    if to.is_float() {
        let f = v.float(cg)?;
        // Round through the narrower type so later ops see what a stored value would hold.
        let f = match to {
            DType::F16 | DType::BF16 => {
                let stored = cg.narrow(to, Val::F(f))?;
                cg.widen(to, stored)?.float(cg)?
            }
            d if narrow::is_minifloat(d) => {
                let rounding = match round_mode {
                    "down" => Rounding::Down,
                    "nearest" => Rounding::Nearest,
                    _ => Rounding::Up,
                };
                narrow::round_to_minifloat(cg, d, f, saturate, rounding)?
            }
            _ => f,
        };
        return Ok(Val::F(f));
    }
    if narrow::is_packed(to) {
        return Ok(Val::I(narrow::wrap_packed_int(cg, to, v)?));
    }
    let wide = match v {
        Val::F(f) => cg.ftoi_as(to, f)?,
        Val::I(i) => i,
    };
    // Wrap to the target width as a store would.
    let ty = cg.storage_type(to)?;
    let narrow =
        cg.b.build_int_truncate_or_bit_cast(wide, ty.into_int_type(), "")?;
    Ok(Val::I(
        if matches!(to, DType::I8 | DType::I16 | DType::I32 | DType::I64) {
            cg.b.build_int_s_extend_or_bit_cast(narrow, cg.i64t(), "")?
        } else {
            cg.b.build_int_z_extend_or_bit_cast(narrow, cg.i64t(), "")?
        },
    ))
}

/// IsNaN and IsInf: a float's class as a bool.
fn classify<'ctx>(cg: &Cg<'ctx>, u: &Unary, x: FloatValue<'ctx>) -> Gen<Val<'ctx>> {
    let hit = match u {
        Unary::IsInf {
            detect_negative,
            detect_positive,
        } => {
            let pos = cg.fcmp(FloatPredicate::OEQ, x, cg.f(f64::INFINITY))?;
            let neg = cg.fcmp(FloatPredicate::OEQ, x, cg.f(f64::NEG_INFINITY))?;
            let never = cg.icmp(IntPredicate::NE, cg.c(0), cg.c(0))?;
            let pos = if *detect_positive { pos } else { never };
            let neg = if *detect_negative { neg } else { never };
            cg.b.build_or(pos, neg, "")?
        }
        _ => cg.fcmp(FloatPredicate::UNO, x, x)?,
    };
    Ok(Val::I(cg.b.build_int_z_extend(hit, cg.i64t(), "")?))
}

fn unary_int<'ctx>(cg: &Cg<'ctx>, u: &Unary, x: inkwell::values::IntValue<'ctx>) -> Gen<Val<'ctx>> {
    let zero = cg.c(0);
    Ok(Val::I(match u {
        Unary::Neg => cg.sub(zero, x)?,
        Unary::Abs => cg.imax(x, cg.sub(zero, x)?)?,
        Unary::Relu => cg.imax(x, zero)?,
        Unary::Identity => x,
        Unary::Not => {
            let z = cg.icmp(IntPredicate::EQ, x, zero)?;
            cg.b.build_int_z_extend(z, cg.i64t(), "")?
        }
        Unary::Sign => {
            let pos = cg.icmp(IntPredicate::SGT, x, zero)?;
            let neg = cg.icmp(IntPredicate::SLT, x, zero)?;
            let p = cg.b.build_int_z_extend(pos, cg.i64t(), "")?;
            let n = cg.b.build_int_z_extend(neg, cg.i64t(), "")?;
            cg.sub(p, n)?
        }
        // The store's truncation to the element width keeps the right bits.
        Unary::BitwiseNot => cg.b.build_xor(x, cg.c(-1), "")?,
        other => {
            return Err(KernelError::Unsupported(format!(
                "{other:?} on integers has no GPU kernel"
            )))
        }
    }))
}

fn unary_f32<'ctx>(cg: &Cg<'ctx>, u: &Unary, x: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
    let zero = cg.f(0.0);
    let one = cg.f(1.0);
    let positive = || cg.fcmp(FloatPredicate::OGT, x, zero);
    let clamp01 = |v: FloatValue<'ctx>| -> Gen<FloatValue<'ctx>> {
        cg.fcall2(
            "llvm.minnum.f32",
            cg.fcall2("llvm.maxnum.f32", v, zero)?,
            one,
        )
    };
    match u {
        Unary::Abs => cg.fcall1("llvm.fabs.f32", x),
        Unary::Ceil => cg.fcall1("llvm.ceil.f32", x),
        Unary::Floor => cg.fcall1("llvm.floor.f32", x),
        Unary::Round => cg.fcall1("llvm.roundeven.f32", x),
        Unary::Erf => cg.erf(x),
        Unary::Exp => cg.exp(x),
        Unary::Log => cg.log(x),
        Unary::Identity => Ok(x),
        Unary::Neg => cg.fneg(x),
        Unary::Reciprocal => cg.fdiv(one, x),
        Unary::Relu => cg.fsel(positive()?, x, zero),
        Unary::Sigmoid => cg.sigmoid(x),
        Unary::Sign => {
            let neg = cg.fcmp(FloatPredicate::OLT, x, zero)?;
            let v = cg.fsel(neg, cg.f(-1.0), x)?;
            cg.fsel(positive()?, one, v)
        }
        Unary::Sqrt => cg.fcall1("llvm.sqrt.f32", x),
        Unary::Tanh => cg.tanh(x),
        Unary::Softsign => cg.fdiv(x, cg.fadd(one, cg.fcall1("llvm.fabs.f32", x)?)?),
        Unary::Softplus => cg.softplus(x),
        Unary::Mish => cg.fmul(x, cg.tanh(cg.softplus(x)?)?),
        Unary::HardSwish => {
            let g = clamp01(cg.fma(x, cg.f(1.0 / 6.0), cg.f(0.5))?)?;
            cg.fmul(x, g)
        }
        Unary::Elu { alpha } => {
            let neg = cg.fmul(cg.f(*alpha as f64), cg.fsub(cg.exp(x)?, one)?)?;
            cg.fsel(positive()?, x, neg)
        }
        Unary::Celu { alpha } => {
            let a = cg.f(*alpha as f64);
            let neg = cg.fmul(a, cg.fsub(cg.exp(cg.fdiv(x, a)?)?, one)?)?;
            let neg = cg.fcall2("llvm.minnum.f32", neg, zero)?;
            cg.fadd(cg.fcall2("llvm.maxnum.f32", x, zero)?, neg)
        }
        Unary::Selu { alpha, gamma } => {
            let g = cg.f(*gamma as f64);
            let neg = cg.fmul(cg.fmul(g, cg.f(*alpha as f64))?, cg.fsub(cg.exp(x)?, one)?)?;
            cg.fsel(positive()?, cg.fmul(g, x)?, neg)
        }
        Unary::ThresholdedRelu { alpha } => {
            let above = cg.fcmp(FloatPredicate::OGT, x, cg.f(*alpha as f64))?;
            cg.fsel(above, x, zero)
        }
        Unary::Shrink { bias, lambd } => {
            let (b, l) = (cg.f(*bias as f64), cg.f(*lambd as f64));
            let below = cg.fcmp(FloatPredicate::OLT, x, cg.fneg(l)?)?;
            let above = cg.fcmp(FloatPredicate::OGT, x, l)?;
            let v = cg.fsel(above, cg.fsub(x, b)?, zero)?;
            cg.fsel(below, cg.fadd(x, b)?, v)
        }
        Unary::Swish { alpha } => cg.fmul(x, cg.sigmoid(cg.fmul(cg.f(*alpha as f64), x)?)?),
        Unary::LeakyRelu { alpha } => {
            let neg = cg.fcmp(FloatPredicate::OLT, x, zero)?;
            cg.fsel(neg, cg.fmul(cg.f(*alpha as f64), x)?, x)
        }
        Unary::HardSigmoid { alpha, beta } => {
            clamp01(cg.fma(cg.f(*alpha as f64), x, cg.f(*beta as f64))?)
        }
        Unary::Gelu { approximate } => {
            let half_x = cg.fmul(cg.f(0.5), x)?;
            let inner = match approximate {
                GeluApproximation::None => {
                    cg.erf(cg.fmul(x, cg.f(std::f64::consts::FRAC_1_SQRT_2))?)?
                }
                GeluApproximation::Tanh => {
                    let c = (2.0 / std::f64::consts::PI).sqrt();
                    let x3 = cg.fmul(cg.fmul(x, x)?, x)?;
                    let arg = cg.fmul(cg.f(c), cg.fma(cg.f(0.044715), x3, x)?)?;
                    cg.tanh(arg)?
                }
            };
            cg.fmul(half_x, cg.fadd(one, inner)?)
        }
        Unary::Sin => cg.sin(x),
        Unary::Cos => cg.cos(x),
        Unary::Tan => cg.tan(x),
        Unary::Asin => cg.asin(x),
        Unary::Acos => cg.acos(x),
        Unary::Atan => cg.atan(x),
        Unary::Sinh => cg.sinh(x),
        Unary::Cosh => cg.cosh(x),
        Unary::Asinh => cg.asinh(x),
        Unary::Acosh => cg.acosh(x),
        Unary::Atanh => cg.atanh(x),
        Unary::IsNaN | Unary::IsInf { .. } | Unary::Not | Unary::BitwiseNot => Err(
            KernelError::Unsupported(format!("{u:?} on floats has no GPU kernel")),
        ),
    }
}

fn binary<'ctx>(cg: &Cg<'ctx>, op: &Binary, a: Val<'ctx>, b: Val<'ctx>) -> Gen<Val<'ctx>> {
    if let (Val::I(x), Val::I(y)) = (a, b) {
        return binary_int(cg, op, x, y);
    }
    let (x, y) = (a.float(cg)?, b.float(cg)?);
    let flag = |p: FloatPredicate| -> Gen<Val<'ctx>> {
        let c = cg.fcmp(p, x, y)?;
        Ok(Val::I(cg.b.build_int_z_extend(c, cg.i64t(), "")?))
    };
    Ok(Val::F(match op {
        Binary::Add => cg.fadd(x, y)?,
        Binary::Sub => cg.fsub(x, y)?,
        Binary::Mul => cg.fmul(x, y)?,
        Binary::Div => cg.fdiv(x, y)?,
        Binary::Pow => cg.pow(x, y)?,
        Binary::PRelu => {
            let neg = cg.fcmp(FloatPredicate::OLT, x, cg.f(0.0))?;
            cg.fsel(neg, cg.fmul(x, y)?, x)?
        }
        Binary::Mod { fmod: true } => cg.b.build_float_rem(x, y, "")?,
        Binary::Mod { fmod: false } => {
            let r = cg.b.build_float_rem(x, y, "")?;
            let nonzero = cg.fcmp(FloatPredicate::ONE, r, cg.f(0.0))?;
            let r_neg = cg.fcmp(FloatPredicate::OLT, r, cg.f(0.0))?;
            let y_neg = cg.fcmp(FloatPredicate::OLT, y, cg.f(0.0))?;
            let differ = cg.b.build_xor(r_neg, y_neg, "")?;
            let fix = cg.and(nonzero, differ)?;
            cg.fsel(fix, cg.fadd(r, y)?, r)?
        }
        Binary::Equal => return flag(FloatPredicate::OEQ),
        Binary::Greater => return flag(FloatPredicate::OGT),
        Binary::GreaterOrEqual => return flag(FloatPredicate::OGE),
        Binary::Less => return flag(FloatPredicate::OLT),
        Binary::LessOrEqual => return flag(FloatPredicate::OLE),
        other => {
            return Err(KernelError::Unsupported(format!(
                "{other:?} on floats has no GPU kernel"
            )))
        }
    }))
}

fn binary_int<'ctx>(
    cg: &Cg<'ctx>,
    op: &Binary,
    x: inkwell::values::IntValue<'ctx>,
    y: inkwell::values::IntValue<'ctx>,
) -> Gen<Val<'ctx>> {
    let flag = |p: IntPredicate| -> Gen<Val<'ctx>> {
        let c = cg.icmp(p, x, y)?;
        Ok(Val::I(cg.b.build_int_z_extend(c, cg.i64t(), "")?))
    };
    Ok(Val::I(match op {
        Binary::Add => cg.add(x, y)?,
        Binary::Sub => cg.sub(x, y)?,
        Binary::Mul => cg.mul(x, y)?,
        Binary::Div => {
            // A zero divisor gives 0 rather than undefined behaviour.
            let zero = cg.icmp(IntPredicate::EQ, y, cg.c(0))?;
            let safe = cg.select(zero, cg.c(1), y)?.into_int_value();
            let q = cg.div(x, safe)?;
            cg.select(zero, cg.c(0), q)?.into_int_value()
        }
        Binary::And | Binary::BitwiseAnd => cg.b.build_and(x, y, "")?,
        Binary::Or | Binary::BitwiseOr => cg.b.build_or(x, y, "")?,
        Binary::Xor | Binary::BitwiseXor => cg.b.build_xor(x, y, "")?,
        Binary::BitShift { left } => {
            // Values are sign- (or zero-) extended to i64, so an arithmetic right shift is the
            // element type's, and shifting by its width or more (or by a negative amount)
            // leaves the sign's fill; the store's truncation drops what a left shift carries
            // out of the element.
            let wide = cg.icmp(IntPredicate::UGE, y, cg.c(64))?;
            if *left {
                let amount = cg.select(wide, cg.c(0), y)?.into_int_value();
                let shifted = cg.b.build_left_shift(x, amount, "")?;
                cg.select(wide, cg.c(0), shifted)?.into_int_value()
            } else {
                let amount = cg.select(wide, cg.c(63), y)?.into_int_value();
                cg.b.build_right_shift(x, amount, true, "")?
            }
        }
        Binary::Mod { fmod } => {
            // A zero divisor gives 0; the integer remainder takes the divisor's sign unless
            // `fmod`.
            let zero = cg.icmp(IntPredicate::EQ, y, cg.c(0))?;
            let safe = cg.select(zero, cg.c(1), y)?.into_int_value();
            let r = cg.rem(x, safe)?;
            let r = if *fmod {
                r
            } else {
                let nonzero = cg.icmp(IntPredicate::NE, r, cg.c(0))?;
                let differ = cg.b.build_xor(
                    cg.icmp(IntPredicate::SLT, r, cg.c(0))?,
                    cg.icmp(IntPredicate::SLT, safe, cg.c(0))?,
                    "",
                )?;
                let fix = cg.and(nonzero, differ)?;
                cg.select(fix, cg.add(r, safe)?, r)?.into_int_value()
            };
            cg.select(zero, cg.c(0), r)?.into_int_value()
        }
        Binary::Equal => return flag(IntPredicate::EQ),
        Binary::Greater => return flag(IntPredicate::SGT),
        Binary::GreaterOrEqual => return flag(IntPredicate::SGE),
        Binary::Less => return flag(IntPredicate::SLT),
        Binary::LessOrEqual => return flag(IntPredicate::SLE),
        other => {
            return Err(KernelError::Unsupported(format!(
                "{other:?} on integers has no GPU kernel"
            )))
        }
    }))
}
