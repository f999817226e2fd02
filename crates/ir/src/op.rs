//! Ops: one enum variant per operation, with typed attributes.
//!
//! Each op is described by the semantics of its latest ONNX version (see `docs/onnx-import.md`);
//! the importer upgrades older versions, turning attributes that later became inputs (`axes`,
//! `split`, `pads`, `min`/`max`, ...) into constant inputs. Inputs are edges of the graph, in the
//! ONNX order, with omitted optional inputs left unconnected.

use crate::dtype::DType;
use crate::graph::Graph;
use crate::tensor::Tensor;
use crate::types::ValueType;
use serde::{Serialize, Serializer};

/// Elementwise ops of one input.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Unary {
    /// `|x|`
    Abs,
    /// `ceil(x)`
    Ceil,
    /// `cos(x)`
    Cos,
    /// Gauss error function.
    Erf,
    /// `e^x`
    Exp,
    /// `floor(x)`
    Floor,
    /// `x`
    Identity,
    /// Natural logarithm.
    Log,
    /// `-x`
    Neg,
    /// Logical not of a bool.
    Not,
    /// `1/x`
    Reciprocal,
    /// `max(x, 0)`
    Relu,
    /// Round half to even.
    Round,
    /// `1/(1+e^-x)`
    Sigmoid,
    /// -1, 0 or 1.
    Sign,
    /// `sin(x)`
    Sin,
    /// Square root.
    Sqrt,
    /// Hyperbolic tangent.
    Tanh,
    /// `ln(1+e^x)`
    Softplus,
    /// `x * max(0, min(1, x/6 + 1/2))`
    HardSwish,
    /// `x` if `x > 0` else `alpha*(e^x - 1)`.
    Elu {
        /// Scale of the negative part.
        alpha: f32,
    },
    /// `x` if `x >= 0` else `alpha*x`.
    LeakyRelu {
        /// Slope of the negative part.
        alpha: f32,
    },
    /// `max(0, min(1, alpha*x + beta))`
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// Gaussian error linear unit, exact (`none`) or with the tanh approximation.
    Gelu {
        /// `none` or `tanh`.
        approximate: GeluApproximation,
    },
    /// `tan(x)`
    Tan,
    /// `asin(x)`
    Asin,
    /// `acos(x)`
    Acos,
    /// `atan(x)`
    Atan,
    /// `sinh(x)`
    Sinh,
    /// `cosh(x)`
    Cosh,
    /// `asinh(x)`
    Asinh,
    /// `acosh(x)`
    Acosh,
    /// `atanh(x)`
    Atanh,
    /// `x / (1 + |x|)`
    Softsign,
    /// `x * tanh(softplus(x))`
    Mish,
    /// `max(0,x) + min(0, alpha*(e^(x/alpha) - 1))`
    Celu {
        /// Scale.
        alpha: f32,
    },
    /// `gamma*x` if `x > 0` else `gamma*alpha*(e^x - 1)`.
    Selu {
        /// Scale of the negative part.
        alpha: f32,
        /// Overall scale.
        gamma: f32,
    },
    /// `x` if `x > alpha` else 0.
    ThresholdedRelu {
        /// Threshold.
        alpha: f32,
    },
    /// `x+bias` below `-lambd`, `x-bias` above `lambd`, else 0.
    Shrink {
        /// Shift.
        bias: f32,
        /// Threshold.
        lambd: f32,
    },
    /// `x * sigmoid(alpha*x)`
    Swish {
        /// Slope inside the sigmoid.
        alpha: f32,
    },
    /// True where the input is NaN (bool output).
    IsNaN,
    /// True where the input is an infinity of a detected sign (bool output).
    IsInf {
        /// Detect -inf.
        detect_negative: bool,
        /// Detect +inf.
        detect_positive: bool,
    },
    /// Bitwise complement of an integer.
    BitwiseNot,
}

/// The two forms of GELU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GeluApproximation {
    /// `0.5*x*(1+erf(x/sqrt(2)))`
    None,
    /// `0.5*x*(1+tanh(sqrt(2/pi)*(x+0.044715*x^3)))`
    Tanh,
}

/// Elementwise ops of two inputs, with numpy broadcasting.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Binary {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b` (truncating for integers).
    Div,
    /// `a ^ b`
    Pow,
    /// Remainder: sign of the divisor, or of the dividend with `fmod`.
    Mod {
        /// C `fmod` semantics instead of Python's.
        fmod: bool,
    },
    /// Logical and.
    And,
    /// Logical or.
    Or,
    /// Logical xor.
    Xor,
    /// `a == b`
    Equal,
    /// `a > b`
    Greater,
    /// `a >= b`
    GreaterOrEqual,
    /// `a < b`
    Less,
    /// `a <= b`
    LessOrEqual,
    /// `x` if `x >= 0` else `slope*x`, slope broadcast to x.
    PRelu,
    /// Bitwise and of integers.
    BitwiseAnd,
    /// Bitwise or of integers.
    BitwiseOr,
    /// Bitwise xor of integers.
    BitwiseXor,
    /// Shift of unsigned integers by the second input.
    BitShift {
        /// Shift left (else right).
        left: bool,
    },
}

