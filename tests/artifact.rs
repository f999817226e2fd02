//! `sparkc compile` → `.spark` → the runtime on the CPU: every whole model gives the outputs
//! the ONNX path gives; bad artifacts and bad inputs are clear errors that leave the session
//! usable.

use sparkc_cli::execute_args;
use sparkc_cpu::{Array, Value};
use sparkc_runtime::{Artifact, Device, Session, Tensor};
use sparkc_tests::{read_value, repo_root, whole_models};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn compile(model: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "sparkc".to_string(),
        "compile".into(),
        model.display().to_string(),
        "-o".into(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    execute_args(args).unwrap_or_else(|e| panic!("compile {}: {e:#}", model.display()))
}

/// Runs `model` (ONNX or artifact) on seeded random inputs; returns the output folder.
fn run(model: &Path, dims: &[String], out: PathBuf) -> PathBuf {
    let mut args = vec![
        "sparkc".to_string(),
        "run".into(),
        model.display().to_string(),
        "--random-inputs".into(),
        "--seed".into(),
        "7".into(),
        "--device".into(),
        "cpu".into(),
        "--output-dir".into(),
        out.display().to_string(),
    ];
    for d in dims {
        args.push("--dim".into());
        args.push(d.clone());
    }
    execute_args(args).unwrap_or_else(|e| panic!("run {}: {e:#}", model.display()));
    out
}

fn symbols(artifact: &Artifact) -> BTreeSet<String> {
    artifact
        .header
        .inputs
        .iter()
        .flat_map(|spec| spec.shape.iter())
        .flat_map(|dim| dim.terms.iter())
        .flat_map(|term| term.factors.iter())
        .filter(|f| !f.symbol.is_empty())
        .map(|f| f.symbol.clone())
        .collect()
}

#[test]
fn every_whole_model_runs_from_its_artifact_as_from_onnx() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut report = String::new();
    for (name, path) in whole_models() {
        let spark = dir.path().join(format!("{name}.spark"));
        compile(&path, &spark, &[]);
        let artifact = Artifact::open(&spark).expect("the artifact opens");
        let dims: Vec<String> = symbols(&artifact)
            .into_iter()
            .map(|s| format!("{s}=2"))
            .collect();
        let from_onnx = run(&path, &dims, dir.path().join(format!("{name}.onnx.out")));
        let from_spark = run(&spark, &dims, dir.path().join(format!("{name}.spark.out")));
        for spec in &artifact.header.outputs {
            let file = format!("{}.npy", sparkc_cli::run::file_name(&spec.name));
            let read = |d: &Path| {
                sparkc_cli::npy::read(&d.join(&file))
                    .unwrap_or_else(|e| panic!("{name}: output {}: {e}", spec.name))
            };
            let (a, b) = (read(&from_onnx), read(&from_spark));
            assert_eq!(a.shape, b.shape, "{name}: output {}", spec.name);
            let (a, b) = (a.data.to_f64s(), b.data.to_f64s());
            let scale = a.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            let worst = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            report.push_str(&format!(
                "{name:<28} {:<16} max abs diff {worst:.2e}\n",
                spec.name
            ));
            assert!(
                worst <= 1e-5 * scale,
                "{name}: output {} differs by {worst}",
                spec.name
            );
        }
    }
    print!("{report}");
}

fn tiny_artifact(dir: &Path) -> PathBuf {
    let spark = dir.join("tiny.spark");
    let text = compile(
        &repo_root().join("examples/models/tiny_cnn.onnx"),
        &spark,
        &["--target", "sm_121a,sm_90a", "--max", "N=4"],
    );
    assert!(
        text.contains("8 kernels per target for sm_121a, sm_90a"),
        "{text}"
    );
    spark
}

fn image(n: usize) -> Tensor {
    let values: Vec<f32> = (0..n * 3 * 32 * 32)
        .map(|i| (i % 17) as f32 / 17.0)
        .collect();
    Tensor::from_f32(vec![n, 3, 32, 32], &values)
}

