//! Elementwise ops: unary math, broadcasting binary ops, variadic ops, `Where`, `Clip`, `Cast`.

use super::R;
use crate::array::{strides, Array, Data, Elem};
use half::{bf16, f16};
use rayon::prelude::*;
use sparkc_ir::formats::Rounding;
use sparkc_ir::op::{Binary, GeluApproximation, Unary, Variadic};
use sparkc_ir::DType;

/// Tensors above this many elements are processed in parallel.
pub(crate) const PARALLEL_MIN: usize = 1 << 15;

/// How many chunks of `chunk` elements each parallel task should take at least, so that small
/// tensors run on one thread without waking the others.
pub(crate) fn min_tasks(chunk: usize) -> usize {
    (PARALLEL_MIN / chunk.max(1)).max(1)
}

/// The numpy broadcast of several shapes.
pub(crate) fn broadcast_shape(shapes: &[&[usize]]) -> R<Vec<usize>> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for shape in shapes {
        let offset = rank - shape.len();
        for (i, &d) in shape.iter().enumerate() {
            let o = &mut out[offset + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(format!("shapes {shapes:?} do not broadcast together"));
            }
        }
    }
    Ok(out)
}

/// Strides to read an input of shape `from` broadcast to `to` (0 along broadcast axes).
pub(crate) fn broadcast_strides(from: &[usize], to: &[usize]) -> Vec<usize> {
    let offset = to.len() - from.len();
    let own = strides(from);
    (0..to.len())
        .map(|i| {
            if i < offset || from[i - offset] == 1 {
                0
            } else {
                own[i - offset]
            }
        })
        .collect()
}

/// Merges adjacent axes of `shape` that every operand (by its `strides`, rewritten in place)
/// steps through as one, and drops axes of size 1, so loops run over longer rows; never empty.
pub(crate) fn coalesce(shape: &[usize], strides: &mut [Vec<usize>]) -> Vec<usize> {
    let mut merged: Vec<usize> = Vec::with_capacity(shape.len());
    let mut kept: Vec<Vec<usize>> = vec![Vec::with_capacity(shape.len()); strides.len()];
    for (axis, &size) in shape.iter().enumerate() {
        if size == 1 {
            continue;
        }
        let joins = merged.last().is_some_and(|_| {
            strides
                .iter()
                .zip(&kept)
                .all(|(st, k)| k.last() == Some(&(st[axis] * size)))
        });
        if joins {
            *merged.last_mut().expect("checked non-empty") *= size;
            for (st, k) in strides.iter().zip(kept.iter_mut()) {
                *k.last_mut().expect("as long as merged") = st[axis];
            }
        } else {
            merged.push(size);
            for (st, k) in strides.iter().zip(kept.iter_mut()) {
                k.push(st[axis]);
            }
        }
    }
    if merged.is_empty() {
        merged.push(shape.iter().product());
        kept.iter_mut().for_each(|k| k.push(0));
    }
    for (st, k) in strides.iter_mut().zip(kept) {
        *st = k;
    }
    merged
}

/// Source index of every element of `shape` read with `strides` (broadcast, permuted or sliced).
pub(crate) fn strided_indices(shape: &[usize], strides: &[usize], offset: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(shape.iter().product());
    let (inner, step) = match shape.last() {
        Some(&n) => (n, strides[shape.len() - 1]),
        None => (1, 1),
    };
    crate::array::for_each_row(shape, strides, offset, |p| {
        out.extend((0..inner).map(|j| p + j * step))
    });
    out
}

/// `f(a, b)` over the broadcast of two arrays' elements.
pub(crate) fn zip_broadcast<A, B, O, F>(
    a: &[A],
    a_shape: &[usize],
    b: &[B],
    b_shape: &[usize],
    out_shape: &[usize],
    f: F,
) -> Vec<O>
where
    A: Copy + Sync,
    B: Copy + Sync,
    O: Copy + Default + Send,
    F: Fn(A, B) -> O + Sync,
{
    let len: usize = out_shape.iter().product();
    if a.len() == len && b.len() == len {
        if len >= PARALLEL_MIN {
            return a.par_iter().zip(b).map(|(&x, &y)| f(x, y)).collect();
        }
        return a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect();
    }
    if b.len() == 1 && a.len() == len {
        let y = b[0];
        return a.iter().map(|&x| f(x, y)).collect();
    }
    if a.len() == 1 && b.len() == len {
        let x = a[0];
        return b.iter().map(|&y| f(x, y)).collect();
    }
    let mut strides = [
        broadcast_strides(a_shape, out_shape),
        broadcast_strides(b_shape, out_shape),
    ];
    let shape = coalesce(out_shape, &mut strides);
    let [sa, sb] = &strides;
    let rank = shape.len();
    let inner = shape[rank - 1].max(1);
    let (ia, ib) = (sa[rank - 1], sb[rank - 1]);
    let mut out = vec![O::default(); len];
    let fill_row = |row: usize, chunk: &mut [O]| {
        let (mut oa, mut ob, mut rest) = (0, 0, row);
        for axis in (0..rank - 1).rev() {
            let i = rest % shape[axis];
            rest /= shape[axis];
            oa += i * sa[axis];
            ob += i * sb[axis];
        }
        let n = chunk.len();
        // The common patterns get loops the compiler vectorizes.
        match (ia, ib) {
            (1, 1) => chunk
                .iter_mut()
                .zip(a[oa..oa + n].iter().zip(&b[ob..ob + n]))
                .for_each(|(o, (&x, &y))| *o = f(x, y)),
            (1, 0) => {
                let y = b[ob];
                chunk
                    .iter_mut()
                    .zip(&a[oa..oa + n])
                    .for_each(|(o, &x)| *o = f(x, y))
            }
            (0, 1) => {
                let x = a[oa];
                chunk
                    .iter_mut()
                    .zip(&b[ob..ob + n])
                    .for_each(|(o, &y)| *o = f(x, y))
            }
            _ => {
                for (j, o) in chunk.iter_mut().enumerate() {
                    *o = f(a[oa + j * ia], b[ob + j * ib]);
                }
            }
        }
    };
    if len >= PARALLEL_MIN {
        out.par_chunks_mut(inner)
            .with_min_len(min_tasks(inner))
            .enumerate()
            .for_each(|(row, chunk)| fill_row(row, chunk));
    } else {
        for (row, chunk) in out.chunks_mut(inner).enumerate() {
            fill_row(row, chunk);
        }
    }
    out
}

/// Reads an array broadcast to `shape`.
pub(crate) fn expand(a: &Array, shape: &[usize]) -> Array {
    if a.shape == shape {
        return a.clone();
    }
    Array::new(
        shape.to_vec(),
        a.data
            .gather_strided(shape, &broadcast_strides(&a.shape, shape), 0),
    )
}

