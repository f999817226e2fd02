//! ONNX nodes to IR ops, upgrading older op versions to the latest form.
//!
//! Attributes that later versions turned into inputs (`axes`, `split`, `pads`, `starts`/`ends`,
//! `min`/`max`, `k`, `ratio`, `scales`) become constant inputs, and the pre-13 `Softmax` and
//! `LogSoftmax` (which flatten to 2-D) become `Flatten → Softmax → Reshape`.

use crate::attrs::Attrs;
use crate::tensor::{dtype_from_onnx, value_type};
use onnx_protobuf::NodeProto;
use sparkc_ir::op::{
    AttentionAttrs, AutoPad, Binary, ConvAttrs, ConvTransposeAttrs, DeformConvAttrs,
    GeluApproximation, Layout, PoolAttrs, Reduction, ResizeAttrs, RnnAttrs, Unary, Variadic,
    WindowKind,
};
use sparkc_ir::{DType, Op, Tensor};

/// Where one input of a pending node comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A value by its ONNX name.
    Name(String),
    /// A constant made during import (an upgraded attribute).
    Const(Tensor),
    /// An omitted optional input.
    Absent,
}

/// A node ready to be added to the IR graph once every name is known.
#[derive(Debug)]
pub struct Pending {
    /// Node name.
    pub name: String,
    /// The op.
    pub op: Op,
    /// Inputs in slot order.
    pub inputs: Vec<Source>,
    /// Output names.
    pub outputs: Vec<String>,
}

/// Every op type of the default domain that the importer understands (`If` and `Loop` included).
pub const SUPPORTED_OPS: &[&str] = &[
    "Abs",
    "Acos",
    "Acosh",
    "Add",
    "AffineGrid",
    "And",
    "ArgMax",
    "ArgMin",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "Attention",
    "AveragePool",
    "BatchNormalization",
    "BitCast",
    "BitShift",
    "BitwiseAnd",
    "BitwiseNot",
    "BitwiseOr",
    "BitwiseXor",
    "BlackmanWindow",
    "Cast",
    "CausalConvWithState",
    "CastLike",
    "Ceil",
    "Celu",
    "CenterCropPad",
    "Clip",
    "Col2Im",
    "Compress",
    "Concat",
    "ConcatFromSequence",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "ConvInteger",
    "ConvTranspose",
    "Cos",
    "Cosh",
    "CumProd",
    "CumSum",
    "DFT",
    "DeformConv",
    "DepthToSpace",
    "DequantizeLinear",
    "Det",
    "Div",
    "Dropout",
    "DynamicQuantizeLinear",
    "Einsum",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "EyeLike",
    "Flatten",
    "Floor",
    "GRU",
    "Gather",
    "GatherElements",
    "GatherND",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Greater",
    "GreaterOrEqual",
    "GridSample",
    "GroupNormalization",
    "HammingWindow",
    "HannWindow",
    "HardSigmoid",
    "HardSwish",
    "Hardmax",
    "Identity",
    "If",
    "InstanceNormalization",
    "IsInf",
    "IsNaN",
    "LRN",
    "LSTM",
    "LayerNormalization",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "LinearAttention",
    "Log",
    "LogSoftmax",
    "Loop",
    "LpNormalization",
    "LpPool",
    "MatMul",
    "MatMulInteger",
    "Max",
    "MaxPool",
    "MaxRoiPool",
    "MaxUnpool",
    "Mean",
    "MeanVarianceNormalization",
    "MelWeightMatrix",
    "Min",
    "Mish",
    "Mod",
    "Mul",
    "Neg",
    "NegativeLogLikelihoodLoss",
    "NonMaxSuppression",
    "NonZero",
    "Not",
    "OneHot",
    "Optional",
    "OptionalGetElement",
    "OptionalHasElement",
    "Or",
    "PRelu",
    "Pad",
    "Pow",
    "QLinearConv",
    "QLinearMatMul",
    "QuantizeLinear",
    "RMSNormalization",
    "RNN",
    "Range",
    "Reciprocal",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
    "Relu",
    "Reshape",
    "Resize",
    "ReverseSequence",
    "RoiAlign",
    "RotaryEmbedding",
    "Round",
    "STFT",
    "Scan",
    "Scatter",
    "ScatterElements",
    "ScatterND",
    "Selu",
    "SequenceAt",
    "SequenceConstruct",
    "SequenceEmpty",
    "SequenceErase",
    "SequenceInsert",
    "SequenceLength",
    "SequenceMap",
    "Shape",
    "Shrink",
    "Sigmoid",
    "Sign",
    "SimplifiedLayerNormalization",
    "Sin",
    "Sinh",
    "Size",
    "Slice",
    "Softmax",
    "SoftmaxCrossEntropyLoss",
    "Softplus",
    "Softsign",
    "SpaceToDepth",
    "Split",
    "SplitToSequence",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "SwiGLU",
    "Swish",
    "Tan",
    "Tanh",
    "TensorScatter",
    "ThresholdedRelu",
    "Tile",
    "TopK",
    "Transpose",
    "Trilu",
    "Unique",
    "Unsqueeze",
    "Upsample",
    "Where",
    "Xor",
];

