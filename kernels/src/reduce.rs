//! Reductions and normalizations: Reduce*, Softmax/LogSoftmax, LayerNorm, RMSNorm,
//! GroupNorm/InstanceNorm, global pooling, LRN and inference BatchNorm, each with the fused
//! elementwise producers (prologue) and consumers (epilogue) the optimizer attached.
//!
//! A row-wise op views its input as `[outer, len, inner]` and gives each block one
//! `(outer, inner)` row: the block's threads stride over the row and combine partial results
//! with warp shuffles and shared memory. Statistics are computed in FP32 in two passes (mean,
//! then squared deviations), as the CPU reference does.
//!
//! Reference: the CPU executor's reduce, softmax and normalization ops.

use crate::cg::{Cg, Combine, Gen, Val};
use crate::elementwise::{layout, offsets, Layout};
use crate::expr::{eval_body, is_scalar_op};
use crate::{product, resolve_axis, Family, Generated, KernelError, Launch, Request};
use inkwell::context::Context;
use inkwell::values::{FloatValue, IntValue};
use inkwell::IntPredicate;
use sparkc_ir::infer::broadcast_shapes;
use sparkc_ir::op::Reduction;
use sparkc_ir::{BodyNode, Dim, Op, Operand, Shape};

/// Threads per block.
const BLOCK: u32 = 256;

/// True for the ops this family anchors on.
pub fn handles(op: &Op) -> bool {
    matches!(
        op,
        Op::Reduce { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::LayerNormalization { .. }
            | Op::RmsNormalization { .. }
            | Op::GroupNormalization { .. }
            | Op::InstanceNormalization { .. }
            | Op::GlobalAveragePool
            | Op::GlobalMaxPool
            | Op::Lrn { .. }
            | Op::BatchNormalization {
                training_mode: false,
                ..
            }
    )
}

/// The shape of body node `j`'s value, broadcasting the elementwise nodes up to it.
fn prologue_shape(req: &Request, body: &[BodyNode], j: usize) -> Gen<Vec<Dim>> {
    let mut shapes: Vec<Vec<Dim>> = Vec::new();
    for node in &body[..=j] {
        let operands: Vec<Shape> = node
            .args
            .iter()
            .flatten()
            .map(|arg| match arg {
                Operand::Input(i) => Ok(Some(req.input(*i)?.shape.clone())),
                Operand::Node(k) => Ok(Some(shapes[*k].clone())),
            })
            .collect::<Gen<_>>()?;
        let refs: Vec<&Shape> = operands.iter().collect();
        let shape = broadcast_shapes(&refs)
            .map_err(KernelError::Unsupported)?
            .unwrap_or_default();
        shapes.push(shape);
    }
    Ok(shapes.pop().unwrap_or_default())
}

/// Which of `n` inputs `body` reads.
pub(crate) fn inputs_used(body: &[BodyNode], n: usize) -> Vec<bool> {
    let mut used = vec![false; n];
    for arg in body.iter().flat_map(|b| b.args.iter().flatten()) {
        if let Operand::Input(i) = arg {
            if *i < n {
                used[*i] = true;
            }
        }
    }
    used
}

/// Reads a body's value at one element: the inputs it uses, broadcast to `shape`.
pub(crate) struct Reader {
    body: Vec<BodyNode>,
    lay: Layout,
}

impl Reader {
    pub(crate) fn new(req: &Request, body: &[BodyNode], shape: &[Dim]) -> Gen<Reader> {
        let used = inputs_used(body, req.inputs.len());
        let shapes: Vec<Option<&[Dim]>> = req
            .inputs
            .iter()
            .enumerate()
            .map(|(i, t)| match t {
                Some(t) if used[i] => Some(t.shape.as_slice()),
                _ => None,
            })
            .collect();
        Ok(Reader {
            body: body.to_vec(),
            lay: layout(shape, &shapes)?,
        })
    }

    pub(crate) fn eval<'ctx>(
        &self,
        cg: &Cg<'ctx>,
        req: &Request,
        index: IntValue<'ctx>,
        extra: Option<Val<'ctx>>,
    ) -> Gen<Val<'ctx>> {
        let offs = offsets(cg, &self.lay, index)?;
        let mut values = Vec::with_capacity(offs.len());
        for (slot, off) in offs.iter().enumerate() {
            values.push(match off {
                Some(off) => {
                    let t = req.input(slot)?;
                    Some(cg.load(t.dtype, cg.buffer(req.input_param(slot)), *off)?)
                }
                None => None,
            });
        }
        let n = req.inputs.len();
        eval_body(cg, &self.body, |i| {
            if i == n {
                return extra.ok_or_else(|| KernelError::Unsupported("no anchor value".into()));
            }
            values
                .get(i)
                .copied()
                .flatten()
                .ok_or_else(|| KernelError::Unsupported(format!("input {i} is missing")))
        })
    }
}

