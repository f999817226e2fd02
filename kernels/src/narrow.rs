//! The element types narrower than a byte or coded in one: FP8 (E4M3FN, E5M2, their FNUZ forms
//! and E8M0), FP4 E2M1 and the 4- and 2-bit integers packed several to a byte, low bits first.
//! Codes decode and encode in registers with the rounding and saturation of
//! `sparkc_ir::formats` (the CPU executor's), which the host tests compare them with code by
//! code.

use crate::cg::{Cg, Gen, Val};
use crate::KernelError;
use inkwell::values::{FloatValue, IntValue, PointerValue};
use inkwell::{FloatPredicate, IntPredicate};
use sparkc_ir::formats::{decode, encode, max_finite, Rounding};
use sparkc_ir::DType;

/// A constant table of the f32 value of every code of the minifloat `dtype`, as the CPU
/// executor decodes them (`sparkc_ir::formats::decode`), for kernels that decode by lookup.
pub(crate) fn value_table<'ctx>(cg: &mut Cg<'ctx>, dtype: DType) -> PointerValue<'ctx> {
    let values: Vec<f32> = (0..1u16 << dtype.bits())
        .map(|c| decode(dtype, c as u8) as f32)
        .collect();
    cg.f32_table(&values)
}

/// True for the float types coded in at most a byte (decoded, not converted by LLVM).
pub(crate) fn is_minifloat(dtype: DType) -> bool {
    dtype.is_float() && dtype.bits() <= 8
}

/// True for the types packed several elements to a byte.
pub(crate) fn is_packed(dtype: DType) -> bool {
    dtype.bits() < 8
}

/// Elements of `dtype` per byte: 2 for 4-bit types, 4 for 2-bit ones, else 1.
pub(crate) fn per_byte(dtype: DType) -> i64 {
    if is_packed(dtype) {
        (8 / dtype.bits()) as i64
    } else {
        1
    }
}

/// Mantissa and exponent bits of an FP8 or FP4 type with a sign (every minifloat but E8M0).
fn fields(dtype: DType) -> Gen<(i64, i64)> {
    Ok(match dtype {
        DType::F8E4M3FN | DType::F8E4M3FNUZ => (3, 4),
        DType::F8E5M2 | DType::F8E5M2FNUZ => (2, 5),
        DType::F4E2M1 => (1, 2),
        other => {
            return Err(KernelError::Unsupported(format!(
                "{other} is not a signed minifloat"
            )))
        }
    })
}

/// The `f32` whose exponent field is `exponent + 127` and whose fraction is zero: `2^exponent`
/// for a normal exponent.
fn power_of_two<'ctx>(cg: &Cg<'ctx>, exponent: IntValue<'ctx>) -> Gen<FloatValue<'ctx>> {
    let bits =
        cg.b.build_left_shift(cg.add(exponent, cg.c(127))?, cg.c(23), "")?;
    let bits = cg.b.build_int_truncate(bits, cg.cx.i32_type(), "")?;
    Ok(cg.b.build_bit_cast(bits, cg.f32t(), "")?.into_float_value())
}

