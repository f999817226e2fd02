//! ONNX import for sparkc: a `.onnx` file (opsets 7 to 28) to a verified, shape-inferred IR model.
//!
//! The file is memory-mapped and parsed with `onnx-protobuf`; initializer bytes move into the IR
//! without a second copy, and external data files are memory-mapped and shared.

mod attrs;
pub mod contrib;
mod error;
pub mod export;
mod import;
mod ops;
mod tensor;

pub use error::{ImportError, Result};
pub use ops::SUPPORTED_OPS;
pub use tensor::{dtype_from_onnx, dtype_to_onnx, tensor_from_bytes, MAX_DIM, MAX_ELEMENTS};

use bytes::Bytes;
use onnx_protobuf::{FunctionProto, GraphProto, Message, ModelProto};
use sparkc_ir::Model;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tensor::ExternalFiles;

/// Oldest default-domain opset accepted.
pub const MIN_OPSET: i64 = 7;
/// Newest default-domain opset accepted (what `onnx==1.23.2` writes).
pub const MAX_OPSET: i64 = 28;

fn file_error(path: &Path, message: impl Into<String>) -> ImportError {
    ImportError::File {
        path: path.display().to_string(),
        message: message.into(),
    }
}

fn parse(bytes: &[u8], path: &Path) -> Result<ModelProto> {
    ModelProto::parse_from_bytes(bytes).map_err(|e| {
        file_error(
            path,
            format!("not a valid ONNX model (protobuf decoding failed: {e})"),
        )
    })
}

fn read(path: &Path) -> Result<ModelProto> {
    let file = std::fs::File::open(path).map_err(|e| file_error(path, e.to_string()))?;
    // SAFETY: read-only map of the model file, dropped once parsing is done.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| file_error(path, e.to_string()))?;
    parse(&map, path)
}

/// The default-domain opset a model declares, checked against the supported range.
pub fn default_opset(model: &ModelProto) -> Result<i64> {
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| {
            ImportError::Model("the model imports no version of the default ONNX opset".into())
        })?;
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Err(ImportError::Model(format!(
            "opset {opset} is outside the supported range {MIN_OPSET} to {MAX_OPSET}"
        )));
    }
    Ok(opset)
}

/// Loads, imports, infers and verifies the model at `path`.
pub fn load(path: &Path) -> Result<Model> {
    let proto = read(path)?;
    let folder = path.parent().map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    });
    import_model(proto, folder).map_err(|e| match e {
        ImportError::Model(message) => file_error(path, message),
        other => other,
    })
}

/// Imports a model from bytes; external data (if any) is resolved relative to `folder`.
pub fn load_bytes(bytes: &[u8], folder: Option<&Path>) -> Result<Model> {
    import_model(parse(bytes, Path::new("<bytes>"))?, folder)
}

/// Imports a model from bytes whose external data all lies in `section`, named `location`
/// (an artifact's graph and its weight section); tensors borrow the section, no copy.
pub fn load_with_section(bytes: &[u8], location: &str, section: Bytes) -> Result<Model> {
    let proto = parse(bytes, Path::new("<embedded graph>"))?;
    import_with(proto, ExternalFiles::section(location, section))
}

/// Imports a parsed model, then infers shapes and verifies the graph.
pub fn import_model(proto: ModelProto, folder: Option<&Path>) -> Result<Model> {
    import_with(proto, ExternalFiles::new(folder.map(Path::to_path_buf)))
}

fn import_with(mut proto: ModelProto, mut external: ExternalFiles) -> Result<Model> {
    let opset = default_opset(&proto)?;
    let mut graph_proto = proto
        .graph
        .take()
        .ok_or_else(|| ImportError::Model("the model has no graph".into()))?;
    inline_functions(&mut graph_proto, &proto.functions, 0)?;
    let mut importer = import::Importer {
        opset,
        external: &mut external,
    };
    let (mut graph, _) = importer.graph(&mut graph_proto, &[], false)?;
    sparkc_ir::infer_graph(&mut graph)?;
    sparkc_ir::verify(&graph)?;
    Ok(Model {
        graph,
        opset,
        ir_version: proto.ir_version,
        producer: [
            proto.producer_name.as_str(),
            proto.producer_version.as_str(),
        ]
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(" "),
    })
}

/// How deep model-local functions may call each other before it counts as recursion.
const MAX_FUNCTION_DEPTH: usize = 16;