/// `e^x` in f32 within two units in the last place, branch-free so loops over it vectorize:
/// `x = k·ln2 + r` with `|r| <= ln2/2`, the Taylor series of `e^r` to degree 7, scaled by `2^k`
/// through the exponent bits. Results below `2^-126` flush to zero.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5·2^23: adding it rounds to an integer k, held in the low bits of the sum.
    const ROUND: f32 = 12_582_912.0;
    // Not `clamp`: this form vectorizes.
    #[allow(clippy::manual_clamp)]
    let xc = if x < -87.0 {
        -87.0
    } else if x > 88.0 {
        88.0
    } else {
        x
    };
    let shifted = xc * std::f32::consts::LOG2_E + ROUND;
    let k = shifted - ROUND;
    let r = (xc - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // 2^k: k + 127 shifted into the exponent field.
    let scale = f32::from_bits(shifted.to_bits().wrapping_add(127) << 23);
    let y = p * scale;
    if x < -87.0 {
        0.0
    } else if x > 88.0 {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

/// `tanh` in f32 within a few units in the last place, branch-free: the odd Taylor series below
/// 0.6 in magnitude, `1 - 2/(e^2|x| + 1)` above.
#[inline(always)]
pub(crate) fn tanh_f32(x: f32) -> f32 {
    const C: [f32; 10] = [
        1.0,
        -1.0 / 3.0,
        2.0 / 15.0,
        -17.0 / 315.0,
        62.0 / 2835.0,
        -1382.0 / 155_925.0,
        21_844.0 / 6_081_075.0,
        -929_569.0 / 638_512_875.0,
        6_404_582.0 / 10_854_718_875.0,
        -443_861_162.0 / 1_856_156_927_625.0,
    ];
    let a = x.abs();
    let s = x * x;
    let p = C[0]
        + s * (C[1]
            + s * (C[2]
                + s * (C[3]
                    + s * (C[4] + s * (C[5] + s * (C[6] + s * (C[7] + s * (C[8] + s * C[9]))))))));
    let small = x * p;
    let large = (1.0 - 2.0 / (exp_f32(2.0 * a) + 1.0)).copysign(x);
    if a < 0.6 {
        small
    } else {
        large
    }
}

/// `erf` in f32 within a few units in the last place, several times faster than libm's: its
/// Taylor series below 0.5 in magnitude, above it `1 - erfc` with the Chebyshev-fitted `erfc` of
/// Numerical Recipes (fractional error below 1.2e-7), evaluated in f64.
pub(crate) fn erf_f32(x: f32) -> f32 {
    let a = f64::from(x.abs());
    if a < 0.5 {
        // (-1)^n / (n! (2n+1))
        const C: [f64; 8] = [
            1.0,
            -1.0 / 3.0,
            1.0 / 10.0,
            -1.0 / 42.0,
            1.0 / 216.0,
            -1.0 / 1320.0,
            1.0 / 9360.0,
            -1.0 / 75600.0,
        ];
        let x = f64::from(x);
        let s = x * x;
        let p = C[0]
            + s * (C[1]
                + s * (C[2] + s * (C[3] + s * (C[4] + s * (C[5] + s * (C[6] + s * C[7]))))));
        return (x * p * std::f64::consts::FRAC_2_SQRT_PI) as f32;
    }
    const R: [f64; 10] = [
        -1.265_512_23,
        1.000_023_68,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_203_98,
        1.488_515_87,
        -0.822_152_23,
        0.170_872_77,
    ];
    let t = 1.0 / (1.0 + 0.5 * a);
    let q = R[1]
        + t * (R[2]
            + t * (R[3]
                + t * (R[4] + t * (R[5] + t * (R[6] + t * (R[7] + t * (R[8] + t * R[9])))))));
    let erfc = t * (-a * a + R[0] + t * q).exp();
    ((1.0 - erfc) as f32).copysign(x)
}

/// `erf` in f32 without branches, so a loop over it vectorizes: `erf_f32`'s two formulas, both
/// evaluated in f32, the right one selected.
#[inline(always)]
fn erf_branchless(x: f32) -> f32 {
    const T: [f32; 8] = [
        1.0,
        -1.0 / 3.0,
        1.0 / 10.0,
        -1.0 / 42.0,
        1.0 / 216.0,
        -1.0 / 1320.0,
        1.0 / 9360.0,
        -1.0 / 75600.0,
    ];
    const R: [f32; 10] = [
        -1.265_512_2,
        1.000_023_7,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135204,
        1.488_515_8,
        -0.822_152_2,
        0.170_872_77,
    ];
    let a = x.abs();
    let s = x * x;
    let p = T[0]
        + s * (T[1] + s * (T[2] + s * (T[3] + s * (T[4] + s * (T[5] + s * (T[6] + s * T[7]))))));
    let small = x * p * std::f32::consts::FRAC_2_SQRT_PI;
    let t = 1.0 / (1.0 + 0.5 * a);
    let q = R[1]
        + t * (R[2]
            + t * (R[3]
                + t * (R[4] + t * (R[5] + t * (R[6] + t * (R[7] + t * (R[8] + t * R[9])))))));
    let erfc = t * exp_f32(-s + R[0] + t * q);
    let large = (1.0 - erfc).copysign(x);
    if a < 0.5 {
        small
    } else {
        large
    }
}

/// Defines `$name(v: &mut [f32])` applying the branch-free `$f` in place, with AVX2 and FMA code
/// when the CPU has them.
macro_rules! vector_map {
    ($name:ident, $f:path, $doc:literal) => {
        #[doc = $doc]
        pub(crate) fn $name(v: &mut [f32]) {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    #[target_feature(enable = "avx2,fma")]
                    fn wide(v: &mut [f32]) {
                        v.iter_mut().for_each(|x| *x = $f(*x));
                    }
                    // SAFETY: the CPU was just checked to have AVX2 and FMA.
                    unsafe { wide(v) };
                    return;
                }
            }
            v.iter_mut().for_each(|x| *x = $f(*x));
        }
    };
}
vector_map!(
    erf_slice,
    erf_branchless,
    "`erf` of every element in place."
);
vector_map!(tanh_slice, tanh_f32, "`tanh` of every element in place.");

