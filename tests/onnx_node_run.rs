//! The official ONNX node tests, run on the CPU executor and compared with their reference
//! outputs at the test's own tolerances. The per-op table in `docs/conformance.md` is rewritten
//! with `SPARKC_BLESS=1`, and the run fails if fewer tests pass than that file records.

use sparkc_cpu::{Array, Executor, Value};
use sparkc_ir::DType;
use sparkc_onnx::{load, SUPPORTED_OPS};
use sparkc_tests::{generated, manifest_names, read_value, repo_root};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

enum Outcome {
    Passed,
    Failed(String),
    /// Passes as imported, fails once optimized: an optimizer bug.
    OptimizedFailed(String),
    Unsupported(Vec<String>),
    OutOfScope,
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("readable")).expect("JSON")
}

/// numpy `assert_allclose`: `|a - e| <= atol + rtol·|e|`, NaN matching NaN; exact for integers.
fn close(actual: &Array, expected: &Array, rtol: f64, atol: f64) -> Result<(), String> {
    if actual.dtype() != expected.dtype() || actual.shape != expected.shape {
        return Err(format!(
            "got {}{:?}, expected {}{:?}",
            actual.dtype(),
            actual.shape,
            expected.dtype(),
            expected.shape
        ));
    }
    let (a, e) = (actual.data.to_f64s(), expected.data.to_f64s());
    let exact = !expected.dtype().is_float();
    // No tighter than two units in the last place of a half-precision type.
    let rtol = match expected.dtype() {
        DType::F16 => rtol.max(2.0 * 2f64.powi(-10)),
        DType::BF16 => rtol.max(2.0 * 2f64.powi(-7)),
        _ => rtol,
    };
    for (i, (&x, &y)) in a.iter().zip(&e).enumerate() {
        let ok = if exact {
            x == y
        } else {
            (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= atol + rtol * y.abs()
        };
        if !ok {
            return Err(format!("element {i}: got {x}, expected {y}"));
        }
    }
    Ok(())
}

fn compare(actual: &Value, expected: &Value, rtol: f64, atol: f64) -> Result<(), String> {
    match (actual, expected) {
        (Value::Tensor(a), Value::Tensor(e)) => close(a, e, rtol, atol),
        (Value::Sequence(a), Value::Sequence(e)) if a.len() == e.len() => a
            .iter()
            .zip(e)
            .try_for_each(|(a, e)| close(a, e, rtol, atol)),
        (Value::Optional(None), Value::Optional(None)) => Ok(()),
        (Value::Optional(Some(a)), Value::Optional(Some(e))) => compare(a, e, rtol, atol),
        (Value::Optional(Some(a)), e) => compare(a, e, rtol, atol),
        (a, e) => Err(format!("got {a}, expected {e}")),
    }
}

fn has_batched_scan(graph: &sparkc_ir::Graph) -> bool {
    graph.dag.node_weights().any(|n| {
        matches!(n.op, sparkc_ir::Op::Scan { batched: true, .. })
            || n.op.subgraphs().iter().any(|(_, g)| has_batched_scan(g))
    })
}

/// Runs one test's data sets, on the imported graph or on the optimized one.
fn run_case(dir: &Path, meta: &serde_json::Value, optimize: bool) -> Result<(), String> {
    let mut model = load(&dir.join("model.onnx")).map_err(|e| format!("import: {e}"))?;
    if optimize {
        sparkc_passes::standard()
            .and_then(|mut passes| passes.run(&mut model.graph))
            .map_err(|e| format!("optimize: {e}"))?;
        // Written back as ONNX and read again, unless it holds an opset-8 Scan, which the
        // exported opset has no form for (the export refuses it by name).
        if !has_batched_scan(&model.graph) {
            let proto =
                sparkc_onnx::export::to_proto(&model).map_err(|e| format!("export: {e}"))?;
            model = sparkc_onnx::import_model(proto, Some(dir))
                .map_err(|e| format!("re-import of the exported model: {e}"))?;
        }
    }
    let exec = Executor::new(&model.graph).map_err(|e| format!("prepare: {e}"))?;
    let (rtol, atol) = (
        meta["rtol"].as_f64().unwrap_or(1e-3),
        meta["atol"].as_f64().unwrap_or(1e-7),
    );
    let sets = meta["data_sets"].as_u64().unwrap_or(1);
    for set in 0..sets {
        let set_dir = dir.join(format!("test_data_set_{set}"));
        let inputs: Vec<Value> = (0..exec.inputs().len())
            .map(|j| read_value(&set_dir.join(format!("input_{j}.pb")), &meta["inputs"][j]))
            .collect::<Result<_, _>>()?;
        let outputs = exec.run(inputs).map_err(|e| format!("run: {e}"))?;
        for (j, actual) in outputs.iter().enumerate() {
            let expected =
                read_value(&set_dir.join(format!("output_{j}.pb")), &meta["outputs"][j])?;
            compare(actual, &expected, rtol, atol)
                .map_err(|e| format!("output {j} ('{}'): {e}", exec.output_names()[j]))?;
        }
    }
    Ok(())
}

fn classify(dir: &Path, meta: &serde_json::Value, ops: &[String]) -> Outcome {
    if meta["strings"] == true {
        return Outcome::OutOfScope;
    }
    if meta["opset"].as_i64() < Some(7) {
        return Outcome::OutOfScope;
    }
    let missing: Vec<String> = ops
        .iter()
        .filter(|op| !SUPPORTED_OPS.contains(&op.as_str()))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Outcome::Unsupported(missing);
    }
    match catch_unwind(AssertUnwindSafe(|| run_case(dir, meta, false))) {
        Ok(Ok(())) => match catch_unwind(AssertUnwindSafe(|| run_case(dir, meta, true))) {
            Ok(Ok(())) => Outcome::Passed,
            Ok(Err(e)) => Outcome::OptimizedFailed(e),
            Err(_) => Outcome::OptimizedFailed("panicked".into()),
        },
        Ok(Err(e)) => Outcome::Failed(e),
        Err(_) => Outcome::Failed("panicked".into()),
    }
}