/// Replaces every call of a model-local function in `graph` and its subgraphs with the
/// function's body, its values renamed under the calling node's name.
fn inline_functions(
    graph: &mut GraphProto,
    functions: &[FunctionProto],
    depth: usize,
) -> Result<()> {
    if functions.is_empty() {
        return Ok(());
    }
    let mut nodes = Vec::with_capacity(graph.node.len());
    for (index, node) in std::mem::take(&mut graph.node).into_iter().enumerate() {
        let Some(function) = functions
            .iter()
            .find(|f| f.name == node.op_type && f.domain == node.domain)
        else {
            nodes.push(node);
            continue;
        };
        let label = import::node_label(&node, index);
        let fail = |message: String| ImportError::Node {
            node: label.clone(),
            op: node.op_type.clone(),
            opset: 1,
            message,
        };
        if depth >= MAX_FUNCTION_DEPTH {
            return Err(fail(format!(
                "functions call each other more than {MAX_FUNCTION_DEPTH} deep"
            )));
        }
        if node.input.len() > function.input.len() || node.output.len() > function.output.len() {
            return Err(fail(format!(
                "passes {} inputs and {} outputs to a function of {} and {}",
                node.input.len(),
                node.output.len(),
                function.input.len(),
                function.output.len()
            )));
        }
        let mut names: HashMap<String, String> = HashMap::new();
        for (formal, actual) in function
            .input
            .iter()
            .zip(node.input.iter().chain(std::iter::repeat(&String::new())))
        {
            names.insert(formal.clone(), actual.clone());
        }
        for (formal, actual) in function.output.iter().zip(&node.output) {
            names.insert(formal.clone(), actual.clone());
        }
        let rename = |name: &String| -> String {
            match names.get(name) {
                Some(actual) => actual.clone(),
                None if name.is_empty() => String::new(),
                None => format!("{label}/{name}"),
            }
        };
        let mut body = GraphProto::default();
        for inner in &function.node {
            if inner.attribute.iter().any(|a| !a.ref_attr_name.is_empty()) {
                return Err(fail(format!(
                    "function '{}' uses attribute references, which are not supported",
                    function.name
                )));
            }
            let mut inner = inner.clone();
            inner.name = format!("{label}/{}", inner.name);
            inner.input = inner.input.iter().map(rename).collect();
            inner.output = inner.output.iter().map(rename).collect();
            body.node.push(inner);
        }
        inline_functions(&mut body, functions, depth + 1)?;
        nodes.extend(body.node);
    }
    for attribute in nodes.iter_mut().flat_map(|n| n.attribute.iter_mut()) {
        let subgraphs = attribute
            .g
            .as_mut()
            .into_iter()
            .chain(&mut attribute.graphs);
        for subgraph in subgraphs {
            inline_functions(subgraph, functions, depth)?;
        }
    }
    graph.node = nodes;
    Ok(())
}

/// An op the importer does not support, with every node that uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Unsupported {
    /// Op type.
    pub op: String,
    /// Its domain (`ai.onnx` for the default one).
    pub domain: String,
    /// The nodes using it (subgraphs included).
    pub nodes: Vec<String>,
}

fn survey(graph: &GraphProto, found: &mut BTreeMap<(String, String), Vec<String>>) {
    for (index, node) in graph.node.iter().enumerate() {
        let default = node.domain.is_empty() || node.domain == "ai.onnx";
        let supported = match node.domain.as_str() {
            contrib::DOMAIN => contrib::SUPPORTED_OPS.contains(&node.op_type.as_str()),
            _ => default && SUPPORTED_OPS.contains(&node.op_type.as_str()),
        };
        if !supported {
            let domain = if default {
                "ai.onnx".to_string()
            } else {
                node.domain.clone()
            };
            found
                .entry((domain, node.op_type.clone()))
                .or_default()
                .push(import::node_label(node, index));
        }
        for attr in &node.attribute {
            attr.g
                .as_ref()
                .into_iter()
                .chain(attr.graphs.iter())
                .for_each(|g| survey(g, found));
        }
    }
}

/// Lists every unsupported op of the model at `path` at once, without importing it.
pub fn unsupported_ops(path: &Path) -> Result<(i64, Vec<Unsupported>)> {
    let proto = read(path)?;
    let opset = proto
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(0, |o| o.version);
    let mut found = BTreeMap::new();
    if let Some(graph) = proto.graph.as_ref() {
        survey(graph, &mut found);
    }
    Ok((
        opset,
        found
            .into_iter()
            .map(|((domain, op), nodes)| Unsupported { op, domain, nodes })
            .collect(),
    ))
}
