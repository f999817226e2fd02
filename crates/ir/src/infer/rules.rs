//! One inference rule per op: output dtypes and shapes from input types and known values.

use super::fold;
use super::{broadcast_shapes, Ctx, Inferred};
use crate::dim::Dim;
use crate::dtype::DType;
use crate::einsum::{is_ellipsis_label, Equation};
use crate::error::Result;
use crate::op::{channels_first, channels_last, AutoPad, Binary, ConvAttrs, Op, PoolAttrs, Unary};
use crate::types::{format_shape, Known, Shape, TensorType, ValueType};

/// Values at or above this are "to the end" in `Slice` (exporters write `INT64_MAX` or `INT32_MAX`).
const SLICE_TO_END: i64 = i32::MAX as i64;

pub(super) fn infer(ctx: &Ctx) -> Result<Vec<Inferred>> {
    Ok(match ctx.op {
        Op::Input
        | Op::Const(_)
        | Op::If { .. }
        | Op::Loop { .. }
        | Op::Scan { .. }
        | Op::SequenceMap { .. } => {
            unreachable!("handled by the driver")
        }
        Op::Unary(Unary::Identity) if ctx.input(0)?.ty.as_tensor().is_none() => {
            let value = ctx.input(0)?;
            vec![Inferred {
                ty: value.ty.clone(),
                known: value.known.clone(),
            }]
        }
        Op::Unary(unary) => {
            let dtype = ctx.dtype(0)?;
            if matches!(unary, Unary::Not) && dtype != DType::Bool {
                return Err(ctx.err(format!("input must be bool, found {dtype}")));
            }
            let known = match unary {
                Unary::Identity => ctx.known(0).cloned(),
                Unary::Neg => fold::neg(ctx.known(0)),
                _ => None,
            };
            let dtype = match unary {
                Unary::IsNaN | Unary::IsInf { .. } => DType::Bool,
                _ => dtype,
            };
            vec![Inferred::tensor(dtype, ctx.shape(0)?.clone()).with_known(known)]
        }
        Op::Binary(binary) => {
            let a = ctx.dtype(0)?;
            if !matches!(binary, Binary::Pow) {
                ctx.same_dtype(&[0, 1])?;
            }
            let dtype = match binary {
                Binary::Equal
                | Binary::Greater
                | Binary::GreaterOrEqual
                | Binary::Less
                | Binary::LessOrEqual => DType::Bool,
                _ => a,
            };
            let shape = broadcast(ctx, &[0, 1])?;
            let known = fold::binary(
                binary,
                ctx.known(0),
                ctx.known(1),
                ctx.shape(0)?,
                ctx.shape(1)?,
                &shape,
            );
            vec![Inferred::tensor(dtype, shape).with_known(known)]
        }
        Op::Variadic(kind) => {
            let all: Vec<usize> = (0..ctx.inputs.len()).collect();
            if all.is_empty() {
                return Err(ctx.err("needs at least one input"));
            }
            let dtype = ctx.same_dtype(&all)?;
            let shape = broadcast(ctx, &all)?;
            let known = fold::variadic(*kind, ctx, &shape);
            vec![Inferred::tensor(dtype, shape).with_known(known)]
        }
        Op::Clip => vec![Inferred::tensor(
            ctx.same_dtype(&[0, 1, 2])?,
            ctx.shape(0)?.clone(),
        )],
        Op::Where => {
            if ctx.dtype(0)? != DType::Bool {
                return Err(ctx.err(format!("condition must be bool, found {}", ctx.dtype(0)?)));
            }
            let dtype = ctx.same_dtype(&[1, 2])?;
            let shape = broadcast(ctx, &[0, 1, 2])?;
            let known = fold::where_(ctx, &shape);
            vec![Inferred::tensor(dtype, shape).with_known(known)]
        }
        Op::Cast { to, .. } => {
            let known = fold::cast(ctx.known(0), *to);
            vec![Inferred::tensor(*to, ctx.shape(0)?.clone()).with_known(known)]
        }
        Op::BitCast { to } => {
            let from = ctx.dtype(0)?;
            if from.bits() != to.bits() {
                return Err(ctx.err(format!(
                    "cannot reinterpret {from} ({} bits) as {to} ({} bits): BitCast keeps the width",
                    from.bits(),
                    to.bits()
                )));
            }
            vec![Inferred::tensor(*to, ctx.shape(0)?.clone())]
        }
        Op::Reduce {
            keepdims,
            noop_with_empty_axes,
            ..
        } => vec![Inferred::tensor(
            ctx.dtype(0)?,
            reduce_shape(ctx, *keepdims, *noop_with_empty_axes)?,
        )],
        Op::ArgMax { axis, keepdims, .. } | Op::ArgMin { axis, keepdims, .. } => {
            let shape = match ctx.dims(0, 1)? {
                Some(dims) => Some(reduce_dims(
                    dims,
                    &[ctx.axis(*axis, dims.len())?],
                    *keepdims,
                )),
                None => None,
            };
            vec![Inferred::tensor(DType::I64, shape)]
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            if let Some(dims) = ctx.dims(0, 1)? {
                ctx.axis(*axis, dims.len())?;
            }
            vec![Inferred::tensor(ctx.dtype(0)?, ctx.shape(0)?.clone())]
        }
        Op::Conv(attrs) => vec![Inferred::tensor(
            ctx.same_dtype(&[0, 1, 2])?,
            conv_shape(ctx, attrs)?,
        )],
        Op::ConvTranspose(attrs) => vec![Inferred::tensor(
            ctx.same_dtype(&[0, 1, 2])?,
            conv_transpose_shape(ctx, attrs)?,
        )],
        Op::AveragePool { pool, .. } => {
            vec![Inferred::tensor(ctx.dtype(0)?, pool_shape(ctx, pool)?)]
        }
        Op::MaxPool { pool, .. } => {
            let shape = pool_shape(ctx, pool)?;
            vec![
                Inferred::tensor(ctx.dtype(0)?, shape.clone()),
                Inferred::tensor(DType::I64, shape),
            ]
        }
        Op::GlobalAveragePool | Op::GlobalMaxPool => {
            let shape = ctx.dims(0, 2)?.map(|dims| {
                let mut out = dims[..2].to_vec();
                out.extend(std::iter::repeat_n(Dim::known(1), dims.len() - 2));
                out
            });
            vec![Inferred::tensor(ctx.dtype(0)?, shape)]
        }
        Op::Lrn { .. } | Op::InstanceNormalization { .. } | Op::GroupNormalization { .. } => {
            ctx.dims(0, 2)?;
            vec![Inferred::tensor(ctx.dtype(0)?, ctx.shape(0)?.clone())]
        }
        Op::BatchNormalization { .. } => {
            ctx.dims(0, 1)?;
            let stats = ctx.shape(3)?.clone();
            vec![
                Inferred::tensor(ctx.dtype(0)?, ctx.shape(0)?.clone()),
                Inferred::tensor(ctx.dtype(3)?, stats.clone()),
                Inferred::tensor(ctx.dtype(4)?, stats),
            ]
        }
        Op::LayerNormalization {
            axis, stash_type, ..
        } => {
            let stats = match ctx.dims(0, 1)? {
                Some(dims) => {
                    let axis = ctx.axis(*axis, dims.len())?;
                    let mut out = dims[..axis].to_vec();
                    out.extend(std::iter::repeat_n(Dim::known(1), dims.len() - axis));
                    Some(out)
                }
                None => None,
            };
            vec![
                Inferred::tensor(ctx.dtype(0)?, ctx.shape(0)?.clone()),
                Inferred::tensor(*stash_type, stats.clone()),
                Inferred::tensor(*stash_type, stats),
            ]
        }
        Op::Gemm {
            trans_a, trans_b, ..
        } => {
            let dtype = ctx.same_dtype(&[0, 1, 2])?;
            let (a, b) = (ctx.dims(0, 2)?, ctx.dims(1, 2)?);
            let shape = match (a, b) {
                (Some(a), Some(b)) => {
                    if a.len() != 2 || b.len() != 2 {
                        return Err(ctx.err(format!(
                            "A and B must be 2-D, found ranks {} and {}",
                            a.len(),
                            b.len()
                        )));
                    }
                    let (m, ka) = if *trans_a {
                        (&a[1], &a[0])
                    } else {
                        (&a[0], &a[1])
                    };
                    let (kb, n) = if *trans_b {
                        (&b[1], &b[0])
                    } else {
                        (&b[0], &b[1])
                    };
                    check_equal(ctx, ka, kb, "inner dimensions of A and B")?;
                    Some(vec![m.clone(), n.clone()])
                }
                _ => None,
            };
            vec![Inferred::tensor(dtype, shape)]
        }
        Op::TransposedMatMul { trans_a, trans_b } => {
            let swapped: Vec<Option<crate::types::Value>> = [(0, *trans_a), (1, *trans_b)]
                .iter()
                .map(|&(i, swap)| {
                    let mut value = ctx.input(i)?.clone();
                    if let (true, ValueType::Tensor(TensorType { shape: Some(dims), .. })) =
                        (swap, &mut value.ty)
                    {
                        let rank = dims.len();
                        if rank < 2 {
                            return Err(ctx.err(format!(
                                "input {i} is read transposed, so it needs rank 2 or more, found {rank}"
                            )));
                        }
                        dims.swap(rank - 2, rank - 1);
                    }
                    Ok(Some(value))
                })
                .collect::<Result<_>>()?;
            let view = Ctx {
                inputs: &swapped,
                ..*ctx
            };
            vec![Inferred::tensor(
                ctx.same_dtype(&[0, 1])?,
                matmul_shape(&view)?,
            )]
        }
        Op::MatMul => vec![Inferred::tensor(
            ctx.same_dtype(&[0, 1])?,
            matmul_shape(ctx)?,
        )],
        Op::Einsum { equation } => vec![Inferred::tensor(
            ctx.dtype(0)?,
            einsum_shape(ctx, equation)?,
        )],
        Op::Concat { axis } => concat(ctx, *axis)?,
        Op::Split { axis, num_outputs } => split(ctx, *axis, *num_outputs)?,
        Op::Slice => slice(ctx)?,
        Op::Squeeze => squeeze(ctx)?,
        Op::Unsqueeze => unsqueeze(ctx)?,
        Op::Reshape { allowzero } => reshape(ctx, *allowzero)?,
        Op::Flatten { axis } => {
            let shape = match ctx.dims(0, 0)? {
                Some(dims) => {
                    let rank = dims.len();
                    let axis = if *axis < 0 {
                        *axis + rank as i64
                    } else {
                        *axis
                    };
                    if !(0..=rank as i64).contains(&axis) {
                        return Err(ctx.err(format!("axis {axis} is out of range for rank {rank}")));
                    }
                    let (outer, inner) = dims.split_at(axis as usize);
                    Some(vec![product(outer), product(inner)])
                }
                None => None,
            };
            vec![Inferred::tensor(ctx.dtype(0)?, shape).with_known(ctx.known(0).cloned())]
        }
        Op::Transpose { perm } => {
            let shape = match ctx.dims(0, 0)? {
                Some(dims) => {
                    let perm: Vec<i64> = if perm.is_empty() {
                        (0..dims.len() as i64).rev().collect()
                    } else {
                        perm.clone()
                    };
                    let mut seen = vec![false; dims.len()];
                    let mut out = Vec::with_capacity(dims.len());
                    for &p in &perm {
                        let axis = ctx.axis(p, dims.len())?;
                        if std::mem::replace(&mut seen[axis], true) {
                            return Err(ctx.err(format!("perm {perm:?} repeats axis {p}")));
                        }
                        out.push(dims[axis].clone());
                    }
                    if out.len() != dims.len() {
                        return Err(ctx.err(format!(
                            "perm {perm:?} has {} entries for rank {}",
                            perm.len(),
                            dims.len()
                        )));
                    }
                    Some(out)
                }
                None => None,
            };
            vec![Inferred::tensor(ctx.dtype(0)?, shape)]
        }
        Op::Expand => {
            let target = shape_input(ctx, 1)?;
            let shape = broadcast_shapes(&[ctx.shape(0)?, &target]).map_err(|e| ctx.err(e))?;
            vec![Inferred::tensor(ctx.dtype(0)?, shape)]
        }
        Op::Tile => {
            let shape = match (ctx.dims(0, 0)?, ctx.known(1).and_then(Known::as_dims)) {
                (Some(dims), Some(repeats)) => {
                    if repeats.len() != dims.len() {
                        return Err(ctx.err(format!(
                            "repeats has {} entries for rank {}",
                            repeats.len(),
                            dims.len()
                        )));
                    }
                    Some(
                        dims.iter()
                            .zip(repeats)
                            .map(|(d, r)| d.clone() * r)
                            .collect(),
                    )
                }
                (Some(dims), None) => Some(vec![Dim::Dynamic; dims.len()]),
                _ => None,
            };
            vec![Inferred::tensor(ctx.dtype(0)?, shape)]
        }
        Op::Pad { .. } => vec![Inferred::tensor(ctx.dtype(0)?, pad_shape(ctx)?)],
        Op::DepthToSpace { blocksize, .. } => {
            let shape = match ctx.dims(0, 4)? {
                Some(dims) if dims.len() == 4 => {
                    let b = Dim::known(*blocksize);
                    let c = dims[1].div_exact(&(b.clone() * b.clone())).ok_or_else(|| {
                        ctx.err(format!(
                            "channels {} are not divisible by blocksize^2",
                            dims[1]
                        ))
                    })?;
                    Some(vec![
                        dims[0].clone(),
                        c,
                        dims[2].clone() * b.clone(),
                        dims[3].clone() * b,
                    ])
                }
                Some(dims) => {
                    return Err(ctx.err(format!("input must be 4-D, found rank {}", dims.len())))
                }
                None => None,
            };
            vec![Inferred::tensor(ctx.dtype(0)?, shape)]
        }
        Op::Gather { axis } => {
            let shape = match (ctx.dims(0, 1)?, ctx.shape(1)?) {
                (Some(data), Some(indices)) => {
                    let axis = ctx.axis(*axis, data.len())?;
                    let mut out = data[..axis].to_vec();
                    out.extend(indices.iter().cloned());
                    out.extend(data[axis + 1..].iter().cloned());
                    Some(out)
                }
                _ => None,
            };
            let known = fold::gather(ctx, *axis);
            vec![Inferred::tensor(ctx.dtype(0)?, shape).with_known(known)]
        }
        Op::GatherElements { axis } => {
            if let (Some(data), Some(indices)) = (ctx.dims(0, 1)?, ctx.shape(1)?) {
                ctx.axis(*axis, data.len())?;
                if data.len() != indices.len() {
                    return Err(ctx.err(format!(
                        "data rank {} and indices rank {} differ",
                        data.len(),
                        indices.len()
                    )));
                }
            }
            vec![Inferred::tensor(ctx.dtype(0)?, ctx.shape(1)?.clone())]
        }
        Op::GatherNd { batch_dims } => {
            let shape = match (ctx.dims(0, 1)?, ctx.dims(1, 1)?) {
                (Some(data), Some(indices)) => {
                    let b = *batch_dims as usize;
                    let last = indices[indices.len() - 1].as_const();
                    match last {
                        Some(k) if b + k as usize <= data.len() => {
                            let mut out = indices[..indices.len() - 1].to_vec();
                            out.extend(data[b + k as usize..].iter().cloned());
                            Some(out)
                        }
                        Some(k) => {
                            return Err(ctx.err(format!(
                                "index tuples of length {k} exceed data rank {}",
                                data.len()
                            )))
                        }
                        None => None,
                    }
                }
                _ => None,
            };
            vec![Inferred::tensor(ctx.dtype(0)?, shape)]
        }
        Op::ScatterNd { .. } => vec![Inferred::tensor(
            ctx.same_dtype(&[0, 2])?,
            ctx.shape(0)?.clone(),
        )],
        Op::Shape { start, end } => {
            let (shape, known) = match ctx.shape(0)? {
                Some(dims) => {
                    let rank = dims.len() as i64;
                    let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
                    let (s, e) = (clamp(*start), clamp(end.unwrap_or(rank)));
                    let slice = if s < e {
                        dims[s..e].to_vec()
                    } else {
                        Vec::new()
                    };
                    (
                        Some(vec![Dim::known(slice.len() as i64)]),
                        Some(Known::Ints(slice)),
                    )
                }
                None => (Some(vec![Dim::Dynamic]), None),
            };
            vec![Inferred::tensor(DType::I64, shape).with_known(known)]
        }
        Op::Size => {
            let known = ctx
                .shape(0)?
                .as_ref()
                .map(|dims| Known::Ints(vec![product(dims)]));
            vec![Inferred::tensor(DType::I64, Some(vec![])).with_known(known)]
        }
        Op::ConstantOfShape { value } => {
            let shape = shape_input(ctx, 0)?;
            let known = fold::constant_of_shape(value, &shape);
            vec![Inferred::tensor(value.dtype, shape).with_known(known)]
        }
        Op::Range => {
            let dtype = ctx.same_dtype(&[0, 1, 2])?;
            let (shape, known) = fold::range(ctx);
            vec![Inferred::tensor(dtype, Some(vec![shape])).with_known(known)]
        }
        Op::Resize(attrs) => vec![Inferred::tensor(ctx.dtype(0)?, resize_shape(ctx, attrs)?)],
        Op::TopK { axis, .. } => {
            let shape = match ctx.dims(0, 1)? {
                Some(dims) => {
                    let axis = ctx.axis(*axis, dims.len())?;
                    let k = match ctx.known_i64s(1).as_deref() {
                        Some([k]) if *k >= 0 => Dim::known(*k),
                        Some(k) => {
                            return Err(
                                ctx.err(format!("k must be one non-negative value, found {k:?}"))
                            )
                        }
                        None => Dim::Dynamic,
                    };
                    let mut out = dims.to_vec();
                    out[axis] = k;
                    Some(out)
                }
                None => None,
            };
            vec![
                Inferred::tensor(ctx.dtype(0)?, shape.clone()),
                Inferred::tensor(DType::I64, shape),
            ]
        }
        Op::Trilu { .. } => {
            ctx.dims(0, 2)?;
            vec![Inferred::tensor(ctx.dtype(0)?, ctx.shape(0)?.clone())]
        }
        Op::CumSum { .. } => vec![Inferred::tensor(ctx.dtype(0)?, ctx.shape(0)?.clone())],
        Op::Dropout { .. } => vec![
            Inferred::tensor(ctx.dtype(0)?, ctx.shape(0)?.clone())
                .with_known(ctx.known(0).cloned()),
            Inferred::tensor(DType::Bool, ctx.shape(0)?.clone()),
        ],
        Op::Lstm(attrs) => recurrent(ctx, attrs, 4)?,
        Op::Gru(attrs) => recurrent(ctx, attrs, 3)?,
        Op::QuantizeLinear { output_dtype, .. } => {
            let dtype = match ctx.opt(2) {
                Some(_) => ctx.dtype(2)?,
                None => output_dtype.unwrap_or(DType::U8),
            };
            vec![Inferred::tensor(dtype, ctx.shape(0)?.clone())]
        }
        Op::DequantizeLinear { output_dtype, .. } => {
            let dtype = match output_dtype {
                Some(dtype) => *dtype,
                None => ctx.dtype(1)?,
            };
            vec![Inferred::tensor(dtype, ctx.shape(0)?.clone())]
        }
        Op::RoundToBlocks { format } => {
            let dtype = ctx.dtype(0)?;
            if dtype != DType::F32 {
                return Err(ctx.err(format!("rounds f32 values, found {dtype}")));
            }
            if *format == crate::formats::BlockFormat::Nvfp4 && ctx.opt(1).is_none() {
                return Err(ctx.err("NVFP4 needs its tensor scale (input 1)".to_string()));
            }
            vec![Inferred::tensor(dtype, ctx.shape(0)?.clone())]
        }
        _ => return super::extra_ops::infer(ctx),
    })
}

