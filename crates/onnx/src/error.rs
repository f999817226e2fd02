//! Import errors: each names the file, node or tensor it concerns.

use sparkc_ir::IrError;
use thiserror::Error;

/// Why a model could not be imported.
#[derive(Debug, Error)]
pub enum ImportError {
    /// The file could not be read or is not a valid ONNX protobuf.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// One node is invalid or unsupported.
    #[error("node '{node}' ({op}, opset {opset}): {message}")]
    Node {
        /// Node name (or its first output when unnamed).
        node: String,
        /// ONNX op type.
        op: String,
        /// Opset version of the op's domain.
        opset: i64,
        /// What is wrong.
        message: String,
    },
    /// An initializer, input or output is invalid.
    #[error("{what} '{name}': {message}")]
    Value {
        /// `initializer`, `input`, `output` or `tensor`.
        what: &'static str,
        /// Its name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The model as a whole is invalid.
    #[error("{0}")]
    Model(String),
    /// The imported graph failed inference or verification.
    #[error(transparent)]
    Ir(#[from] IrError),
}

/// Result type of the importer.
pub type Result<T, E = ImportError> = std::result::Result<T, E>;
