//! onnxruntime's own operators (domain `com.microsoft`) that its tools write into models, each
//! imported as the standard ops that define it:
//! - the quantized ops of its QOperator-format quantizer (`QLinearAdd`, `QGemm`…):
//!   `DequantizeLinear` of every quantized input, the float op, and `QuantizeLinear` of the
//!   result; that is QDQ form, which the optimizer folds into quantized kernels like any other;
//! - the fused ops of its graph optimizers and transformer optimizer (`SkipLayerNormalization`,
//!   `BiasGelu`, `FastGelu`, `FusedConv`…): the ops they fuse, which sparkc fuses its own way;
//! - `MatMulNBits`, the 4- and 8-bit block-quantized weights of its weight-only quantizer: the
//!   product of `DequantizeLinear` of the codes, with a scale (and zero point) per block of K;
//! - `RotaryEmbedding` and `GroupQueryAttention`, the attention of the LLMs onnxruntime-genai
//!   builds, with its KV cache (`contrib/attention.rs`).

mod attention;

use crate::ops::{self, Pending, Source};
use onnx_protobuf::NodeProto;
use sparkc_ir::op::{Binary, Op};
use sparkc_ir::{DType, Tensor};

/// The domain of onnxruntime's contributed operators.
pub const DOMAIN: &str = "com.microsoft";

