//! The command line: `sparkc inspect` against committed expected output (`SPARKC_BLESS=1` rewrites
//! it), and `sparkc run` / `sparkc bench` on the example model, bad inputs included.

use sparkc_cli::execute_args;
use sparkc_tests::{generated, repo_root};
use std::path::Path;

fn snapshot(name: &str, actual: &str) {
    let path = repo_root().join("tests/snapshots").join(name);
    if std::env::var_os("SPARKC_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (SPARKC_BLESS=1 writes it)", path.display()));
    assert_eq!(
        actual,
        expected,
        "sparkc output differs from {}",
        path.display()
    );
}

fn inspect(model: &Path, extra: &[&str]) -> String {
    let mut argv = vec![
        "sparkc".to_string(),
        "inspect".to_string(),
        model.display().to_string(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    execute_args(argv).unwrap_or_else(|e| panic!("sparkc inspect failed: {e:#}"))
}

fn example() -> std::path::PathBuf {
    repo_root().join("examples/models/tiny_cnn.onnx")
}

#[test]
fn example_summary() {
    snapshot("tiny_cnn.summary.txt", &inspect(&example(), &[]));
}

#[test]
fn example_ir_text() {
    snapshot("tiny_cnn.ir.txt", &inspect(&example(), &["--dump", "ir"]));
}

#[test]
fn example_dot() {
    snapshot("tiny_cnn.dot", &inspect(&example(), &["--dump", "dot"]));
}

#[test]
fn example_json() {
    let text = inspect(&example(), &["--dump", "json"]);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["graph"]["nodes"].as_array().unwrap().len(), 24);
    snapshot("tiny_cnn.json", &text);
}

#[test]
fn light_model_summary_and_ir() {
    let model = generated().join("light/light_squeezenet.onnx");
    snapshot(
        "light_squeezenet.summary.txt",
        &inspect(&model, &[]).replace(&generated().display().to_string(), "<generated>"),
    );
    snapshot(
        "light_squeezenet.ir.txt",
        &inspect(&model, &["--dump", "ir"]),
    );
}

#[test]
fn output_file_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ir.txt");
    let printed = inspect(
        &example(),
        &["--dump", "ir", "-o", &path.display().to_string()],
    );
    assert!(printed.is_empty());
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        inspect(&example(), &["--dump", "ir"])
    );
}

#[test]
fn unsupported_lists_every_op_at_once() {
    let ok = inspect(&example(), &["--unsupported"]);
    assert!(ok.contains("every op"), "{ok}");
    let model = generated().join("node/test_image_decoder_decode_jpeg_bgr/model.onnx");
    let error = execute_args([
        "sparkc",
        "inspect",
        &model.display().to_string(),
        "--unsupported",
    ])
    .unwrap_err();
    assert!(
        format!("{error:#}").contains("ai.onnx::ImageDecoder (1 node(s)"),
        "{error:#}"
    );
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.onnx");
    std::fs::write(&path, b"\x0a\xff\xff\xff\xff\x0fnot a model").unwrap();
    let error = execute_args(["sparkc", "inspect", &path.display().to_string()]).unwrap_err();
    assert!(
        format!("{error:#}").contains("junk.onnx: not a valid ONNX model"),
        "{error:#}"
    );
    let missing = execute_args(["sparkc", "inspect", "/nonexistent/model.onnx"]).unwrap_err();
    assert!(
        format!("{missing:#}").contains("/nonexistent/model.onnx"),
        "{missing:#}"
    );
}

fn sparkc(args: &[&str]) -> anyhow::Result<String> {
    let mut argv = vec!["sparkc".to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    execute_args(argv)
}

#[test]
fn run_writes_one_npy_per_output_and_summarizes() {
    let dir = tempfile::tempdir().unwrap();
    let model = example().display().to_string();
    let out = dir.path().display().to_string();
    let run_seeded = || {
        sparkc(&[
            "run",
            &model,
            "--random-inputs",
            "--dim",
            "N=2",
            "--seed",
            "7",
            "--output-dir",
            &out,
        ])
        .unwrap()
    };
    let text = run_seeded();
    assert!(text.starts_with("probs: f32[2, 10]  min "), "{text}");
    let probs = sparkc_cli::npy::read(&dir.path().join("probs.npy")).unwrap();
    assert_eq!(probs.shape, vec![2, 10]);
    // Softmax rows sum to one: the values are the model's, not placeholders.
    let values = probs.data.to_f64s();
    for row in values.chunks(10) {
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-5, "{row:?}");
    }
    // The same seed gives the same inputs, so the same outputs.
    let again = run_seeded();
    assert_eq!(text, again);
}

