//! The header's messages, encoded with `prost` (tags are the format; never reuse one).

/// Everything but the weights.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Header {
    /// The compiler that wrote the artifact (`sparkc 0.1.0`).
    #[prost(string, tag = "1")]
    pub producer: String,
    /// The source model's graph name.
    #[prost(string, tag = "2")]
    pub model_name: String,
    /// GPU architectures with a kernel plan (`sm_121a`…), best first.
    #[prost(string, repeated, tag = "3")]
    pub targets: Vec<String>,
    /// Graph inputs, in order.
    #[prost(message, repeated, tag = "4")]
    pub inputs: Vec<TensorSpec>,
    /// Graph outputs, in order.
    #[prost(message, repeated, tag = "5")]
    pub outputs: Vec<TensorSpec>,
    /// The optimized graph as an ONNX `ModelProto` (fused nodes as `ai.sparkc` functions); its
    /// large initializers live in the weight section, named by [`WEIGHTS_LOCATION`].
    ///
    /// [`WEIGHTS_LOCATION`]: crate::WEIGHTS_LOCATION
    #[prost(bytes = "vec", tag = "6")]
    pub graph: Vec<u8>,
    /// One kernel plan per target, in `targets` order.
    #[prost(message, repeated, tag = "7")]
    pub plans: Vec<KernelPlan>,
    /// Buffers and their lifetimes over the kernel sequence.
    #[prost(message, optional, tag = "8")]
    pub memory: Option<MemoryPlan>,
    /// Arithmetic of products (`tf32`, `fp32`).
    #[prost(string, tag = "9")]
    pub precision: String,
    /// Upper bounds of symbolic dims the plan accepts (absent: unbounded).
    #[prost(message, repeated, tag = "10")]
    pub bounds: Vec<DimBound>,
    /// How the model was quantized and how close it stays to FP32 (absent: not quantized).
    #[prost(message, optional, tag = "11")]
    pub quantization: Option<Quantization>,
}

/// The quantizer's decisions and the accuracy report of a quantized model.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Quantization {
    /// The format asked for (`fp8`, `nvfp4`…; empty for a model that arrived quantized).
    #[prost(string, tag = "1")]
    pub scheme: String,
    /// One entry per product with a constant weight.
    #[prost(message, repeated, tag = "2")]
    pub products: Vec<ProductQuantization>,
    /// Bytes of the constants before quantizing.
    #[prost(uint64, tag = "3")]
    pub weight_bytes_before: u64,
    /// Bytes of the constants after.
    #[prost(uint64, tag = "4")]
    pub weight_bytes_after: u64,
    /// Each output compared with the FP32 model's.
    #[prost(message, repeated, tag = "5")]
    pub outputs: Vec<OutputAccuracy>,
    /// The inputs the comparison ran on.
    #[prost(string, tag = "6")]
    pub compared_on: String,
}

/// What happened to one product.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProductQuantization {
    /// The node.
    #[prost(string, tag = "1")]
    pub node: String,
    /// Its op.
    #[prost(string, tag = "2")]
    pub op: String,
    /// The weight's storage format (`f8e4m3fn/channel`, `nvfp4`, `f32`…).
    #[prost(string, tag = "3")]
    pub weight_format: String,
    /// The format its activation input is rounded to.
    #[prost(string, tag = "4")]
    pub activation_format: String,
    /// Why it kept full precision (empty when quantized).
    #[prost(string, tag = "5")]
    pub kept_because: String,
    /// Relative RMS error of the stored weight.
    #[prost(double, tag = "6")]
    pub weight_error: f64,
}

/// One output's agreement with the FP32 model.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OutputAccuracy {
    /// The output.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Cosine similarity.
    #[prost(double, tag = "2")]
    pub cosine: f64,
    /// Largest absolute difference.
    #[prost(double, tag = "3")]
    pub max_abs_error: f64,
}

/// A graph input's or output's name, element type and shape.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorSpec {
    /// The value's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The element type's ONNX-style name (`float32`, `bfloat16`, `int64`…).
    #[prost(string, tag = "2")]
    pub dtype: String,
    /// One size per axis.
    #[prost(message, repeated, tag = "3")]
    pub shape: Vec<SizeExpr>,
}

