//! `sparkc inspect` checked against committed expected output (`SPARKC_BLESS=1` rewrites it).

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
    let model = generated().join("node/test_nllloss_NC/model.onnx");
    let error = execute_args([
        "sparkc",
        "inspect",
        &model.display().to_string(),
        "--unsupported",
    ])
    .unwrap_err();
    assert!(
        format!("{error:#}").contains("ai.onnx::NegativeLogLikelihoodLoss (1 node(s)"),
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
