//! Inference through `If` and `Loop`: subgraph inputs typed from the parent, outputs merged.

use super::{infer_graph, Inferred};
use crate::dim::Dim;
use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::graph::Graph;
use crate::types::{TensorType, Value, ValueType};

fn error(node: &str, op: &str, message: String) -> IrError {
    IrError::Node {
        node: node.to_string(),
        op: op.to_string(),
        message,
    }
}

/// Sets the types of a subgraph's inputs, in order, from values of the parent graph.
fn bind_subgraph_inputs(
    graph: &mut Graph,
    values: &[(ValueType, Option<crate::types::Known>)],
) -> Result<()> {
    if graph.inputs.len() != values.len() {
        return Err(IrError::Graph(format!(
            "subgraph '{}' takes {} inputs, given {}",
            graph.name,
            graph.inputs.len(),
            values.len()
        )));
    }
    for (&id, (ty, known)) in graph.inputs.clone().iter().zip(values) {
        let value = &mut graph.dag[id].outputs[0];
        value.ty = ty.clone();
        value.known = known.clone();
    }
    Ok(())
}

fn subgraph_outputs(graph: &Graph) -> Vec<Inferred> {
    graph
        .outputs
        .iter()
        .map(|&v| {
            let value = graph.value(v);
            Inferred {
                ty: value.ty.clone(),
                known: value.known.clone(),
            }
        })
        .collect()
}

/// The most specific type both `a` and `b` conform to; dims that differ become dynamic.
fn merge(a: &ValueType, b: &ValueType) -> Option<ValueType> {
    Some(match (a, b) {
        (ValueType::Tensor(x), ValueType::Tensor(y)) if x.dtype == y.dtype => {
            let shape = match (&x.shape, &y.shape) {
                (Some(p), Some(q)) if p.len() == q.len() => Some(
                    p.iter()
                        .zip(q)
                        .map(|(d, e)| if d == e { d.clone() } else { Dim::Dynamic })
                        .collect(),
                ),
                _ => None,
            };
            ValueType::Tensor(TensorType {
                dtype: x.dtype,
                shape,
            })
        }
        (ValueType::Sequence(x), ValueType::Sequence(y)) => {
            ValueType::Sequence(Box::new(merge(x, y)?))
        }
        (ValueType::Optional(x), ValueType::Optional(y)) => {
            ValueType::Optional(Box::new(merge(x, y)?))
        }
        _ => return None,
    })
}

fn parent_inputs(inputs: &[Option<Value>]) -> Vec<(ValueType, Option<crate::types::Known>)> {
    inputs
        .iter()
        .flatten()
        .map(|v| (v.ty.clone(), v.known.clone()))
        .collect()
}

pub(super) fn infer_if(
    node: &str,
    then_branch: &mut Graph,
    else_branch: &mut Graph,
    inputs: &[Option<Value>],
) -> Result<Vec<Inferred>> {
    let captures = parent_inputs(inputs.get(1..).unwrap_or_default());
    for branch in [&mut *then_branch, &mut *else_branch] {
        bind_subgraph_inputs(branch, &captures)?;
        infer_graph(branch)?;
    }
    let (then_out, else_out) = (subgraph_outputs(then_branch), subgraph_outputs(else_branch));
    if then_out.len() != else_out.len() {
        return Err(error(
            node,
            "If",
            format!(
                "then_branch has {} outputs, else_branch {}",
                then_out.len(),
                else_out.len()
            ),
        ));
    }
    let cond = inputs
        .first()
        .and_then(Option::as_ref)
        .and_then(|v| v.known.as_ref())
        .and_then(|k| k.as_i64s());
    if let Some([c]) = cond.as_deref() {
        return Ok(if *c != 0 { then_out } else { else_out });
    }
    then_out
        .iter()
        .zip(&else_out)
        .enumerate()
        .map(|(i, (t, e))| {
            merge(&t.ty, &e.ty)
                .map(|ty| Inferred {
                    ty,
                    known: (t.known == e.known).then(|| t.known.clone()).flatten(),
                })
                .ok_or_else(|| {
                    error(
                        node,
                        "If",
                        format!(
                            "output {i} is {} in then_branch but {} in else_branch",
                            t.ty, e.ty
                        ),
                    )
                })
        })
        .collect()
}

