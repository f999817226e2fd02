//! Inference-mode `BatchNormalization` folded into the `Conv` or `Gemm` before it (the
//! per-channel scale goes into the weights and the shift into the bias), or else rewritten as a
//! per-channel multiply and add that fuse with the elementwise ops around it.

use crate::edit::{const_input, has_output, readers, replace_uses};
use crate::manager::{Pass, PassError};
use sparkc_ir::op::Binary;
use sparkc_ir::{DType, Graph, NodeId, Op, Tensor, ValueRef};

/// Folds `BatchNormalization` into a preceding `Conv` or `Gemm` with constant weights.
pub struct FoldBatchNorm;

fn floats(t: &Tensor) -> Option<Vec<f64>> {
    (t.dtype == DType::F32).then(|| t.to_f64s()).flatten()
}

/// Per channel `(scale, shift)` of an inference-mode batch norm with constant parameters.
fn affine(
    graph: &Graph,
    bn: NodeId,
    epsilon: f32,
    channels: usize,
) -> Option<(Vec<f64>, Vec<f64>)> {
    let param = |slot| {
        const_input(graph, bn, slot)
            .and_then(floats)
            .filter(|v| v.len() == channels)
    };
    let (gamma, beta, mean, var) = (param(1)?, param(2)?, param(3)?, param(4)?);
    let scale: Vec<f64> = gamma
        .iter()
        .zip(&var)
        .map(|(g, v)| g / (v + f64::from(epsilon)).sqrt())
        .collect();
    let shift = beta
        .iter()
        .zip(&mean)
        .zip(&scale)
        .map(|((b, m), s)| b - m * s)
        .collect();
    Some((scale, shift))
}

/// The producer's bias per output channel: zeros when it has none, `None` when it is not a
/// constant of one value or one per channel.
fn old_bias(graph: &Graph, producer: NodeId, channels: usize) -> Option<Vec<f64>> {
    match const_input(graph, producer, 2) {
        Some(b) => {
            let v = floats(b)?;
            let per_channel = b.shape.iter().rev().skip(1).all(|&d| d == 1);
            match v.len() {
                1 => Some(vec![v[0]; channels]),
                n if n == channels && per_channel => Some(v),
                _ => None,
            }
        }
        None if graph
            .inputs_of(producer)
            .get(2)
            .copied()
            .flatten()
            .is_none() =>
        {
            Some(vec![0.0; channels])
        }
        None => None,
    }
}

/// The folded weights and bias, or `None` when the producer is not foldable.
fn fold(graph: &Graph, producer: NodeId, bn: NodeId, epsilon: f32) -> Option<(Op, Tensor, Tensor)> {
    let node = graph.node(producer);
    let w = const_input(graph, producer, 1)?;
    let weights = floats(w)?;
    // Output channels, the scale already on the weights and on the bias, the folded op, and
    // how weight element i maps to its channel: blocks of `per` (Conv, Gemm with transB) or
    // columns of a row-major [K, N] matrix (Gemm).
    let (channels, alpha, beta, op, per, columns) = match &node.op {
        Op::Conv(_) => {
            let channels = *w.shape.first()?;
            let per = weights.len() / channels.max(1);
            (channels, 1.0, 1.0, node.op.clone(), per, None)
        }
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => {
            let (rows, cols) = (*w.shape.first()?, *w.shape.get(1)?);
            let folded = Op::Gemm {
                alpha: 1.0,
                beta: 1.0,
                trans_a: *trans_a,
                trans_b: *trans_b,
            };
            let (channels, columns) = if *trans_b {
                (rows, None)
            } else {
                (cols, Some(cols))
            };
            (
                channels,
                f64::from(*alpha),
                f64::from(*beta),
                folded,
                cols,
                columns,
            )
        }
        _ => return None,
    };
    let channel_of = |i: usize| match columns {
        Some(cols) => i % cols,
        None => i / per.max(1),
    };
    let (scale, shift) = affine(graph, bn, epsilon, channels)?;
    let scaled: Vec<f64> = weights
        .iter()
        .enumerate()
        .map(|(i, x)| x * alpha * scale[channel_of(i)])
        .collect();
    let bias: Vec<f64> = old_bias(graph, producer, channels)?
        .iter()
        .zip(&scale)
        .zip(&shift)
        .map(|((b, s), t)| b * beta * s + t)
        .collect();
    Some((
        op,
        Tensor::from_f64s(DType::F32, w.shape.clone(), &scaled).ok()?,
        Tensor::from_f64s(DType::F32, vec![channels], &bias).ok()?,
    ))
}

