//! Symmetric per-channel quantization to FP8 or INT8, with one f32 scale per channel.

use super::minifloat::{decode, encode, max_finite, round_half_even, Rounding};
use crate::dtype::DType;
use crate::error::{IrError, Result};

/// A tensor quantized with one scale per index of its channel axis.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelQuantized {
    /// Element type of the codes: an FP8 type or i8.
    pub dtype: DType,
    /// Shape of the quantized tensor.
    pub shape: Vec<usize>,
    /// The channel axis.
    pub axis: usize,
    /// One code byte per element, in the tensor's row-major order.
    pub codes: Vec<u8>,
    /// One scale per channel: `value ≈ decode(code) · scale`.
    pub scales: Vec<f32>,
}

/// Quantizes `data` of `shape` to `dtype` with one scale per index of `axis`, chosen so that
/// each channel's largest magnitude maps to the format's largest value.
pub fn quantize_channels(
    dtype: DType,
    data: &[f32],
    shape: &[usize],
    axis: usize,
) -> Result<ChannelQuantized> {
    let top = match dtype {
        DType::I8 => 127.0,
        DType::F8E4M3FN | DType::F8E5M2 => max_finite(dtype).unwrap_or(1.0) as f32,
        other => {
            return Err(IrError::Graph(format!(
                "per-channel quantization to {other} is not supported (f8e4m3fn, f8e5m2, i8)"
            )))
        }
    };
    if axis >= shape.len() || data.len() != shape.iter().product::<usize>() {
        return Err(IrError::Graph(format!(
            "cannot quantize {} values of shape {shape:?} per channel of axis {axis}",
            data.len()
        )));
    }
    let (len, inner) = (shape[axis], shape[axis + 1..].iter().product::<usize>());
    let channel = |at: usize| (at / inner.max(1)) % len.max(1);
    let mut amax = vec![0f32; len];
    for (at, v) in data.iter().enumerate() {
        if !v.is_finite() {
            return Err(IrError::Graph(format!(
                "cannot quantize a tensor holding {v} to {dtype}"
            )));
        }
        let c = &mut amax[channel(at)];
        *c = c.max(v.abs());
    }
    let scales: Vec<f32> = amax
        .iter()
        .map(|&m| if m > 0.0 { m / top } else { 1.0 })
        .collect();
    let codes = data
        .iter()
        .enumerate()
        .map(|(at, &v)| {
            let q = v / scales[channel(at)];
            if dtype == DType::I8 {
                round_half_even(f64::from(q)).clamp(-127.0, 127.0) as i8 as u8
            } else {
                encode(dtype, f64::from(q), true, Rounding::Nearest)
            }
        })
        .collect();
    Ok(ChannelQuantized {
        dtype,
        shape: shape.to_vec(),
        axis,
        codes,
        scales,
    })
}

impl ChannelQuantized {
    /// The values the codes stand for.
    pub fn dequantize(&self) -> Vec<f32> {
        let len = self.shape[self.axis].max(1);
        let inner = self.shape[self.axis + 1..].iter().product::<usize>().max(1);
        self.codes
            .iter()
            .enumerate()
            .map(|(at, &c)| {
                let v = if self.dtype == DType::I8 {
                    f32::from(c as i8)
                } else {
                    decode(self.dtype, c) as f32
                };
                v * self.scales[(at / inner) % len]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_channel_reaches_the_format_maximum() {
        let data = [1.0, -2.0, 0.5, 8.0, 0.0, 0.0];
        let q = quantize_channels(DType::F8E4M3FN, &data, &[3, 2], 1).unwrap();
        assert_eq!(q.scales, vec![1.0 / 448.0, 8.0 / 448.0]);
        assert_eq!(decode(DType::F8E4M3FN, q.codes[3]), 448.0);
        let back = q.dequantize();
        for (x, y) in data.iter().zip(&back) {
            assert!((x - y).abs() <= x.abs() / 16.0, "{x} became {y}");
        }
        let i = quantize_channels(DType::I8, &data, &[3, 2], 0).unwrap();
        assert_eq!(i.scales[2], 1.0);
        assert_eq!(i.codes[1] as i8, -127);
        assert!(quantize_channels(DType::F16, &data, &[3, 2], 0).is_err());
    }
}