/// Exact GELU, `0.5·x·(1 + erf(x/√2))`, through the branch-free erf.
#[inline(always)]
fn gelu_erf_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_branchless(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU with the tanh approximation.
#[inline(always)]
fn gelu_tanh_f32(x: f32) -> f32 {
    const C: f32 = 0.797_884_6;
    0.5 * x * (1.0 + tanh_f32(C * (x + 0.044715 * x * x * x)))
}

vector_map!(
    gelu_erf_slice,
    gelu_erf_f32,
    "Exact GELU of every element in place."
);
vector_map!(
    gelu_tanh_slice,
    gelu_tanh_f32,
    "Tanh-approximated GELU of every element in place."
);

/// The vectorized form of a unary op over f32, when there is one.
pub(crate) fn vector_unary(op: &Unary) -> Option<fn(&mut [f32])> {
    match op {
        Unary::Erf => Some(erf_slice),
        Unary::Tanh => Some(tanh_slice),
        Unary::Gelu {
            approximate: GeluApproximation::None,
        } => Some(gelu_erf_slice),
        Unary::Gelu {
            approximate: GeluApproximation::Tanh,
        } => Some(gelu_tanh_slice),
        _ => None,
    }
}

/// Applies `f` to every element in place, in parallel for large slices.
fn apply<T: Copy + Default + Send + Sync, F: Fn(T) -> T + Sync>(f: F, v: &mut [T]) {
    if v.len() >= PARALLEL_MIN {
        v.par_chunks_mut(4096).for_each(|c| map_in_place(&f, c));
    } else {
        map_in_place(&f, v);
    }
}

/// `x = f(x)` for every element, with AVX2 and FMA code when the CPU has them.
fn map_in_place<T: Copy + Default, F: Fn(T) -> T>(f: &F, v: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            #[target_feature(enable = "avx2,fma")]
            fn wide<T: Copy + Default, F: Fn(T) -> T>(f: &F, v: &mut [T]) {
                map_through_buffer(f, v)
            }
            // SAFETY: the CPU was just checked to have AVX2 and FMA.
            unsafe { wide(f, v) };
            return;
        }
    }
    map_through_buffer(f, v)
}

/// `x = f(x)` a block at a time through a local buffer. Written straight back, an `f` that
/// keeps some elements as they are (Relu, a threshold) compiles to masked stores of the others,
/// which are slow on AMD cores.
#[inline(always)]
fn map_through_buffer<T: Copy + Default, F: Fn(T) -> T>(f: &F, v: &mut [T]) {
    let mut buffer = [T::default(); 32];
    let mut through = |block: &mut [T]| {
        let mapped = &mut buffer[..block.len()];
        mapped
            .iter_mut()
            .zip(block.iter())
            .for_each(|(m, &x)| *m = f(x));
        block.copy_from_slice(mapped);
    };
    let mut blocks = v.chunks_exact_mut(32);
    (&mut blocks).for_each(&mut through);
    through(blocks.into_remainder());
}

macro_rules! float_unary {
    ($name:ident, $t:ty, $erf:path, $tanh:path, $exp:path) => {
        pub(crate) fn $name(op: &Unary, v: &mut [$t]) -> R<()> {
            match op {
                Unary::Abs => apply(|x: $t| x.abs(), v),
                Unary::Ceil => apply(|x: $t| x.ceil(), v),
                Unary::Cos => apply(|x: $t| x.cos(), v),
                Unary::Erf => apply(|x: $t| $erf(x), v),
                Unary::Exp => apply(|x: $t| x.exp(), v),
                Unary::Floor => apply(|x: $t| x.floor(), v),
                Unary::Identity => {}
                Unary::Log => apply(|x: $t| x.ln(), v),
                Unary::Neg => apply(|x: $t| -x, v),
                Unary::Reciprocal => apply(|x: $t| 1.0 / x, v),
                Unary::Relu => apply(|x: $t| if x > 0.0 { x } else { 0.0 }, v),
                Unary::Round => apply(|x: $t| x.round_ties_even(), v),
                Unary::Sigmoid => apply(
                    |x: $t| {
                        let e = $exp(-x.abs());
                        let positive = 1.0 / (1.0 + e);
                        if x >= 0.0 {
                            positive
                        } else {
                            1.0 - positive
                        }
                    },
                    v,
                ),
                Unary::Sign => apply(
                    |x: $t| {
                        if x > 0.0 {
                            1.0
                        } else if x < 0.0 {
                            -1.0
                        } else {
                            x
                        }
                    },
                    v,
                ),
                Unary::Sin => apply(|x: $t| x.sin(), v),
                Unary::Sqrt => apply(|x: $t| x.sqrt(), v),
                Unary::Tanh => apply(|x: $t| $tanh(x), v),
                Unary::Tan => apply(|x: $t| x.tan(), v),
                Unary::Asin => apply(|x: $t| x.asin(), v),
                Unary::Acos => apply(|x: $t| x.acos(), v),
                Unary::Atan => apply(|x: $t| x.atan(), v),
                Unary::Sinh => apply(|x: $t| x.sinh(), v),
                Unary::Cosh => apply(|x: $t| x.cosh(), v),
                Unary::Asinh => apply(|x: $t| x.asinh(), v),
                Unary::Acosh => apply(|x: $t| x.acosh(), v),
                Unary::Atanh => apply(|x: $t| x.atanh(), v),
                Unary::Softsign => apply(|x: $t| x / (1.0 + x.abs()), v),
                Unary::Softplus => apply(
                    |x: $t| {
                        if x > 0.0 {
                            x + (-x).exp().ln_1p()
                        } else {
                            x.exp().ln_1p()
                        }
                    },
                    v,
                ),
                Unary::Mish => apply(
                    |x: $t| {
                        let sp = if x > 0.0 {
                            x + (-x).exp().ln_1p()
                        } else {
                            x.exp().ln_1p()
                        };
                        x * $tanh(sp)
                    },
                    v,
                ),
                Unary::HardSwish => apply(|x: $t| x * (x * (1.0 / 6.0) + 0.5).clamp(0.0, 1.0), v),
                Unary::Elu { alpha } => {
                    let alpha = *alpha as $t;
                    apply(|x: $t| if x > 0.0 { x } else { alpha * (x.exp() - 1.0) }, v)
                }
                Unary::Celu { alpha } => {
                    let alpha = *alpha as $t;
                    apply(
                        |x: $t| x.max(0.0) + (alpha * ((x / alpha).exp() - 1.0)).min(0.0),
                        v,
                    )
                }
                Unary::Selu { alpha, gamma } => {
                    let (alpha, gamma) = (*alpha as $t, *gamma as $t);
                    apply(
                        |x: $t| {
                            if x > 0.0 {
                                gamma * x
                            } else {
                                gamma * alpha * (x.exp() - 1.0)
                            }
                        },
                        v,
                    )
                }
                Unary::ThresholdedRelu { alpha } => {
                    let alpha = *alpha as $t;
                    apply(|x: $t| if x > alpha { x } else { 0.0 }, v)
                }
                Unary::Shrink { bias, lambd } => {
                    let (bias, lambd) = (*bias as $t, *lambd as $t);
                    apply(
                        |x: $t| {
                            if x < -lambd {
                                x + bias
                            } else if x > lambd {
                                x - bias
                            } else {
                                0.0
                            }
                        },
                        v,
                    )
                }
                Unary::Swish { alpha } => {
                    let alpha = *alpha as $t;
                    apply(|x: $t| x / (1.0 + $exp(-alpha * x)), v)
                }
                Unary::LeakyRelu { alpha } => {
                    let alpha = *alpha as $t;
                    apply(|x: $t| if x >= 0.0 { x } else { alpha * x }, v)
                }
                Unary::HardSigmoid { alpha, beta } => {
                    let (alpha, beta) = (*alpha as $t, *beta as $t);
                    apply(|x: $t| (alpha * x + beta).clamp(0.0, 1.0), v)
                }
                Unary::Gelu { approximate } => match approximate {
                    GeluApproximation::None => apply(
                        |x: $t| 0.5 * x * (1.0 + $erf(x * std::f64::consts::FRAC_1_SQRT_2 as $t)),
                        v,
                    ),
                    GeluApproximation::Tanh => {
                        let c = (2.0 / std::f64::consts::PI).sqrt() as $t;
                        apply(
                            |x: $t| 0.5 * x * (1.0 + $tanh(c * (x + 0.044715 * x * x * x))),
                            v,
                        )
                    }
                },
                other => return Err(format!("{other:?} is not defined on floats")),
            }
            Ok(())
        }
    };
}
float_unary!(unary_f32, f32, erf_f32, tanh_f32, exp_f32);
float_unary!(unary_f64, f64, libm::erf, f64::tanh, f64::exp);