/// The anchor and the readers around it.
struct Parts<'b> {
    anchor: &'b BodyNode,
    source: Reader,
    sink: Option<Reader>,
    x_shape: Vec<Dim>,
}

/// A body cut at its reduction: the anchor's index, a body evaluating its data operand, the
/// epilogue (reading the anchor's value as pseudo-input `inputs.len()`), and the data's shape.
pub(crate) struct Cut {
    pub(crate) anchor: usize,
    pub(crate) source: Vec<BodyNode>,
    pub(crate) epilogue: Vec<BodyNode>,
    pub(crate) x_shape: Vec<Dim>,
}

/// The fused node's input slot that operand `k` of `node` reads, when it reads one.
pub(crate) fn operand_input(node: &BodyNode, k: usize) -> Option<usize> {
    match node.args.get(k).copied().flatten() {
        Some(Operand::Input(i)) => Some(i),
        _ => None,
    }
}

impl Cut {
    /// Readers of the anchor's data (through the prologue) and of the epilogue (none when the
    /// anchor's value is stored as is), over an output of `out_shape`.
    pub(crate) fn readers(
        &self,
        req: &Request,
        out_shape: &[Dim],
    ) -> Gen<(Reader, Option<Reader>)> {
        let source = Reader::new(req, &self.source, &self.x_shape)?;
        let sink = if self.epilogue.is_empty() {
            None
        } else {
            Some(Reader::new(req, &self.epilogue, out_shape)?)
        };
        Ok((source, sink))
    }
}

/// The body after anchor `a` on its own: the anchor's value becomes pseudo-input `inputs`
/// (the fused node's input count), later nodes are renumbered after the nodes before the
/// anchor that they read without going through it (side computations on the fused node's
/// inputs, which the fusion may order before the anchor), which come first.
pub(crate) fn epilogue(body: &[BodyNode], a: usize, inputs: usize) -> Gen<Vec<BodyNode>> {
    let mut side = vec![false; a];
    for node in &body[a + 1..] {
        for arg in node.args.iter().flatten() {
            if let Operand::Node(k) = *arg {
                if k < a {
                    side[k] = true;
                }
            }
        }
    }
    for k in (0..a).rev() {
        if side[k] {
            for arg in body[k].args.iter().flatten() {
                if let Operand::Node(j) = *arg {
                    side[j] = true;
                }
            }
        }
    }
    let order: Vec<usize> = (0..a).filter(|&k| side[k]).collect();
    let first_after = order.len();
    let remap = |arg: &Option<Operand>| match arg {
        Some(Operand::Node(k)) if *k == a => Some(Operand::Input(inputs)),
        Some(Operand::Node(k)) if *k > a => Some(Operand::Node(first_after + k - a - 1)),
        Some(Operand::Node(k)) => order.iter().position(|j| j == k).map(Operand::Node),
        other => *other,
    };
    Ok(order
        .iter()
        .map(|&k| &body[k])
        .chain(&body[a + 1..])
        .map(|node| BodyNode {
            op: node.op.clone(),
            args: node.args.iter().map(remap).collect(),
        })
        .collect())
}

