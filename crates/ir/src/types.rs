//! Value types: tensors with a dtype and a (possibly symbolic) shape, sequences and optionals.

use crate::dim::Dim;
use crate::dtype::DType;
use serde::Serialize;
use std::fmt;

/// A tensor's shape: `None` when even the rank is unknown.
pub type Shape = Option<Vec<Dim>>;

/// The type of a tensor value.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorType {
    /// Element type.
    pub dtype: DType,
    /// Dims, or `None` for unknown rank.
    pub shape: Shape,
}

/// The type of any value an ONNX graph can carry.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// A dense tensor.
    Tensor(TensorType),
    /// A sequence of values of one type.
    Sequence(Box<ValueType>),
    /// A value that may be absent.
    Optional(Box<ValueType>),
}

/// Values known at compile time for small tensors, used to resolve shapes that come from data.
///
/// Integer tensors carry [`Dim`]s, so `Shape(x)` of a symbolic `x` is known symbolically and a
/// `Reshape` fed by `Concat(Shape(x)[0], -1)` still gets a symbolic output shape.
#[derive(Clone, Debug, PartialEq)]
pub enum Known {
    /// Elements of an integer or bool tensor, in row-major order.
    Ints(Vec<Dim>),
    /// Elements of a float tensor, in row-major order.
    Floats(Vec<f64>),
}

/// One output of a node: its name in the source model, its type, and its value when known.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    /// Name in the source model (unique within the graph).
    pub name: String,
    /// Inferred type.
    pub ty: ValueType,
    /// Compile-time value of a small tensor, when every input it depends on is known.
    pub known: Option<Known>,
}

impl TensorType {
    /// A tensor type with a fully known shape.
    pub fn new(dtype: DType, shape: Vec<Dim>) -> TensorType {
        TensorType {
            dtype,
            shape: Some(shape),
        }
    }

    /// The rank, if known.
    pub fn rank(&self) -> Option<usize> {
        self.shape.as_ref().map(Vec::len)
    }

    /// Element count when every dim is a constant.
    pub fn static_len(&self) -> Option<u64> {
        self.shape.as_ref()?.iter().try_fold(1u64, |acc, d| {
            let d = u64::try_from(d.as_const()?).ok()?;
            acc.checked_mul(d)
        })
    }
}

impl ValueType {
    /// The tensor type, if this is a tensor.
    pub fn as_tensor(&self) -> Option<&TensorType> {
        match self {
            ValueType::Tensor(t) => Some(t),
            _ => None,
        }
    }
}

impl Known {
    /// The values as plain integers, when every one is a constant.
    pub fn as_i64s(&self) -> Option<Vec<i64>> {
        match self {
            Known::Ints(dims) => dims.iter().map(Dim::as_const).collect(),
            Known::Floats(values) => values
                .iter()
                .map(|&v| (v.fract() == 0.0 && v.abs() < 9.0e15).then_some(v as i64))
                .collect(),
        }
    }

    /// The values as dims (symbolic for ints, only whole numbers for floats).
    pub fn as_dims(&self) -> Option<Vec<Dim>> {
        match self {
            Known::Ints(dims) => Some(dims.clone()),
            Known::Floats(_) => Some(self.as_i64s()?.into_iter().map(Dim::known).collect()),
        }
    }

    /// The values as floats, when every one is a constant.
    pub fn as_f64s(&self) -> Option<Vec<f64>> {
        match self {
            Known::Floats(values) => Some(values.clone()),
            Known::Ints(_) => Some(self.as_i64s()?.into_iter().map(|v| v as f64).collect()),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Known::Ints(v) => v.len(),
            Known::Floats(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Writes dims as `[N,64,56,56]`, or `[..]` for unknown rank.
pub fn format_shape(shape: &Shape) -> String {
    match shape {
        None => "[..]".to_string(),
        Some(dims) => {
            let dims: Vec<String> = dims.iter().map(Dim::to_string).collect();
            format!("[{}]", dims.join(","))
        }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, format_shape(&self.shape))
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueType::Tensor(t) => write!(f, "{t}"),
            ValueType::Sequence(t) => write!(f, "seq<{t}>"),
            ValueType::Optional(t) => write!(f, "opt<{t}>"),
        }
    }
}