macro_rules! signed_unary {
    ($op:expr, $v:expr) => {{
        let v = $v;
        match $op {
            Unary::Abs => v.iter_mut().for_each(|x| *x = x.wrapping_abs()),
            Unary::Neg => v.iter_mut().for_each(|x| *x = x.wrapping_neg()),
            Unary::Sign => v.iter_mut().for_each(|x| *x = x.signum()),
            Unary::Relu => v.iter_mut().for_each(|x| *x = (*x).max(0)),
            Unary::BitwiseNot => v.iter_mut().for_each(|x| *x = !*x),
            other => return Err(format!("{other:?} is not defined on integers")),
        }
    }};
}

/// Applies a one-input elementwise op, in place.
pub(crate) fn unary(op: &Unary, mut a: Array) -> R<Array> {
    match op {
        Unary::IsNaN => {
            let values = a.data.to_f64s();
            return Ok(Array::new(
                a.shape,
                Data::Bool(values.iter().map(|x| x.is_nan()).collect()),
            ));
        }
        Unary::IsInf {
            detect_negative,
            detect_positive,
        } => {
            let values = a.data.to_f64s();
            let flags = values
                .iter()
                .map(|&x| {
                    (x == f64::INFINITY && *detect_positive)
                        || (x == f64::NEG_INFINITY && *detect_negative)
                })
                .collect();
            return Ok(Array::new(a.shape, Data::Bool(flags)));
        }
        Unary::Identity => return Ok(a),
        _ => {}
    }
    match &mut a.data {
        Data::F32(v) if vector_unary(op).is_some() => {
            let f = vector_unary(op).ok_or("no vector form")?;
            if v.len() >= PARALLEL_MIN {
                v.par_chunks_mut(4096).for_each(f);
            } else {
                f(v);
            }
        }
        Data::F32(v) => unary_f32(op, v)?,
        Data::F64(v) => unary_f64(op, v)?,
        Data::F16(v) => {
            let mut f: Vec<f32> = v.iter().map(|x| x.to_f32()).collect();
            unary_f32(op, &mut f)?;
            *v = f.into_iter().map(f16::from_f32).collect();
        }
        Data::BF16(v) => {
            let mut f: Vec<f32> = v.iter().map(|x| x.to_f32()).collect();
            unary_f32(op, &mut f)?;
            *v = f.into_iter().map(bf16::from_f32).collect();
        }
        Data::I8(v) => signed_unary!(op, v),
        Data::I16(v) => signed_unary!(op, v),
        Data::I32(v) => signed_unary!(op, v),
        Data::I64(v) => signed_unary!(op, v),
        Data::U8(v) => unsigned_unary(op, v)?,
        Data::U16(v) => unsigned_unary(op, v)?,
        Data::U32(v) => unsigned_unary(op, v)?,
        Data::U64(v) => unsigned_unary(op, v)?,
        Data::Bool(v) => match op {
            Unary::Not => v.iter_mut().for_each(|x| *x = !*x),
            other => return Err(format!("{other:?} is not defined on bool")),
        },
        Data::Bits(dtype, _) => return Err(format!("{op:?} is not defined on {dtype}")),
    }
    Ok(a)
}

fn unsigned_unary<T>(op: &Unary, v: &mut [T]) -> R<()>
where
    T: Copy + Default + PartialOrd + std::ops::Not<Output = T> + From<u8>,
{
    match op {
        Unary::Abs | Unary::Relu | Unary::Identity => {}
        Unary::Sign => v.iter_mut().for_each(|x| {
            *x = if *x > T::default() {
                T::from(1)
            } else {
                T::default()
            }
        }),
        Unary::BitwiseNot => v.iter_mut().for_each(|x| *x = !*x),
        other => return Err(format!("{other:?} is not defined on unsigned integers")),
    }
    Ok(())
}

/// Integer arithmetic with numpy's semantics (wrapping, truncating division, Python modulo).
trait IntArith: Elem {
    fn add(self, b: Self) -> Self;
    fn sub(self, b: Self) -> Self;
    fn mul(self, b: Self) -> Self;
    fn div(self, b: Self) -> Self;
    fn modulo(self, b: Self, fmod: bool) -> Self;
    fn pow(self, b: f64) -> Self;
    fn and(self, b: Self) -> Self;
    fn or(self, b: Self) -> Self;
    fn xor(self, b: Self) -> Self;
    fn shift(self, b: Self, left: bool) -> Self;
}