/// The operators of [`DOMAIN`] the importer understands.
pub const SUPPORTED_OPS: &[&str] = &[
    "BiasGelu",
    "FastGelu",
    "FusedConv",
    "FusedGemm",
    "FusedMatMul",
    "Gelu",
    "GroupQueryAttention",
    "MatMulNBits",
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
    "QuickGelu",
    "RotaryEmbedding",
    "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
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

/// The constant tensor an initializer of the model holds, by name.
pub type Constants<'a> = dyn Fn(&str) -> Option<Tensor> + 'a;

/// Converts one node of [`DOMAIN`] into the pending IR nodes that define it; `constants` gives
/// the initializers an op needs to read at import (`MatMulNBits`'s packed codes).
pub fn convert(
    node: &NodeProto,
    name: &str,
    constants: &Constants<'_>,
) -> Result<Vec<Pending>, String> {
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
        "Gelu" | "BiasGelu" | "FastGelu" => return expansion.gelu(),
        "QuickGelu" => return expansion.quick_gelu(),
        "SkipLayerNormalization" | "SkipSimplifiedLayerNormalization" => {
            return expansion.skip_normalization()
        }
        "FusedMatMul" => return expansion.fused_matmul(),
        "FusedConv" | "FusedGemm" => return expansion.fused_with_activation(),
        "MatMulNBits" => return expansion.matmul_nbits(constants),
        "RotaryEmbedding" => return expansion.rotary_embedding(),
        "GroupQueryAttention" => return expansion.group_query_attention(constants),
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
        "Softmax" => expansion.int("opset").unwrap_or(13),
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
        let output = match node.output.first() {
            Some(output) if !output.is_empty() => output.clone(),
            _ => return Err("its first output has no name".into()),
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

    fn int(&self, name: &str) -> Option<i64> {
        self.attribute(name).map(|a| a.i)
    }

    fn float(&self, name: &str, default: f32) -> f32 {
        self.attribute(name).map_or(default, |a| a.f)
    }

    /// Output `slot`, if the node names it.
    fn output_at(&self, slot: usize) -> Option<String> {
        self.node
            .output
            .get(slot)
            .filter(|s| !s.is_empty())
            .cloned()
    }

    /// Refuses outputs from `slot` on, which the expansion does not compute.
    fn only_outputs(&self, count: usize) -> Result<(), String> {
        match (count..self.node.output.len()).find(|&k| self.output_at(k).is_some()) {
            Some(k) => Err(format!("output {k} is not supported")),
            None => Ok(()),
        }
    }

    /// A standard op `op_type` of the default domain at `opset`, with `attributes`, reading
    /// `inputs` (an empty name for an omitted one) and writing `outputs`.
    fn standard(
        &mut self,
        suffix: &str,
        (op_type, opset): (&str, i64),
        inputs: Vec<String>,
        outputs: Vec<String>,
        attribute: Vec<onnx_protobuf::AttributeProto>,
    ) -> Result<(), String> {
        let node = NodeProto {
            input: inputs,
            output: outputs,
            op_type: op_type.to_string(),
            attribute,
            ..NodeProto::default()
        };
        let name = format!("{}::{suffix}", self.name);
        self.pending.extend(ops::convert(&node, &name, opset)?);
        Ok(())
    }

    /// `a + b` into a fresh value (or `output`).
    fn add(&mut self, suffix: &str, a: String, b: String, output: Option<String>) -> String {
        let value = output.unwrap_or_else(|| self.value(suffix));
        let inputs = vec![Source::Name(a), Source::Name(b)];
        self.push(suffix, Op::Binary(Binary::Add), inputs, &value);
        value
    }

    /// `Gelu` (erf), `BiasGelu` (erf of `A + B`) and `FastGelu` (tanh, of `X + bias`).
    fn gelu(mut self) -> Result<Vec<Pending>, String> {
        self.only_outputs(1)?;
        let mut x = self.required(0)?;
        if let Some(bias) = self.input(1) {
            x = self.add("biased", x, bias, None);
        }
        let approximate = if self.node.op_type == "FastGelu" {
            "tanh"
        } else {
            "none"
        };
        let attribute = vec![onnx_protobuf::AttributeProto {
            name: "approximate".into(),
            type_: onnx_protobuf::attribute_proto::AttributeType::STRING.into(),
            s: approximate.as_bytes().to_vec(),
            ..Default::default()
        }];
        let output = self.output.clone();
        self.standard("gelu", ("Gelu", 20), vec![x], vec![output], attribute)?;
        Ok(self.pending)
    }

    /// `QuickGelu`: `x · sigmoid(alpha · x)`.
    fn quick_gelu(mut self) -> Result<Vec<Pending>, String> {
        self.only_outputs(1)?;
        let x = self.required(0)?;
        let alpha = f32_scalar(self.float("alpha", 1.702))?;
        let scaled = self.value("scaled");
        let inputs = vec![Source::Name(x.clone()), Source::Const(alpha)];
        self.push("scaled", Op::Binary(Binary::Mul), inputs, &scaled);
        let gate = self.value("gate");
        let sigmoid = Op::Unary(sparkc_ir::op::Unary::Sigmoid);
        self.push("gate", sigmoid, vec![Source::Name(scaled)], &gate);
        let output = self.output.clone();
        let inputs = vec![Source::Name(x), Source::Name(gate)];
        self.push("gelu", Op::Binary(Binary::Mul), inputs, &output);
        Ok(self.pending)
    }

    /// `SkipLayerNormalization` (`input, skip, gamma, beta?, bias?`) and
    /// `SkipSimplifiedLayerNormalization` (`input, skip, gamma, bias?`): the normalization of
    /// `input + skip + bias` over the last axis; outputs `output`, `mean` and `inv_std_var`
    /// (the layer norm's only), and the sum.
    fn skip_normalization(mut self) -> Result<Vec<Pending>, String> {
        let simplified = self.node.op_type == "SkipSimplifiedLayerNormalization";
        let (input, skip, gamma) = (self.required(0)?, self.required(1)?, self.required(2)?);
        let (beta, bias) = if simplified {
            (None, self.input(3))
        } else {
            (self.input(3), self.input(4))
        };
        if simplified && (self.output_at(1).is_some() || self.output_at(2).is_some()) {
            return Err("outputs 1 and 2 (mean, inv_std_var) are not supported".into());
        }
        self.only_outputs(4)?;
        // The last addition writes output 3, the sum, when the node names it.
        let named_sum = self.output_at(3);
        let sum = match bias {
            Some(bias) => {
                let skipped = self.add("skipped", input, skip, None);
                self.add("biased", skipped, bias, named_sum)
            }
            None => self.add("skipped", input, skip, named_sum),
        };
        let epsilon = float_attribute("epsilon", self.float("epsilon", 1e-12));
        let count = if simplified { 1 } else { 3 };
        let outputs = (0..count)
            .map(|k| self.output_at(k).unwrap_or_default())
            .collect();
        let (op, inputs) = if simplified {
            (("RMSNormalization", 23), vec![sum, gamma])
        } else {
            let beta = beta.unwrap_or_default();
            (("LayerNormalization", 17), vec![sum, gamma, beta])
        };
        self.standard("normalize", op, inputs, outputs, vec![epsilon])?;
        Ok(self.pending)
    }

    /// `FusedMatMul`: `alpha · op(A) · op(B)`, `op` swapping the last two axes where asked.
    fn fused_matmul(mut self) -> Result<Vec<Pending>, String> {
        self.only_outputs(1)?;
        if self.flag("transBatchA")? || self.flag("transBatchB")? {
            return Err("transBatchA and transBatchB are not supported".into());
        }
        let (a, b) = (self.required(0)?, self.required(1)?);
        let op = Op::TransposedMatMul {
            trans_a: self.flag("transA")?,
            trans_b: self.flag("transB")?,
        };
        let alpha = self.float("alpha", 1.0);
        let output = self.output.clone();
        let product = if alpha == 1.0 {
            output.clone()
        } else {
            self.value("product")
        };
        self.push(
            "product",
            op,
            vec![Source::Name(a), Source::Name(b)],
            &product,
        );
        if alpha != 1.0 {
            let inputs = vec![Source::Name(product), Source::Const(f32_scalar(alpha)?)];
            self.push("scaled", Op::Binary(Binary::Mul), inputs, &output);
        }
        Ok(self.pending)
    }

    /// `FusedConv` (`X, W, B?, Z?`: `activation(Conv(X, W, B) + Z)`) and `FusedGemm`
    /// (`activation(Gemm(A, B, C))`), the activation named by `activation` with its
    /// `activation_params` (or `activation_alpha`, `_beta`).
    fn fused_with_activation(mut self) -> Result<Vec<Pending>, String> {
        self.only_outputs(1)?;
        let conv = self.node.op_type == "FusedConv";
        let activation_attrs = [
            "activation",
            "activation_params",
            "activation_alpha",
            "activation_beta",
            "activation_gamma",
        ];
        let attribute: Vec<_> = self
            .node
            .attribute
            .iter()
            .filter(|a| !activation_attrs.contains(&a.name.as_str()))
            .cloned()
            .collect();
        let inputs: Vec<String> = self.node.input.iter().take(3).cloned().collect();
        let product = self.value("product");
        let op = if conv { ("Conv", 17) } else { ("Gemm", 17) };
        self.standard("product", op, inputs, vec![product.clone()], attribute)?;
        let mut x = product;
        if let Some(z) = self.input(3).filter(|_| conv) {
            x = self.add("residual", x, z, None);
        }
        let activation = match self.attribute("activation") {
            Some(a) => String::from_utf8(a.s.clone()).map_err(|e| e.to_string())?,
            None => String::new(),
        };
        let params: Vec<f32> = match self.attribute("activation_params") {
            Some(a) => a.floats.clone(),
            None => ["activation_alpha", "activation_beta"]
                .iter()
                .filter_map(|n| self.attribute(n).map(|a| a.f))
                .collect(),
        };
        let output = self.output.clone();
        let attributes = match (activation.as_str(), params.as_slice()) {
            ("Relu" | "Tanh" | "Sigmoid", _) => Some(vec![]),
            ("LeakyRelu", [alpha, ..]) => Some(vec![float_attribute("alpha", *alpha)]),
            ("HardSigmoid", [alpha, beta, ..]) => Some(vec![
                float_attribute("alpha", *alpha),
                float_attribute("beta", *beta),
            ]),
            _ => None,
        };
        if let Some(attributes) = attributes {
            let op = (activation.as_str(), 17);
            self.standard("activation", op, vec![x], vec![output], attributes)?;
            return Ok(self.pending);
        }
        match (activation.as_str(), params.as_slice()) {
            ("", _) => {
                let identity = Op::Unary(sparkc_ir::op::Unary::Identity);
                self.push("output", identity, vec![Source::Name(x)], &output)
            }
            ("Clip", [lo, hi, ..]) => {
                let (lo, hi) = (f32_scalar(*lo)?, f32_scalar(*hi)?);
                let inputs = vec![Source::Name(x), Source::Const(lo), Source::Const(hi)];
                self.push("activation", Op::Clip, inputs, &output);
            }
            (other, params) => {
                return Err(format!(
                    "activation '{other}' with {} parameters is not supported",
                    params.len()
                ))
            }
        }
        Ok(self.pending)
    }

    fn flag(&self, name: &str) -> Result<bool, String> {
        match self.int(name) {
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
        let attribute = self
            .node
            .attribute
            .iter()
            .filter(|a| !matches!(a.name.as_str(), "channels_last" | "opset"))
            .cloned()
            .collect();
        let outputs = vec![value.clone()];
        self.standard("float", (op_type, opset), inputs, outputs, attribute)?;
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

    /// `MatMulNBits` (`A, B, scales, zero_points?, g_idx?, bias?`): `A · Wᵀ (+ bias)`, `W`
    /// `[N, K]` dequantized from `bits`-bit codes packed along K in blocks of `block_size`, each
    /// block with its scale and zero point (`2^(bits-1)` when none is given). Codes without zero
    /// points are stored signed (the code less `2^(bits-1)`), as the integer tensor cores read
    /// them; packed zero points are unpacked to one per block.
    fn matmul_nbits(mut self, constants: &Constants<'_>) -> Result<Vec<Pending>, String> {
        self.only_outputs(1)?;
        let required = |name: &str| {
            self.int(name)
                .ok_or_else(|| format!("attribute '{name}' is required"))
        };
        let (k, n, block) = (required("K")?, required("N")?, required("block_size")?);
        let bits = self.int("bits").unwrap_or(4);
        if bits != 4 && bits != 8 {
            return Err(format!("bits = {bits} is not supported (4 or 8)"));
        }
        if block < 16 || block.count_ones() != 1 {
            return Err(format!("block_size {block} is not a power of two from 16"));
        }
        if k < 1 || n < 1 || k > i64::from(u32::MAX) || n > i64::from(u32::MAX) {
            return Err(format!("K = {k} and N = {n} must be positive"));
        }
        if self.input(4).is_some() {
            return Err("g_idx (act-order) is not supported".into());
        }
        let (k, n, block, bits) = (k as usize, n as usize, block as usize, bits as usize);
        let blocks = k.div_ceil(block);
        let b_name = self.required(1)?;
        let packed = constants(&b_name).ok_or("B must be an initializer")?;
        let row_bytes = blocks * block * bits / 8;
        if packed.dtype != DType::U8 || packed.data.len() != n * row_bytes {
            return Err(format!(
                "B holds {} bytes of {}; K = {k}, N = {n}, block_size = {block} and bits = {bits} \
                 need {} bytes of u8",
                packed.data.len(),
                packed.dtype,
                n * row_bytes
            ));
        }
        let nibble = |data: &[u8], row_bytes: usize, row: usize, j: usize| -> u8 {
            let byte = data[row * row_bytes + j * bits / 8];
            if bits == 4 {
                (byte >> (4 * (j % 2))) & 0xF
            } else {
                byte
            }
        };
        let (signed, unsigned) = if bits == 4 {
            (DType::I4, DType::U4)
        } else {
            (DType::I8, DType::U8)
        };
        let zero = match self.input(3) {
            None => None,
            Some(name) => {
                let z = constants(&name).ok_or("zero_points must be an initializer")?;
                let z_row = (blocks * bits).div_ceil(8);
                if z.dtype != DType::U8 || z.data.len() != n * z_row {
                    return Err(format!(
                        "zero_points must be {} bytes of packed u8 codes (float zero points are \
                         not supported)",
                        n * z_row
                    ));
                }
                let codes: Vec<u8> = (0..n)
                    .flat_map(|row| (0..blocks).map(move |b| (row, b)))
                    .map(|(row, b)| nibble(&z.data, z_row, row, b))
                    .collect();
                Some(pack(unsigned, vec![n, blocks], &codes)?)
            }
        };
        let offset = 1u8 << (bits - 1);
        let codes: Vec<u8> = (0..n)
            .flat_map(|row| (0..k).map(move |j| (row, j)))
            .map(|(row, j)| {
                let code = nibble(&packed.data, row_bytes, row, j);
                if zero.is_some() {
                    code
                } else {
                    // The code less the implicit zero point, as a two's-complement code.
                    code ^ offset
                }
            })
            .collect();
        let codes_dtype = if zero.is_some() { unsigned } else { signed };
        let codes = pack(codes_dtype, vec![n, k], &codes)?;
        let scales = self.value("scales");
        let shape =
            Tensor::from_i64s(vec![2], &[n as i64, blocks as i64]).map_err(|e| e.to_string())?;
        let reshape = Op::Reshape { allowzero: false };
        let inputs = vec![Source::Name(self.required(2)?), Source::Const(shape)];
        self.push("scales", reshape, inputs, &scales);
        let weights = self.value("weights");
        let op = Op::DequantizeLinear {
            axis: 1,
            block_size: block as i64,
            output_dtype: None,
        };
        let zero = zero.map_or(Source::Absent, Source::Const);
        let inputs = vec![Source::Const(codes), Source::Name(scales), zero];
        self.push("weights", op, inputs, &weights);
        let bias = self.input(5);
        let output = self.output.clone();
        let product = if bias.is_some() {
            self.value("product")
        } else {
            output.clone()
        };
        let op = Op::TransposedMatMul {
            trans_a: false,
            trans_b: true,
        };
        let inputs = vec![Source::Name(self.required(0)?), Source::Name(weights)];
        self.push("product", op, inputs, &product);
        if let Some(bias) = bias {
            self.add("bias", product, bias, Some(output));
        }
        Ok(self.pending)
    }
}

/// A tensor of integer `dtype` (8-bit, or 4-bit packed two to a byte, low nibble first) holding
/// one code per element.
fn pack(dtype: DType, shape: Vec<usize>, codes: &[u8]) -> Result<Tensor, String> {
    let bytes: Vec<u8> = if dtype.bits() == 4 {
        codes
            .chunks(2)
            .map(|pair| (pair[0] & 0xF) | (pair.get(1).copied().unwrap_or(0) << 4))
            .collect()
    } else {
        codes.to_vec()
    };
    Tensor::new(dtype, shape, bytes.into()).map_err(|e| e.to_string())
}

/// An f32 scalar constant.
fn f32_scalar(value: f32) -> Result<Tensor, String> {
    Tensor::from_f64s(DType::F32, Vec::new(), &[f64::from(value)]).map_err(|e| e.to_string())
}

/// A float attribute of a node written for the default domain.
fn float_attribute(name: &str, f: f32) -> onnx_protobuf::AttributeProto {
    onnx_protobuf::AttributeProto {
        name: name.into(),
        type_: onnx_protobuf::attribute_proto::AttributeType::FLOAT.into(),
        f,
        ..Default::default()
    }
}