fn broadcast(ctx: &Ctx, indices: &[usize]) -> Result<Shape> {
    let shapes: Vec<&Shape> = indices
        .iter()
        .filter(|&&i| ctx.opt(i).is_some())
        .map(|&i| ctx.shape(i))
        .collect::<Result<_>>()?;
    broadcast_shapes(&shapes).map_err(|e| ctx.err(e))
}

fn check_equal(ctx: &Ctx, a: &Dim, b: &Dim, what: &str) -> Result<()> {
    match (a.as_const(), b.as_const()) {
        (Some(x), Some(y)) if x != y => Err(ctx.err(format!("{what} differ: {x} vs {y}"))),
        _ => Ok(()),
    }
}

fn product(dims: &[Dim]) -> Dim {
    dims.iter().fold(Dim::known(1), |acc, d| acc * d.clone())
}

/// Reads a 1-D shape tensor input: its values when known, else a rank from its length.
fn shape_input(ctx: &Ctx, i: usize) -> Result<Shape> {
    if let Some(dims) = ctx.known(i).and_then(Known::as_dims) {
        if let Some(negative) = dims.iter().find(|d| d.as_const().is_some_and(|v| v < 0)) {
            return Err(ctx.err(format!("shape input {i} has a negative size {negative}")));
        }
        return Ok(Some(dims));
    }
    Ok(match ctx.shape(i)? {
        Some(dims) if dims.len() == 1 => dims[0].as_const().map(|n| vec![Dim::Dynamic; n as usize]),
        _ => None,
    })
}

