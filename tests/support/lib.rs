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

/// Reads a serialized ONNX value (`TensorProto`, `SequenceProto` or `OptionalProto`) of `kind`.
pub fn read_value(path: &Path, kind: &serde_json::Value) -> Result<sparkc_cpu::Value, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    decode_value(&bytes, kind.as_str().unwrap_or("tensor"))
}

fn decode_value(bytes: &[u8], kind: &str) -> Result<sparkc_cpu::Value, String> {
    use sparkc_cpu::{Array, Value};
    let tensor = |b: &[u8]| -> Result<Array, String> {
        sparkc_onnx::tensor_from_bytes(b)
            .map(|t| Array::from_tensor(&t))
            .map_err(|e| e.to_string())
    };
    match kind {
        "tensor" => Ok(Value::Tensor(tensor(bytes)?)),
        "sequence" => {
            let items = protobuf_fields(bytes)?
                .into_iter()
                .filter(|(field, _)| *field == 3)
                .map(|(_, b)| tensor(&b))
                .collect::<Result<_, _>>()?;
            Ok(Value::Sequence(items))
        }
        "optional" => {
            for (field, b) in protobuf_fields(bytes)? {
                match field {
                    3 => return Ok(Value::Optional(Some(Box::new(Value::Tensor(tensor(&b)?))))),
                    5 => {
                        let inner = decode_value(&b, "sequence")?;
                        return Ok(Value::Optional(Some(Box::new(inner))));
                    }
                    _ => {}
                }
            }
            Ok(Value::Optional(None))
        }
        other => Err(format!("values of kind '{other}' are not supported")),
    }
}

/// The length-delimited fields of a protobuf message, as (field number, bytes).
fn protobuf_fields(bytes: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, String> {
    fn varint(bytes: &[u8], pos: &mut usize) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *bytes.get(*pos).ok_or("truncated varint")?;
            *pos += 1;
            value |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint too long".into())
    }
    let (mut pos, mut fields) = (0, Vec::new());
    while pos < bytes.len() {
        let tag = varint(bytes, &mut pos)?;
        match tag & 7 {
            0 => {
                varint(bytes, &mut pos)?;
            }
            1 => pos += 8,
            5 => pos += 4,
            2 => {
                let len = varint(bytes, &mut pos)? as usize;
                let end = pos
                    .checked_add(len)
                    .filter(|&e| e <= bytes.len())
                    .ok_or("truncated field")?;
                fields.push((tag >> 3, bytes[pos..end].to_vec()));
                pos = end;
            }
            other => return Err(format!("unsupported wire type {other}")),
        }
    }
    Ok(fields)
}

/// The folder written by `scripts/gen_models.py` (test scale), generating it on first use.
pub fn generated_models() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo_root().join("tests/data/generated/models");
        if !dir.join("manifest.json").exists() {
            let status = Command::new("python3")
                .arg(repo_root().join("scripts/gen_models.py"))
                .arg("--out")
                .arg(&dir)
                .status()
                .expect("python3 runs scripts/gen_models.py (pip install onnx onnxruntime)");
            assert!(status.success(), "scripts/gen_models.py failed");
        }
        dir
    })
}

/// The folder written by `scripts/gen_codec_refs.py` (ml_dtypes encodings), generating it on
/// first use.
pub fn generated_codecs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo_root().join("tests/data/generated/codecs");
        if !dir.join("nvfp4_1_scales.npy").exists() {
            let status = Command::new("python3")
                .arg(repo_root().join("scripts/gen_codec_refs.py"))
                .arg("--out")
                .arg(&dir)
                .status()
                .expect("python3 runs scripts/gen_codec_refs.py (pip install ml_dtypes)");
            assert!(status.success(), "scripts/gen_codec_refs.py failed");
        }
        dir
    })
}