pub(crate) fn cut(req: &Request, body: &[BodyNode], is_anchor: fn(&Op) -> bool) -> Gen<Cut> {
    let a = body
        .iter()
        .position(|n| is_anchor(&n.op))
        .ok_or_else(|| KernelError::Unsupported("no anchor op in the body".into()))?;
    if let Some((_, bad)) = body
        .iter()
        .enumerate()
        .find(|(k, n)| *k != a && !is_scalar_op(&n.op))
    {
        return Err(KernelError::Unsupported(format!(
            "{} cannot be fused around a reduction or product",
            bad.op.name()
        )));
    }
    let anchor = &body[a];
    if anchor
        .args
        .iter()
        .skip(1)
        .flatten()
        .any(|arg| matches!(arg, Operand::Node(_)))
    {
        return Err(KernelError::Unsupported(
            "an anchor's parameters must be inputs of the fused node".into(),
        ));
    }
    let n = req.inputs.len();
    let (source, x_shape) = match anchor.args.first().copied().flatten() {
        Some(Operand::Input(i)) => (
            vec![BodyNode {
                op: Op::Unary(sparkc_ir::op::Unary::Identity),
                args: vec![Some(Operand::Input(i))],
            }],
            req.input(i)?.shape.clone(),
        ),
        Some(Operand::Node(j)) => (body[..=j].to_vec(), prologue_shape(req, body, j)?),
        None => return Err(KernelError::Unsupported("a reduction without data".into())),
    };
    Ok(Cut {
        anchor: a,
        source,
        epilogue: epilogue(body, a, n)?,
        x_shape,
    })
}

/// Generates the kernel of a reduction or normalization node, fused or not.
pub fn generate<'ctx>(cx: &'ctx Context, req: &Request, body: &[BodyNode]) -> Gen<Generated<'ctx>> {
    let cut = cut(req, body, handles)?;
    let (source, sink) = cut.readers(req, &req.outputs[0].shape)?;
    let parts = Parts {
        anchor: &body[cut.anchor],
        source,
        sink,
        x_shape: cut.x_shape.clone(),
    };
    let mut cg = req.begin(cx, BLOCK);
    let (variant, grid) = lower_anchor(&mut cg, req, &parts)?;
    let covers = body.iter().map(|n| n.op.name()).collect();
    let launch = Launch {
        dynamic_shared_bytes: 0,
        grid,
        block: BLOCK,
        shared_bytes: 33 * 4,
    };
    let info = req.describe(Family::Reduction, variant, covers, launch);
    Ok(Generated {
        info,
        module: cg.finish()?,
    })
}

fn load_x<'ctx>(
    cg: &Cg<'ctx>,
    req: &Request,
    parts: &Parts,
    p: IntValue<'ctx>,
) -> Gen<FloatValue<'ctx>> {
    parts.source.eval(cg, req, p, None)?.float(cg)
}

fn store_y<'ctx>(
    cg: &Cg<'ctx>,
    req: &Request,
    parts: &Parts,
    q: IntValue<'ctx>,
    y: FloatValue<'ctx>,
) -> Gen<()> {
    let out = &req.outputs[0];
    let v = match &parts.sink {
        None => Val::F(y),
        Some(sink) => sink.eval(cg, req, q, Some(Val::F(y)))?,
    };
    cg.store(out.dtype, cg.buffer(0), q, v)
}

fn param<'ctx>(
    cg: &Cg<'ctx>,
    req: &Request,
    parts: &Parts,
    k: usize,
    index: IntValue<'ctx>,
) -> Gen<Option<FloatValue<'ctx>>> {
    match parts.anchor.args.get(k).copied().flatten() {
        Some(Operand::Input(i)) => {
            let t = req.input(i)?;
            let n = cg.product(&t.shape)?;
            let idx = cg.rem(index, n)?;
            Ok(Some(
                cg.load(t.dtype, cg.buffer(req.input_param(i)), idx)?
                    .float(cg)?,
            ))
        }
        _ => Ok(None),
    }
}

/// Row geometry: `[outer, len, inner]`.
struct Rows {
    outer: Dim,
    len: Dim,
    inner: Dim,
}