fn reduce_dims(dims: &[Dim], axes: &[usize], keepdims: bool) -> Vec<Dim> {
    let mut out = Vec::new();
    for (i, d) in dims.iter().enumerate() {
        if !axes.contains(&i) {
            out.push(d.clone());
        } else if keepdims {
            out.push(Dim::known(1));
        }
    }
    out
}

fn reduce_shape(ctx: &Ctx, keepdims: bool, noop_with_empty_axes: bool) -> Result<Shape> {
    let Some(dims) = ctx.shape(0)? else {
        return Ok(None);
    };
    let axes = match ctx.opt(1) {
        None => Some(Vec::new()),
        Some(_) => ctx.known_i64s(1),
    };
    Ok(match axes {
        Some(axes) if axes.is_empty() && noop_with_empty_axes => Some(dims.clone()),
        Some(axes) if axes.is_empty() => Some(reduce_dims(
            dims,
            &(0..dims.len()).collect::<Vec<_>>(),
            keepdims,
        )),
        Some(axes) => {
            let axes = axes
                .iter()
                .map(|&a| ctx.axis(a, dims.len()))
                .collect::<Result<Vec<_>>>()?;
            Some(reduce_dims(dims, &axes, keepdims))
        }
        None if keepdims => Some(vec![Dim::Dynamic; dims.len()]),
        None => None,
    })
}

