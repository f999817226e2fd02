//! Control flow: `If` and `Loop` run their prepared subgraph executors.

use super::{Args, R};
use crate::array::{Array, Data};
use crate::exec::Executor;
use crate::value::Value;
use sparkc_ir::{NodeId, ValueType};

fn captured_values(args: &Args, from: usize) -> R<Vec<Value>> {
    (from..args.len()).map(|i| args.value(i).cloned()).collect()
}

fn scalar_flag(value: &Value) -> R<bool> {
    let t = value.as_tensor()?;
    t.data
        .to_i64s()
        .first()
        .map(|&v| v != 0)
        .ok_or_else(|| "the condition is empty".to_string())
}

/// `If`: runs the then or else branch on the captured values.
pub(crate) fn if_(exec: &Executor, id: NodeId, args: &Args) -> R<Vec<Value>> {
    let cond = scalar_flag(args.value(0)?)?;
    let branches = exec.subgraphs(id);
    let branch = branches
        .get(if cond { 0 } else { 1 })
        .ok_or("missing branch")?;
    branch
        .run_nested(captured_values(args, 1)?)
        .map_err(|e| format!("in {} branch: {e}", if cond { "then" } else { "else" }))
}

/// `Loop`: iterates the body while the trip count and condition allow, stacking scan outputs.
pub(crate) fn loop_(
    exec: &Executor,
    id: NodeId,
    args: &Args,
    carried: usize,
    outputs: usize,
) -> R<Vec<Value>> {
    let body = exec.subgraphs(id).first().ok_or("missing body")?;
    let trip_count = match args.opt(0) {
        Some(v) => Some(
            v.as_tensor()?
                .data
                .to_i64s()
                .first()
                .copied()
                .ok_or("M is empty")?,
        ),
        None => None,
    };
    let mut cond = match args.opt(1) {
        Some(v) => scalar_flag(v)?,
        None => true,
    };
    let mut state: Vec<Value> = (2..2 + carried)
        .map(|i| args.value(i).cloned())
        .collect::<R<_>>()?;
    let captures = captured_values(args, 2 + carried)?;
    let scans = outputs.saturating_sub(carried);
    let mut stacked: Vec<Vec<Array>> = vec![Vec::new(); scans];
    let mut i = 0i64;
    while cond && trip_count.is_none_or(|m| i < m) {
        let mut inputs = vec![
            Value::Tensor(Array::i64(vec![], vec![i])),
            Value::Tensor(Array::new(vec![], Data::Bool(vec![cond]))),
        ];
        inputs.extend(state.iter().cloned());
        inputs.extend(captures.iter().cloned());
        let mut results = body
            .run_nested(inputs)
            .map_err(|e| format!("in iteration {i}: {e}"))?;
        if results.len() != 1 + carried + scans {
            return Err(format!(
                "body produced {} outputs, expected {}",
                results.len(),
                1 + carried + scans
            ));
        }
        let scan_values = results.split_off(1 + carried);
        cond = scalar_flag(&results[0])?;
        state = results.split_off(1);
        for (k, v) in scan_values.into_iter().enumerate() {
            stacked[k].push(v.into_tensor()?);
        }
        i += 1;
    }
    let body_outputs = body.graph().outputs.clone();
    for (k, items) in stacked.into_iter().enumerate() {
        let array = match items.first() {
            Some(first) => {
                let mut shape = vec![items.len()];
                shape.extend(&first.shape);
                if items.iter().any(|a| a.shape != first.shape) {
                    return Err(format!("scan output {k} changes shape across iterations"));
                }
                let pieces: Vec<&Data> = items.iter().map(|a| &a.data).collect();
                Array::new(shape, Data::concat(first.dtype(), &pieces))
            }
            None => {
                let value = body.graph().value(body_outputs[1 + carried + k]);
                let dtype = match &value.ty {
                    ValueType::Tensor(t) => t.dtype,
                    _ => sparkc_ir::DType::F32,
                };
                Array::new(vec![0], Data::zeros(dtype, 0))
            }
        };
        state.push(Value::Tensor(array));
    }
    Ok(state)
}

/// The per-step settings of a `Scan`.
struct ScanPlan<'a> {
    body: &'a Executor,
    input_axes: Vec<usize>,
    input_directions: &'a [i64],
    output_axes: &'a [i64],
    output_directions: &'a [i64],
    outputs: usize,
}

impl ScanPlan<'_> {
    /// Runs `steps` steps (of `padded` positions) from `state` over `scans`.
    fn run(
        &self,
        mut state: Vec<Value>,
        scans: &[Array],
        captures: &[Value],
        steps: usize,
        padded: usize,
    ) -> R<Vec<Value>> {
        let states = state.len();
        let mut stacked: Vec<Vec<Array>> = vec![Vec::new(); self.outputs];
        for t in 0..steps {
            let mut inputs = state.clone();
            for (k, scan) in scans.iter().enumerate() {
                let reverse = self.input_directions.get(k).copied().unwrap_or(0) == 1;
                let at = if reverse { steps - 1 - t } else { t };
                let mut slice = super::shape::slice_axis(scan, self.input_axes[k], at, 1);
                slice.shape.remove(self.input_axes[k]);
                inputs.push(Value::Tensor(slice));
            }
            inputs.extend(captures.iter().cloned());
            let mut results = self
                .body
                .run_nested(inputs)
                .map_err(|e| format!("in step {t}: {e}"))?;
            let produced = results.split_off(states);
            state = results;
            for (k, v) in produced.into_iter().enumerate() {
                stacked[k].push(v.into_tensor()?);
            }
        }
        for (k, mut items) in stacked.into_iter().enumerate() {
            if self.output_directions.get(k).copied().unwrap_or(0) == 1 {
                items.reverse();
            }
            let first = items
                .first()
                .ok_or("Scan with zero steps has no output shape")?
                .clone();
            while items.len() < padded {
                items.push(Array::new(
                    first.shape.clone(),
                    Data::zeros(first.dtype(), first.len()),
                ));
            }
            let a = super::axis(
                self.output_axes.get(k).copied().unwrap_or(0),
                first.rank() + 1,
            )?;
            let pieces: Vec<Array> = items
                .iter()
                .map(|i| super::shape::unsqueeze(i.clone(), &[a as i64]))
                .collect::<R<_>>()?;
            state.push(Value::Tensor(super::shape::concat(
                &pieces.iter().collect::<Vec<_>>(),
                a as i64,
            )?));
        }
        Ok(state)
    }
}