/// The value of minifloat code `code` (an i64 below `2^bits`), as `f32`.
pub(crate) fn decode_minifloat<'ctx>(
    cg: &Cg<'ctx>,
    dtype: DType,
    code: IntValue<'ctx>,
) -> Gen<FloatValue<'ctx>> {
    if dtype == DType::F8E8M0 {
        return decode_e8m0(cg, code);
    }
    let (mantissa_bits, exponent_bits) = fields(dtype)?;
    // The lowest normal code is 2^(1 - bias).
    let bias = 1 - decode(dtype, 1 << mantissa_bits).log2().round() as i64;
    let exponent = cg.b.build_and(
        cg.b.build_right_shift(code, cg.c(mantissa_bits), false, "")?,
        cg.c((1 << exponent_bits) - 1),
        "",
    )?;
    let mantissa = cg.b.build_and(code, cg.c((1 << mantissa_bits) - 1), "")?;
    let normal = cg.icmp(IntPredicate::NE, exponent, cg.c(0))?;
    let implicit = cg.select(normal, cg.c(1 << mantissa_bits), cg.c(0))?;
    let significand = cg.add(mantissa, implicit.into_int_value())?;
    // Subnormals share the lowest normal binade's quantum.
    let quantum = cg.sub(cg.imax(exponent, cg.c(1))?, cg.c(bias + mantissa_bits))?;
    let magnitude = cg.fmul(cg.itof(significand)?, power_of_two(cg, quantum)?)?;
    let sign = cg.b.build_and(
        cg.b.build_right_shift(code, cg.c(exponent_bits + mantissa_bits), false, "")?,
        cg.c(1),
        "",
    )?;
    let negative = cg.icmp(IntPredicate::NE, sign, cg.c(0))?;
    let value = cg.fsel(negative, cg.fneg(magnitude)?, magnitude)?;
    let nan = cg.f(f64::NAN);
    Ok(match dtype {
        DType::F8E5M2 => {
            let top = cg.icmp(IntPredicate::EQ, exponent, cg.c((1 << exponent_bits) - 1))?;
            let infinite = cg.fsel(negative, cg.f(f64::NEG_INFINITY), cg.f(f64::INFINITY))?;
            let whole = cg.icmp(IntPredicate::EQ, mantissa, cg.c(0))?;
            let special = cg.fsel(whole, infinite, nan)?;
            cg.fsel(top, special, value)?
        }
        DType::F8E4M3FN => {
            let low = cg.b.build_and(code, cg.c(0x7F), "")?;
            let is_nan = cg.icmp(IntPredicate::EQ, low, cg.c(0x7F))?;
            cg.fsel(is_nan, nan, value)?
        }
        DType::F8E4M3FNUZ | DType::F8E5M2FNUZ => {
            let is_nan = cg.icmp(IntPredicate::EQ, code, cg.c(0x80))?;
            cg.fsel(is_nan, nan, value)?
        }
        _ => value,
    })
}

/// The value of an E8M0 code: `2^(code - 127)`, NaN for 0xFF.
fn decode_e8m0<'ctx>(cg: &Cg<'ctx>, code: IntValue<'ctx>) -> Gen<FloatValue<'ctx>> {
    let i32t = cg.cx.i32_type();
    // Code 0 is 2^-127, a subnormal f32: the fraction's top bit.
    let zero = cg.icmp(IntPredicate::EQ, code, cg.c(0))?;
    let bits = cg.b.build_left_shift(code, cg.c(23), "")?;
    let bits = cg.select(zero, cg.c(0x40_0000), bits)?.into_int_value();
    let bits = cg.b.build_int_truncate(bits, i32t, "")?;
    let value = cg.b.build_bit_cast(bits, cg.f32t(), "")?.into_float_value();
    let is_nan = cg.icmp(IntPredicate::EQ, code, cg.c(0xFF))?;
    cg.fsel(is_nan, cg.f(f64::NAN), value)
}

