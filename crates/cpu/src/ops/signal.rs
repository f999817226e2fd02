//! Signal processing: window functions, `DFT`, `STFT` and `MelWeightMatrix`.

use super::{axis, Args, R};
use crate::array::{Array, Data};
use sparkc_ir::op::WindowKind;
use sparkc_ir::DType;
use std::f64::consts::PI;

/// Hann, Hamming or Blackman window of `size` samples.
pub(crate) fn window(kind: WindowKind, size: &[i64], dtype: DType, periodic: bool) -> R<Array> {
    let n = *size.first().ok_or("size is empty")?;
    if n < 0 {
        return Err(format!("size {n} is negative"));
    }
    let n = n as usize;
    let denominator = if periodic {
        n as f64
    } else {
        (n as f64 - 1.0).max(1.0)
    };
    let values: Vec<f64> = (0..n)
        .map(|i| {
            let t = 2.0 * PI * i as f64 / denominator;
            match kind {
                WindowKind::Hann => 0.5 - 0.5 * t.cos(),
                WindowKind::Hamming => 25.0 / 46.0 - (1.0 - 25.0 / 46.0) * t.cos(),
                WindowKind::Blackman => 0.42 - 0.5 * t.cos() + 0.08 * (2.0 * t).cos(),
            }
        })
        .collect();
    Ok(Array::new(vec![n], Data::from_f64s(dtype, values, false)))
}

/// The DFT of one complex lane (`re`, `im`) at `n` points (zero-padded or truncated).
fn transform(re: &[f64], im: &[f64], n: usize, bins: usize, inverse: bool) -> Vec<(f64, f64)> {
    let sign = if inverse { 1.0 } else { -1.0 };
    (0..bins)
        .map(|k| {
            let (mut sr, mut si) = (0.0, 0.0);
            for t in 0..n.min(re.len()) {
                let angle = sign * 2.0 * PI * (k * t % n.max(1)) as f64 / n as f64;
                let (c, s) = (angle.cos(), angle.sin());
                sr += re[t] * c - im[t] * s;
                si += re[t] * s + im[t] * c;
            }
            if inverse {
                (sr / n as f64, si / n as f64)
            } else {
                (sr, si)
            }
        })
        .collect()
}

/// ONNX `DFT`; inputs `x, dft_length?, axis?`.
pub(crate) fn dft(args: &Args, inverse: bool, onesided: bool) -> R<Array> {
    let x = args.tensor(0)?;
    let rank = x.rank();
    if rank < 2 || !(1..=2).contains(&x.shape[rank - 1]) {
        return Err(format!(
            "input must end in a dim of 1 (real) or 2 (complex), found {:?}",
            x.shape
        ));
    }
    let ax = args
        .opt_ints(2)?
        .and_then(|v| v.first().copied())
        .unwrap_or(-2);
    let a = axis(ax, rank)?;
    if a == rank - 1 {
        return Err("axis must not be the last (complex) axis".into());
    }
    let len = x.shape[a];
    // An inverse one-sided transform takes half a Hermitian spectrum and returns a real signal.
    let real_inverse = inverse && onesided;
    let default_n = if real_inverse {
        2 * len.saturating_sub(1)
    } else {
        len
    };
    let n = args
        .opt_ints(1)?
        .and_then(|v| v.first().copied())
        .map_or(default_n, |v| v.max(0) as usize);
    let bins = if onesided && !inverse { n / 2 + 1 } else { n };
    let complex = x.shape[rank - 1] == 2;
    let values = x.data.to_f64s();
    let outer: usize = x.shape[..a].iter().product();
    let inner: usize = x.shape[a + 1..rank - 1].iter().product();
    let c_in = x.shape[rank - 1];
    let mut out = vec![0.0; outer * bins * inner * 2];
    for o in 0..outer {
        for i in 0..inner {
            let at = |t: usize, part: usize| values[((o * len + t) * inner + i) * c_in + part];
            let mut re: Vec<f64> = (0..len).map(|t| at(t, 0)).collect();
            let mut im: Vec<f64> = (0..len)
                .map(|t| if complex { at(t, 1) } else { 0.0 })
                .collect();
            if real_inverse {
                let half = len;
                re.resize(n, 0.0);
                im.resize(n, 0.0);
                for k in half..n {
                    re[k] = re[n - k];
                    im[k] = -im[n - k];
                }
            }
            for (k, (r, m)) in transform(&re, &im, n, bins, inverse)
                .into_iter()
                .enumerate()
            {
                let p = ((o * bins + k) * inner + i) * 2;
                out[p] = r;
                out[p + 1] = m;
            }
        }
    }
    let mut shape = x.shape.clone();
    shape[a] = bins;
    shape[rank - 1] = 2;
    if real_inverse {
        out = out.into_iter().step_by(2).collect();
        shape[rank - 1] = 1;
    }
    Ok(Array::new(shape, Data::from_f64s(x.dtype(), out, false)))
}

