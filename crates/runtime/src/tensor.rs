//! Tensors passed in and out of a session.

use sparkc_cpu::Array;
use sparkc_ir::DType;

/// A dense tensor: element type, shape, and little-endian element bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor(pub(crate) sparkc_ir::Tensor);

impl Tensor {
    /// A tensor of `dtype` and `shape` over `bytes`, checked for length.
    pub fn new(dtype: DType, shape: Vec<usize>, bytes: Vec<u8>) -> Result<Tensor, String> {
        sparkc_ir::Tensor::new(dtype, shape, bytes.into())
            .map(Tensor)
            .map_err(|e| e.to_string())
    }

    /// An `f32` tensor; `values` must hold `shape`'s element count.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Tensor {
        Tensor(Array::f32(shape, values.to_vec()).to_tensor())
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// The element bytes, little-endian.
    pub fn bytes(&self) -> &[u8] {
        &self.0.data
    }

    /// The IR tensor it wraps.
    pub fn as_ir(&self) -> &sparkc_ir::Tensor {
        &self.0
    }

    /// The elements converted to `f32`.
    pub fn to_f32(&self) -> Vec<f32> {
        Array::from_tensor(&self.0).data.to_f32s()
    }
}

impl From<sparkc_ir::Tensor> for Tensor {
    fn from(t: sparkc_ir::Tensor) -> Tensor {
        Tensor(t)
    }
}