fn rows_of(req: &Request, parts: &Parts) -> Gen<Rows> {
    let xs = &parts.x_shape;
    let r = xs.len();
    let split3 = |a: usize, b: usize| Rows {
        outer: product(&xs[..a]),
        len: product(&xs[a..b]),
        inner: product(&xs[b..]),
    };
    Ok(match &parts.anchor.op {
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            let a = resolve_axis(*axis, r)?;
            split3(a, a + 1)
        }
        Op::LayerNormalization { axis, .. } | Op::RmsNormalization { axis, .. } => {
            split3(resolve_axis(*axis, r)?, r)
        }
        Op::GlobalAveragePool | Op::GlobalMaxPool | Op::InstanceNormalization { .. } => {
            split3(2.min(r), r)
        }
        Op::GroupNormalization { num_groups, .. } => {
            if r < 2 {
                return Err(KernelError::Unsupported(
                    "GroupNormalization needs [N, C, ...]".into(),
                ));
            }
            let g = Dim::known(*num_groups);
            let per_group = xs[1].div_exact(&g).ok_or_else(|| {
                KernelError::Unsupported(format!(
                    "{} channels do not split into {num_groups} groups",
                    xs[1]
                ))
            })?;
            Rows {
                outer: xs[0].clone() * g,
                len: per_group * product(&xs[2..]),
                inner: Dim::known(1),
            }
        }
        Op::Reduce {
            noop_with_empty_axes,
            ..
        } => {
            let axes = match parts.anchor.args.get(1).copied().flatten() {
                Some(Operand::Input(i)) => req.known_ints(i)?.to_vec(),
                Some(Operand::Node(_)) => {
                    return Err(KernelError::Unsupported(
                        "reduction axes must be constants".into(),
                    ))
                }
                None => Vec::new(),
            };
            if axes.is_empty() && *noop_with_empty_axes {
                return Err(KernelError::Unsupported(
                    "a reduction over no axes is an identity; the optimizer removes it".into(),
                ));
            }
            let mut axes: Vec<usize> = if axes.is_empty() {
                (0..r).collect()
            } else {
                axes.iter()
                    .map(|&a| resolve_axis(a, r))
                    .collect::<Gen<_>>()?
            };
            axes.sort_unstable();
            axes.dedup();
            // A scalar has no axes: one row of one element.
            let (a, b) = match (axes.first(), axes.last()) {
                (Some(&first), Some(&last)) => (first, last + 1),
                _ => (0, 0),
            };
            if b - a != axes.len() {
                return Err(KernelError::Unsupported(format!(
                    "reducing non-adjacent axes {axes:?} needs a transpose first"
                )));
            }
            split3(a, b)
        }
        other => {
            return Err(KernelError::Unsupported(format!(
                "{} is not a row reduction",
                other.name()
            )))
        }
    })
}

