//! Codegen: every kernel of every whole model, for every target, assembles with `ptxas`.
//!
//! `ptxas` comes from the `nvidia-cuda-nvcc` PyPI package (the test command installs it); set
//! `PTXAS` to use another. The count of kernels assembled per target is printed.

use sparkc_kernels::{lower_graph, Output, Precision, Sm};
use sparkc_tests::{generated, generated_models, manifest_names, repo_root};
use std::path::{Path, PathBuf};
use std::process::Command;

fn ptxas() -> PathBuf {
    if let Ok(p) = std::env::var("PTXAS") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import site; print('\\n'.join(site.getsitepackages()))",
        ])
        .output()
        .expect("python3 runs");
    let found = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|sp| Path::new(sp).join("nvidia/cu13/bin/ptxas"))
        .find(|p| p.exists());
    found.expect("ptxas: pip install nvidia-cuda-nvcc (or set PTXAS)")
}

fn whole_models() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for name in manifest_names("light") {
        out.push((
            name.clone(),
            generated().join("light").join(format!("{name}.onnx")),
        ));
    }
    let dir = generated_models();
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("manifest.json")).expect("models manifest"),
    )
    .expect("manifest is JSON");
    for name in manifest["models"].as_array().expect("models list") {
        let name = name.as_str().expect("a name").to_string();
        out.push((name.clone(), dir.join(&name).join("model.onnx")));
    }
    out.push((
        "tiny_cnn".into(),
        repo_root().join("examples/models/tiny_cnn.onnx"),
    ));
    out
}

/// Runs ptxas on each file, two at a time; returns the failures.
fn assemble(ptxas: &Path, sm: Sm, files: &[PathBuf]) -> Vec<String> {
    let chunks: Vec<&[PathBuf]> = files.chunks(files.len().div_ceil(2).max(1)).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                s.spawn(move || {
                    let mut failures = Vec::new();
                    for f in chunk {
                        let out = Command::new(ptxas)
                            .arg(format!("-arch={}", sm.name()))
                            .arg(f)
                            .args(["-o", "/dev/null"])
                            .output()
                            .expect("ptxas runs");
                        if !out.status.success() {
                            failures.push(format!(
                                "{} ({sm}): {}",
                                f.display(),
                                String::from_utf8_lossy(&out.stderr)
                            ));
                        }
                    }
                    failures
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("ptxas thread"))
            .collect()
    })
}

#[test]
fn every_kernel_of_every_model_assembles_for_every_target() {
    let ptxas = ptxas();
    let dir = std::env::temp_dir().join(format!("sparkc-ptx-{}", std::process::id()));
    let mut failures = Vec::new();
    let mut report = Vec::new();
    let mut models = Vec::new();
    for (name, path) in whole_models() {
        let mut model = sparkc_onnx::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        sparkc_passes::standard()
            .and_then(|mut passes| passes.run(&mut model.graph))
            .unwrap_or_else(|e| panic!("{name}: optimize: {e}"));
        models.push((name, model));
    }
    for sm in Sm::ALL {
        let mut files = Vec::new();
        for (name, model) in &models {
            let lowering = lower_graph(&model.graph, Output::Ptx(sm), Precision::default(), None)
                .unwrap_or_else(|e| panic!("{name} for {sm}: {e}"));
            let sub = dir.join(sm.name()).join(name);
            std::fs::create_dir_all(&sub).expect("temp dir");
            for k in lowering.kernels {
                let f = sub.join(format!("{}.ptx", k.info.name));
                std::fs::write(&f, k.text).expect("write PTX");
                files.push(f);
            }
        }
        let failed = assemble(&ptxas, sm, &files);
        report.push(format!(
            "{sm}: {} of {} kernels assembled",
            files.len() - failed.len(),
            files.len()
        ));
        failures.extend(failed);
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "ptxas over {} whole models:\n  {}",
        models.len(),
        report.join("\n  ")
    );
    assert!(
        failures.is_empty(),
        "{} kernels failed ptxas:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
