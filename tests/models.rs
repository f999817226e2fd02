//! Whole models on the CPU executor: the `light_*` architectures of the onnx package against their
//! reference outputs, and generated BERT-, GPT- and MobileNet-style models, an encoder written
//! with Einsum and an LSTM/GRU tagger (and the MobileNet quantized by onnxruntime in QDQ form)
//! against onnxruntime, each as imported, optimized, and
//! optimized with convolutions channels last. Each prints its max abs error and cosine
//! similarity.

use sparkc_cpu::{Array, Data, Executor, Value};
use sparkc_ir::op::Layout;
use sparkc_ir::{Op, ValueType};
use sparkc_onnx::load;
use sparkc_tests::{
    channels_last_convolutions, generated, generated_models, manifest_names, read_value,
};
use std::path::Path;

/// Max abs error, and cosine similarity, of `actual` against `expected`.
fn agreement(actual: &Array, expected: &Array) -> (f64, f64) {
    let (a, e) = (actual.data.to_f64s(), expected.data.to_f64s());
    let max_abs = a
        .iter()
        .zip(&e)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    let dot: f64 = a.iter().zip(&e).map(|(x, y)| x * y).sum();
    let norms =
        a.iter().map(|x| x * x).sum::<f64>().sqrt() * e.iter().map(|y| y * y).sum::<f64>().sqrt();
    (max_abs, if norms == 0.0 { 1.0 } else { dot / norms })
}

/// How close a model's outputs must be: max abs error relative to the largest magnitude, and
/// the smallest cosine similarity.
#[derive(Clone, Copy)]
struct Tolerance {
    max_abs: f64,
    min_cosine: f64,
}

/// Float models: the same math in another order.
const FLOAT: Tolerance = Tolerance {
    max_abs: 1e-4,
    min_cosine: 0.99999,
};

/// QDQ models: a code that rounds the other way in one of the many QuantizeLinear nodes moves
/// an activation by a quantization step (1/255 of the softmax output's range). A value near a
/// rounding tie, summed in another order, rounds to either code; through the layers after it,
/// MobileNet's 100 quantized probabilities end one step apart in a few places, a cosine of
/// 0.9988.
const QDQ: Tolerance = Tolerance {
    max_abs: 1e-2,
    min_cosine: 0.998,
};

fn check(
    name: &str,
    model: &Path,
    inputs: Vec<Value>,
    expected: &[Array],
    tolerance: Tolerance,
) -> Result<String, String> {
    let mut report = String::new();
    // Channels last applies to convolutions with constant float weights once folded (not to a
    // QDQ model's).
    let mut prepared = load(model).map_err(|e| format!("{name}: {e}"))?.graph;
    sparkc_passes::prepare()
        .run(&mut prepared)
        .map_err(|e| format!("{name}: {e}"))?;
    let convolutions = prepared.dag.node_indices().any(|id| {
        matches!(prepared.node(id).op, Op::Conv(_))
            && prepared.inputs_of(id)[1].is_some_and(
                |w| matches!(&prepared.node(w.node).op, Op::Const(t) if t.dtype.is_float()),
            )
    });
    let mut variants = vec![None, Some(Layout::Nchw)];
    if convolutions {
        variants.push(Some(Layout::Nhwc));
    }
    for layout in variants {
        let label = match layout {
            None => name.to_string(),
            Some(Layout::Nchw) => format!("{name} (optimized)"),
            Some(Layout::Nhwc) => format!("{name} (optimized, nhwc)"),
        };
        report.push_str(&check_one(
            &label,
            model,
            layout,
            inputs.clone(),
            expected,
            tolerance,
        )?);
    }
    Ok(report)
}