/// Makes `new` take `old`'s place: its readers, its graph-output slots and its value's name.
fn take_place(graph: &mut Graph, old: NodeId, new: NodeId) {
    let (from, to) = (
        ValueRef {
            node: old,
            output: 0,
        },
        ValueRef {
            node: new,
            output: 0,
        },
    );
    replace_uses(graph, from, to);
    if graph.outputs.contains(&from) {
        let name = graph.value(from).name.clone();
        graph.dag[new].outputs[0].name = name;
        for o in graph.outputs.iter_mut().filter(|o| **o == from) {
            *o = to;
        }
    }
}

/// Rewrites an inference batch norm with constant parameters as `x * scale + shift`, per-channel
/// constants of shape `[C, 1, ...]`, so that it fuses with the elementwise ops around it.
fn decompose(graph: &mut Graph, bn: NodeId, epsilon: f32) -> Option<()> {
    let x = graph.inputs_of(bn).first().copied().flatten()?;
    let rank = graph.value(x).ty.as_tensor()?.shape.as_ref()?.len();
    let channels = const_input(graph, bn, 1)?.len();
    if rank < 2 {
        return None;
    }
    let (scale, shift) = affine(graph, bn, epsilon, channels)?;
    let mut shape = vec![channels];
    shape.extend(std::iter::repeat_n(1, rank - 2));
    let name = graph.node(bn).name.clone();
    let s = graph.add_const(
        &crate::edit::fresh_name(graph, &format!("{name}_scale")),
        Tensor::from_f64s(DType::F32, shape.clone(), &scale).ok()?,
    );
    let t = graph.add_const(
        &crate::edit::fresh_name(graph, &format!("{name}_shift")),
        Tensor::from_f64s(DType::F32, shape, &shift).ok()?,
    );
    let mut scaled = graph.node(bn).outputs[0].clone();
    scaled.name = crate::edit::fresh_name(graph, &format!("{}_scaled", scaled.name));
    let mut shifted = graph.node(bn).outputs[0].clone();
    shifted.name = crate::edit::fresh_name(graph, &format!("{}_shifted", shifted.name));
    let mul = graph.add_node(
        format!("{name}_scale"),
        Op::Binary(Binary::Mul),
        &[Some(x), Some(s)],
        vec![scaled],
    );
    let mul_value = ValueRef {
        node: mul,
        output: 0,
    };
    let add = graph.add_node(
        format!("{name}_shift"),
        Op::Binary(Binary::Add),
        &[Some(mul_value), Some(t)],
        vec![shifted],
    );
    for id in [mul, add] {
        graph.dag[id].rules = vec!["decompose-batchnorm".to_string()];
    }
    take_place(graph, bn, add);
    graph.dag.remove_node(bn);
    Some(())
}