/// The code nearest `x` in the signed minifloat `dtype` (as `formats::encode` rounds), as i64.
pub(crate) fn encode_minifloat<'ctx>(
    cg: &Cg<'ctx>,
    dtype: DType,
    x: FloatValue<'ctx>,
    saturate: bool,
) -> Gen<IntValue<'ctx>> {
    let (mantissa_bits, exponent_bits) = fields(dtype)?;
    let top = max_finite(dtype).unwrap_or(1.0);
    // The codes the reference gives the special cases, read back from it.
    let code = |v: f64, sat: bool| cg.c(i64::from(encode(dtype, v, sat, Rounding::Nearest)));
    let max_code = code(top, true);
    let sign_bit = cg.c(1 << (exponent_bits + mantissa_bits));
    // The smallest normal exponent: the binade of the lowest code with a nonzero exponent.
    let min_exponent = decode(dtype, 1 << mantissa_bits).log2().round() as i64;
    let i32t = cg.cx.i32_type();
    let bits = cg.b.build_bit_cast(x, i32t, "")?.into_int_value();
    let bits = cg.b.build_int_z_extend(bits, cg.i64t(), "")?;
    let negative = cg.b.build_right_shift(bits, cg.c(31), false, "")?;
    let magnitude = cg.fcall1("llvm.fabs.f32", x)?;
    let field = cg.b.build_and(
        cg.b.build_right_shift(bits, cg.c(23), false, "")?,
        cg.c(0xFF),
        "",
    )?;
    let binade = cg.imax(cg.sub(field, cg.c(127))?, cg.c(min_exponent))?;
    // quantum = 2^(binade - m) (always a normal f32 here).
    let quantum = power_of_two(cg, cg.sub(binade, cg.c(mantissa_bits))?)?;
    let limit = cg.f(f64::from(2u32 << mantissa_bits) + 1.0);
    let steps = cg.fmin(
        cg.fcall1("llvm.rint.f32", cg.fdiv(magnitude, quantum)?)?,
        limit,
    )?;
    let steps = cg.ftoi(steps)?;
    let magnitude_code = cg.add(
        cg.b.build_left_shift(cg.sub(binade, cg.c(min_exponent))?, cg.c(mantissa_bits), "")?,
        steps,
    )?;
    let infinite = cg.fcmp(FloatPredicate::OEQ, magnitude, cg.f(f64::INFINITY))?;
    let overflow = cg.b.build_or(
        infinite,
        cg.icmp(IntPredicate::SGT, magnitude_code, max_code)?,
        "",
    )?;
    let sign = cg.mul(negative, sign_bit)?;
    let saturated = cg.b.build_or(sign, max_code, "")?;
    let overflowed = match (saturate, dtype) {
        (true, _) | (_, DType::F4E2M1) => saturated,
        (false, DType::F8E4M3FNUZ | DType::F8E5M2FNUZ) => code(f64::NAN, false),
        (false, _) => cg.b.build_or(sign, code(f64::INFINITY, false), "")?,
    };
    let mut result = cg.b.build_or(sign, magnitude_code, "")?;
    if matches!(dtype, DType::F8E4M3FNUZ | DType::F8E5M2FNUZ) {
        // No negative zero: -0 is the NaN code.
        let zero = cg.icmp(IntPredicate::EQ, magnitude_code, cg.c(0))?;
        result = cg.select(zero, cg.c(0), result)?.into_int_value();
    }
    let result = cg.select(overflow, overflowed, result)?.into_int_value();
    let nan = cg.fcmp(FloatPredicate::UNO, x, x)?;
    Ok(cg
        .select(nan, code(f64::NAN, saturate), result)?
        .into_int_value())
}

