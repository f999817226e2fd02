//! The sparkc runtime: load a `.spark` artifact, make a session on a device, run it with
//! named tensors.
//!
//! ```no_run
//! use sparkc_runtime::{Artifact, Device, Session, Tensor};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let artifact = Artifact::open("model.spark".as_ref())?;
//! let session = Session::new(&artifact, Device::Auto)?;
//! println!("running on {}", session.device());
//! let x = Tensor::from_f32(vec![1, 3, 32, 32], &vec![0.5; 3 * 32 * 32]);
//! for (name, y) in session.run(&[("input", x)])? {
//!     println!("{name}: {:?}", y.shape());
//! }
//! # Ok(()) }
//! ```
//!
//! The crate links no compiler: no LLVM, no e-graphs. With no CUDA driver installed it runs
//! on the CPU and never touches the driver. On a GPU it launches the artifact's kernels for
//! the best matching target, captured once per binding of the symbolic dims into a CUDA graph.

mod cuda;
mod gpu;
mod session;
mod tensor;

pub use cuda::KernelTiming;
pub use gpu::{detect, pick_target, GpuInfo};
pub use session::{Device, Session};
pub use sparkc_artifact::{Artifact, ArtifactError, SizeExpr, TensorSpec};
pub use sparkc_ir::DType;
pub use tensor::{sample_inputs, Tensor};

/// Why loading or running failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The artifact cannot be read.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// The artifact's embedded graph does not import.
    #[error("the artifact's graph: {0}")]
    Graph(String),
    /// The asked-for device cannot run the artifact.
    #[error("device: {0}")]
    Device(String),
    /// Inputs do not match the signature.
    #[error("{0}")]
    Input(String),
    /// Execution failed.
    #[error("run: {0}")]
    Run(String),
}

/// The value of a size with no symbols; `None` for a symbolic or data-dependent one.
pub fn static_size(expr: &SizeExpr) -> Option<i64> {
    sparkc_artifact::eval(expr, &|_| None).ok()
}

/// The value of a size with symbols bound by `bind`, or why it has none.
pub fn eval_size(expr: &SizeExpr, bind: &dyn Fn(&str) -> Option<i64>) -> Result<i64, String> {
    sparkc_artifact::eval(expr, bind)
}
