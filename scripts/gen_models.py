#!/usr/bin/env python3
"""Builds the whole-model test set: small transformer and CNN models with the decomposed patterns
real exporters emit, random (seeded) weights, fixed inputs, and onnxruntime's outputs.

Writes <out>/<name>/{model.onnx, input_<j>.pb, output_<j>.pb, meta.json} for:
  bert_deep32   - the BERT-style encoder at 32 layers and width 32 (the optimizer's compile-time
                  benchmark: deep, not wide)
  bert_encoder  - BERT-style encoder stack: LayerNorm as ReduceMean/Sub/Pow/Sqrt/Div, GELU through
                  Erf, attention with Reshape/Transpose/MatMul/Softmax and an additive mask
  gpt_decoder   - GPT-style decoder: token + position embeddings (Gather), causal additive mask,
                  pre-LayerNorm blocks, tanh-GELU, tied-free LM head
  einsum_encoder - an encoder written with Einsum, as torch.einsum exports it: projections
                  "bsd,de->bse", scores "bqhd,bkhd->bhqk", context "bhqk,bkhd->bqhd", a gated
                  feed-forward with an elementwise "bsf,bsf->bsf" and a per-token gate "bsd,d->bs"
  gpt_decode_step - one decoding step of a GPT-style decoder as opset 24 exports it: fixed-size
                  KV caches written at each sequence's position by TensorScatter, the Attention
                  op over the whole cache with a boolean mask of the positions written so far
  lstm_tagger   - a sequence tagger: embeddings, a bidirectional LSTM and a GRU over sequences
                  of different lengths (sequence_lens), a linear head per token
  mobilenet     - MobileNet-style CNN: depthwise convs, BatchNorm, HardSwish, squeeze-excite,
                  Resize, global pooling and a classifier
under <out>/contrib/ (listed as "contrib" in the manifest), as onnxruntime's optimizers save them:
  bert_ortopt, gpt_ortopt - the BERT- and GPT-style models through onnxruntime's transformer
                  optimizer: SkipLayerNormalization, BiasGelu, FastGelu (domain com.microsoft)
  mobilenet_ortopt - the MobileNet-style CNN saved by a session at ORT_ENABLE_EXTENDED: FusedConv
  fused_ops      - one graph of the other com.microsoft fused ops sparkc reads
  gqa_decode, gqa_prompt - attention layers of an LLM as onnxruntime-genai builds them:
                  GroupQueryAttention with rotary embeddings and a KV cache (a decoding step of
                  two sequences of different lengths; a first prompt with packed QKV, an empty
                  past, soft-capped scores), and com.microsoft RotaryEmbedding
and, under <out>/qdq/ (listed as "qdq" in the manifest, not among the whole models):
  mobilenet_int8 - the MobileNet-style CNN quantized by onnxruntime.quantization.quantize_static
                  in QDQ format (int8 weights per channel, uint8 activations), as users ship them
  mobilenet_qop_int8, bert_qop_int8 - the CNN and the BERT-style encoder quantized the same way
                  in QOperator format: QLinearConv, QLinearMatMul, and onnxruntime's QLinearAdd,
                  QLinearMul, QLinearAveragePool, QGemm and QLinearSoftmax (domain com.microsoft)
  bert_dynamic_int8 - the BERT-style encoder quantized by quantize_dynamic, as Optimum and
                  transformers.js ship it: DynamicQuantizeLinear, MatMulInteger, Cast, scales
  mobilenet_dynamic_int8 - the MobileNet-style CNN the same way (ConvInteger)
  matmul_u8      - uint8 activations with a zero point (symbolic batch, K=100) times int8 weights
                  per channel, bias and Relu
  conv_u8        - uint8 activations with a zero point through a padded 3x3 convolution and a
                  grouped, strided one, int8 weights per channel
  gemm_fp8       - FP8 E4M3 activations and weights (per channel), Gemm with transB and a bias
  matmul_nvfp4   - BF16-rounded activations times NVFP4 weights (E2M1 codes, E4M3 scale per 16,
                  one f32 tensor scale); onnxruntime has no FP4 kernels, so the reference
                  output is numpy's, with the codes decoded by ml_dtypes
  matmul_mxfp4   - the same with MXFP4 weights (E8M0 scale per 32)
  matmul_nbits_sym, matmul_nbits_asym, matmul_nbits8 - onnxruntime's MatMulNBits: 4-bit codes
                  in blocks of 32 without and with packed zero points (and a bias), 8-bit codes

Usage: python3 scripts/gen_models.py --out tests/data/generated/models [--scale bench]
"""