/// Runs a model, as imported or optimized with convolutions in `layout`, and compares its
/// outputs with `expected`.
fn check_one(
    name: &str,
    model: &Path,
    layout: Option<Layout>,
    inputs: Vec<Value>,
    expected: &[Array],
    tolerance: Tolerance,
) -> Result<String, String> {
    let mut model = load(model).map_err(|e| format!("{name}: {e}"))?;
    if let Some(layout) = layout {
        sparkc_passes::standard_with(sparkc_passes::Options {
            layout,
            ..sparkc_passes::Options::default()
        })
        .and_then(|mut passes| passes.run(&mut model.graph))
        .map_err(|e| format!("{name}: optimize: {e}"))?;
        let channels_last = channels_last_convolutions(&model.graph) > 0;
        if channels_last != (layout == Layout::Nhwc) {
            return Err(format!("{name}: no convolution runs channels last"));
        }
    }
    let exec = Executor::new(&model.graph).map_err(|e| format!("{name}: {e}"))?;
    let outputs = exec.run(inputs).map_err(|e| format!("{name}: {e}"))?;
    let mut report = String::new();
    for (j, (actual, expected)) in outputs.iter().zip(expected).enumerate() {
        let actual = actual.as_tensor().map_err(|e| format!("{name}: {e}"))?;
        if actual.shape != expected.shape {
            return Err(format!(
                "{name} output {j}: shape {:?}, expected {:?}",
                actual.shape, expected.shape
            ));
        }
        let (max_abs, cosine) = agreement(actual, expected);
        let scale = expected
            .data
            .to_f64s()
            .iter()
            .fold(0.0f64, |m, v| m.max(v.abs()))
            .max(1e-6);
        report.push_str(&format!("{name:<24} output {j}: max abs err {max_abs:.2e} (of max |y| {scale:.2e}), cosine {cosine:.8}\n"));
        if max_abs > tolerance.max_abs * scale.max(1.0) || cosine < tolerance.min_cosine {
            return Err(format!(
                "{name} output {j} disagrees: max abs err {max_abs:.3e}, cosine {cosine}"
            ));
        }
    }
    Ok(report)
}

#[test]
fn light_models_match_reference_outputs() {
    let root = generated().join("light");
    let mut report = String::new();
    let names = manifest_names("light");
    assert_eq!(names.len(), 9, "the onnx package ships 9 light models");
    for name in names {
        let path = root.join(format!("{name}.onnx"));
        let model = load(&path).expect("light model imports");
        // The onnx backend runner's inputs: arange(n)/n in each input's shape (unknown dims 1).
        let inputs: Vec<Value> = model
            .graph
            .inputs
            .iter()
            .map(|&id| {
                let ValueType::Tensor(t) = &model.graph.node(id).outputs[0].ty else {
                    panic!("{name}: non-tensor input");
                };
                let shape: Vec<usize> = t
                    .shape
                    .as_ref()
                    .expect("ranked input")
                    .iter()
                    .map(|d| d.as_const().unwrap_or(1) as usize)
                    .collect();
                let n: usize = shape.iter().product();
                Value::Tensor(Array::new(
                    shape,
                    Data::F32((0..n).map(|i| i as f32 / n as f32).collect()),
                ))
            })
            .collect();
        let expected = read_value(
            &root.join(format!("{name}_output_0.pb")),
            &serde_json::json!("tensor"),
        )
        .and_then(|v| v.into_tensor())
        .expect("reference output");
        match check(&name, &path, inputs, &[expected], FLOAT) {
            Ok(r) => report.push_str(&r),
            Err(e) => panic!("{e}"),
        }
    }
    print!("{report}");
}

#[test]
fn generated_models_match_onnxruntime() {
    let root = generated_models();
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("manifest.json")).expect("manifest"),
    )
    .expect("JSON");
    let mut report = String::new();
    let sets = [
        ("models", root.to_path_buf(), FLOAT),
        ("qdq", root.join("qdq"), QDQ),
        ("contrib", root.join("contrib"), FLOAT),
    ];
    for (key, folder, tolerance) in sets {
        for name in manifest[key].as_array().expect("a list of models") {
            let name = name.as_str().expect("name");
            let dir = folder.join(name);
            let meta: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(dir.join("meta.json")).expect("meta"),
            )
            .expect("JSON");
            let tensor = serde_json::json!("tensor");
            let inputs: Vec<Value> = (0..meta["inputs"].as_array().expect("inputs").len())
                .map(|j| read_value(&dir.join(format!("input_{j}.pb")), &tensor).expect("input"))
                .collect();
            let expected: Vec<Array> = (0..meta["outputs"].as_array().expect("outputs").len())
                .map(|j| {
                    read_value(&dir.join(format!("output_{j}.pb")), &tensor)
                        .and_then(|v| v.into_tensor())
                        .expect("output")
                })
                .collect();
            match check(name, &dir.join("model.onnx"), inputs, &expected, tolerance) {
                Ok(r) => report.push_str(&r),
                Err(e) => panic!("{e}"),
            }
        }
    }
    print!("{report}");
}