/// ONNX `STFT`; inputs `signal, frame_step, window?, frame_length?`.
pub(crate) fn stft(args: &Args, onesided: bool) -> R<Array> {
    let x = args.tensor(0)?;
    let [batch, length, channels] = x.shape[..] else {
        return Err(format!(
            "signal must be [batch, length, 1|2], found {:?}",
            x.shape
        ));
    };
    let step = args
        .ints(1)?
        .first()
        .copied()
        .ok_or("frame_step is empty")?;
    let window = args.opt_tensor(2)?.map(|w| w.data.to_f64s());
    let frame = match args.opt_ints(3)? {
        Some(v) => *v.first().ok_or("frame_length is empty")? as usize,
        None => window
            .as_ref()
            .map(Vec::len)
            .ok_or("either window or frame_length is needed")?,
    };
    if step <= 0 || frame == 0 || frame > length {
        return Err(format!(
            "frame_step {step} and frame_length {frame} do not fit a signal of {length}"
        ));
    }
    let frames = (length - frame) / step as usize + 1;
    let bins = if onesided { frame / 2 + 1 } else { frame };
    let values = x.data.to_f64s();
    let mut out = vec![0.0; batch * frames * bins * 2];
    for b in 0..batch {
        for f in 0..frames {
            let start = f * step as usize;
            let w = |t: usize| window.as_ref().map_or(1.0, |w| w[t]);
            let re: Vec<f64> = (0..frame)
                .map(|t| values[(b * length + start + t) * channels] * w(t))
                .collect();
            let im: Vec<f64> = (0..frame)
                .map(|t| {
                    if channels == 2 {
                        values[(b * length + start + t) * channels + 1] * w(t)
                    } else {
                        0.0
                    }
                })
                .collect();
            for (k, (r, m)) in transform(&re, &im, frame, bins, false)
                .into_iter()
                .enumerate()
            {
                let p = ((b * frames + f) * bins + k) * 2;
                out[p] = r;
                out[p + 1] = m;
            }
        }
    }
    Ok(Array::new(
        vec![batch, frames, bins, 2],
        Data::from_f64s(x.dtype(), out, false),
    ))
}

/// ONNX `MelWeightMatrix`; inputs `num_mel_bins, dft_length, sample_rate, lower_hz, upper_hz`.
pub(crate) fn mel_weight_matrix(args: &Args, dtype: DType) -> R<Array> {
    let scalar = |i: usize| -> R<f64> {
        args.tensor(i)?
            .data
            .to_f64s()
            .first()
            .copied()
            .ok_or_else(|| format!("input {i} is empty"))
    };
    let (mel_bins, dft_length, rate) = (scalar(0)? as i64, scalar(1)? as i64, scalar(2)? as i64);
    let (low, high) = (scalar(3)?, scalar(4)?);
    if mel_bins <= 0 || dft_length <= 0 || rate <= 0 {
        return Err("num_mel_bins, dft_length and sample_rate must be positive".into());
    }
    let spectrum = (dft_length / 2 + 1) as usize;
    let to_mel = |hz: f64| 2595.0 * (1.0 + hz / 700.0).log10();
    let (low_mel, high_mel) = (to_mel(low), to_mel(high));
    let step = (high_mel - low_mel) / (mel_bins + 2) as f64;
    let points: Vec<i64> = (0..mel_bins + 2)
        .map(|i| {
            let hz = 700.0 * (10f64.powf((i as f64 * step + low_mel) / 2595.0) - 1.0);
            (((dft_length + 1) as f64 * hz) / rate as f64).floor() as i64
        })
        .collect();
    let m = mel_bins as usize;
    let mut out = vec![0.0; spectrum * m];
    let mut set = |j: i64, i: usize, v: f64| {
        if (0..spectrum as i64).contains(&j) {
            out[j as usize * m + i] = v;
        }
    };
    for i in 0..m {
        let (lo, center, hi) = (points[i], points[i + 1], points[i + 2]);
        if center == lo {
            set(center, i, 1.0);
        } else {
            for j in lo..=center {
                set(j, i, (j - lo) as f64 / (center - lo) as f64);
            }
        }
        if hi > center {
            for j in center..hi {
                set(j, i, (hi - j) as f64 / (hi - center) as f64);
            }
        }
    }
    Ok(Array::new(
        vec![spectrum, m],
        Data::from_f64s(dtype, out, false),
    ))
}
