//! Weights laid out for GPU tensor cores: a product's constant FP32 weight stored `[K, N]` is
//! stored `[N, K]` instead, and the product reads it transposed. A tensor-core kernel copies
//! each output column's k-run of an `[N, K]` operand into shared memory with `cp.async`, but
//! must load a `[K, N]` FP32 operand through registers (`ldmatrix` transposes only 16-bit
//! elements before sm_100). BF16 and FP16 weights need no change (their `[K, N]` rows are
//! copied as they are), and quantized weights are transposed by `qfold`.
//!
//! Only GPU compiles ask for it (`Options::transposed_weights`): the CPU executor's products
//! read either layout, and runs of the CPU pipeline keep the model's own.

use crate::edit::{fresh_name, rank_of, readers, set_input, transpose_2d, with_b_transposed};
use crate::manager::{Pass, PassError};
use sparkc_ir::{DType, Graph, NodeId, Op, ValueRef};

/// Elements in one 16-byte `cp.async` chunk of FP32: K must be a multiple, or the kernel loads
/// the `[N, K]` operand through registers too.
const CHUNK_ELEMENTS: usize = 4;

/// Stores the constant FP32 `[K, N]` weights of products `[N, K]`.
pub struct TransposeWeights;

/// The products reading constant `v` as their B operand, with their ops reading it
/// transposed, when every reader is such a product and can.
fn transposable_readers(graph: &Graph, v: ValueRef) -> Option<Vec<(NodeId, Op)>> {
    if graph.outputs.contains(&v) {
        return None;
    }
    let readers = readers(graph, v);
    if readers.is_empty() {
        return None;
    }
    readers
        .into_iter()
        .map(|(reader, slot)| {
            let a = graph.inputs_of(reader).first().copied().flatten()?;
            // A rank-1 A is a vector, which the transposed product does not take.
            (slot == 1 && rank_of(graph, a)? >= 2).then_some(())?;
            Some((reader, with_b_transposed(&graph.node(reader).op)?))
        })
        .collect()
}

impl Pass for TransposeWeights {
    fn name(&self) -> &'static str {
        "weights"
    }

    fn run(&mut self, graph: &mut Graph) -> Result<String, PassError> {
        let mut weights = 0;
        let mut products = 0;
        for id in graph.topo_order()? {
            let Op::Const(t) = &graph.node(id).op else {
                continue;
            };
            let [k, _] = t.shape[..] else {
                continue;
            };
            if t.dtype != DType::F32 || k % CHUNK_ELEMENTS != 0 {
                continue;
            }
            let v = ValueRef {
                node: id,
                output: 0,
            };
            let Some(readers) = transposable_readers(graph, v) else {
                continue;
            };
            let Some(transposed) = transpose_2d(t) else {
                continue;
            };
            let name = fresh_name(graph, &format!("{}.t", graph.value(v).name));
            let new = graph.add_const(&name, transposed);
            for (reader, op) in readers {
                graph.dag[reader].op = op;
                graph.dag[reader].rules.push("weights".to_string());
                set_input(graph, reader, 1, new);
                products += 1;
            }
            graph.dag.remove_node(id);
            weights += 1;
        }
        if weights > 0 {
            sparkc_ir::infer_graph(graph)?;
        }
        Ok(format!(
            "{weights} FP32 weight(s) stored [N, K] for {products} product(s)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::TransposeWeights;
    use crate::testing::{ops, push, run_checked, tensor_type};
    use bytes::Bytes;
    use sparkc_ir::op::Binary;
    use sparkc_ir::{DType, Graph, Op, Tensor};

    /// A `rows×cols` FP32 constant holding 0, 1, 2…
    fn counting(rows: usize, cols: usize) -> Tensor {
        let values: Vec<u8> = (0..rows * cols)
            .flat_map(|i| (i as f32).to_le_bytes())
            .collect();
        Tensor::new(DType::F32, vec![rows, cols], Bytes::from(values)).expect("a tensor")
    }

    #[test]
    fn a_shared_fp32_weight_is_stored_once_transposed_for_its_products() {
        let mut g = Graph::new("w");
        let x = g.add_input("x", tensor_type("f32[N,3,8]"));
        let w = g.add_const("w", counting(8, 5));
        let y = push(&mut g, Op::MatMul, &[Some(x), Some(w)]);
        let z = push(&mut g, Op::MatMul, &[Some(x), Some(w)]);
        g.outputs = vec![y, z];
        let after = run_checked(&mut TransposeWeights, &g);
        assert_eq!(ops(&after), ["TransposedMatMul", "TransposedMatMul"]);
        assert!(after
            .dag
            .node_weights()
            .filter(|n| matches!(n.op, Op::TransposedMatMul { .. }))
            .all(|n| n.rules == ["weights"]));
        let weight = after
            .dag
            .node_weights()
            .find_map(|n| match &n.op {
                Op::Const(t) => Some(t.clone()),
                _ => None,
            })
            .expect("the weight");
        assert_eq!(weight.shape, [5, 8]);
    }

    #[test]
    fn weights_other_ops_read_or_with_k_not_a_multiple_of_four_stay_as_stored() {
        let mut g = Graph::new("w");
        let x = g.add_input("x", tensor_type("f32[8,8]"));
        let w = g.add_const("w", counting(8, 8));
        let y = push(&mut g, Op::MatMul, &[Some(x), Some(w)]);
        // The weight is also an elementwise operand, which would see the new layout.
        let z = push(&mut g, Op::Binary(Binary::Add), &[Some(x), Some(w)]);
        let odd = g.add_const("odd", counting(6, 4));
        let a = g.add_input("a", tensor_type("f32[2,6]"));
        let p = push(&mut g, Op::MatMul, &[Some(a), Some(odd)]);
        g.outputs = vec![y, z, p];
        let after = run_checked(&mut TransposeWeights, &g);
        assert_eq!(
            ops(&after).iter().filter(|o| *o == "MatMul").count(),
            2,
            "{:?}",
            ops(&after)
        );
    }

    #[test]
    fn gemm_reads_its_transposed_weight_with_bias_and_scales_kept() {
        let mut g = Graph::new("w");
        let x = g.add_input("x", tensor_type("f32[4,8]"));
        let w = g.add_const("w", counting(8, 3));
        let c = g.add_const("c", counting(1, 3));
        let gemm = Op::Gemm {
            alpha: 0.5,
            beta: 2.0,
            trans_a: false,
            trans_b: false,
        };
        let y = push(&mut g, gemm, &[Some(x), Some(w), Some(c)]);
        g.outputs = vec![y];
        let after = run_checked(&mut TransposeWeights, &g);
        assert!(after.dag.node_weights().any(|n| matches!(
            n.op,
            Op::Gemm {
                trans_b: true,
                alpha,
                ..
            } if alpha == 0.5
        )));
    }
}
