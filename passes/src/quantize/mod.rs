//! Quantization: weights of products stored in a narrower format, activations rounded or
//! quantized with static scales, in the standard ONNX `QuantizeLinear`/`DequantizeLinear`
//! form that the CPU executor runs as the reference and the kernels fold into their products.
//!
//! [`quantize`] runs between the cleanup passes and the e-graph ([`crate::prepare`] and
//! [`crate::finish`]); [`policy`] chooses which products keep their precision, [`weights`]
//! rewrites a weight, [`activations`] an activation, and [`qdq`] recognises models that arrive
//! already quantized.

pub mod activations;
pub mod policy;
pub mod qdq;
pub mod sensitivity;
pub mod weights;

use crate::manager::PassError;
use sparkc_ir::{DType, Graph, NodeId, Op, Tensor, ValueRef};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// A target format, as `sparkc compile --quantize` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// BF16 weights and product inputs; FP32 accumulation, reductions and normalization.
    Bf16,
    /// FP16 weights and product inputs, likewise.
    Fp16,
    /// FP8 E4M3 weights per output channel; FP8 activations with calibrated static scales.
    Fp8,
    /// NVFP4 weights (E2M1, E4M3 scale per 16, f32 per tensor); BF16 activations.
    Nvfp4,
    /// MXFP4 weights (E2M1, E8M0 scale per 32); BF16 activations.
    Mxfp4,
    /// INT8 weights per output channel; INT8 activations with calibrated static scales.
    Int8,
}

impl Scheme {
    /// Every scheme.
    pub const ALL: [Scheme; 6] = [
        Scheme::Bf16,
        Scheme::Fp16,
        Scheme::Fp8,
        Scheme::Nvfp4,
        Scheme::Mxfp4,
        Scheme::Int8,
    ];

    /// The name `--quantize` takes.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Bf16 => "bf16",
            Scheme::Fp16 => "fp16",
            Scheme::Fp8 => "fp8",
            Scheme::Nvfp4 => "nvfp4",
            Scheme::Mxfp4 => "mxfp4",
            Scheme::Int8 => "int8",
        }
    }

    /// The element type product inputs are rounded or quantized to.
    pub fn activation_dtype(self) -> DType {
        match self {
            Scheme::Fp16 => DType::F16,
            Scheme::Fp8 => DType::F8E4M3FN,
            Scheme::Int8 => DType::I8,
            Scheme::Bf16 | Scheme::Nvfp4 | Scheme::Mxfp4 => DType::BF16,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scheme {
    type Err = String;

    fn from_str(s: &str) -> Result<Scheme, String> {
        Scheme::ALL
            .into_iter()
            .find(|q| q.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Scheme::ALL.iter().map(|q| q.name()).collect();
                format!("unknown format '{s}' (one of {})", names.join(", "))
            })
    }
}

/// The observed range of one activation over the calibration inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Range {
    /// Largest magnitude seen.
    pub max: f32,
    /// The 99.99th percentile of the magnitudes (outliers clipped).
    pub percentile: f32,
}

/// What the quantizer is asked to do.
#[derive(Clone, Debug)]
pub struct Config {
    /// The format.
    pub scheme: Scheme,
    /// Names of product nodes to leave in full precision, whatever the policy says.
    pub keep: Vec<String>,
    /// Products kept because quantizing them alone costs too much accuracy, with the cosine
    /// similarity the model keeps when only that one is quantized ([`sensitivity::fit`]).
    pub sensitive: Vec<(String, f64)>,
    /// Calibrated ranges by value name; activations without one keep their precision.
    pub ranges: HashMap<String, Range>,
    /// NVFP4 and MXFP4: round the inputs of MatMul and Gemm to the weights' block format (each
    /// block along k rounded with its own scale, as the FP4 tensor cores of the sm_120 family
    /// take them) instead of to BF16.
    pub block_activations: bool,
}

/// What happened to one product.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The product's node name.
    pub node: String,
    /// Its op.
    pub op: String,
    /// Shape of its weight.
    pub weight_shape: Vec<usize>,
    /// The format its weight was stored in (`f32` when kept).
    pub weight_format: String,
    /// The format its activation input was rounded to (`f32` when kept).
    pub activation_format: String,
    /// Why it kept its precision, when it did.
    pub kept_because: Option<String>,
    /// Relative RMS error of the quantized weight (0 when kept).
    pub weight_error: f64,
}

/// The quantizer's account of a graph: one decision per product, and the weight bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QuantReport {
    /// The decisions, in execution order.
    pub decisions: Vec<Decision>,
    /// Bytes of every constant before.
    pub weight_bytes_before: usize,
    /// Bytes of every constant after.
    pub weight_bytes_after: usize,
}

impl QuantReport {
    /// Products whose weight was quantized.
    pub fn quantized(&self) -> usize {
        self.decisions
            .iter()
            .filter(|d| d.kept_because.is_none())
            .count()
    }

    /// One line per product: node, op, weight shape, formats, error or reason kept.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<32} {:<10} {:<18} {:<10} {:<10} {}\n",
            "node", "op", "weight", "weight as", "input as", "rel. error / kept because"
        );
        for d in &self.decisions {
            let why = match &d.kept_because {
                Some(reason) => format!("kept: {reason}"),
                None => format!("{:.4}", d.weight_error),
            };
            out.push_str(&format!(
                "{:<32} {:<10} {:<18} {:<10} {:<10} {why}\n",
                d.node,
                d.op,
                format!("{:?}", d.weight_shape),
                d.weight_format,
                d.activation_format
            ));
        }
        out
    }
}

