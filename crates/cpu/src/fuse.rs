//! Elementwise fusion inside the executor: a chain of f32 elementwise nodes whose intermediate
//! values have one reader each runs as one region, row by row, so memory is read and written
//! once instead of once per node.
//!
//! Regions are found once when the executor is built, from the IR's types; at run time a region
//! whose inputs turn out not to be f32 or not to broadcast to its shape runs node by node.

use crate::array::{Array, Data};
use crate::ops::{elementwise, Arg, R};
use crate::value::Value;
use rayon::prelude::*;
use sparkc_ir::op::{Binary, Unary};
use sparkc_ir::{DType, Graph, NodeId, Op, ValueRef, ValueType};
use std::collections::HashMap;

/// Where an instruction reads an operand.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Operand {
    /// The region's `i`-th external input.
    Input(usize),
    /// The result of the region's `i`-th instruction.
    Local(usize),
}

/// One elementwise op of a region.
#[derive(Clone, Debug)]
pub(crate) enum ElemOp {
    /// One input.
    Unary(Unary),
    /// Two broadcasting inputs.
    Binary(Binary),
}

/// One step of a region's program.
#[derive(Clone, Debug)]
pub(crate) struct Instr {
    op: ElemOp,
    args: Vec<Operand>,
}

/// A fused chain: its nodes (the last is the root, whose value the region produces), its
/// program, and its external inputs.
#[derive(Clone, Debug)]
pub(crate) struct Region {
    /// Nodes, in execution order.
    pub nodes: Vec<NodeId>,
    /// External inputs, in operand order.
    pub inputs: Vec<ValueRef>,
    program: Vec<Instr>,
}

impl Region {
    /// The ops of the region, as `Add+Erf+Mul`, for profiles.
    pub(crate) fn label(&self, graph: &Graph) -> String {
        let names: Vec<String> = self
            .nodes
            .iter()
            .map(|&id| graph.node(id).op.name())
            .collect();
        format!("Fused({})", names.join("+"))
    }
}

impl Region {
    /// A region running `steps` in order, each reading region inputs or earlier results; it
    /// lists no graph nodes or values, since it comes from a fused node's body.
    pub(crate) fn from_program(steps: Vec<(ElemOp, Vec<Operand>)>) -> Region {
        Region {
            nodes: Vec::new(),
            inputs: Vec::new(),
            program: steps
                .into_iter()
                .map(|(op, args)| Instr { op, args })
                .collect(),
        }
    }
}

/// The region instruction for an op, when it has one.
pub(crate) fn fusable(op: &Op) -> Option<ElemOp> {
    match op {
        Op::Unary(u) => match u {
            Unary::Identity
            | Unary::Not
            | Unary::IsNaN
            | Unary::IsInf { .. }
            | Unary::BitwiseNot => None,
            u => Some(ElemOp::Unary(u.clone())),
        },
        Op::Binary(
            b @ (Binary::Add
            | Binary::Sub
            | Binary::Mul
            | Binary::Div
            | Binary::Pow
            | Binary::PRelu),
        ) => Some(ElemOp::Binary(b.clone())),
        _ => None,
    }
}

fn f32_shape(graph: &Graph, v: ValueRef) -> Option<Vec<sparkc_ir::Dim>> {
    match &graph.value(v).ty {
        ValueType::Tensor(t) if t.dtype == DType::F32 => t.shape.clone(),
        _ => None,
    }
}