fn spatial_attr(ctx: &Ctx, values: &[i64], name: &str, n: usize, default: i64) -> Result<Vec<i64>> {
    match values.len() {
        0 => Ok(vec![default; n]),
        len if len == n => Ok(values.to_vec()),
        len => Err(ctx.err(format!(
            "{name} has {len} entries, expected {n} (one per spatial axis)"
        ))),
    }
}

/// Output size of a sliding window along one axis, before rounding mode is applied.
struct Window<'a> {
    input: &'a Dim,
    kernel: i64,
    stride: i64,
    dilation: i64,
    pad_begin: i64,
    pad_end: i64,
}

fn window_output(ctx: &Ctx, w: Window, auto_pad: AutoPad, ceil_mode: bool) -> Result<Dim> {
    if w.stride <= 0 || w.dilation <= 0 || w.kernel <= 0 {
        return Err(ctx.err(format!(
            "kernel {}, stride {} and dilation {} must be positive",
            w.kernel, w.stride, w.dilation
        )));
    }
    let effective = (w.kernel - 1) * w.dilation + 1;
    let stride = Dim::known(w.stride);
    Ok(match auto_pad {
        AutoPad::SameUpper | AutoPad::SameLower => w.input.ceil_div(&stride),
        AutoPad::Valid => (w.input.clone() - Dim::known(effective - 1)).ceil_div(&stride),
        AutoPad::NotSet => {
            let span = w.input.clone() + Dim::known(w.pad_begin + w.pad_end - effective);
            if span.as_const().is_some_and(|s| s < 0) {
                return Err(ctx.err(format!(
                    "window of {effective} is larger than the padded input {}",
                    w.input.clone() + Dim::known(w.pad_begin + w.pad_end)
                )));
            }
            if !ceil_mode {
                return Ok(span.floor_div(&stride) + Dim::known(1));
            }
            let out = span.ceil_div(&stride) + Dim::known(1);
            // A last window that would start inside the end padding is dropped.
            match (out.as_const(), w.input.as_const()) {
                (Some(o), Some(i)) if (o - 1) * w.stride >= i + w.pad_begin => Dim::known(o - 1),
                (Some(_), Some(_)) => out,
                _ => out,
            }
        }
    })
}

/// The kernel's spatial size: the `kernel_shape` attribute, else the weight's trailing dims.
fn kernel_dims(ctx: &Ctx, attrs: &ConvAttrs, w: &[Dim], n: usize) -> Result<Vec<i64>> {
    if attrs.kernel_shape.is_empty() {
        w[2..]
            .iter()
            .map(|d| {
                d.as_const()
                    .ok_or_else(|| ctx.err("kernel size must be static"))
            })
            .collect()
    } else {
        spatial_attr(ctx, &attrs.kernel_shape, "kernel_shape", n, 1)
    }
}

/// Refuses the channels-last layout, which only `Conv` has.
pub(super) fn nchw_only(ctx: &Ctx, attrs: &ConvAttrs) -> Result<()> {
    if attrs.layout.is_nchw() {
        Ok(())
    } else {
        Err(ctx.err("the NHWC layout is only for Conv"))
    }
}

