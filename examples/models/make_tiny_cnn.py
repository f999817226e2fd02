#!/usr/bin/env python3
"""Writes examples/models/tiny_cnn.onnx: a small CNN with a symbolic batch dim `N`.

Conv → Relu → MaxPool → Conv → residual Add → GlobalAveragePool → Reshape (through the
Shape → Gather → Concat chain exporters emit) → Gemm → Softmax. Weights are seeded random.
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(0)


def weight(name, *shape):
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)


nodes = [
    helper.make_node("Conv", ["image", "conv1.w", "conv1.b"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
    helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
    helper.make_node("Conv", ["p1", "conv2.w", "conv2.b"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    helper.make_node("Add", ["c2", "p1"], ["res"], name="residual"),
    helper.make_node("Relu", ["res"], ["r2"], name="relu2"),
    helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
    helper.make_node("Shape", ["gap"], ["gap_shape"], name="shape"),
    helper.make_node("Gather", ["gap_shape", "zero"], ["batch"], name="batch", axis=0),
    helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch1"], name="batch1"),
    helper.make_node("Concat", ["batch1", "minus_one"], ["flat_shape"], name="flat_shape", axis=0),
    helper.make_node("Reshape", ["gap", "flat_shape"], ["flat"], name="flatten"),
    helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
    helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
]
initializers = [
    weight("conv1.w", 16, 3, 3, 3),
    weight("conv1.b", 16),
    weight("conv2.w", 16, 16, 3, 3),
    weight("conv2.b", 16),
    weight("fc.w", 10, 16),
    weight("fc.b", 10),
    numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"),
    numpy_helper.from_array(np.array([0], dtype=np.int64), "axes0"),
    numpy_helper.from_array(np.array([-1], dtype=np.int64), "minus_one"),
]
graph = helper.make_graph(
    nodes,
    "tiny_cnn",
    [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32])],
    [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])],
    initializers,
)
model = helper.make_model(graph, producer_name="sparkc-examples", opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.checker.check_model(model, full_check=True)
onnx.save(model, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_cnn.onnx"))
