//! Block-scaled 4-bit formats: NVFP4 (E2M1 values, an E4M3 scale per 16 and an f32 scale per
//! tensor) and MXFP4 (E2M1 values, an E8M0 power-of-two scale per 32).

use super::minifloat::{decode, encode, Rounding};
use crate::dtype::DType;
use crate::error::{IrError, Result};

/// A block-scaled 4-bit format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockFormat {
    /// NVIDIA's NVFP4: 16 E2M1 values share an E4M3 scale; the tensor has one f32 scale.
    Nvfp4,
    /// OCP MXFP4: 32 E2M1 values share an E8M0 scale.
    Mxfp4,
}

/// The largest E2M1 magnitude.
const E2M1_MAX: f32 = 6.0;
/// The largest E4M3 magnitude.
const E4M3_MAX: f32 = 448.0;
/// The exponent of E2M1's largest binade (6 = 1.5 · 2²), which MX scales are chosen against.
const E2M1_MAX_EXPONENT: i32 = 2;

impl BlockFormat {
    /// Values per scale.
    pub fn block_size(self) -> usize {
        match self {
            BlockFormat::Nvfp4 => 16,
            BlockFormat::Mxfp4 => 32,
        }
    }

    /// Element type of the block scales.
    pub fn scale_dtype(self) -> DType {
        match self {
            BlockFormat::Nvfp4 => DType::F8E4M3FN,
            BlockFormat::Mxfp4 => DType::F8E8M0,
        }
    }

    /// The NVFP4 tensor scale for a tensor whose largest magnitude is `amax` (so its largest
    /// block scale is E4M3's largest value); 1 for MXFP4.
    pub fn tensor_scale(self, amax: f32) -> f32 {
        match self {
            BlockFormat::Nvfp4 if amax > 0.0 => amax / (E2M1_MAX * E4M3_MAX),
            _ => 1.0,
        }
    }

    /// Lower-case name, `nvfp4` or `mxfp4`.
    pub fn name(self) -> &'static str {
        match self {
            BlockFormat::Nvfp4 => "nvfp4",
            BlockFormat::Mxfp4 => "mxfp4",
        }
    }
}

/// A tensor quantized to a block-scaled format, blocked along one axis.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockQuantized {
    /// The format.
    pub format: BlockFormat,
    /// Shape of the quantized tensor.
    pub shape: Vec<usize>,
    /// The axis the blocks run along.
    pub axis: usize,
    /// E2M1 codes, one per byte, in the tensor's row-major order.
    pub codes: Vec<u8>,
    /// Block scale codes, row-major over [`BlockQuantized::scale_shape`].
    pub scales: Vec<u8>,
    /// The per-tensor scale (NVFP4; 1 for MXFP4).
    pub tensor_scale: f32,
}

/// The row-major layout of a tensor split around one axis.
#[derive(Clone, Copy)]
struct Around {
    outer: usize,
    len: usize,
    inner: usize,
}

impl Around {
    fn new(shape: &[usize], axis: usize) -> Result<Around> {
        if axis >= shape.len() {
            return Err(IrError::Graph(format!(
                "cannot block axis {axis} of a tensor of shape {shape:?}"
            )));
        }
        Ok(Around {
            outer: shape[..axis].iter().product(),
            len: shape[axis],
            inner: shape[axis + 1..].iter().product(),
        })
    }
}

impl BlockQuantized {
    /// Quantizes `data` of `shape` with blocks of consecutive elements along `axis` (the last
    /// block may be short).
    pub fn quantize(
        format: BlockFormat,
        data: &[f32],
        shape: &[usize],
        axis: usize,
    ) -> Result<BlockQuantized> {
        if let Some(bad) = data.iter().find(|v| !v.is_finite()) {
            return Err(IrError::Graph(format!(
                "cannot quantize a tensor holding {bad} to {}",
                format.name()
            )));
        }
        let amax = data.iter().fold(0f32, |m, v| m.max(v.abs()));
        BlockQuantized::quantize_with(format, data, shape, axis, format.tensor_scale(amax))
    }

