//! Shape and dtype inference, with symbolic dims and compile-time values of small tensors.
//!
//! [`infer_graph`] walks a graph in topological order and sets the type (and, for small integer
//! tensors such as shapes, the value) of every node output. Shapes that depend on data become
//! [`Dim::Dynamic`](crate::Dim::Dynamic) rather than a guess.

mod control;
mod extra_ops;
mod fold;
mod rules;

use crate::dim::Dim;
use crate::dtype::DType;
use crate::error::{IrError, Result};
use crate::graph::{Graph, NodeId};
use crate::op::Op;
use crate::types::{Known, Shape, TensorType, Value, ValueType};

/// The type and known value inferred for one output.
#[derive(Clone, Debug, PartialEq)]
pub struct Inferred {
    /// Output type.
    pub ty: ValueType,
    /// Output value, when it can be computed at compile time.
    pub known: Option<Known>,
}

impl Inferred {
    fn tensor(dtype: DType, shape: Shape) -> Inferred {
        Inferred {
            ty: ValueType::Tensor(TensorType { dtype, shape }),
            known: None,
        }
    }

    fn with_known(mut self, known: Option<Known>) -> Inferred {
        self.known = known;
        self
    }
}

/// Infers every output of every node of `graph` (and of its subgraphs), in place.
pub fn infer_graph(graph: &mut Graph) -> Result<()> {
    for id in graph.topo_order()? {
        infer_node_in_place(graph, id)?;
    }
    Ok(())
}

/// Infers the outputs of one node from its inputs' current types and stores them.
pub fn infer_node_in_place(graph: &mut Graph, id: NodeId) -> Result<()> {
    if matches!(graph.node(id).op, Op::Input | Op::Const(_)) {
        return Ok(());
    }
    let inputs: Vec<Option<Value>> = graph
        .inputs_of(id)
        .into_iter()
        .map(|v| v.map(|v| graph.value(v).clone()))
        .collect();
    let node = &mut graph.dag[id];
    let inferred = match &mut node.op {
        Op::If {
            then_branch,
            else_branch,
        } => control::infer_if(&node.name, then_branch, else_branch, &inputs)?,
        Op::Loop { body, carried } => control::infer_loop(&node.name, body, *carried, &inputs)?,
        Op::SequenceMap { body, captured } => {
            control::infer_sequence_map(&node.name, body, *captured, &inputs)?
        }
        Op::Scan {
            body,
            num_scan_inputs,
            captured,
            batched,
            scan_input_axes,
            scan_output_axes,
            ..
        } => control::infer_scan(
            &node.name,
            body,
            (*num_scan_inputs as usize, *captured, *batched),
            scan_input_axes,
            scan_output_axes,
            &inputs,
        )?,
        Op::Fused(fused) => vec![infer_fused(&node.name, fused, &inputs)?],
        op => {
            let ctx = Ctx {
                node: &node.name,
                op,
                inputs: &inputs,
                outputs: node.outputs.len(),
            };
            rules::infer(&ctx)?
        }
    };
    if inferred.len() < node.outputs.len() {
        return Err(IrError::Node {
            node: node.name.clone(),
            op: node.op.name(),
            message: format!(
                "has {} outputs, but the op produces at most {}",
                node.outputs.len(),
                inferred.len()
            ),
        });
    }
    for (value, inferred) in node.outputs.iter_mut().zip(inferred) {
        value.ty = inferred.ty;
        value.known = inferred.known;
    }
    Ok(())
}

