//! onnxruntime's quantized operators (domain `com.microsoft`), as its QOperator-format quantizer
//! writes them (`QLinearAdd`, `QGemm`…). Each is imported as the ops that define it:
//! `DequantizeLinear` of every quantized input, the float op, and `QuantizeLinear` of the result.
//! That is QDQ form, which the optimizer folds into quantized kernels like any other.

use crate::ops::{self, Pending, Source};
use onnx_protobuf::NodeProto;
use sparkc_ir::op::{Binary, Op};
use sparkc_ir::{DType, Tensor};

/// The domain of onnxruntime's contributed operators.
pub const DOMAIN: &str = "com.microsoft";

/// The operators of [`DOMAIN`] the importer understands.
pub const SUPPORTED_OPS: &[&str] = &[
    "QGemm",
    "QLinearAdd",
    "QLinearAveragePool",
    "QLinearConcat",
    "QLinearGlobalAveragePool",
    "QLinearLeakyRelu",
    "QLinearMul",
    "QLinearReduceMean",
    "QLinearSigmoid",
    "QLinearSoftmax",
];

/// The default-domain opset the float ops are read at (axes of `ReduceMean` as an attribute).
const FLOAT_OPSET: i64 = 17;

/// Where a quantized tensor's codes, scale and zero point are among a node's inputs.
#[derive(Clone, Copy)]
struct Quantized {
    codes: usize,
    scale: usize,
    zero: usize,
}

const fn quantized(codes: usize) -> Quantized {
    Quantized {
        codes,
        scale: codes + 1,
        zero: codes + 2,
    }
}

/// Converts one node of [`DOMAIN`] into the pending IR nodes that define it.
pub fn convert(node: &NodeProto, name: &str) -> Result<Vec<Pending>, String> {
    let mut expansion = Expansion::new(node, name)?;
    let unary = |float: &'static str| (vec![quantized(0)], float, 3);
    let (inputs, float_op, output_scale) = match node.op_type.as_str() {
        "QLinearAdd" => (vec![quantized(0), quantized(3)], "Add", 6),
        "QLinearMul" => (vec![quantized(0), quantized(3)], "Mul", 6),
        "QLinearAveragePool" => unary("AveragePool"),
        "QLinearGlobalAveragePool" => unary("GlobalAveragePool"),
        "QLinearSigmoid" => unary("Sigmoid"),
        "QLinearLeakyRelu" => unary("LeakyRelu"),
        "QLinearSoftmax" => unary("Softmax"),
        "QLinearReduceMean" => unary("ReduceMean"),
        "QLinearConcat" => {
            let count = node.input.len().saturating_sub(2);
            if count == 0 || !count.is_multiple_of(3) {
                return Err(format!(
                    "expects the output's scale and zero point, then (codes, scale, zero point) \
                     for each input; it has {} inputs",
                    node.input.len()
                ));
            }
            let inputs = (0..count / 3).map(|k| quantized(2 + 3 * k)).collect();
            (inputs, "Concat", 0)
        }
        "QGemm" => return expansion.gemm(),
        other => {
            return Err(format!(
                "op '{other}' of domain '{DOMAIN}' is not supported"
            ))
        }
    };
    if expansion.flag("channels_last")? {
        return Err("channels_last = 1 is not supported".into());
    }
    let floats = inputs
        .iter()
        .enumerate()
        .map(|(k, q)| expansion.dequantize(*q, k, 1))
        .collect::<Result<Vec<_>, _>>()?;
    let opset = match float_op {
        // The float model's opset, which decides how Softmax reads its axis.
        "Softmax" => expansion.int("opset")?.unwrap_or(13),
        _ => FLOAT_OPSET,
    };
    let float = expansion.float_op(float_op, floats, opset)?;
    let like = expansion.required(inputs[0].codes)?;
    expansion.quantize(float, output_scale, &like)?;
    Ok(expansion.pending)
}

/// The pending nodes one contributed node becomes, named after its first output.
struct Expansion<'a> {
    node: &'a NodeProto,
    name: &'a str,
    output: String,
    pending: Vec<Pending>,
}