/// Every whole model the suite runs: the onnx package's light models, the generated BERT-,
/// GPT- and MobileNet-style models, and the example CNN, as (name, path).
pub fn whole_models() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = manifest_names("light")
        .into_iter()
        .map(|name| {
            let path = generated().join("light").join(format!("{name}.onnx"));
            (name, path)
        })
        .collect();
    let dir = generated_models();
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("manifest.json")).expect("models manifest"),
    )
    .expect("manifest is JSON");
    for name in manifest["models"].as_array().expect("models list") {
        let name = name.as_str().expect("a name").to_string();
        let path = dir.join(&name).join("model.onnx");
        out.push((name, path));
    }
    out.push((
        "tiny_cnn".into(),
        repo_root().join("examples/models/tiny_cnn.onnx"),
    ));
    out
}

/// The models listed under `key` in the generated models' manifest, in the folder of that
/// name, as (name, path).
fn listed_models(key: &str) -> Vec<(String, PathBuf)> {
    let dir = generated_models();
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("manifest.json")).expect("models manifest"),
    )
    .expect("manifest is JSON");
    manifest[key]
        .as_array()
        .unwrap_or_else(|| panic!("a {key} list in the manifest"))
        .iter()
        .map(|name| {
            let name = name.as_str().expect("a name").to_string();
            let path = dir.join(key).join(&name).join("model.onnx");
            (name, path)
        })
        .collect()
}

/// The models onnxruntime's quantizer wrote in QDQ form (`scripts/gen_models.py`), as
/// (name, path).
pub fn qdq_models() -> Vec<(String, PathBuf)> {
    listed_models("qdq")
}

/// The models as onnxruntime's optimizers save them, with its fused `com.microsoft` ops
/// (`scripts/gen_models.py`), as (name, path).
pub fn contrib_models() -> Vec<(String, PathBuf)> {
    listed_models("contrib")
}

/// How many convolutions of `graph` (bare or in fused nodes) run channels last.
pub fn channels_last_convolutions(graph: &sparkc_ir::Graph) -> usize {
    use sparkc_ir::Op;
    let channels_last = |op: &Op| matches!(op, Op::Conv(a) if !a.layout.is_nchw());
    graph
        .dag
        .node_weights()
        .filter(|n| match &n.op {
            Op::Fused(f) => f.body.iter().any(|b| channels_last(&b.op)),
            op => channels_last(op),
        })
        .count()
}

/// Binds the inputs of a node test that real models hold as constants — Resize's roi, scales
/// and sizes, DFT's length and axis, STFT's frame step and length — to the values of its first
/// test set, and types the graph again, so their outputs get static sizes (and kernels).
pub fn bind_constant_inputs(
    graph: &mut sparkc_ir::Graph,
    dir: &Path,
    meta: &serde_json::Value,
) -> Result<(), String> {
    use sparkc_ir::Op;
    let constant: &[&str] = match graph.dag.node_weights().find_map(|n| match n.op {
        Op::Resize(_) => Some(&["roi", "scales", "sizes"][..]),
        Op::Dft { .. } => Some(&["dft_length", "axis"][..]),
        Op::Stft { .. } => Some(&["frame_step", "frame_length"][..]),
        _ => None,
    }) {
        Some(names) => names,
        None => return Ok(()),
    };
    let names: Vec<String> = graph
        .inputs
        .iter()
        .map(|&id| graph.node(id).name.clone())
        .collect();
    let set = dir.join("test_data_set_0");
    for (j, name) in names.iter().enumerate() {
        if !constant.contains(&name.as_str()) {
            continue;
        }
        let sparkc_cpu::Value::Tensor(a) =
            read_value(&set.join(format!("input_{j}.pb")), &meta["inputs"][j])?
        else {
            return Err(format!("input {name} is not a tensor"));
        };
        graph
            .bind_input(name, a.to_tensor())
            .map_err(|e| e.to_string())?;
    }
    sparkc_ir::infer_graph(graph).map_err(|e| e.to_string())
}