/// The result of a fused node: its body inferred node by node on a scratch graph.
fn infer_fused(
    name: &str,
    fused: &crate::fused::Fused,
    inputs: &[Option<Value>],
) -> Result<Inferred> {
    use crate::fused::Operand;
    let mut scratch = Graph::new(name);
    let external: Vec<Option<crate::ValueRef>> = inputs
        .iter()
        .map(|v| {
            v.as_ref().map(|v| crate::ValueRef {
                node: scratch.add_node(v.name.clone(), Op::Input, &[], vec![v.clone()]),
                output: 0,
            })
        })
        .collect();
    let mut body: Vec<crate::ValueRef> = Vec::with_capacity(fused.body.len());
    for (k, node) in fused.body.iter().enumerate() {
        let fail = |message: String| IrError::Node {
            node: name.to_string(),
            op: "Fused".to_string(),
            message,
        };
        let args = node
            .args
            .iter()
            .map(|a| match a {
                None => Ok(None),
                Some(Operand::Input(i)) => external.get(*i).copied().ok_or_else(|| {
                    fail(format!(
                        "body node {k} reads input {i}, which the node lacks"
                    ))
                }),
                Some(Operand::Node(j)) if *j < k => Ok(Some(body[*j])),
                Some(Operand::Node(j)) => Err(fail(format!(
                    "body node {k} reads body node {j}, which does not precede it"
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        let placeholder = Value {
            name: format!("{name}.{k}"),
            ty: ValueType::Tensor(TensorType {
                dtype: DType::F32,
                shape: None,
            }),
            known: None,
        };
        let id = scratch.add_node(
            format!("{name}.{k}"),
            node.op.clone(),
            &args,
            vec![placeholder],
        );
        infer_node_in_place(&mut scratch, id)
            .map_err(|e| fail(format!("body node {k} ({}): {e}", node.op.name())))?;
        body.push(crate::ValueRef {
            node: id,
            output: 0,
        });
    }
    let last = body.last().ok_or_else(|| IrError::Node {
        node: name.to_string(),
        op: "Fused".to_string(),
        message: "the body is empty".to_string(),
    })?;
    let value = scratch.value(*last);
    Ok(Inferred {
        ty: value.ty.clone(),
        known: None,
    })
}

/// Infers the outputs a node would have, without changing the graph (used by the verifier).
pub fn infer_node(graph: &Graph, id: NodeId) -> Result<Vec<Inferred>> {
    let node = graph.node(id);
    let inputs: Vec<Option<Value>> = graph
        .inputs_of(id)
        .into_iter()
        .map(|v| v.map(|v| graph.value(v).clone()))
        .collect();
    infer_op(&node.name, &node.op, &inputs, node.outputs.clone())
}

/// Infers what `op` gives on inputs of these types, for a node named `name` whose outputs are
/// `outputs` (their names are kept, their types replaced).
pub fn infer_op(
    name: &str,
    op: &Op,
    inputs: &[Option<Value>],
    outputs: Vec<Value>,
) -> Result<Vec<Inferred>> {
    let mut scratch = Graph::new("");
    let inputs: Vec<_> = inputs
        .iter()
        .map(|v| {
            v.as_ref().map(|value| {
                let input =
                    scratch.add_node(value.name.clone(), Op::Input, &[], vec![value.clone()]);
                crate::ValueRef {
                    node: input,
                    output: 0,
                }
            })
        })
        .collect();
    let copy = scratch.add_node(name.to_string(), op.clone(), &inputs, outputs);
    infer_node_in_place(&mut scratch, copy)?;
    Ok(scratch
        .node(copy)
        .outputs
        .iter()
        .map(|v| Inferred {
            ty: v.ty.clone(),
            known: v.known.clone(),
        })
        .collect())
}

/// What a rule sees of one node: its name and op, its inputs' values and its output count.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    node: &'a str,
    op: &'a Op,
    inputs: &'a [Option<Value>],
    outputs: usize,
}

impl<'a> Ctx<'a> {
    fn err(&self, message: impl Into<String>) -> IrError {
        IrError::Node {
            node: self.node.to_string(),
            op: self.op.name(),
            message: message.into(),
        }
    }

    fn opt(&self, i: usize) -> Option<&'a Value> {
        self.inputs.get(i).and_then(Option::as_ref)
    }

    fn input(&self, i: usize) -> Result<&'a Value> {
        self.opt(i)
            .ok_or_else(|| self.err(format!("required input {i} is missing")))
    }

    fn tensor(&self, i: usize) -> Result<&'a TensorType> {
        let value = self.input(i)?;
        value.ty.as_tensor().ok_or_else(|| {
            self.err(format!(
                "input {i} ('{}') must be a tensor, found {}",
                value.name, value.ty
            ))
        })
    }

    fn dtype(&self, i: usize) -> Result<DType> {
        Ok(self.tensor(i)?.dtype)
    }

    fn shape(&self, i: usize) -> Result<&'a Shape> {
        Ok(&self.tensor(i)?.shape)
    }

    /// The input's dims when its rank is known, with a check of the minimum rank.
    fn dims(&self, i: usize, min_rank: usize) -> Result<Option<&'a [Dim]>> {
        match self.shape(i)? {
            Some(dims) if dims.len() < min_rank => Err(self.err(format!(
                "input {i} ('{}') must have rank at least {min_rank}, found rank {}",
                self.input(i)?.name,
                dims.len()
            ))),
            Some(dims) => Ok(Some(dims)),
            None => Ok(None),
        }
    }

    fn known(&self, i: usize) -> Option<&'a Known> {
        self.opt(i).and_then(|v| v.known.as_ref())
    }

    fn known_i64s(&self, i: usize) -> Option<Vec<i64>> {
        self.known(i).and_then(Known::as_i64s)
    }

    fn axis(&self, axis: i64, rank: usize) -> Result<usize> {
        normalize_axis(axis, rank)
            .ok_or_else(|| self.err(format!("axis {axis} is out of range for rank {rank}")))
    }

    fn same_dtype(&self, indices: &[usize]) -> Result<DType> {
        let first = self.dtype(indices[0])?;
        for &i in &indices[1..] {
            if self.opt(i).is_some() && self.dtype(i)? != first {
                return Err(self.err(format!(
                    "inputs {} and {i} must have the same element type, found {first} and {}",
                    indices[0],
                    self.dtype(i)?
                )));
            }
        }
        Ok(first)
    }
}

