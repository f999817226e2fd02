//! Fused nodes: the body's leading ops run one by one, its trailing elementwise ops as one
//! row-by-row region, so an epilogue reads the product once and writes the result once.

use super::{conv, run, Arg, Args, R};
use crate::array::Array;
use crate::exec::Executor;
use crate::fuse::{self, Operand as Step, Region};
use crate::value::Value;
use sparkc_ir::op::{ConvAttrs, Layout};
use sparkc_ir::{BodyNode, DType, Fused, Node, NodeId, Op, Operand};

/// The fewest trailing elementwise ops worth a row-by-row region.
const REGION_MIN_OPS: usize = 2;

/// Runs a fused node's body on its inputs.
pub(crate) fn fused(
    exec: &Executor,
    id: NodeId,
    node: &Node,
    fused: &Fused,
    args: Args,
) -> R<Vec<Value>> {
    let body = &fused.body;
    let fusable_from = body
        .iter()
        .rposition(|n| fuse::fusable(&n.op).is_none() || n.args.iter().any(Option::is_none))
        .map_or(0, |k| k + 1);
    // A single trailing op runs on its own, in the buffer of the value before it; from two ops
    // on, one row-by-row region reads and writes memory once.
    let tail = if body.len() - fusable_from >= REGION_MIN_OPS {
        fusable_from
    } else {
        body.len()
    };
    if let (1, Op::Conv(attrs)) = (fusable_from, &body[0].op) {
        if body.len() > 1 {
            if let Some(value) = conv_with_tail(&args, fused, attrs)? {
                return Ok(vec![value]);
            }
        }
    }
    let mut locals: Vec<Option<Value>> = Vec::with_capacity(body.len());
    let last_reader = last_readers(fused);
    for (k, body_node) in body[..tail].iter().enumerate() {
        let items = body_node
            .args
            .iter()
            .enumerate()
            .map(|(slot, a)| {
                // A value read twice by this node is moved only at its last read.
                let again = body_node.args[slot + 1..].contains(a);
                let reader = if again { k.saturating_sub(1) } else { k };
                operand(&args, &mut locals, &last_reader, *a, reader)
            })
            .collect::<R<Vec<_>>>()?;
        let scratch = Node {
            name: node.name.clone(),
            op: body_node.op.clone(),
            arity: body_node.args.len(),
            outputs: node.outputs.clone(),
            rules: Vec::new(),
        };
        let mut results = run(exec, id, &scratch, Args::new(items))?;
        if results.is_empty() {
            return Err(format!("body node {k} produced no value"));
        }
        locals.push(Some(results.swap_remove(0)));
    }
    if tail == body.len() {
        return match locals.pop().flatten() {
            Some(v) => Ok(vec![v]),
            None => Err("the body is empty".into()),
        };
    }
    // The elementwise tail: its operands become the region's inputs, in first-use order.
    let mut sources: Vec<Operand> = Vec::new();
    let region = tail_region(&body[tail..], tail, &mut sources)?;
    let inputs = sources
        .iter()
        .map(|&s| operand(&args, &mut locals, &last_reader, Some(s), body.len()))
        .collect::<R<Vec<_>>>()?
        .into_iter()
        .map(|a| a.ok_or_else(|| "an omitted operand in the tail".to_string()))
        .collect::<R<Vec<_>>>()?;
    Ok(vec![fuse::run(&region, inputs)?])
}

/// The region running `tail` (the body's nodes from index `first` on), its operands from outside
/// the tail numbered by their place in `sources`, which gains those not yet listed.
fn tail_region(tail: &[BodyNode], first: usize, sources: &mut Vec<Operand>) -> R<Region> {
    let mut steps = Vec::new();
    for body_node in tail {
        let elem = fuse::fusable(&body_node.op).ok_or("an unfusable op in the tail")?;
        let operands = body_node
            .args
            .iter()
            .flatten()
            .map(|&a| match a {
                Operand::Node(j) if j >= first => Step::Local(j - first),
                other => {
                    Step::Input(sources.iter().position(|s| *s == other).unwrap_or_else(|| {
                        sources.push(other);
                        sources.len() - 1
                    }))
                }
            })
            .collect();
        steps.push((elem, operands));
    }
    Ok(Region::from_program(steps))
}

/// A convolution followed by elementwise ops, the ops run on each piece of the output as the
/// convolution finishes it; `None` where the layout, types or shapes need the general path.
fn conv_with_tail(args: &Args, fused: &Fused, attrs: &ConvAttrs) -> R<Option<Value>> {
    if attrs.layout != Layout::Nchw {
        return Ok(None);
    }
    let outer = |a: Option<Operand>| -> R<Option<&Array>> {
        match a {
            None => Ok(None),
            Some(Operand::Input(i)) => args.tensor(i).map(Some),
            Some(Operand::Node(j)) => Err(format!("the convolution reads body node {j}")),
        }
    };
    let conv_args = &fused.body[0].args;
    let operand = |slot: usize| outer(conv_args.get(slot).copied().flatten());
    let (Some(x), Some(w)) = (operand(0)?, operand(1)?) else {
        return Err("the convolution lacks its input or weights".into());
    };
    let bias = operand(2)?;
    if x.dtype() != DType::F32 || w.dtype() != DType::F32 {
        return Ok(None);
    }
    let shape = conv::output_shape(&x.shape, &w.shape, attrs)?;
    let mut sources = vec![Operand::Node(0)];
    let region = tail_region(&fused.body[1..], 1, &mut sources)?;
    // The convolution's output, which the tail reads in place.
    let placeholder = Array::f32(vec![0], Vec::new());
    let mut inputs = vec![&placeholder];
    for &source in &sources[1..] {
        inputs.push(outer(Some(source))?.ok_or("an omitted operand in the tail")?);
    }
    let Some(bound) = fuse::Bound::new(&region, &inputs, &shape, Some(0)) else {
        return Ok(None);
    };
    let epilogue = |pieces: &mut [(usize, &mut [f32])]| bound.eval_pieces(pieces);
    let y = conv::conv_nchw(x, w, bias, attrs, Some(&epilogue))?;
    Ok(Some(Value::Tensor(y)))
}

/// For each body node, the index of the last body node reading it (`body.len()` for the tail).
fn last_readers(fused: &Fused) -> Vec<usize> {
    let mut last = vec![0; fused.body.len()];
    for (k, n) in fused.body.iter().enumerate() {
        for a in n.args.iter().flatten() {
            if let Operand::Node(j) = a {
                last[*j] = k;
            }
        }
    }
    last
}

/// The argument for one operand, moving a body value out when `reader` is its last reader.
fn operand<'a>(
    args: &'a Args,
    locals: &mut [Option<Value>],
    last_reader: &[usize],
    a: Option<Operand>,
    reader: usize,
) -> R<Option<Arg<'a>>> {
    match a {
        None => Ok(None),
        Some(Operand::Input(i)) => Ok(Some(Arg::Borrowed(args.value(i)?))),
        Some(Operand::Node(j)) => {
            let slot = locals.get_mut(j).ok_or("a body node reads a later node")?;
            let dies = last_reader[j] <= reader;
            let value = if dies { slot.take() } else { slot.clone() };
            value
                .map(|v| Some(Arg::Owned(v)))
                .ok_or_else(|| format!("body value {j} was read after its last reader"))
        }
    }
}