/// `Scan`: runs the body once per step over slices of the scan inputs, carrying the state.
pub(crate) fn scan(
    exec: &Executor,
    id: NodeId,
    node: &sparkc_ir::Node,
    args: &Args,
) -> R<Vec<Value>> {
    let sparkc_ir::Op::Scan {
        num_scan_inputs,
        captured,
        batched,
        scan_input_axes,
        scan_input_directions,
        scan_output_axes,
        scan_output_directions,
        ..
    } = &node.op
    else {
        return Err("not a Scan".into());
    };
    let body = exec.subgraphs(id).first().ok_or("missing body")?;
    let m = *num_scan_inputs as usize;
    let first = usize::from(*batched);
    let states = args
        .len()
        .checked_sub(m + captured + first)
        .ok_or("too few inputs")?;
    let state: Vec<Value> = (first..first + states)
        .map(|i| args.value(i).cloned())
        .collect::<R<_>>()?;
    let scans: Vec<Array> = (first + states..first + states + m)
        .map(|i| args.tensor(i).cloned())
        .collect::<R<_>>()?;
    let captures = captured_values(args, first + states + m)?;
    let mut plan = ScanPlan {
        body,
        input_axes: Vec::new(),
        input_directions: scan_input_directions,
        output_axes: scan_output_axes,
        output_directions: scan_output_directions,
        outputs: node.outputs.len() - states,
    };
    if !batched {
        plan.input_axes = (0..m)
            .map(|k| {
                super::axis(
                    scan_input_axes.get(k).copied().unwrap_or(0),
                    scans[k].rank(),
                )
            })
            .collect::<R<_>>()?;
        let steps = scans.first().map_or(0, |s| s.shape[plan.input_axes[0]]);
        return plan.run(state, &scans, &captures, steps, steps);
    }
    // Opset 8: one independent scan per batch entry, each over its own sequence length.
    plan.input_axes = vec![0; m];
    let batch = scans.first().map_or(0, |s| s.shape[0]);
    let padded = scans
        .first()
        .map_or(0, |s| s.shape.get(1).copied().unwrap_or(0));
    let lengths = args.opt_tensor(0)?.map(|t| t.data.to_i64s());
    let entry = |a: &Array, b: usize| {
        let mut s = super::shape::slice_axis(a, 0, b, 1);
        s.shape.remove(0);
        s
    };
    let mut per_batch: Vec<Vec<Value>> = Vec::new();
    for b in 0..batch {
        let state_b: Vec<Value> = state
            .iter()
            .map(|v| v.as_tensor().map(|t| Value::Tensor(entry(t, b))))
            .collect::<R<_>>()?;
        let scans_b: Vec<Array> = scans.iter().map(|s| entry(s, b)).collect();
        let steps = lengths
            .as_ref()
            .map_or(padded, |l| (l[b].max(0) as usize).min(padded));
        per_batch.push(plan.run(state_b, &scans_b, &captures, steps, padded)?);
    }
    (0..node.outputs.len())
        .map(|k| {
            let items: Vec<Array> = per_batch
                .iter()
                .map(|outs| {
                    outs[k]
                        .as_tensor()
                        .and_then(|t| super::shape::unsqueeze(t.clone(), &[0]))
                })
                .collect::<R<_>>()?;
            Ok(Value::Tensor(super::shape::concat(
                &items.iter().collect::<Vec<_>>(),
                0,
            )?))
        })
        .collect()
}

/// `SequenceMap`: runs the body once per element of the input sequence.
pub(crate) fn sequence_map(
    exec: &Executor,
    id: NodeId,
    args: &Args,
    captured: usize,
) -> R<Vec<Value>> {
    let body = exec.subgraphs(id).first().ok_or("missing body")?;
    let mapped = args.len().checked_sub(captured).ok_or("too few inputs")?;
    let Value::Sequence(items) = args.value(0)? else {
        return Err("input 0 must be a sequence".into());
    };
    let captures = captured_values(args, mapped)?;
    let mut outputs: Vec<Vec<Array>> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let mut inputs = vec![Value::Tensor(item.clone())];
        for k in 1..mapped {
            inputs.push(match args.value(k)? {
                Value::Sequence(other) => Value::Tensor(
                    other
                        .get(i)
                        .cloned()
                        .ok_or_else(|| format!("input {k} has fewer elements than the sequence"))?,
                ),
                value => value.clone(),
            });
        }
        inputs.extend(captures.iter().cloned());
        let results = body
            .run_nested(inputs)
            .map_err(|e| format!("at element {i}: {e}"))?;
        outputs.resize(results.len(), Vec::new());
        for (k, v) in results.into_iter().enumerate() {
            outputs[k].push(v.into_tensor()?);
        }
    }
    if outputs.is_empty() {
        outputs = vec![Vec::new(); body.output_names().len()];
    }
    Ok(outputs.into_iter().map(Value::Sequence).collect())
}
