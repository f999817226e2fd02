//! `cargo bench -p sparkc-cpu`: the executor's MatMul, Softmax, Erf and convolutions against plain reference
//! loops run in the same process, reported as speed-up ratios (no absolute thresholds).

use sparkc_cpu::{Array, Executor, Value};
use sparkc_ir::op::{AutoPad, ConvAttrs, Layout, Unary};
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

    // Convolutions of MobileNet's sizes against the direct loop over every output and tap.
    for (name, c, m, group, hw, k) in [
        ("Conv depthwise 3x3 96x40x40", 96, 96, 96, 40, 3),
        ("Conv 3x3 32->32 40x40", 32, 32, 1, 40, 3),
        ("Conv 3x3 3->16 32x32", 3, 16, 1, 32, 3),
        ("Conv 1x1 64->128 20x20", 64, 128, 1, 20, 1),
    ] {
        let cg = c / group;
        let pad = (k / 2) as i64;
        let attrs = ConvAttrs {
            auto_pad: AutoPad::NotSet,
            dilations: Vec::new(),
            group: group as i64,
            kernel_shape: Vec::new(),
            pads: vec![pad; 4],
            strides: Vec::new(),
            layout: Layout::Nchw,
        };
        let (xs, ws) = ([1, c, hw, hw], [m, cg, k, k]);
        let exec = single(Op::Conv(attrs), &[&xs, &ws], &[1, m, hw, hw]);
        let (x, w) = (values(c * hw * hw), values(m * cg * k * k));
        let inputs = vec![
            Value::Tensor(Array::f32(xs.to_vec(), x.clone())),
            Value::Tensor(Array::f32(ws.to_vec(), w.clone())),
        ];
        let ours = time(20, || {
            exec.run(inputs.clone()).expect("Conv runs");
        });
        let reference = time(3, || {
            let mut y = vec![0f32; m * hw * hw];
            for oc in 0..m {
                let first = (oc / (m / group)) * cg;
                for oy in 0..hw {
                    for ox in 0..hw {
                        let mut acc = 0f32;
                        for ic in 0..cg {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let (iy, ix) = ((oy + ky) as i64 - pad, (ox + kx) as i64 - pad);
                                    if iy >= 0 && ix >= 0 && iy < hw as i64 && ix < hw as i64 {
                                        let xi =
                                            ((first + ic) * hw + iy as usize) * hw + ix as usize;
                                        acc += x[xi] * w[((oc * cg + ic) * k + ky) * k + kx];
                                    }
                                }
                            }
                        }
                        y[(oc * hw + oy) * hw + ox] = acc;
                    }
                }
            }
            std::hint::black_box(&y);
        });
        report(name, ours, reference);
    }
}
