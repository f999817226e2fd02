//! sparkc's CPU backend: executes an IR graph with the exact semantics of the ONNX spec.
//!
//! It is the numerical reference every GPU kernel is checked against, and a real way to run a
//! model without a GPU. An [`Executor`] is built once from a graph (constants unpacked, a
//! liveness plan made, subgraphs prepared) and then run any number of times; values die as soon
//! as their last consumer has run, and an op whose input dies at it works in that buffer.
//! Matrix products and convolutions go through the `gemm` crate, and work is spread over all
//! cores with `rayon`.

pub mod array;
mod exec;
mod fuse;
mod ops;
mod value;

pub use array::{Array, Data, Elem};
pub use exec::{set_threads, threads};
pub use exec::{ExecError, Executor, NodeTiming, OpTiming, Profile};
pub use value::Value;
