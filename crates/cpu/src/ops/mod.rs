//! The CPU implementation of every op, one family per module, and the dispatch from `Op`.

mod attention;
mod control;
mod conv;
mod conv_direct;
pub(crate) mod elementwise;
mod fused;
mod index;
mod linalg;
mod loss;
mod norm;
mod pool;
mod quant;
mod reduce;
mod resize;
mod rnn;
mod sampling;
mod sequence;
mod shape;
mod signal;
mod stateful;

use crate::array::{Array, Data};
use crate::exec::Executor;
use crate::value::Value;
use sparkc_ir::{Node, NodeId, Op};

/// Result of an op: an error message without the node's name (the executor adds it).
pub(crate) type R<T> = Result<T, String>;

/// One input of a node: borrowed from the executor, or owned when this node is its last reader.
pub(crate) enum Arg<'a> {
    /// Read-only.
    Borrowed(&'a Value),
    /// Dies here; the op may reuse its buffer.
    Owned(Value),
}

/// A node's inputs, in slot order, `None` for omitted optional inputs.
pub(crate) struct Args<'a> {
    items: Vec<Option<Arg<'a>>>,
}

impl Arg<'_> {
    /// The value.
    pub(crate) fn value(&self) -> &Value {
        match self {
            Arg::Borrowed(v) => v,
            Arg::Owned(v) => v,
        }
    }

    /// True when the value dies here.
    pub(crate) fn is_owned(&self) -> bool {
        matches!(self, Arg::Owned(_))
    }
}