/// Finds the regions of two or more nodes in `order`.
pub(crate) fn find_regions(graph: &Graph, order: &[NodeId]) -> Vec<Region> {
    let outputs: Vec<ValueRef> = graph.outputs.clone();
    let readers = |v: ValueRef| -> usize {
        graph
            .dag
            .edges_directed(v.node, petgraph::Direction::Outgoing)
            .filter(|e| e.weight().output == v.output)
            .count()
    };
    let mut regions: Vec<Region> = Vec::new();
    let mut root_of: HashMap<NodeId, usize> = HashMap::new();
    for &id in order {
        let node = graph.node(id);
        let Some(op) = fusable(&node.op) else {
            continue;
        };
        let out = ValueRef {
            node: id,
            output: 0,
        };
        let Some(shape) = f32_shape(graph, out) else {
            continue;
        };
        let inputs = graph.inputs_of(id);
        if inputs.iter().any(Option::is_none) {
            continue;
        }
        let inputs: Vec<ValueRef> = inputs.into_iter().flatten().collect();
        // Join the region whose root is an input read only here, of this node's shape.
        let joined = inputs.iter().find_map(|v| {
            let r = *root_of.get(&v.node)?;
            (v.output == 0
                && readers(*v) == 1
                && !outputs.contains(v)
                && f32_shape(graph, *v).as_ref() == Some(&shape))
            .then_some(r)
        });
        let r = match joined {
            Some(r) => r,
            None => {
                regions.push(Region {
                    nodes: Vec::new(),
                    inputs: Vec::new(),
                    program: Vec::new(),
                });
                regions.len() - 1
            }
        };
        let region = &mut regions[r];
        let args = inputs
            .iter()
            .map(|v| match region.nodes.iter().position(|&n| n == v.node) {
                Some(k) if joined.is_some() && k + 1 == region.nodes.len() => Operand::Local(k),
                _ => {
                    let i = region
                        .inputs
                        .iter()
                        .position(|x| x == v)
                        .unwrap_or_else(|| {
                            region.inputs.push(*v);
                            region.inputs.len() - 1
                        });
                    Operand::Input(i)
                }
            })
            .collect();
        if let Some(previous) = region.nodes.last() {
            root_of.remove(previous);
        }
        region.nodes.push(id);
        region.program.push(Instr { op, args });
        root_of.insert(id, r);
    }
    regions.retain(|r| r.nodes.len() > 1);
    regions
}

/// An operand's values for one row: a slice, or one value repeated.
#[derive(Clone, Copy)]
enum Src<'a> {
    Slice(&'a [f32]),
    Splat(f32),
}

fn eval(op: &ElemOp, a: Src, b: Option<Src>, out: &mut [f32]) -> R<()> {
    match (op, b) {
        (ElemOp::Unary(u), _) => {
            match a {
                Src::Slice(values) => out.copy_from_slice(&values[..out.len()]),
                Src::Splat(v) => out.fill(v),
            }
            unary_in_place(u, out)
        }
        (ElemOp::Binary(bin), Some(b)) => {
            macro_rules! zip {
                ($f:expr) => {{
                    let f = $f;
                    match (a, b) {
                        (Src::Slice(x), Src::Slice(y)) => out
                            .iter_mut()
                            .zip(x.iter().zip(y))
                            .for_each(|(o, (&p, &q))| *o = f(p, q)),
                        (Src::Slice(x), Src::Splat(q)) => {
                            out.iter_mut().zip(x).for_each(|(o, &p)| *o = f(p, q))
                        }
                        (Src::Splat(p), Src::Slice(y)) => {
                            out.iter_mut().zip(y).for_each(|(o, &q)| *o = f(p, q))
                        }
                        (Src::Splat(p), Src::Splat(q)) => out.iter_mut().for_each(|o| *o = f(p, q)),
                    }
                }};
            }
            match bin {
                Binary::Add => zip!(|p: f32, q: f32| p + q),
                Binary::Sub => zip!(|p: f32, q: f32| p - q),
                Binary::Mul => zip!(|p: f32, q: f32| p * q),
                Binary::Div => zip!(|p: f32, q: f32| p / q),
                Binary::PRelu => zip!(|p: f32, q: f32| if p < 0.0 { p * q } else { p }),
                Binary::Pow => match b {
                    Src::Splat(2.0) => zip!(|p: f32, _q: f32| p * p),
                    Src::Splat(0.5) => zip!(|p: f32, _q: f32| p.sqrt()),
                    Src::Splat(3.0) => zip!(|p: f32, _q: f32| p * p * p),
                    Src::Splat(1.0) => zip!(|p: f32, _q: f32| p),
                    _ => zip!(|p: f32, q: f32| p.powf(q)),
                },
                other => return Err(format!("{other:?} cannot be fused")),
            }
            Ok(())
        }
        (ElemOp::Binary(_), None) => Err("a binary op lacks its second operand".into()),
    }
}

/// Applies a unary op to `values` in place.
fn unary_in_place(op: &Unary, values: &mut [f32]) -> R<()> {
    match elementwise::vector_unary(op) {
        Some(f) => {
            f(values);
            Ok(())
        }
        None => elementwise::unary_f32(op, values),
    }
}

