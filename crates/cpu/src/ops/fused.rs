//! Fused nodes: the body's leading ops run one by one, its trailing elementwise ops as one
//! row-by-row region, so an epilogue reads the product once and writes the result once.

use super::{run, Arg, Args, R};
use crate::exec::Executor;
use crate::fuse::{self, Operand as Step, Region};
use crate::value::Value;
use sparkc_ir::{Fused, Node, NodeId, Operand};

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
    let mut steps = Vec::new();
    for body_node in &body[tail..] {
        let elem = fuse::fusable(&body_node.op).ok_or("an unfusable op in the tail")?;
        let operands = body_node
            .args
            .iter()
            .flatten()
            .map(|&a| match a {
                Operand::Node(j) if j >= tail => Step::Local(j - tail),
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
    let inputs = sources
        .iter()
        .map(|&s| operand(&args, &mut locals, &last_reader, Some(s), body.len()))
        .collect::<R<Vec<_>>>()?
        .into_iter()
        .map(|a| a.ok_or_else(|| "an omitted operand in the tail".to_string()))
        .collect::<R<Vec<_>>>()?;
    Ok(vec![fuse::run(&Region::from_program(steps), inputs)?])
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