pub(super) fn conv_shape(ctx: &Ctx, attrs: &ConvAttrs) -> Result<Shape> {
    let (Some(x), Some(w)) = (ctx.dims(0, 3)?, ctx.dims(1, 3)?) else {
        return Ok(None);
    };
    if attrs.layout.is_nchw() {
        return nchw_conv_shape(ctx, attrs, x, w);
    }
    let out = nchw_conv_shape(ctx, attrs, &channels_first(x), &channels_first(w))?;
    Ok(out.map(|dims| channels_last(&dims)))
}

fn nchw_conv_shape(ctx: &Ctx, attrs: &ConvAttrs, x: &[Dim], w: &[Dim]) -> Result<Shape> {
    let n = x.len() - 2;
    if w.len() != x.len() {
        return Err(ctx.err(format!(
            "weight rank {} differs from input rank {}",
            w.len(),
            x.len()
        )));
    }
    if attrs.group <= 0 {
        return Err(ctx.err(format!("group must be positive, found {}", attrs.group)));
    }
    check_equal(
        ctx,
        &x[1],
        &(w[1].clone() * Dim::known(attrs.group)),
        "input channels and weight channels × group",
    )?;
    let kernel = kernel_dims(ctx, attrs, w, n)?;
    let strides = spatial_attr(ctx, &attrs.strides, "strides", n, 1)?;
    let dilations = spatial_attr(ctx, &attrs.dilations, "dilations", n, 1)?;
    let pads = spatial_attr(ctx, &attrs.pads, "pads", 2 * n, 0)?;
    let mut out = vec![x[0].clone(), w[0].clone()];
    for i in 0..n {
        out.push(window_output(
            ctx,
            Window {
                input: &x[i + 2],
                kernel: kernel[i],
                stride: strides[i],
                dilation: dilations[i],
                pad_begin: pads[i],
                pad_end: pads[i + n],
            },
            attrs.auto_pad,
            false,
        )?);
    }
    Ok(Some(out))
}

fn conv_transpose_shape(ctx: &Ctx, attrs: &crate::op::ConvTransposeAttrs) -> Result<Shape> {
    nchw_only(ctx, &attrs.conv)?;
    let (Some(x), Some(w)) = (ctx.dims(0, 3)?, ctx.dims(1, 3)?) else {
        return Ok(None);
    };
    let n = x.len() - 2;
    let conv = &attrs.conv;
    let kernel = kernel_dims(ctx, conv, w, n)?;
    let strides = spatial_attr(ctx, &conv.strides, "strides", n, 1)?;
    let dilations = spatial_attr(ctx, &conv.dilations, "dilations", n, 1)?;
    let pads = spatial_attr(ctx, &conv.pads, "pads", 2 * n, 0)?;
    let output_padding = spatial_attr(ctx, &attrs.output_padding, "output_padding", n, 0)?;
    let mut out = vec![x[0].clone(), w[1].clone() * Dim::known(conv.group)];
    if !attrs.output_shape.is_empty() {
        let given = &attrs.output_shape[attrs.output_shape.len().saturating_sub(n)..];
        out.extend(given.iter().map(|&d| Dim::known(d)));
        return Ok(Some(out));
    }
    for i in 0..n {
        let input = x[i + 2].clone();
        let d = match conv.auto_pad {
            AutoPad::SameUpper | AutoPad::SameLower => input * Dim::known(strides[i]),
            _ => {
                (input - Dim::known(1)) * Dim::known(strides[i])
                    + Dim::known(
                        output_padding[i] + (kernel[i] - 1) * dilations[i] + 1
                            - pads[i]
                            - pads[i + n],
                    )
            }
        };
        out.push(d);
    }
    Ok(Some(out))
}

pub(super) fn pool_shape(ctx: &Ctx, pool: &PoolAttrs) -> Result<Shape> {
    let Some(x) = ctx.dims(0, 3)? else {
        return Ok(None);
    };
    if pool.layout.is_nchw() {
        return nchw_pool_shape(ctx, pool, x);
    }
    if !matches!(ctx.op, Op::MaxPool { .. } | Op::AveragePool { .. }) {
        return Err(ctx.err("the NHWC layout is only for MaxPool and AveragePool"));
    }
    let out = nchw_pool_shape(ctx, pool, &channels_first(x))?;
    Ok(out.map(|dims| channels_last(&dims)))
}

fn nchw_pool_shape(ctx: &Ctx, pool: &PoolAttrs, x: &[Dim]) -> Result<Shape> {
    let n = x.len() - 2;
    let kernel = spatial_attr(ctx, &pool.kernel_shape, "kernel_shape", n, 0)?;
    let strides = spatial_attr(ctx, &pool.strides, "strides", n, 1)?;
    let dilations = spatial_attr(ctx, &pool.dilations, "dilations", n, 1)?;
    let pads = spatial_attr(ctx, &pool.pads, "pads", 2 * n, 0)?;
    let mut out = x[..2].to_vec();
    for i in 0..n {
        out.push(window_output(
            ctx,
            Window {
                input: &x[i + 2],
                kernel: kernel[i],
                stride: strides[i],
                dilation: dilations[i],
                pad_begin: pads[i],
                pad_end: pads[i + n],
            },
            pool.auto_pad,
            pool.ceil_mode,
        )?);
    }
    Ok(Some(out))
}

pub(super) fn matmul_shape(ctx: &Ctx) -> Result<Shape> {
    let (Some(a), Some(b)) = (ctx.dims(0, 1)?, ctx.dims(1, 1)?) else {
        return Ok(None);
    };
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    let (a_vec, b_vec) = (a.len() == 1, b.len() == 1);
    if a_vec {
        a.insert(0, Dim::known(1));
    }
    if b_vec {
        b.push(Dim::known(1));
    }
    check_equal(
        ctx,
        &a[a.len() - 1],
        &b[b.len() - 2],
        "inner dimensions of A and B",
    )?;
    let batch_a: Shape = Some(a[..a.len() - 2].to_vec());
    let batch_b: Shape = Some(b[..b.len() - 2].to_vec());
    let mut out = broadcast_shapes(&[&batch_a, &batch_b])
        .map_err(|e| ctx.err(e))?
        .unwrap_or_default();
    if !a_vec {
        out.push(a[a.len() - 2].clone());
    }
    if !b_vec {
        out.push(b[b.len() - 1].clone());
    }
    Ok(Some(out))
}

