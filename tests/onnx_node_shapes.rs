//! The official ONNX node tests: every test whose ops are all supported imports, and the
//! inferred dtype and shape of each output equal those of its reference output.

use sparkc_ir::{infer_graph, verify, Dim, Model, ValueType};
use sparkc_onnx::{load, tensor_from_bytes, SUPPORTED_OPS};
use sparkc_tests::{generated, manifest_names};
use std::path::Path;

enum Outcome {
    /// Every output matched from the model alone.
    Static,
    /// Some output shapes depend on input values; they matched once those were bound.
    Bound,
    /// Some dims are data-dependent (marked `?`), and every other dim matched.
    DataDependent,
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("readable")).expect("JSON")
}

/// Compares every tensor output with its reference; `Ok(true)` when some dim was data-dependent.
fn compare(model: &Model, dir: &Path, kinds: &[serde_json::Value]) -> Result<bool, String> {
    let graph = &model.graph;
    let mut dynamic = false;
    for (j, kind) in kinds.iter().enumerate() {
        let value = graph.value(graph.outputs[j]);
        if kind != "tensor" {
            let matches = matches!(
                (kind.as_str(), &value.ty),
                (Some("sequence"), ValueType::Sequence(_))
                    | (Some("optional"), ValueType::Optional(_))
            );
            if !matches {
                return Err(format!(
                    "output {j} is {} but the reference is a {kind}",
                    value.ty
                ));
            }
            continue;
        }
        let bytes = std::fs::read(dir.join(format!("test_data_set_0/output_{j}.pb")))
            .map_err(|e| e.to_string())?;
        let reference = tensor_from_bytes(&bytes).map_err(|e| e.to_string())?;
        let Some(tensor) = value.ty.as_tensor() else {
            return Err(format!(
                "output {j} is {} but the reference is a tensor",
                value.ty
            ));
        };
        let expected: Vec<Dim> = reference
            .shape
            .iter()
            .map(|&d| Dim::known(d as i64))
            .collect();
        let shape_ok = match &tensor.shape {
            Some(dims) if dims.len() == expected.len() => {
                dims.iter().zip(&expected).all(|(d, e)| {
                    if d.is_dynamic() {
                        dynamic = true;
                        true
                    } else {
                        d == e
                    }
                })
            }
            _ => false,
        };
        if tensor.dtype != reference.dtype || !shape_ok {
            return Err(format!(
                "output {j} ('{}') inferred {} but the reference is {}{:?}",
                value.name, value.ty, reference.dtype, reference.shape
            ));
        }
    }
    Ok(dynamic)
}

fn check(dir: &Path, meta: &serde_json::Value) -> Result<Outcome, String> {
    let model_path = dir.join("model.onnx");
    let kinds = meta["outputs"].as_array().expect("outputs listed");
    let mut model = load(&model_path).map_err(|e| e.to_string())?;
    let first = compare(&model, dir, kinds);
    if let Ok(false) = first {
        return Ok(Outcome::Static);
    }
    // Bind the test's tensor inputs, so shapes computed from input values can resolve.
    let names: Vec<String> = model
        .graph
        .inputs
        .iter()
        .map(|&id| model.graph.node(id).name.clone())
        .collect();
    for (j, name) in names.iter().enumerate() {
        if meta["inputs"][j] != "tensor" {
            continue;
        }
        let bytes = std::fs::read(dir.join(format!("test_data_set_0/input_{j}.pb")))
            .map_err(|e| e.to_string())?;
        let tensor = tensor_from_bytes(&bytes).map_err(|e| e.to_string())?;
        model
            .graph
            .bind_input(name, tensor)
            .map_err(|e| e.to_string())?;
    }
    infer_graph(&mut model.graph).map_err(|e| format!("with inputs bound: {e}"))?;
    verify(&model.graph).map_err(|e| format!("with inputs bound: {e}"))?;
    match compare(&model, dir, kinds) {
        Ok(false) => Ok(Outcome::Bound),
        Ok(true) => Ok(Outcome::DataDependent),
        Err(e) => Err(first.err().unwrap_or(e)),
    }
}

#[test]
fn node_tests_import_with_reference_shapes() {
    let root = generated().join("node");
    let (mut in_scope, mut unsupported) = (0, 0);
    let (mut exact, mut bound, mut data_dependent) = (0, 0, 0);
    let mut failures = Vec::new();
    for name in manifest_names("node") {
        let dir = root.join(&name);
        let meta = read_json(&dir.join("meta.json"));
        let ops: Vec<&str> = meta["ops"]
            .as_array()
            .expect("ops")
            .iter()
            .filter_map(|o| o.as_str())
            .collect();
        // Out of scope: unsupported ops, string tensors, and opsets older than 7.
        if !ops.iter().all(|op| SUPPORTED_OPS.contains(op))
            || meta["strings"] == true
            || meta["opset"].as_i64() < Some(7)
        {
            unsupported += 1;
            continue;
        }
        in_scope += 1;
        match check(&dir, &meta) {
            Ok(Outcome::Static) => exact += 1,
            Ok(Outcome::Bound) => bound += 1,
            Ok(Outcome::DataDependent) => data_dependent += 1,
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    println!(
        "onnx node tests: {in_scope} in scope, {} shape-checked ({exact} from the model alone, {bound} with input values bound, {data_dependent} with data-dependent dims), {} failed; {unsupported} out of scope (unsupported ops, strings, opset < 7)",
        exact + bound + data_dependent,
        failures.len()
    );
    assert!(in_scope > 1000, "only {in_scope} node tests are in scope");
    assert!(
        failures.is_empty(),
        "{} node tests failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