#[test]
fn the_rust_api_runs_named_inputs_and_explains_bad_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let artifact = Artifact::open(&tiny_artifact(dir.path())).expect("opens");
    assert_eq!(artifact.header.targets, ["sm_121a", "sm_90a"]);
    let weights = artifact.weights().as_ptr() as usize;
    assert_eq!(
        weights % 256,
        0,
        "the weight section is 256-byte aligned in memory"
    );
    let session = Session::new(&artifact, Device::Cpu).expect("a CPU session");
    assert_eq!(session.inputs()[0].name, "image");
    let outputs = session.run(&[("image", image(2))]).expect("runs");
    assert_eq!(outputs[0].0, "probs");
    assert_eq!(outputs[0].1.shape(), [2, 10]);
    let sums: Vec<f32> = outputs[0]
        .1
        .to_f32()
        .chunks(10)
        .map(|r| r.iter().sum())
        .collect();
    assert!(
        sums.iter().all(|s| (s - 1.0).abs() < 1e-5),
        "softmax rows: {sums:?}"
    );
    let errors = [
        (session.run(&[("img", image(1))]), "no input 'img'"),
        (session.run(&[]), "input 'image' is missing"),
        (
            session.run(&[("image", image(1)), ("image", image(1))]),
            "given twice",
        ),
        (session.run(&[("image", image(5))]), "exceeds the bound 4"),
        (
            session.run(&[(
                "image",
                Tensor::from_f32(vec![1, 3, 32, 31], &[0.0; 3 * 32 * 31]),
            )]),
            "must be f32[N,3,32,32]",
        ),
        (
            session.run(&[(
                "image",
                Tensor::new(
                    sparkc_ir::DType::F16,
                    vec![1, 3, 32, 32],
                    vec![0; 2 * 3 * 32 * 32],
                )
                .expect("a tensor"),
            )]),
            "must be f32",
        ),
    ];
    for (result, expected) in errors {
        let err = result.expect_err("refused").to_string();
        assert!(err.contains(expected), "{err:?} should say {expected:?}");
    }
    // Still usable, with the same answer.
    let again = session.run(&[("image", image(2))]).expect("runs again");
    assert_eq!(again, outputs);
}

#[test]
fn damaged_artifacts_are_clear_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spark = tiny_artifact(dir.path());
    let bytes = std::fs::read(&spark).expect("read");
    let write = |name: &str, data: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, data).expect("write");
        p
    };
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let mut version = bytes.clone();
    version[8] = 2;
    let cases = [
        (
            write("truncated.spark", &bytes[..bytes.len() / 2]),
            "truncated",
        ),
        (write("flipped.spark", &flipped), "weight section checksum"),
        (write("version.spark", &version), "format version 2"),
        (write("empty.spark", b""), "not a sparkc artifact"),
    ];
    for (path, expected) in cases {
        let err = Artifact::open(&path).expect_err("refused").to_string();
        assert!(err.contains(expected), "{err:?} should say {expected:?}");
    }
    // Through the CLI, which recognizes artifacts by their magic bytes.
    let err = execute_args([
        "sparkc",
        "run",
        &dir.path().join("flipped.spark").display().to_string(),
        "--random-inputs",
    ])
    .expect_err("refused");
    assert!(format!("{err:#}").contains("corrupted"), "{err:#}");
}

#[test]
fn cuda_without_a_gpu_is_a_clear_error_and_auto_falls_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let artifact = Artifact::open(&tiny_artifact(dir.path())).expect("opens");
    if sparkc_runtime::detect().ok().flatten().is_some() {
        return;
    }
    let err = Session::new(&artifact, Device::Cuda).expect_err("no GPU here");
    assert!(err.to_string().contains("no CUDA driver or GPU"), "{err}");
    let session = Session::new(&artifact, Device::Auto).expect("falls back");
    assert!(
        session.device().starts_with("cpu ("),
        "{}",
        session.device()
    );
}