import argparse
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class Builder:
    """A tiny graph builder: named initializers and nodes with generated output names."""

    def __init__(self, name, seed):
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.count = [], [], 0

    def fresh(self, hint):
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, value, hint="c"):
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, *shape, scale=None):
        scale = scale if scale is not None else 1.0 / np.sqrt(shape[0])
        return self.const((self.rng.standard_normal(shape) * scale).astype(np.float32), "w")

    def op(self, op_type, *inputs, outputs=1, **attrs):
        names = [self.fresh(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names

    def model(self, inputs, outputs, opset=OPSET):
        graph = helper.make_graph(self.nodes, self.name, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8 if opset <= 17 else 10
        onnx.checker.check_model(model)
        return model

    # Patterns as exporters write them.
    def layer_norm(self, x, width):
        mean = self.op("ReduceMean", x, axes=[-1], keepdims=1)
        centered = self.op("Sub", x, mean)
        var = self.op("ReduceMean", self.op("Pow", centered, self.const(np.float32(2.0))), axes=[-1], keepdims=1)
        std = self.op("Sqrt", self.op("Add", var, self.const(np.float32(1e-5))))
        normed = self.op("Div", centered, std)
        gamma = self.const((1.0 + 0.1 * self.rng.standard_normal(width)).astype(np.float32))
        beta = self.const((0.1 * self.rng.standard_normal(width)).astype(np.float32))
        return self.op("Add", self.op("Mul", normed, gamma), beta)

    def gelu_erf(self, x):
        inner = self.op("Erf", self.op("Div", x, self.const(np.float32(np.sqrt(2.0)))))
        return self.op("Mul", self.op("Mul", x, self.op("Add", inner, self.const(np.float32(1.0)))), self.const(np.float32(0.5)))

    def gelu_tanh(self, x):
        cube = self.op("Pow", x, self.const(np.float32(3.0)))
        inner = self.op("Add", x, self.op("Mul", cube, self.const(np.float32(0.044715))))
        t = self.op("Tanh", self.op("Mul", inner, self.const(np.float32(np.sqrt(2.0 / np.pi)))))
        return self.op("Mul", self.op("Mul", x, self.const(np.float32(0.5))), self.op("Add", t, self.const(np.float32(1.0))))

    def linear(self, x, n_in, n_out):
        return self.op("Add", self.op("MatMul", x, self.weight(n_in, n_out)), self.const(np.zeros(n_out, np.float32) + 0.01))

    def attention(self, x, batch, seq, width, heads, mask):
        head = width // heads
        split = self.const(np.array([batch, seq, heads, head], np.int64))

        def project():
            return self.op("Transpose", self.op("Reshape", self.linear(x, width, width), split), perm=[0, 2, 1, 3])

        q, k, v = project(), project(), project()
        kt = self.op("Transpose", k, perm=[0, 1, 3, 2])
        scores = self.op("Div", self.op("MatMul", q, kt), self.const(np.float32(np.sqrt(head))))
        probs = self.op("Softmax", self.op("Add", scores, mask), axis=-1)
        ctx = self.op("Transpose", self.op("MatMul", probs, v), perm=[0, 2, 1, 3])
        merged = self.op("Reshape", ctx, self.const(np.array([batch, seq, width], np.int64)))
        return self.linear(merged, width, width)


def bert_encoder(batch, seq, width, heads, layers, seed=1):
    b = Builder("bert_encoder", seed)
    x = "hidden"
    # attention_mask [batch, seq] of 0/1 → additive [batch, 1, 1, seq]
    m = b.op("Unsqueeze", "attention_mask", b.const(np.array([1, 2], np.int64)))
    m = b.op("Mul", b.op("Sub", b.const(np.float32(1.0)), b.op("Cast", m, to=TensorProto.FLOAT)), b.const(np.float32(-10000.0)))
    for _ in range(layers):
        attn = b.attention(x, batch, seq, width, heads, m)
        x = b.layer_norm(b.op("Add", x, attn), width)
        ff = b.linear(b.gelu_erf(b.linear(x, width, 4 * width)), 4 * width, width)
        x = b.layer_norm(b.op("Add", x, ff), width)
    b.nodes.append(helper.make_node("Identity", [x], ["output"]))
    model = b.model(
        [
            helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [batch, seq, width]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [batch, seq]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, seq, width])],
    )
    rng = np.random.default_rng(seed + 100)
    mask = np.ones((batch, seq), np.int64)
    mask[:, seq - seq // 4 :] = 0
    return model, [rng.standard_normal((batch, seq, width)).astype(np.float32), mask]


def gpt_decoder(batch, seq, width, heads, layers, vocab, seed=2):
    b = Builder("gpt_decoder", seed)
    tokens = b.op("Gather", b.weight(vocab, width, scale=0.5), "input_ids")
    positions = b.op("Gather", b.weight(seq, width, scale=0.5), b.const(np.arange(seq, dtype=np.int64)))
    x = b.op("Add", tokens, positions)
    causal = np.triu(np.full((seq, seq), -1e9, np.float32), k=1).reshape(1, 1, seq, seq)
    mask = b.const(causal)
    for _ in range(layers):
        x = b.op("Add", x, b.attention(b.layer_norm(x, width), batch, seq, width, heads, mask))
        h = b.layer_norm(x, width)
        x = b.op("Add", x, b.linear(b.gelu_tanh(b.linear(h, width, 4 * width)), 4 * width, width))
    logits = b.op("MatMul", b.layer_norm(x, width), b.weight(width, vocab))
    b.nodes.append(helper.make_node("Identity", [logits], ["logits"]))
    model = b.model(
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [batch, seq])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, seq, vocab])],
    )
    rng = np.random.default_rng(seed + 100)
    return model, [rng.integers(0, vocab, (batch, seq)).astype(np.int64)]


def einsum_encoder(batch, seq, width, heads, layers, seed=4):
    b = Builder("einsum_encoder", seed)
    head = width // heads
    x = "hidden"

    def project(x, n_in, n_out):
        y = b.op("Einsum", x, b.weight(n_in, n_out), equation="bsd,de->bse")
        return b.op("Add", y, b.const((0.01 * b.rng.standard_normal(n_out)).astype(np.float32)))

    split = b.const(np.array([batch, seq, heads, head], np.int64))
    for _ in range(layers):
        q, k, v = (b.op("Reshape", project(x, width, width), split) for _ in range(3))
        scores = b.op("Einsum", q, k, equation="bqhd,bkhd->bhqk")
        probs = b.op("Softmax", b.op("Mul", scores, b.const(np.float32(1.0 / np.sqrt(head)))), axis=-1)
        ctx = b.op("Einsum", probs, v, equation="bhqk,bkhd->bqhd")
        merged = b.op("Reshape", ctx, b.const(np.array([batch, seq, width], np.int64)))
        x = b.layer_norm(b.op("Add", x, project(merged, width, width)), width)
        gate = b.op("Sigmoid", project(x, width, 2 * width))
        up = project(x, width, 2 * width)
        hidden = b.op("Einsum", gate, up, equation="bsf,bsf->bsf")
        token_gate = b.op("Sigmoid", b.op("Einsum", x, b.weight(width), equation="bsd,d->bs"))
        ff = b.op("Einsum", project(hidden, 2 * width, width), token_gate, equation="bsd,bs->bsd")
        x = b.layer_norm(b.op("Add", x, ff), width)
    b.nodes.append(helper.make_node("Identity", [x], ["output"]))
    model = b.model(
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [batch, seq, width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, seq, width])],
    )
    rng = np.random.default_rng(seed + 100)
    return model, [rng.standard_normal((batch, seq, width)).astype(np.float32)]