fn einsum_shape(ctx: &Ctx, equation: &str) -> Result<Shape> {
    let mut shapes = Vec::with_capacity(ctx.inputs.len());
    for i in 0..ctx.inputs.len() {
        let Some(dims) = ctx.shape(i)? else {
            return Ok(None);
        };
        shapes.push(dims);
    }
    let ranks: Vec<usize> = shapes.iter().map(|d| d.len()).collect();
    let equation = Equation::parse(equation, &ranks).map_err(|e| ctx.err(e))?;
    let mut sizes: std::collections::BTreeMap<char, Dim> = Default::default();
    for (labels, dims) in equation.operands.iter().zip(&shapes) {
        for (&label, d) in labels.iter().zip(dims.iter()) {
            let merged = match sizes.get(&label) {
                Some(prev) => super::broadcast_dim(prev, d).ok_or_else(|| {
                    let what = if is_ellipsis_label(label) {
                        "an axis under '...'".to_string()
                    } else {
                        format!("subscript '{label}'")
                    };
                    ctx.err(format!("{what} has sizes {prev} and {d}"))
                })?,
                None => d.clone(),
            };
            sizes.insert(label, merged);
        }
    }
    Ok(Some(
        equation.output.iter().map(|l| sizes[l].clone()).collect(),
    ))
}

fn concat(ctx: &Ctx, axis: i64) -> Result<Vec<Inferred>> {
    let all: Vec<usize> = (0..ctx.inputs.len()).collect();
    if all.is_empty() {
        return Err(ctx.err("needs at least one input"));
    }
    let dtype = ctx.same_dtype(&all)?;
    let mut out: Option<Vec<Dim>> = None;
    let mut rank = None;
    for &i in &all {
        let Some(dims) = ctx.dims(i, 1)? else {
            continue;
        };
        rank = Some(dims.len());
        let a = ctx.axis(axis, dims.len())?;
        out = Some(match out {
            None => dims.to_vec(),
            Some(mut acc) => {
                if acc.len() != dims.len() {
                    return Err(ctx.err(format!(
                        "inputs have ranks {} and {}",
                        acc.len(),
                        dims.len()
                    )));
                }
                for (j, d) in dims.iter().enumerate() {
                    if j == a {
                        acc[j] = acc[j].clone() + d.clone();
                    } else {
                        check_equal(ctx, &acc[j], d, &format!("dim {j} of the inputs"))?;
                        if acc[j].as_const().is_none() {
                            acc[j] = d.clone();
                        }
                    }
                }
                acc
            }
        });
    }
    let shape = if all.iter().all(|&i| ctx.shape(i).is_ok_and(|s| s.is_some())) {
        out
    } else {
        rank.map(|r| vec![Dim::Dynamic; r])
    };
    let known = fold::concat(ctx);
    Ok(vec![Inferred::tensor(dtype, shape).with_known(known)])
}

fn split(ctx: &Ctx, axis: i64, num_outputs: i64) -> Result<Vec<Inferred>> {
    let dtype = ctx.dtype(0)?;
    let n = ctx.outputs;
    let Some(dims) = ctx.dims(0, 1)? else {
        return Ok(vec![Inferred::tensor(dtype, None); n]);
    };
    let a = ctx.axis(axis, dims.len())?;
    let total = &dims[a];
    let sizes: Vec<Dim> = if ctx.opt(1).is_some() {
        match ctx.known(1).and_then(Known::as_dims) {
            Some(sizes) if sizes.len() == n => sizes,
            Some(sizes) => {
                return Err(ctx.err(format!("split has {} sizes for {n} outputs", sizes.len())))
            }
            None => vec![Dim::Dynamic; n],
        }
    } else if num_outputs > 0 {
        if num_outputs as usize != n {
            return Err(ctx.err(format!(
                "num_outputs is {num_outputs} but the node has {n} outputs"
            )));
        }
        let chunk = total.ceil_div(&Dim::known(num_outputs));
        let mut sizes = vec![chunk.clone(); n];
        sizes[n - 1] = total.clone() - chunk * Dim::known(num_outputs - 1);
        sizes
    } else {
        let each = total.div_exact(&Dim::known(n as i64));
        match each {
            Some(each) => vec![each; n],
            None if total.is_const() => {
                return Err(ctx.err(format!(
                    "axis size {total} does not split evenly into {n} outputs"
                )))
            }
            None => vec![Dim::Dynamic; n],
        }
    };
    let sum = sizes.iter().fold(Dim::known(0), |acc, d| acc + d.clone());
    check_equal(ctx, &sum, total, "split sizes and the axis size")?;
    Ok(sizes
        .into_iter()
        .map(|size| {
            let mut out = dims.to_vec();
            out[a] = size;
            Inferred::tensor(dtype, Some(out))
        })
        .collect())
}

/// The length of `dim[start:end:step]` with ONNX's clamping, kept symbolic where it can be.
fn slice_len(dim: &Dim, start: i64, end: i64, step: i64) -> Dim {
    if let Some(d) = dim.as_const() {
        let clamp = |v: i64, lo: i64, hi: i64| v.clamp(lo, hi);
        let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
        let (s, e) = if step > 0 {
            (clamp(norm(start), 0, d), clamp(norm(end), 0, d))
        } else {
            (clamp(norm(start), 0, d - 1), clamp(norm(end), -1, d - 1))
        };
        let len = if step > 0 {
            (e - s + step - 1) / step
        } else {
            (s - e + (-step) - 1) / (-step)
        };
        return Dim::known(len.max(0));
    }
    if step <= 0 {
        return Dim::Dynamic;
    }
    let norm = |v: i64| {
        if v >= SLICE_TO_END {
            dim.clone()
        } else if v < 0 {
            dim.clone() + Dim::known(v)
        } else {
            Dim::known(v)
        }
    };
    (norm(end) - norm(start)).ceil_div(&Dim::known(step))
}

fn slice(ctx: &Ctx) -> Result<Vec<Inferred>> {
    let dtype = ctx.dtype(0)?;
    let Some(dims) = ctx.dims(0, 1)? else {
        return Ok(vec![Inferred::tensor(dtype, None)]);
    };
    let (Some(starts), Some(ends)) = (ctx.known_i64s(1), ctx.known_i64s(2)) else {
        return Ok(vec![Inferred::tensor(
            dtype,
            Some(vec![Dim::Dynamic; dims.len()]),
        )]);
    };
    if starts.len() != ends.len() {
        return Err(ctx.err(format!(
            "starts has {} entries, ends has {}",
            starts.len(),
            ends.len()
        )));
    }
    let axes = match ctx.opt(3) {
        Some(_) => match ctx.known_i64s(3) {
            Some(axes) => axes,
            None => {
                return Ok(vec![Inferred::tensor(
                    dtype,
                    Some(vec![Dim::Dynamic; dims.len()]),
                )])
            }
        },
        None => (0..starts.len() as i64).collect(),
    };
    let steps = match ctx.opt(4) {
        Some(_) => ctx
            .known_i64s(4)
            .ok_or_else(|| ctx.err("steps must be known at compile time"))?,
        None => vec![1; starts.len()],
    };
    if axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(ctx.err("starts, ends, axes and steps must have the same length"));
    }
    let mut out = dims.to_vec();
    let mut ranges = Vec::new();
    for i in 0..starts.len() {
        let a = ctx.axis(axes[i], dims.len())?;
        if steps[i] == 0 {
            return Err(ctx.err(format!("step for axis {a} is 0")));
        }
        out[a] = slice_len(&dims[a], starts[i], ends[i], steps[i]);
        ranges.push((a, starts[i], ends[i], steps[i]));
    }
    let known = fold::slice(ctx.known(0), dims, &ranges);
    Ok(vec![Inferred::tensor(dtype, Some(out)).with_known(known)])
}