/// How an external input is read along the output's rows.
struct Access<'a> {
    data: &'a [f32],
    /// Offset of each output row's first element, per outer axis of the (coalesced) shape.
    strides: Vec<usize>,
    /// 1 when the input varies along the row, 0 when it is constant along it.
    inner: usize,
}

/// A region bound to its inputs and its output's shape, evaluated over any flat range of the
/// output; an input may be the output buffer itself, read in place.
pub(crate) struct Bound<'a> {
    program: &'a [Instr],
    /// Outer axes of the coalesced output shape.
    outer: Vec<usize>,
    /// Length of a row (the coalesced innermost axis).
    inner: usize,
    access: Vec<Access<'a>>,
    in_place: Option<usize>,
}

impl<'a> Bound<'a> {
    /// Binds `region` to `inputs` for an output of `shape`; `in_place` names the input whose
    /// values the output buffer holds when evaluation starts (its array is not read). `None`
    /// when another input is not f32 or does not broadcast to `shape`.
    pub(crate) fn new(
        region: &'a Region,
        inputs: &[&'a Array],
        shape: &[usize],
        in_place: Option<usize>,
    ) -> Option<Bound<'a>> {
        let mut strides = Vec::with_capacity(inputs.len());
        for (i, a) in inputs.iter().enumerate() {
            if Some(i) == in_place {
                // The output buffer itself: its values are in place, read at the output's index.
                strides.push(elementwise::broadcast_strides(shape, shape));
                continue;
            }
            if a.dtype() != DType::F32 || !broadcasts_to(&a.shape, shape) {
                return None;
            }
            strides.push(elementwise::broadcast_strides(&a.shape, shape));
        }
        let merged = elementwise::coalesce(shape, &mut strides);
        let rank = merged.len();
        let access = inputs
            .iter()
            .zip(strides)
            .enumerate()
            .map(|(i, (a, st))| Access {
                data: match &a.data {
                    Data::F32(v) if Some(i) != in_place => v,
                    _ => &[],
                },
                inner: st[rank - 1],
                strides: st[..rank - 1].to_vec(),
            })
            .collect();
        Some(Bound {
            program: &region.program,
            outer: merged[..rank - 1].to_vec(),
            inner: merged[rank - 1].max(1),
            access,
            in_place,
        })
    }

    /// The ops, when the program is a chain of unary ops starting from the in-place input.
    fn unary_chain(&self) -> Option<Vec<&Unary>> {
        let own = self.in_place?;
        self.program
            .iter()
            .enumerate()
            .map(|(k, instr)| match (&instr.op, &instr.args[..]) {
                (ElemOp::Unary(u), [Operand::Input(i)]) if k == 0 && *i == own => Some(u),
                (ElemOp::Unary(u), [Operand::Local(j)]) if *j + 1 == k => Some(u),
                _ => None,
            })
            .collect()
    }

    /// Evaluates the output elements `start..start + out.len()` into `out`.
    pub(crate) fn eval(&self, start: usize, out: &mut [f32]) -> R<()> {
        self.eval_pieces(&mut [(start, out)])
    }

    /// Evaluates each piece `(start, out)`: the output elements `start..start + out.len()`.
    pub(crate) fn eval_pieces(&self, pieces: &mut [(usize, &mut [f32])]) -> R<()> {
        let steps = self.program.len();
        let longest = pieces.iter().map(|(_, p)| p.len()).max().unwrap_or(0);
        let width = self.inner.min(longest);
        let mut scratch = vec![vec![0f32; width]; steps];
        let mut own = vec![0f32; if self.in_place.is_some() { width } else { 0 }];
        if let Some(chain) = self.unary_chain() {
            // Unary ops on the buffer's own values run in place, with no copies.
            for (_, out) in pieces.iter_mut() {
                for op in &chain {
                    unary_in_place(op, out)?;
                }
            }
            return Ok(());
        }
        for (start, out) in pieces.iter_mut() {
            let start = *start;
            let mut done = 0;
            while done < out.len() {
                let position = start + done;
                let (row_index, column) = (position / self.inner, position % self.inner);
                let len = (self.inner - column).min(out.len() - done).min(width);
                let piece = &mut out[done..done + len];
                if self.in_place.is_some() {
                    own[..len].copy_from_slice(piece);
                }
                for k in 0..steps {
                    let instr = &self.program[k];
                    let (before, rest) = scratch.split_at_mut(k);
                    let target = &mut rest[0][..len];
                    let src = |operand: Operand| -> Src {
                        match operand {
                            Operand::Local(j) => Src::Slice(&before[j][..len]),
                            Operand::Input(i) if Some(i) == self.in_place => {
                                Src::Slice(&own[..len])
                            }
                            Operand::Input(i) => {
                                let a = &self.access[i];
                                let (mut offset, mut rest_index) = (0, row_index);
                                for axis in (0..self.outer.len()).rev() {
                                    offset += (rest_index % self.outer[axis]) * a.strides[axis];
                                    rest_index /= self.outer[axis];
                                }
                                if a.inner == 0 {
                                    Src::Splat(a.data[offset])
                                } else {
                                    offset += column;
                                    Src::Slice(&a.data[offset..offset + len])
                                }
                            }
                        }
                    };
                    let a = src(instr.args[0]);
                    let b = instr.args.get(1).map(|&o| src(o));
                    eval(&instr.op, a, b, target)?;
                }
                piece.copy_from_slice(&scratch[steps - 1][..len]);
                done += len;
            }
        }
        Ok(())
    }
}

