//! Inference rules of the ops beyond the core set: attention, quantized products, regions of
//! interest, sequences and optionals, and the signal ops. Where a size depends on data, the dim
//! is `?` but the rank is always given.

use super::rules::{conv_shape, matmul_shape, pool_shape, recurrent};
use super::{Ctx, Inferred};
use crate::dim::Dim;
use crate::dtype::DType;
use crate::error::Result;
use crate::op::Op;
use crate::types::{format_shape, Shape, TensorType, ValueType};

fn dynamic(rank: usize) -> Shape {
    Some(vec![Dim::Dynamic; rank])
}

fn same(ctx: &Ctx, i: usize) -> Result<Inferred> {
    Ok(Inferred::tensor(ctx.dtype(i)?, ctx.shape(i)?.clone()))
}

fn scalar(dtype: DType) -> Inferred {
    Inferred::tensor(dtype, Some(Vec::new()))
}

/// Input `i`'s dims when its rank is known, which must be 3.
fn rank3<'a>(ctx: &Ctx<'a>, i: usize) -> Result<Option<&'a [Dim]>> {
    match ctx.dims(i, 3)? {
        Some(dims) if dims.len() != 3 => Err(ctx.err(format!(
            "input {i} must have rank 3, found shape {}",
            format_shape(&Some(dims.to_vec()))
        ))),
        dims => Ok(dims),
    }
}

/// The loss of `NegativeLogLikelihoodLoss` and `SoftmaxCrossEntropyLoss`: one per target with
/// reduction `none`, else a scalar, of the input's type.
fn loss(ctx: &Ctx, reduction: &str) -> Result<Inferred> {
    let (dtype, target) = (ctx.dtype(0)?, ctx.dtype(1)?);
    if !dtype.is_float() || !matches!(target, DType::I32 | DType::I64) {
        return Err(ctx.err(format!(
            "needs float scores and int32/int64 targets, found {dtype} and {target}"
        )));
    }
    if let (Some(scores), Some(targets)) = (ctx.dims(0, 2)?, ctx.shape(1)?) {
        if targets.len() + 1 != scores.len() {
            return Err(ctx.err(format!(
                "targets of rank {} for scores of rank {}: targets drop the class axis 1",
                targets.len(),
                scores.len()
            )));
        }
    }
    Ok(if reduction == "none" {
        Inferred::tensor(dtype, ctx.shape(1)?.clone())
    } else {
        scalar(dtype)
    })
}

fn known_scalar(ctx: &Ctx, i: usize) -> Option<i64> {
    ctx.known_i64s(i).and_then(|v| v.first().copied())
}

fn other(ty: ValueType) -> Inferred {
    Inferred { ty, known: None }
}

/// The loosest tensor type covering both: same dtype, dims that differ become `?`.
fn merge_tensor(a: &TensorType, b: &TensorType) -> TensorType {
    let shape = match (&a.shape, &b.shape) {
        (Some(x), Some(y)) if x.len() == y.len() => Some(
            x.iter()
                .zip(y)
                .map(|(p, q)| if p == q { p.clone() } else { Dim::Dynamic })
                .collect(),
        ),
        _ => None,
    };
    TensorType {
        dtype: a.dtype,
        shape,
    }
}

/// A ctx reading only some of the node's inputs, in a new order.
fn remap<'a>(ctx: &Ctx<'a>, inputs: &'a [Option<crate::types::Value>]) -> Ctx<'a> {
    Ctx {
        node: ctx.node,
        op: ctx.op,
        inputs,
        outputs: ctx.outputs,
    }
}

fn sequence_element(ctx: &Ctx, i: usize) -> Result<ValueType> {
    match &ctx.input(i)?.ty {
        ValueType::Sequence(inner) => Ok((**inner).clone()),
        other => Err(ctx.err(format!("input {i} must be a sequence, found {other}"))),
    }
}