#[test]
fn mutated_headers_with_valid_checksums_never_panic() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bytes = std::fs::read(tiny_artifact(dir.path())).expect("read");
    let header_len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")) as usize;
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut decoded, mut refused) = (0, 0);
    for _ in 0..300 {
        let mut bad = bytes.clone();
        for _ in 0..1 + next() % 4 {
            let at = 64 + (next() as usize) % header_len;
            bad[at] = next() as u8;
        }
        let sum = xxhash_rust::xxh3::xxh3_64(&bad[64..64 + header_len]);
        bad[24..32].copy_from_slice(&sum.to_le_bytes());
        let outcome = std::panic::catch_unwind(|| {
            Artifact::from_bytes(bytes::Bytes::from(bad))
                .map_err(|e| e.to_string())
                .and_then(|a| Session::new(&a, Device::Cpu).map_err(|e| e.to_string()))
                .is_ok()
        });
        match outcome {
            Ok(true) => decoded += 1,
            Ok(false) => refused += 1,
            Err(_) => panic!("a mutated header panicked the runtime"),
        }
    }
    println!("mutated headers: {decoded} still load, {refused} refused, none panicked");
}

#[test]
fn a_calibrated_quantized_artifact_records_its_accuracy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = sparkc_tests::generated_models().join("mobilenet");
    // Two calibration sets: the model's own input, and the same scaled.
    for (set, factor) in [("a", 1.0f32), ("b", 0.5)] {
        let folder = dir.path().join("calibration").join(set);
        std::fs::create_dir_all(&folder).expect("folder");
        let input = sparkc_cli::npy::read(&model.join("input_0.npy")).expect("input");
        let scaled: Vec<f32> = input.data.to_f32s().iter().map(|v| v * factor).collect();
        let array = sparkc_cpu::Array::f32(input.shape.clone(), scaled);
        sparkc_cli::npy::write(&folder.join("image.npy"), &array).expect("writes");
    }
    let calibration = dir.path().join("calibration").display().to_string();
    let spark = dir.path().join("mobilenet_fp8.spark");
    let onnx = model.join("model.onnx");
    let text = compile(
        &onnx,
        &spark,
        &["--quantize", "fp8", "--calibrate", &calibration, "--report"],
    );
    assert!(text.contains("quantized (fp8)"), "{text}");
    assert!(text.contains("2 calibration set(s)"), "{text}");
    assert!(text.contains("kept: first product"), "{text}");
    let artifact = Artifact::open(&spark).expect("opens");
    let q = artifact
        .header
        .quantization
        .as_ref()
        .expect("a quantization record");
    assert_eq!(q.scheme, "fp8");
    assert!(q.weight_bytes_after < q.weight_bytes_before);
    assert!(q
        .products
        .iter()
        .any(|p| p.weight_format == "f8e4m3fn/channel"));
    assert!(
        q.outputs.iter().all(|o| o.cosine >= 0.999),
        "{:?}",
        q.outputs
    );
    // An artifact that is not quantized has no record.
    let plain = dir.path().join("plain.spark");
    compile(&onnx, &plain, &[]);
    assert!(Artifact::open(&plain)
        .expect("opens")
        .header
        .quantization
        .is_none());
}