impl<'a> Args<'a> {
    pub(crate) fn new(items: Vec<Option<Arg<'a>>>) -> Args<'a> {
        Args { items }
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn opt(&self, i: usize) -> Option<&Value> {
        match self.items.get(i)? {
            Some(Arg::Borrowed(v)) => Some(v),
            Some(Arg::Owned(v)) => Some(v),
            None => None,
        }
    }

    pub(crate) fn value(&self, i: usize) -> R<&Value> {
        self.opt(i)
            .ok_or_else(|| format!("required input {i} is missing"))
    }

    pub(crate) fn tensor(&self, i: usize) -> R<&Array> {
        self.value(i)?
            .as_tensor()
            .map_err(|e| format!("input {i}: {e}"))
    }

    pub(crate) fn opt_tensor(&self, i: usize) -> R<Option<&Array>> {
        match self.opt(i) {
            Some(v) => v
                .as_tensor()
                .map(Some)
                .map_err(|e| format!("input {i}: {e}")),
            None => Ok(None),
        }
    }

    /// True when the input dies here, so taking it costs no copy.
    pub(crate) fn owned(&self, i: usize) -> bool {
        matches!(self.items.get(i), Some(Some(Arg::Owned(_))))
    }

    /// The input by value: moved when it dies here, copied otherwise.
    pub(crate) fn take(&mut self, i: usize) -> R<Value> {
        match self.items.get_mut(i).and_then(Option::take) {
            Some(Arg::Owned(v)) => Ok(v),
            Some(Arg::Borrowed(v)) => Ok(v.clone()),
            None => Err(format!("required input {i} is missing")),
        }
    }

    pub(crate) fn take_tensor(&mut self, i: usize) -> R<Array> {
        self.take(i)?
            .into_tensor()
            .map_err(|e| format!("input {i}: {e}"))
    }

    /// An integer input's elements.
    pub(crate) fn ints(&self, i: usize) -> R<Vec<i64>> {
        let t = self.tensor(i)?;
        if !(t.dtype().is_integer()) {
            return Err(format!(
                "input {i} must be an integer tensor, found {}",
                t.dtype()
            ));
        }
        Ok(t.data.to_i64s())
    }

    pub(crate) fn opt_ints(&self, i: usize) -> R<Option<Vec<i64>>> {
        match self.opt(i) {
            Some(_) => self.ints(i).map(Some),
            None => Ok(None),
        }
    }

    /// All present inputs as tensors.
    pub(crate) fn tensors(&self) -> R<Vec<&Array>> {
        (0..self.len())
            .filter(|&i| self.opt(i).is_some())
            .map(|i| self.tensor(i))
            .collect()
    }
}

fn one(a: Array) -> R<Vec<Value>> {
    Ok(vec![Value::Tensor(a)])
}

fn many(arrays: Vec<Array>) -> R<Vec<Value>> {
    Ok(arrays.into_iter().map(Value::Tensor).collect())
}

/// The most elements a tensor made from data-given sizes may have (2^34, 64 GiB of f32).
pub(crate) const MAX_ELEMENTS: u128 = 1 << 34;

/// Checks that a shape computed from input values is of a size that can be allocated.
pub(crate) fn checked_len(shape: &[usize]) -> R<usize> {
    let len = shape
        .iter()
        .fold(1u128, |acc, &d| acc.saturating_mul(d as u128));
    if len > MAX_ELEMENTS {
        return Err(format!(
            "the result would have shape {shape:?}, over 2^34 elements"
        ));
    }
    Ok(len as usize)
}

/// Maps a possibly negative axis into `0..rank`.
pub(crate) fn axis(axis: i64, rank: usize) -> R<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a >= rank.max(1) as i64 {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// Runs one node.
pub(crate) fn run(exec: &Executor, id: NodeId, node: &Node, mut args: Args) -> R<Vec<Value>> {
    let outputs = node.outputs.len();
    match &node.op {
        Op::Input | Op::Const(_) => Err("inputs and constants are not run".into()),
        Op::Unary(sparkc_ir::op::Unary::Identity) => Ok(vec![args.take(0)?]),
        Op::Unary(op) => one(elementwise::unary(op, args.take_tensor(0)?)?),
        Op::Binary(op) => match args.owned(0) {
            true => {
                let a = args.take_tensor(0)?;
                one(elementwise::binary_owned(op, a, args.tensor(1)?)?)
            }
            false => one(elementwise::binary(op, args.tensor(0)?, args.tensor(1)?)?),
        },
        Op::Variadic(op) => one(elementwise::variadic(*op, &args.tensors()?)?),
        Op::Where => one(elementwise::where_(
            args.tensor(0)?,
            args.tensor(1)?,
            args.tensor(2)?,
        )?),
        Op::Clip => {
            let (lo, hi) = (args.opt_tensor(1)?.cloned(), args.opt_tensor(2)?.cloned());
            one(elementwise::clip(
                args.take_tensor(0)?,
                lo.as_ref(),
                hi.as_ref(),
            )?)
        }
        Op::Cast {
            to,
            saturate,
            round_mode,
        } => one(elementwise::cast(
            args.tensor(0)?,
            *to,
            *saturate,
            round_mode,
        )),
        Op::BitCast { to } => one(elementwise::bit_cast(args.tensor(0)?, *to)?),
        Op::Reduce {
            kind,
            keepdims,
            noop_with_empty_axes,
        } => one(reduce::reduce(
            *kind,
            args.tensor(0)?,
            args.opt_ints(1)?,
            *keepdims,
            *noop_with_empty_axes,
        )?),
        Op::ArgMax {
            axis,
            keepdims,
            select_last_index,
        } => one(reduce::arg(
            true,
            args.tensor(0)?,
            *axis,
            *keepdims,
            *select_last_index,
        )?),
        Op::ArgMin {
            axis,
            keepdims,
            select_last_index,
        } => one(reduce::arg(
            false,
            args.tensor(0)?,
            *axis,
            *keepdims,
            *select_last_index,
        )?),
        Op::Softmax { axis } => one(reduce::softmax(args.take_tensor(0)?, *axis, false)?),
        Op::LogSoftmax { axis } => one(reduce::softmax(args.take_tensor(0)?, *axis, true)?),
        Op::CumSum { exclusive, reverse } => one(reduce::cumulative(
            args.tensor(0)?,
            args.ints(1)?,
            *exclusive,
            *reverse,
        )?),
        Op::TopK {
            axis,
            largest,
            sorted,
        } => many(reduce::top_k(
            args.tensor(0)?,
            args.ints(1)?,
            *axis,
            *largest,
            *sorted,
        )?),
        Op::Conv(attrs) => one(conv::conv(
            args.tensor(0)?,
            args.tensor(1)?,
            args.opt_tensor(2)?,
            attrs,
        )?),
        Op::ConvTranspose(attrs) => one(conv::conv_transpose(
            args.tensor(0)?,
            args.tensor(1)?,
            args.opt_tensor(2)?,
            attrs,
        )?),
        Op::AveragePool {
            pool,
            count_include_pad,
        } => one(pool::average_pool(
            args.tensor(0)?,
            pool,
            *count_include_pad,
        )?),
        Op::MaxPool {
            pool,
            storage_order,
        } => many(pool::max_pool(
            args.tensor(0)?,
            pool,
            *storage_order,
            outputs,
        )?),
        Op::GlobalAveragePool => one(pool::global(args.tensor(0)?, false)?),
        Op::GlobalMaxPool => one(pool::global(args.tensor(0)?, true)?),
        Op::Lrn {
            alpha,
            beta,
            bias,
            size,
        } => one(norm::lrn(args.tensor(0)?, *alpha, *beta, *bias, *size)?),
        Op::BatchNormalization {
            epsilon,
            momentum,
            training_mode,
        } if !*training_mode && args.tensor(0)?.dtype() == sparkc_ir::DType::F32 => {
            let (scale, bias, mean, var) = (
                args.tensor(1)?.data.to_f64s(),
                args.tensor(2)?.data.to_f64s(),
                args.tensor(3)?.data.to_f64s(),
                args.tensor(4)?.data.to_f64s(),
            );
            let x = args.take_tensor(0)?;
            one(norm::batch_norm_inference(
                x, &scale, &bias, &mean, &var, *epsilon,
            )?)
        }
        Op::BatchNormalization {
            epsilon,
            momentum,
            training_mode,
        } => many(norm::batch_norm(
            &args,
            *epsilon,
            *momentum,
            *training_mode,
        )?),
        Op::InstanceNormalization { epsilon } => one(norm::instance_norm(
            args.tensor(0)?,
            args.tensor(1)?,
            args.tensor(2)?,
            *epsilon,
        )?),
        Op::LayerNormalization {
            axis,
            epsilon,
            stash_type: _,
        } => many(norm::layer_norm(
            args.tensor(0)?,
            args.tensor(1)?,
            args.opt_tensor(2)?,
            *axis,
            *epsilon,
            outputs,
        )?),
        Op::GroupNormalization {
            epsilon,
            num_groups,
            stash_type: _,
        } => one(norm::group_norm(
            args.tensor(0)?,
            args.tensor(1)?,
            args.tensor(2)?,
            *num_groups,
            *epsilon,
        )?),
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => one(linalg::gemm_op(
            args.tensor(0)?,
            args.tensor(1)?,
            args.opt_tensor(2)?,
            *alpha,
            *beta,
            *trans_a,
            *trans_b,
        )?),
        Op::MatMul => one(linalg::matmul(args.tensor(0)?, args.tensor(1)?)?),
        Op::TransposedMatMul { trans_a, trans_b } => {
            let a = linalg::swap_last_two(args.tensor(0)?, *trans_a)?;
            let b = linalg::swap_last_two(args.tensor(1)?, *trans_b)?;
            one(linalg::matmul(&a, &b)?)
        }
        Op::Fused(f) => fused::fused(exec, id, node, f, args),
        Op::Einsum { equation } => one(linalg::einsum(equation, &args.tensors()?)?),
        Op::Concat { axis } => one(shape::concat(&args.tensors()?, *axis)?),
        Op::Split { axis, num_outputs } => many(shape::split(
            args.tensor(0)?,
            args.opt_ints(1)?,
            *axis,
            *num_outputs,
            outputs,
        )?),
        Op::Slice => one(shape::slice(
            args.tensor(0)?,
            &args.ints(1)?,
            &args.ints(2)?,
            args.opt_ints(3)?,
            args.opt_ints(4)?,
        )?),
        Op::Squeeze => {
            let axes = args.opt_ints(1)?;
            one(shape::squeeze(args.take_tensor(0)?, axes)?)
        }
        Op::Unsqueeze => {
            let axes = args.ints(1)?;
            one(shape::unsqueeze(args.take_tensor(0)?, &axes)?)
        }
        Op::Reshape { allowzero } => {
            let target = args.ints(1)?;
            one(shape::reshape(args.take_tensor(0)?, &target, *allowzero)?)
        }
        Op::Flatten { axis } => one(shape::flatten(args.take_tensor(0)?, *axis)?),
        Op::Transpose { perm } => one(shape::transpose(args.tensor(0)?, perm)?),
        Op::Expand => one(shape::expand_to(args.tensor(0)?, &args.ints(1)?)?),
        Op::Tile => one(shape::tile(args.tensor(0)?, &args.ints(1)?)?),
        Op::Pad { mode } => one(shape::pad(
            args.tensor(0)?,
            &args.ints(1)?,
            args.opt_tensor(2)?,
            args.opt_ints(3)?,
            mode,
        )?),
        Op::DepthToSpace { blocksize, mode } => {
            one(shape::depth_to_space(args.tensor(0)?, *blocksize, mode)?)
        }
        Op::Gather { axis } => one(index::gather(args.tensor(0)?, args.tensor(1)?, *axis)?),
        Op::GatherElements { axis } => one(index::gather_elements(
            args.tensor(0)?,
            args.tensor(1)?,
            *axis,
        )?),
        Op::GatherNd { batch_dims } => one(index::gather_nd(
            args.tensor(0)?,
            args.tensor(1)?,
            *batch_dims,
        )?),
        Op::ScatterNd { reduction } => one(index::scatter_nd(
            args.tensor(0)?,
            args.tensor(1)?,
            args.tensor(2)?,
            reduction,
        )?),
        Op::Shape { start, end } => one(shape::shape_of(args.tensor(0)?, *start, *end)),
        Op::Size => one(Array::scalar(Data::I64(vec![args.tensor(0)?.len() as i64]))),
        Op::ConstantOfShape { value } => one(shape::constant_of_shape(
            &args.ints(0)?,
            &Array::from_tensor(value),
        )?),
        Op::Range => one(shape::range(
            args.tensor(0)?,
            args.tensor(1)?,
            args.tensor(2)?,
        )?),
        Op::Resize(attrs) => one(resize::resize(&args, attrs)?),
        Op::Trilu { upper } => {
            let k = args
                .opt_ints(1)?
                .and_then(|k| k.first().copied())
                .unwrap_or(0);
            one(shape::trilu(args.take_tensor(0)?, k, *upper)?)
        }
        Op::DeformConv(attrs) => one(sampling::deform_conv(&args, attrs)?),
        Op::CausalConvWithState { activation } => many(stateful::causal_conv(
            args.tensor(0)?,
            args.tensor(1)?,
            args.opt_tensor(2)?,
            args.opt_tensor(3)?,
            activation == "silu",
        )?),
        Op::LinearAttention {
            q_num_heads,
            kv_num_heads,
            scale,
            update_rule,
            ..
        } => {
            let heads = |n: i64| usize::try_from(n).map_err(|_| format!("{n} heads"));
            let attrs = stateful::LinearAttention {
                q_heads: heads(*q_num_heads)?,
                kv_heads: heads(*kv_num_heads)?,
                scale: *scale,
                update_rule,
            };
            let inputs = [
                args.opt_tensor(0)?,
                args.opt_tensor(1)?,
                args.opt_tensor(2)?,
                args.opt_tensor(3)?,
                args.opt_tensor(4)?,
                args.opt_tensor(5)?,
            ];
            many(stateful::linear_attention(inputs, &attrs)?)
        }
        Op::NegativeLogLikelihoodLoss {
            ignore_index,
            reduction,
        } => one(loss::negative_log_likelihood(
            args.tensor(0)?,
            args.tensor(1)?,
            args.opt_tensor(2)?,
            *ignore_index,
            reduction,
        )?),
        Op::SoftmaxCrossEntropyLoss {
            ignore_index,
            reduction,
        } => many(loss::softmax_cross_entropy(
            args.tensor(0)?,
            args.tensor(1)?,
            args.opt_tensor(2)?,
            *ignore_index,
            reduction,
        )?),
        Op::Dropout { seed } => {
            let ratio = args
                .opt_tensor(1)?
                .and_then(|r| r.data.to_f64s().first().copied())
                .unwrap_or(0.5);
            let training = args
                .opt_tensor(2)?
                .is_some_and(|t| t.data.to_i64s().first() == Some(&1));
            let x = args.take_tensor(0)?;
            many(elementwise::dropout(x, ratio, training, *seed)?)
        }
        Op::If { .. } => control::if_(exec, id, &args),
        Op::Loop { carried, .. } => control::loop_(exec, id, &args, *carried, outputs),
        Op::Lstm(attrs) => many(rnn::recurrent(rnn::Cell::Lstm, &args, attrs)?),
        Op::Gru(attrs) => many(rnn::recurrent(rnn::Cell::Gru, &args, attrs)?),
        Op::CastLike {
            saturate,
            round_mode,
        } => {
            let to = args.tensor(1)?.dtype();
            one(elementwise::cast(
                args.tensor(0)?,
                to,
                *saturate,
                round_mode,
            ))
        }
        Op::Attention(attrs) => many(attention::attention(&args, attrs, outputs)?),
        Op::RmsNormalization { axis, epsilon, .. } => one(norm::rms_norm(
            args.tensor(0)?,
            args.tensor(1)?,
            *axis,
            *epsilon,
        )?),
        Op::RotaryEmbedding {
            interleaved,
            num_heads,
            rotary_embedding_dim,
        } => one(attention::rotary(
            &args,
            *interleaved,
            *num_heads,
            *rotary_embedding_dim,
        )?),
        Op::ScatterElements { axis, reduction } => one(index::scatter_elements(
            args.tensor(0)?,
            args.tensor(1)?,
            args.tensor(2)?,
            *axis,
            reduction,
        )?),
        Op::TensorScatter { axis, mode } => one(index::tensor_scatter(
            args.tensor(0)?,
            args.tensor(1)?,
            args.opt_tensor(2)?,
            *axis,
            mode == "circular",
        )?),
        Op::OneHot { axis } => one(index::one_hot(
            args.tensor(0)?,
            args.tensor(1)?,
            args.tensor(2)?,
            *axis,
        )?),
        Op::Hardmax { axis } => one(reduce::hardmax(args.tensor(0)?, *axis)?),
        Op::LpNormalization { axis, p } => one(norm::lp_normalization(args.tensor(0)?, *axis, *p)?),
        Op::SpaceToDepth { blocksize, mode } => {
            one(shape::space_to_depth(args.tensor(0)?, *blocksize, mode)?)
        }
        Op::NonZero => one(index::non_zero(args.tensor(0)?)),
        Op::Compress { axis } => one(index::compress(args.tensor(0)?, args.tensor(1)?, *axis)?),
        Op::EyeLike { dtype, k } => one(shape::eye_like(args.tensor(0)?, *dtype, *k)?),
        Op::CumProd { exclusive, reverse } => one(reduce::cumulative_product(
            args.tensor(0)?,
            args.ints(1)?,
            *exclusive,
            *reverse,
        )?),
        Op::Scan { .. } => control::scan(exec, id, node, &args),
        Op::SequenceMap { captured, .. } => control::sequence_map(exec, id, &args, *captured),
        Op::Rnn(attrs) => many(rnn::recurrent(rnn::Cell::Rnn, &args, attrs)?),
        Op::NonMaxSuppression { center_point_box } => {
            one(sampling::non_max_suppression(&args, *center_point_box)?)
        }
        Op::GridSample {
            align_corners,
            mode,
            padding_mode,
        } => one(sampling::grid_sample(
            args.tensor(0)?,
            args.tensor(1)?,
            *align_corners,
            mode,
            padding_mode,
        )?),
        Op::LpPool { pool, p } => {
            one(pool::pool(args.tensor(0)?, pool, pool::Window::Lp(*p as f64), 0)?.0)
        }
        Op::MaxUnpool {
            kernel_shape,
            pads,
            strides,
        } => one(pool::max_unpool(&args, kernel_shape, pads, strides)?),
        Op::MaxRoiPool {
            pooled_shape,
            spatial_scale,
        } => one(sampling::max_roi_pool(
            args.tensor(0)?,
            args.tensor(1)?,
            pooled_shape,
            *spatial_scale,
        )?),
        Op::RoiAlign {
            coordinate_transformation_mode,
            mode,
            output_height,
            output_width,
            sampling_ratio,
            spatial_scale,
        } => one(sampling::roi_align(
            &args,
            coordinate_transformation_mode == "half_pixel",
            mode == "max",
            (*output_height as usize, *output_width as usize),
            *sampling_ratio,
            *spatial_scale,
        )?),
        Op::MeanVarianceNormalization { axes } => one(norm::mean_variance(args.tensor(0)?, axes)?),
        Op::MatMulInteger => one(quant::matmul_integer(&args)?),
        Op::ConvInteger(attrs) => one(quant::conv_integer(&args, attrs)?),
        Op::QLinearMatMul => one(quant::qlinear_matmul(&args)?),
        Op::QLinearConv(attrs) => one(quant::qlinear_conv(&args, attrs)?),
        Op::DynamicQuantizeLinear => many(quant::dynamic_quantize(args.tensor(0)?)),
        Op::Unique { axis, sorted } => many(index::unique(args.tensor(0)?, *axis, *sorted)?),
        Op::ReverseSequence {
            batch_axis,
            time_axis,
        } => one(index::reverse_sequence(
            args.tensor(0)?,
            args.tensor(1)?,
            *batch_axis,
            *time_axis,
        )?),
        Op::Col2Im {
            dilations,
            pads,
            strides,
        } => one(sampling::col2im(&args, dilations, pads, strides)?),
        Op::CenterCropPad { axes } => one(shape::center_crop_pad(
            args.tensor(0)?,
            &args.ints(1)?,
            axes,
        )?),
        Op::AffineGrid { align_corners } => one(sampling::affine_grid(
            args.tensor(0)?,
            &args.ints(1)?,
            *align_corners,
        )?),
        Op::Det => one(linalg::det(args.tensor(0)?)?),
        Op::Optional { .. }
        | Op::OptionalHasElement
        | Op::OptionalGetElement
        | Op::SequenceConstruct
        | Op::SequenceEmpty { .. }
        | Op::SequenceInsert
        | Op::SequenceAt
        | Op::SequenceErase
        | Op::SequenceLength
        | Op::SplitToSequence { .. }
        | Op::ConcatFromSequence { .. } => sequence::run(&node.op, &mut args),
        Op::Window {
            kind,
            output_datatype,
            periodic,
        } => one(signal::window(
            *kind,
            &args.ints(0)?,
            *output_datatype,
            *periodic,
        )?),
        Op::Dft { inverse, onesided } => one(signal::dft(&args, *inverse, *onesided)?),
        Op::Stft { onesided } => one(signal::stft(&args, *onesided)?),
        Op::MelWeightMatrix { output_datatype } => {
            one(signal::mel_weight_matrix(&args, *output_datatype)?)
        }
        Op::QuantizeLinear {
            axis,
            block_size,
            output_dtype,
            saturate,
        } => one(quant::quantize(
            args.tensor(0)?,
            args.tensor(1)?,
            args.opt_tensor(2)?,
            *axis,
            *block_size,
            *output_dtype,
            *saturate,
        )?),
        Op::RoundToBlocks { format } => one(quant::round_to_blocks(
            args.tensor(0)?,
            args.opt_tensor(1)?,
            *format,
        )?),
        Op::DequantizeLinear {
            axis,
            block_size,
            output_dtype,
        } => one(quant::dequantize(
            args.tensor(0)?,
            args.tensor(1)?,
            args.opt_tensor(2)?,
            *axis,
            *block_size,
            *output_dtype,
        )?),
    }
}
