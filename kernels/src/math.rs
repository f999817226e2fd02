//! `f32` math written out in LLVM IR (range reduction and polynomials), so that a kernel's
//! transcendental functions are the same instructions on every GPU target and on the host.
//!
//! Accuracy: `exp` and `log` within 2 ulp, `tanh` within 8 ulp, `erf` within 1.5e-7 absolute;
//! `sin`, `cos` and `tan` reduce by π/2 in three parts, accurate for |x| up to about 1e5 (past
//! that the reduction loses bits; NaN for infinities); the inverse and hyperbolic functions
//! build on `exp`, `log1p`, `sqrt` and a reduced `atan` series. The tests compare against the
//! CPU reference (Rust's `libm`).

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
        let yi = self.ftoi(y)?;
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

    /// `(sin x, cos x)`, sharing one range reduction by π/2.
    fn sin_cos(&self, x: FloatValue<'ctx>) -> Gen<(FloatValue<'ctx>, FloatValue<'ctx>)> {
        // π/2 in three parts whose products with a quadrant count stay exact in f32.
        const PIO2_1: f64 = 1.570_796_251_296_997;
        const PIO2_2: f64 = 7.549_789_415_861_596e-8;
        const PIO2_3: f64 = 5.390_302_529_957_765e-15;
        let limit = 1.0e7;
        let finite = self.fcmp(
            FloatPredicate::OLT,
            self.fcall1("llvm.fabs.f32", x)?,
            self.f(f64::INFINITY),
        )?;
        let xs = self.fmin(self.fmax(x, self.f(-limit))?, self.f(limit))?;
        let k = self.fcall1(
            "llvm.rint.f32",
            self.fmul(xs, self.f(std::f64::consts::FRAC_2_PI))?,
        )?;
        let r = self.fma(k, self.f(-PIO2_1), xs)?;
        let r = self.fma(k, self.f(-PIO2_2), r)?;
        let r = self.fma(k, self.f(-PIO2_3), r)?;
        let r2 = self.fmul(r, r)?;
        let sin_r = self.fmul(
            r,
            self.poly(
                r2,
                &[
                    -1.0 / 39_916_800.0,
                    1.0 / 362_880.0,
                    -1.0 / 5040.0,
                    1.0 / 120.0,
                    -1.0 / 6.0,
                    1.0,
                ],
            )?,
        )?;
        let cos_r = self.poly(
            r2,
            &[
                1.0 / 479_001_600.0,
                -1.0 / 3_628_800.0,
                1.0 / 40320.0,
                -1.0 / 720.0,
                1.0 / 24.0,
                -0.5,
                1.0,
            ],
        )?;
        let q = self.ftoi(k)?;
        let q = self.b.build_and(q, self.c(3), "")?;
        let is = |n: i64| self.icmp(IntPredicate::EQ, q, self.c(n));
        let neg_sin = self.fneg(sin_r)?;
        let neg_cos = self.fneg(cos_r)?;
        // Quadrant q: sin = sin_r, cos_r, -sin_r, -cos_r; cos = cos_r, -sin_r, -cos_r, sin_r.
        let sin = self.fsel(is(1)?, cos_r, sin_r)?;
        let sin = self.fsel(is(2)?, neg_sin, sin)?;
        let sin = self.fsel(is(3)?, neg_cos, sin)?;
        let cos = self.fsel(is(1)?, neg_sin, cos_r)?;
        let cos = self.fsel(is(2)?, neg_cos, cos)?;
        let cos = self.fsel(is(3)?, sin_r, cos)?;
        let nan = self.f(f64::NAN);
        Ok((self.fsel(finite, sin, nan)?, self.fsel(finite, cos, nan)?))
    }

    /// Sine.
    pub fn sin(&self, x: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        Ok(self.sin_cos(x)?.0)
    }

    /// Cosine.
    pub fn cos(&self, x: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        Ok(self.sin_cos(x)?.1)
    }

    /// Tangent.
    pub fn tan(&self, x: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        let (s, c) = self.sin_cos(x)?;
        self.fdiv(s, c)
    }

    /// `log(1 + y)`, accurate for small `y` (the `u - 1` correction).
    fn log1p(&self, y: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        let u = self.fadd(self.f(1.0), y)?;
        let d = self.fsub(u, self.f(1.0))?;
        let exact = self.fcmp(FloatPredicate::OEQ, d, self.f(0.0))?;
        let corrected = self.fmul(self.log(u)?, self.fdiv(y, d)?)?;
        let huge = self.fcmp(FloatPredicate::OEQ, u, self.f(f64::INFINITY))?;
        let corrected = self.fsel(huge, self.log(u)?, corrected)?;
        self.fsel(exact, y, corrected)
    }

    /// Arctangent: `π/2 - atan(1/|x|)` above 1, `π/4 + atan((a-1)/(a+1))` above tan(π/8),
    /// then an odd series.
    pub fn atan(&self, x: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        let a = self.fcall1("llvm.fabs.f32", x)?;
        let inverted = self.fcmp(FloatPredicate::OGT, a, self.f(1.0))?;
        let a1 = self.fsel(inverted, self.fdiv(self.f(1.0), a)?, a)?;
        let shifted = self.fcmp(FloatPredicate::OGT, a1, self.f(0.414_213_562_373_095_1))?;
        let t = self.fsel(
            shifted,
            self.fdiv(self.fsub(a1, self.f(1.0))?, self.fadd(a1, self.f(1.0))?)?,
            a1,
        )?;
        let t2 = self.fmul(t, t)?;
        let series = self.fmul(
            t,
            self.poly(
                t2,
                &[
                    -1.0 / 15.0,
                    1.0 / 13.0,
                    -1.0 / 11.0,
                    1.0 / 9.0,
                    -1.0 / 7.0,
                    1.0 / 5.0,
                    -1.0 / 3.0,
                    1.0,
                ],
            )?,
        )?;
        let r = self.fsel(
            shifted,
            self.fadd(self.f(std::f64::consts::FRAC_PI_4), series)?,
            series,
        )?;
        let r = self.fsel(
            inverted,
            self.fsub(self.f(std::f64::consts::FRAC_PI_2), r)?,
            r,
        )?;
        let r = self.fcall2("llvm.copysign.f32", r, x)?;
        let nan = self.fcmp(FloatPredicate::UNO, x, x)?;
        self.fsel(nan, x, r)
    }

    /// Arcsine, `atan(x / sqrt(1 - x²))`; NaN outside [-1, 1].
    pub fn asin(&self, x: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        let one_minus = self.fmul(self.fsub(self.f(1.0), x)?, self.fadd(self.f(1.0), x)?)?;
        self.atan(self.fdiv(x, self.fcall1("llvm.sqrt.f32", one_minus)?)?)
    }

    /// Arccosine, `2·atan(sqrt((1 - x) / (1 + x)))`; NaN outside [-1, 1].
    pub fn acos(&self, x: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        let ratio = self.fdiv(self.fsub(self.f(1.0), x)?, self.fadd(self.f(1.0), x)?)?;
        let r = self.fmul(
            self.f(2.0),
            self.atan(self.fcall1("llvm.sqrt.f32", ratio)?)?,
        )?;
        let outside = self.fcmp(
            FloatPredicate::UGT,
            self.fcall1("llvm.fabs.f32", x)?,
            self.f(1.0),
        )?;
        self.fsel(outside, self.f(f64::NAN), r)
    }

    /// Hyperbolic sine; a series below 0.5 keeps small arguments exact.
    pub fn sinh(&self, x: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        let e = self.exp(x)?;
        let big = self.fmul(self.fsub(e, self.fdiv(self.f(1.0), e)?)?, self.f(0.5))?;
        let x2 = self.fmul(x, x)?;
        let series = self.fmul(
            x,
            self.poly(
                x2,
                &[1.0 / 362_880.0, 1.0 / 5040.0, 1.0 / 120.0, 1.0 / 6.0, 1.0],
            )?,
        )?;
        let small = self.fcmp(
            FloatPredicate::OLT,
            self.fcall1("llvm.fabs.f32", x)?,
            self.f(0.5),
        )?;
        self.fsel(small, series, big)
    }

    /// Hyperbolic cosine.
    pub fn cosh(&self, x: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        let e = self.exp(self.fcall1("llvm.fabs.f32", x)?)?;
        self.fmul(self.fadd(e, self.fdiv(self.f(1.0), e)?)?, self.f(0.5))
    }

    /// Inverse hyperbolic sine, `sign(x)·log1p(|x| + x²/(1 + sqrt(1 + x²)))`.
    pub fn asinh(&self, x: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        let a = self.fcall1("llvm.fabs.f32", x)?;
        let a2 = self.fmul(a, a)?;
        let root = self.fcall1("llvm.sqrt.f32", self.fadd(self.f(1.0), a2)?)?;
        let arg = self.fadd(a, self.fdiv(a2, self.fadd(self.f(1.0), root)?)?)?;
        // Past 1e18 the square overflows: log(2|x|) is exact there.
        let huge = self.fcmp(FloatPredicate::OGT, a, self.f(1.0e18))?;
        let far = self.fadd(self.log(a)?, self.f(std::f64::consts::LN_2))?;
        let r = self.fsel(huge, far, self.log1p(arg)?)?;
        self.fcall2("llvm.copysign.f32", r, x)
    }

    /// Inverse hyperbolic cosine, `log1p(t + sqrt(2t + t²))` with `t = x - 1`; NaN below 1.
    pub fn acosh(&self, x: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        let t = self.fsub(x, self.f(1.0))?;
        let root = self.fcall1("llvm.sqrt.f32", self.fma(t, t, self.fmul(t, self.f(2.0))?)?)?;
        let huge = self.fcmp(FloatPredicate::OGT, x, self.f(1.0e18))?;
        let far = self.fadd(self.log(x)?, self.f(std::f64::consts::LN_2))?;
        let r = self.fsel(huge, far, self.log1p(self.fadd(t, root)?)?)?;
        let below = self.fcmp(FloatPredicate::ULT, x, self.f(1.0))?;
        self.fsel(below, self.f(f64::NAN), r)
    }

    /// Inverse hyperbolic tangent, `log1p(2x / (1 - x)) / 2`; NaN outside [-1, 1].
    pub fn atanh(&self, x: FloatValue<'ctx>) -> Gen<FloatValue<'ctx>> {
        let ratio = self.fdiv(self.fmul(x, self.f(2.0))?, self.fsub(self.f(1.0), x)?)?;
        let r = self.fmul(self.log1p(ratio)?, self.f(0.5))?;
        let outside = self.fcmp(
            FloatPredicate::UGT,
            self.fcall1("llvm.fabs.f32", x)?,
            self.f(1.0),
        )?;
        self.fsel(outside, self.f(f64::NAN), r)
    }
}