/// The E8M0 code of `x` (`2^(code - 127)`), rounded as `rounding` says: 0 for zero, 0xFF for
/// a negative, infinite or NaN `x`, as `formats::encode` gives them.
pub(crate) fn encode_e8m0<'ctx>(
    cg: &Cg<'ctx>,
    x: FloatValue<'ctx>,
    rounding: Rounding,
) -> Gen<IntValue<'ctx>> {
    let i32t = cg.cx.i32_type();
    // A subnormal x is scaled by 2^64 (exactly) and its exponent lowered to match.
    let subnormal = cg.fcmp(FloatPredicate::OLT, x, cg.f(f64::from(f32::MIN_POSITIVE)))?;
    let scaled = cg.fsel(subnormal, cg.fmul(x, cg.f(2f64.powi(64)))?, x)?;
    let bits = cg.b.build_bit_cast(scaled, i32t, "")?.into_int_value();
    let bits = cg.b.build_int_z_extend(bits, cg.i64t(), "")?;
    let field = cg.b.build_right_shift(bits, cg.c(23), false, "")?;
    let shift = cg.select(subnormal, cg.c(64), cg.c(0))?.into_int_value();
    let floor = cg.sub(cg.sub(field, cg.c(127))?, shift)?;
    let fraction = cg.b.build_and(bits, cg.c(0x7F_FFFF), "")?;
    let up = match rounding {
        Rounding::Down => None,
        Rounding::Up => Some(cg.icmp(IntPredicate::NE, fraction, cg.c(0))?),
        // Past 1.5 times the binade's floor (ties up): nearer the next power.
        Rounding::Nearest => Some(cg.icmp(IntPredicate::SGE, fraction, cg.c(0x40_0000))?),
    };
    let exponent = match up {
        Some(up) => cg.add(floor, cg.b.build_int_z_extend(up, cg.i64t(), "")?)?,
        None => floor,
    };
    let code = cg.imin(cg.imax(cg.add(exponent, cg.c(127))?, cg.c(0))?, cg.c(254))?;
    let positive = cg.fcmp(FloatPredicate::OGT, x, cg.f(0.0))?;
    let finite = cg.fcmp(FloatPredicate::OLT, x, cg.f(f64::INFINITY))?;
    let valid = cg.b.build_and(positive, finite, "")?;
    let code = cg.select(valid, code, cg.c(0xFF))?.into_int_value();
    let zero = cg.fcmp(FloatPredicate::OEQ, x, cg.f(0.0))?;
    Ok(cg.select(zero, cg.c(0), code)?.into_int_value())
}

/// The code of element `index` of a buffer of sub-byte `dtype`, as i64.
pub(crate) fn load_packed_code<'ctx>(
    cg: &Cg<'ctx>,
    dtype: DType,
    base: PointerValue<'ctx>,
    index: IntValue<'ctx>,
) -> Gen<IntValue<'ctx>> {
    let per = per_byte(dtype);
    let bits = dtype.bits() as i64;
    let i8t = cg.cx.i8_type();
    let byte = cg.load_raw(i8t.into(), base, cg.div(index, cg.c(per))?)?;
    let byte =
        cg.b.build_int_z_extend(byte.into_int_value(), cg.i64t(), "")?;
    let shift = cg.mul(cg.rem(index, cg.c(per))?, cg.c(bits))?;
    let code = cg.b.build_right_shift(byte, shift, false, "")?;
    Ok(cg.b.build_and(code, cg.c((1 << bits) - 1), "")?)
}

/// The compute value of a code of `dtype` (a minifloat or a sub-byte integer): floats as
/// `f32`, integers sign- or zero-extended to i64.
pub(crate) fn widen_code<'ctx>(
    cg: &Cg<'ctx>,
    dtype: DType,
    code: IntValue<'ctx>,
) -> Gen<Val<'ctx>> {
    if is_minifloat(dtype) {
        return Ok(Val::F(decode_minifloat(cg, dtype, code)?));
    }
    Ok(Val::I(match dtype {
        DType::I4 | DType::I2 => {
            let unused = cg.c(64 - dtype.bits() as i64);
            let high = cg.b.build_left_shift(code, unused, "")?;
            cg.b.build_right_shift(high, unused, true, "")?
        }
        _ => code,
    }))
}

/// A compute value converted to sub-byte integer `dtype` as ONNX's `Cast` converts (like
/// numpy: truncated toward zero and clamped to the i64 range, then its low bits; NaN and
/// infinities give 0), as the compute value the code stands for.
pub(crate) fn wrap_packed_int<'ctx>(
    cg: &Cg<'ctx>,
    dtype: DType,
    value: Val<'ctx>,
) -> Gen<IntValue<'ctx>> {
    let code = packed_int_code(cg, dtype, value)?;
    match widen_code(cg, dtype, code)? {
        Val::I(i) => Ok(i),
        Val::F(_) => Err(KernelError::Unsupported(format!(
            "{dtype} is not an integer type"
        ))),
    }
}