/// Elementwise ops of any number of inputs, with numpy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Variadic {
    /// Elementwise maximum.
    Max,
    /// Elementwise minimum.
    Min,
    /// Elementwise mean.
    Mean,
    /// Elementwise sum.
    Sum,
}

/// The reduction a `Reduce*` op applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Reduction {
    /// `sum(|x|)`
    L1,
    /// `sqrt(sum(x^2))`
    L2,
    /// `log(sum(x))`
    LogSum,
    /// `log(sum(e^x))`
    LogSumExp,
    /// Maximum.
    Max,
    /// Mean.
    Mean,
    /// Minimum.
    Min,
    /// Product.
    Prod,
    /// Sum.
    Sum,
    /// `sum(x^2)`
    SumSquare,
}

/// How `auto_pad` places padding in convolutions and pools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum AutoPad {
    /// Explicit `pads`.
    #[serde(rename = "NOTSET")]
    NotSet,
    /// Output size `ceil(in/stride)`, extra padding at the end.
    #[serde(rename = "SAME_UPPER")]
    SameUpper,
    /// Output size `ceil(in/stride)`, extra padding at the start.
    #[serde(rename = "SAME_LOWER")]
    SameLower,
    /// No padding.
    #[serde(rename = "VALID")]
    Valid,
}

/// Where a convolution's channel axis lies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Layout {
    /// ONNX's: input `[N, C, spatial…]`, weights `[M, C/group, kernel…]`, output `[N, M, spatial…]`.
    #[default]
    #[serde(rename = "NCHW")]
    Nchw,
    /// Channels last: input `[N, spatial…, C]`, weights `[M, kernel…, C/group]`, output
    /// `[N, spatial…, M]` (only the layout pass makes it, and only for `Conv`).
    #[serde(rename = "NHWC")]
    Nhwc,
}

impl Layout {
    /// True for ONNX's layout.
    pub fn is_nchw(&self) -> bool {
        *self == Layout::Nchw
    }
}

impl std::str::FromStr for Layout {
    type Err = String;

    fn from_str(s: &str) -> Result<Layout, String> {
        match s.to_ascii_lowercase().as_str() {
            "nchw" => Ok(Layout::Nchw),
            "nhwc" => Ok(Layout::Nhwc),
            _ => Err(format!("unknown layout '{s}' (expected nchw or nhwc)")),
        }
    }
}

/// A channels-last shape in channels-first order: `[N, spatial…, C]` to `[N, C, spatial…]`.
pub fn channels_first<T: Clone>(dims: &[T]) -> Vec<T> {
    let mut out = dims.to_vec();
    if let Some(c) = out.pop() {
        out.insert(1.min(out.len()), c);
    }
    out
}

/// A channels-first shape in channels-last order: `[N, C, spatial…]` to `[N, spatial…, C]`.
pub fn channels_last<T: Clone>(dims: &[T]) -> Vec<T> {
    let mut out = dims.to_vec();
    if out.len() > 1 {
        let c = out.remove(1);
        out.push(c);
    }
    out
}

/// The `Transpose` permutation taking a channels-first tensor of `rank` to channels last.
pub fn to_channels_last(rank: usize) -> Vec<i64> {
    channels_last(&(0..rank as i64).collect::<Vec<_>>())
}

/// The `Transpose` permutation taking a channels-last tensor of `rank` to channels first.
pub fn to_channels_first(rank: usize) -> Vec<i64> {
    channels_first(&(0..rank as i64).collect::<Vec<_>>())
}

/// Attributes of `Conv`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConvAttrs {
    /// Padding mode.
    pub auto_pad: AutoPad,
    /// Dilation per spatial axis (empty: all 1).
    pub dilations: Vec<i64>,
    /// Number of groups.
    pub group: i64,
    /// Kernel spatial shape (empty: taken from the weight).
    pub kernel_shape: Vec<i64>,
    /// Begin then end padding per spatial axis (empty: all 0).
    pub pads: Vec<i64>,
    /// Stride per spatial axis (empty: all 1).
    pub strides: Vec<i64>,
    /// Where the channels lie in the input, weights and output.
    #[serde(skip_serializing_if = "Layout::is_nchw")]
    pub layout: Layout,
}

/// Attributes of `DeformConv` (2-D, channels first).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeformConvAttrs {
    /// Dilation per spatial axis (empty: all 1).
    pub dilations: Vec<i64>,
    /// Number of groups of input and output channels.
    pub group: i64,
    /// Kernel spatial shape (empty: taken from the weight).
    pub kernel_shape: Vec<i64>,
    /// Number of groups of input channels that share one set of offsets and masks.
    pub offset_group: i64,
    /// Begin then end padding per spatial axis (empty: all 0).
    pub pads: Vec<i64>,
    /// Stride per spatial axis (empty: all 1).
    pub strides: Vec<i64>,
}