macro_rules! int_arith {
    ($($t:ty),*) => {$(
        impl IntArith for $t {
            fn add(self, b: Self) -> Self { self.wrapping_add(b) }
            fn sub(self, b: Self) -> Self { self.wrapping_sub(b) }
            fn mul(self, b: Self) -> Self { self.wrapping_mul(b) }
            fn div(self, b: Self) -> Self { self.checked_div(b).unwrap_or(0) }
            fn modulo(self, b: Self, fmod: bool) -> Self {
                let r = self.checked_rem(b).unwrap_or(0);
                #[allow(unused_comparisons)]
                let sign_differs = (r < 0) != (b < 0);
                if !fmod && r != 0 && sign_differs { r.wrapping_add(b) } else { r }
            }
            fn pow(self, b: f64) -> Self { <$t>::from_f64((self as f64).powf(b)) }
            fn and(self, b: Self) -> Self { self & b }
            fn or(self, b: Self) -> Self { self | b }
            fn xor(self, b: Self) -> Self { self ^ b }
            fn shift(self, b: Self, left: bool) -> Self {
                #[allow(unused_comparisons)]
                let (negative_shift, negative) = (b < 0, self < 0);
                let n = if negative_shift { u32::MAX } else { b as u32 };
                match (left, n >= <$t>::BITS) {
                    (true, true) => 0,
                    (true, false) => self << n,
                    (false, true) => if negative { !0 } else { 0 },
                    (false, false) => self >> n,
                }
            }
        }
    )*};
}
int_arith!(i8, i16, i32, i64, u8, u16, u32, u64);

fn int_binary<T: IntArith>(
    op: &Binary,
    a: &[T],
    ash: &[usize],
    b: &[T],
    bsh: &[usize],
    out: &[usize],
) -> R<Vec<T>> {
    Ok(match op {
        Binary::Add => zip_broadcast(a, ash, b, bsh, out, T::add),
        Binary::Sub => zip_broadcast(a, ash, b, bsh, out, T::sub),
        Binary::Mul => zip_broadcast(a, ash, b, bsh, out, T::mul),
        Binary::Div => zip_broadcast(a, ash, b, bsh, out, T::div),
        Binary::Mod { fmod } => zip_broadcast(a, ash, b, bsh, out, |x, y| x.modulo(y, *fmod)),
        Binary::Pow => zip_broadcast(a, ash, b, bsh, out, |x, y| x.pow(y.to_f64())),
        Binary::BitwiseAnd => zip_broadcast(a, ash, b, bsh, out, T::and),
        Binary::BitwiseOr => zip_broadcast(a, ash, b, bsh, out, T::or),
        Binary::BitwiseXor => zip_broadcast(a, ash, b, bsh, out, T::xor),
        Binary::BitShift { left } => zip_broadcast(a, ash, b, bsh, out, |x, y| x.shift(y, *left)),
        Binary::PRelu => zip_broadcast(a, ash, b, bsh, out, |x, y| {
            if x < T::default() {
                x.mul(y)
            } else {
                x
            }
        }),
        other => return Err(format!("{other:?} is not defined on integers")),
    })
}

macro_rules! float_binary {
    ($name:ident, $t:ty) => {
        fn $name(
            op: &Binary,
            a: &[$t],
            ash: &[usize],
            b: &[$t],
            bsh: &[usize],
            out: &[usize],
        ) -> R<Vec<$t>> {
            Ok(match op {
                Binary::Add => zip_broadcast(a, ash, b, bsh, out, |x, y| x + y),
                Binary::Sub => zip_broadcast(a, ash, b, bsh, out, |x, y| x - y),
                Binary::Mul => zip_broadcast(a, ash, b, bsh, out, |x, y| x * y),
                Binary::Div => zip_broadcast(a, ash, b, bsh, out, |x, y| x / y),
                Binary::Pow if b.len() == 1 && b[0] == 2.0 => {
                    zip_broadcast(a, ash, b, bsh, out, |x: $t, _| x * x)
                }
                Binary::Pow if b.len() == 1 && b[0] == 3.0 => {
                    zip_broadcast(a, ash, b, bsh, out, |x: $t, _| x * x * x)
                }
                Binary::Pow if b.len() == 1 && b[0] == 0.5 => {
                    zip_broadcast(a, ash, b, bsh, out, |x: $t, _| x.sqrt())
                }
                Binary::Pow if b.len() == 1 && b[0] == 1.0 => {
                    zip_broadcast(a, ash, b, bsh, out, |x: $t, _| x)
                }
                Binary::Pow => zip_broadcast(a, ash, b, bsh, out, |x: $t, y: $t| x.powf(y)),
                Binary::Mod { fmod: true } => {
                    zip_broadcast(a, ash, b, bsh, out, |x: $t, y: $t| x % y)
                }
                Binary::Mod { fmod: false } => {
                    zip_broadcast(a, ash, b, bsh, out, |x: $t, y: $t| {
                        let r = x % y;
                        if r != 0.0 && (r < 0.0) != (y < 0.0) {
                            r + y
                        } else {
                            r
                        }
                    })
                }
                Binary::PRelu => {
                    zip_broadcast(a, ash, b, bsh, out, |x, y| if x < 0.0 { x * y } else { x })
                }
                other => return Err(format!("{other:?} is not defined on floats")),
            })
        }
    };
}
float_binary!(binary_f32, f32);
float_binary!(binary_f64, f64);

fn compare<T: Copy + PartialOrd + Sync>(
    op: &Binary,
    a: &[T],
    ash: &[usize],
    b: &[T],
    bsh: &[usize],
    out: &[usize],
) -> R<Vec<bool>> {
    Ok(match op {
        Binary::Equal => zip_broadcast(a, ash, b, bsh, out, |x, y| x == y),
        Binary::Greater => zip_broadcast(a, ash, b, bsh, out, |x, y| x > y),
        Binary::GreaterOrEqual => zip_broadcast(a, ash, b, bsh, out, |x, y| x >= y),
        Binary::Less => zip_broadcast(a, ash, b, bsh, out, |x, y| x < y),
        Binary::LessOrEqual => zip_broadcast(a, ash, b, bsh, out, |x, y| x <= y),
        other => return Err(format!("{other:?} is not a comparison")),
    })
}

