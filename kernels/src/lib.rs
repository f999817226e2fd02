//! Kernel generators: the optimizer's nodes lowered to LLVM IR with `inkwell`, then to PTX by
//! LLVM's NVPTX backend, one kernel (and one module) per node.
//!
//! One family per file, each checked against the CPU executor's ops (its reference):
//! [`elementwise`], [`reduce`] (reductions and normalizations), [`gemm`] (tensor-core and
//! CUDA-core products with fused epilogues), [`conv`] (implicit GEMM, depthwise), [`attention`]
//! (flash-style, online softmax, and rotary embeddings), [`movement`] (transpose, concat,
//! slice, gather, pad, resize, pooling, triangles), [`axis`] (arg max/min, running totals,
//! Hardmax, Lp normalization) and [`quant`] (quantize and dequantize, every stored format). [`plan`] picks a generator for each node of a graph, and [`emit`] turns
//! modules into PTX or LLVM text. Generated code is written in the thread-strided style of
//! [`cg`], so it also runs on the host ([`host`]), which is how it is tested without a GPU.

pub mod attention;
pub mod axis;
pub mod cg;
pub mod conv;
pub mod elementwise;
pub mod emit;
pub mod expr;
pub mod gemm;
pub mod host;
pub mod loss;
mod math;
pub mod mma;
pub mod movement;
mod narrow;
pub(crate) mod operand;
pub mod plan;
pub mod quant;
pub mod reduce;
pub mod signal;
pub mod stateful;
pub mod target;
pub mod uniformity;

use serde::Serialize;
use sparkc_ir::{DType, Dim};

pub use plan::{lower_graph, Lowered, Lowering, Output, Precision};
pub use target::{Sm, Target, TargetInfo};

/// Why a kernel could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The node uses something codegen does not handle.
    #[error("{0}")]
    Unsupported(String),
    /// LLVM refused the generated IR or could not emit code.
    #[error("LLVM: {0}")]
    Llvm(String),
    /// The emitted code would hang or corrupt memory on a GPU (a barrier that only some
    /// threads reach).
    #[error("unsafe to run: {0}")]
    Unsafe(String),
    /// An error for a named node.
    #[error("node `{node}` ({op}): {cause}")]
    Node {
        /// The node's name.
        node: String,
        /// Its op.
        op: String,
        /// What went wrong (in the message, so it is not repeated as the error's source).
        cause: Box<KernelError>,
    },
}

impl From<inkwell::builder::BuilderError> for KernelError {
    fn from(e: inkwell::builder::BuilderError) -> KernelError {
        KernelError::Llvm(e.to_string())
    }
}

/// The kernel families, one generator file each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Family {
    /// Elementwise expressions with broadcasting.
    Elementwise,
    /// Reductions, softmax and normalizations.
    Reduction,
    /// Matrix products with their epilogues.
    Gemm,
    /// Convolutions.
    Conv,
    /// Fused attention.
    Attention,
    /// Data movement and pooling.
    Movement,
    /// Quantizing and dequantizing.
    Quantization,
}

/// What a kernel parameter is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Role {
    /// Written by the kernel.
    Output,
    /// Read by the kernel.
    Input,
}

/// One buffer parameter of a kernel.
#[derive(Clone, Debug, Serialize)]
pub struct BufferArg {
    /// Read or written.
    pub role: Role,
    /// The node's input or output slot it binds to.
    pub slot: usize,
    /// Element type.
    pub dtype: DType,
    /// Shape, possibly symbolic.
    pub shape: Vec<Dim>,
}

/// How a kernel is launched; sizes may mention the kernel's symbols.
#[derive(Clone, Debug, Serialize)]
pub struct Launch {
    /// Blocks (a 1-D grid; kernels stride over their work, so any count is correct).
    pub grid: Dim,
    /// Threads per block.
    pub block: u32,
    /// Static shared memory per block, in bytes.
    pub shared_bytes: u32,
    /// Dynamic shared memory the launch must request, in bytes (above 48 KiB the runtime
    /// first raises the kernel's `MAX_DYNAMIC_SHARED_SIZE_BYTES` attribute).
    pub dynamic_shared_bytes: u32,
}

/// A generated kernel's description: what the runtime needs to launch it.
#[derive(Clone, Debug, Serialize)]
pub struct KernelInfo {
    /// The entry point's name, unique in its graph.
    pub name: String,
    /// The generator family.
    pub family: Family,
    /// The variant within the family (`mma.tf32 128x128x32 s3`, `vec4`, `warp-per-row`…).
    pub variant: String,
    /// The IR node it computes.
    pub node: String,
    /// The IR ops it covers (a fused node's body, or the node's op).
    pub covers: Vec<String>,
    /// Buffer parameters, in order: outputs, then present inputs.
    pub buffers: Vec<BufferArg>,
    /// Symbolic sizes passed as trailing `i64` parameters, in order.
    pub symbols: Vec<String>,
    /// The launch.
    pub launch: Launch,
}