impl DeformConvAttrs {
    /// The attributes of the regular convolution with the same output geometry.
    pub fn conv(&self) -> ConvAttrs {
        ConvAttrs {
            auto_pad: AutoPad::NotSet,
            dilations: self.dilations.clone(),
            group: self.group,
            kernel_shape: self.kernel_shape.clone(),
            pads: self.pads.clone(),
            strides: self.strides.clone(),
            layout: Layout::Nchw,
        }
    }
}

/// Attributes of `ConvTranspose`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConvTransposeAttrs {
    /// The attributes shared with `Conv`.
    #[serde(flatten)]
    pub conv: ConvAttrs,
    /// Extra size added at the end of each spatial axis.
    pub output_padding: Vec<i64>,
    /// Explicit output spatial shape (empty: computed).
    pub output_shape: Vec<i64>,
}

/// Attributes of `AveragePool`, `MaxPool` and `LpPool`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PoolAttrs {
    /// Padding mode.
    pub auto_pad: AutoPad,
    /// Round output sizes up instead of down.
    pub ceil_mode: bool,
    /// Dilation per spatial axis (empty: all 1).
    pub dilations: Vec<i64>,
    /// Window spatial shape.
    pub kernel_shape: Vec<i64>,
    /// Begin then end padding per spatial axis (empty: all 0).
    pub pads: Vec<i64>,
    /// Stride per spatial axis (empty: all 1).
    pub strides: Vec<i64>,
    /// Where the channels lie in the input and output (channels last only for `MaxPool`
    /// without indices and `AveragePool`, which only the layout pass makes).
    #[serde(skip_serializing_if = "Layout::is_nchw")]
    pub layout: Layout,
}

/// Attributes of `Resize`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResizeAttrs {
    /// Antialiasing filter when downscaling.
    pub antialias: bool,
    /// Axes that `scales`/`sizes` refer to (empty: all).
    pub axes: Vec<i64>,
    /// How output coordinates map to input coordinates.
    pub coordinate_transformation_mode: String,
    /// Cubic interpolation coefficient.
    pub cubic_coeff_a: f32,
    /// Zero the weights of samples outside the input.
    pub exclude_outside: bool,
    /// Value for samples outside the input with `tf_crop_and_resize`.
    pub extrapolation_value: f32,
    /// How `sizes` is honoured when aspect ratio must be kept: `stretch`, `not_larger`, `not_smaller`.
    pub keep_aspect_ratio_policy: String,
    /// `nearest`, `linear` or `cubic`.
    pub mode: String,
    /// Rounding for `nearest`.
    pub nearest_mode: String,
}

/// Attributes of `LSTM` and `GRU` (and later `RNN`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RnnAttrs {
    /// Alpha of each activation that takes one.
    pub activation_alpha: Vec<f32>,
    /// Beta of each activation that takes one.
    pub activation_beta: Vec<f32>,
    /// Activation names, per direction.
    pub activations: Vec<String>,
    /// Cell clip threshold (0: none).
    pub clip: f32,
    /// `forward`, `reverse` or `bidirectional`.
    pub direction: String,
    /// Hidden size.
    pub hidden_size: i64,
    /// LSTM: couple the input and forget gates.
    pub input_forget: bool,
    /// 0: `[seq, batch, ...]`; 1: `[batch, seq, ...]`.
    pub layout: i64,
    /// GRU: apply the linear transform before the reset gate.
    pub linear_before_reset: bool,
}

/// Attributes of `Attention`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AttentionAttrs {
    /// Mask future positions.
    pub is_causal: bool,
    /// Heads of 3-D K and V.
    pub kv_num_heads: i64,
    /// Heads of a 3-D Q.
    pub q_num_heads: i64,
    /// Which intermediate the 4th output returns (0: QK, 1: +mask, 2: +softcap, 3: softmax).
    pub qk_matmul_output_mode: i64,
    /// Scale of QK (`None`: 1/sqrt(head size)).
    pub scale: Option<f32>,
    /// Soft cap of the scores (0: none).
    pub softcap: f32,
    /// Element type the softmax is computed in (`None`: the input's).
    pub softmax_precision: Option<DType>,
    /// Keys further than this before the query are masked (-1: unbounded).
    pub left_window_size: i64,
    /// Keys further than this after the query are masked (-1: unbounded).
    pub right_window_size: i64,
}

/// The window functions of the signal ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum WindowKind {
    /// Hann.
    Hann,
    /// Hamming.
    Hamming,
    /// Blackman.
    Blackman,
}