/// Applies a two-input broadcasting op.
pub(crate) fn binary(op: &Binary, a: &Array, b: &Array) -> R<Array> {
    let out = broadcast_shape(&[&a.shape, &b.shape])?;
    let (ash, bsh) = (&a.shape[..], &b.shape[..]);
    let is_comparison = matches!(
        op,
        Binary::Equal
            | Binary::Greater
            | Binary::GreaterOrEqual
            | Binary::Less
            | Binary::LessOrEqual
    );
    if is_comparison {
        let flags = match (&a.data, &b.data) {
            (Data::F32(x), Data::F32(y)) => compare(op, x, ash, y, bsh, &out)?,
            (Data::I64(x), Data::I64(y)) => compare(op, x, ash, y, bsh, &out)?,
            (Data::I32(x), Data::I32(y)) => compare(op, x, ash, y, bsh, &out)?,
            (Data::Bool(x), Data::Bool(y)) => compare(op, x, ash, y, bsh, &out)?,
            (x, y)
                if x.dtype().is_integer()
                    && y.dtype().is_integer()
                    && x.dtype() != sparkc_ir::DType::U64 =>
            {
                compare(op, &x.to_i64s(), ash, &y.to_i64s(), bsh, &out)?
            }
            (x, y) => compare(op, &x.to_f64s(), ash, &y.to_f64s(), bsh, &out)?,
        };
        return Ok(Array::new(out, Data::Bool(flags)));
    }
    if matches!(op, Binary::And | Binary::Or | Binary::Xor) {
        let (Data::Bool(x), Data::Bool(y)) = (&a.data, &b.data) else {
            return Err(format!(
                "{op:?} takes bool inputs, found {} and {}",
                a.dtype(),
                b.dtype()
            ));
        };
        let flags = match op {
            Binary::And => zip_broadcast(x, ash, y, bsh, &out, |p, q| p && q),
            Binary::Or => zip_broadcast(x, ash, y, bsh, &out, |p, q| p || q),
            _ => zip_broadcast(x, ash, y, bsh, &out, |p, q| p != q),
        };
        return Ok(Array::new(out, Data::Bool(flags)));
    }
    // Pow may have an exponent of another type; it is converted to the base's type.
    let converted;
    let b_data = if a.dtype() != b.dtype() {
        if !matches!(op, Binary::Pow) {
            return Err(format!(
                "inputs have different element types {} and {}",
                a.dtype(),
                b.dtype()
            ));
        }
        converted = if a.dtype().is_integer() {
            Data::F64(b.data.to_f64s())
        } else {
            b.data.cast(a.dtype(), false)
        };
        &converted
    } else {
        &b.data
    };
    let data = match (&a.data, b_data) {
        (Data::F32(x), Data::F32(y)) => Data::F32(binary_f32(op, x, ash, y, bsh, &out)?),
        (Data::F64(x), Data::F64(y)) => Data::F64(binary_f64(op, x, ash, y, bsh, &out)?),
        (Data::F16(_), _) | (Data::BF16(_), _) => {
            let r = binary_f32(op, &a.data.to_f32s(), ash, &b_data.to_f32s(), bsh, &out)?;
            Data::from_f32s(a.dtype(), r)
        }
        (Data::I8(x), Data::I8(y)) => Data::I8(int_binary(op, x, ash, y, bsh, &out)?),
        (Data::I16(x), Data::I16(y)) => Data::I16(int_binary(op, x, ash, y, bsh, &out)?),
        (Data::I32(x), Data::I32(y)) => Data::I32(int_binary(op, x, ash, y, bsh, &out)?),
        (Data::I64(x), Data::I64(y)) => Data::I64(int_binary(op, x, ash, y, bsh, &out)?),
        (Data::U8(x), Data::U8(y)) => Data::U8(int_binary(op, x, ash, y, bsh, &out)?),
        (Data::U16(x), Data::U16(y)) => Data::U16(int_binary(op, x, ash, y, bsh, &out)?),
        (Data::U32(x), Data::U32(y)) => Data::U32(int_binary(op, x, ash, y, bsh, &out)?),
        (Data::U64(x), Data::U64(y)) => Data::U64(int_binary(op, x, ash, y, bsh, &out)?),
        (x, Data::F64(y)) if x.dtype().is_integer() => {
            let ints = x.to_i64s();
            let r: Vec<i64> = zip_broadcast(&ints, ash, y, bsh, &out, |p, q| {
                i64::from_f64((p as f64).powf(q))
            });
            Data::from_i64s(x.dtype(), r)
        }
        (x, _) => return Err(format!("{op:?} is not defined on {}", x.dtype())),
    };
    Ok(Array::new(out, data))
}

/// Folds a variadic op pairwise over its inputs.
pub(crate) fn variadic(op: Variadic, inputs: &[&Array]) -> R<Array> {
    let first = inputs.first().ok_or("needs at least one input")?;
    let mut acc = (*first).clone();
    for next in &inputs[1..] {
        acc = match op {
            Variadic::Sum | Variadic::Mean => binary(&Binary::Add, &acc, next)?,
            Variadic::Max | Variadic::Min => min_max(op == Variadic::Max, &acc, next)?,
        };
    }
    if op == Variadic::Mean {
        let count = Array::scalar(Data::from_f64s(
            acc.dtype(),
            vec![inputs.len() as f64],
            false,
        ));
        acc = binary(&Binary::Div, &acc, &count)?;
    }
    Ok(acc)
}

fn min_max(max: bool, a: &Array, b: &Array) -> R<Array> {
    let out = broadcast_shape(&[&a.shape, &b.shape])?;
    macro_rules! pick {
        ($x:expr, $y:expr) => {
            zip_broadcast($x, &a.shape, $y, &b.shape, &out, |p, q| {
                if p != p || q != q {
                    if p != p {
                        p
                    } else {
                        q
                    }
                } else if (p >= q) == max {
                    p
                } else {
                    q
                }
            })
        };
    }
    let data = match (&a.data, &b.data) {
        (Data::F32(x), Data::F32(y)) => Data::F32(pick!(x, y)),
        (Data::F64(x), Data::F64(y)) => Data::F64(pick!(x, y)),
        (Data::F16(x), Data::F16(y)) => Data::F16(pick!(x, y)),
        (Data::BF16(x), Data::BF16(y)) => Data::BF16(pick!(x, y)),
        (Data::I8(x), Data::I8(y)) => Data::I8(pick!(x, y)),
        (Data::I16(x), Data::I16(y)) => Data::I16(pick!(x, y)),
        (Data::I32(x), Data::I32(y)) => Data::I32(pick!(x, y)),
        (Data::I64(x), Data::I64(y)) => Data::I64(pick!(x, y)),
        (Data::U8(x), Data::U8(y)) => Data::U8(pick!(x, y)),
        (Data::U16(x), Data::U16(y)) => Data::U16(pick!(x, y)),
        (Data::U32(x), Data::U32(y)) => Data::U32(pick!(x, y)),
        (Data::U64(x), Data::U64(y)) => Data::U64(pick!(x, y)),
        (x, y) => return Err(format!("Max/Min of {} and {}", x.dtype(), y.dtype())),
    };
    Ok(Array::new(out, data))
}

