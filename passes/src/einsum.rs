//! `Einsum` lowered to the ops that have kernels and that the quantizer and the fusion rules
//! know. Labels that only one operand has and the result lacks are summed first
//! (`ReduceSum`); the operands are then combined left to right, each pair by a batched
//! `MatMul` when labels are summed between them (their axes moved into place by `Transpose`,
//! `Unsqueeze` and, for several summed labels, a `Reshape`) or by a broadcast `Mul` when none
//! are; a last `Transpose` puts the result's axes in the equation's order. An `Einsum` that
//! reads a diagonal (a label repeated in one operand), whose operand shapes are unknown, or
//! whose summed axes disagree in size stays as it is.

use crate::edit::{is_identity, take_place, Builder};
use crate::manager::{Pass, PassError};
use sparkc_ir::einsum::Equation;
use sparkc_ir::op::{Binary, Reduction, Unary};
use sparkc_ir::{DType, Dim, Graph, NodeId, Op, ValueRef};
use std::collections::BTreeSet;

/// Rewrites every `Einsum` it can into products, reductions and axis moves.
pub struct LowerEinsum;

impl Pass for LowerEinsum {
    fn name(&self) -> &'static str {
        "einsum"
    }

    fn run(&mut self, graph: &mut Graph) -> Result<String, PassError> {
        let ids: Vec<NodeId> = graph
            .topo_order()?
            .into_iter()
            .filter(|&id| matches!(graph.node(id).op, Op::Einsum { .. }))
            .collect();
        let (mut lowered, mut kept) = (0, 0);
        for id in ids {
            match plan(graph, id)? {
                Some(Plan { operands, output }) => {
                    lower(graph, id, operands, &output)?;
                    lowered += 1;
                }
                None => kept += 1,
            }
        }
        if lowered > 0 {
            sparkc_ir::infer_graph(graph)?;
        }
        Ok(format!(
            "{lowered} einsum(s) lowered to products, {kept} kept"
        ))
    }
}

/// A value with the label and size of each of its axes.
#[derive(Clone, Debug)]
struct Labelled {
    value: ValueRef,
    labels: Vec<char>,
    dims: Vec<Dim>,
}

impl Labelled {
    fn has(&self, label: char) -> bool {
        self.labels.contains(&label)
    }

    fn dim(&self, label: char) -> Option<&Dim> {
        let i = self.labels.iter().position(|&l| l == label)?;
        self.dims.get(i)
    }
}

/// How two operands' labels meet: labels both have and the result keeps (`batch`), labels both
/// have and the result sums (`summed`), and labels only one has.
struct Meeting {
    batch: Vec<char>,
    summed: Vec<char>,
    only_a: Vec<char>,
    only_b: Vec<char>,
}

fn meet(a: &Labelled, b: &Labelled, keep: &BTreeSet<char>) -> Meeting {
    let shared = |l: &&char| b.has(**l);
    Meeting {
        batch: a
            .labels
            .iter()
            .filter(shared)
            .filter(|l| keep.contains(l))
            .copied()
            .collect(),
        summed: a
            .labels
            .iter()
            .filter(shared)
            .filter(|l| !keep.contains(l))
            .copied()
            .collect(),
        only_a: a.labels.iter().filter(|&&l| !b.has(l)).copied().collect(),
        only_b: b.labels.iter().filter(|&&l| !a.has(l)).copied().collect(),
    }
}

/// The product of the sizes of `labels` in `x`, when they are all known.
fn known_size(x: &Labelled, labels: &[char]) -> Option<i64> {
    labels
        .iter()
        .map(|&l| x.dim(l).and_then(Dim::as_const))
        .product()
}

/// An `Einsum` ready to lower: its operands, labelled, and its result's labels.
struct Plan {
    operands: Vec<Labelled>,
    output: Vec<char>,
}