/// The inputs of a node as sources, empty names being omitted optional inputs.
pub fn sources(node: &NodeProto) -> Vec<Source> {
    node.input
        .iter()
        .map(|s| {
            if s.is_empty() {
                Source::Absent
            } else {
                Source::Name(s.clone())
            }
        })
        .collect()
}

fn i64s(values: &[i64]) -> Source {
    Source::Const(Tensor::from_i64s(vec![values.len()], values).expect("length matches"))
}

fn f32_scalar(value: f32) -> Source {
    Source::Const(
        Tensor::new(DType::F32, vec![], value.to_le_bytes().to_vec().into()).expect("one f32"),
    )
}

fn set_input(inputs: &mut Vec<Source>, slot: usize, source: Source) {
    while inputs.len() <= slot {
        inputs.push(Source::Absent);
    }
    inputs[slot] = source;
}

fn auto_pad(a: &Attrs) -> Result<AutoPad, String> {
    Ok(match a.string("auto_pad", "NOTSET")?.as_str() {
        "NOTSET" | "" => AutoPad::NotSet,
        "SAME_UPPER" => AutoPad::SameUpper,
        "SAME_LOWER" => AutoPad::SameLower,
        "VALID" => AutoPad::Valid,
        other => {
            return Err(format!(
                "auto_pad '{other}' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID"
            ))
        }
    })
}

fn conv_attrs(a: &Attrs) -> Result<ConvAttrs, String> {
    Ok(ConvAttrs {
        auto_pad: auto_pad(a)?,
        dilations: a.ints("dilations")?,
        group: a.int("group", 1)?,
        kernel_shape: a.ints("kernel_shape")?,
        pads: a.ints("pads")?,
        strides: a.ints("strides")?,
        layout: Layout::Nchw,
    })
}

fn pool_attrs(a: &Attrs) -> Result<PoolAttrs, String> {
    let kernel_shape = a.ints("kernel_shape")?;
    if kernel_shape.is_empty() {
        return Err("required attribute 'kernel_shape' is missing".into());
    }
    Ok(PoolAttrs {
        auto_pad: auto_pad(a)?,
        ceil_mode: a.flag("ceil_mode", false)?,
        dilations: a.ints("dilations")?,
        kernel_shape,
        pads: a.ints("pads")?,
        strides: a.ints("strides")?,
        layout: Layout::Nchw,
    })
}

fn rnn_attrs(a: &Attrs) -> Result<RnnAttrs, String> {
    Ok(RnnAttrs {
        activation_alpha: a.floats("activation_alpha")?,
        activation_beta: a.floats("activation_beta")?,
        activations: a.strings("activations")?,
        clip: a.float("clip", 0.0)?,
        direction: a.string("direction", "forward")?,
        hidden_size: a.req_int("hidden_size")?,
        input_forget: a.flag("input_forget", false)?,
        layout: a.int("layout", 0)?,
        linear_before_reset: a.flag("linear_before_reset", false)?,
    })
}

/// A loss's `reduction`: `none`, `sum` or `mean` (the default).
fn loss_reduction(a: &Attrs) -> Result<String, String> {
    let reduction = a.string("reduction", "mean")?;
    match reduction.as_str() {
        "none" | "sum" | "mean" => Ok(reduction),
        other => Err(format!(
            "reduction '{other}' is not one of none, sum and mean"
        )),
    }
}

fn dtype_attr(a: &Attrs, name: &str) -> Result<Option<DType>, String> {
    match a.int(name, 0)? {
        0 => Ok(None),
        code => dtype_from_onnx(code as i32)
            .map(Some)
            .map_err(|e| format!("attribute '{name}': {e}")),
    }
}

/// Converts a node of sparkc's own `ai.sparkc` domain that has no function body
/// (`RoundToBlocks`, written by `sparkc optimize` for block-scaled activations).
pub fn convert_sparkc(node: &NodeProto, name: &str) -> Result<Vec<Pending>, String> {
    let a = Attrs::new(node);
    let op = match node.op_type.as_str() {
        "RoundToBlocks" => Op::RoundToBlocks {
            format: match a.string("format", "")?.as_str() {
                "nvfp4" => sparkc_ir::formats::BlockFormat::Nvfp4,
                "mxfp4" => sparkc_ir::formats::BlockFormat::Mxfp4,
                other => return Err(format!("unknown block format '{other}'")),
            },
        },
        other => {
            return Err(format!(
                "op '{other}' of domain 'ai.sparkc' is not supported"
            ))
        }
    };
    Ok(vec![Pending {
        name: name.to_string(),
        op,
        inputs: sources(node),
        outputs: node.output.clone(),
    }])
}