/// The low-bit code of a sub-byte integer `dtype` for a compute value (see
/// [`wrap_packed_int`]).
fn packed_int_code<'ctx>(cg: &Cg<'ctx>, dtype: DType, value: Val<'ctx>) -> Gen<IntValue<'ctx>> {
    let whole = match value {
        Val::I(i) => i,
        Val::F(f) => {
            let finite = cg.fcmp(
                FloatPredicate::OLT,
                cg.fcall1("llvm.fabs.f32", f)?,
                cg.f(f64::INFINITY),
            )?;
            let safe = cg.fsel(finite, f, cg.f(0.0))?;
            // Beyond the i64 range, the nearest i64 (as the CPU executor's conversion).
            cg.call("llvm.fptosi.sat.i64.f32", cg.i64t().into(), &[safe.into()])?
                .into_int_value()
        }
    };
    Ok(cg.b.build_and(whole, cg.c((1 << dtype.bits()) - 1), "")?)
}

/// The code `value` is stored as in `dtype` (a minifloat or a sub-byte integer). The value
/// is one the type holds (a `Cast` rounded it), so it is encoded exactly: no saturation, the
/// nearest E8M0 power.
pub(crate) fn store_code<'ctx>(
    cg: &Cg<'ctx>,
    dtype: DType,
    value: Val<'ctx>,
) -> Gen<IntValue<'ctx>> {
    match dtype {
        DType::F8E8M0 => encode_e8m0(cg, value.float(cg)?, Rounding::Nearest),
        d if is_minifloat(d) => encode_minifloat(cg, d, value.float(cg)?, false),
        d => packed_int_code(cg, d, value),
    }
}

/// `value` rounded to minifloat `dtype` as ONNX's `Cast` rounds it (saturating to the largest
/// finite value or not; E8M0 by `rounding`), as the `f32` the code stands for.
pub(crate) fn round_to_minifloat<'ctx>(
    cg: &Cg<'ctx>,
    dtype: DType,
    value: FloatValue<'ctx>,
    saturate: bool,
    rounding: Rounding,
) -> Gen<FloatValue<'ctx>> {
    let code = match dtype {
        DType::F8E8M0 => encode_e8m0(cg, value, rounding)?,
        d => encode_minifloat(cg, d, value, saturate)?,
    };
    decode_minifloat(cg, dtype, code)
}

/// Writes the `n` elements of a buffer of sub-byte `dtype` at `out`, one byte a thread (so no
/// two threads write the same byte): element `i`'s code is `code_at(i)`, the unused high
/// codes of a last, partial byte zero.
pub(crate) fn store_packed<'ctx>(
    cg: &mut Cg<'ctx>,
    dtype: DType,
    out: PointerValue<'ctx>,
    n: IntValue<'ctx>,
    mut code_at: impl FnMut(&mut Cg<'ctx>, IntValue<'ctx>) -> Gen<IntValue<'ctx>>,
) -> Gen<()> {
    let per = per_byte(dtype);
    let bits = dtype.bits() as i64;
    let bytes = cg.div(cg.add(n, cg.c(per - 1))?, cg.c(per))?;
    cg.for_each_thread_item(cg.c(0), bytes, |cg, b| {
        let first = cg.mul(b, cg.c(per))?;
        let last = cg.sub(n, cg.c(1))?;
        let mut byte = cg.c(0);
        for k in 0..per {
            let i = cg.add(first, cg.c(k))?;
            let inside = cg.icmp(IntPredicate::SLT, i, n)?;
            // Past the end the last element is computed again (in bounds) and dropped.
            let code = code_at(cg, cg.imin(i, last)?)?;
            let code = cg.b.build_and(code, cg.c((1 << bits) - 1), "")?;
            let code = cg.select(inside, code, cg.c(0))?.into_int_value();
            let code = cg.b.build_left_shift(code, cg.c(k * bits), "")?;
            byte = cg.b.build_or(byte, code, "")?;
        }
        let i8t = cg.cx.i8_type();
        let byte = cg.b.build_int_truncate(byte, i8t, "")?;
        cg.store_raw(i8t.into(), out, b, byte.into())
    })
}