fn lower_anchor<'ctx>(cg: &mut Cg<'ctx>, req: &Request, parts: &Parts) -> Gen<(&'static str, Dim)> {
    match &parts.anchor.op {
        Op::Lrn { .. } | Op::BatchNormalization { .. } => {
            pointwise(cg, req, parts)?;
            return Ok((
                "pointwise",
                product(&parts.x_shape).ceil_div(&Dim::known(BLOCK as i64)),
            ));
        }
        _ => {}
    }
    let rows = rows_of(req, parts)?;
    let units_dim = rows.outer.clone() * rows.inner.clone();
    let (len, inner) = (cg.dim(&rows.len)?, cg.dim(&rows.inner)?);
    let units = cg.dim(&units_dim)?;
    let op = parts.anchor.op.clone();
    cg.for_each_block_unit(units, |cg, unit| {
        let o = cg.div(unit, inner)?;
        let i = cg.rem(unit, inner)?;
        let base = cg.add(cg.mul(cg.mul(o, len)?, inner)?, i)?;
        let at = |cg: &Cg<'ctx>, j: IntValue<'ctx>| -> Gen<IntValue<'ctx>> {
            cg.add(base, cg.mul(j, inner)?)
        };
        match &op {
            Op::Softmax { .. } | Op::LogSoftmax { .. } => {
                let max = row_fold(cg, req, parts, len, &at, Combine::Max, |_, x, _| Ok(x))?;
                let sum = row_fold(cg, req, parts, len, &at, Combine::Sum, |cg, x, _| {
                    cg.exp(cg.fsub(x, max)?)
                })?;
                let log = matches!(op, Op::LogSoftmax { .. });
                let log_sum = cg.log(sum)?;
                cg.for_each_block_item(len, |cg, j| {
                    let p = at(cg, j)?;
                    let x = load_x(cg, req, parts, p)?;
                    let shifted = cg.fsub(x, max)?;
                    let y = if log {
                        cg.fsub(shifted, log_sum)?
                    } else {
                        cg.fdiv(cg.exp(shifted)?, sum)?
                    };
                    store_y(cg, req, parts, p, y)
                })
            }
            Op::LayerNormalization { epsilon, .. }
            | Op::InstanceNormalization { epsilon }
            | Op::GroupNormalization { epsilon, .. }
            | Op::RmsNormalization { epsilon, .. } => {
                let rms = matches!(op, Op::RmsNormalization { .. });
                let lenf = cg.itof(len)?;
                let mean = if rms {
                    cg.f(0.0)
                } else {
                    let s = row_fold(cg, req, parts, len, &at, Combine::Sum, |_, x, _| Ok(x))?;
                    cg.fdiv(s, lenf)?
                };
                let sq = row_fold(cg, req, parts, len, &at, Combine::Sum, |cg, x, _| {
                    let d = cg.fsub(x, mean)?;
                    cg.fmul(d, d)
                })?;
                let var = cg.fdiv(sq, lenf)?;
                let inv = cg.fdiv(
                    cg.f(1.0),
                    cg.fcall1("llvm.sqrt.f32", cg.fadd(var, cg.f(*epsilon as f64))?)?,
                )?;
                if req.outputs.len() > 1 && !rms {
                    let t0 = cg.icmp(IntPredicate::EQ, cg.tid()?, cg.c(0))?;
                    cg.if_then(t0, |cg| {
                        cg.store(req.outputs[1].dtype, cg.buffer(1), unit, Val::F(mean))?;
                        if req.outputs.len() > 2 {
                            cg.store(req.outputs[2].dtype, cg.buffer(2), unit, Val::F(inv))?;
                        }
                        Ok(())
                    })?;
                }
                let channel_of = channel_index(cg, req, parts)?;
                cg.for_each_block_item(len, |cg, j| {
                    let p = at(cg, j)?;
                    let x = load_x(cg, req, parts, p)?;
                    let mut y = cg.fmul(cg.fsub(x, mean)?, inv)?;
                    let k = channel_of(cg, unit, j)?;
                    if let Some(s) = param(cg, req, parts, 1, k)? {
                        y = cg.fmul(y, s)?;
                    }
                    if !rms {
                        if let Some(b) = param(cg, req, parts, 2, k)? {
                            y = cg.fadd(y, b)?;
                        }
                    }
                    store_y(cg, req, parts, p, y)
                })
            }
            Op::GlobalAveragePool | Op::GlobalMaxPool | Op::Reduce { .. } => {
                let kind = match &op {
                    Op::GlobalAveragePool => Reduction::Mean,
                    Op::GlobalMaxPool => Reduction::Max,
                    Op::Reduce { kind, .. } => *kind,
                    _ => unreachable!("matched above"),
                };
                let y = reduce_row(cg, req, parts, len, &at, kind)?;
                let t0 = cg.icmp(IntPredicate::EQ, cg.tid()?, cg.c(0))?;
                cg.if_then(t0, |cg| store_y(cg, req, parts, unit, y))
            }
            other => Err(KernelError::Unsupported(format!(
                "{} has no row kernel",
                other.name()
            ))),
        }
    })?;
    Ok(("block-per-row", units_dim))
}