/// Whether numpy broadcasting takes `from` to exactly `to`.
fn broadcasts_to(from: &[usize], to: &[usize]) -> bool {
    from.len() <= to.len()
        && from
            .iter()
            .rev()
            .zip(to.iter().rev())
            .all(|(&f, &t)| f == t || f == 1)
}

/// Runs a region on its external inputs, falling back to node-by-node execution when they are
/// not all f32 or do not broadcast to one shape.
pub(crate) fn run(region: &Region, mut inputs: Vec<Arg>) -> R<Value> {
    let arrays: Vec<&Array> = inputs
        .iter()
        .map(|a| a.value().as_tensor())
        .collect::<R<_>>()?;
    let shapes: Vec<&[usize]> = arrays.iter().map(|a| &a.shape[..]).collect();
    let shape = elementwise::broadcast_shape(&shapes)?;
    if arrays.iter().any(|a| a.dtype() != DType::F32) || shape.is_empty() {
        return fallback(region, &arrays);
    }
    let len: usize = shape.iter().product();
    // Reuse the buffer of an input that dies here and has the full shape.
    let reuse = inputs
        .iter()
        .position(|a| a.is_owned() && a.value().as_tensor().is_ok_and(|t| t.shape == shape));
    let mut out = match reuse {
        Some(i) => match std::mem::replace(
            &mut inputs[i],
            Arg::Owned(Value::Tensor(Array::f32(vec![0], vec![]))),
        ) {
            Arg::Owned(Value::Tensor(Array {
                data: Data::F32(v), ..
            })) => v,
            _ => vec![0f32; len],
        },
        None => vec![0f32; len],
    };
    let arrays: Vec<&Array> = inputs
        .iter()
        .map(|a| a.value().as_tensor())
        .collect::<R<_>>()?;
    let bound = Bound::new(region, &arrays, &shape, reuse)
        .ok_or_else(|| format!("the inputs do not broadcast to {shape:?}"))?;
    let chunk = bound.inner * (8192 / bound.inner).max(1);
    if len >= elementwise::PARALLEL_MIN {
        out.par_chunks_mut(chunk)
            .enumerate()
            .try_for_each(|(t, piece)| bound.eval(t * chunk, piece))?;
    } else {
        bound.eval(0, &mut out)?;
    }
    Ok(Value::Tensor(Array::f32(shape, out)))
}

/// Runs each instruction on whole arrays.
fn fallback(region: &Region, inputs: &[&Array]) -> R<Value> {
    let mut locals: Vec<Array> = Vec::with_capacity(region.program.len());
    for instr in &region.program {
        let get = |o: Operand| -> &Array {
            match o {
                Operand::Input(i) => inputs[i],
                Operand::Local(j) => &locals[j],
            }
        };
        let result = match &instr.op {
            ElemOp::Unary(u) => elementwise::unary(u, get(instr.args[0]).clone())?,
            ElemOp::Binary(b) => elementwise::binary(b, get(instr.args[0]), get(instr.args[1]))?,
        };
        locals.push(result);
    }
    locals
        .pop()
        .map(Value::Tensor)
        .ok_or_else(|| "an empty region".to_string())
}
