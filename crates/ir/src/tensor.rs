//! Constant tensors: weights, `Constant` nodes and values bound at compile time.

use crate::dtype::DType;
use crate::error::{IrError, Result};
use bytes::Bytes;
use half::{bf16, f16};
use std::fmt;

/// A constant tensor whose bytes are shared, never copied, between every node that uses it.
///
/// The data is little-endian and tightly packed (4-bit types two to a byte, low nibble first).
/// `Bytes` lets it borrow from a memory-mapped file or own a buffer taken from the parser.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    /// Element type.
    pub dtype: DType,
    /// Static shape; an empty shape is a scalar.
    pub shape: Vec<usize>,
    /// Packed little-endian element data.
    pub data: Bytes,
}

impl Tensor {
    /// Wraps bytes as a tensor, checking that their length matches the dtype and shape.
    pub fn new(dtype: DType, shape: Vec<usize>, data: Bytes) -> Result<Tensor> {
        let count = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| {
                IrError::Graph(format!(
                    "tensor shape {shape:?} has more elements than fit in memory"
                ))
            })?;
        let expected = dtype.storage_bytes(count).ok_or_else(|| {
            IrError::Graph(format!("tensor shape {shape:?} of {dtype} is too large"))
        })?;
        if data.len() != expected {
            return Err(IrError::Graph(format!(
                "tensor {dtype}{shape:?} needs {expected} bytes of data, found {}",
                data.len()
            )));
        }
        Ok(Tensor { dtype, shape, data })
    }

    /// A 1-D or scalar i64 tensor holding `values`.
    pub fn from_i64s(shape: Vec<usize>, values: &[i64]) -> Result<Tensor> {
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::new(DType::I64, shape, Bytes::from(data))
    }

    /// A tensor of one of the IEEE float types (f64, f32, f16, bf16) holding `values`.
    pub fn from_f64s(dtype: DType, shape: Vec<usize>, values: &[f64]) -> Result<Tensor> {
        let data: Vec<u8> = match dtype {
            DType::F64 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::F32 => values
                .iter()
                .flat_map(|&v| (v as f32).to_le_bytes())
                .collect(),
            DType::F16 => values
                .iter()
                .flat_map(|&v| f16::from_f64(v).to_le_bytes())
                .collect(),
            DType::BF16 => values
                .iter()
                .flat_map(|&v| bf16::from_f64(v).to_le_bytes())
                .collect(),
            other => {
                return Err(IrError::Graph(format!(
                    "cannot build a {other} tensor from floats"
                )))
            }
        };
        Tensor::new(dtype, shape, Bytes::from(data))
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as i64, for integer and bool tensors.
    pub fn to_i64s(&self) -> Option<Vec<i64>> {
        let d = &self.data[..];
        macro_rules! ints {
            ($t:ty, $n:expr) => {
                d.chunks_exact($n)
                    .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk of exact size")) as i64)
                    .collect()
            };
        }
        Some(match self.dtype {
            DType::I64 => ints!(i64, 8),
            DType::I32 => ints!(i32, 4),
            DType::I16 => ints!(i16, 2),
            DType::I8 => ints!(i8, 1),
            DType::U64 => ints!(u64, 8),
            DType::U32 => ints!(u32, 4),
            DType::U16 => ints!(u16, 2),
            DType::U8 => ints!(u8, 1),
            DType::Bool => d.iter().map(|&b| i64::from(b != 0)).collect(),
            _ => return None,
        })
    }

    /// The elements as f64, for the IEEE float types and the integer types.
    pub fn to_f64s(&self) -> Option<Vec<f64>> {
        let d = &self.data[..];
        Some(match self.dtype {
            DType::F64 => d
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("chunk of exact size")))
                .collect(),
            DType::F32 => d
                .chunks_exact(4)
                .map(|c| {
                    f64::from(f32::from_le_bytes(
                        c.try_into().expect("chunk of exact size"),
                    ))
                })
                .collect(),
            DType::F16 => d
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f64())
                .collect(),
            DType::BF16 => d
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f64())
                .collect(),
            _ => self.to_i64s()?.into_iter().map(|v| v as f64).collect(),
        })
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor({}{:?}, {} bytes)",
            self.dtype,
            self.shape,
            self.data.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_is_checked() {
        assert!(Tensor::new(DType::F32, vec![2, 2], Bytes::from(vec![0u8; 15])).is_err());
        assert!(Tensor::new(DType::F4E2M1, vec![3], Bytes::from(vec![0u8; 2])).is_ok());
        assert!(Tensor::new(DType::F32, vec![1 << 40, 1 << 40], Bytes::new()).is_err());
    }

    #[test]
    fn reads_values() {
        let t = Tensor::from_i64s(vec![3], &[1, -2, 3]).unwrap();
        assert_eq!(t.to_i64s(), Some(vec![1, -2, 3]));
        assert_eq!(t.to_f64s(), Some(vec![1.0, -2.0, 3.0]));
        let h = Tensor::new(
            DType::F16,
            vec![1],
            Bytes::from(f16::from_f32(0.5).to_le_bytes().to_vec()),
        )
        .unwrap();
        assert_eq!(h.to_f64s(), Some(vec![0.5]));
    }
}