/// Converts one node of the default domain at `opset` into one or more pending IR nodes.
pub fn convert(node: &NodeProto, name: &str, opset: i64) -> Result<Vec<Pending>, String> {
    let a = Attrs::new(node);
    let mut inputs = sources(node);
    let outputs: Vec<String> = node.output.clone();
    let reduce = |kind| -> Result<Op, String> {
        Ok(Op::Reduce {
            kind,
            keepdims: a.flag("keepdims", true)?,
            noop_with_empty_axes: a.flag("noop_with_empty_axes", false)?,
        })
    };
    let op_type = node.op_type.as_str();
    // Ops whose `axes` moved from attribute to input: ReduceSum and Squeeze/Unsqueeze at 13, the other reductions at 18.
    let axes_became_input = match op_type {
        "ReduceSum" | "Squeeze" | "Unsqueeze" => 13,
        t if t.starts_with("Reduce") => 18,
        _ => i64::MIN,
    };
    if opset < axes_became_input {
        if let Some(axes) = a.opt_ints("axes")? {
            set_input(&mut inputs, 1, i64s(&axes));
        }
    }
    let op = match op_type {
        "Abs" => Op::Unary(Unary::Abs),
        "Ceil" => Op::Unary(Unary::Ceil),
        "Cos" => Op::Unary(Unary::Cos),
        "Erf" => Op::Unary(Unary::Erf),
        "Exp" => Op::Unary(Unary::Exp),
        "Floor" => Op::Unary(Unary::Floor),
        "Identity" => Op::Unary(Unary::Identity),
        "Log" => Op::Unary(Unary::Log),
        "Neg" => Op::Unary(Unary::Neg),
        "Not" => Op::Unary(Unary::Not),
        "Reciprocal" => Op::Unary(Unary::Reciprocal),
        "Relu" => Op::Unary(Unary::Relu),
        "Round" => Op::Unary(Unary::Round),
        "Sigmoid" => Op::Unary(Unary::Sigmoid),
        "Sign" => Op::Unary(Unary::Sign),
        "Sin" => Op::Unary(Unary::Sin),
        "Sqrt" => Op::Unary(Unary::Sqrt),
        "Tanh" => Op::Unary(Unary::Tanh),
        "Softplus" => Op::Unary(Unary::Softplus),
        "HardSwish" => Op::Unary(Unary::HardSwish),
        "Elu" => Op::Unary(Unary::Elu {
            alpha: a.float("alpha", 1.0)?,
        }),
        "LeakyRelu" => Op::Unary(Unary::LeakyRelu {
            alpha: a.float("alpha", 0.01)?,
        }),
        "HardSigmoid" => Op::Unary(Unary::HardSigmoid {
            alpha: a.float("alpha", 0.2)?,
            beta: a.float("beta", 0.5)?,
        }),
        "Gelu" => Op::Unary(Unary::Gelu {
            approximate: match a.string("approximate", "none")?.as_str() {
                "none" => GeluApproximation::None,
                "tanh" => GeluApproximation::Tanh,
                other => return Err(format!("approximate '{other}' is not 'none' or 'tanh'")),
            },
        }),
        "Tan" => Op::Unary(Unary::Tan),
        "Asin" => Op::Unary(Unary::Asin),
        "Acos" => Op::Unary(Unary::Acos),
        "Atan" => Op::Unary(Unary::Atan),
        "Sinh" => Op::Unary(Unary::Sinh),
        "Cosh" => Op::Unary(Unary::Cosh),
        "Asinh" => Op::Unary(Unary::Asinh),
        "Acosh" => Op::Unary(Unary::Acosh),
        "Atanh" => Op::Unary(Unary::Atanh),
        "Softsign" => Op::Unary(Unary::Softsign),
        "Mish" => Op::Unary(Unary::Mish),
        "Celu" => Op::Unary(Unary::Celu {
            alpha: a.float("alpha", 1.0)?,
        }),
        "Selu" => Op::Unary(Unary::Selu {
            alpha: a.float("alpha", 1.673_263_2)?,
            gamma: a.float("gamma", 1.050_701)?,
        }),
        "ThresholdedRelu" => Op::Unary(Unary::ThresholdedRelu {
            alpha: a.float("alpha", 1.0)?,
        }),
        "Shrink" => Op::Unary(Unary::Shrink {
            bias: a.float("bias", 0.0)?,
            lambd: a.float("lambd", 0.5)?,
        }),
        "Swish" => Op::Unary(Unary::Swish {
            alpha: a.float("alpha", 1.0)?,
        }),
        "SwiGLU" => return swiglu(name, inputs, outputs, a.float("alpha", 1.0)?),
        "IsNaN" => Op::Unary(Unary::IsNaN),
        "IsInf" => Op::Unary(Unary::IsInf {
            detect_negative: a.flag("detect_negative", true)?,
            detect_positive: a.flag("detect_positive", true)?,
        }),
        "BitwiseNot" => Op::Unary(Unary::BitwiseNot),
        "BitwiseAnd" => Op::Binary(Binary::BitwiseAnd),
        "BitwiseOr" => Op::Binary(Binary::BitwiseOr),
        "BitwiseXor" => Op::Binary(Binary::BitwiseXor),
        "BitShift" => Op::Binary(Binary::BitShift {
            left: match a.string("direction", "")?.as_str() {
                "LEFT" => true,
                "RIGHT" => false,
                other => return Err(format!("direction '{other}' is not LEFT or RIGHT")),
            },
        }),
        "Add" => Op::Binary(Binary::Add),
        "Sub" => Op::Binary(Binary::Sub),
        "Mul" => Op::Binary(Binary::Mul),
        "Div" => Op::Binary(Binary::Div),
        "Pow" => Op::Binary(Binary::Pow),
        "Mod" => Op::Binary(Binary::Mod {
            fmod: a.flag("fmod", false)?,
        }),
        "And" => Op::Binary(Binary::And),
        "Or" => Op::Binary(Binary::Or),
        "Xor" => Op::Binary(Binary::Xor),
        "Equal" => Op::Binary(Binary::Equal),
        "Greater" => Op::Binary(Binary::Greater),
        "GreaterOrEqual" => Op::Binary(Binary::GreaterOrEqual),
        "Less" => Op::Binary(Binary::Less),
        "LessOrEqual" => Op::Binary(Binary::LessOrEqual),
        "PRelu" => Op::Binary(Binary::PRelu),
        "Max" => Op::Variadic(Variadic::Max),
        "Min" => Op::Variadic(Variadic::Min),
        "Mean" => Op::Variadic(Variadic::Mean),
        "Sum" => Op::Variadic(Variadic::Sum),
        "Clip" => {
            if opset < 11 {
                set_input(&mut inputs, 1, f32_scalar(a.float("min", f32::MIN)?));
                set_input(&mut inputs, 2, f32_scalar(a.float("max", f32::MAX)?));
            }
            Op::Clip
        }
        "Where" => Op::Where,
        "Cast" => Op::Cast {
            to: dtype_attr(&a, "to")?.ok_or("required attribute 'to' is missing")?,
            saturate: a.flag("saturate", true)?,
            round_mode: a.string("round_mode", "up")?,
        },
        "BitCast" => Op::BitCast {
            to: dtype_attr(&a, "to")?.ok_or("required attribute 'to' is missing")?,
        },
        "ReduceL1" => reduce(Reduction::L1)?,
        "ReduceL2" => reduce(Reduction::L2)?,
        "ReduceLogSum" => reduce(Reduction::LogSum)?,
        "ReduceLogSumExp" => reduce(Reduction::LogSumExp)?,
        "ReduceMax" => reduce(Reduction::Max)?,
        "ReduceMean" => reduce(Reduction::Mean)?,
        "ReduceMin" => reduce(Reduction::Min)?,
        "ReduceProd" => reduce(Reduction::Prod)?,
        "ReduceSum" => reduce(Reduction::Sum)?,
        "ReduceSumSquare" => reduce(Reduction::SumSquare)?,
        "ArgMax" | "ArgMin" => {
            let (axis, keepdims, select_last_index) = (
                a.int("axis", 0)?,
                a.flag("keepdims", true)?,
                a.flag("select_last_index", false)?,
            );
            if op_type == "ArgMax" {
                Op::ArgMax {
                    axis,
                    keepdims,
                    select_last_index,
                }
            } else {
                Op::ArgMin {
                    axis,
                    keepdims,
                    select_last_index,
                }
            }
        }
        "Softmax" | "LogSoftmax" => {
            let log = op_type == "LogSoftmax";
            if opset >= 13 {
                let axis = a.int("axis", -1)?;
                if log {
                    Op::LogSoftmax { axis }
                } else {
                    Op::Softmax { axis }
                }
            } else {
                return legacy_softmax(name, inputs, outputs, a.int("axis", 1)?, log);
            }
        }
        "Conv" => Op::Conv(conv_attrs(&a)?),
        "ConvTranspose" => Op::ConvTranspose(ConvTransposeAttrs {
            conv: conv_attrs(&a)?,
            output_padding: a.ints("output_padding")?,
            output_shape: a.ints("output_shape")?,
        }),
        "AveragePool" => Op::AveragePool {
            pool: pool_attrs(&a)?,
            count_include_pad: a.flag("count_include_pad", false)?,
        },
        "MaxPool" => Op::MaxPool {
            pool: pool_attrs(&a)?,
            storage_order: a.int("storage_order", 0)?,
        },
        "GlobalAveragePool" => Op::GlobalAveragePool,
        "GlobalMaxPool" => Op::GlobalMaxPool,
        "LRN" => Op::Lrn {
            alpha: a.float("alpha", 1e-4)?,
            beta: a.float("beta", 0.75)?,
            bias: a.float("bias", 1.0)?,
            size: a.req_int("size")?,
        },
        "BatchNormalization" => Op::BatchNormalization {
            epsilon: a.float("epsilon", 1e-5)?,
            momentum: a.float("momentum", 0.9)?,
            training_mode: a.flag("training_mode", false)?,
        },
        "InstanceNormalization" => Op::InstanceNormalization {
            epsilon: a.float("epsilon", 1e-5)?,
        },
        "LayerNormalization" => Op::LayerNormalization {
            axis: a.int("axis", -1)?,
            epsilon: a.float("epsilon", 1e-5)?,
            stash_type: dtype_attr(&a, "stash_type")?.unwrap_or(DType::F32),
        },
        "GroupNormalization" => Op::GroupNormalization {
            epsilon: a.float("epsilon", 1e-5)?,
            num_groups: a.req_int("num_groups")?,
            stash_type: dtype_attr(&a, "stash_type")?.unwrap_or(DType::F32),
        },
        "Gemm" => Op::Gemm {
            alpha: a.float("alpha", 1.0)?,
            beta: a.float("beta", 1.0)?,
            trans_a: a.flag("transA", false)?,
            trans_b: a.flag("transB", false)?,
        },
        "MatMul" => Op::MatMul,
        "Einsum" => Op::Einsum {
            equation: a.string("equation", "")?,
        },
        "Concat" => Op::Concat {
            axis: a.req_int("axis")?,
        },
        "Split" => {
            if opset < 13 {
                if let Some(split) = a.opt_ints("split")? {
                    set_input(&mut inputs, 1, i64s(&split));
                }
            }
            Op::Split {
                axis: a.int("axis", 0)?,
                num_outputs: a.int("num_outputs", 0)?,
            }
        }
        "Slice" => {
            if opset < 10 {
                let starts = a.ints("starts")?;
                set_input(&mut inputs, 1, i64s(&starts));
                set_input(&mut inputs, 2, i64s(&a.ints("ends")?));
                if let Some(axes) = a.opt_ints("axes")? {
                    set_input(&mut inputs, 3, i64s(&axes));
                }
            }
            Op::Slice
        }
        "Squeeze" => Op::Squeeze,
        "Unsqueeze" => {
            if inputs.len() < 2 {
                return Err("the axes to insert are missing".into());
            }
            Op::Unsqueeze
        }
        "Reshape" => Op::Reshape {
            allowzero: a.flag("allowzero", false)?,
        },
        "Flatten" => Op::Flatten {
            axis: a.int("axis", 1)?,
        },
        "Transpose" => Op::Transpose {
            perm: a.ints("perm")?,
        },
        "Expand" => Op::Expand,
        "Tile" => Op::Tile,
        "Pad" => {
            if opset < 11 {
                set_input(&mut inputs, 1, i64s(&a.ints("pads")?));
                set_input(&mut inputs, 2, f32_scalar(a.float("value", 0.0)?));
            }
            Op::Pad {
                mode: a.string("mode", "constant")?,
            }
        }
        "DepthToSpace" => Op::DepthToSpace {
            blocksize: a.req_int("blocksize")?,
            mode: a.string("mode", "DCR")?,
        },
        "Gather" => Op::Gather {
            axis: a.int("axis", 0)?,
        },
        "GatherElements" => Op::GatherElements {
            axis: a.int("axis", 0)?,
        },
        "GatherND" => Op::GatherNd {
            batch_dims: a.int("batch_dims", 0)?,
        },
        "ScatterND" => Op::ScatterNd {
            reduction: a.string("reduction", "none")?,
        },
        "Shape" => Op::Shape {
            start: a.int("start", 0)?,
            end: a.opt_int("end")?,
        },
        "Size" => Op::Size,
        "ConstantOfShape" => {
            let value = match a.tensor("value")? {
                Some(t) => {
                    let mut t = t.clone();
                    crate::tensor::tensor_from_proto(
                        &mut t,
                        &mut crate::tensor::ExternalFiles::new(None),
                    )?
                }
                None => Tensor::new(DType::F32, vec![1], vec![0u8; 4].into()).expect("one f32"),
            };
            if value.len() != 1 {
                return Err(format!(
                    "value must hold one element, found {}",
                    value.len()
                ));
            }
            Op::ConstantOfShape { value }
        }
        "Range" => Op::Range,
        "Resize" => {
            if opset < 11 {
                // Resize-10 takes (X, scales); later versions take (X, roi, scales, sizes).
                let scales = inputs.get(1).cloned().unwrap_or(Source::Absent);
                inputs.truncate(1);
                set_input(&mut inputs, 2, scales);
            }
            Op::Resize(ResizeAttrs {
                antialias: a.flag("antialias", false)?,
                axes: a.ints("axes")?,
                coordinate_transformation_mode: a.string(
                    "coordinate_transformation_mode",
                    if opset < 11 {
                        "asymmetric"
                    } else {
                        "half_pixel"
                    },
                )?,
                cubic_coeff_a: a.float("cubic_coeff_a", -0.75)?,
                exclude_outside: a.flag("exclude_outside", false)?,
                extrapolation_value: a.float("extrapolation_value", 0.0)?,
                keep_aspect_ratio_policy: a.string("keep_aspect_ratio_policy", "stretch")?,
                mode: a.string("mode", "nearest")?,
                nearest_mode: a.string("nearest_mode", "round_prefer_floor")?,
            })
        }
        "TopK" => {
            if opset < 10 {
                set_input(&mut inputs, 1, i64s(&[a.req_int("k")?]));
            }
            Op::TopK {
                axis: a.int("axis", -1)?,
                largest: a.flag("largest", true)?,
                sorted: a.flag("sorted", true)?,
            }
        }
        "Trilu" => Op::Trilu {
            upper: a.flag("upper", true)?,
        },
        "CumSum" => Op::CumSum {
            exclusive: a.flag("exclusive", false)?,
            reverse: a.flag("reverse", false)?,
        },
        "Dropout" => {
            if opset < 12 && a.has("ratio") {
                set_input(&mut inputs, 1, f32_scalar(a.float("ratio", 0.5)?));
            }
            Op::Dropout {
                seed: a.opt_int("seed")?,
            }
        }
        "LSTM" => Op::Lstm(rnn_attrs(&a)?),
        "GRU" => Op::Gru(rnn_attrs(&a)?),
        "QuantizeLinear" => Op::QuantizeLinear {
            axis: a.int("axis", 1)?,
            block_size: a.int("block_size", 0)?,
            output_dtype: dtype_attr(&a, "output_dtype")?,
            saturate: a.flag("saturate", true)?,
        },
        "DequantizeLinear" => Op::DequantizeLinear {
            axis: a.int("axis", 1)?,
            block_size: a.int("block_size", 0)?,
            output_dtype: dtype_attr(&a, "output_dtype")?,
        },
        "CastLike" => Op::CastLike {
            saturate: a.flag("saturate", true)?,
            round_mode: a.string("round_mode", "up")?,
        },
        "Attention" => Op::Attention(AttentionAttrs {
            is_causal: a.flag("is_causal", false)?,
            kv_num_heads: a.int("kv_num_heads", 0)?,
            q_num_heads: a.int("q_num_heads", 0)?,
            qk_matmul_output_mode: a.int("qk_matmul_output_mode", 0)?,
            scale: a.has("scale").then(|| a.float("scale", 1.0)).transpose()?,
            softcap: a.float("softcap", 0.0)?,
            softmax_precision: dtype_attr(&a, "softmax_precision")?,
            left_window_size: a.int("left_window_size", -1)?,
            right_window_size: a.int("right_window_size", -1)?,
        }),
        // onnxruntime's RMS normalization, which its exporters write in the default domain.
        "SimplifiedLayerNormalization" => {
            if outputs.iter().skip(1).any(|o| !o.is_empty()) {
                return Err("output 1 (inv_std_var) is not supported".into());
            }
            Op::RmsNormalization {
                axis: a.int("axis", -1)?,
                epsilon: a.float("epsilon", 1e-5)?,
                stash_type: dtype_attr(&a, "stash_type")?.unwrap_or(DType::F32),
            }
        }
        "RMSNormalization" => Op::RmsNormalization {
            axis: a.int("axis", -1)?,
            epsilon: a.float("epsilon", 1e-5)?,
            stash_type: dtype_attr(&a, "stash_type")?.unwrap_or(DType::F32),
        },
        "RotaryEmbedding" => Op::RotaryEmbedding {
            interleaved: a.flag("interleaved", false)?,
            num_heads: a.int("num_heads", 0)?,
            rotary_embedding_dim: a.int("rotary_embedding_dim", 0)?,
        },
        "ScatterElements" | "Scatter" => Op::ScatterElements {
            axis: a.int("axis", 0)?,
            reduction: a.string("reduction", "none")?,
        },
        "TensorScatter" => Op::TensorScatter {
            axis: a.int("axis", -2)?,
            mode: a.string("mode", "linear")?,
        },
        "OneHot" => Op::OneHot {
            axis: a.int("axis", -1)?,
        },
        "Hardmax" => {
            if opset < 13 {
                return Err("Hardmax before opset 13 (2-D coercion) is not supported".into());
            }
            Op::Hardmax {
                axis: a.int("axis", -1)?,
            }
        }
        "LpNormalization" => Op::LpNormalization {
            axis: a.int("axis", -1)?,
            p: a.int("p", 2)?,
        },
        "SpaceToDepth" => Op::SpaceToDepth {
            blocksize: a.req_int("blocksize")?,
            mode: a.string("mode", "DCR")?,
        },
        "NonZero" => Op::NonZero,
        "Compress" => Op::Compress {
            axis: a.opt_int("axis")?,
        },
        "EyeLike" => Op::EyeLike {
            dtype: dtype_attr(&a, "dtype")?,
            k: a.int("k", 0)?,
        },
        "CumProd" => Op::CumProd {
            exclusive: a.flag("exclusive", false)?,
            reverse: a.flag("reverse", false)?,
        },
        "RNN" => Op::Rnn(rnn_attrs(&a)?),
        "NonMaxSuppression" => Op::NonMaxSuppression {
            center_point_box: a.int("center_point_box", 0)?,
        },
        "GridSample" => Op::GridSample {
            align_corners: a.flag("align_corners", false)?,
            mode: a.string("mode", if opset < 20 { "bilinear" } else { "linear" })?,
            padding_mode: a.string("padding_mode", "zeros")?,
        },
        "LpPool" => Op::LpPool {
            pool: pool_attrs(&a)?,
            p: a.int("p", 2)?,
        },
        "MaxUnpool" => Op::MaxUnpool {
            kernel_shape: a.ints("kernel_shape")?,
            pads: a.ints("pads")?,
            strides: a.ints("strides")?,
        },
        "MaxRoiPool" => Op::MaxRoiPool {
            pooled_shape: a.ints("pooled_shape")?,
            spatial_scale: a.float("spatial_scale", 1.0)?,
        },
        "RoiAlign" => Op::RoiAlign {
            coordinate_transformation_mode: a.string(
                "coordinate_transformation_mode",
                if opset < 16 {
                    "output_half_pixel"
                } else {
                    "half_pixel"
                },
            )?,
            mode: a.string("mode", "avg")?,
            output_height: a.int("output_height", 1)?,
            output_width: a.int("output_width", 1)?,
            sampling_ratio: a.int("sampling_ratio", 0)?,
            spatial_scale: a.float("spatial_scale", 1.0)?,
        },
        "MeanVarianceNormalization" => Op::MeanVarianceNormalization {
            axes: a.opt_ints("axes")?.unwrap_or_else(|| vec![0, 2, 3]),
        },
        "MatMulInteger" => Op::MatMulInteger,
        "ConvInteger" => Op::ConvInteger(conv_attrs(&a)?),
        "QLinearMatMul" => Op::QLinearMatMul,
        "QLinearConv" => Op::QLinearConv(conv_attrs(&a)?),
        "DynamicQuantizeLinear" => Op::DynamicQuantizeLinear,
        "Upsample" => {
            if opset < 9 {
                let scales: Vec<f32> = a.floats("scales")?;
                set_input(
                    &mut inputs,
                    1,
                    Source::Const(
                        Tensor::new(
                            DType::F32,
                            vec![scales.len()],
                            scales
                                .iter()
                                .flat_map(|v| v.to_le_bytes())
                                .collect::<Vec<u8>>()
                                .into(),
                        )
                        .map_err(|e| e.to_string())?,
                    ),
                );
            }
            let scales = inputs.get(1).cloned().unwrap_or(Source::Absent);
            inputs.truncate(1);
            set_input(&mut inputs, 2, scales);
            let mode = a.string("mode", "nearest")?;
            Op::Resize(ResizeAttrs {
                antialias: false,
                axes: Vec::new(),
                coordinate_transformation_mode: "asymmetric".into(),
                cubic_coeff_a: -0.75,
                exclude_outside: false,
                extrapolation_value: 0.0,
                keep_aspect_ratio_policy: "stretch".into(),
                mode: if mode == "bilinear" {
                    "linear".into()
                } else {
                    mode
                },
                nearest_mode: "floor".into(),
            })
        }
        "Unique" => Op::Unique {
            axis: a.opt_int("axis")?,
            sorted: a.flag("sorted", true)?,
        },
        "ReverseSequence" => Op::ReverseSequence {
            batch_axis: a.int("batch_axis", 1)?,
            time_axis: a.int("time_axis", 0)?,
        },
        "Col2Im" => Op::Col2Im {
            dilations: a.ints("dilations")?,
            pads: a.ints("pads")?,
            strides: a.ints("strides")?,
        },
        "CenterCropPad" => Op::CenterCropPad {
            axes: a.ints("axes")?,
        },
        "AffineGrid" => Op::AffineGrid {
            align_corners: a.flag("align_corners", false)?,
        },
        "Det" => Op::Det,
        "DeformConv" => Op::DeformConv(DeformConvAttrs {
            dilations: a.ints("dilations")?,
            group: a.int("group", 1)?,
            kernel_shape: a.ints("kernel_shape")?,
            offset_group: a.int("offset_group", 1)?,
            pads: a.ints("pads")?,
            strides: a.ints("strides")?,
        }),
        "CausalConvWithState" => Op::CausalConvWithState {
            activation: match a.string("activation", "none")?.as_str() {
                "none" => "none".to_string(),
                "silu" | "swish" => "silu".to_string(),
                other => {
                    return Err(format!(
                        "activation '{other}' is not one of none, silu and swish"
                    ))
                }
            },
        },
        "LinearAttention" => {
            let (q_num_heads, kv_num_heads) =
                (a.req_int("q_num_heads")?, a.req_int("kv_num_heads")?);
            if q_num_heads <= 0 || kv_num_heads <= 0 || q_num_heads % kv_num_heads != 0 {
                return Err(format!(
                    "q_num_heads {q_num_heads} must be a positive multiple of kv_num_heads {kv_num_heads}"
                ));
            }
            let update_rule = a.string("update_rule", "gated_delta")?;
            if !matches!(
                update_rule.as_str(),
                "linear" | "gated" | "delta" | "gated_delta"
            ) {
                return Err(format!(
                    "update_rule '{update_rule}' is not one of linear, gated, delta and gated_delta"
                ));
            }
            Op::LinearAttention {
                chunk_size: a.int("chunk_size", 64)?,
                kv_num_heads,
                q_num_heads,
                scale: a.float("scale", 0.0)?,
                update_rule,
            }
        }
        "NegativeLogLikelihoodLoss" => Op::NegativeLogLikelihoodLoss {
            ignore_index: a.opt_int("ignore_index")?,
            reduction: loss_reduction(&a)?,
        },
        "SoftmaxCrossEntropyLoss" => Op::SoftmaxCrossEntropyLoss {
            ignore_index: a.opt_int("ignore_index")?,
            reduction: loss_reduction(&a)?,
        },
        "Optional" => {
            let ty = match node.attribute.iter().find(|x| x.name == "type") {
                Some(attr) => match attr.tp.as_ref() {
                    Some(tp) => Some(value_type("type", tp)?),
                    None => return Err("attribute 'type' must be a type".into()),
                },
                None => None,
            };
            Op::Optional { ty }
        }
        "OptionalHasElement" => Op::OptionalHasElement,
        "OptionalGetElement" => Op::OptionalGetElement,
        "SequenceConstruct" => Op::SequenceConstruct,
        "SequenceEmpty" => Op::SequenceEmpty {
            dtype: dtype_attr(&a, "dtype")?.unwrap_or(DType::F32),
        },
        "SequenceInsert" => Op::SequenceInsert,
        "SequenceAt" => Op::SequenceAt,
        "SequenceErase" => Op::SequenceErase,
        "SequenceLength" => Op::SequenceLength,
        "SplitToSequence" => Op::SplitToSequence {
            axis: a.int("axis", 0)?,
            keepdims: a.flag("keepdims", true)?,
        },
        "ConcatFromSequence" => Op::ConcatFromSequence {
            axis: a.req_int("axis")?,
            new_axis: a.flag("new_axis", false)?,
        },
        "HannWindow" | "HammingWindow" | "BlackmanWindow" => Op::Window {
            kind: match op_type {
                "HannWindow" => WindowKind::Hann,
                "HammingWindow" => WindowKind::Hamming,
                _ => WindowKind::Blackman,
            },
            output_datatype: dtype_attr(&a, "output_datatype")?.unwrap_or(DType::F32),
            periodic: a.flag("periodic", true)?,
        },
        "DFT" => {
            if opset < 20 {
                set_input(&mut inputs, 2, i64s(&[a.int("axis", 1)?]));
                if inputs.len() > 3 {
                    inputs.truncate(3);
                }
            }
            Op::Dft {
                inverse: a.flag("inverse", false)?,
                onesided: a.flag("onesided", false)?,
            }
        }
        "STFT" => Op::Stft {
            onesided: a.flag("onesided", true)?,
        },
        "MelWeightMatrix" => Op::MelWeightMatrix {
            output_datatype: dtype_attr(&a, "output_datatype")?.unwrap_or(DType::F32),
        },
        other => return Err(format!("op '{other}' is not supported")),
    };
    Ok(vec![Pending {
        name: name.to_string(),
        op,
        inputs,
        outputs,
    }])
}