/// A tensor's element type and shape of known rank.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorSig {
    /// Element type.
    pub dtype: DType,
    /// Shape, possibly symbolic.
    pub shape: Vec<Dim>,
}

impl TensorSig {
    /// The element count as a size expression.
    pub fn numel(&self) -> Dim {
        product(&self.shape)
    }
}

/// The product of sizes, as a size expression.
pub fn product(dims: &[Dim]) -> Dim {
    dims.iter().fold(Dim::known(1), |acc, d| acc * d.clone())
}

/// A possibly negative axis mapped to `0..rank`, or an error naming it.
pub(crate) fn resolve_axis(axis: i64, rank: usize) -> Result<usize, KernelError> {
    sparkc_ir::infer::normalize_axis(axis, rank).ok_or_else(|| {
        KernelError::Unsupported(format!("axis {axis} is out of range for rank {rank}"))
    })
}

/// What a generator is asked to build: one node, its types, and where it runs.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// The entry point's name.
    pub name: String,
    /// The IR node's name.
    pub node: String,
    /// The node's op.
    pub op: &'a sparkc_ir::Op,
    /// Types of the node's input slots (`None` for omitted optionals).
    pub inputs: Vec<Option<TensorSig>>,
    /// Types of its outputs.
    pub outputs: Vec<TensorSig>,
    /// Input values known at compile time, as integers (axes, pads, sizes).
    pub known: Vec<Option<Vec<i64>>>,
    /// Input values known at compile time, as floats (Resize's scales).
    pub known_floats: Vec<Option<Vec<f64>>>,
    /// Where the code runs.
    pub target: Target,
    /// Arithmetic for products.
    pub precision: Precision,
}

/// A generated kernel: its description and its module.
pub struct Generated<'ctx> {
    /// What the runtime needs to launch it.
    pub info: KernelInfo,
    /// The module holding it.
    pub module: inkwell::module::Module<'ctx>,
}

impl Request<'_> {
    /// Every symbol the node's shapes mention, sorted.
    pub fn symbols(&self) -> Vec<std::sync::Arc<str>> {
        let mut out: Vec<std::sync::Arc<str>> = Vec::new();
        let shapes = self
            .outputs
            .iter()
            .chain(self.inputs.iter().flatten())
            .flat_map(|t| t.shape.iter());
        for d in shapes {
            for s in d.symbols() {
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        out.sort();
        out
    }

    /// The buffer parameters: outputs, then present inputs.
    pub fn buffers(&self) -> Vec<BufferArg> {
        let outs = self.outputs.iter().enumerate().map(|(slot, t)| BufferArg {
            role: Role::Output,
            slot,
            dtype: t.dtype,
            shape: t.shape.clone(),
        });
        let ins = self.inputs.iter().enumerate().filter_map(|(slot, t)| {
            t.as_ref().map(|t| BufferArg {
                role: Role::Input,
                slot,
                dtype: t.dtype,
                shape: t.shape.clone(),
            })
        });
        outs.chain(ins).collect()
    }

    /// The type of input `slot`, or an error naming it.
    pub fn input(&self, slot: usize) -> Result<&TensorSig, KernelError> {
        self.inputs
            .get(slot)
            .and_then(|t| t.as_ref())
            .ok_or_else(|| KernelError::Unsupported(format!("input {slot} is missing")))
    }

    /// The compile-time integer values of input `slot`, or an error naming it.
    pub fn known_ints(&self, slot: usize) -> Result<&[i64], KernelError> {
        self.known
            .get(slot)
            .and_then(|k| k.as_deref())
            .ok_or_else(|| {
                KernelError::Unsupported(format!("input {slot} must be known at compile time"))
            })
    }

    /// The parameter index of input `slot`'s buffer.
    pub fn input_param(&self, slot: usize) -> usize {
        self.outputs.len() + self.inputs[..slot].iter().filter(|t| t.is_some()).count()
    }

    /// A code generation context for this request's kernel.
    pub fn begin<'ctx>(&self, cx: &'ctx inkwell::context::Context, block: u32) -> cg::Cg<'ctx> {
        cg::Cg::new(
            cx,
            &self.name,
            self.target,
            self.buffers().len(),
            &self.symbols(),
            block,
        )
    }

    /// The kernel's description.
    pub fn describe(
        &self,
        family: Family,
        variant: impl Into<String>,
        covers: Vec<String>,
        launch: Launch,
    ) -> KernelInfo {
        KernelInfo {
            name: self.name.clone(),
            family,
            variant: variant.into(),
            node: self.node.clone(),
            covers,
            buffers: self.buffers(),
            symbols: self.symbols().iter().map(|s| s.to_string()).collect(),
            launch,
        }
    }
}
