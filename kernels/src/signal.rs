//! Fourier transforms: `DFT` (forward or inverse, full or one-sided, along any axis, over a
//! length that pads or truncates) and `STFT` (windowed frames of a signal). Each thread
//! computes one complex output bin as a direct sum over its samples, its twiddle factors read
//! from tables indexed by the phase reduced to one turn in integers.
//!
//! Reference: the CPU executor's `DFT` and `STFT`.

use crate::cg::{Cg, Gen, Val};
use crate::movement::{coords, linear};
use crate::{resolve_axis, Family, Generated, KernelError, Launch, Request};
use inkwell::context::Context;
use inkwell::values::{FloatValue, IntValue};
use sparkc_ir::{Dim, Op};
use std::f64::consts::PI;

/// Threads per block.
const BLOCK: u32 = 256;

/// True for the ops this family generates.
pub fn handles(op: &Op) -> bool {
    matches!(op, Op::Dft { .. } | Op::Stft { .. })
}

/// A static size, or an error naming what needs it.
fn fixed(d: &Dim, what: &str) -> Gen<i64> {
    d.as_const()
        .ok_or_else(|| KernelError::Unsupported(format!("{what} must be known at compile time")))
}

/// The optional scalar input `slot`'s compile-time value.
fn known_scalar(req: &Request, slot: usize) -> Gen<Option<i64>> {
    match req.inputs.get(slot) {
        Some(Some(_)) => Ok(req.known_ints(slot)?.first().copied()),
        _ => Ok(None),
    }
}

/// The most points a transform may have: its twiddle factors are two tables of this many
/// `f32`s in the kernel's module.
const MAX_POINTS: i64 = 1 << 14;

/// `e^(±2πi·p/n)` for `p` in `0..n`, as `(cos, sin)` tables rounded once from f64, so that
/// symmetric terms cancel as exactly as the data allows.
struct Twiddles<'ctx> {
    cos: inkwell::values::PointerValue<'ctx>,
    sin: inkwell::values::PointerValue<'ctx>,
}

impl<'ctx> Twiddles<'ctx> {
    fn new(cg: &mut Cg<'ctx>, n: i64, sign: f64) -> Gen<Twiddles<'ctx>> {
        if !(1..=MAX_POINTS).contains(&n) {
            return Err(KernelError::Unsupported(format!(
                "a transform of {n} points (the kernel takes 1 to {MAX_POINTS})"
            )));
        }
        let angle = |p: i64| sign * 2.0 * PI * p as f64 / n as f64;
        let cos: Vec<f32> = (0..n).map(|p| angle(p).cos() as f32).collect();
        let sin: Vec<f32> = (0..n).map(|p| angle(p).sin() as f32).collect();
        Ok(Twiddles {
            cos: cg.f32_table(&cos),
            sin: cg.f32_table(&sin),
        })
    }

    fn at(&self, cg: &Cg<'ctx>, p: IntValue<'ctx>) -> Gen<(FloatValue<'ctx>, FloatValue<'ctx>)> {
        let f32t = cg.f32t().into();
        let c = cg.load_raw(f32t, self.cos, p)?.into_float_value();
        let s = cg.load_raw(f32t, self.sin, p)?.into_float_value();
        Ok((c, s))
    }
}

/// `sum_t sample(t) · e^(±2πi·k·t/n)` over `t` in `0..count`, divided by `n` when `inverse`:
/// `(re, im)`.
fn bin<'ctx>(
    cg: &mut Cg<'ctx>,
    twiddles: &Twiddles<'ctx>,
    k: IntValue<'ctx>,
    (n, count): (i64, i64),
    inverse: bool,
    sample: impl Fn(&Cg<'ctx>, IntValue<'ctx>) -> Gen<(FloatValue<'ctx>, FloatValue<'ctx>)>,
) -> Gen<(FloatValue<'ctx>, FloatValue<'ctx>)> {
    let zero = cg.f(0.0);
    let sums = cg.fold_range(
        cg.c(0),
        cg.c(count),
        cg.c(1),
        vec![zero.into(), zero.into()],
        |cg, t, acc| {
            let (re, im) = sample(cg, t)?;
            let phase = cg.rem(cg.mul(k, t)?, cg.c(n))?;
            let (c, s) = twiddles.at(cg, phase)?;
            let (sr, si) = (acc[0].into_float_value(), acc[1].into_float_value());
            let sr = cg.fma(re, c, cg.fma(cg.fneg(im)?, s, sr)?)?;
            let si = cg.fma(re, s, cg.fma(im, c, si)?)?;
            Ok(vec![sr.into(), si.into()])
        },
    )?;
    let (mut re, mut im) = (sums[0].into_float_value(), sums[1].into_float_value());
    if inverse {
        re = cg.fdiv(re, cg.f(n as f64))?;
        im = cg.fdiv(im, cg.f(n as f64))?;
    }
    Ok((re, im))
}

