//! Errors raised while building, verifying or inferring a graph.

use thiserror::Error;

/// An error in the IR, naming the node it concerns where there is one.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum IrError {
    /// A problem with one node: its name, its op, and what is wrong.
    #[error("node '{node}' ({op}): {message}")]
    Node {
        /// The node's name (or a generated one when the model gave none).
        node: String,
        /// The op's name.
        op: String,
        /// What is wrong.
        message: String,
    },
    /// A problem with the graph as a whole.
    #[error("{0}")]
    Graph(String),
}

/// Result type of the IR crate.
pub type Result<T, E = IrError> = std::result::Result<T, E>;
