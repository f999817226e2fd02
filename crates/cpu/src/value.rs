//! Values at run time: tensors, sequences of tensors and optionals.

use crate::array::Array;
use std::fmt;

/// A runtime value, as ONNX types them.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A tensor.
    Tensor(Array),
    /// A sequence of tensors.
    Sequence(Vec<Array>),
    /// An optional value, empty or holding one.
    Optional(Option<Box<Value>>),
}

impl Value {
    /// The tensor, or an error naming what the value is instead.
    pub fn as_tensor(&self) -> Result<&Array, String> {
        match self {
            Value::Tensor(a) => Ok(a),
            other => Err(format!("expected a tensor, found {other}")),
        }
    }

    /// The tensor, consuming the value.
    pub fn into_tensor(self) -> Result<Array, String> {
        match self {
            Value::Tensor(a) => Ok(a),
            other => Err(format!("expected a tensor, found {other}")),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Tensor(a) => write!(f, "a tensor {}{:?}", a.dtype(), a.shape),
            Value::Sequence(items) => write!(f, "a sequence of {} tensors", items.len()),
            Value::Optional(None) => write!(f, "an empty optional"),
            Value::Optional(Some(inner)) => write!(f, "an optional holding {inner}"),
        }
    }
}