/// The plan of `id`, when it can be lowered.
fn plan(graph: &Graph, id: NodeId) -> Result<Option<Plan>, PassError> {
    let node = graph.node(id);
    let Op::Einsum { equation } = &node.op else {
        return Ok(None);
    };
    let mut operands = Vec::new();
    for input in graph.inputs_of(id) {
        let Some(value) = input else {
            return Ok(None);
        };
        let Some(dims) = graph
            .value(value)
            .ty
            .as_tensor()
            .and_then(|t| t.shape.clone())
        else {
            return Ok(None);
        };
        operands.push(Labelled {
            value,
            labels: Vec::new(),
            dims,
        });
    }
    let ranks: Vec<usize> = operands.iter().map(|x| x.dims.len()).collect();
    let parsed = Equation::parse(equation, &ranks).map_err(|message| PassError::Node {
        node: node.name.clone(),
        op: node.op.name(),
        message,
    })?;
    if parsed.reads_a_diagonal() || operands.is_empty() {
        return Ok(None);
    }
    for (x, labels) in operands.iter_mut().zip(parsed.operands) {
        x.labels = labels;
    }
    // Dry run over the labels alone: every summed label must have one size, and several
    // summed labels merged into one axis need known sizes.
    let mut left = operands[0].clone();
    for (k, right) in operands.iter().enumerate().skip(1) {
        let keep = kept_labels(&parsed.output, &operands[k + 1..]);
        let m = meet(&left, right, &keep);
        if m.summed.iter().any(|&l| left.dim(l) != right.dim(l)) {
            return Ok(None);
        }
        if m.summed.len() > 1 && known_size(&left, &m.summed).is_none() {
            return Ok(None);
        }
        let batch_dims = m.batch.iter().map(|&l| broadcast(&left, right, l));
        left = Labelled {
            value: left.value,
            labels: [&m.batch[..], &m.only_a, &m.only_b].concat(),
            dims: batch_dims
                .chain(m.only_a.iter().filter_map(|&l| left.dim(l).cloned()))
                .chain(m.only_b.iter().filter_map(|&l| right.dim(l).cloned()))
                .collect(),
        };
    }
    Ok(Some(Plan {
        operands,
        output: parsed.output,
    }))
}

/// The labels still needed after the operands before `rest`: the result's and `rest`'s.
fn kept_labels(output: &[char], rest: &[Labelled]) -> BTreeSet<char> {
    output
        .iter()
        .chain(rest.iter().flat_map(|x| &x.labels))
        .copied()
        .collect()
}

/// The size of batch label `l` in the product of `a` and `b` (a size 1 broadcasts).
fn broadcast(a: &Labelled, b: &Labelled, l: char) -> Dim {
    match (a.dim(l), b.dim(l)) {
        (Some(x), Some(y)) if x.as_const() == Some(1) => y.clone(),
        (Some(x), _) => x.clone(),
        (None, Some(y)) => y.clone(),
        (None, None) => Dim::Dynamic,
    }
}