#[test]
fn run_reads_npy_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("image.npy");
    let image = sparkc_cpu::Array::f32(
        vec![1, 3, 32, 32],
        (0..3072).map(|i| (i % 17) as f32 / 17.0).collect(),
    );
    sparkc_cli::npy::write(&input, &image).unwrap();
    let text = sparkc(&[
        "run",
        &example().display().to_string(),
        "--input",
        &format!("image={}", input.display()),
        "--output-dir",
        &dir.path().display().to_string(),
    ])
    .unwrap();
    assert!(text.starts_with("probs: f32[1, 10]"), "{text}");
}

#[test]
fn run_explains_wrong_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let model = example().display().to_string();
    let no_dim = sparkc(&["run", &model, "--random-inputs"]).unwrap_err();
    assert!(
        format!("{no_dim:#}").contains("give its size with --dim N=SIZE"),
        "{no_dim:#}"
    );
    let missing = sparkc(&["run", &model]).unwrap_err();
    assert!(
        format!("{missing:#}").contains("image: f32[N,3,32,32]"),
        "{missing:#}"
    );
    let bogus = dir.path().join("x.npy");
    sparkc_cli::npy::write(&bogus, &sparkc_cpu::Array::f32(vec![2, 2], vec![0.0; 4])).unwrap();
    let wrong_name = sparkc(&[
        "run",
        &model,
        "--input",
        &format!("picture={}", bogus.display()),
    ])
    .unwrap_err();
    let text = format!("{wrong_name:#}");
    assert!(
        text.contains("no input 'picture'") && text.contains("image: f32[N,3,32,32]"),
        "{text}"
    );
    let wrong_shape = sparkc(&[
        "run",
        &model,
        "--input",
        &format!("image={}", bogus.display()),
    ])
    .unwrap_err();
    let text = format!("{wrong_shape:#}");
    assert!(
        text.contains("input 'image' must be f32[N,3,32,32], given f32[2, 2]"),
        "{text}"
    );
    let ints = dir.path().join("i.npy");
    sparkc_cli::npy::write(
        &ints,
        &sparkc_cpu::Array::i64(vec![1, 3, 32, 32], vec![0; 3072]),
    )
    .unwrap();
    let wrong_type = sparkc(&[
        "run",
        &model,
        "--input",
        &format!("image={}", ints.display()),
    ])
    .unwrap_err();
    assert!(
        format!("{wrong_type:#}").contains("given i64[1, 3, 32, 32]"),
        "{wrong_type:#}"
    );
    let not_npy = dir.path().join("junk.npy");
    std::fs::write(&not_npy, b"junk").unwrap();
    let junk = sparkc(&[
        "run",
        &model,
        "--input",
        &format!("image={}", not_npy.display()),
    ])
    .unwrap_err();
    assert!(
        format!("{junk:#}").contains("is not a .npy file"),
        "{junk:#}"
    );
}

#[test]
fn output_file_names_are_sanitized() {
    assert_eq!(sparkc_cli::run::file_name("logits"), "logits");
    assert_eq!(sparkc_cli::run::file_name("a/b:c d"), "a_b_c_d");
    assert_eq!(sparkc_cli::run::file_name("../x"), ".._x");
    assert_eq!(sparkc_cli::run::file_name(".."), "output..");
}

#[test]
fn bench_reports_percentiles_and_profile() {
    let text = sparkc(&[
        "bench",
        &example().display().to_string(),
        "--dim",
        "N=1",
        "--warmup",
        "1",
        "--iters",
        "3",
        "--profile",
    ])
    .unwrap();
    assert!(text.contains("latency ms: min "), "{text}");
    assert!(text.contains("throughput: "), "{text}");
    assert!(text.contains("\nFused(Conv+Relu) "), "{text}");
    let raw = sparkc(&[
        "bench",
        &example().display().to_string(),
        "--dim",
        "N=1",
        "--iters",
        "2",
        "--profile",
        "--no-opt",
    ])
    .unwrap();
    assert!(raw.contains("\nConv "), "{raw}");
    // Per node, with the bare flag still usable just before the model.
    let nodes = sparkc(&[
        "bench",
        "--profile=nodes",
        &example().display().to_string(),
        "--dim",
        "N=2",
        "--iters",
        "2",
    ])
    .unwrap();
    assert!(nodes.contains("\nnode "), "{nodes}");
    assert!(nodes.contains("f32[2, 16, 32, 32]"), "{nodes}");
    assert!(nodes.contains("Fused(Conv+Relu)"), "{nodes}");
    let bare = sparkc(&[
        "bench",
        "--profile",
        &example().display().to_string(),
        "--dim",
        "N=1",
        "--iters",
        "1",
    ])
    .unwrap();
    assert!(bare.contains("\nop "), "{bare}");
    let json = sparkc(&[
        "bench",
        &example().display().to_string(),
        "--dim",
        "N=1",
        "--iters",
        "2",
        "--json",
    ])
    .unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(value["median_ms"].as_f64().unwrap() > 0.0);
    assert!(sparkc(&["bench", &example().display().to_string(), "--iters", "0"]).is_err());
}