#[test]
fn bad_quantization_requests_are_clear_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = repo_root()
        .join("examples/models/tiny_cnn.onnx")
        .display()
        .to_string();
    let out = dir.path().join("x.spark").display().to_string();
    let empty = dir.path().display().to_string();
    let cases: [(&[&str], &str); 8] = [
        (&["--quantize", "fp7"], "unknown format 'fp7'"),
        (&["--activations", "nvfp4"], "need --quantize"),
        (
            &["--quantize", "fp8", "--activations", "nvfp4"],
            "chooses its inputs' format itself",
        ),
        (
            &["--quantize", "nvfp4", "--activations", "mxfp4"],
            "rounded to bf16 or nvfp4",
        ),
        (&["--keep", "conv1"], "need --quantize"),
        (
            &["--quantize", "fp8", "--keep", "no_such_node"],
            "no node of that name",
        ),
        (
            &["--quantize", "fp8", "--calibrate", &empty],
            "holds no .npy input sets",
        ),
        (
            &["--quantize", "fp8", "--min-cosine", "2"],
            "between -1 and 1",
        ),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["sparkc", "compile", &model, "-o", &out];
        args.extend_from_slice(extra);
        let error = format!("{:#}", execute_args(args).expect_err("an error"));
        assert!(error.contains(expected), "{extra:?}: {error}");
    }
}

#[test]
fn a_model_without_gpu_kernels_compiles_for_the_cpu_with_target_none() {
    let dir = tempfile::tempdir().expect("temp dir");
    let nms =
        sparkc_tests::generated().join("node/test_nonmaxsuppression_suppress_by_IOU/model.onnx");
    let out = dir.path().join("nms.spark");
    let (model, path) = (nms.display().to_string(), out.display().to_string());
    let error = execute_args(["sparkc", "compile", &model, "-o", &path])
        .expect_err("NonMaxSuppression's output size depends on the data");
    let text = format!("{error:#}");
    assert!(
        text.contains("(NonMaxSuppression): output 0 has a data-dependent size")
            && text.contains("--target none"),
        "{text}"
    );
    let summary = compile(&nms, &out, &["--target", "none"]);
    assert!(summary.contains("no GPU kernels"), "{summary}");
    let artifact = Artifact::open(&out).expect("opens");
    assert!(artifact.header.plans.is_empty());
    let session = Session::new(&artifact, Device::Auto).expect("a session");
    assert!(session.device().starts_with("cpu"), "{}", session.device());
    let bad = execute_args([
        "sparkc",
        "compile",
        &model,
        "-o",
        &path,
        "--target",
        "none,sm_80",
    ]);
    assert!(format!("{:#}", bad.expect_err("none is alone")).contains("cannot be combined"));
}

/// The tensors a value holds, in order.
fn arrays(value: &Value) -> Vec<&Array> {
    match value {
        Value::Tensor(a) => vec![a],
        Value::Sequence(items) => items.iter().collect(),
        Value::Optional(inner) => inner.as_deref().map(arrays).unwrap_or_default(),
    }
}

