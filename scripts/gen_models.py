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
  mobilenet     - MobileNet-style CNN: depthwise convs, BatchNorm, HardSwish, squeeze-excite,
                  Resize, global pooling and a classifier
and, under <out>/qdq/ (listed as "qdq" in the manifest, not among the whole models):
  mobilenet_int8 - the MobileNet-style CNN quantized by onnxruntime.quantization.quantize_static
                  in QDQ format (int8 weights per channel, uint8 activations), as users ship them

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

    def model(self, inputs, outputs):
        graph = helper.make_graph(self.nodes, self.name, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
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
BUILDERS = {"bert_deep32": bert_encoder, "bert_encoder": bert_encoder, "gpt_decoder": gpt_decoder, "mobilenet": mobilenet}


def write(out, name, model, inputs):
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    onnx.save(model, os.path.join(folder, "model.onnx"))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(os.path.join(folder, "model.onnx"), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: v for i, v in zip(session.get_inputs(), inputs)}
    outputs = session.run(None, feeds)
    for j, (value, info) in enumerate(zip(inputs, session.get_inputs())):
        with open(os.path.join(folder, f"input_{j}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(value, info.name).SerializeToString())
        np.save(os.path.join(folder, f"input_{j}.npy"), value)
    for j, (value, info) in enumerate(zip(outputs, session.get_outputs())):
        with open(os.path.join(folder, f"output_{j}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(value, info.name).SerializeToString())
    meta = {"name": name, "inputs": [i.name for i in session.get_inputs()], "outputs": [o.name for o in session.get_outputs()], "onnxruntime": ort.__version__}
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)


class RandomReader:
    """Calibration inputs for onnxruntime's quantizer: seeded random sets."""

    def __init__(self, name, shape, sets, seed):
        rng = np.random.default_rng(seed)
        self.feeds = iter([{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(sets)])

    def get_next(self):
        return next(self.feeds, None)


def quantized_mobilenet(out, params):
    """The MobileNet-style model in onnxruntime's static QDQ form."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    model, inputs = mobilenet(**params)
    folder = os.path.join(out, "qdq")
    os.makedirs(folder, exist_ok=True)
    fp32 = os.path.join(folder, "mobilenet_fp32.onnx")
    onnx.save(model, fp32)
    qdq = os.path.join(folder, "mobilenet_int8.onnx")
    shape = inputs[0].shape
    quantize_static(fp32, qdq, RandomReader("image", shape, 8, 11), quant_format=QuantFormat.QDQ,
                    per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    os.remove(fp32)
    write(folder, "mobilenet_int8", onnx.load(qdq), inputs)
    os.remove(qdq)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--scale", choices=sorted(SCALES), default="test")
    args = parser.parse_args()
    for name, params in SCALES[args.scale].items():
        model, inputs = BUILDERS[name](**params)
        write(args.out, name, model, inputs)
    quantized_mobilenet(args.out, SCALES[args.scale]["mobilenet"])
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump({"scale": args.scale, "models": sorted(SCALES[args.scale]), "qdq": ["mobilenet_int8"]}, f)
    print(f"gen_models: {len(SCALES[args.scale])} models ({args.scale} scale) in {args.out}")


if __name__ == "__main__":
    main()