/// SwiGLU: `Swish_alpha(A) * B`, as the Swish op and a multiply (which fuse).
fn swiglu(
    name: &str,
    inputs: Vec<Source>,
    outputs: Vec<String>,
    alpha: f32,
) -> Result<Vec<Pending>, String> {
    let mut inputs = inputs.into_iter();
    let (Some(gate), Some(value)) = (inputs.next(), inputs.next()) else {
        return Err("SwiGLU needs its gate A and its value B".into());
    };
    let swished = format!("{name}::swish");
    Ok(vec![
        Pending {
            name: swished.clone(),
            op: Op::Unary(Unary::Swish { alpha }),
            inputs: vec![gate],
            outputs: vec![swished.clone()],
        },
        Pending {
            name: name.to_string(),
            op: Op::Binary(Binary::Mul),
            inputs: vec![Source::Name(swished), value],
            outputs,
        },
    ])
}

/// Softmax before opset 13: flatten to 2-D at `axis`, normalize rows, restore the shape.
fn legacy_softmax(
    name: &str,
    inputs: Vec<Source>,
    outputs: Vec<String>,
    axis: i64,
    log: bool,
) -> Result<Vec<Pending>, String> {
    let x = inputs
        .into_iter()
        .next()
        .ok_or("required input 0 is missing")?;
    let flat = format!("{name}::flatten");
    let shape = format!("{name}::shape");
    let normalized = format!("{name}::rows");
    Ok(vec![
        Pending {
            name: shape.clone(),
            op: Op::Shape {
                start: 0,
                end: None,
            },
            inputs: vec![x.clone()],
            outputs: vec![shape.clone()],
        },
        Pending {
            name: flat.clone(),
            op: Op::Flatten { axis },
            inputs: vec![x],
            outputs: vec![flat.clone()],
        },
        Pending {
            name: normalized.clone(),
            op: if log {
                Op::LogSoftmax { axis: 1 }
            } else {
                Op::Softmax { axis: 1 }
            },
            inputs: vec![Source::Name(flat)],
            outputs: vec![normalized.clone()],
        },
        Pending {
            name: name.to_string(),
            op: Op::Reshape { allowzero: false },
            inputs: vec![Source::Name(normalized), Source::Name(shape)],
            outputs,
        },
    ])
}