pub(super) fn infer_loop(
    node: &str,
    body: &mut Graph,
    carried: usize,
    inputs: &[Option<Value>],
) -> Result<Vec<Inferred>> {
    let scalar = |dtype| ValueType::Tensor(TensorType::new(dtype, Vec::new()));
    let initial: Vec<ValueType> = inputs
        .iter()
        .skip(2)
        .take(carried)
        .map(|v| v.as_ref().map(|v| v.ty.clone()))
        .collect::<Option<_>>()
        .ok_or_else(|| error(node, "Loop", "a loop-carried input is missing".to_string()))?;
    let captures = parent_inputs(inputs.get(2 + carried..).unwrap_or_default());
    let mut state = initial;
    // Two rounds: a carried value whose shape changes across iterations is widened, then re-inferred.
    for _ in 0..2 {
        let mut values = vec![(scalar(DType::I64), None), (scalar(DType::Bool), None)];
        values.extend(state.iter().map(|ty| (ty.clone(), None)));
        values.extend(captures.iter().cloned());
        bind_subgraph_inputs(body, &values)?;
        infer_graph(body)?;
        let out = subgraph_outputs(body);
        if out.len() < 1 + carried {
            return Err(error(
                node,
                "Loop",
                format!(
                    "body has {} outputs, needs at least {}",
                    out.len(),
                    1 + carried
                ),
            ));
        }
        let widened: Vec<ValueType> = state
            .iter()
            .zip(&out[1..1 + carried])
            .map(|(s, o)| merge(s, &o.ty).unwrap_or_else(|| o.ty.clone()))
            .collect();
        if widened == state {
            break;
        }
        state = widened;
    }
    let out = subgraph_outputs(body);
    let trip_count = match (
        inputs.first().and_then(Option::as_ref),
        inputs.get(1).and_then(Option::as_ref),
    ) {
        (Some(m), None) => m
            .known
            .as_ref()
            .and_then(|k| k.as_i64s())
            .and_then(|v| v.first().copied())
            .map_or(Dim::Dynamic, Dim::known),
        _ => Dim::Dynamic,
    };
    let mut result: Vec<Inferred> = state
        .into_iter()
        .map(|ty| Inferred { ty, known: None })
        .collect();
    for scan in &out[1 + carried..] {
        let ty = match &scan.ty {
            ValueType::Tensor(t) => ValueType::Tensor(TensorType {
                dtype: t.dtype,
                shape: t.shape.as_ref().map(|dims| {
                    let mut with_iterations = vec![trip_count.clone()];
                    with_iterations.extend(dims.iter().cloned());
                    with_iterations
                }),
            }),
            other => {
                return Err(error(
                    node,
                    "Loop",
                    format!("scan output of type {other} is not a tensor"),
                ));
            }
        };
        result.push(Inferred { ty, known: None });
    }
    Ok(result)
}

fn parent_axis(axes: &[i64], i: usize, rank: usize) -> usize {
    let axis = axes.get(i).copied().unwrap_or(0);
    (if axis < 0 { axis + rank as i64 } else { axis }).clamp(0, rank.max(1) as i64 - 1) as usize
}