    /// Quantizes `data` as [`BlockQuantized::quantize`] does, with a given NVFP4 tensor scale
    /// (ignored by MXFP4). Non-finite values are quantized as the E2M1 codec takes them.
    pub fn quantize_with(
        format: BlockFormat,
        data: &[f32],
        shape: &[usize],
        axis: usize,
        tensor_scale: f32,
    ) -> Result<BlockQuantized> {
        let around = Around::new(shape, axis)?;
        if data.len() != shape.iter().product::<usize>() {
            return Err(IrError::Graph(format!(
                "{} values do not fill shape {shape:?}",
                data.len()
            )));
        }
        let tensor_scale = match format {
            BlockFormat::Nvfp4 => tensor_scale,
            BlockFormat::Mxfp4 => 1.0,
        };
        let block = format.block_size();
        let blocks = around.len.div_ceil(block);
        let mut codes = vec![0u8; data.len()];
        let mut scales = vec![0u8; around.outer * blocks * around.inner];
        let element = |o: usize, j: usize, i: usize| (o * around.len + j) * around.inner + i;
        for o in 0..around.outer {
            for b in 0..blocks {
                let rows = b * block..((b + 1) * block).min(around.len);
                for i in 0..around.inner {
                    let block_amax = rows
                        .clone()
                        .fold(0f32, |m, j| m.max(data[element(o, j, i)].abs()));
                    let (code, scale) = block_scale(format, block_amax, tensor_scale);
                    scales[(o * blocks + b) * around.inner + i] = code;
                    for j in rows.clone() {
                        let at = element(o, j, i);
                        codes[at] = if scale > 0.0 {
                            encode(
                                DType::F4E2M1,
                                f64::from(data[at] / scale),
                                true,
                                Rounding::Nearest,
                            )
                        } else {
                            0
                        };
                    }
                }
            }
        }
        Ok(BlockQuantized {
            format,
            shape: shape.to_vec(),
            axis,
            codes,
            scales,
            tensor_scale,
        })
    }

    /// Shape of the block scales: the tensor's, with the blocked axis divided by the block size.
    pub fn scale_shape(&self) -> Vec<usize> {
        let mut shape = self.shape.clone();
        shape[self.axis] = shape[self.axis].div_ceil(self.format.block_size());
        shape
    }

    /// The E2M1 codes packed two to a byte, low nibble first (ONNX's layout).
    pub fn packed_codes(&self) -> Vec<u8> {
        self.codes
            .chunks(2)
            .map(|pair| (pair[0] & 0xF) | (pair.get(1).copied().unwrap_or(0) << 4))
            .collect()
    }

    /// The values the codes stand for.
    pub fn dequantize(&self) -> Vec<f32> {
        let Ok(around) = Around::new(&self.shape, self.axis) else {
            return Vec::new();
        };
        let block = self.format.block_size();
        let blocks = around.len.div_ceil(block);
        let mut out = vec![0f32; self.codes.len()];
        for (at, value) in out.iter_mut().enumerate() {
            let (o, j, i) = (
                at / (around.len * around.inner),
                (at / around.inner) % around.len,
                at % around.inner,
            );
            let scale_code = self.scales[(o * blocks + j / block) * around.inner + i];
            let scale = decode(self.format.scale_dtype(), scale_code) as f32 * self.tensor_scale;
            *value = decode(DType::F4E2M1, self.codes[at]) as f32 * scale;
        }
        out
    }
}

/// The scale code for a block whose largest magnitude is `block_amax`, and the scale it
/// stands for (tensor scale included).
fn block_scale(format: BlockFormat, block_amax: f32, tensor_scale: f32) -> (u8, f32) {
    match format {
        BlockFormat::Nvfp4 => {
            let wanted = block_amax / E2M1_MAX / tensor_scale;
            let code = encode(DType::F8E4M3FN, f64::from(wanted), true, Rounding::Nearest);
            (code, decode(DType::F8E4M3FN, code) as f32 * tensor_scale)
        }
        BlockFormat::Mxfp4 => {
            if block_amax == 0.0 {
                return (0, decode(DType::F8E8M0, 0) as f32);
            }
            let binade = (f64::from(block_amax).to_bits() >> 52) as i32 - 1023;
            let exponent = (binade - E2M1_MAX_EXPONENT).clamp(-127, 127);
            let code = (exponent + 127) as u8;
            (code, decode(DType::F8E8M0, code) as f32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvfp4_keeps_each_block_within_its_scale() {
        let data: Vec<f32> = (0..64).map(|i| ((i * 37) % 23) as f32 - 11.0).collect();
        let q = BlockQuantized::quantize(BlockFormat::Nvfp4, &data, &[2, 32], 1).unwrap();
        assert_eq!(q.scale_shape(), vec![2, 2]);
        assert_eq!(q.packed_codes().len(), 32);
        let back = q.dequantize();
        let amax = data.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (x, y) in data.iter().zip(&back) {
            assert!((x - y).abs() <= amax / 6.0, "{x} became {y}");
        }
        let top = back.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!((top - amax).abs() <= amax * 1e-6, "{top} != {amax}");
    }

    #[test]
    fn mxfp4_scales_are_powers_of_two_along_any_axis() {
        let data: Vec<f32> = (0..80).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let q = BlockQuantized::quantize(BlockFormat::Mxfp4, &data, &[40, 2], 0).unwrap();
        assert_eq!(q.scale_shape(), vec![2, 2]);
        let err = data
            .iter()
            .zip(q.dequantize())
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(err <= 0.5, "max error {err}");
        assert!(BlockQuantized::quantize(BlockFormat::Mxfp4, &data, &[40, 2], 2).is_err());
        assert!(BlockQuantized::quantize(BlockFormat::Mxfp4, &[f32::NAN], &[1], 0).is_err());
    }
}
