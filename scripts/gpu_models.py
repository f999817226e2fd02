"""Writes the models of the GPU check (scripts/gpu_prepare.sh): products on odd shapes for the
correctness suite, and the 4096x4096x4096 products that docs/benchmarks.md times.

  check/matmul_f32_odd      - FP32 MatMul, M, N, K no multiple of any tile (TF32 and exact FP32)
  check/bmm_bf16_odd        - batched BF16 MatMul on odd sizes
  check/matmul_f16_odd      - FP16 MatMul on odd sizes
  check/*_kmajor*           - BF16/FP16 products whose [K, N] B is copied as it is (N % 8 == 0)
  check/bmm_*_large         - larger batched products (204 blocks), every dim ragged
  check/conv_bf16_large     - BF16 3x3 convolution with 256 output channels over 4 images (248
                              blocks of 128 rows), channels first and (gpu_prepare) channels last
  check/gemm_fp8_odd        - FP8 E4M3 QDQ Gemm (per-channel weight scales) on odd sizes
  check/gemm_fp8_wide*      - the same with 300 columns: activations quantized by their own kernel
  bench/gemm_bf16           - BF16 [4096,4096] x [4096,4096], both operands inputs
  bench/gemm_fp32           - the same in FP32 (TF32 tensor cores by default)
  bench/gemm_fp8            - FP8 E4M3 activations times FP8 E4M3 weights, 4096 cubed, QDQ form

Usage: python3 scripts/gpu_models.py --out DIR
"""

import argparse
import os

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def save(path, nodes, inputs, outputs, inits=(), opset=21):
    graph = helper.make_graph(nodes, os.path.basename(path), inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def info(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def matmul(path, dtype, a, b):
    out = list(a[:-1]) + [b[-1]]
    save(path, [helper.make_node("MatMul", ["a", "b"], ["c"])],
         [info("a", dtype, a), info("b", dtype, b)], [info("c", dtype, out)])


def conv_bf16(path, x, w, rng):
    """A BF16 3x3 convolution, padding 1, with constant weights and bias, then a Relu (opset
    22: BF16 convolutions)."""
    bf16 = TensorProto.BFLOAT16
    weights = (rng.standard_normal(w) / np.sqrt(np.prod(w[1:]))).astype(ml_dtypes.bfloat16)
    bias = rng.standard_normal(w[0]).astype(ml_dtypes.bfloat16)
    inits = [helper.make_tensor("w", bf16, w, weights.view(np.uint16).tobytes(), raw=True),
             helper.make_tensor("bias", bf16, [w[0]], bias.view(np.uint16).tobytes(), raw=True)]
    nodes = [helper.make_node("Conv", ["x", "w", "bias"], ["z"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["z"], ["y"])]
    out = [x[0], w[0]] + list(x[2:])
    save(path, nodes, [info("x", bf16, x)], [info("y", bf16, out)], inits, opset=22)


def fp8_gemm(path, m, k, n, rng):
    """y = DQ(Q(x)) @ DQ(w)^T: FP8 activations (one scale) and FP8 weights (a scale per row);
    the weight rows repeat every 512 so that the artifact compresses for the trip."""
    e4m3 = TensorProto.FLOAT8E4M3FN
    rows = min(n, 512)
    w = np.tile(rng.standard_normal((rows, k)) * 40, (n // rows + 1, 1))[:n]
    w = w.astype(ml_dtypes.float8_e4m3fn)
    inits = [helper.make_tensor("w", e4m3, [n, k], w.view(np.uint8).tobytes(), raw=True),
             numpy_helper.from_array(rng.uniform(0.001, 0.004, n).astype(np.float32), "ws"),
             numpy_helper.from_array(np.array(0.0075, np.float32), "xs"),
             helper.make_tensor("xz", e4m3, [], b"\x00", raw=True)]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws"], ["wd"], axis=0),
             helper.make_node("Gemm", ["xd", "wd"], ["y"], transB=1)]
    save(path, nodes, [info("x", TensorProto.FLOAT, [m, k])],
         [info("y", TensorProto.FLOAT, [m, n])], inits)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    out = parser.parse_args().out
    for sub in ("check", "bench"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    rng = np.random.default_rng(5)
    f32, bf16, f16 = TensorProto.FLOAT, TensorProto.BFLOAT16, TensorProto.FLOAT16
    check = lambda name: os.path.join(out, "check", name + ".onnx")
    bench = lambda name: os.path.join(out, "bench", name + ".onnx")
    matmul(check("matmul_f32_odd"), f32, [77, 133], [133, 91])
    matmul(check("bmm_bf16_odd"), bf16, [3, 65, 200], [3, 200, 47])
    matmul(check("matmul_f16_odd"), f16, [129, 72], [72, 257])
    # N a multiple of 8: B copied k-major and read by ldmatrix.trans; K no multiple of 32.
    matmul(check("bmm_bf16_kmajor"), bf16, [3, 65, 200], [3, 200, 72])
    matmul(check("matmul_f16_kmajor"), f16, [77, 133], [133, 264])
    matmul(check("bmm_bf16_kmajor_bcast"), bf16, [2, 3, 33, 40], [40, 24])
    # Many blocks, every dim ragged.
    matmul(check("bmm_bf16_large"), bf16, [4, 520, 200], [4, 200, 2056])
    matmul(check("bmm_f32_large"), f32, [4, 520, 200], [4, 200, 2056])
    conv_bf16(check("conv_bf16_large"), [4, 64, 62, 62], [256, 64, 3, 3], rng)
    fp8_gemm(check("gemm_fp8_odd"), 70, 160, 90, rng)
    # Wide enough that the activation is quantized by its own kernel; K aligned and not.
    fp8_gemm(check("gemm_fp8_wide"), 70, 160, 300, rng)
    fp8_gemm(check("gemm_fp8_wide_odd_k"), 70, 150, 300, rng)
    n = 4096
    matmul(bench("gemm_bf16"), bf16, [n, n], [n, n])
    matmul(bench("gemm_fp32"), f32, [n, n], [n, n])
    fp8_gemm(bench("gemm_fp8"), n, n, n, rng)


if __name__ == "__main__":
    main()
