//! `cargo bench -p sparkc-cpu`: the executor's MatMul, Softmax and Erf against plain reference
//! loops run in the same process, reported as speed-up ratios (no absolute thresholds).

use sparkc_cpu::{Array, Executor, Value};
use sparkc_ir::op::Unary;
use sparkc_ir::{DType, Dim, Graph, Op, TensorType, Value as IrValue, ValueRef, ValueType};
use std::time::Instant;

fn tensor_type(dims: &[usize]) -> ValueType {
    ValueType::Tensor(TensorType::new(
        DType::F32,
        dims.iter().map(|&d| Dim::known(d as i64)).collect(),
    ))
}

/// A graph of one node over inputs of the given shapes.
fn single(op: Op, inputs: &[&[usize]], output: &[usize]) -> Executor {
    let mut g = Graph::new("bench");
    let refs: Vec<Option<ValueRef>> = inputs
        .iter()
        .enumerate()
        .map(|(i, dims)| Some(g.add_input(&format!("x{i}"), tensor_type(dims))))
        .collect();
    let out = IrValue {
        name: "y".into(),
        ty: tensor_type(output),
        known: None,
    };
    let id = g.add_node("op".into(), op, &refs, vec![out]);
    g.outputs = vec![ValueRef {
        node: id,
        output: 0,
    }];
    Executor::new(&g).expect("a valid graph")
}

fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

/// Median seconds of `f` over `iters` runs.
fn time(iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut samples: Vec<f64> = (0..iters)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[iters / 2]
}

fn report(name: &str, ours: f64, reference: f64) {
    println!(
        "{name:<28} sparkc {:9.3} ms   reference loop {:9.3} ms   speed-up {:6.1}x",
        ours * 1e3,
        reference * 1e3,
        reference / ours
    );
}

fn main() {
    let n = 256;
    let (a, b) = (
        values(n * n),
        values(n * n).into_iter().rev().collect::<Vec<_>>(),
    );
    let exec = single(Op::MatMul, &[&[n, n], &[n, n]], &[n, n]);
    let inputs = vec![
        Value::Tensor(Array::f32(vec![n, n], a.clone())),
        Value::Tensor(Array::f32(vec![n, n], b.clone())),
    ];
    let ours = time(20, || {
        exec.run(inputs.clone()).expect("MatMul runs");
    });
    let reference = time(3, || {
        let mut c = vec![0f32; n * n];
        for i in 0..n {
            for k in 0..n {
                let aik = a[i * n + k];
                for j in 0..n {
                    c[i * n + j] += aik * b[k * n + j];
                }
            }
        }
        std::hint::black_box(&c);
    });
    report("MatMul 256x256x256", ours, reference);

    let (rows, cols) = (512, 1024);
    let x = values(rows * cols);
    let input = vec![Value::Tensor(Array::f32(vec![rows, cols], x.clone()))];
    let exec = single(Op::Softmax { axis: -1 }, &[&[rows, cols]], &[rows, cols]);
    let ours = time(20, || {
        exec.run(input.clone()).expect("Softmax runs");
    });
    let reference = time(5, || {
        let mut y = x.clone();
        for row in y.chunks_mut(cols) {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = row
                .iter_mut()
                .map(|v| {
                    *v = (*v - m).exp();
                    *v
                })
                .sum();
            row.iter_mut().for_each(|v| *v /= sum);
        }
        std::hint::black_box(&y);
    });
    report("Softmax 512x1024", ours, reference);

    let exec = single(Op::Unary(Unary::Erf), &[&[rows, cols]], &[rows, cols]);
    let ours = time(20, || {
        exec.run(input.clone()).expect("Erf runs");
    });
    let reference = time(5, || {
        let y: Vec<f32> = x.iter().map(|&v| libm::erff(v)).collect();
        std::hint::black_box(&y);
    });
    report("Erf 512x1024", ours, reference);
}