/// Every operation of the IR.
#[derive(Clone, Debug, Serialize)]
pub enum Op {
    /// A graph input (or, in a subgraph, a formal parameter or captured outer value).
    Input,
    /// A constant: an initializer, a `Constant` node, or a value bound at compile time.
    Const(#[serde(serialize_with = "tensor_summary")] Tensor),
    /// `min(max(x, min), max)`; inputs `x, min?, max?`.
    Clip,
    /// `cond ? x : y`; inputs `cond, x, y`.
    Where,
    /// Converts to another element type.
    Cast {
        /// Target element type.
        to: DType,
        /// Saturate to the range of 8-bit float targets instead of producing NaN/inf.
        saturate: bool,
        /// Rounding for float targets: `up` or `nearest`.
        round_mode: String,
    },
    /// Reinterprets each element's bits as another type of the same width.
    BitCast {
        /// Target element type.
        to: DType,
    },
    /// `Reduce*` over `axes` (input 1; absent: all axes unless `noop_with_empty_axes`).
    Reduce {
        /// Which reduction.
        kind: Reduction,
        /// Keep reduced axes as size 1.
        keepdims: bool,
        /// With no axes, return the input instead of reducing all axes.
        noop_with_empty_axes: bool,
    },
    /// Index of the maximum along an axis.
    ArgMax {
        /// Axis to reduce.
        axis: i64,
        /// Keep the reduced axis as size 1.
        keepdims: bool,
        /// Return the last index among equal maxima.
        select_last_index: bool,
    },
    /// Index of the minimum along an axis.
    ArgMin {
        /// Axis to reduce.
        axis: i64,
        /// Keep the reduced axis as size 1.
        keepdims: bool,
        /// Return the last index among equal minima.
        select_last_index: bool,
    },
    /// Softmax along one axis.
    Softmax {
        /// Axis.
        axis: i64,
    },
    /// Log of softmax along one axis.
    LogSoftmax {
        /// Axis.
        axis: i64,
    },
    /// N-d convolution; inputs `x, w, b?`.
    Conv(ConvAttrs),
    /// N-d transposed convolution; inputs `x, w, b?`.
    ConvTranspose(ConvTransposeAttrs),
    /// Average pooling.
    AveragePool {
        /// Window, stride and padding.
        #[serde(flatten)]
        pool: PoolAttrs,
        /// Count padded elements in the divisor.
        count_include_pad: bool,
    },
    /// Max pooling; a second output gives flat indices.
    MaxPool {
        /// Window, stride and padding.
        #[serde(flatten)]
        pool: PoolAttrs,
        /// 0: row-major indices; 1: column-major.
        storage_order: i64,
    },
    /// Mean over all spatial axes.
    GlobalAveragePool,
    /// Maximum over all spatial axes.
    GlobalMaxPool,
    /// Local response normalization across channels.
    #[serde(rename = "LRN")]
    Lrn {
        /// Scale.
        alpha: f32,
        /// Exponent.
        beta: f32,
        /// Offset.
        bias: f32,
        /// Number of channels summed.
        size: i64,
    },
    /// Batch normalization (inference, or training with 3 outputs).
    BatchNormalization {
        /// Added to the variance.
        epsilon: f32,
        /// Running-statistics momentum (training).
        momentum: f32,
        /// Compute statistics from the batch.
        training_mode: bool,
    },
    /// Per-instance, per-channel normalization; inputs `x, scale, bias`.
    InstanceNormalization {
        /// Added to the variance.
        epsilon: f32,
    },
    /// Normalization over the trailing axes from `axis`; outputs `y, mean?, inv_std_dev?`.
    LayerNormalization {
        /// First normalized axis.
        axis: i64,
        /// Added to the variance.
        epsilon: f32,
        /// Element type of the statistics.
        stash_type: DType,
    },
    /// Normalization over channel groups; inputs `x, scale, bias` (scale per channel).
    GroupNormalization {
        /// Added to the variance.
        epsilon: f32,
        /// Number of groups.
        num_groups: i64,
        /// Element type of the statistics.
        stash_type: DType,
    },
    /// `alpha * A' * B' + beta * C`.
    Gemm {
        /// Scale of the product.
        alpha: f32,
        /// Scale of `C`.
        beta: f32,
        /// Transpose `A`.
        trans_a: bool,
        /// Transpose `B`.
        trans_b: bool,
    },
    /// numpy `matmul`.
    MatMul,
    /// numpy `matmul` reading either operand with its last two axes swapped.
    TransposedMatMul {
        /// Read `A` transposed.
        trans_a: bool,
        /// Read `B` transposed.
        trans_b: bool,
    },
    /// Each block of consecutive elements along the last axis rounded to FP4 E2M1 with a scale
    /// chosen from the block's largest magnitude (NVFP4: an E4M3 scale per 16 times the tensor
    /// scale, input 1; MXFP4: a power of two per 32), returned as the values the codes stand
    /// for: how activations are quantized to a block-scaled format. Inputs `x, tensor_scale?`.
    RoundToBlocks {
        /// The block-scaled format.
        format: crate::formats::BlockFormat,
    },
    /// Several ops run as one kernel; its inputs are the body's external operands.
    Fused(Box<crate::fused::Fused>),
    /// Einstein summation.
    Einsum {
        /// The equation, e.g. `bij,bjk->bik`.
        equation: String,
    },
    /// Concatenation along an axis.
    Concat {
        /// Axis.
        axis: i64,
    },
    /// Split along an axis; sizes from input 1, `num_outputs`, or evenly by output count.
    Split {
        /// Axis.
        axis: i64,
        /// Number of outputs when splitting evenly (0: given by the node's outputs).
        num_outputs: i64,
    },
    /// Slice; inputs `data, starts, ends, axes?, steps?`.
    Slice,
    /// Removes size-1 axes (input 1, or all of them).
    Squeeze,
    /// Inserts size-1 axes (input 1).
    Unsqueeze,
    /// Reshape to input 1; 0 copies the input dim unless `allowzero`, -1 is inferred.
    Reshape {
        /// A 0 in the shape means size 0 rather than "copy".
        allowzero: bool,
    },
    /// Flatten to 2-D at an axis.
    Flatten {
        /// Split point.
        axis: i64,
    },
    /// Permute axes (reverse them when `perm` is empty).
    Transpose {
        /// Permutation.
        perm: Vec<i64>,
    },
    /// Broadcast to a shape (input 1).
    Expand,
    /// Repeat along each axis (input 1).
    Tile,
    /// Pad; inputs `data, pads, constant_value?, axes?`.
    Pad {
        /// `constant`, `reflect`, `edge` or `wrap`.
        mode: String,
    },
    /// Moves depth into spatial blocks.
    DepthToSpace {
        /// Block size.
        blocksize: i64,
        /// `DCR` or `CRD`.
        mode: String,
    },
    /// Gather slices along an axis.
    Gather {
        /// Axis.
        axis: i64,
    },
    /// Gather single elements along an axis.
    GatherElements {
        /// Axis.
        axis: i64,
    },
    /// Gather slices by index tuples.
    #[serde(rename = "GatherND")]
    GatherNd {
        /// Leading batch dims shared by data and indices.
        batch_dims: i64,
    },
    /// Scatter slices by index tuples.
    #[serde(rename = "ScatterND")]
    ScatterNd {
        /// `none`, `add`, `mul`, `max` or `min`.
        reduction: String,
    },
    /// The shape of the input as an i64 tensor, sliced to `[start, end)`.
    Shape {
        /// First axis.
        start: i64,
        /// One past the last axis (`None`: the rank).
        end: Option<i64>,
    },
    /// Element count as an i64 scalar.
    Size,
    /// A tensor of the shape given by the input, filled with one value.
    ConstantOfShape {
        /// The fill value (a one-element tensor; its dtype is the output's).
        #[serde(serialize_with = "tensor_summary")]
        value: Tensor,
    },
    /// `start, start+delta, ...` up to `limit`.
    Range,
    /// Resize by `scales` or to `sizes`; inputs `x, roi?, scales?, sizes?`.
    Resize(ResizeAttrs),
    /// The `k` largest or smallest along an axis; outputs values and i64 indices.
    TopK {
        /// Axis.
        axis: i64,
        /// Largest rather than smallest.
        largest: bool,
        /// Sort the results.
        sorted: bool,
    },
    /// Upper or lower triangle of the last two axes.
    Trilu {
        /// Keep the upper triangle.
        upper: bool,
    },
    /// Cumulative sum along an axis (input 1).
    CumSum {
        /// Exclude the current element.
        exclusive: bool,
        /// Sum from the end.
        reverse: bool,
    },
    /// Dropout; inference returns the input. Inputs `data, ratio?, training_mode?`.
    Dropout {
        /// Seed of the mask in training mode.
        seed: Option<i64>,
    },
    /// Runs one of two subgraphs; input 0 is the condition, the rest are captured values.
    If {
        /// Graph run when the condition is true.
        #[serde(skip)]
        then_branch: Box<Graph>,
        /// Graph run when the condition is false.
        #[serde(skip)]
        else_branch: Box<Graph>,
    },
    /// Loop; inputs `M?, cond?, carried..., captured...`; body inputs `iter, cond, carried..., captured...`.
    Loop {
        /// The loop body.
        #[serde(skip)]
        body: Box<Graph>,
        /// Number of loop-carried values (the rest of the inputs after them are captures).
        carried: usize,
    },
    /// Long short-term memory; inputs `X, W, R, B?, seq_lens?, h0?, c0?, P?`.
    #[serde(rename = "LSTM")]
    Lstm(RnnAttrs),
    /// Gated recurrent unit; inputs `X, W, R, B?, seq_lens?, h0?`.
    #[serde(rename = "GRU")]
    Gru(RnnAttrs),
    /// `saturate(round(x / scale) + zero_point)`; inputs `x, scale, zero_point?`.
    QuantizeLinear {
        /// Axis of per-axis scales.
        axis: i64,
        /// Block size of blocked scales (0: per tensor or per axis).
        block_size: i64,
        /// Element type of the result when there is no zero point (`None`: u8).
        output_dtype: Option<DType>,
        /// Saturate float-8 results.
        saturate: bool,
    },
    /// `(x - zero_point) * scale`; inputs `x, scale, zero_point?`.
    DequantizeLinear {
        /// Axis of per-axis scales.
        axis: i64,
        /// Block size of blocked scales (0: per tensor or per axis).
        block_size: i64,
        /// Element type of the result (`None`: the scale's).
        output_dtype: Option<DType>,
    },
    /// Casts input 0 to the element type of input 1.
    CastLike {
        /// Saturate to the range of 8-bit float targets.
        saturate: bool,
        /// Rounding for float targets: `up` or `nearest`.
        round_mode: String,
    },
    /// Scaled dot-product attention; inputs `Q, K, V, mask?, past_key?, past_value?, nonpad_kv_seqlen?`.
    Attention(AttentionAttrs),
    /// `x / sqrt(mean(x^2) + eps) * scale` over the axes from `axis`.
    #[serde(rename = "RMSNormalization")]
    RmsNormalization {
        /// First normalized axis.
        axis: i64,
        /// Added to the mean square.
        epsilon: f32,
        /// Element type of the statistics.
        stash_type: DType,
    },
    /// Rotary position embedding; inputs `X, cos_cache, sin_cache, position_ids?`.
    RotaryEmbedding {
        /// Rotate interleaved pairs instead of halves.
        interleaved: bool,
        /// Heads of a 3-D input (0: the input is 4-D).
        num_heads: i64,
        /// Rotated prefix of each head (0: all of it).
        rotary_embedding_dim: i64,
    },
    /// Scatter single elements along an axis; inputs `data, indices, updates`.
    ScatterElements {
        /// Axis.
        axis: i64,
        /// `none`, `add`, `mul`, `max` or `min`.
        reduction: String,
    },
    /// A cache with `update` written along `axis` at each batch entry's write index (input 2,
    /// zero when absent), wrapping around in `circular` mode; inputs `past_cache, update,
    /// write_indices?`.
    TensorScatter {
        /// The cache's sequence axis.
        axis: i64,
        /// `linear` or `circular`.
        mode: String,
    },
    /// One-hot encoding; inputs `indices, depth, values`.
    OneHot {
        /// Axis of the new dimension.
        axis: i64,
    },
    /// One-hot of the maximum along an axis.
    Hardmax {
        /// Axis.
        axis: i64,
    },
    /// Normalizes to unit L1 or L2 norm along an axis.
    LpNormalization {
        /// Axis.
        axis: i64,
        /// 1 or 2.
        p: i64,
    },
    /// Moves spatial blocks into depth.
    SpaceToDepth {
        /// Block size.
        blocksize: i64,
        /// `DCR` or `CRD`.
        mode: String,
    },
    /// Indices of the non-zero elements, `[rank, count]`.
    NonZero,
    /// Slices along an axis (or of the flattened input) where input 1 is true.
    Compress {
        /// Axis (`None`: flatten first).
        axis: Option<i64>,
    },
    /// A 2-D tensor with ones on a diagonal, shaped like the input.
    EyeLike {
        /// Element type (`None`: the input's).
        dtype: Option<DType>,
        /// Diagonal offset.
        k: i64,
    },
    /// Cumulative product along an axis (input 1).
    CumProd {
        /// Exclude the current element.
        exclusive: bool,
        /// Multiply from the end.
        reverse: bool,
    },
    /// Scan: runs the body over slices of the scan inputs; inputs `state..., scan_inputs..., captured...`.
    Scan {
        /// The body.
        #[serde(skip)]
        body: Box<Graph>,
        /// Number of scan inputs (the state inputs come before them).
        num_scan_inputs: i64,
        /// Number of body inputs that are captures, at the end.
        captured: usize,
        /// Opset 8 form: input 0 is `sequence_lens`, every input has a leading batch axis and
        /// the scan axis is the one after it.
        batched: bool,
        /// Axis of each scan input.
        scan_input_axes: Vec<i64>,
        /// Direction of each scan input (1: reverse).
        scan_input_directions: Vec<i64>,
        /// Axis of each scan output.
        scan_output_axes: Vec<i64>,
        /// Direction of each scan output (1: reverse).
        scan_output_directions: Vec<i64>,
    },
    /// Runs the body on each element of the input sequence (and of sequence-valued additional
    /// inputs); inputs `sequence, additional..., captured...`; each output is a sequence.
    SequenceMap {
        /// The body.
        #[serde(skip)]
        body: Box<Graph>,
        /// Number of body inputs that are captures, at the end.
        captured: usize,
    },
    /// Simple recurrent network; inputs `X, W, R, B?, seq_lens?, h0?`.
    #[serde(rename = "RNN")]
    Rnn(RnnAttrs),
    /// Greedy non-max suppression of boxes; inputs `boxes, scores, max_out?, iou?, score_threshold?`.
    NonMaxSuppression {
        /// 0: boxes are corners `[y1,x1,y2,x2]`; 1: centers `[xc,yc,w,h]`.
        center_point_box: i64,
    },
    /// Samples the input at grid locations.
    GridSample {
        /// Grid extremes are pixel centers of the corners.
        align_corners: bool,
        /// `bilinear`/`linear`, `nearest` or `bicubic`/`cubic`.
        mode: String,
        /// `zeros`, `border` or `reflection`.
        padding_mode: String,
    },
    /// Lp pooling.
    LpPool {
        /// Window, stride and padding.
        #[serde(flatten)]
        pool: PoolAttrs,
        /// Norm order.
        p: i64,
    },
    /// Inverse of max pooling; inputs `x, indices, output_shape?`.
    MaxUnpool {
        /// Window shape.
        kernel_shape: Vec<i64>,
        /// Begin then end padding.
        pads: Vec<i64>,
        /// Strides.
        strides: Vec<i64>,
    },
    /// Max pooling over regions of interest; inputs `x, rois`.
    MaxRoiPool {
        /// Output height and width.
        pooled_shape: Vec<i64>,
        /// Scale from roi coordinates to the input's.
        spatial_scale: f32,
    },
    /// Bilinear pooling over regions of interest; inputs `x, rois, batch_indices`.
    RoiAlign {
        /// `half_pixel` or `output_half_pixel`.
        coordinate_transformation_mode: String,
        /// `avg` or `max`.
        mode: String,
        /// Output height.
        output_height: i64,
        /// Output width.
        output_width: i64,
        /// Samples per bin side (0: adaptive).
        sampling_ratio: i64,
        /// Scale from roi coordinates to the input's.
        spatial_scale: f32,
    },
    /// `(x - mean) / std` over `axes`.
    MeanVarianceNormalization {
        /// Axes of the statistics.
        axes: Vec<i64>,
    },
    /// Integer matmul with zero points; inputs `a, b, a_zero?, b_zero?`; i32 result.
    MatMulInteger,
    /// Integer convolution with zero points; inputs `x, w, x_zero?, w_zero?`; i32 result.
    ConvInteger(ConvAttrs),
    /// Quantized matmul; inputs `a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero`.
    #[serde(rename = "QLinearMatMul")]
    QLinearMatMul,
    /// Quantized convolution; inputs `x, x_scale, x_zero, w, w_scale, w_zero, y_scale, y_zero, b?`.
    #[serde(rename = "QLinearConv")]
    QLinearConv(ConvAttrs),
    /// u8 quantization with scale and zero point from the data's range; three outputs.
    DynamicQuantizeLinear,
    /// Sorted (or first-seen) unique values or slices, with indices, inverse and counts.
    Unique {
        /// Axis (`None`: flatten first).
        axis: Option<i64>,
        /// Sort the unique values.
        sorted: bool,
    },
    /// Reverses each batch entry's first `seq_lens` steps.
    ReverseSequence {
        /// Batch axis.
        batch_axis: i64,
        /// Time axis.
        time_axis: i64,
    },
    /// Rearranges column blocks into an image; inputs `x, image_shape, block_shape`.
    Col2Im {
        /// Dilations.
        dilations: Vec<i64>,
        /// Begin then end padding.
        pads: Vec<i64>,
        /// Strides.
        strides: Vec<i64>,
    },
    /// Center crop or pad to a shape (input 1).
    CenterCropPad {
        /// Axes the shape refers to (empty: all).
        axes: Vec<i64>,
    },
    /// Sampling grid from affine matrices; inputs `theta, size`.
    AffineGrid {
        /// Grid extremes are pixel centers of the corners.
        align_corners: bool,
    },
    /// Determinant of the trailing square matrices.
    Det,
    /// Convolution sampling its input at learned offsets (bilinear, zero outside), each tap
    /// weighted by a mask; inputs `x [N, C, H, W], w, offset [N, 2·G·kh·kw, oh, ow], b?, mask?`.
    DeformConv(DeformConvAttrs),
    /// Causal depthwise 1-D convolution that carries its last `k - 1` input positions between
    /// calls; inputs `input [B, C, L], weight [C, 1, k], bias [C]?, past_state [B, C, k-1]?`;
    /// outputs `output [B, C, L], present_state [B, C, k-1]`.
    CausalConvWithState {
        /// `none`, or `silu` (also spelled `swish`) applied to the output.
        activation: String,
    },
    /// Recurrent linear attention (prefill or decode) with a `[B, H_kv, d_k, d_v]` state;
    /// inputs `query [B, T, H_q·d_k], key [B, T, H_kv·d_k], value [B, T, H_kv·d_v],
    /// past_state?, decay?, beta?`; outputs `output [B, T, H_q·d_v], present_state`.
    LinearAttention {
        /// Chunk length of chunk-parallel implementations (no effect on the result).
        chunk_size: i64,
        /// Key/value heads (each shared by `q_num_heads / kv_num_heads` query heads).
        kv_num_heads: i64,
        /// Query heads.
        q_num_heads: i64,
        /// Output scale (0: `1/sqrt(d_k)`).
        scale: f32,
        /// `linear`, `gated`, `delta` or `gated_delta`.
        update_rule: String,
    },
    /// Negative log-likelihood of the `target` class; inputs `input [N, C, d...]` (log
    /// probabilities), `target [N, d...]`, `weight [C]?`.
    NegativeLogLikelihoodLoss {
        /// A target value that adds nothing to the loss (`None`: every target counts).
        ignore_index: Option<i64>,
        /// `none` (one loss per target), `sum` or `mean` (weighted by the targets' weights).
        reduction: String,
    },
    /// Log-softmax over axis 1, then [`Op::NegativeLogLikelihoodLoss`]; inputs `scores`,
    /// `labels`, `weights?`; outputs the loss and, optionally, the log-probabilities.
    SoftmaxCrossEntropyLoss {
        /// A label that adds nothing to the loss (`None`: every label counts).
        ignore_index: Option<i64>,
        /// `none`, `sum` or `mean`.
        reduction: String,
    },
    /// Wraps a value in an optional, or makes an empty one of a type.
    Optional {
        /// The type of an empty optional.
        #[serde(skip)]
        ty: Option<ValueType>,
    },
    /// True when an optional holds a value.
    OptionalHasElement,
    /// The value an optional holds.
    OptionalGetElement,
    /// A sequence of the inputs.
    SequenceConstruct,
    /// An empty sequence of a tensor type.
    SequenceEmpty {
        /// Element type.
        dtype: DType,
    },
    /// The sequence with a tensor inserted at a position (input 2, default the end).
    SequenceInsert,
    /// The tensor at a position.
    SequenceAt,
    /// The sequence without the tensor at a position (default the last).
    SequenceErase,
    /// The length of a sequence.
    SequenceLength,
    /// Splits a tensor into a sequence.
    SplitToSequence {
        /// Axis.
        axis: i64,
        /// Keep the split axis when splitting into single slices.
        keepdims: bool,
    },
    /// Concatenates (or stacks) a sequence.
    ConcatFromSequence {
        /// Axis.
        axis: i64,
        /// Stack along a new axis.
        new_axis: bool,
    },
    /// A window function of a given length.
    Window {
        /// `Hann`, `Hamming` or `Blackman`.
        kind: WindowKind,
        /// Output element type.
        output_datatype: DType,
        /// Periodic (for spectral analysis) rather than symmetric.
        periodic: bool,
    },
    /// Discrete Fourier transform; inputs `x, dft_length?, axis?`.
    #[serde(rename = "DFT")]
    Dft {
        /// Inverse transform.
        inverse: bool,
        /// Keep only the non-redundant half.
        onesided: bool,
    },
    /// Short-time Fourier transform; inputs `signal, frame_step, window?, frame_length?`.
    #[serde(rename = "STFT")]
    Stft {
        /// Keep only the non-redundant half.
        onesided: bool,
    },
    /// Mel filter bank matrix; inputs `num_mel_bins, dft_length, sample_rate, lower_hz, upper_hz`.
    MelWeightMatrix {
        /// Output element type.
        output_datatype: DType,
    },
    /// One-input elementwise op.
    #[serde(untagged)]
    Unary(Unary),
    /// Two-input broadcasting elementwise op.
    #[serde(untagged)]
    Binary(Binary),
    /// Many-input broadcasting elementwise op.
    #[serde(untagged)]
    Variadic(Variadic),
}

fn tensor_summary<S: Serializer>(tensor: &Tensor, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format_args!("{}{:?}", tensor.dtype, tensor.shape))
}