/// A size: a sum of terms over named symbols, or data-dependent.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SizeExpr {
    /// The terms, summed.
    #[prost(message, repeated, tag = "1")]
    pub terms: Vec<Term>,
    /// True when only tensor data decides the size.
    #[prost(bool, tag = "2")]
    pub dynamic: bool,
}

/// `coefficient × factor × factor…`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Term {
    /// The constant coefficient.
    #[prost(int64, tag = "1")]
    pub coefficient: i64,
    /// The factors, multiplied.
    #[prost(message, repeated, tag = "2")]
    pub factors: Vec<Factor>,
}

/// A named symbol, or `floor(numerator / divisor)`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Factor {
    /// The symbol's name (empty for a division).
    #[prost(string, tag = "1")]
    pub symbol: String,
    /// The numerator of a floor division.
    #[prost(message, optional, boxed, tag = "2")]
    pub numerator: Option<Box<SizeExpr>>,
    /// The positive divisor of a floor division.
    #[prost(int64, tag = "3")]
    pub divisor: i64,
}

/// The largest value a symbolic dim may take.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DimBound {
    /// The symbol.
    #[prost(string, tag = "1")]
    pub symbol: String,
    /// Its upper bound.
    #[prost(int64, tag = "2")]
    pub max: i64,
}

/// The kernels of one target, in launch order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KernelPlan {
    /// The architecture (`sm_90a`).
    #[prost(string, tag = "1")]
    pub target: String,
    /// The kernels.
    #[prost(message, repeated, tag = "2")]
    pub kernels: Vec<Kernel>,
}

/// One kernel: its PTX module and how to launch it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Kernel {
    /// The entry point.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The IR node it computes.
    #[prost(string, tag = "2")]
    pub node: String,
    /// A complete PTX module holding the entry point.
    #[prost(string, tag = "3")]
    pub ptx: String,
    /// Blocks.
    #[prost(message, optional, tag = "4")]
    pub grid: Option<SizeExpr>,
    /// Threads per block.
    #[prost(uint32, tag = "5")]
    pub block: u32,
    /// Static shared memory, bytes.
    #[prost(uint32, tag = "6")]
    pub shared_bytes: u32,
    /// Dynamic shared memory to request, bytes.
    #[prost(uint32, tag = "7")]
    pub dynamic_shared_bytes: u32,
    /// Memory-plan buffer of each buffer parameter, in parameter order.
    #[prost(uint32, repeated, tag = "8")]
    pub buffers: Vec<u32>,
    /// Symbols passed as trailing `i64` parameters, in order.
    #[prost(string, repeated, tag = "9")]
    pub symbols: Vec<String>,
    /// Family and variant, for profiles (`Gemm mma.bf16 128x128x32 3-stage`).
    #[prost(string, tag = "10")]
    pub variant: String,
}

/// Every buffer kernels read or write.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemoryPlan {
    /// The buffers; kernels name them by index.
    #[prost(message, repeated, tag = "1")]
    pub buffers: Vec<Buffer>,
    /// The buffer holding each graph output, in signature order (an input, a weight or
    /// another output's buffer when the output is a view of it).
    #[prost(uint32, repeated, tag = "2")]
    pub outputs: Vec<u32>,
}

/// What a buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum BufferKind {
    /// An intermediate value, placed in the activation arena.
    Activation = 0,
    /// A graph input, copied in by the caller.
    Input = 1,
    /// A graph output, copied out after the run.
    Output = 2,
    /// A constant from the weight section.
    Weight = 3,
}

/// One buffer: a value's bytes and the kernel steps it lives through.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Buffer {
    /// The IR value's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// What it holds.
    #[prost(enumeration = "BufferKind", tag = "2")]
    pub kind: i32,
    /// Size in bytes.
    #[prost(message, optional, tag = "3")]
    pub bytes: Option<SizeExpr>,
    /// The first kernel step that writes or reads it.
    #[prost(uint32, tag = "4")]
    pub first: u32,
    /// The last kernel step that reads it.
    #[prost(uint32, tag = "5")]
    pub last: u32,
    /// For weights: the byte offset in the weight section.
    #[prost(uint64, tag = "6")]
    pub weight_offset: u64,
    /// For inputs and outputs: the position in the signature.
    #[prost(uint32, tag = "7")]
    pub position: u32,
}
