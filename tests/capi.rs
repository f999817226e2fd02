//! The C ABI: `examples/c/main.c` compiles against `sparkc.h`, links `libsparkc`, and runs a
//! compiled artifact on the CPU; its outputs match the Rust API's.

use sparkc_cli::execute_args;
use sparkc_runtime::{Artifact, Device, Session, Tensor};
use sparkc_tests::repo_root;
use std::path::PathBuf;
use std::process::Command;

/// The folder holding `libsparkc.so` for this test's profile, built if missing.
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .to_path_buf();
    if !dir.join("libsparkc.so").exists() {
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo.args(["build", "-p", "sparkc-capi"]);
        if dir.ends_with("release") {
            cargo.arg("--release");
        }
        assert!(
            cargo.status().expect("cargo runs").success(),
            "building libsparkc"
        );
    }
    dir
}

#[test]
fn the_c_example_runs_an_artifact() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spark = dir.path().join("tiny.spark");
    let model = repo_root().join("examples/models/tiny_cnn.onnx");
    execute_args([
        "sparkc",
        "compile",
        &model.display().to_string(),
        "-o",
        &spark.display().to_string(),
    ])
    .expect("compiles");
    let lib = library_dir();
    let exe = dir.path().join("run_spark");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let built = Command::new(cc)
        .arg(repo_root().join("examples/c/main.c"))
        .arg("-std=c11")
        .arg("-Wall")
        .arg("-Werror")
        .arg(format!(
            "-I{}",
            repo_root().join("crates/capi/include").display()
        ))
        .arg(format!("-L{}", lib.display()))
        .arg("-lsparkc")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("a C compiler runs");
    assert!(
        built.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let ran = Command::new(&exe)
        .arg(&spark)
        .output()
        .expect("the example runs");
    let stdout = String::from_utf8_lossy(&ran.stdout);
    assert!(
        ran.status.success(),
        "the C example failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert!(
        stdout.contains("refused as expected: the model has no input 'no_such_input'"),
        "{stdout}"
    );
    // The same run through the Rust API.
    let session =
        Session::new(&Artifact::open(&spark).expect("opens"), Device::Cpu).expect("session");
    let image = Tensor::from_f32(vec![1, 3, 32, 32], &[0.5; 3 * 32 * 32]);
    let outputs = session.run(&[("image", image)]).expect("runs");
    let first: Vec<String> = outputs[0].1.to_f32()[..4]
        .iter()
        .map(|v| format!("{v:.6}"))
        .collect();
    let line = format!("probs: [1, 10] {}", first.join(" "));
    assert!(stdout.contains(&line), "expected {line:?} in:\n{stdout}");
}