/// The steps of an `Einsum` lowering.
impl Builder<'_> {
    /// `x` with its axes in the order of `order`, where `None` is a new axis of size 1, and the
    /// rank that results. New axes before the first label are left out (broadcasting supplies
    /// them) unless they are among the last `matrix_axes`, which a product needs.
    fn arrange(
        &mut self,
        x: &Labelled,
        order: &[Option<char>],
        matrix_axes: usize,
    ) -> Result<(ValueRef, usize), PassError> {
        let droppable = order.len().saturating_sub(matrix_axes);
        let leading = order[..droppable]
            .iter()
            .take_while(|l| l.is_none())
            .count();
        let order = &order[leading..];
        let mut value = x.value;
        let perm: Vec<i64> = order
            .iter()
            .flatten()
            .filter_map(|&l| x.labels.iter().position(|&m| m == l))
            .map(|i| i as i64)
            .collect();
        if !is_identity(&perm) {
            value = self.add(Op::Transpose { perm }, "transpose", &[Some(value)]);
        }
        let units: Vec<i64> = (0..order.len())
            .filter(|&i| order[i].is_none())
            .map(|i| i as i64)
            .collect();
        if !units.is_empty() {
            value = self.unsqueeze(value, &units)?;
        }
        Ok((value, order.len()))
    }

    /// `x` as an operand of a batched product: its `outer` axes, then a matrix of its `line`
    /// axis (the row of `a`, the column of `b`; a unit axis when `None`) and its `summed` axes,
    /// merged into one of size `k` when there are several: `[line, k]` when `summed_last`,
    /// else `[k, line]`. Where `x` holds the matrix the other way round, it is arranged that
    /// way and read through a swap of its last two axes, which the fusion rules fold into the
    /// product or into attention.
    fn matrix_operand(
        &mut self,
        x: &Labelled,
        outer: &[Option<char>],
        line: Option<char>,
        summed: &[char],
        summed_last: bool,
        k: Option<i64>,
    ) -> Result<ValueRef, PassError> {
        let position = |l: char| x.labels.iter().position(|&m| m == l);
        let stored_summed_last = match (line, summed) {
            (Some(l), [s]) => position(l) < position(*s),
            (None, [_]) => summed_last,
            _ => true,
        };
        let summed_order: Vec<Option<char>> = summed.iter().map(|&l| Some(l)).collect();
        let matrix = if stored_summed_last {
            [&[line][..], &summed_order].concat()
        } else {
            [&summed_order[..], &[line]].concat()
        };
        let order = [outer, &matrix].concat();
        let (mut value, mut rank) = self.arrange(x, &order, matrix.len())?;
        if let Some(k) = k {
            let shape = self.ints(&[vec![0; rank - summed.len()], vec![k]].concat(), "shape")?;
            let reshape = Op::Reshape { allowzero: false };
            value = self.add(reshape, "reshape", &[Some(value), Some(shape)]);
            rank = rank + 1 - summed.len();
        }
        if stored_summed_last != summed_last {
            let mut swap: Vec<i64> = (0..rank as i64).collect();
            swap.swap(rank - 2, rank - 1);
            value = self.add(Op::Transpose { perm: swap }, "transpose", &[Some(value)]);
        }
        Ok(value)
    }

    /// `x` with the labels no later operand and not the result has summed away.
    fn sum_alone(&mut self, x: Labelled, keep: &BTreeSet<char>) -> Result<Labelled, PassError> {
        let axes: Vec<i64> = (0..x.labels.len())
            .filter(|&i| !keep.contains(&x.labels[i]))
            .map(|i| i as i64)
            .collect();
        if axes.is_empty() {
            return Ok(x);
        }
        let axes_value = self.ints(&axes, "axes")?;
        let op = Op::Reduce {
            kind: Reduction::Sum,
            keepdims: false,
            noop_with_empty_axes: false,
        };
        let value = self.add(op, "sum", &[Some(x.value), Some(axes_value)]);
        let (labels, dims) = x
            .labels
            .iter()
            .zip(&x.dims)
            .filter(|(l, _)| keep.contains(l))
            .map(|(&l, d)| (l, d.clone()))
            .unzip();
        Ok(Labelled {
            value,
            labels,
            dims,
        })
    }

    /// The product of `a` and `b` with the labels outside `keep` summed.
    fn combine(
        &mut self,
        a: &Labelled,
        b: &Labelled,
        keep: &BTreeSet<char>,
    ) -> Result<Labelled, PassError> {
        let m = meet(a, b, keep);
        let label = |l: &char| Some(*l);
        let units = |n: usize| vec![None; n];
        let batch: Vec<Option<char>> = m.batch.iter().map(label).collect();
        let dims_of = |labels: &[char]| -> Vec<Dim> {
            labels
                .iter()
                .map(|&l| match (a.has(l), b.has(l)) {
                    (true, true) => broadcast(a, b, l),
                    (true, false) => a.dim(l).cloned().unwrap_or(Dim::Dynamic),
                    _ => b.dim(l).cloned().unwrap_or(Dim::Dynamic),
                })
                .collect()
        };
        if m.summed.is_empty() {
            let only_a: Vec<Option<char>> = m.only_a.iter().map(label).collect();
            let only_b: Vec<Option<char>> = m.only_b.iter().map(label).collect();
            let (x, _) =
                self.arrange(a, &[&batch[..], &only_a, &units(only_b.len())].concat(), 0)?;
            let (y, _) =
                self.arrange(b, &[&batch[..], &units(only_a.len()), &only_b].concat(), 0)?;
            let value = self.add(Op::Binary(Binary::Mul), "mul", &[Some(x), Some(y)]);
            let labels = [&m.batch[..], &m.only_a, &m.only_b].concat();
            let dims = dims_of(&labels);
            return Ok(Labelled {
                value,
                labels,
                dims,
            });
        }
        // A batched product [batch, rest_a, rest_b, row, k] x [batch, rest_a, rest_b, k, col],
        // with the last label only `a` has as its row and the last only `b` has as its column
        // (a unit axis where there is none).
        let (row, rest_a) = match m.only_a.split_last() {
            Some((&r, rest)) => (Some(r), rest.to_vec()),
            None => (None, Vec::new()),
        };
        let (col, rest_b) = match m.only_b.split_last() {
            Some((&c, rest)) => (Some(c), rest.to_vec()),
            None => (None, Vec::new()),
        };
        let rest_a_order: Vec<Option<char>> = rest_a.iter().map(label).collect();
        let rest_b_order: Vec<Option<char>> = rest_b.iter().map(label).collect();
        let k = if m.summed.len() > 1 {
            Some(known_size(a, &m.summed).ok_or_else(|| {
                PassError::Graph(format!("{}: summed axes of unknown size", self.base))
            })?)
        } else {
            None
        };
        let a_outer = [&batch[..], &rest_a_order, &units(rest_b.len())].concat();
        let b_outer = [&batch[..], &units(rest_a.len()), &rest_b_order].concat();
        let x = self.matrix_operand(a, &a_outer, row, &m.summed, true, k)?;
        let y = self.matrix_operand(b, &b_outer, col, &m.summed, false, k)?;
        let mut value = self.add(Op::MatMul, "matmul", &[Some(x), Some(y)]);
        let outer = m.batch.len() + rest_a.len() + rest_b.len();
        let squeezed: Vec<i64> = [(row.is_none(), outer), (col.is_none(), outer + 1)]
            .iter()
            .filter(|(missing, _)| *missing)
            .map(|&(_, axis)| axis as i64)
            .collect();
        if !squeezed.is_empty() {
            let axes = self.ints(&squeezed, "axes")?;
            value = self.add(Op::Squeeze, "squeeze", &[Some(value), Some(axes)]);
        }
        let labels = [
            &m.batch[..],
            &rest_a,
            &rest_b,
            &Vec::from_iter(row),
            &Vec::from_iter(col),
        ]
        .concat();
        let dims = dims_of(&labels);
        Ok(Labelled {
            value,
            labels,
            dims,
        })
    }
}