/// `cond ? x : y` with broadcasting.
pub(crate) fn where_(cond: &Array, x: &Array, y: &Array) -> R<Array> {
    let out = broadcast_shape(&[&cond.shape, &x.shape, &y.shape])?;
    let Data::Bool(c) = &cond.data else {
        return Err(format!("condition must be bool, found {}", cond.dtype()));
    };
    if let (Data::F32(a), Data::F32(b)) = (&x.data, &y.data) {
        // The common case (masking scores): selects straight from the broadcast operands.
        let ab = zip_broadcast(a, &x.shape, b, &y.shape, &out, |p, q| (p, q));
        let picked = zip_broadcast(
            c,
            &cond.shape,
            &ab,
            &out,
            &out,
            |keep, (p, q)| if keep { p } else { q },
        );
        return Ok(Array::f32(out, picked));
    }
    let cs = strided_indices(&out, &broadcast_strides(&cond.shape, &out), 0);
    let xs = strided_indices(&out, &broadcast_strides(&x.shape, &out), 0);
    let ys = strided_indices(&out, &broadcast_strides(&y.shape, &out), 0);
    let mut all = x.data.clone();
    all.extend_from(&y.data);
    let picks: Vec<usize> = (0..cs.len())
        .map(|i| if c[cs[i]] { xs[i] } else { x.len() + ys[i] })
        .collect();
    Ok(Array::new(out, all.take(&picks)))
}

/// `min(max(x, lo), hi)` with optional bounds.
pub(crate) fn clip(x: Array, lo: Option<&Array>, hi: Option<&Array>) -> R<Array> {
    let mut out = x;
    if let Some(lo) = lo {
        out = min_max(true, &out, lo)?;
    }
    if let Some(hi) = hi {
        out = min_max(false, &out, hi)?;
    }
    Ok(out)
}

/// ONNX `BitCast`: each element's little-endian bytes read as `to`, of the same width.
pub(crate) fn bit_cast(x: &Array, to: DType) -> R<Array> {
    if x.dtype().bits() != to.bits() {
        return Err(format!(
            "cannot reinterpret {} ({} bits) as {to} ({} bits)",
            x.dtype(),
            x.dtype().bits(),
            to.bits()
        ));
    }
    let mut tensor = x.to_tensor();
    tensor.dtype = to;
    Ok(Array::from_tensor(&tensor))
}

/// ONNX `Cast`.
pub(crate) fn cast(x: &Array, to: DType, saturate: bool, round_mode: &str) -> Array {
    let rounding = match round_mode {
        "down" => Rounding::Down,
        "nearest" => Rounding::Nearest,
        _ => Rounding::Up,
    };
    Array::new(
        x.shape.clone(),
        x.data.cast_rounding(to, saturate, rounding),
    )
}

/// `Dropout`: the identity in inference; in training, zeroes elements with probability `ratio`
/// (drawn like numpy's `RandomState(seed).uniform`) and scales the rest by `1/(1-ratio)`.
pub(crate) fn dropout(x: Array, ratio: f64, training: bool, seed: Option<i64>) -> R<Vec<Array>> {
    if !training || ratio == 0.0 {
        let mask = Array::new(x.shape.clone(), Data::Bool(vec![true; x.len()]));
        return Ok(vec![x, mask]);
    }
    if !(0.0..1.0).contains(&ratio) {
        return Err(format!("ratio {ratio} must be in [0, 1)"));
    }
    let seed = seed.map_or_else(
        || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        },
        |s| s as u32,
    );
    let mut rng = rand_mt::Mt::new(seed);
    let mask: Vec<bool> = (0..x.len())
        .map(|_| {
            let (a, b) = (rng.next_u32() >> 5, rng.next_u32() >> 6);
            (f64::from(a) * 67108864.0 + f64::from(b)) / 9007199254740992.0 >= ratio
        })
        .collect();
    let scale = Array::scalar(Data::from_f64s(x.dtype(), vec![1.0 / (1.0 - ratio)], false));
    let keep = Array::new(
        x.shape.clone(),
        Data::from_i64s(x.dtype(), mask.iter().map(|&m| i64::from(m)).collect()),
    );
    let y = binary(&Binary::Mul, &binary(&Binary::Mul, &keep, &x)?, &scale)?;
    Ok(vec![y, Array::new(x.shape.clone(), Data::Bool(mask))])
}

/// `binary`, writing into `a`'s buffer when it already has the result's shape and type.
pub(crate) fn binary_owned(op: &Binary, mut a: Array, b: &Array) -> R<Array> {
    let arithmetic = matches!(op, Binary::Add | Binary::Sub | Binary::Mul | Binary::Div);
    let fits =
        super::elementwise::broadcast_shape(&[&a.shape, &b.shape]).is_ok_and(|s| s == a.shape);
    if let (true, true, Data::F32(x), Data::F32(y)) = (arithmetic, fits, &mut a.data, &b.data) {
        match op {
            Binary::Add => zip_in_place(x, &a.shape, y, &b.shape, |p, q| p + q),
            Binary::Sub => zip_in_place(x, &a.shape, y, &b.shape, |p, q| p - q),
            Binary::Mul => zip_in_place(x, &a.shape, y, &b.shape, |p, q| p * q),
            _ => zip_in_place(x, &a.shape, y, &b.shape, |p, q| p / q),
        }
        return Ok(a);
    }
    binary(op, &a, b)
}