fn bert() -> std::path::PathBuf {
    sparkc_tests::generated_models().join("bert_encoder/model.onnx")
}

#[test]
fn example_optimized_ir() {
    snapshot(
        "tiny_cnn.opt.ir.txt",
        &inspect(&example(), &["--stage", "opt", "--dump", "ir"]),
    );
}

#[test]
fn explain_names_the_rules_behind_each_fused_node() {
    let text = inspect(&bert(), &["--explain"]);
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle} in:\n{text}"))
            .to_string()
    };
    assert!(line(" Attention ").contains("attention-heads"), "{text}");
    assert!(line("LayerNormalization").ends_with("layernorm"), "{text}");
    assert!(
        line("Fused(TransposedMatMul+Add+Gelu)").contains("gelu-erf"),
        "{text}"
    );
    assert!(
        line("Fused(TransposedMatMul+Add+Gelu)").contains("fuse-epilogue"),
        "{text}"
    );
    let dot = inspect(&bert(), &["--stage", "opt", "--dump", "dot"]);
    assert!(
        dot.contains("Fused\\nTransposedMatMul+Add+Gelu\\n"),
        "{dot}"
    );
    let summary = text.lines().last().unwrap();
    assert!(
        summary.starts_with("nodes 107 -> 20, kernels 97 -> 19, "),
        "{summary}"
    );
    assert!(summary.contains("e-graph algebra "), "{summary}");
}

#[test]
fn after_stops_the_pipeline_at_a_pass() {
    let folded = inspect(&bert(), &["--after", "cse", "--dump", "ir"]);
    assert!(
        folded.contains("ReduceMean"),
        "CSE leaves LayerNorm decomposed"
    );
    let saturated = inspect(&bert(), &["--after", "saturate", "--dump", "ir"]);
    assert!(!saturated.contains("ReduceMean") && saturated.contains("LayerNormalization"));
    let err = sparkc(&[
        "inspect",
        &bert().display().to_string(),
        "--after",
        "nosuch",
    ])
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("no pass is named 'nosuch'") && err.contains("saturate"),
        "{err}"
    );
}

#[test]
fn optimize_writes_onnx_that_runs_like_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let optimized = dir.path().join("bert.opt.onnx");
    let text = sparkc(&[
        "optimize",
        &bert().display().to_string(),
        "-o",
        &optimized.display().to_string(),
    ])
    .unwrap();
    assert!(text.starts_with("wrote "), "{text}");
    let run = |model: &Path, extra: &[&str], out: &str| {
        let out_dir = dir.path().join(out);
        std::fs::create_dir_all(&out_dir).unwrap();
        let mut args = vec![
            "run".to_string(),
            model.display().to_string(),
            "--random-inputs".to_string(),
            "--seed".to_string(),
            "3".to_string(),
            "--output-dir".to_string(),
            out_dir.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        sparkc(&refs).unwrap();
        sparkc_cli::npy::read(&out_dir.join("output.npy")).unwrap()
    };
    let reference = run(&bert(), &["--no-opt"], "raw");
    let reread = run(&optimized, &["--no-opt"], "exported");
    let again = run(&bert(), &[], "optimized");
    for other in [&reread, &again] {
        assert_eq!(other.shape, reference.shape);
        let worst = other
            .data
            .to_f64s()
            .iter()
            .zip(reference.data.to_f64s())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-4, "optimized output differs by {worst}");
    }
}

#[test]
fn inspect_quantize_shows_the_tensor_cores_each_product_runs_on() {
    let bert = bert();
    let int8 = inspect(&bert, &["--quantize", "int8", "--dump", "kernels"]);
    assert!(int8.contains("mma.s8xs8"), "{int8}");
    let fp4 = inspect(
        &bert,
        &[
            "--quantize",
            "nvfp4",
            "--activations",
            "nvfp4",
            "--dump",
            "kernels",
            "--target",
            "sm_121a",
        ],
    );
    assert!(fp4.contains("mma.mxf4nvf4.e2m1xe2m1.ue4m3"), "{fp4}");
    assert!(fp4.contains("RoundToBlocks+"), "{fp4}");
    let ir = inspect(&bert, &["--quantize", "fp8", "--dump", "ir"]);
    assert!(ir.contains("fold-quantized"), "{ir}");
}