/// Replaces `Einsum` node `id` by the lowering of `operands` into a value labelled `output`.
fn lower(
    graph: &mut Graph,
    id: NodeId,
    operands: Vec<Labelled>,
    output: &[char],
) -> Result<(), PassError> {
    let node = graph.node(id);
    let einsum_out = ValueRef {
        node: id,
        output: 0,
    };
    let dtype = node.outputs[0]
        .ty
        .as_tensor()
        .map_or(DType::F32, |t| t.dtype);
    let mut builder = Builder {
        base: node.name.clone(),
        graph,
        dtype,
        rule: "lower-einsum",
    };
    let mut summed_first = Vec::with_capacity(operands.len());
    for (k, x) in operands.iter().enumerate() {
        let others = operands
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != k)
            .flat_map(|(_, y)| y.labels.iter().copied());
        let keep: BTreeSet<char> = output.iter().copied().chain(others).collect();
        summed_first.push(builder.sum_alone(x.clone(), &keep)?);
    }
    let mut left = summed_first[0].clone();
    for k in 1..summed_first.len() {
        let keep = kept_labels(output, &summed_first[k + 1..]);
        left = builder.combine(&left, &summed_first[k], &keep)?;
    }
    let perm: Vec<i64> = output
        .iter()
        .filter_map(|&l| left.labels.iter().position(|&m| m == l))
        .map(|i| i as i64)
        .collect();
    let last = if !is_identity(&perm) {
        builder.add(Op::Transpose { perm }, "transpose", &[Some(left.value)])
    } else if operands.iter().any(|x| x.value == left.value) {
        builder.add(Op::Unary(Unary::Identity), "identity", &[Some(left.value)])
    } else {
        left.value
    };
    take_place(builder.graph, einsum_out, last);
    builder.graph.dag.remove_node(id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ops, push, run_checked, tensor_type};
    use sparkc_ir::{TensorType, ValueType};

    /// A graph of one `Einsum` over inputs of the given types.
    fn einsum(equation: &str, types: &[&str]) -> Graph {
        let mut g = Graph::new("test");
        let inputs: Vec<Option<ValueRef>> = types
            .iter()
            .enumerate()
            .map(|(i, ty)| Some(g.add_input(&format!("x{i}"), tensor_type(ty))))
            .collect();
        let op = Op::Einsum {
            equation: equation.to_string(),
        };
        let y = push(&mut g, op, &inputs);
        g.outputs = vec![y];
        g
    }

    /// Lowers, checks the result against the `Einsum` it replaced, returns the ops left.
    fn lowered(equation: &str, types: &[&str]) -> Vec<String> {
        let before = einsum(equation, types);
        let after = run_checked(&mut LowerEinsum, &before);
        let (a, b) = (&before.outputs[0], &after.outputs[0]);
        assert_eq!(before.value(*a).name, after.value(*b).name, "{equation}");
        ops(&after)
    }

    #[test]
    fn products_become_matmuls() {
        assert_eq!(
            lowered("bij,bjk->bik", &["f32[B,3,4]", "f32[B,4,5]"]),
            ["MatMul"]
        );
        assert_eq!(
            lowered("bhqd,bhkd->bhqk", &["f32[2,3,5,8]", "f32[2,3,7,8]"]),
            ["MatMul", "Transpose"]
        );
        assert_eq!(
            lowered("bnd,hd->bnh", &["f32[B,N,8]", "f32[6,8]"]),
            ["MatMul", "Transpose"]
        );
        assert_eq!(
            lowered("ij,j->i", &["f32[3,4]", "f32[4]"]),
            ["MatMul", "Squeeze", "Unsqueeze"]
        );
        lowered("i,i", &["f32[5]", "f32[5]"]);
        assert_eq!(
            lowered("ji,jk->ik", &["f32[4,3]", "f32[4,5]"]),
            ["MatMul", "Transpose"]
        );
        assert_eq!(
            lowered("bhqk,bkhd->bqhd", &["f32[2,3,5,7]", "f32[2,7,3,4]"]),
            ["MatMul", "Transpose", "Transpose"]
        );
        lowered("abk,cdk->adcb", &["f32[2,3,4]", "f32[5,6,4]"]);
        lowered("xabk,xcdk->xdacb", &["f32[X,2,3,4]", "f32[X,5,6,4]"]);
        lowered("...ij,...jk", &["f32[2,1,3,4]", "f32[5,4,2]"]);
    }

    #[test]
    fn several_summed_labels_merge_into_one_axis() {
        lowered("dcba,cdbe->ea", &["f32[5,4,3,2]", "f32[4,5,3,6]"]);
        lowered("bc,bc->", &["f32[3,4]", "f32[3,4]"]);
        let after = lowered("abcd,cdbe->ae", &["f32[2,3,4,5]", "f32[4,5,3,6]"]);
        assert_eq!(after.iter().filter(|o| *o == "Reshape").count(), 2);
        assert!(after.contains(&"MatMul".to_string()));
    }

    #[test]
    fn products_without_summed_labels_are_multiplies() {
        assert_eq!(
            lowered("i,j->ij", &["f32[3]", "f32[4]"]),
            ["Mul", "Unsqueeze"]
        );
        assert_eq!(
            lowered("bij,bj->bji", &["f32[N,3,4]", "f32[N,4]"]),
            ["Mul", "Transpose", "Unsqueeze"]
        );
    }

    #[test]
    fn single_operands_transpose_and_sum() {
        assert_eq!(lowered("ij->ji", &["f32[3,4]"]), ["Transpose"]);
        assert_eq!(lowered("ij->i", &["f32[3,4]"]), ["ReduceSum"]);
        assert_eq!(
            lowered("ijk->ki", &["f32[2,3,4]"]),
            ["ReduceSum", "Transpose"]
        );
        assert_eq!(lowered("ij->ij", &["f32[3,4]"]), ["Identity"]);
    }

    #[test]
    fn three_operands_combine_left_to_right() {
        let after = lowered("ij,jk,kl->il", &["f32[2,3]", "f32[3,4]", "f32[4,5]"]);
        assert_eq!(after, ["MatMul", "MatMul"]);
        lowered("ab,bc,ca->", &["f32[2,3]", "f32[3,4]", "f32[4,2]"]);
        lowered("ai,bi,ci->abc", &["f32[2,3]", "f32[4,3]", "f32[5,3]"]);
    }

    #[test]
    fn labels_one_operand_alone_has_are_summed_first() {
        assert_eq!(
            lowered("ijx,jk->ik", &["f32[2,3,6]", "f32[3,4]"]),
            ["MatMul", "ReduceSum"]
        );
    }

    #[test]
    fn diagonals_and_unknown_shapes_stay() {
        let g = einsum("...ii->...i", &["f32[3,5,5]"]);
        let mut after = g.clone();
        LowerEinsum.run(&mut after).expect("runs");
        assert_eq!(ops(&after), ["Einsum"]);
        let mut g = Graph::new("test");
        let x = g.add_input(
            "x",
            ValueType::Tensor(TensorType {
                dtype: DType::F32,
                shape: None,
            }),
        );
        let op = Op::Einsum {
            equation: "ij->ji".into(),
        };
        let y = push(&mut g, op, &[Some(x)]);
        g.outputs = vec![y];
        LowerEinsum.run(&mut g).expect("runs");
        assert_eq!(ops(&g), ["Einsum"]);
    }
}