#[test]
fn control_flow_models_compile_for_the_cpu_and_run_from_their_artifacts() {
    // If, Loop, Scan and SequenceMap; sequences and optionals; an If inside a Loop body that
    // captures the body's parameter; a Loop from an expanded function; fused nodes in branches.
    let tests = [
        "test_if",
        "test_if_seq",
        "test_if_opt",
        "test_loop11",
        "test_loop13_seq",
        "test_loop16_seq_none",
        "test_scan9_sum",
        "test_sequence_map_add_1_sequence_1_tensor",
        "test_range_float_type_positive_delta_expanded",
        "test_affine_grid_2d_align_corners_expanded",
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    for test in tests {
        let folder = sparkc_tests::generated().join("node").join(test);
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(folder.join("meta.json")).expect("meta.json"),
        )
        .expect("JSON");
        let spark = dir.path().join(format!("{test}.spark"));
        let summary = compile(&folder.join("model.onnx"), &spark, &["--target", "none"]);
        assert!(summary.contains("no GPU kernels"), "{test}: {summary}");
        let artifact = Artifact::open(&spark).expect("the artifact opens");
        let session = Session::new(&artifact, Device::Cpu).expect("a CPU session");
        let data = folder.join("test_data_set_0");
        let inputs = (0..session.inputs().len())
            .map(|j| read_value(&data.join(format!("input_{j}.pb")), &meta["inputs"][j]))
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|e| panic!("{test}: {e}"));
        let outputs = session
            .run_values(inputs)
            .unwrap_or_else(|e| panic!("{test}: {e}"));
        for (j, got) in outputs.iter().enumerate() {
            let expected = read_value(&data.join(format!("output_{j}.pb")), &meta["outputs"][j])
                .unwrap_or_else(|e| panic!("{test}: {e}"));
            let (got, expected) = (arrays(got), arrays(&expected));
            assert_eq!(got.len(), expected.len(), "{test}: output {j}");
            for (g, e) in got.iter().zip(&expected) {
                assert_eq!(g.shape, e.shape, "{test}: output {j}");
                for (x, y) in g.data.to_f64s().iter().zip(e.data.to_f64s()) {
                    assert!((x - y).abs() <= 1e-6 + 1e-5 * y.abs(), "{test}: {x} vs {y}");
                }
            }
        }
    }
    let nested = dir.path().join("test_loop16_seq_none.spark");
    let summary = inspect(&nested, &[]).expect("inspect reads it");
    assert!(
        summary.contains("opt_seq                  opt<seq<f32[]>>\n"),
        "{summary}"
    );
    let ir = inspect(&nested, &["--dump", "ir"]).expect("inspect dumps its graph");
    assert!(ir.contains("= Loop(") && ir.contains("= If("), "{ir}");
}

#[test]
fn packed_sub_byte_tensors_are_sized_as_stored() {
    let dir = tempfile::tempdir().expect("temp dir");
    // NVFP4 weights, two codes to a byte: the memory plan's weight buffer must lie inside the
    // weight section, which `Artifact::open` checks.
    let nvfp4 = sparkc_tests::generated_models().join("qdq/matmul_nvfp4/model.onnx");
    let spark = dir.path().join("nvfp4.spark");
    compile(&nvfp4, &spark, &["--target", "sm_90a"]);
    Artifact::open(&spark).expect("every weight lies inside the weight section");
    // An INT4 input of three elements takes two bytes, as the test's own data holds it.
    let int4 = sparkc_tests::generated().join("node/test_quantizelinear_int4/model.onnx");
    let spark = dir.path().join("int4.spark");
    compile(&int4, &spark, &["--target", "sm_90a"]);
    let artifact = Artifact::open(&spark).expect("opens");
    let memory = artifact.header.memory.as_ref().expect("a memory plan");
    let zero_point = memory
        .buffers
        .iter()
        .find(|b| b.name == "y_zero_point")
        .expect("the zero point's buffer");
    let bytes = zero_point.bytes.as_ref().expect("a size");
    assert_eq!(
        (
            bytes.terms.len(),
            bytes.terms.first().map(|t| t.coefficient)
        ),
        (1, Some(2))
    );
}

#[test]
fn views_a_gpu_plan_cannot_size_are_refused_at_compile_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("x.spark").display().to_string();
    for (test, expected) in [
        (
            "test_unsqueeze_axis_0",
            "(Unsqueeze): its output's shape depends on tensor data",
        ),
        (
            "test_reshape_one_dim",
            "(Reshape): its output's shape depends on tensor data",
        ),
        (
            "test_dropout_default_mask",
            "(Dropout): Dropout's mask output has no GPU kernel",
        ),
        ("test_training_dropout", "(Dropout): training-mode Dropout"),
    ] {
        let model = sparkc_tests::generated().join(format!("node/{test}/model.onnx"));
        let model = model.display().to_string();
        let args = [
            "sparkc", "compile", &model, "-o", &out, "--target", "sm_90a",
        ];
        let text = format!("{:#}", execute_args(args).expect_err(test));
        assert!(
            text.contains(expected) && text.contains("--target none"),
            "{test}: {text}"
        );
    }
    // Inference Dropout with its mask unread stays a view of its input.
    let model = sparkc_tests::generated().join("node/test_dropout_default/model.onnx");
    compile(&model, Path::new(&out), &["--target", "sm_90a"]);
}