def gpt_decode_step(batch, cache, width, heads, layers, vocab, seed=6):
    b = Builder("gpt_decode_step", seed)
    head = width // heads
    x = b.op("Gather", b.weight(vocab, width, scale=0.5), "input_ids")  # [B, 1, W]
    where = b.op("Unsqueeze", "positions", b.const(np.array([1], np.int64)))  # [B, 1]
    x = b.op("Add", x, b.op("Gather", b.weight(cache, width, scale=0.5), where))
    # Cache slots written so far, this step's included: [B, 1, 1, cache] booleans.
    slots = b.op("Unsqueeze", b.const(np.arange(cache, dtype=np.int64)), b.const(np.array([0], np.int64)))
    mask = b.op("LessOrEqual", slots, where)
    mask = b.op("Unsqueeze", mask, b.const(np.array([1, 2], np.int64)))
    split = b.const(np.array([batch, 1, heads, head], np.int64))

    def norm(y):
        gamma = b.const((1.0 + 0.1 * b.rng.standard_normal(width)).astype(np.float32))
        beta = b.const((0.1 * b.rng.standard_normal(width)).astype(np.float32))
        return b.op("LayerNormalization", y, gamma, beta, axis=-1)

    inputs, outputs, feeds = [], [], []
    rng = np.random.default_rng(seed + 100)
    for layer in range(layers):
        h = norm(x)

        def heads_of(y):
            return b.op("Transpose", b.op("Reshape", y, split), perm=[0, 2, 1, 3])

        q, k, v = (heads_of(b.linear(h, width, width)) for _ in range(3))
        caches = []
        for kind, new in (("key", k), ("value", v)):
            past = f"past_{kind}_{layer}"
            present = f"present_{kind}_{layer}"
            b.nodes.append(helper.make_node("TensorScatter", [past, new, "positions"], [present], axis=2))
            inputs.append(helper.make_tensor_value_info(past, TensorProto.FLOAT, [batch, heads, cache, head]))
            outputs.append(helper.make_tensor_value_info(present, TensorProto.FLOAT, [batch, heads, cache, head]))
            feeds.append(rng.standard_normal((batch, heads, cache, head)).astype(np.float32))
            caches.append(present)
        ctx = b.op("Attention", q, caches[0], caches[1], mask)
        ctx = b.op("Reshape", b.op("Transpose", ctx, perm=[0, 2, 1, 3]), b.const(np.array([batch, 1, width], np.int64)))
        x = b.op("Add", x, b.linear(ctx, width, width))
        x = b.op("Add", x, b.linear(b.gelu_tanh(b.linear(norm(x), width, 4 * width)), 4 * width, width))
    logits = b.op("MatMul", norm(x), b.weight(width, vocab))
    b.nodes.append(helper.make_node("Identity", [logits], ["logits"]))
    model = b.model(
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, [batch, 1]),
            helper.make_tensor_value_info("positions", TensorProto.INT64, [batch]),
        ]
        + inputs,
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 1, vocab])] + outputs,
        opset=24,
    )
    positions = np.array([(5 + 7 * i) % cache for i in range(batch)], np.int64)
    return model, [rng.integers(0, vocab, (batch, 1)).astype(np.int64), positions] + feeds


def lstm_tagger(batch, seq, vocab, width, hidden, tags, seed=5):
    b = Builder("lstm_tagger", seed)
    x = b.op("Gather", b.weight(vocab, width, scale=0.5), "input_ids")
    x = b.op("Transpose", x, perm=[1, 0, 2])
    lens = "lengths"
    w = b.weight(2, 4 * hidden, width, scale=1.0 / np.sqrt(width))
    r = b.weight(2, 4 * hidden, hidden, scale=1.0 / np.sqrt(hidden))
    bias = b.const((0.1 * b.rng.standard_normal((2, 8 * hidden))).astype(np.float32))
    y, _, _ = b.op("LSTM", x, w, r, bias, lens, outputs=3, direction="bidirectional", hidden_size=hidden)
    y = b.op("Reshape", b.op("Transpose", y, perm=[0, 2, 1, 3]), b.const(np.array([seq, batch, 2 * hidden], np.int64)))
    w2 = b.weight(1, 3 * hidden, 2 * hidden, scale=1.0 / np.sqrt(2 * hidden))
    r2 = b.weight(1, 3 * hidden, hidden, scale=1.0 / np.sqrt(hidden))
    bias2 = b.const((0.1 * b.rng.standard_normal((1, 6 * hidden))).astype(np.float32))
    y2, _ = b.op("GRU", y, w2, r2, bias2, lens, outputs=2, hidden_size=hidden, linear_before_reset=1)
    y2 = b.op("Squeeze", y2, b.const(np.array([1], np.int64)))
    logits = b.linear(y2, hidden, tags)
    b.nodes.append(helper.make_node("Transpose", [logits], ["logits"], perm=[1, 0, 2]))
    model = b.model(
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, [batch, seq]),
            helper.make_tensor_value_info("lengths", TensorProto.INT32, [batch]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, seq, tags])],
    )
    rng = np.random.default_rng(seed + 100)
    lengths = np.array([seq] + [max(1, seq - 5 * k) for k in range(1, batch)], np.int32)
    return model, [rng.integers(0, vocab, (batch, seq)).astype(np.int64), lengths]