impl Op {
    /// The op's name, as ONNX spells it (`Conv`, `ReduceMean`, `GatherND`, ...).
    pub fn name(&self) -> String {
        match self {
            Op::Reduce { kind, .. } => format!("Reduce{kind:?}"),
            Op::Window { kind, .. } => format!("{kind:?}Window"),
            _ => match serde_json::to_value(self) {
                Ok(serde_json::Value::String(name)) => name,
                Ok(serde_json::Value::Object(map)) => {
                    map.keys().next().cloned().unwrap_or_default()
                }
                _ => String::from("?"),
            },
        }
    }

    /// The op's attributes as a JSON object (empty for ops without attributes).
    pub fn attributes(&self) -> serde_json::Map<String, serde_json::Value> {
        // Serialized through text so f32 attributes keep their shortest decimal form (0.01, not 0.0099999...).
        let text = serde_json::to_string(self).unwrap_or_default();
        let mut attrs = match serde_json::from_str(&text) {
            Ok(serde_json::Value::Object(map)) => match map.into_iter().next() {
                Some((_, serde_json::Value::Object(attrs))) => attrs,
                Some((_, value)) => serde_json::Map::from_iter([("value".to_string(), value)]),
                None => serde_json::Map::new(),
            },
            _ => serde_json::Map::new(),
        };
        if let Op::Reduce { .. } | Op::Window { .. } = self {
            attrs.remove("kind");
        }
        attrs
    }

    /// The subgraphs this op runs, with the attribute names ONNX gives them.
    pub fn subgraphs(&self) -> Vec<(&'static str, &Graph)> {
        match self {
            Op::If {
                then_branch,
                else_branch,
            } => vec![("then_branch", then_branch), ("else_branch", else_branch)],
            Op::Loop { body, .. } | Op::Scan { body, .. } | Op::SequenceMap { body, .. } => {
                vec![("body", body)]
            }
            _ => Vec::new(),
        }
    }

    /// The subgraphs this op runs, for passes that rewrite them.
    pub fn subgraphs_mut(&mut self) -> Vec<&mut Graph> {
        match self {
            Op::If {
                then_branch,
                else_branch,
            } => vec![then_branch, else_branch],
            Op::Loop { body, .. } | Op::Scan { body, .. } | Op::SequenceMap { body, .. } => {
                vec![body]
            }
            _ => Vec::new(),
        }
    }
}