/// Maps a possibly negative axis to `0..rank`.
pub fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let rank = i64::try_from(rank).ok()?;
    let axis = if axis < 0 { axis + rank } else { axis };
    (0..rank).contains(&axis).then_some(axis as usize)
}

/// Broadcasts two dims by numpy rules; `None` when they can never match.
pub fn broadcast_dim(a: &Dim, b: &Dim) -> Option<Dim> {
    if a == b {
        return Some(a.clone());
    }
    match (a.as_const(), b.as_const()) {
        (Some(1), _) => Some(b.clone()),
        (_, Some(1)) => Some(a.clone()),
        (Some(_), Some(_)) => None,
        // A symbolic or dynamic dim facing a constant other than 1 must equal it (or be 1).
        (Some(_), None) => Some(a.clone()),
        (None, Some(_)) => Some(b.clone()),
        (None, None) => Some(Dim::Dynamic),
    }
}

/// Broadcasts shapes by numpy rules; `Err` names the first pair of dims that cannot match.
pub fn broadcast_shapes(shapes: &[&Shape]) -> Result<Shape, String> {
    let mut out: Vec<Dim> = Vec::new();
    for shape in shapes {
        let Some(dims) = shape else { return Ok(None) };
        if dims.len() > out.len() {
            let mut padded = vec![Dim::known(1); dims.len() - out.len()];
            padded.extend(out);
            out = padded;
        }
        let offset = out.len() - dims.len();
        for (i, d) in dims.iter().enumerate() {
            out[offset + i] = broadcast_dim(&out[offset + i], d).ok_or_else(|| {
                format!("shapes cannot broadcast: dim {} vs {d}", out[offset + i])
            })?;
        }
    }
    Ok(Some(out))
}