/// Generates the kernel of a `DFT` or `STFT` node.
pub fn generate<'ctx>(cx: &'ctx Context, req: &Request) -> Gen<Generated<'ctx>> {
    let mut cg = req.begin(cx, BLOCK);
    let variant = match req.op {
        Op::Dft { inverse, onesided } => {
            dft(&mut cg, req, *inverse, *onesided)?;
            "direct dft"
        }
        Op::Stft { .. } => {
            stft(&mut cg, req)?;
            "direct stft"
        }
        other => {
            return Err(KernelError::Unsupported(format!(
                "{} is not a Fourier transform",
                other.name()
            )))
        }
    };
    let out = &req.outputs[0].shape;
    let bins = crate::product(&out[..out.len().saturating_sub(1)]);
    let launch = Launch {
        grid: bins.ceil_div(&Dim::known(i64::from(BLOCK))),
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

/// Runs `body` once per complex output element (every output coordinate but the last axis),
/// and stores the `(re, im)` it returns; a real output (last axis 1) keeps only `re`.
fn each_bin<'ctx>(
    cg: &mut Cg<'ctx>,
    req: &Request,
    mut body: impl FnMut(&mut Cg<'ctx>, &[IntValue<'ctx>]) -> Gen<(FloatValue<'ctx>, FloatValue<'ctx>)>,
) -> Gen<()> {
    let out = req.outputs[0].clone();
    let rank = out.shape.len();
    let parts = fixed(&out.shape[rank - 1], "the output's last axis")?;
    let shape = out.shape[..rank - 1].to_vec();
    let n = cg.product(&shape)?;
    cg.for_each_thread_item(cg.c(0), n, |cg, idx| {
        let oc = coords(cg, idx, &shape)?;
        let (re, im) = body(cg, &oc)?;
        let at = cg.mul(idx, cg.c(parts))?;
        cg.store(out.dtype, cg.buffer(0), at, Val::F(re))?;
        if parts == 2 {
            let next = cg.add(at, cg.c(1))?;
            cg.store(out.dtype, cg.buffer(0), next, Val::F(im))?;
        }
        Ok(())
    })
}