fn inspect(model: &Path, extra: &[&str]) -> anyhow::Result<String> {
    let mut args = vec![
        "sparkc".to_string(),
        "inspect".into(),
        model.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    execute_args(args)
}

#[test]
fn inspect_reads_an_artifact_without_the_onnx_model() {
    let dir = tempfile::tempdir().expect("temp dir");
    let onnx = repo_root().join("examples/models/tiny_cnn.onnx");
    let spark = dir.path().join("tiny_cnn.spark");
    compile(&onnx, &spark, &["--target", "sm_90a,sm_80", "--max", "N=8"]);
    let kernels = Artifact::open(&spark).expect("artifact").header.plans[0]
        .kernels
        .len();

    let summary = inspect(&spark, &[]).expect("summary");
    for line in [
        "model     tiny_cnn".to_string(),
        format!("targets   sm_90a ({kernels} kernels), sm_80 ({kernels} kernels)"),
        "bounds    N <= 8".to_string(),
        "  image                    f32[N,3,32,32]".to_string(),
    ] {
        assert!(summary.contains(&line), "no `{line}` in:\n{summary}");
    }
    assert!(summary.contains("peak activation memory"), "{summary}");

    // Kernels of the first target unless one is named; the stored PTX is what `inspect` makes
    // from the ONNX model for that target.
    let table = inspect(&spark, &["--dump", "kernels"]).expect("kernel table");
    assert!(
        table.starts_with(&format!("{kernels} kernels for sm_90a\n")),
        "{table}"
    );
    assert_eq!(table.lines().count(), kernels + 1, "{table}");
    let sm80 = inspect(&spark, &["--dump", "kernels", "--target", "sm_80"]).expect("sm_80");
    assert!(
        sm80.starts_with(&format!("{kernels} kernels for sm_80\n")),
        "{sm80}"
    );
    let (stored, fresh) = (dir.path().join("stored"), dir.path().join("fresh"));
    for (model, to) in [(&spark, &stored), (&onnx, &fresh)] {
        let to = to.display().to_string();
        inspect(model, &["--dump", "ptx", "--target", "sm_80", "-o", &to]).expect("ptx");
    }
    let files = |d: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(d)
            .expect("ptx folder")
            .map(|e| e.expect("entry").path())
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| std::fs::read_to_string(p).expect("ptx file"))
            .collect::<Vec<_>>()
    };
    let stored_ptx = files(&stored);
    assert_eq!(stored_ptx.len(), kernels);
    assert!(stored_ptx.iter().all(|p| p.contains(".target sm_80")));
    assert_eq!(stored_ptx, files(&fresh));

    let ir = inspect(&spark, &["--dump", "ir"]).expect("embedded graph");
    assert!(ir.contains("= input \"image\""), "{ir}");

    let refused = |extra: &[&str], why: &str| {
        let error = format!("{:#}", inspect(&spark, extra).expect_err("refused"));
        assert!(error.contains(why), "{extra:?}: {error}");
    };
    refused(&["--explain"], "`--explain` applies to ONNX models");
    refused(&["--dump", "llvm"], "holds PTX, not LLVM IR");
    refused(
        &["--dump", "kernels", "--target", "sm_121a"],
        "no kernels for sm_121a; it has kernels for sm_90a, sm_80",
    );
    let cpu_only = dir.path().join("cpu.spark");
    compile(&onnx, &cpu_only, &["--target", "none"]);
    let summary = inspect(&cpu_only, &[]).expect("summary");
    assert!(summary.contains("targets   none"), "{summary}");
    let error = format!(
        "{:#}",
        inspect(&cpu_only, &["--dump", "ptx"]).expect_err("no PTX")
    );
    assert!(error.contains("no GPU kernels"), "{error}");
}