fn squeeze(ctx: &Ctx) -> Result<Vec<Inferred>> {
    let dtype = ctx.dtype(0)?;
    let known = ctx.known(0).cloned();
    let Some(dims) = ctx.dims(0, 0)? else {
        return Ok(vec![Inferred::tensor(dtype, None)]);
    };
    let shape = match ctx.opt(1) {
        Some(_) => match ctx.known_i64s(1) {
            Some(axes) => {
                let axes = axes
                    .iter()
                    .map(|&a| ctx.axis(a, dims.len()))
                    .collect::<Result<Vec<_>>>()?;
                for &a in &axes {
                    if dims[a].as_const().is_some_and(|d| d != 1) {
                        return Err(ctx.err(format!("cannot squeeze axis {a} of size {}", dims[a])));
                    }
                }
                Some(reduce_dims(dims, &axes, false))
            }
            None => None,
        },
        None if dims.iter().all(Dim::is_const) => Some(
            dims.iter()
                .filter(|d| d.as_const() != Some(1))
                .cloned()
                .collect(),
        ),
        None => None,
    };
    Ok(vec![Inferred::tensor(dtype, shape).with_known(known)])
}

fn unsqueeze(ctx: &Ctx) -> Result<Vec<Inferred>> {
    let dtype = ctx.dtype(0)?;
    let known = ctx.known(0).cloned();
    let (Some(dims), Some(axes)) = (ctx.dims(0, 0)?, ctx.known_i64s(1)) else {
        return Ok(vec![Inferred::tensor(dtype, None).with_known(known)]);
    };
    let rank = dims.len() + axes.len();
    let mut axes = axes
        .iter()
        .map(|&a| ctx.axis(a, rank))
        .collect::<Result<Vec<_>>>()?;
    axes.sort_unstable();
    if axes.windows(2).any(|w| w[0] == w[1]) {
        return Err(ctx.err(format!("axes {axes:?} repeat an axis")));
    }
    let mut source = dims.iter();
    let out = (0..rank)
        .map(|i| {
            if axes.contains(&i) {
                Dim::known(1)
            } else {
                source.next().cloned().unwrap_or(Dim::Dynamic)
            }
        })
        .collect();
    Ok(vec![Inferred::tensor(dtype, Some(out)).with_known(known)])
}

fn reshape(ctx: &Ctx, allowzero: bool) -> Result<Vec<Inferred>> {
    let dtype = ctx.dtype(0)?;
    let known = ctx.known(0).cloned();
    let Some(target) = ctx.known(1).and_then(Known::as_dims) else {
        let rank = match ctx.shape(1)? {
            Some(d) if d.len() == 1 => d[0].as_const().map(|n| vec![Dim::Dynamic; n as usize]),
            _ => None,
        };
        return Ok(vec![Inferred::tensor(dtype, rank).with_known(known)]);
    };
    let input = ctx.shape(0)?;
    let mut out = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, d) in target.iter().enumerate() {
        match d.as_const() {
            Some(-1) => {
                if infer_at.replace(i).is_some() {
                    return Err(ctx.err("shape has more than one -1"));
                }
                out.push(Dim::Dynamic);
            }
            Some(0) if !allowzero => match input {
                Some(dims) => out.push(dims.get(i).cloned().ok_or_else(|| {
                    ctx.err(format!(
                        "shape copies dim {i}, but the input has rank {}",
                        dims.len()
                    ))
                })?),
                None => out.push(Dim::Dynamic),
            },
            Some(v) if v < -1 => return Err(ctx.err(format!("shape has an invalid size {v}"))),
            _ => out.push(d.clone()),
        }
    }
    if let (Some(at), Some(dims)) = (infer_at, input) {
        let total = product(dims);
        let rest = product(
            &out.iter()
                .enumerate()
                .filter(|(i, _)| *i != at)
                .map(|(_, d)| d.clone())
                .collect::<Vec<_>>(),
        );
        out[at] = match total.div_exact(&rest) {
            Some(d) => d,
            None if total.is_const() && rest.is_const() => {
                return Err(ctx.err(format!(
                    "cannot reshape {total} elements into {}",
                    crate::types::format_shape(&Some(target))
                )))
            }
            None => Dim::Dynamic,
        };
    } else if let Some(dims) = input {
        let (a, b) = (product(dims), product(&out));
        if let (Some(x), Some(y)) = (a.as_const(), b.as_const()) {
            if x != y {
                return Err(ctx.err(format!("cannot reshape {x} elements into {y}")));
            }
        }
    }
    Ok(vec![Inferred::tensor(dtype, Some(out)).with_known(known)])
}

fn pad_shape(ctx: &Ctx) -> Result<Shape> {
    let Some(dims) = ctx.dims(0, 0)? else {
        return Ok(None);
    };
    let Some(pads) = ctx.known_i64s(1) else {
        return Ok(Some(vec![Dim::Dynamic; dims.len()]));
    };
    let axes = match ctx.opt(3) {
        Some(_) => ctx
            .known_i64s(3)
            .ok_or_else(|| ctx.err("axes must be known at compile time"))?
            .iter()
            .map(|&a| ctx.axis(a, dims.len()))
            .collect::<Result<Vec<_>>>()?,
        None => (0..dims.len()).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(ctx.err(format!(
            "pads has {} entries, expected {} (begin and end per axis)",
            pads.len(),
            2 * axes.len()
        )));
    }
    let mut out = dims.to_vec();
    for (i, &a) in axes.iter().enumerate() {
        out[a] = out[a].clone() + Dim::known(pads[i] + pads[i + axes.len()]);
        if out[a].as_const().is_some_and(|d| d < 0) {
            return Err(ctx.err(format!("padding makes axis {a} negative")));
        }
    }
    Ok(Some(out))
}