type ChannelFn<'a, 'ctx> =
    Box<dyn Fn(&Cg<'ctx>, IntValue<'ctx>, IntValue<'ctx>) -> Gen<IntValue<'ctx>> + 'a>;

/// Which element of a normalization's scale and bias applies to element `j` of row `unit`.
fn channel_index<'a, 'ctx: 'a>(
    cg: &Cg<'ctx>,
    req: &Request,
    parts: &Parts,
) -> Gen<ChannelFn<'a, 'ctx>> {
    let xs = &parts.x_shape;
    Ok(match &parts.anchor.op {
        Op::InstanceNormalization { .. } => {
            let c = cg.dim(&xs[1])?;
            Box::new(move |cg, unit, _| cg.rem(unit, c))
        }
        Op::GroupNormalization { num_groups, .. } => {
            let g = cg.c(*num_groups);
            let spatial = cg.dim(&product(&xs[2..]))?;
            let per_group = cg.div(cg.dim(&xs[1])?, g)?;
            let scale_numel = match parts.anchor.args.get(1).copied().flatten() {
                Some(Operand::Input(i)) => product(&req.input(i)?.shape).as_const(),
                _ => None,
            };
            if scale_numel == Some(*num_groups) && xs[1].as_const() != Some(*num_groups) {
                Box::new(move |cg, unit, _| cg.rem(unit, g))
            } else {
                Box::new(move |cg, unit, j| {
                    let group = cg.rem(unit, g)?;
                    cg.add(cg.mul(group, per_group)?, cg.div(j, spatial)?)
                })
            }
        }
        _ => Box::new(|_, _, j| Ok(j)),
    })
}

/// Folds `f(x)` over one row with `op`, across the block.
fn row_fold<'ctx>(
    cg: &mut Cg<'ctx>,
    req: &Request,
    parts: &Parts,
    len: IntValue<'ctx>,
    at: &dyn Fn(&Cg<'ctx>, IntValue<'ctx>) -> Gen<IntValue<'ctx>>,
    op: Combine,
    f: impl Fn(&Cg<'ctx>, FloatValue<'ctx>, IntValue<'ctx>) -> Gen<FloatValue<'ctx>>,
) -> Gen<FloatValue<'ctx>> {
    let init = cg.f(op.identity());
    let (start, step) = (cg.tid()?, cg.ntid()?);
    let acc = cg.fold_range(start, len, step, vec![init.into()], |cg, j, state| {
        let p = at(cg, j)?;
        let x = load_x(cg, req, parts, p)?;
        let v = f(cg, x, j)?;
        Ok(vec![cg.combine(op, state[0].into_float_value(), v)?.into()])
    })?;
    cg.block_reduce(acc[0].into_float_value(), op)
}

fn reduce_row<'ctx>(
    cg: &mut Cg<'ctx>,
    req: &Request,
    parts: &Parts,
    len: IntValue<'ctx>,
    at: &dyn Fn(&Cg<'ctx>, IntValue<'ctx>) -> Gen<IntValue<'ctx>>,
    kind: Reduction,
) -> Gen<FloatValue<'ctx>> {
    // The data must be float; the axes input is not data.
    let used = inputs_used(&parts.source.body, req.inputs.len());
    let integer_data = req
        .inputs
        .iter()
        .zip(used)
        .any(|(t, used)| used && t.as_ref().is_some_and(|t| !t.dtype.is_float()));
    if integer_data {
        return Err(KernelError::Unsupported(
            "integer reductions have no GPU kernel yet".into(),
        ));
    }
    Ok(match kind {
        Reduction::Sum => row_fold(cg, req, parts, len, at, Combine::Sum, |_, x, _| Ok(x))?,
        Reduction::Mean => {
            let s = row_fold(cg, req, parts, len, at, Combine::Sum, |_, x, _| Ok(x))?;
            cg.fdiv(s, cg.itof(len)?)?
        }
        Reduction::Max => row_fold(cg, req, parts, len, at, Combine::Max, |_, x, _| Ok(x))?,
        Reduction::Min => row_fold(cg, req, parts, len, at, Combine::Min, |_, x, _| Ok(x))?,
        Reduction::Prod => row_fold(cg, req, parts, len, at, Combine::Prod, |_, x, _| Ok(x))?,
        Reduction::L1 => row_fold(cg, req, parts, len, at, Combine::Sum, |cg, x, _| {
            cg.fcall1("llvm.fabs.f32", x)
        })?,
        Reduction::SumSquare | Reduction::L2 => {
            let s = row_fold(cg, req, parts, len, at, Combine::Sum, |cg, x, _| {
                cg.fmul(x, x)
            })?;
            if kind == Reduction::L2 {
                cg.fcall1("llvm.sqrt.f32", s)?
            } else {
                s
            }
        }
        Reduction::LogSum => {
            let s = row_fold(cg, req, parts, len, at, Combine::Sum, |_, x, _| Ok(x))?;
            cg.log(s)?
        }
        Reduction::LogSumExp => {
            let m = row_fold(cg, req, parts, len, at, Combine::Max, |_, x, _| Ok(x))?;
            let s = row_fold(cg, req, parts, len, at, Combine::Sum, |cg, x, _| {
                cg.exp(cg.fsub(x, m)?)
            })?;
            cg.fadd(cg.log(s)?, m)?
        }
    })
}