impl Pass for FoldBatchNorm {
    fn name(&self) -> &'static str {
        "fold-batchnorm"
    }

    fn run(&mut self, graph: &mut Graph) -> Result<String, PassError> {
        let (mut folded, mut decomposed) = (0, 0);
        for bn in graph.topo_order()? {
            let Op::BatchNormalization {
                epsilon,
                training_mode: false,
                ..
            } = graph.node(bn).op
            else {
                continue;
            };
            if graph.node(bn).outputs.len() != 1 {
                continue;
            }
            let Some(x) = graph.inputs_of(bn).first().copied().flatten() else {
                continue;
            };
            let producer = x.node;
            let sole_reader = readers(graph, x).len() == 1 && !has_output(graph, producer);
            let folding = sole_reader
                .then(|| fold(graph, producer, bn, epsilon))
                .flatten();
            let Some((op, weights, bias)) = folding else {
                if decompose(graph, bn, epsilon).is_some() {
                    decomposed += 1;
                }
                continue;
            };
            let inputs = graph.inputs_of(producer);
            let name = graph.node(producer).name.clone();
            let w = graph.add_const(&format!("{name}_folded_w"), weights);
            let b = graph.add_const(&format!("{name}_folded_b"), bias);
            let mut outputs = graph.node(bn).outputs.clone();
            outputs[0].name = format!("{}_folded", outputs[0].name);
            let fused = graph.add_node(name.clone(), op, &[inputs[0], Some(w), Some(b)], outputs);
            graph.dag[fused].rules = vec!["fold-batchnorm".to_string()];
            take_place(graph, bn, fused);
            graph.dag.remove_node(bn);
            graph.dag.remove_node(producer);
            folded += 1;
        }
        Ok(format!(
            "folded {folded} batch norm(s) into their producers, decomposed {decomposed}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::FoldBatchNorm;
    use crate::testing::{ops, push, run_checked, tensor_type};
    use sparkc_ir::op::{AutoPad, ConvAttrs, Layout};
    use sparkc_ir::{DType, Graph, Op, Tensor};

    fn constant(
        g: &mut Graph,
        name: &str,
        shape: Vec<usize>,
        values: impl Fn(usize) -> f64,
    ) -> sparkc_ir::ValueRef {
        let n = shape.iter().product();
        let data: Vec<f64> = (0..n).map(values).collect();
        g.add_const(name, Tensor::from_f64s(DType::F32, shape, &data).unwrap())
    }

    /// An inference batch norm over 3 channels of `x`, with constant parameters.
    fn batch_norm(g: &mut Graph, x: sparkc_ir::ValueRef) -> sparkc_ir::ValueRef {
        let scale = constant(g, "scale", vec![3], |i| 1.0 + i as f64);
        let shift = constant(g, "shift", vec![3], |i| 0.5 - i as f64);
        let mean = constant(g, "mean", vec![3], |i| 0.2 * i as f64);
        let var = constant(g, "var", vec![3], |i| 0.5 + i as f64);
        push(
            g,
            Op::BatchNormalization {
                epsilon: 1e-5,
                momentum: 0.9,
                training_mode: false,
            },
            &[Some(x), Some(scale), Some(shift), Some(mean), Some(var)],
        )
    }

    #[test]
    fn batch_norm_after_conv_goes_into_its_weights() {
        let mut g = Graph::new("g");
        let x = g.add_input("x", tensor_type("f32[N,2,5,5]"));
        let w = constant(&mut g, "w", vec![3, 2, 3, 3], |i| (i as f64 * 0.37).sin());
        let b = constant(&mut g, "b", vec![3], |i| i as f64 * 0.1);
        let attrs = ConvAttrs {
            auto_pad: AutoPad::NotSet,
            dilations: vec![],
            group: 1,
            kernel_shape: vec![],
            pads: vec![1, 1, 1, 1],
            strides: vec![],
            layout: Layout::Nchw,
        };
        let conv = push(&mut g, Op::Conv(attrs), &[Some(x), Some(w), Some(b)]);
        let bn = batch_norm(&mut g, conv);
        g.outputs = vec![bn];
        let mut after = run_checked(&mut FoldBatchNorm, &g);
        crate::dce::DeadCode.run_on(&mut after);
        assert_eq!(ops(&after), ["Conv"]);
    }

    #[test]
    fn batch_norm_after_gemm_goes_into_its_weights() {
        for trans_b in [false, true] {
            let mut g = Graph::new("g");
            let x = g.add_input("x", tensor_type("f32[N,5]"));
            let shape = if trans_b { vec![3, 5] } else { vec![5, 3] };
            let w = constant(&mut g, "w", shape, |i| (i as f64 * 0.41).cos());
            let c = constant(&mut g, "c", vec![3], |i| 0.3 * i as f64);
            let gemm = push(
                &mut g,
                Op::Gemm {
                    alpha: 0.5,
                    beta: 2.0,
                    trans_a: false,
                    trans_b,
                },
                &[Some(x), Some(w), Some(c)],
            );
            let bn = batch_norm(&mut g, gemm);
            g.outputs = vec![bn];
            let mut after = run_checked(&mut FoldBatchNorm, &g);
            crate::dce::DeadCode.run_on(&mut after);
            assert_eq!(ops(&after), ["Gemm"]);
        }
    }

    #[test]
    fn batch_norm_elsewhere_becomes_a_multiply_and_add() {
        let mut g = Graph::new("g");
        let x = g.add_input("x", tensor_type("f32[N,3,4,4]"));
        let relu = push(&mut g, Op::Unary(sparkc_ir::op::Unary::Relu), &[Some(x)]);
        let bn = batch_norm(&mut g, relu);
        g.outputs = vec![bn];
        let name = g.value(bn).name.clone();
        let after = run_checked(&mut FoldBatchNorm, &g);
        assert_eq!(ops(&after), ["Add", "Mul", "Relu"]);
        assert_eq!(after.value(after.outputs[0]).name, name);
    }
}