fn resize_shape(ctx: &Ctx, attrs: &crate::op::ResizeAttrs) -> Result<Shape> {
    let Some(dims) = ctx.dims(0, 1)? else {
        return Ok(None);
    };
    let axes: Vec<usize> = if attrs.axes.is_empty() {
        (0..dims.len()).collect()
    } else {
        attrs
            .axes
            .iter()
            .map(|&a| ctx.axis(a, dims.len()))
            .collect::<Result<_>>()?
    };
    let mut out = dims.to_vec();
    let sizes = ctx
        .opt(3)
        .and_then(|v| v.known.as_ref())
        .and_then(Known::as_i64s)
        .filter(|s| !s.is_empty());
    let scales = ctx
        .opt(2)
        .and_then(|v| v.known.as_ref())
        .and_then(Known::as_f64s)
        .filter(|s| !s.is_empty());
    if let Some(sizes) = sizes {
        if sizes.len() != axes.len() {
            return Err(ctx.err(format!(
                "sizes has {} entries for {} axes",
                sizes.len(),
                axes.len()
            )));
        }
        let policy = attrs.keep_aspect_ratio_policy.as_str();
        if policy == "stretch" {
            for (&a, &s) in axes.iter().zip(&sizes) {
                out[a] = Dim::known(s);
            }
            return Ok(Some(out));
        }
        let ratios: Option<Vec<f64>> = axes
            .iter()
            .zip(&sizes)
            .map(|(&a, &s)| dims[a].as_const().map(|d| s as f64 / d as f64))
            .collect();
        let Some(ratios) = ratios else {
            return Ok(Some(vec![Dim::Dynamic; dims.len()]));
        };
        let scale = if policy == "not_larger" {
            ratios.iter().cloned().fold(f64::INFINITY, f64::min)
        } else {
            ratios.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
        };
        for &a in &axes {
            let d = dims[a].as_const().unwrap_or_default() as f64;
            out[a] = Dim::known((d * scale + 0.5).floor() as i64);
        }
        return Ok(Some(out));
    }
    let Some(scales) = scales else {
        if ctx.opt(2).is_some() || ctx.opt(3).is_some() {
            return Ok(Some(vec![Dim::Dynamic; dims.len()]));
        }
        return Err(ctx.err("one of scales or sizes must be given"));
    };
    if scales.len() != axes.len() {
        return Err(ctx.err(format!(
            "scales has {} entries for {} axes",
            scales.len(),
            axes.len()
        )));
    }
    for (&a, &s) in axes.iter().zip(&scales) {
        if s <= 0.0 {
            return Err(ctx.err(format!("scale {s} must be positive")));
        }
        out[a] = match dims[a].as_const() {
            Some(d) => Dim::known((d as f64 * s).floor() as i64),
            None if s.fract() == 0.0 => dims[a].clone() * Dim::known(s as i64),
            None if (1.0 / s).fract() == 0.0 => dims[a].floor_div(&Dim::known((1.0 / s) as i64)),
            None => Dim::Dynamic,
        };
    }
    Ok(Some(out))
}

/// The types of a recurrent layer's outputs (`Y`, `Y_h`, `Y_c`) with `gates` gates per hidden
/// unit, after checking that its weights, biases, peepholes and initial states fit.
pub(super) fn recurrent(
    ctx: &Ctx,
    attrs: &crate::op::RnnAttrs,
    gates: i64,
) -> Result<Vec<Inferred>> {
    let dtype = ctx.same_dtype(&[0, 1, 2])?;
    let directions = if attrs.direction == "bidirectional" {
        2
    } else {
        1
    };
    if attrs.hidden_size <= 0 {
        return Err(ctx.err(format!(
            "hidden_size {} must be positive",
            attrs.hidden_size
        )));
    }
    let x = ctx.dims(0, 0)?;
    let input_size = x.and_then(|x| x.get(2)).and_then(Dim::as_const);
    let batch = x
        .and_then(|x| x.get(if attrs.layout == 0 { 1 } else { 0 }))
        .and_then(Dim::as_const);
    let rows = gates * attrs.hidden_size;
    let known = |d: Option<i64>| d.map_or(Dim::Dynamic, Dim::known);
    let (d, h) = (Some(directions), Some(attrs.hidden_size));
    let state = if attrs.layout == 0 {
        [d, batch, h]
    } else {
        [batch, d, h]
    };
    let expected: [(usize, &str, Vec<Option<i64>>); 6] = [
        (1, "W", vec![d, Some(rows), input_size]),
        (2, "R", vec![d, Some(rows), h]),
        (3, "B", vec![d, Some(2 * rows)]),
        (5, "initial_h", state.to_vec()),
        (6, "initial_c", state.to_vec()),
        (7, "P", vec![d, Some(3 * attrs.hidden_size)]),
    ];
    for (slot, name, want) in expected {
        if ctx.opt(slot).is_none() {
            continue;
        }
        let Some(got) = ctx.dims(slot, 0)? else {
            continue;
        };
        let fits = got.len() == want.len()
            && got.iter().zip(&want).all(|(g, w)| match (g.as_const(), w) {
                (Some(g), Some(w)) => g == *w,
                _ => true,
            });
        if !fits {
            let want: Vec<Dim> = want.into_iter().map(known).collect();
            return Err(ctx.err(format!(
                "{name} is {} but hidden_size {}, {directions} direction(s) and the input need {}",
                format_shape(&Some(got.to_vec())),
                attrs.hidden_size,
                format_shape(&Some(want))
            )));
        }
    }
    let hidden = Dim::known(attrs.hidden_size);
    let nd = Dim::known(directions);
    let shapes = match ctx.dims(0, 3)? {
        Some(x) if x.len() == 3 => {
            let (seq, batch) = if attrs.layout == 0 {
                (&x[0], &x[1])
            } else {
                (&x[1], &x[0])
            };
            let (seq, batch) = (seq.clone(), batch.clone());
            if attrs.layout == 0 {
                (
                    Some(vec![seq, nd.clone(), batch.clone(), hidden.clone()]),
                    Some(vec![nd, batch, hidden]),
                )
            } else {
                (
                    Some(vec![batch.clone(), seq, nd.clone(), hidden.clone()]),
                    Some(vec![batch, nd, hidden]),
                )
            }
        }
        Some(x) => return Err(ctx.err(format!("X must be 3-D, found rank {}", x.len()))),
        None => (None, None),
    };
    Ok(vec![
        Inferred::tensor(dtype, shapes.0),
        Inferred::tensor(dtype, shapes.1.clone()),
        Inferred::tensor(dtype, shapes.1),
    ])
}
