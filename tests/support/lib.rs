//! Shared helpers of the integration tests: the generated ONNX conformance material.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The folder written by `scripts/gen_onnx_tests.py`, generating it on first use.
pub fn generated() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo_root().join("tests/data/generated");
        if !dir.join("manifest.json").exists() {
            let status = Command::new("python3")
                .arg(repo_root().join("scripts/gen_onnx_tests.py"))
                .arg("--out")
                .arg(&dir)
                .status()
                .expect("python3 runs scripts/gen_onnx_tests.py (pip install onnx==1.23.2)");
            assert!(status.success(), "scripts/gen_onnx_tests.py failed");
        }
        dir
    })
}

/// The generator's manifest: onnx version, node test names, light model names.
pub fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(generated().join("manifest.json"))
        .expect("manifest.json is readable");
    serde_json::from_str(&text).expect("manifest.json is JSON")
}

/// Names listed under `key` in the manifest.
pub fn manifest_names(key: &str) -> Vec<String> {
    manifest()[key]
        .as_array()
        .expect("manifest lists names")
        .iter()
        .map(|v| v.as_str().expect("a name").to_string())
        .collect()
}