impl<'a> Expansion<'a> {
    fn new(node: &'a NodeProto, name: &'a str) -> Result<Expansion<'a>, String> {
        let output = match node.output.as_slice() {
            [output] if !output.is_empty() => output.clone(),
            _ => return Err("expects exactly one output".into()),
        };
        Ok(Expansion {
            node,
            name,
            output,
            pending: Vec::new(),
        })
    }

    /// Input `slot`, if given.
    fn input(&self, slot: usize) -> Option<String> {
        self.node.input.get(slot).filter(|s| !s.is_empty()).cloned()
    }

    /// Input `slot`, which must be given.
    fn required(&self, slot: usize) -> Result<String, String> {
        self.input(slot)
            .ok_or_else(|| format!("input {slot} is required"))
    }

    fn attribute(&self, name: &str) -> Option<&onnx_protobuf::AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    fn int(&self, name: &str) -> Result<Option<i64>, String> {
        Ok(self.attribute(name).map(|a| a.i))
    }

    fn flag(&self, name: &str) -> Result<bool, String> {
        match self.int(name)? {
            None | Some(0) => Ok(false),
            Some(1) => Ok(true),
            Some(other) => Err(format!("attribute '{name}' must be 0 or 1, not {other}")),
        }
    }

    /// Adds a node of `op` reading `inputs`, writing the value `output`.
    fn push(&mut self, suffix: &str, op: Op, inputs: Vec<Source>, output: &str) {
        self.pending.push(Pending {
            name: format!("{}::{suffix}", self.name),
            op,
            inputs,
            outputs: vec![output.to_string()],
        });
    }

    /// A fresh value name for one step of the expansion.
    fn value(&self, suffix: &str) -> String {
        format!("{}::{suffix}", self.output)
    }

    /// `DequantizeLinear` of the quantized input `q` (its scale and zero point along `axis`
    /// when they are vectors); returns the float value.
    fn dequantize(&mut self, q: Quantized, k: usize, axis: i64) -> Result<String, String> {
        let codes = self.required(q.codes)?;
        let scale = self.required(q.scale)?;
        let zero = self.input(q.zero).map_or(Source::Absent, Source::Name);
        let value = self.value(&format!("dequantized{k}"));
        let op = Op::DequantizeLinear {
            axis,
            block_size: 0,
            output_dtype: None,
        };
        let suffix = format!("dequantize{k}");
        let inputs = vec![Source::Name(codes), Source::Name(scale), zero];
        self.push(&suffix, op, inputs, &value);
        Ok(value)
    }

    /// The float op `op_type` on `inputs`, with this node's attributes (less the quantizer's
    /// own), read at `opset`; returns its value.
    fn float_op(
        &mut self,
        op_type: &str,
        inputs: Vec<String>,
        opset: i64,
    ) -> Result<String, String> {
        let value = self.value("float");
        let float = NodeProto {
            input: inputs,
            output: vec![value.clone()],
            op_type: op_type.to_string(),
            attribute: self
                .node
                .attribute
                .iter()
                .filter(|a| !matches!(a.name.as_str(), "channels_last" | "opset"))
                .cloned()
                .collect(),
            ..NodeProto::default()
        };
        let name = format!("{}::float", self.name);
        self.pending.extend(ops::convert(&float, &name, opset)?);
        Ok(value)
    }

    /// `QuantizeLinear` of `float` by the scale at input `scale_slot` and the zero point after
    /// it into the node's output; without a zero point, the codes take the type of `like`.
    fn quantize(&mut self, float: String, scale_slot: usize, like: &str) -> Result<(), String> {
        let scale = self.required(scale_slot)?;
        let zero = match self.input(scale_slot + 1) {
            Some(zero) => zero,
            None => {
                let zero = self.value("zero");
                let op = Op::CastLike {
                    saturate: true,
                    round_mode: "up".into(),
                };
                let scalar = Tensor::from_i64s(Vec::new(), &[0]).map_err(|e| e.to_string())?;
                let inputs = vec![Source::Const(scalar), Source::Name(like.to_string())];
                self.push("zero", op, inputs, &zero);
                zero
            }
        };
        let op = Op::QuantizeLinear {
            axis: 1,
            block_size: 0,
            output_dtype: None,
            saturate: true,
        };
        let inputs = vec![Source::Name(float), Source::Name(scale), Source::Name(zero)];
        let output = self.output.clone();
        self.push("quantize", op, inputs, &output);
        Ok(())
    }

    /// `QGemm`: `alpha · a_scale · b_scale · ((A − a_zero)(B − b_zero) + C)`, quantized when an
    /// output scale is given, else f32.
    fn gemm(mut self) -> Result<Vec<Pending>, String> {
        let trans_b = self.flag("transB")?;
        let a = self.dequantize(quantized(0), 0, 1)?;
        // b_scale and b_zero_point may hold one value per output column.
        let b = self.dequantize(quantized(3), 1, if trans_b { 0 } else { 1 })?;
        let mut operands = vec![a, b];
        if let Some(bias) = self.input(6) {
            // C is int32 in units of a_scale · b_scale.
            let cast = self.value("bias_f32");
            let to_f32 = Op::Cast {
                to: DType::F32,
                saturate: true,
                round_mode: "up".into(),
            };
            self.push("bias_f32", to_f32, vec![Source::Name(bias)], &cast);
            let scale = self.value("bias_scale");
            let scales = [1, 4].map(|slot| self.required(slot).map(Source::Name));
            let [a_scale, b_scale] = scales;
            self.push(
                "bias_scale",
                Op::Binary(Binary::Mul),
                vec![a_scale?, b_scale?],
                &scale,
            );
            let value = self.value("bias");
            let inputs = vec![Source::Name(cast), Source::Name(scale)];
            self.push("bias", Op::Binary(Binary::Mul), inputs, &value);
            operands.push(value);
        }
        let alpha = match self.attribute("alpha") {
            Some(a) => a.f,
            None => 1.0,
        };
        let quantized_output =
            match (self.input(7), self.input(8)) {
                (Some(_), Some(_)) => true,
                (None, None) => false,
                _ => return Err(
                    "gives only one of the output's scale and zero point; it needs both or neither"
                        .into(),
                ),
            };
        let op = Op::Gemm {
            alpha,
            // The bias is scaled by alpha too.
            beta: alpha,
            trans_a: self.flag("transA")?,
            trans_b,
        };
        let inputs = operands.into_iter().map(Source::Name).collect();
        if quantized_output {
            let float = self.value("float");
            self.push("float", op, inputs, &float);
            let like = self.required(0)?;
            self.quantize(float, 7, &like)?;
        } else {
            let output = self.output.clone();
            self.push("float", op, inputs, &output);
        }
        Ok(self.pending)
    }
}