pub(super) fn infer(ctx: &Ctx) -> Result<Vec<Inferred>> {
    Ok(match ctx.op {
        Op::CastLike { .. } => vec![Inferred::tensor(ctx.dtype(1)?, ctx.shape(0)?.clone())],
        Op::Attention(attrs) => {
            let dtype = ctx.dtype(0)?;
            let (q, v) = (ctx.dims(0, 3)?, ctx.dims(2, 3)?);
            let y = match (q, v) {
                (Some(q), Some(v)) if q.len() == 4 => {
                    let head = if v.len() == 4 {
                        v[3].clone()
                    } else {
                        Dim::Dynamic
                    };
                    Some(vec![q[0].clone(), q[1].clone(), q[2].clone(), head])
                }
                (Some(q), Some(v)) => {
                    let width = if v.len() == 4 {
                        v[3].clone() * Dim::known(attrs.q_num_heads.max(1))
                    } else if attrs.kv_num_heads > 0 {
                        match v[2].div_exact(&Dim::known(attrs.kv_num_heads)) {
                            Some(h) => h * Dim::known(attrs.q_num_heads.max(1)),
                            None => Dim::Dynamic,
                        }
                    } else {
                        Dim::Dynamic
                    };
                    Some(vec![q[0].clone(), q[1].clone(), width])
                }
                _ => None,
            };
            // The present caches: the past ones (`[B, H, P, D]`) followed by the new keys or
            // values; the scores: one per query row and key.
            let past = |slot: usize| -> Result<Option<&[Dim]>> {
                match ctx.opt(slot) {
                    Some(_) => ctx.dims(slot, 4),
                    None => Ok(None),
                }
            };
            let present = |slot: usize, past_slot: usize| -> Result<Shape> {
                let Some(x) = ctx.dims(slot, 3)? else {
                    return Ok(dynamic(4));
                };
                let cached = past(past_slot)?;
                let length = match (cached, ctx.opt(past_slot)) {
                    (Some(p), _) => p[2].clone() + x[x.len() - 2].clone(),
                    (None, Some(_)) => Dim::Dynamic,
                    (None, None) => x[x.len() - 2].clone(),
                };
                Ok(Some(match (x.len(), cached) {
                    (4, _) => vec![x[0].clone(), x[1].clone(), length, x[3].clone()],
                    (_, Some(p)) => vec![x[0].clone(), p[1].clone(), length, p[3].clone()],
                    _ if attrs.kv_num_heads > 0 => {
                        let heads = Dim::known(attrs.kv_num_heads);
                        let size = x[2].div_exact(&heads).unwrap_or(Dim::Dynamic);
                        vec![x[0].clone(), heads, length, size]
                    }
                    _ => return Ok(dynamic(4)),
                }))
            };
            let present_key = present(1, 4)?;
            let present_value = present(2, 5)?;
            let scores = match (q, &present_key) {
                (Some(q), Some(k)) if q.len() == 4 => {
                    Some(vec![q[0].clone(), q[1].clone(), q[2].clone(), k[2].clone()])
                }
                (Some(q), Some(k)) if attrs.q_num_heads > 0 => Some(vec![
                    q[0].clone(),
                    Dim::known(attrs.q_num_heads),
                    q[1].clone(),
                    k[2].clone(),
                ]),
                _ => dynamic(4),
            };
            vec![
                Inferred::tensor(dtype, y),
                Inferred::tensor(dtype, present_key),
                Inferred::tensor(dtype, present_value),
                Inferred::tensor(dtype, scores),
            ]
        }
        Op::RmsNormalization { .. }
        | Op::RotaryEmbedding { .. }
        | Op::Hardmax { .. }
        | Op::LpNormalization { .. }
        | Op::MeanVarianceNormalization { .. }
        | Op::CumProd { .. }
        | Op::ReverseSequence { .. } => vec![same(ctx, 0)?],
        Op::ScatterElements { .. } => vec![same(ctx, 0)?],
        Op::TensorScatter { axis, mode } => {
            if !matches!(mode.as_str(), "linear" | "circular") {
                return Err(ctx.err(format!("mode '{mode}' is not linear or circular")));
            }
            if let (Some(cache), Some(update)) = (ctx.shape(0)?, ctx.shape(1)?) {
                let rank = cache.len() as i64;
                let a = if *axis < 0 { axis + rank } else { *axis };
                if !(1..rank).contains(&a) {
                    return Err(ctx.err(format!(
                        "axis {axis} is not a sequence axis of a rank-{rank} cache"
                    )));
                }
                let fits = update.len() == cache.len()
                    && cache.iter().zip(update).enumerate().all(|(k, (c, u))| {
                        k as i64 == a || c.as_const().is_none() || u.as_const().is_none() || c == u
                    });
                if !fits {
                    return Err(ctx.err(format!(
                        "update {} does not fit cache {} outside axis {a}",
                        format_shape(&Some(update.clone())),
                        format_shape(&Some(cache.clone()))
                    )));
                }
            }
            vec![same(ctx, 0)?]
        }
        Op::OneHot { axis } => {
            let depth = known_scalar(ctx, 1).map_or(Dim::Dynamic, Dim::known);
            let shape = ctx.shape(0)?.as_ref().map(|dims| {
                let rank = dims.len() as i64 + 1;
                let a = if *axis < 0 { axis + rank } else { *axis }.clamp(0, rank - 1) as usize;
                let mut out = dims.clone();
                out.insert(a, depth);
                out
            });
            vec![Inferred::tensor(ctx.dtype(2)?, shape)]
        }
        Op::SpaceToDepth { blocksize, .. } => {
            let b = Dim::known(*blocksize);
            let shape = ctx.dims(0, 4)?.map(|x| {
                vec![
                    x[0].clone(),
                    x[1].clone() * b.clone() * b.clone(),
                    x[2].floor_div(&b),
                    x[3].floor_div(&b),
                ]
            });
            vec![Inferred::tensor(ctx.dtype(0)?, shape)]
        }
        Op::NonZero => {
            let rank = ctx
                .shape(0)?
                .as_ref()
                .map_or(Dim::Dynamic, |d| Dim::known(d.len() as i64));
            vec![Inferred::tensor(DType::I64, Some(vec![rank, Dim::Dynamic]))]
        }
        Op::Compress { axis } => {
            let shape = match (axis, ctx.shape(0)?) {
                (None, _) => dynamic(1),
                (Some(_), Some(dims)) => dynamic(dims.len()),
                (Some(_), None) => None,
            };
            vec![Inferred::tensor(ctx.dtype(0)?, shape)]
        }
        Op::EyeLike { dtype, .. } => vec![Inferred::tensor(
            dtype.unwrap_or(ctx.dtype(0)?),
            ctx.shape(0)?.clone(),
        )],
        Op::Rnn(attrs) => recurrent(ctx, attrs, 1)?.into_iter().take(2).collect(),
        Op::NonMaxSuppression { .. } => {
            vec![Inferred::tensor(
                DType::I64,
                Some(vec![Dim::Dynamic, Dim::known(3)]),
            )]
        }
        Op::GridSample { .. } => {
            let shape = match (ctx.dims(0, 3)?, ctx.dims(1, 3)?) {
                (Some(x), Some(g)) => {
                    let mut out = vec![x[0].clone(), x[1].clone()];
                    out.extend(g[1..g.len() - 1].iter().cloned());
                    Some(out)
                }
                _ => None,
            };
            vec![Inferred::tensor(ctx.dtype(0)?, shape)]
        }
        Op::LpPool { pool, .. } => vec![Inferred::tensor(ctx.dtype(0)?, pool_shape(ctx, pool)?)],
        Op::MaxUnpool {
            kernel_shape,
            pads,
            strides,
        } => {
            let shape = match ctx.known_i64s(2) {
                Some(dims) => Some(dims.into_iter().map(Dim::known).collect()),
                None => ctx.dims(0, 3)?.map(|x| {
                    let n = x.len() - 2;
                    let mut out = vec![x[0].clone(), x[1].clone()];
                    for i in 0..n {
                        let stride = strides.get(i).copied().unwrap_or(1);
                        let pad = pads.get(i).copied().unwrap_or(0)
                            + pads.get(i + n).copied().unwrap_or(0);
                        let k = kernel_shape.get(i).copied().unwrap_or(1);
                        out.push(
                            (x[i + 2].clone() - Dim::known(1)) * Dim::known(stride)
                                + Dim::known(k - pad),
                        );
                    }
                    out
                }),
            };
            vec![Inferred::tensor(ctx.dtype(0)?, shape)]
        }
        Op::MaxRoiPool { pooled_shape, .. } => {
            let shape = match (ctx.dims(0, 4)?, ctx.dims(1, 2)?) {
                (Some(x), Some(r)) => {
                    let mut out = vec![r[0].clone(), x[1].clone()];
                    out.extend(pooled_shape.iter().map(|&p| Dim::known(p)));
                    Some(out)
                }
                _ => None,
            };
            vec![Inferred::tensor(ctx.dtype(0)?, shape)]
        }
        Op::RoiAlign {
            output_height,
            output_width,
            ..
        } => {
            let shape = match (ctx.dims(0, 4)?, ctx.dims(1, 2)?) {
                (Some(x), Some(r)) => Some(vec![
                    r[0].clone(),
                    x[1].clone(),
                    Dim::known(*output_height),
                    Dim::known(*output_width),
                ]),
                _ => None,
            };
            vec![Inferred::tensor(ctx.dtype(0)?, shape)]
        }
        Op::MatMulInteger => vec![Inferred::tensor(DType::I32, matmul_shape(ctx)?)],
        Op::ConvInteger(attrs) => {
            super::rules::nchw_only(ctx, attrs)?;
            let inputs = [ctx.opt(0).cloned(), ctx.opt(1).cloned()];
            vec![Inferred::tensor(
                DType::I32,
                conv_shape(&remap(ctx, &inputs), attrs)?,
            )]
        }
        Op::QLinearMatMul => {
            let inputs = [ctx.opt(0).cloned(), ctx.opt(3).cloned()];
            vec![Inferred::tensor(
                ctx.dtype(7)?,
                matmul_shape(&remap(ctx, &inputs))?,
            )]
        }
        Op::QLinearConv(attrs) => {
            super::rules::nchw_only(ctx, attrs)?;
            let inputs = [ctx.opt(0).cloned(), ctx.opt(3).cloned()];
            vec![Inferred::tensor(
                ctx.dtype(7)?,
                conv_shape(&remap(ctx, &inputs), attrs)?,
            )]
        }
        Op::DynamicQuantizeLinear => vec![
            Inferred::tensor(DType::U8, ctx.shape(0)?.clone()),
            scalar(DType::F32),
            scalar(DType::U8),
        ],
        Op::Unique { axis, .. } => {
            let values = match (axis, ctx.shape(0)?) {
                (None, _) => dynamic(1),
                (Some(_), Some(dims)) => dynamic(dims.len()),
                (Some(_), None) => None,
            };
            vec![
                Inferred::tensor(ctx.dtype(0)?, values),
                Inferred::tensor(DType::I64, dynamic(1)),
                Inferred::tensor(DType::I64, dynamic(1)),
                Inferred::tensor(DType::I64, dynamic(1)),
            ]
        }
        Op::Col2Im { .. } => {
            let block: Option<i64> = ctx.known_i64s(2).map(|b| b.iter().product());
            let shape = match (ctx.dims(0, 3)?, ctx.known_i64s(1)) {
                (Some(x), Some(image)) => {
                    let channels = match block {
                        Some(b) => x[1].div_exact(&Dim::known(b)).unwrap_or(Dim::Dynamic),
                        None => Dim::Dynamic,
                    };
                    let mut out = vec![x[0].clone(), channels];
                    out.extend(image.into_iter().map(Dim::known));
                    Some(out)
                }
                (Some(x), None) => dynamic(x.len()),
                _ => None,
            };
            vec![Inferred::tensor(ctx.dtype(0)?, shape)]
        }
        Op::CenterCropPad { axes } => {
            let shape = match (ctx.shape(0)?, ctx.known_i64s(1)) {
                (Some(dims), Some(target)) => {
                    let rank = dims.len() as i64;
                    let axes: Vec<usize> = if axes.is_empty() {
                        (0..dims.len()).collect()
                    } else {
                        axes.iter()
                            .map(|&a| if a < 0 { a + rank } else { a } as usize)
                            .collect()
                    };
                    let mut out = dims.clone();
                    for (k, &a) in axes.iter().enumerate() {
                        if let (Some(slot), Some(&t)) = (out.get_mut(a), target.get(k)) {
                            *slot = Dim::known(t);
                        }
                    }
                    Some(out)
                }
                (Some(dims), None) => dynamic(dims.len()),
                (None, _) => None,
            };
            vec![Inferred::tensor(ctx.dtype(0)?, shape)]
        }
        Op::AffineGrid { .. } => {
            let shape = match ctx.known_i64s(1) {
                Some(size) if size.len() >= 4 => {
                    let mut out = vec![Dim::known(size[0])];
                    out.extend(size[2..].iter().map(|&d| Dim::known(d)));
                    out.push(Dim::known(size.len() as i64 - 2));
                    Some(out)
                }
                _ => match ctx.shape(1)? {
                    Some(d) if d.len() == 1 => {
                        d[0].as_const().map(|n| vec![Dim::Dynamic; n as usize])
                    }
                    _ => None,
                },
            };
            vec![Inferred::tensor(ctx.dtype(0)?, shape)]
        }
        Op::DeformConv(attrs) => {
            let (x, offset) = (ctx.dims(0, 4)?, ctx.dims(2, 4)?);
            if let (Some(x), Some(offset)) = (x, offset) {
                if x.len() != 4 || offset.len() != 4 {
                    return Err(ctx.err("only 2-D deformable convolutions are defined"));
                }
            }
            let inputs = [ctx.opt(0).cloned(), ctx.opt(1).cloned()];
            vec![Inferred::tensor(
                ctx.dtype(0)?,
                conv_shape(&remap(ctx, &inputs), &attrs.conv())?,
            )]
        }
        Op::CausalConvWithState { .. } => {
            let dtype = ctx.dtype(0)?;
            let state = match (rank3(ctx, 0)?, rank3(ctx, 1)?) {
                (Some(x), Some(w)) => Some(vec![
                    x[0].clone(),
                    x[1].clone(),
                    w[2].clone() - Dim::known(1),
                ]),
                _ => None,
            };
            vec![
                Inferred::tensor(dtype, ctx.shape(0)?.clone()),
                Inferred::tensor(dtype, state),
            ]
        }
        Op::LinearAttention {
            q_num_heads,
            kv_num_heads,
            ..
        } => {
            let dtype = ctx.dtype(0)?;
            let state_dtype = match ctx.opt(3) {
                Some(_) => ctx.dtype(3)?,
                None => dtype,
            };
            let per_head = |dims: &[Dim], heads: i64, what: &str| -> Result<Option<Dim>> {
                let last = &dims[2];
                match last.div_exact(&Dim::known(heads)) {
                    Some(d) => Ok(Some(d)),
                    None if last.is_const() => Err(ctx.err(format!(
                        "{what}'s last dim {last} is not a multiple of its {heads} heads"
                    ))),
                    None => Ok(None),
                }
            };
            let (q, v) = (rank3(ctx, 0)?, rank3(ctx, 2)?);
            let d_k = q
                .map(|q| per_head(q, *q_num_heads, "query"))
                .transpose()?
                .flatten();
            let d_v = v
                .map(|v| per_head(v, *kv_num_heads, "value"))
                .transpose()?
                .flatten();
            let output = match (q, &d_v) {
                (Some(q), Some(d_v)) => Some(vec![
                    q[0].clone(),
                    q[1].clone(),
                    d_v.clone() * Dim::known(*q_num_heads),
                ]),
                _ => None,
            };
            let state = match (q, d_k, d_v) {
                (Some(q), Some(d_k), Some(d_v)) => {
                    Some(vec![q[0].clone(), Dim::known(*kv_num_heads), d_k, d_v])
                }
                _ => None,
            };
            vec![
                Inferred::tensor(dtype, output),
                Inferred::tensor(state_dtype, state),
            ]
        }
        Op::NegativeLogLikelihoodLoss { reduction, .. } => {
            vec![loss(ctx, reduction)?]
        }
        Op::SoftmaxCrossEntropyLoss { reduction, .. } => {
            vec![
                loss(ctx, reduction)?,
                Inferred::tensor(ctx.dtype(0)?, ctx.shape(0)?.clone()),
            ]
        }
        Op::Det => {
            let shape = ctx.dims(0, 2)?.map(|d| d[..d.len() - 2].to_vec());
            vec![Inferred::tensor(ctx.dtype(0)?, shape)]
        }
        Op::Optional { ty } => {
            let inner = match (ctx.opt(0), ty) {
                (Some(v), _) => v.ty.clone(),
                (None, Some(ty)) => ty.clone(),
                (None, None) => return Err(ctx.err("an empty Optional needs its 'type' attribute")),
            };
            vec![other(ValueType::Optional(Box::new(inner)))]
        }
        Op::OptionalHasElement => vec![scalar(DType::Bool)],
        Op::OptionalGetElement => {
            let ty = match &ctx.input(0)?.ty {
                ValueType::Optional(inner) => (**inner).clone(),
                ty => ty.clone(),
            };
            vec![other(ty)]
        }
        Op::SequenceConstruct => {
            let mut merged: Option<TensorType> = None;
            for i in 0..ctx.inputs.len() {
                let t = ctx.tensor(i)?;
                merged = Some(match merged {
                    None => t.clone(),
                    Some(m) => merge_tensor(&m, t),
                });
            }
            let elem = merged.ok_or_else(|| ctx.err("needs at least one input"))?;
            vec![other(ValueType::Sequence(Box::new(ValueType::Tensor(
                elem,
            ))))]
        }
        Op::SequenceEmpty { dtype } => vec![other(ValueType::Sequence(Box::new(
            ValueType::Tensor(TensorType {
                dtype: *dtype,
                shape: None,
            }),
        )))],
        Op::SequenceInsert => {
            let elem = sequence_element(ctx, 0)?;
            let tensor = ctx.tensor(1)?;
            let merged = match &elem {
                ValueType::Tensor(t) if t.shape.is_none() => tensor.clone(),
                ValueType::Tensor(t) => merge_tensor(t, tensor),
                _ => tensor.clone(),
            };
            vec![other(ValueType::Sequence(Box::new(ValueType::Tensor(
                merged,
            ))))]
        }
        Op::SequenceAt => vec![other(sequence_element(ctx, 0)?)],
        Op::SequenceErase => vec![other(ctx.input(0)?.ty.clone())],
        Op::SequenceLength => vec![scalar(DType::I64)],
        Op::SplitToSequence { axis, keepdims } => {
            let shape = ctx.shape(0)?.as_ref().map(|dims| {
                let rank = dims.len() as i64;
                let a = if *axis < 0 { axis + rank } else { *axis }.clamp(0, (rank - 1).max(0))
                    as usize;
                let mut out = dims.clone();
                if ctx.opt(1).is_none() && !keepdims {
                    out.remove(a);
                } else if let Some(split) = ctx.known_i64s(1).filter(|s| {
                    s.len() == 1
                        && ctx
                            .shape(1)
                            .ok()
                            .and_then(|s| s.as_ref())
                            .is_some_and(|d| d.is_empty())
                }) {
                    out[a] = Dim::known(split[0]);
                } else if ctx.opt(1).is_none() {
                    out[a] = Dim::known(1);
                } else {
                    out[a] = Dim::Dynamic;
                }
                out
            });
            let elem = TensorType {
                dtype: ctx.dtype(0)?,
                shape,
            };
            vec![other(ValueType::Sequence(Box::new(ValueType::Tensor(
                elem,
            ))))]
        }
        Op::ConcatFromSequence { axis, new_axis } => {
            let elem = sequence_element(ctx, 0)?;
            let ValueType::Tensor(t) = elem else {
                return Err(ctx.err("the sequence must hold tensors"));
            };
            let shape = t.shape.map(|mut dims| {
                let rank = dims.len() as i64 + i64::from(*new_axis);
                let a =
                    if *axis < 0 { axis + rank } else { *axis }.clamp(0, rank.max(1) - 1) as usize;
                if *new_axis {
                    dims.insert(a, Dim::Dynamic);
                } else if let Some(d) = dims.get_mut(a) {
                    *d = Dim::Dynamic;
                }
                dims
            });
            vec![Inferred::tensor(t.dtype, shape)]
        }
        Op::Window {
            output_datatype, ..
        } => {
            let len = known_scalar(ctx, 0).map_or(Dim::Dynamic, Dim::known);
            vec![Inferred::tensor(*output_datatype, Some(vec![len]))]
        }
        Op::Dft { inverse, onesided } => {
            let shape = ctx.shape(0)?.as_ref().map(|dims| {
                let rank = dims.len() as i64;
                let axis = known_scalar(ctx, 2).unwrap_or(-2);
                let a = if axis < 0 { axis + rank } else { axis }.clamp(0, rank - 1) as usize;
                let mut out = dims.clone();
                let real_inverse = *inverse && *onesided;
                let n = match ctx.opt(1) {
                    Some(_) => known_scalar(ctx, 1).map_or(Dim::Dynamic, Dim::known),
                    None if real_inverse => (dims[a].clone() - Dim::known(1)) * Dim::known(2),
                    None => dims[a].clone(),
                };
                out[a] = if *onesided && !*inverse {
                    n.floor_div(&Dim::known(2)) + Dim::known(1)
                } else {
                    n
                };
                if let Some(last) = out.last_mut() {
                    *last = Dim::known(if real_inverse { 1 } else { 2 });
                }
                out
            });
            vec![Inferred::tensor(ctx.dtype(0)?, shape)]
        }
        Op::Stft { onesided } => {
            let shape = ctx.dims(0, 3)?.map(|x| {
                let step = known_scalar(ctx, 1);
                let length = known_scalar(ctx, 3).or_else(|| {
                    ctx.shape(2)
                        .ok()
                        .and_then(|s| s.as_ref())
                        .and_then(|w| w.first().and_then(Dim::as_const))
                });
                let (frames, bins) = match (step, length, x[1].as_const()) {
                    (Some(s), Some(l), Some(total)) if s > 0 => (
                        Dim::known((total - l) / s + 1),
                        Dim::known(if *onesided { l / 2 + 1 } else { l }),
                    ),
                    _ => (Dim::Dynamic, Dim::Dynamic),
                };
                vec![x[0].clone(), frames, bins, Dim::known(2)]
            });
            vec![Inferred::tensor(ctx.dtype(0)?, shape)]
        }
        Op::MelWeightMatrix { output_datatype } => {
            let bins = known_scalar(ctx, 0).map_or(Dim::Dynamic, Dim::known);
            let dft = known_scalar(ctx, 1).map_or(Dim::Dynamic, |n| Dim::known(n / 2 + 1));
            vec![Inferred::tensor(*output_datatype, Some(vec![dft, bins]))]
        }
        other => return Err(ctx.err(format!("no inference rule for {}", other.name()))),
    })
}