def mobilenet(batch, size, width, seed=3):
    b = Builder("mobilenet", seed)

    def conv_bn(x, c_in, c_out, k, stride, group=1, act="hardswish"):
        w = b.weight(c_out, c_in // group, k, k, scale=np.sqrt(2.0 / (c_in // group * k * k)))
        y = b.op("Conv", x, w, kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=group)
        scale = b.const((1.0 + 0.1 * b.rng.standard_normal(c_out)).astype(np.float32))
        bias = b.const((0.1 * b.rng.standard_normal(c_out)).astype(np.float32))
        mean = b.const((0.1 * b.rng.standard_normal(c_out)).astype(np.float32))
        var = b.const((1.0 + 0.1 * b.rng.random(c_out)).astype(np.float32))
        y = b.op("BatchNormalization", y, scale, bias, mean, var, epsilon=1e-5)
        if act == "hardswish":
            y = b.op("HardSwish", y)
        elif act == "relu":
            y = b.op("Relu", y)
        return y

    def squeeze_excite(x, c):
        s = b.op("GlobalAveragePool", x)
        s = b.op("Relu", b.op("Conv", s, b.weight(c // 4, c, 1, 1), b.const(np.zeros(c // 4, np.float32))))
        s = b.op("HardSigmoid", b.op("Conv", s, b.weight(c, c // 4, 1, 1), b.const(np.zeros(c, np.float32))), alpha=1.0 / 6, beta=0.5)
        return b.op("Mul", x, s)

    def block(x, c_in, c_out, expand, stride, se):
        h = conv_bn(x, c_in, c_in * expand, 1, 1)
        h = conv_bn(h, c_in * expand, c_in * expand, 3, stride, group=c_in * expand)
        if se:
            h = squeeze_excite(h, c_in * expand)
        h = conv_bn(h, c_in * expand, c_out, 1, 1, act=None)
        return b.op("Add", x, h) if stride == 1 and c_in == c_out else h

    c = width
    x = conv_bn("image", 3, c, 3, 2)
    plan = [(c, 1, 1, False), (2 * c, 4, 2, False), (2 * c, 3, 1, False), (4 * c, 4, 2, True), (4 * c, 4, 1, True), (8 * c, 6, 2, True)]
    for c_out, expand, stride, se in plan:
        x = block(x, c, c_out, expand, stride, se)
        c = c_out
    # A segmentation-style side branch: upsample with Resize and merge back.
    up = b.op("Resize", x, "", b.const(np.array([1, 1, 2, 2], np.float32)), mode="linear")
    down = b.op("AveragePool", up, kernel_shape=[2, 2], strides=[2, 2])
    x = b.op("Add", x, down)
    x = conv_bn(x, c, 16 * width, 1, 1)
    x = b.op("Flatten", b.op("GlobalAveragePool", x))
    logits = b.op("Gemm", x, b.weight(16 * width, 100), b.const(np.zeros(100, np.float32)))
    b.nodes.append(helper.make_node("Softmax", [logits], ["probs"], axis=-1))
    model = b.model(
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 100])],
    )
    rng = np.random.default_rng(seed + 100)
    return model, [rng.standard_normal((batch, 3, size, size)).astype(np.float32)]


SCALES = {
    # Small enough for the test suite on 2 cores in a debug build.
    "test": {
        "bert_encoder": dict(batch=1, seq=32, width=64, heads=4, layers=2),
        "gpt_decoder": dict(batch=1, seq=32, width=64, heads=4, layers=2, vocab=500),
        "mobilenet": dict(batch=1, size=64, width=8),
        "einsum_encoder": dict(batch=2, seq=16, width=64, heads=4, layers=2),
        "lstm_tagger": dict(batch=3, seq=12, vocab=50, width=16, hidden=24, tags=5),
        "gpt_decode_step": dict(batch=2, cache=16, width=64, heads=4, layers=2, vocab=300),
        # Deep rather than wide: the optimizer's compile-time benchmark (32 layers).
        "bert_deep32": dict(batch=1, seq=16, width=32, heads=2, layers=32),
    },
    # Realistic enough that kernels, not overheads, dominate the time.
    "bench": {
        "bert_encoder": dict(batch=1, seq=128, width=256, heads=4, layers=4),
        "gpt_decoder": dict(batch=1, seq=128, width=256, heads=4, layers=4, vocab=2000),
        "mobilenet": dict(batch=1, size=160, width=16),
    },
}
BUILDERS = {
    "bert_deep32": bert_encoder,
    "bert_encoder": bert_encoder,
    "einsum_encoder": einsum_encoder,
    "gpt_decoder": gpt_decoder,
    "gpt_decode_step": gpt_decode_step,
    "lstm_tagger": lstm_tagger,
    "mobilenet": mobilenet,
}


def write(out, name, model, inputs, outputs=None):
    """Saves a model with its inputs and reference outputs (onnxruntime's, unless given)."""
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    onnx.save(model, os.path.join(folder, "model.onnx"))
    input_names = [i.name for i in model.graph.input]
    output_names = [o.name for o in model.graph.output]
    reference = "numpy"
    if outputs is None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        session = ort.InferenceSession(os.path.join(folder, "model.onnx"), options, providers=["CPUExecutionProvider"])
        outputs = session.run(None, dict(zip(input_names, inputs)))
        reference = "onnxruntime " + ort.__version__
    for j, (value, input_name) in enumerate(zip(inputs, input_names)):
        with open(os.path.join(folder, f"input_{j}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(value, input_name).SerializeToString())
        np.save(os.path.join(folder, f"input_{j}.npy"), value)
    for j, (value, output_name) in enumerate(zip(outputs, output_names)):
        with open(os.path.join(folder, f"output_{j}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(value, output_name).SerializeToString())
    meta = {"name": name, "inputs": input_names, "outputs": output_names, "reference": reference}
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)


class CalibrationReader:
    """Calibration inputs for onnxruntime's quantizer: the model's own inputs with seeded noise
    on the float ones (integer inputs, such as masks, as they are)."""

    def __init__(self, model, inputs, sets, seed):
        rng = np.random.default_rng(seed)
        names = [i.name for i in model.graph.input]
        self.feeds = iter([
            {n: (x + rng.standard_normal(x.shape).astype(x.dtype)) if x.dtype.kind == "f" else x
             for n, x in zip(names, inputs)}
            for _ in range(sets)
        ])

    def get_next(self):
        return next(self.feeds, None)


def statically_quantized(out, source, params, name, quant_format):
    """A model quantized by onnxruntime's static quantization: int8 weights per channel, uint8
    activations. QDQ format writes QuantizeLinear/DequantizeLinear pairs around float ops;
    QOperator format writes QLinearConv, QLinearMatMul and onnxruntime's own quantized ops
    (QLinearAdd, QLinearMul, QLinearAveragePool, QGemm, QLinearSoftmax of domain com.microsoft)."""
    from onnxruntime.quantization import QuantType, quantize_static

    model, inputs = BUILDERS[source](**params)
    folder = os.path.join(out, "qdq")
    os.makedirs(folder, exist_ok=True)
    fp32 = os.path.join(folder, f"{source}_fp32.onnx")
    onnx.save(model, fp32)
    quantized = os.path.join(folder, f"{name}.onnx")
    # reduce_range: 7-bit weights. onnxruntime's uint8 x int8 kernels on x86 without VNNI add
    # pairs of products in saturating int16, so full-range weights would make its reference
    # outputs, not sparkc's, wrong (by up to 90 codes of a convolution's output).
    quantize_static(fp32, quantized, CalibrationReader(model, inputs, 8, 11), quant_format=quant_format,
                    per_channel=True, reduce_range=True, weight_type=QuantType.QInt8,
                    activation_type=QuantType.QUInt8)
    os.remove(fp32)
    write(folder, name, onnx.load(quantized), inputs)
    os.remove(quantized)


def dynamically_quantized(out, source, params, name):
    """A model quantized by onnxruntime's dynamic quantization, as Hugging Face Optimum and
    transformers.js ship `model_quantized.onnx`: DynamicQuantizeLinear on the activations,
    MatMulInteger (ConvInteger) against int8 weights, a Cast and the product of the scales."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model, inputs = BUILDERS[source](**params)
    folder = os.path.join(out, "qdq")
    os.makedirs(folder, exist_ok=True)
    fp32 = os.path.join(folder, f"{source}_fp32.onnx")
    onnx.save(model, fp32)
    quantized = os.path.join(folder, f"{name}.onnx")
    quantize_dynamic(fp32, quantized, weight_type=QuantType.QInt8)
    os.remove(fp32)
    write(folder, name, onnx.load(quantized), inputs)
    os.remove(quantized)


def onnxruntime_optimized(out, scale):
    """Models as onnxruntime's optimizers save them, with its fused ops of domain com.microsoft:
    the BERT- and GPT-style models through its transformer optimizer (SkipLayerNormalization,
    BiasGelu, FastGelu), MobileNet through a session at ORT_ENABLE_EXTENDED (FusedConv with Relu
    and HardSigmoid). Returns their names."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    folder = os.path.join(out, "contrib")
    os.makedirs(folder, exist_ok=True)
    names = []
    for source, model_type in [("bert_encoder", "bert"), ("gpt_decoder", "gpt2")]:
        params = SCALES[scale][source]
        model, inputs = BUILDERS[source](**params)
        fp32 = os.path.join(folder, f"{source}_fp32.onnx")
        onnx.save(model, fp32)
        optimized = optimize_model(fp32, model_type=model_type, num_heads=params["heads"],
                                   hidden_size=params["width"], opt_level=0,
                                   optimization_options=FusionOptions(model_type))
        os.remove(fp32)
        name = f"{source.split('_')[0]}_ortopt"
        write(folder, name, optimized.model, inputs)
        names.append(name)
    model, inputs = BUILDERS["mobilenet"](**SCALES[scale]["mobilenet"])
    fp32 = os.path.join(folder, "mobilenet_fp32.onnx")
    extended = os.path.join(folder, "mobilenet_extended.onnx")
    onnx.save(model, fp32)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = extended
    options.log_severity_level = 3
    ort.InferenceSession(fp32, options, providers=["CPUExecutionProvider"])
    write(folder, "mobilenet_ortopt", onnx.load(extended), inputs)
    os.remove(fp32)
    os.remove(extended)
    names.append("mobilenet_ortopt")
    names.append(contributed_ops(folder))
    names += grouped_query_attention(folder)
    return names


def grouped_query_attention(folder):
    """Two attention layers as onnxruntime-genai builds them (projections, GroupQueryAttention
    with rotary embeddings of half of each head, and the output projection), 4 query heads
    sharing 2 KV heads of 32 dims; onnxruntime's outputs are the reference.
    - gqa_decode: one decoding step of two sequences whose caches hold 5 and 3 tokens
      (seqlens_k 5 and 3 for a past of 5 positions: the second is written at position 3 and
      the rows after it are zero), a local window of 3 keys; batch, step and past length are
      symbolic.
    - gqa_prompt: a first prompt of 6 tokens with one packed QKV projection, an empty past,
      interleaved rotation, a soft cap and a custom scale; also com.microsoft RotaryEmbedding
      of the projected queries at positions offset by a single id."""
    rng = np.random.default_rng(29)
    f32, i32, i64 = TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64
    ms = "com.microsoft"
    width, heads, kv_heads, head = 64, 4, 2, 32
    angles = np.arange(32)[:, None] * (10000.0 ** (-np.arange(8) / 8))[None]
    info = helper.make_tensor_value_info

    def weights(name, rows, cols):
        return numpy_helper.from_array(
            (rng.standard_normal((rows, cols)) / np.sqrt(rows)).astype(np.float32), name)

    caches = [numpy_helper.from_array(np.cos(angles).astype(np.float32), "cos_cache"),
              numpy_helper.from_array(np.sin(angles).astype(np.float32), "sin_cache")]
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid(ms, 1)]
    cache_outputs = [info(n, f32, None) for n in ["y", "present_key", "present_value"]]

    def layer_inputs(batch, step, past):
        return [info("x", f32, [batch, step, width]),
                info("past_key", f32, [batch, kv_heads, past, head]),
                info("past_value", f32, [batch, kv_heads, past, head]),
                info("seqlens_k", i32, [batch]), info("total_sequence_length", i32, [])]

    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("MatMul", ["x", "wk"], ["k"]),
        helper.make_node("MatMul", ["x", "wv"], ["v"]),
        helper.make_node("GroupQueryAttention",
                         ["q", "k", "v", "past_key", "past_value", "seqlens_k",
                          "total_sequence_length", "cos_cache", "sin_cache"],
                         ["attended", "present_key", "present_value"], domain=ms,
                         num_heads=heads, kv_num_heads=kv_heads, do_rotary=1,
                         local_window_size=3),
        helper.make_node("MatMul", ["attended", "wo"], ["y"]),
    ]
    inits = caches + [weights("wq", width, heads * head), weights("wk", width, kv_heads * head),
                      weights("wv", width, kv_heads * head), weights("wo", heads * head, width)]
    graph = helper.make_graph(
        nodes, "gqa_decode",
        layer_inputs("batch", "step", "past"),
        cache_outputs, inits)
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    inputs = [rng.standard_normal((2, 1, width)).astype(np.float32),
              rng.standard_normal((2, kv_heads, 5, head)).astype(np.float32),
              rng.standard_normal((2, kv_heads, 5, head)).astype(np.float32),
              np.array([5, 3], np.int32), np.array(6, np.int32)]
    write(folder, "gqa_decode", model, inputs)

    nodes = [
        helper.make_node("MatMul", ["x", "wqkv"], ["qkv"]),
        helper.make_node("GroupQueryAttention",
                         ["qkv", "", "", "past_key", "past_value", "seqlens_k",
                          "total_sequence_length", "cos_cache", "sin_cache"],
                         ["attended", "present_key", "present_value"], domain=ms,
                         num_heads=heads, kv_num_heads=kv_heads, do_rotary=1,
                         rotary_interleaved=1, softcap=2.5, scale=0.3),
        helper.make_node("MatMul", ["attended", "wo"], ["y"]),
        helper.make_node("Slice", ["qkv", "zero", "query_width", "last"], ["q"]),
        helper.make_node("RotaryEmbedding", ["q", "offset", "cos_cache", "sin_cache"],
                         ["q_rotated"], domain=ms, num_heads=heads, rotary_embedding_dim=16),
    ]
    inits = caches + [weights("wqkv", width, (heads + 2 * kv_heads) * head),
                      weights("wo", heads * head, width),
                      numpy_helper.from_array(np.array([0], np.int64), "zero"),
                      numpy_helper.from_array(np.array([heads * head], np.int64), "query_width"),
                      numpy_helper.from_array(np.array([-1], np.int64), "last"),
                      numpy_helper.from_array(np.array([7], np.int64), "offset")]
    graph = helper.make_graph(
        nodes, "gqa_prompt",
        layer_inputs(1, 6, 0),
        cache_outputs + [info("q_rotated", f32, None)], inits)
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    inputs = [rng.standard_normal((1, 6, width)).astype(np.float32),
              np.zeros((1, kv_heads, 0, head), np.float32),
              np.zeros((1, kv_heads, 0, head), np.float32),
              np.array([5], np.int32), np.array(6, np.int32)]
    write(folder, "gqa_prompt", model, inputs)
    return ["gqa_decode", "gqa_prompt"]


def contributed_ops(folder):
    """One graph of the com.microsoft fused ops the optimized models above lack: Gelu, QuickGelu,
    SimplifiedLayerNormalization (which onnxruntime's exporters write in the default domain),
    SkipSimplifiedLayerNormalization (with the sum output), SkipLayerNormalization
    with every output, FusedMatMul (transposed, scaled), FusedGemm (LeakyRelu) and FusedConv
    (Clip, with a residual input); onnxruntime's outputs are the reference."""
    rng = np.random.default_rng(23)
    f32 = TensorProto.FLOAT
    ms = "com.microsoft"

    def init(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.5, name)

    inits = [init("bias", 16), init("skip", 2, 5, 16), init("gamma", 16), init("beta", 16),
             init("w", 16, 8), init("wg", 6, 16), init("cg", 6), init("cw", 3, 2, 3, 3),
             init("cb", 3), init("residual", 1, 3, 4, 4)]
    nodes = [
        helper.make_node("Gelu", ["x"], ["g"], domain=ms),
        helper.make_node("QuickGelu", ["g"], ["q"], domain=ms, alpha=1.5),
        helper.make_node("Add", ["q", "bias"], ["b"]),
        helper.make_node("SkipSimplifiedLayerNormalization", ["b", "skip", "gamma", "bias"],
                         ["rms", "", "", "rms_sum"], domain=ms, epsilon=1e-5),
        helper.make_node("SkipLayerNormalization", ["rms", "rms_sum", "gamma", "beta", "bias"],
                         ["ln", "ln_mean", "ln_inv_std", "ln_sum"], domain=ms, epsilon=1e-5),
        helper.make_node("SimplifiedLayerNormalization", ["ln", "gamma"], ["ln_rms"], axis=-1,
                         epsilon=1e-6),
        helper.make_node("FusedMatMul", ["ln_rms", "w"], ["mm"], domain=ms, alpha=0.75),
        helper.make_node("FusedMatMul", ["mm", "ln"], ["mm_t"], domain=ms, transA=1),
        helper.make_node("Reshape", ["x", "flat"], ["x2"]),
        helper.make_node("FusedGemm", ["x2", "wg", "cg"], ["gemm"], domain=ms, transB=1,
                         activation="LeakyRelu", activation_alpha=0.2),
        helper.make_node("FusedConv", ["image", "cw", "cb", "residual"], ["conv"], domain=ms,
                         pads=[1, 1, 1, 1], activation="Clip", activation_params=[-0.5, 0.8]),
    ]
    inits.append(numpy_helper.from_array(np.array([10, 16], np.int64), "flat"))
    info = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes, "fused_ops",
        [info("x", f32, [2, 5, 16]), info("image", f32, [1, 2, 4, 4])],
        [info(n, f32, None) for n in ["ln", "ln_mean", "ln_inv_std", "ln_sum", "mm_t", "gemm", "conv"]],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ms, 1)])
    model.ir_version = 8
    inputs = [rng.standard_normal((2, 5, 16)).astype(np.float32),
              rng.standard_normal((1, 2, 4, 4)).astype(np.float32)]
    write(folder, "fused_ops", model, inputs)
    return "fused_ops"


def raw(name, dtype, values, shape):
    """An initializer of a narrow type from its codes (one per byte, or FP4 packed two a byte)."""
    codes = np.asarray(values).reshape(-1).astype(np.uint8)
    if dtype == TensorProto.FLOAT4E2M1:
        codes = np.append(codes, np.uint8(0)) if codes.size % 2 else codes
        codes = (codes[0::2] & 0xF) | ((codes[1::2] & 0xF) << 4)
    return helper.make_tensor(name, dtype, list(shape), codes.astype(np.uint8).tobytes(), raw=True)


def qdq_model(name, nodes, inits, inputs, outputs, opset):
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 11 if opset >= 23 else 10
    onnx.checker.check_model(model, full_check=True)
    return model


def qdq_products(out):
    """Single products in QDQ form, one per way the kernels multiply quantized codes; returns
    their names."""
    import ml_dtypes

    folder = os.path.join(out, "qdq")
    rng = np.random.default_rng(17)
    f32 = TensorProto.FLOAT
    info = helper.make_tensor_value_info
    dq, q = "DequantizeLinear", "QuantizeLinear"
    node = helper.make_node

    def per_channel_int8(shape, axis):
        w = rng.integers(-127, 128, shape).astype(np.int8)
        scale = rng.uniform(0.002, 0.01, shape[axis]).astype(np.float32)
        return w, scale

    # uint8 activations with a zero point, int8 weights per output channel.
    w, ws = per_channel_int8((100, 72), 1)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(ws, "ws"),
             numpy_helper.from_array(np.zeros(72, np.int8), "wz"),
             numpy_helper.from_array(np.array(0.021, np.float32), "xs"),
             numpy_helper.from_array(np.array(131, np.uint8), "xz"),
             numpy_helper.from_array(rng.standard_normal(72).astype(np.float32), "b")]
    nodes = [node(q, ["x", "xs", "xz"], ["xq"]), node(dq, ["xq", "xs", "xz"], ["xd"]),
             node(dq, ["w", "ws", "wz"], ["wd"], axis=1), node("MatMul", ["xd", "wd"], ["p"]),
             node("Add", ["p", "b"], ["s"]), node("Relu", ["s"], ["y"])]
    model = qdq_model("matmul_u8", nodes, inits, [info("x", f32, ["N", 5, 100])], [info("y", f32, ["N", 5, 72])], 21)
    write(folder, "matmul_u8", model, [rng.standard_normal((2, 5, 100)).astype(np.float32)])

    # A padded 3x3 convolution and a grouped, strided one on uint8 activations.
    w1, w1s = per_channel_int8((40, 24, 3, 3), 0)
    w2, w2s = per_channel_int8((32, 20, 3, 3), 0)
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w1s, "w1s"),
             numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(w2s, "w2s"),
             numpy_helper.from_array(np.array(0.017, np.float32), "xs"),
             numpy_helper.from_array(np.array(120, np.uint8), "xz"),
             numpy_helper.from_array(np.array(0.05, np.float32), "hs"),
             numpy_helper.from_array(np.array(7, np.uint8), "hz"),
             numpy_helper.from_array(rng.standard_normal(40).astype(np.float32), "b1")]
    nodes = [node(q, ["x", "xs", "xz"], ["xq"]), node(dq, ["xq", "xs", "xz"], ["xd"]),
             node(dq, ["w1", "w1s"], ["w1d"], axis=0),
             node("Conv", ["xd", "w1d", "b1"], ["h"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             node(q, ["h", "hs", "hz"], ["hq"]), node(dq, ["hq", "hs", "hz"], ["hd"]),
             node(dq, ["w2", "w2s"], ["w2d"], axis=0),
             node("Conv", ["hd", "w2d"], ["y"], kernel_shape=[3, 3], strides=[2, 2], group=2)]
    model = qdq_model("conv_u8", nodes, inits, [info("x", f32, [1, 24, 9, 9])], [info("y", f32, [1, 32, 4, 4])], 21)
    write(folder, "conv_u8", model, [rng.standard_normal((1, 24, 9, 9)).astype(np.float32)])

    # FP8 E4M3 activations and weights, a Gemm reading its weights transposed.
    e4m3 = TensorProto.FLOAT8E4M3FN
    w = (rng.standard_normal((48, 64)) * 40).astype(ml_dtypes.float8_e4m3fn)
    inits = [raw("w", e4m3, w.view(np.uint8), [48, 64]),
             numpy_helper.from_array(rng.uniform(0.001, 0.004, 48).astype(np.float32), "ws"),
             numpy_helper.from_array(np.array(0.0075, np.float32), "xs"),
             raw("xz", e4m3, [0], []),
             numpy_helper.from_array(rng.standard_normal(48).astype(np.float32), "c")]
    nodes = [node(q, ["x", "xs", "xz"], ["xq"]), node(dq, ["xq", "xs", "xz"], ["xd"]),
             node(dq, ["w", "ws"], ["wd"], axis=0), node("Gemm", ["xd", "wd", "c"], ["y"], transB=1)]
    model = qdq_model("gemm_fp8", nodes, inits, [info("x", f32, [6, 64])], [info("y", f32, [6, 48])], 21)
    write(folder, "gemm_fp8", model, [(rng.standard_normal((6, 64)) * 1.5).astype(np.float32)])

    # FP4 weights in blocks along K, activations rounded to BF16.
    e2m1 = ml_dtypes.float4_e2m1fn
    fp4_values = np.arange(16, dtype=np.uint8).view(np.uint8)
    fp4_table = np.array([float(np.array(c, np.uint8).view(e2m1)) for c in fp4_values], np.float32)
    for name, block, scale_type in [("matmul_nvfp4", 16, "nv"), ("matmul_mxfp4", 32, "mx")]:
        k, n = 256, 80
        codes = rng.integers(0, 16, (k, n)).astype(np.uint8)
        x = rng.standard_normal((3, k)).astype(np.float32)
        inits = [raw("w", TensorProto.FLOAT4E2M1, codes, [k, n])]
        if scale_type == "nv":
            bs = rng.uniform(0.25, 3.0, (k // block, n)).astype(ml_dtypes.float8_e4m3fn)
            inits += [raw("bs", e4m3, bs.view(np.uint8), [k // block, n]),
                      numpy_helper.from_array(np.array(0.0625, np.float32), "ts")]
            nodes = [node(dq, ["bs", "ts"], ["bsd"])]
            scales, scale_name = bs.astype(np.float32) * np.float32(0.0625), "bsd"
        else:
            exps = rng.integers(120, 130, (k // block, n)).astype(np.uint8)
            inits += [raw("bs", TensorProto.FLOAT8E8M0, exps, [k // block, n])]
            nodes = []
            scales, scale_name = np.exp2(exps.astype(np.float64) - 127).astype(np.float32), "bs"
        nodes += [node("Cast", ["x"], ["xh"], to=TensorProto.BFLOAT16), node("Cast", ["xh"], ["xf"], to=f32),
                  node(dq, ["w", scale_name], ["wd"], axis=0, block_size=block, output_dtype=f32),
                  node("MatMul", ["xf", "wd"], ["y"])]
        model = qdq_model(name, nodes, inits, [info("x", f32, [3, k])], [info("y", f32, [3, n])], 24)
        weights = fp4_table[codes] * np.repeat(scales, block, axis=0)
        rounded = x.astype(ml_dtypes.bfloat16).astype(np.float64)
        y = (rounded @ weights.astype(np.float64)).astype(np.float32)
        write(folder, name, model, [x], [y])
    return ["matmul_u8", "conv_u8", "gemm_fp8", "matmul_nvfp4", "matmul_mxfp4"] + nbits_products(folder)


def nbits_products(folder):
    """onnxruntime's MatMulNBits (com.microsoft), as its weight-only quantizer writes it: 4-bit
    codes in blocks of 32 along K = 80 (a partial last block), one f32 scale per block, without
    zero points (symmetric: 8 implied), with packed 4-bit zero points and a bias, and with 8-bit
    codes; onnxruntime's outputs are the reference. Returns their names."""
    rng = np.random.default_rng(29)
    k, n, block = 80, 64, 32
    blocks = -(-k // block)
    info = helper.make_tensor_value_info
    names = []
    for name, bits, zeros, bias in [("matmul_nbits_sym", 4, False, False),
                                    ("matmul_nbits_asym", 4, True, True),
                                    ("matmul_nbits8", 8, True, False)]:
        row = blocks * block * bits // 8
        inits = [
            numpy_helper.from_array(rng.integers(0, 256, (n, blocks, block * bits // 8)).astype(np.uint8), "b"),
            numpy_helper.from_array((rng.random(n * blocks) * 0.05 + 0.01).astype(np.float32), "scales"),
        ]
        inputs = ["a", "b", "scales"]
        if zeros:
            z_row = -(-blocks * bits // 8)
            inits.append(numpy_helper.from_array(rng.integers(0, 256, n * z_row).astype(np.uint8), "zeros"))
            inputs.append("zeros")
        if bias:
            inits.append(numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "bias"))
            inputs += ["", "bias"]
        node = helper.make_node("MatMulNBits", inputs, ["y"], domain="com.microsoft", K=k, N=n,
                                bits=bits, block_size=block)
        graph = helper.make_graph([node], name, [info("a", TensorProto.FLOAT, [2, 3, k])],
                                  [info("y", TensorProto.FLOAT, [2, 3, n])], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                        helper.make_opsetid("com.microsoft", 1)])
        model.ir_version = 8
        assert row * n == inits[0].dims[0] * inits[0].dims[1] * inits[0].dims[2]
        write(folder, name, model, [rng.standard_normal((2, 3, k)).astype(np.float32)])
        names.append(name)
    return names


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--scale", choices=sorted(SCALES), default="test")
    args = parser.parse_args()
    for name, params in SCALES[args.scale].items():
        model, inputs = BUILDERS[name](**params)
        write(args.out, name, model, inputs)
    from onnxruntime.quantization import QuantFormat

    static = [
        ("mobilenet", "mobilenet_int8", QuantFormat.QDQ),
        ("mobilenet", "mobilenet_qop_int8", QuantFormat.QOperator),
        ("bert_encoder", "bert_qop_int8", QuantFormat.QOperator),
    ]
    for source, name, quant_format in static:
        statically_quantized(args.out, source, SCALES[args.scale][source], name, quant_format)
    dynamic = [("bert_encoder", "bert_dynamic_int8"), ("mobilenet", "mobilenet_dynamic_int8")]
    for source, name in dynamic:
        dynamically_quantized(args.out, source, SCALES[args.scale][source], name)
    qdq = [name for _, name, _ in static] + [name for _, name in dynamic] + qdq_products(args.out)
    contrib = onnxruntime_optimized(args.out, args.scale)
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump({"scale": args.scale, "models": sorted(SCALES[args.scale]), "qdq": qdq,
                   "contrib": contrib}, f)
    print(f"gen_models: {len(SCALES[args.scale])} models ({args.scale} scale) in {args.out}")


if __name__ == "__main__":
    main()