pub(super) fn infer_scan(
    node: &str,
    body: &mut Graph,
    counts: (usize, usize, bool),
    input_axes: &[i64],
    output_axes: &[i64],
    inputs: &[Option<Value>],
) -> Result<Vec<Inferred>> {
    let (scan_inputs, captured, batched) = counts;
    // The opset-8 form: drop `sequence_lens`, and strip the batch axis from every input.
    let stripped: Vec<Option<Value>>;
    let mut batch = Dim::Dynamic;
    let inputs = if batched {
        stripped = inputs
            .iter()
            .skip(1)
            .map(|v| {
                v.as_ref().map(|v| {
                    let mut v = v.clone();
                    if let ValueType::Tensor(TensorType {
                        shape: Some(dims), ..
                    }) = &mut v.ty
                    {
                        if !dims.is_empty() {
                            batch = dims.remove(0);
                        }
                    }
                    v
                })
            })
            .collect();
        &stripped[..]
    } else {
        inputs
    };
    let states = inputs
        .len()
        .checked_sub(scan_inputs + captured)
        .ok_or_else(|| {
            error(
                node,
                "Scan",
                format!("has fewer inputs than its {scan_inputs} scan inputs"),
            )
        })?;
    let mut values = Vec::new();
    let mut length = Dim::Dynamic;
    for (i, input) in inputs.iter().enumerate().take(states + scan_inputs) {
        let value = input
            .as_ref()
            .ok_or_else(|| error(node, "Scan", format!("input {i} is missing")))?;
        let ty = if i < states {
            value.ty.clone()
        } else {
            match &value.ty {
                ValueType::Tensor(t) => ValueType::Tensor(TensorType {
                    dtype: t.dtype,
                    shape: t.shape.as_ref().map(|dims| {
                        let a = parent_axis(input_axes, i - states, dims.len());
                        length = dims[a].clone();
                        let mut d = dims.clone();
                        d.remove(a);
                        d
                    }),
                }),
                other => {
                    return Err(error(
                        node,
                        "Scan",
                        format!("scan input {i} is {other}, not a tensor"),
                    ))
                }
            }
        };
        values.push((ty, None));
    }
    values.extend(parent_inputs(&inputs[states + scan_inputs..]));
    bind_subgraph_inputs(body, &values)?;
    infer_graph(body)?;
    let out = subgraph_outputs(body);
    let mut result: Vec<Inferred> = out.iter().take(states).cloned().collect();
    for (k, scan) in out.iter().skip(states).enumerate() {
        let ty = match &scan.ty {
            ValueType::Tensor(t) => ValueType::Tensor(TensorType {
                dtype: t.dtype,
                shape: t.shape.as_ref().map(|dims| {
                    let a = parent_axis(output_axes, k, dims.len() + 1);
                    let mut d = dims.clone();
                    d.insert(a, length.clone());
                    d
                }),
            }),
            other => {
                return Err(error(
                    node,
                    "Scan",
                    format!("scan output {k} is {other}, not a tensor"),
                ))
            }
        };
        result.push(Inferred { ty, known: None });
    }
    if batched {
        for r in &mut result {
            if let ValueType::Tensor(TensorType {
                shape: Some(dims), ..
            }) = &mut r.ty
            {
                dims.insert(0, batch.clone());
            }
        }
    }
    Ok(result)
}

pub(super) fn infer_sequence_map(
    node: &str,
    body: &mut Graph,
    captured: usize,
    inputs: &[Option<Value>],
) -> Result<Vec<Inferred>> {
    let mapped = inputs.len().saturating_sub(captured);
    let mut values = Vec::new();
    for (i, input) in inputs.iter().enumerate().take(mapped) {
        let value = input
            .as_ref()
            .ok_or_else(|| error(node, "SequenceMap", format!("input {i} is missing")))?;
        let ty = match &value.ty {
            ValueType::Sequence(inner) => (**inner).clone(),
            other if i > 0 => other.clone(),
            other => {
                return Err(error(
                    node,
                    "SequenceMap",
                    format!("input 0 must be a sequence, found {other}"),
                ))
            }
        };
        values.push((ty, None));
    }
    values.extend(parent_inputs(&inputs[mapped..]));
    bind_subgraph_inputs(body, &values)?;
    infer_graph(body)?;
    Ok(subgraph_outputs(body)
        .into_iter()
        .map(|o| Inferred {
            ty: ValueType::Sequence(Box::new(o.ty)),
            known: None,
        })
        .collect())
}