/// A product with a constant f32 weight: the candidates for quantization.
#[derive(Clone, Debug)]
pub struct Product {
    /// The node.
    pub id: NodeId,
    /// Input slot of the activation.
    pub activation: usize,
    /// Input slot of the weight.
    pub weight: usize,
    /// Axis of the weight that indexes output channels.
    pub channel_axis: usize,
    /// Axis of the weight that the product reduces over.
    pub reduce_axis: usize,
}

/// The products of `graph` whose weight is a constant f32 tensor, in execution order.
pub fn products(graph: &Graph) -> Result<Vec<Product>, PassError> {
    let mut out = Vec::new();
    for id in graph.topo_order()? {
        let weight = |slot: usize| crate::edit::const_input(graph, id, slot);
        let is_f32 = |t: Option<&Tensor>| t.is_some_and(|t| t.dtype == DType::F32 && !t.is_empty());
        let product = match &graph.node(id).op {
            Op::MatMul if is_f32(weight(1)) && weight(1).is_some_and(|t| t.shape.len() >= 2) => {
                let rank = weight(1).map_or(2, |t| t.shape.len());
                Some((rank - 1, rank - 2))
            }
            Op::Gemm { trans_b, .. } if is_f32(weight(1)) => {
                Some(if *trans_b { (0, 1) } else { (1, 0) })
            }
            Op::Conv(_) if is_f32(weight(1)) => Some((0, 1)),
            _ => None,
        };
        if let Some((channel_axis, reduce_axis)) = product {
            out.push(Product {
                id,
                activation: 0,
                weight: 1,
                channel_axis,
                reduce_axis,
            });
        }
    }
    Ok(out)
}

/// The activation values calibration should observe: the first input of every product.
pub fn calibration_values(graph: &Graph) -> Result<Vec<ValueRef>, PassError> {
    let mut values = Vec::new();
    for p in products(graph)? {
        if let Some(Some(v)) = graph.inputs_of(p.id).get(p.activation) {
            if !values.contains(v) {
                values.push(*v);
            }
        }
    }
    Ok(values)
}

/// Bytes of every constant of the graph.
pub fn constant_bytes(graph: &Graph) -> usize {
    graph
        .dag
        .node_weights()
        .map(|n| match &n.op {
            Op::Const(t) => t.data.len(),
            _ => 0,
        })
        .sum()
}

/// Quantizes the products of `graph` as `config` asks, returning what it did.
pub fn quantize(graph: &mut Graph, config: &Config) -> Result<QuantReport, PassError> {
    let weight_bytes_before = constant_bytes(graph);
    let products = products(graph)?;
    let mut decisions = Vec::with_capacity(products.len());
    // Constants shared by several products (CSE merges equal ones) are quantized once.
    let mut done: HashMap<(ValueRef, usize, usize), (ValueRef, String, f64)> = HashMap::new();
    for (index, product) in products.iter().enumerate() {
        let node = graph.node(product.id);
        let Some(Some(old)) = graph.inputs_of(product.id).get(product.weight).copied() else {
            return Err(node_error(graph, product.id, "the weight input vanished"));
        };
        let tensor = crate::edit::const_input(graph, product.id, product.weight)
            .cloned()
            .ok_or_else(|| node_error(graph, product.id, "the weight is no longer constant"))?;
        let mut decision = Decision {
            node: node.name.clone(),
            op: node.op.name(),
            weight_shape: tensor.shape.clone(),
            weight_format: "f32".into(),
            activation_format: "f32".into(),
            kept_because: None,
            weight_error: 0.0,
        };
        let position = policy::Position {
            index,
            count: products.len(),
        };
        if let Some(reason) = policy::keep_before(config, &decision, product, position) {
            decision.kept_because = Some(reason);
            decisions.push(decision);
            continue;
        }
        let key = (old, product.channel_axis, product.reduce_axis);
        let (format, error) = match done.get(&key) {
            Some((restored, format, error)) => {
                weights::reroute(graph, product, old, *restored);
                (format.clone(), *error)
            }
            None => {
                let stored = weights::quantize(config.scheme, &tensor, product)
                    .map_err(|e| node_error(graph, product.id, &e.to_string()))?;
                if let Some(reason) = policy::keep_after(config.scheme, stored.error) {
                    decision.kept_because = Some(reason);
                    decisions.push(decision);
                    continue;
                }
                let (format, error) = (stored.format.clone(), stored.error);
                let restored = weights::replace(graph, product, old, stored);
                done.insert(key, (restored, format.clone(), error));
                (format, error)
            }
        };
        decision.weight_format = format;
        decision.weight_error = error;
        decision.activation_format = activations::quantize(graph, config, product)?;
        decisions.push(decision);
    }
    sparkc_ir::infer_graph(graph)?;
    Ok(QuantReport {
        decisions,
        weight_bytes_before,
        weight_bytes_after: constant_bytes(graph),
    })
}

/// An error about node `id`.
fn node_error(graph: &Graph, id: NodeId, message: &str) -> PassError {
    let node = graph.node(id);
    PassError::Node {
        node: node.name.clone(),
        op: node.op.name(),
        message: message.to_string(),
    }
}