/// The passed count recorded in `docs/conformance.md`.
fn recorded_passes(doc: &str) -> Option<usize> {
    doc.lines()
        .find_map(|l| l.strip_prefix("Passed: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn write_table(
    path: &Path,
    total: usize,
    passed: usize,
    per_op: &BTreeMap<String, (usize, usize)>,
    unsupported: &BTreeMap<String, usize>,
    out_of_scope: usize,
    failures: &[String],
) {
    let mut doc = String::from("# Conformance\n\n");
    doc.push_str("The official node tests of `onnx==1.23.2`, run on the CPU executor (`tests/onnx_node_run.rs`) and\n");
    doc.push_str("compared with their reference outputs at each test's own tolerance (numpy `assert_allclose`:\n");
    doc.push_str(
        "rtol 1e-3, atol 1e-7 unless the test says otherwise). Outputs of type f16 and bf16 are\n",
    );
    doc.push_str(
        "compared no tighter than two units in their last place (rtol 2^-9 and 2^-6): the\n",
    );
    doc.push_str("references round after every numpy step, an order no other engine reproduces bit for bit.\n");
    doc.push_str("Regenerate this file with `bash scripts/conformance.sh`; CI fails if fewer tests pass than\n");
    doc.push_str(
        "recorded here. Shape and dtype inference is checked separately on the same tests\n",
    );
    doc.push_str("(`tests/onnx_node_shapes.rs`). A test counts as passed only if it passes twice: on the graph\n");
    doc.push_str("as imported, and on the optimized graph (`docs/passes.md`) written back as ONNX and read\n");
    doc.push_str(
        "again (but for an opset-8 Scan, which the exported opset cannot express); CI fails if\n",
    );
    doc.push_str("any test passes the first way only.\n\n");
    doc.push_str(&format!("Passed: {passed} of {total}\n\n"));
    doc.push_str(&format!(
        "- failed: {}\n- using an unsupported op: {}\n- out of scope (string tensors, opset below 7): {out_of_scope}\n\n",
        failures.len(),
        unsupported.values().sum::<usize>()
    ));
    doc.push_str("## Per op (tests using the op: passed / run)\n\n| op | passed | run |\n| --- | ---: | ---: |\n");
    for (op, (p, t)) in per_op {
        doc.push_str(&format!("| {op} | {p} | {t} |\n"));
    }
    doc.push_str("\n## Unsupported ops (tests that need them)\n\n| op | tests |\n| --- | ---: |\n");
    for (op, n) in unsupported {
        doc.push_str(&format!("| {op} | {n} |\n"));
    }
    if !failures.is_empty() {
        doc.push_str("\n## Failing tests\n\n");
        for f in failures {
            doc.push_str(&format!("- {}\n", f.replace('|', "\\|")));
        }
    }
    std::fs::write(path, doc).expect("docs/conformance.md is writable");
}

#[test]
fn node_tests_match_reference_outputs() {
    let root = generated().join("node");
    let names = manifest_names("node");
    let total = names.len();
    let mut per_op: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut unsupported: BTreeMap<String, usize> = BTreeMap::new();
    let (mut passed, mut out_of_scope) = (0, 0);
    let mut failures = Vec::new();
    let mut optimized_failures = Vec::new();
    for name in &names {
        let dir = root.join(name);
        let meta = read_json(&dir.join("meta.json"));
        let ops: Vec<String> = meta["ops"]
            .as_array()
            .expect("ops")
            .iter()
            .filter_map(|o| o.as_str().map(String::from))
            .collect();
        let outcome = classify(&dir, &meta, &ops);
        let ran = matches!(
            outcome,
            Outcome::Passed | Outcome::Failed(_) | Outcome::OptimizedFailed(_)
        );
        let ok = matches!(outcome, Outcome::Passed);
        match outcome {
            Outcome::Passed => passed += 1,
            Outcome::Failed(e) => failures.push(format!("{name}: {e}")),
            Outcome::OptimizedFailed(e) => optimized_failures.push(format!("{name}: {e}")),
            Outcome::Unsupported(missing) => {
                for op in missing {
                    *unsupported.entry(op).or_default() += 1;
                }
            }
            Outcome::OutOfScope => out_of_scope += 1,
        }
        if ran {
            for op in ops {
                let entry = per_op.entry(op).or_default();
                entry.0 += usize::from(ok);
                entry.1 += 1;
            }
        }
    }
    println!(
        "onnx node tests: {passed} of {total} passed, {} failed, {} need unsupported ops, {out_of_scope} out of scope",
        failures.len(),
        unsupported.values().sum::<usize>()
    );
    for f in &failures {
        println!("  FAIL {f}");
    }
    assert!(
        optimized_failures.is_empty(),
        "{} node test(s) pass as imported but not optimized:\n{}",
        optimized_failures.len(),
        optimized_failures.join("\n")
    );
    let doc_path = repo_root().join("docs/conformance.md");
    if std::env::var_os("SPARKC_BLESS").is_some() {
        write_table(
            &doc_path,
            total,
            passed,
            &per_op,
            &unsupported,
            out_of_scope,
            &failures,
        );
        return;
    }
    let doc = std::fs::read_to_string(&doc_path).unwrap_or_default();
    let floor = recorded_passes(&doc).unwrap_or(0);
    assert!(
        passed >= floor,
        "{passed} node tests passed, fewer than the {floor} recorded in docs/conformance.md"
    );
}