/// `a[i] = f(a[i], b[broadcast i])` where `a` has the full shape.
fn zip_in_place<F: Fn(f32, f32) -> f32 + Sync>(
    a: &mut [f32],
    shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    f: F,
) {
    let mut strides = [broadcast_strides(b_shape, shape)];
    let shape = coalesce(shape, &mut strides);
    let [sb] = &strides;
    let rank = shape.len();
    let inner = shape[rank - 1].max(1);
    let ib = sb[rank - 1];
    // Elements `start..start + chunk.len()`, cut where rows end.
    let range = |start: usize, chunk: &mut [f32]| {
        let mut done = 0;
        while done < chunk.len() {
            let (row, column) = ((start + done) / inner, (start + done) % inner);
            let n = (inner - column).min(chunk.len() - done);
            let (mut ob, mut rest) = (column * ib, row);
            for axis in (0..rank - 1).rev() {
                ob += (rest % shape[axis]) * sb[axis];
                rest /= shape[axis];
            }
            let piece = &mut chunk[done..done + n];
            if ib == 0 {
                let q = b[ob];
                piece.iter_mut().for_each(|p| *p = f(*p, q));
            } else {
                piece
                    .iter_mut()
                    .zip(&b[ob..ob + n])
                    .for_each(|(p, &q)| *p = f(*p, q));
            }
            done += n;
        }
    };
    if a.len() >= PARALLEL_MIN {
        let chunk = inner.clamp(1, 4096);
        a.par_chunks_mut(chunk)
            .with_min_len(min_tasks(chunk))
            .enumerate()
            .for_each(|(t, c)| range(t * chunk, c));
    } else {
        range(0, a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_cast_keeps_bits_and_refuses_other_widths() {
        let x = Array::f32(vec![2], vec![1.0, -0.0]);
        let y = bit_cast(&x, DType::I32).expect("same width");
        assert_eq!(y.data, Data::I32(vec![0x3F80_0000, i32::MIN]));
        let error = bit_cast(&x, DType::F64).expect_err("wider");
        assert!(error.contains("f32 (32 bits) as f64 (64 bits)"), "{error}");
    }

    /// Broadcast element by element from the index arithmetic alone, as the reference.
    fn broadcast_by_index(a: &Array, b: &Array, f: fn(f32, f32) -> f32) -> Vec<f32> {
        let out = broadcast_shape(&[&a.shape, &b.shape]).expect("broadcast");
        let (sa, sb) = (
            broadcast_strides(&a.shape, &out),
            broadcast_strides(&b.shape, &out),
        );
        let (x, y) = (a.data.to_f32s(), b.data.to_f32s());
        let len: usize = out.iter().product();
        (0..len)
            .map(|flat| {
                let (mut rest, mut ia, mut ib) = (flat, 0, 0);
                for axis in (0..out.len()).rev() {
                    let i = rest % out[axis];
                    rest /= out[axis];
                    ia += i * sa[axis];
                    ib += i * sb[axis];
                }
                f(x[ia], y[ib])
            })
            .collect()
    }

    #[test]
    fn broadcasting_binaries_match_index_arithmetic() {
        let ramp = |shape: &[usize], scale: f32| {
            let len: usize = shape.iter().product();
            Array::f32(
                shape.to_vec(),
                (0..len).map(|i| (i % 97) as f32 * scale - 3.0).collect(),
            )
        };
        let pairs: [(&[usize], &[usize]); 7] = [
            (&[2, 256, 20, 20], &[1, 256, 1, 1]),
            (&[2, 3, 70, 300], &[3, 1, 300]),
            (&[4, 1, 5, 6], &[4, 9, 1, 6]),
            (&[300, 200], &[200]),
            (&[64, 1, 700], &[64, 1, 1]),
            (&[1, 1, 1], &[1]),
            (&[5, 1, 7000], &[1, 3, 1]),
        ];
        for (ash, bsh) in pairs {
            let (a, b) = (ramp(ash, 0.5), ramp(bsh, 0.25));
            for (op, f) in [
                (Binary::Add, (|p, q| p + q) as fn(f32, f32) -> f32),
                (Binary::Mul, |p, q| p * q),
                (Binary::Sub, |p, q| p - q),
            ] {
                let want = broadcast_by_index(&a, &b, f);
                let got = binary(&op, &a, &b).expect("binary");
                assert_eq!(got.data.to_f32s(), want, "{op:?} {ash:?} {bsh:?}");
                let owned = binary_owned(&op, a.clone(), &b).expect("in place");
                assert_eq!(
                    owned.data.to_f32s(),
                    want,
                    "{op:?} in place, {ash:?} {bsh:?}"
                );
            }
        }
    }

    #[test]
    fn coalescing_merges_axes_read_alike() {
        let shape = [2, 3, 4, 5];
        let mut strides = [
            broadcast_strides(&[2, 3, 4, 5], &shape),
            broadcast_strides(&[3, 1, 1], &shape),
        ];
        assert_eq!(coalesce(&shape, &mut strides), vec![2, 3, 20]);
        assert_eq!(strides, [vec![60, 20, 1], vec![0, 1, 0]]);
        let mut scalar = [vec![0, 0]];
        assert_eq!(coalesce(&[1, 1], &mut scalar), vec![1]);
        assert_eq!(scalar, [vec![0]]);
    }

    #[test]
    fn fast_tanh_is_within_a_few_ulp() {
        let mut worst = 0f64;
        let xs: Vec<f32> = (-200_000..=200_000).map(|i| i as f32 * 1e-4).collect();
        let mut sliced = xs.clone();
        tanh_slice(&mut sliced);
        for (&x, &s) in xs.iter().zip(&sliced) {
            let exact = f64::from(x).tanh();
            if exact != 0.0 {
                for got in [f64::from(tanh_f32(x)), f64::from(s)] {
                    worst = worst.max(((got - exact) / exact).abs());
                }
            }
        }
        assert!(
            worst < 4.0 * f64::from(f32::EPSILON),
            "worst relative error {worst}"
        );
        assert_eq!(tanh_f32(100.0), 1.0);
        assert_eq!(tanh_f32(-100.0), -1.0);
        assert!(tanh_f32(f32::NAN).is_nan());
    }

    #[test]
    fn fast_exp_is_within_a_few_ulp() {
        let mut worst = 0f64;
        for i in -870_000..=880_000 {
            let x = i as f32 * 1e-4;
            let exact = f64::from(x).exp();
            if exact < f64::from(f32::MIN_POSITIVE) {
                continue;
            }
            worst = worst.max(((f64::from(exp_f32(x)) - exact) / exact).abs());
        }
        assert!(
            worst < 3.0 * f64::from(f32::EPSILON),
            "worst relative error {worst}"
        );
        assert_eq!(exp_f32(-1000.0), 0.0);
        assert_eq!(exp_f32(1000.0), f32::INFINITY);
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn fast_erf_is_within_a_few_ulp() {
        let mut worst = 0f64;
        let xs: Vec<f32> = (-100_000..=100_000).map(|i| i as f32 * 1e-4).collect();
        let mut sliced = xs.clone();
        erf_slice(&mut sliced);
        for (&x, &s) in xs.iter().zip(&sliced) {
            let exact = libm::erf(f64::from(x));
            if exact != 0.0 {
                for got in [f64::from(erf_f32(x)), f64::from(s)] {
                    worst = worst.max(((got - exact) / exact).abs());
                }
            }
        }
        assert!(
            worst < 4.0 * f64::from(f32::EPSILON),
            "worst relative error {worst}"
        );
        assert_eq!(erf_f32(10.0), 1.0);
        assert_eq!(erf_f32(-10.0), -1.0);
        assert_eq!(erf_f32(0.0), 0.0);
    }

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(
            broadcast_shape(&[&[2, 1, 3], &[4, 1]]).unwrap(),
            vec![2, 4, 3]
        );
        assert!(broadcast_shape(&[&[2, 3], &[4]]).is_err());
        let a = Array::f32(vec![2, 1], vec![1.0, 2.0]);
        let b = Array::f32(vec![3], vec![10.0, 20.0, 30.0]);
        let sum = binary(&Binary::Add, &a, &b).unwrap();
        assert_eq!(sum.shape, vec![2, 3]);
        assert_eq!(
            sum.data,
            Data::F32(vec![11.0, 21.0, 31.0, 12.0, 22.0, 32.0])
        );
        let in_place =
            binary_owned(&Binary::Sub, Array::f32(vec![2, 3], vec![1.0; 6]), &a).unwrap();
        assert_eq!(
            in_place.data,
            Data::F32(vec![0.0, 0.0, 0.0, -1.0, -1.0, -1.0])
        );
    }
}