/// `DFT`; inputs `x, dft_length?, axis?` (both constant).
fn dft<'ctx>(cg: &mut Cg<'ctx>, req: &Request, inverse: bool, onesided: bool) -> Gen<()> {
    let x = req.input(0)?.clone();
    let rank = x.shape.len();
    let channels = match x.shape.last() {
        Some(d) if rank >= 2 => fixed(d, "the input's last axis")?,
        _ => 0,
    };
    if !(1..=2).contains(&channels) {
        return Err(KernelError::Unsupported(
            "DFT input must end in an axis of 1 (real) or 2 (complex)".into(),
        ));
    }
    let a = resolve_axis(known_scalar(req, 2)?.unwrap_or(-2), rank)?;
    if a == rank - 1 {
        return Err(KernelError::Unsupported(
            "DFT along the complex axis".into(),
        ));
    }
    let len = fixed(&x.shape[a], "the transformed axis")?;
    // An inverse one-sided transform reads half a Hermitian spectrum: sample t ≥ len is the
    // conjugate of sample n − t.
    let real_inverse = inverse && onesided;
    let n = match known_scalar(req, 1)? {
        Some(n) => n,
        None if real_inverse => 2 * (len - 1),
        None => len,
    };
    if real_inverse && n / 2 + 1 > len {
        return Err(KernelError::Unsupported(format!(
            "a one-sided inverse DFT of {n} points needs {} input bins, not {len}",
            n / 2 + 1
        )));
    }
    let count = if real_inverse { n } else { n.min(len) };
    let input = req.input_param(0);
    let twiddles = Twiddles::new(cg, n, if inverse { 1.0 } else { -1.0 })?;
    each_bin(cg, req, |cg, oc| {
        let k = oc[a];
        let sample = |cg: &Cg<'ctx>, t: IntValue<'ctx>| {
            let mirrored = cg.icmp(inkwell::IntPredicate::SGE, t, cg.c(len))?;
            let from = if real_inverse {
                cg.select(mirrored, cg.sub(cg.c(n), t)?, t)?
                    .into_int_value()
            } else {
                t
            };
            let mut at = oc.to_vec();
            at[a] = from;
            at.push(cg.c(0));
            let off = linear(cg, &at, &x.shape)?;
            let re = cg.load(x.dtype, cg.buffer(input), off)?.float(cg)?;
            let im = if channels == 2 {
                let next = cg.add(off, cg.c(1))?;
                let im = cg.load(x.dtype, cg.buffer(input), next)?.float(cg)?;
                if real_inverse {
                    cg.fsel(mirrored, cg.fneg(im)?, im)?
                } else {
                    im
                }
            } else {
                cg.f(0.0)
            };
            Ok((re, im))
        };
        bin(cg, &twiddles, k, (n, count), inverse, sample)
    })
}

/// `STFT`; inputs `signal [batch, length, 1|2], frame_step, window?, frame_length?` (the step
/// and length constant). One-sided output only has fewer bins.
fn stft<'ctx>(cg: &mut Cg<'ctx>, req: &Request) -> Gen<()> {
    let x = req.input(0)?.clone();
    if x.shape.len() != 3 {
        return Err(KernelError::Unsupported(
            "STFT signal must be [batch, length, 1|2]".into(),
        ));
    }
    let channels = fixed(&x.shape[2], "the signal's last axis")?;
    let step = known_scalar(req, 1)?
        .ok_or_else(|| KernelError::Unsupported("STFT needs frame_step".into()))?;
    let window = req.inputs.get(2).cloned().flatten();
    let frame = match known_scalar(req, 3)? {
        Some(l) => l,
        None => match &window {
            Some(w) => fixed(&w.shape[0], "the window length")?,
            None => {
                return Err(KernelError::Unsupported(
                    "STFT needs a window or frame_length".into(),
                ))
            }
        },
    };
    if step <= 0 || frame <= 0 {
        return Err(KernelError::Unsupported(format!(
            "STFT frame_step {step} and frame_length {frame}"
        )));
    }
    let input = req.input_param(0);
    // The window's buffer and element type.
    let window = window.map(|w| (req.input_param(2), w.dtype));
    let twiddles = Twiddles::new(cg, frame, -1.0)?;
    each_bin(cg, req, |cg, oc| {
        // Output [batch, frame, bin]: sample t of frame f is signal[start + t].
        let (b, f, k) = (oc[0], oc[1], oc[2]);
        let start = cg.mul(f, cg.c(step))?;
        let sample = |cg: &Cg<'ctx>, t: IntValue<'ctx>| {
            let at = [b, cg.add(start, t)?, cg.c(0)];
            let off = linear(cg, &at, &x.shape)?;
            let mut re = cg.load(x.dtype, cg.buffer(input), off)?.float(cg)?;
            let mut im = if channels == 2 {
                let next = cg.add(off, cg.c(1))?;
                cg.load(x.dtype, cg.buffer(input), next)?.float(cg)?
            } else {
                cg.f(0.0)
            };
            if let Some((param, dtype)) = window {
                let w = cg.load(dtype, cg.buffer(param), t)?.float(cg)?;
                re = cg.fmul(re, w)?;
                im = cg.fmul(im, w)?;
            }
            Ok((re, im))
        };
        bin(cg, &twiddles, k, (frame, frame), false, sample)
    })
}
