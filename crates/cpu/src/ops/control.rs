//! Control flow: `If` and `Loop` run their prepared subgraph executors.

use super::{Args, R};
use crate::array::{Array, Data};
use crate::exec::Executor;
use crate::value::Value;
use sparkc_ir::{NodeId, ValueType};

fn captured_values(args: &Args, from: usize) -> R<Vec<Value>> {
    (from..args.len())
        .map(|i| args.value(i).cloned())
        .collect()
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
    let branch = branches.get(if cond { 0 } else { 1 }).ok_or("missing branch")?;
    branch
        .run(captured_values(args, 1)?)
        .map_err(|e| format!("in {} branch: {e}", if cond { "then" } else { "else" }))
}

/// `Loop`: iterates the body while the trip count and condition allow, stacking scan outputs.
pub(crate) fn loop_(exec: &Executor, id: NodeId, args: &Args, carried: usize, outputs: usize) -> R<Vec<Value>> {
    let body = exec.subgraphs(id).first().ok_or("missing body")?;
    let trip_count = match args.opt(0) {
        Some(v) => Some(v.as_tensor()?.data.to_i64s().first().copied().ok_or("M is empty")?),
        None => None,
    };
    let mut cond = match args.opt(1) {
        Some(v) => scalar_flag(v)?,
        None => true,
    };
    let mut state: Vec<Value> = (2..2 + carried).map(|i| args.value(i).cloned()).collect::<R<_>>()?;
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
        let mut results = body.run(inputs).map_err(|e| format!("in iteration {i}: {e}"))?;
        if results.len() != 1 + carried + scans {
            return Err(format!("body produced {} outputs, expected {}", results.len(), 1 + carried + scans));
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

/// `Scan`: runs the body once per step over slices of the scan inputs, carrying the state.
pub(crate) fn scan(exec: &Executor, id: NodeId, node: &sparkc_ir::Node, args: &Args) -> R<Vec<Value>> {
    let sparkc_ir::Op::Scan {
        num_scan_inputs,
        captured,
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
    let states = args.len().checked_sub(m + captured).ok_or("too few inputs")?;
    let mut state: Vec<Value> = (0..states).map(|i| args.value(i).cloned()).collect::<R<_>>()?;
    let scans: Vec<&Array> = (states..states + m).map(|i| args.tensor(i)).collect::<R<_>>()?;
    let captures = captured_values(args, states + m)?;
    let axes: Vec<usize> = (0..m)
        .map(|k| super::axis(scan_input_axes.get(k).copied().unwrap_or(0), scans[k].rank()))
        .collect::<R<_>>()?;
    let steps = scans.first().map_or(0, |s| s.shape[axes[0]]);
    let outputs = node.outputs.len() - states;
    let mut stacked: Vec<Vec<Array>> = vec![Vec::new(); outputs];
    for t in 0..steps {
        let mut inputs = state.clone();
        for k in 0..m {
            let reverse = scan_input_directions.get(k).copied().unwrap_or(0) == 1;
            let at = if reverse { steps - 1 - t } else { t };
            let mut slice = super::shape::slice_axis(scans[k], axes[k], at, 1);
            slice.shape.remove(axes[k]);
            inputs.push(Value::Tensor(slice));
        }
        inputs.extend(captures.iter().cloned());
        let mut results = body.run(inputs).map_err(|e| format!("in step {t}: {e}"))?;
        let produced = results.split_off(states);
        state = results;
        for (k, v) in produced.into_iter().enumerate() {
            stacked[k].push(v.into_tensor()?);
        }
    }
    for (k, mut items) in stacked.into_iter().enumerate() {
        if scan_output_directions.get(k).copied().unwrap_or(0) == 1 {
            items.reverse();
        }
        let first = items.first().ok_or("Scan with zero steps has no output shape")?;
        let rank = first.rank() + 1;
        let a = super::axis(scan_output_axes.get(k).copied().unwrap_or(0), rank)?;
        let pieces: Vec<Array> = items
            .iter()
            .map(|i| super::shape::unsqueeze(i.clone(), &[a as i64]))
            .collect::<R<_>>()?;
        state.push(Value::Tensor(super::shape::concat(&pieces.iter().collect::<Vec<_>>(), a as i64)?));
    }
    Ok(state)
}
