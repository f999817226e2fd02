//! Losses: `NegativeLogLikelihoodLoss`, and `SoftmaxCrossEntropyLoss` with its log-softmax over
//! the class axis written out. One thread per target (scores `[N, C, d...]`, targets
//! `[N, d...]`): per-target losses (`none`) over the whole grid; `sum` and `mean` in one block,
//! whose threads' partial sums of losses and weights are combined across it. A target outside
//! the classes (and not ignored) gets a NaN loss, so a bad label never reads out of bounds or
//! passes unnoticed. Reference: the CPU executor's `ops::loss`.

use crate::cg::{Cg, Combine, Gen, Val};
use crate::{Family, Generated, KernelError, Launch, Request};
use inkwell::context::Context;
use inkwell::values::{FloatValue, IntValue};
use inkwell::IntPredicate;
use sparkc_ir::{Dim, Op};

const BLOCK: u32 = 256;

/// True for the ops this family generates.
pub fn handles(op: &Op) -> bool {
    matches!(
        op,
        Op::NegativeLogLikelihoodLoss { .. } | Op::SoftmaxCrossEntropyLoss { .. }
    )
}

/// How the per-target losses become the output.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reduction {
    None,
    Sum,
    Mean,
}

/// Generates a loss kernel.
pub fn generate<'ctx>(cx: &'ctx Context, req: &Request) -> Gen<Generated<'ctx>> {
    let (ignore_index, reduction, softmax) = match req.op {
        Op::NegativeLogLikelihoodLoss {
            ignore_index,
            reduction,
        } => (*ignore_index, reduction, false),
        Op::SoftmaxCrossEntropyLoss {
            ignore_index,
            reduction,
        } => (*ignore_index, reduction, true),
        _ => unreachable!("plan dispatches only losses here"),
    };
    let reduction = match reduction.as_str() {
        "none" => Reduction::None,
        "sum" => Reduction::Sum,
        "mean" => Reduction::Mean,
        other => {
            return Err(KernelError::Unsupported(format!(
                "reduction '{other}' is not one of none, sum and mean"
            )))
        }
    };
    let scores = req.input(0)?.clone();
    let labels = req.input(1)?.clone();
    let weights = req.inputs.get(2).cloned().flatten();
    if scores.shape.len() < 2 {
        return Err(KernelError::Unsupported(format!(
            "the scores must have rank 2 or more [N, C, d...], found rank {}",
            scores.shape.len()
        )));
    }
    let loss_out = req.outputs[0].clone();
    let log_prob_out = req.outputs.get(1).cloned().filter(|_| softmax);
    let mut cg = req.begin(cx, BLOCK);
    let classes = cg.dim(&scores.shape[1])?;
    let inner = cg.product(&scores.shape[2..])?;
    let targets = cg.product(&labels.shape)?;
    let scores_at = cg.buffer(req.input_param(0));
    let labels_at = cg.buffer(req.input_param(1));
    let weights_at = weights.as_ref().map(|_| cg.buffer(req.input_param(2)));

    // Target `p`'s loss and weight (both 0 when it is ignored); writes its log-probabilities.
    let loss_of =
        |cg: &mut Cg<'ctx>, p: IntValue<'ctx>| -> Gen<(FloatValue<'ctx>, FloatValue<'ctx>)> {
            let n = cg.div(p, inner)?;
            let d = cg.rem(p, inner)?;
            let base = cg.add(cg.mul(cg.mul(n, classes)?, inner)?, d)?;
            let score = |cg: &Cg<'ctx>, class: IntValue<'ctx>| -> Gen<FloatValue<'ctx>> {
                let at = cg.add(base, cg.mul(class, inner)?)?;
                cg.load(scores.dtype, scores_at, at)?.float(cg)
            };
            // log(sum(exp(x))) over the classes, from their maximum.
            let log_sum = if softmax {
                let top = cg.fold_range(
                    cg.c(0),
                    classes,
                    cg.c(1),
                    vec![cg.f(f64::NEG_INFINITY).into()],
                    |cg, c, state| {
                        Ok(vec![cg
                            .fmax(state[0].into_float_value(), score(cg, c)?)?
                            .into()])
                    },
                )?[0]
                    .into_float_value();
                let total = cg.fold_range(
                    cg.c(0),
                    classes,
                    cg.c(1),
                    vec![cg.f(0.0).into()],
                    |cg, c, state| {
                        let e = cg.exp(cg.fsub(score(cg, c)?, top)?)?;
                        Ok(vec![cg.fadd(state[0].into_float_value(), e)?.into()])
                    },
                )?[0]
                    .into_float_value();
                let log_sum = cg.fadd(top, cg.log(total)?)?;
                if let Some(out) = &log_prob_out {
                    let out_at = cg.buffer(1);
                    cg.for_range(cg.c(0), classes, cg.c(1), |cg, c| {
                        let at = cg.add(base, cg.mul(c, inner)?)?;
                        let v = cg.fsub(score(cg, c)?, log_sum)?;
                        cg.store(out.dtype, out_at, at, Val::F(v))
                    })?;
                }
                Some(log_sum)
            } else {
                None
            };
            let label = match cg.load(labels.dtype, labels_at, p)? {
                Val::I(i) => i,
                Val::F(_) => {
                    return Err(KernelError::Unsupported(
                        "the targets must be integers".into(),
                    ))
                }
            };
            let known = cg.b.build_and(
                cg.icmp(IntPredicate::SGE, label, cg.c(0))?,
                cg.icmp(IntPredicate::SLT, label, classes)?,
                "",
            )?;
            let class = cg.select(known, label, cg.c(0))?.into_int_value();
            let mut log_prob = score(cg, class)?;
            if let Some(log_sum) = log_sum {
                log_prob = cg.fsub(log_prob, log_sum)?;
            }
            let weight = match (&weights, weights_at) {
                (Some(w), Some(at)) => cg.load(w.dtype, at, class)?.float(cg)?,
                _ => cg.f(1.0),
            };
            let loss = cg.fmul(cg.fneg(log_prob)?, weight)?;
            let loss = cg.fsel(known, loss, cg.f(f64::NAN))?;
            Ok(match ignore_index {
                Some(ignored) => {
                    let skip = cg.icmp(IntPredicate::EQ, label, cg.c(ignored))?;
                    (
                        cg.fsel(skip, cg.f(0.0), loss)?,
                        cg.fsel(skip, cg.f(0.0), weight)?,
                    )
                }
                None => (loss, weight),
            })
        };

    let loss_at = cg.buffer(0);
    let grid = if reduction == Reduction::None {
        cg.for_each_thread_item(cg.c(0), targets, |cg, p| {
            let (loss, _) = loss_of(cg, p)?;
            cg.store(loss_out.dtype, loss_at, p, Val::F(loss))
        })?;
        labels.numel().ceil_div(&Dim::known(i64::from(BLOCK)))
    } else {
        let start = cg.tid()?;
        let step = cg.ntid()?;
        let init = vec![cg.f(0.0).into(), cg.f(0.0).into()];
        let sums = cg.fold_range(start, targets, step, init, |cg, p, state| {
            let (loss, weight) = loss_of(cg, p)?;
            Ok(vec![
                cg.fadd(state[0].into_float_value(), loss)?.into(),
                cg.fadd(state[1].into_float_value(), weight)?.into(),
            ])
        })?;
        let total = cg.block_reduce(sums[0].into_float_value(), Combine::Sum)?;
        let weight = cg.block_reduce(sums[1].into_float_value(), Combine::Sum)?;
        let value = match reduction {
            Reduction::Mean => cg.fdiv(total, weight)?,
            _ => total,
        };
        let first = cg.icmp(IntPredicate::EQ, cg.tid()?, cg.c(0))?;
        cg.if_then(first, |cg| {
            cg.store(loss_out.dtype, loss_at, cg.c(0), Val::F(value))
        })?;
        Dim::known(1)
    };
    let launch = Launch {
        grid,
        block: BLOCK,
        // The block reduction's scratch (one f32 per warp, and one).
        shared_bytes: if reduction == Reduction::None {
            0
        } else {
            33 * 4
        },
        dynamic_shared_bytes: 0,
    };
    let variant = match reduction {
        Reduction::None => "per target",
        Reduction::Sum => "sum, one block",
        Reduction::Mean => "mean, one block",
    };
    let info = req.describe(Family::Reduction, variant, vec![req.op.name()], launch);
    Ok(Generated {
        info,
        module: cg.finish()?,
    })
}
