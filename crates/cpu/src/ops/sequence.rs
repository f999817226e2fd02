//! Sequence and optional ops.

use super::shape::{concat, slice_axis, unsqueeze};
use super::{axis, Args, R};
use crate::array::{Array, Data};
use crate::value::Value;
use sparkc_ir::Op;

fn sequence<'a>(args: &'a Args, i: usize) -> R<&'a [Array]> {
    match args.value(i)? {
        Value::Sequence(items) => Ok(items),
        other => Err(format!("input {i} must be a sequence, found {other}")),
    }
}

/// A position into a sequence of `len` items (negative counts from the end).
fn position(args: &Args, i: usize, len: usize, insert: bool) -> R<Option<usize>> {
    let Some(p) = args.opt_ints(i)? else {
        return Ok(None);
    };
    let p = *p.first().ok_or("position is empty")?;
    let limit = len as i64 + i64::from(insert);
    let q = if p < 0 { p + len as i64 } else { p };
    if q < 0 || q >= limit {
        return Err(format!(
            "position {p} is out of range for a sequence of {len}"
        ));
    }
    Ok(Some(q as usize))
}

fn tensor(a: Array) -> Value {
    Value::Tensor(a)
}

/// Runs one sequence or optional op.
pub(crate) fn run(op: &Op, args: &mut Args) -> R<Vec<Value>> {
    let value = match op {
        Op::Optional { .. } => Value::Optional(match args.opt(0) {
            Some(_) => Some(Box::new(args.take(0)?)),
            None => None,
        }),
        Op::OptionalHasElement => {
            let has = match args.opt(0) {
                Some(Value::Optional(inner)) => inner.is_some(),
                Some(_) => true,
                None => false,
            };
            tensor(Array::scalar(Data::Bool(vec![has])))
        }
        Op::OptionalGetElement => match args.take(0)? {
            Value::Optional(Some(inner)) => *inner,
            Value::Optional(None) => return Err("the optional is empty".into()),
            other => other,
        },
        Op::SequenceConstruct => Value::Sequence(args.tensors()?.into_iter().cloned().collect()),
        Op::SequenceEmpty { .. } => Value::Sequence(Vec::new()),
        Op::SequenceInsert => {
            let mut items = sequence(args, 0)?.to_vec();
            let at = position(args, 2, items.len(), true)?.unwrap_or(items.len());
            items.insert(at, args.tensor(1)?.clone());
            Value::Sequence(items)
        }
        Op::SequenceAt => {
            let items = sequence(args, 0)?;
            let at = position(args, 1, items.len(), false)?.ok_or("position is missing")?;
            tensor(items[at].clone())
        }
        Op::SequenceErase => {
            let mut items = sequence(args, 0)?.to_vec();
            if items.is_empty() {
                return Err("cannot erase from an empty sequence".into());
            }
            let at = position(args, 1, items.len(), false)?.unwrap_or(items.len() - 1);
            items.remove(at);
            Value::Sequence(items)
        }
        Op::SequenceLength => tensor(Array::i64(vec![], vec![sequence(args, 0)?.len() as i64])),
        Op::SplitToSequence { axis: ax, keepdims } => {
            let x = args.tensor(0)?;
            let a = axis(*ax, x.rank())?;
            let len = x.shape[a];
            let sizes: Vec<usize> = match args.opt_ints(1)? {
                None => vec![1; len],
                Some(s) if args.tensor(1)?.rank() == 0 => {
                    let each = s[0].max(1) as usize;
                    (0..len.div_ceil(each))
                        .map(|i| each.min(len - i * each))
                        .collect()
                }
                Some(s) => s.iter().map(|&v| v.max(0) as usize).collect(),
            };
            if sizes.iter().sum::<usize>() != len {
                return Err(format!("split sizes {sizes:?} do not add up to {len}"));
            }
            let mut start = 0;
            let mut items = Vec::new();
            let drop_axis = args.opt(1).is_none() && !keepdims;
            for size in sizes {
                let mut piece = slice_axis(x, a, start, size);
                if drop_axis {
                    piece.shape.remove(a);
                }
                items.push(piece);
                start += size;
            }
            Value::Sequence(items)
        }
        Op::ConcatFromSequence { axis: ax, new_axis } => {
            let items = sequence(args, 0)?;
            if *new_axis {
                let rank = items.first().map_or(0, Array::rank) + 1;
                let a = axis(*ax, rank)? as i64;
                let expanded: Vec<Array> = items
                    .iter()
                    .map(|t| unsqueeze(t.clone(), &[a]))
                    .collect::<R<_>>()?;
                tensor(concat(&expanded.iter().collect::<Vec<_>>(), a)?)
            } else {
                tensor(concat(&items.iter().collect::<Vec<_>>(), *ax)?)
            }
        }
        other => return Err(format!("{} is not a sequence op", other.name())),
    };
    Ok(vec![value])
}
