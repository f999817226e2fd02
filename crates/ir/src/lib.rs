//! sparkc's intermediate representation.
//!
//! A [`Graph`] is a petgraph `StableGraph` of [`Node`]s, each an [`Op`] with typed outputs.
//! Values carry a [`DType`] and a shape of [`Dim`]s, which may be symbolic (`N`, `S+1`) or
//! data-dependent. [`infer_graph`] derives types, [`verify`] checks a graph after any rewrite, and
//! [`print`] dumps it as text, DOT or JSON.

pub mod dim;
pub mod dtype;
pub mod einsum;
pub mod error;
pub mod formats;
pub mod fused;
pub mod graph;
pub mod infer;
pub mod op;
pub mod print;
pub mod tensor;
pub mod types;
pub mod verify;

pub use dim::{Atom, Dim, Poly};
pub use dtype::DType;
pub use error::{IrError, Result};
pub use fused::{BodyNode, Fused, FusedKind, Operand};
pub use graph::{Edge, Graph, Model, Node, NodeId, ValueRef};
pub use infer::{infer_graph, infer_op};
pub use op::Op;
pub use tensor::Tensor;
pub use types::{Known, Shape, TensorType, Value, ValueType};
pub use verify::verify;