/// LRN and inference BatchNorm: one output element per item, reading a channel window or the
/// channel's statistics.
fn pointwise(cg: &mut Cg, req: &Request, parts: &Parts) -> Gen<()> {
    let xs = parts.x_shape.clone();
    if xs.len() < 2 {
        return Err(KernelError::Unsupported("needs [N, C, ...]".into()));
    }
    let n = cg.dim(&product(&xs))?;
    let c = cg.dim(&xs[1])?;
    let spatial = cg.dim(&product(&xs[2..]))?;
    let op = parts.anchor.op.clone();
    cg.for_each_thread_item(cg.c(0), n, |cg, p| {
        let ch = cg.rem(cg.div(p, spatial)?, c)?;
        let x = load_x(cg, req, parts, p)?;
        let y = match &op {
            Op::BatchNormalization { epsilon, .. } => {
                let get = |k| -> Gen<FloatValue> {
                    param(cg, req, parts, k, ch)?.ok_or_else(|| {
                        KernelError::Unsupported(format!("BatchNorm input {k} is missing"))
                    })
                };
                let (scale, bias, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
                let inv = cg.fdiv(
                    scale,
                    cg.fcall1("llvm.sqrt.f32", cg.fadd(var, cg.f(*epsilon as f64))?)?,
                )?;
                cg.fma(cg.fsub(x, mean)?, inv, bias)?
            }
            Op::Lrn {
                alpha,
                beta,
                bias,
                size,
            } => {
                let lo = cg.imax(cg.sub(ch, cg.c((size - 1) / 2))?, cg.c(0))?;
                let hi = cg.imin(
                    cg.add(ch, cg.c((size - 1) - (size - 1) / 2))?,
                    cg.sub(c, cg.c(1))?,
                )?;
                let hi = cg.add(hi, cg.c(1))?;
                let sq = cg.fold_range(lo, hi, cg.c(1), vec![cg.f(0.0).into()], |cg, k, s| {
                    let q = cg.add(p, cg.mul(cg.sub(k, ch)?, spatial)?)?;
                    let v = load_x(cg, req, parts, q)?;
                    Ok(vec![cg.fma(v, v, s[0].into_float_value())?.into()])
                })?;
                let scaled =
                    cg.fmul(sq[0].into_float_value(), cg.f(*alpha as f64 / *size as f64))?;
                let base = cg.fadd(cg.f(*bias as f64), scaled)?;
                cg.fdiv(x, cg.pow(base, cg.f(*beta as f64))?)?
            }
            other => {
                return Err(KernelError::Unsupported(format!(
                    "{} is not pointwise",
                    other.name()
                )))
            }
        };
        store_y(cg, req, parts, p, y)
    })?;
    Ok(())
}
