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

/// Seeded inputs for a signature, for checks and benchmarks: floats in [-1, 1), integers
/// and bools 0 or 1, symbolic sizes bound by `dims`; an error names an unbound size.
pub fn sample_inputs(
    specs: &[sparkc_artifact::TensorSpec],
    dims: &std::collections::BTreeMap<String, i64>,
    seed: u64,
) -> Result<Vec<(String, Tensor)>, String> {
    // xorshift64: any nonzero state works.
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        let shape = spec
            .shape
            .iter()
            .map(|d| {
                sparkc_artifact::eval(d, &|s| dims.get(s).copied())
                    .map(|v| v.max(0) as usize)
                    .map_err(|e| format!("input '{}': {e}", spec.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let dtype = DType::from_name(&spec.dtype)
            .ok_or_else(|| format!("input '{}': unknown dtype {}", spec.name, spec.dtype))?;
        let values: Vec<f64> = (0..shape.iter().product::<usize>())
            .map(|_| {
                if dtype.is_float() {
                    (next() % 2000) as f64 / 1000.0 - 1.0
                } else {
                    (next() % 2) as f64
                }
            })
            .collect();
        let data = sparkc_cpu::Data::from_f64s(dtype, values, false);
        out.push((
            spec.name.clone(),
            Tensor(Array::new(shape, data).to_tensor()),
        ));
    }
    Ok(out)
}
