//! `f32` math written out in LLVM IR (range reduction and polynomials), so that a kernel's
//! transcendental functions are the same instructions on every GPU target and on the host.
//!
//! Accuracy: `exp` and `log` within 2 ulp, `tanh` within 8 ulp, `erf` within 1.5e-7 absolute;
//! the tests compare against the CPU reference (Rust's `libm`).

use crate::cg::{Cg, Gen};
use inkwell::values::{FloatValue, IntValue};
use inkwell::{FloatPredicate, IntPredicate};

const LN2_HI: f64 = 0.693_145_751_953_125;
const LN2_LO: f64 = 1.428_606_765_330_187e-6;

impl<'ctx> Cg<'ctx> {
    fn bits(&self, x: FloatValue<'ctx>) -> Gen<IntValue<'ctx>> {
        Ok(self
            .b
            .build_bit_cast(x, self.cx.i32_type(), "")?
            .into_int_value())
    }

    fn float_of_bits(&self, x: IntValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        Ok(self
            .b
            .build_bit_cast(x, self.f32t(), "")?
            .into_float_value())
    }

    /// `2^k` for an integer `k` in `[-126, 127]`, given as `i32`.
    fn pow2i(&self, k: IntValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        let i32t = self.cx.i32_type();
        let biased = self.b.build_int_add(k, i32t.const_int(127, false), "")?;
        let shifted = self
            .b
            .build_left_shift(biased, i32t.const_int(23, false), "")?;
        self.float_of_bits(shifted)
    }

    fn poly(&self, x: FloatValue<'ctx>, coefs: &[f64]) -> Gen<FloatValue<'ctx>> {
        // Horner, highest coefficient first.
        let mut acc = self.f(coefs[0]);
        for &c in &coefs[1..] {
            acc = self.fma(acc, x, self.f(c))?;
        }
        Ok(acc)
    }

    /// `e^x`.
    pub fn exp(&self, x: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        let clamped = self.fmin(self.fmax(x, self.f(-104.0))?, self.f(89.0))?;
        let n = self.fcall1(
            "llvm.rint.f32",
            self.fmul(clamped, self.f(std::f64::consts::LOG2_E))?,
        )?;
        let r = self.fma(n, self.f(-LN2_HI), clamped)?;
        let r = self.fma(n, self.f(-LN2_LO), r)?;
        let p = self.poly(
            r,
            &[
                1.0 / 5040.0,
                1.0 / 720.0,
                1.0 / 120.0,
                1.0 / 24.0,
                1.0 / 6.0,
                0.5,
                1.0,
                1.0,
            ],
        )?;
        let i32t = self.cx.i32_type();
        let ni = self.b.build_float_to_signed_int(n, i32t, "")?;
        let n1 = self
            .b
            .build_right_shift(ni, i32t.const_int(1, false), true, "")?;
        let n2 = self.b.build_int_sub(ni, n1, "")?;
        let scaled = self.fmul(self.fmul(p, self.pow2i(n1)?)?, self.pow2i(n2)?)?;
        let nan = self.fcmp(FloatPredicate::UNO, x, x)?;
        self.fsel(nan, x, scaled)
    }

    /// Natural logarithm.
    pub fn log(&self, x: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        let i32t = self.cx.i32_type();
        let tiny = self.fcmp(FloatPredicate::OLT, x, self.f(1.175_494_350_822_287_5e-38))?;
        let scaled = self.fsel(tiny, self.fmul(x, self.f(8_388_608.0))?, x)?;
        let bias = self.b.build_select(
            tiny,
            i32t.const_int(150, false),
            i32t.const_int(127, false),
            "",
        )?;
        let bits = self.bits(scaled)?;
        let exp_bits = self
            .b
            .build_right_shift(bits, i32t.const_int(23, false), false, "")?;
        let exp_bits = self
            .b
            .build_and(exp_bits, i32t.const_int(0xff, false), "")?;
        let e = self.b.build_int_sub(exp_bits, bias.into_int_value(), "")?;
        let mant = self
            .b
            .build_and(bits, i32t.const_int(0x7f_ffff, false), "")?;
        let mant = self
            .b
            .build_or(mant, i32t.const_int(0x3f80_0000, false), "")?;
        let m = self.float_of_bits(mant)?;
        let big = self.fcmp(FloatPredicate::OGT, m, self.f(std::f64::consts::SQRT_2))?;
        let m = self.fsel(big, self.fmul(m, self.f(0.5))?, m)?;
        let e = self
            .b
            .build_int_add(e, self.b.build_int_z_extend(big, i32t, "")?, "")?;
        let f = self.fsub(m, self.f(1.0))?;
        let s = self.fdiv(f, self.fadd(f, self.f(2.0))?)?;
        let s2 = self.fmul(s, s)?;
        let p = self.poly(s2, &[2.0 / 9.0, 2.0 / 7.0, 2.0 / 5.0, 2.0 / 3.0, 2.0])?;
        let ln1p = self.fmul(s, p)?;
        let ef = self.b.build_signed_int_to_float(e, self.f32t(), "")?;
        let hi = self.fma(ef, self.f(LN2_HI), ln1p)?;
        let result = self.fma(ef, self.f(LN2_LO), hi)?;
        // Special values: log(0) = -inf, log(x<0) = NaN, log(inf) = inf, log(NaN) = NaN.
        let zero = self.fcmp(FloatPredicate::OEQ, x, self.f(0.0))?;
        let neg = self.fcmp(FloatPredicate::OLT, x, self.f(0.0))?;
        let inf = self.fcmp(FloatPredicate::OEQ, x, self.f(f64::INFINITY))?;
        let nan = self.fcmp(FloatPredicate::UNO, x, x)?;
        let result = self.fsel(zero, self.f(f64::NEG_INFINITY), result)?;
        let result = self.fsel(neg, self.f(f64::NAN), result)?;
        let result = self.fsel(inf, x, result)?;
        self.fsel(nan, x, result)
    }

    /// Hyperbolic tangent.
    pub fn tanh(&self, x: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        let a = self.fcall1("llvm.fabs.f32", x)?;
        let a2 = self.fmul(a, a)?;
        let series = self.fmul(
            a,
            self.poly(a2, &[-17.0 / 315.0, 2.0 / 15.0, -1.0 / 3.0, 1.0])?,
        )?;
        let e = self.exp(self.fmul(a, self.f(2.0))?)?;
        let big = self.fsub(
            self.f(1.0),
            self.fdiv(self.f(2.0), self.fadd(e, self.f(1.0))?)?,
        )?;
        let small = self.fcmp(FloatPredicate::OLT, a, self.f(0.125))?;
        let t = self.fsel(small, series, big)?;
        self.fcall2("llvm.copysign.f32", t, x)
    }

    /// The error function.
    pub fn erf(&self, x: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        let a = self.fcall1("llvm.fabs.f32", x)?;
        let a2 = self.fmul(a, a)?;
        // |x| < 0.5: Maclaurin series, 2/sqrt(pi) * (x - x^3/3 + x^5/10 - x^7/42 + x^9/216 - x^11/1320).
        let series = self.fmul(
            self.fmul(
                a,
                self.poly(
                    a2,
                    &[
                        -1.0 / 1320.0,
                        1.0 / 216.0,
                        -1.0 / 42.0,
                        0.1,
                        -1.0 / 3.0,
                        1.0,
                    ],
                )?,
            )?,
            self.f(std::f64::consts::FRAC_2_SQRT_PI),
        )?;
        // Otherwise Abramowitz and Stegun 7.1.26.
        let t = self.fdiv(self.f(1.0), self.fma(self.f(0.327_591_1), a, self.f(1.0))?)?;
        let p = self.poly(
            t,
            &[
                1.061_405_429,
                -1.453_152_027,
                1.421_413_741,
                -0.284_496_736,
                0.254_829_592,
                0.0,
            ],
        )?;
        let tail = self.fsub(self.f(1.0), self.fmul(p, self.exp(self.fneg(a2)?)?)?)?;
        let small = self.fcmp(FloatPredicate::OLT, a, self.f(0.5))?;
        let r = self.fsel(small, series, tail)?;
        self.fcall2("llvm.copysign.f32", r, x)
    }

    /// `1 / (1 + e^-x)`.
    pub fn sigmoid(&self, x: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        let e = self.exp(self.fneg(x)?)?;
        self.fdiv(self.f(1.0), self.fadd(self.f(1.0), e)?)
    }

    /// `log(1 + e^x)`, equal to `x` past 20.
    pub fn softplus(&self, x: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        let soft = self.log(self.fadd(self.f(1.0), self.exp(x)?)?)?;
        let big = self.fcmp(FloatPredicate::OGT, x, self.f(20.0))?;
        self.fsel(big, x, soft)
    }

    /// `x^y` as ONNX's Pow on floats: negative bases need integral exponents.
    pub fn pow(&self, x: FloatValue<'ctx>, y: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        let ax = self.fcall1("llvm.fabs.f32", x)?;
        let r = self.exp(self.fmul(y, self.log(ax)?)?)?;
        let yf = self.fcall1("llvm.floor.f32", y)?;
        let integral = self.fcmp(FloatPredicate::OEQ, yf, y)?;
        let yi = self.b.build_float_to_signed_int(y, self.i64t(), "")?;
        let odd = self.b.build_and(yi, self.c(1), "")?;
        let odd = self.icmp(IntPredicate::EQ, odd, self.c(1))?;
        let odd = self.and(odd, integral)?;
        let neg_r = self.fsel(odd, self.fneg(r)?, r)?;
        let neg_result = self.fsel(integral, neg_r, self.f(f64::NAN))?;
        let negative = self.fcmp(FloatPredicate::OLT, x, self.f(0.0))?;
        let result = self.fsel(negative, neg_result, r)?;
        let y0 = self.fcmp(FloatPredicate::OEQ, y, self.f(0.0))?;
        let result = self.fsel(y0, self.f(1.0), result)?;
        // Exact squares and square roots, the common constant exponents.
        let two = self.fcmp(FloatPredicate::OEQ, y, self.f(2.0))?;
        let result = self.fsel(two, self.fmul(x, x)?, result)?;
        let half = self.fcmp(FloatPredicate::OEQ, y, self.f(0.5))?;
        let sqrt = self.fcall1("llvm.sqrt.f32", x)?;
        self.fsel(half, sqrt, result)
    }
}
