#!/usr/bin/env python3
"""Runs `sparkc optimize` on the generated whole models and checks the written ONNX with the onnx
checker and onnxruntime: each exported model (and MobileNet with channels-last convolutions,
written as functions) must load, run, and give onnxruntime's own outputs for the original model
(tests/data/generated/models/<name>/output_*.pb) within 1e-4. The ONNX node tests holding control
flow (If, Loop, Scan, SequenceMap, at any depth) are exported the same way and must give their
reference outputs at the test's own tolerance under onnxruntime.

Usage: python3 scripts/check_exports.py [--sparkc PATH]   (default: target/debug/sparkc)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "tests", "data", "generated", "models")
NODE_TESTS = os.path.join(ROOT, "tests", "data", "generated", "node")
CONTROL_FLOW = {"If", "Loop", "Scan", "SequenceMap"}


def value(path, kind="tensor"):
    """A serialized tensor, sequence or optional, as onnxruntime takes and gives it."""
    proto, convert = {
        "sequence": (onnx.SequenceProto(), numpy_helper.to_list),
        "optional": (onnx.OptionalProto(), numpy_helper.to_optional),
    }.get(kind, (onnx.TensorProto(), numpy_helper.to_array))
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    return convert(proto)


def mismatch(got, expected, rtol, atol):
    """Why `got` is not `expected` within numpy's assert_allclose tolerance, or None."""
    if isinstance(expected, list):
        if not isinstance(got, list) or len(got) != len(expected):
            return "sequence lengths differ"
        return next((m for g, e in zip(got, expected) if (m := mismatch(g, e, rtol, atol))), None)
    if expected is None:
        return None if got is None else "expected an empty optional"
    got, expected = np.asarray(got), np.asarray(expected)
    if got.shape != expected.shape:
        return f"shape {got.shape}, expected {expected.shape}"
    if not np.allclose(got, expected, rtol=rtol, atol=atol, equal_nan=True):
        return f"max abs diff {float(np.abs(got.astype(np.float64) - expected).max()):.2e}"
    return None


def check_control_flow(sparkc, tmp):
    """Exports every node test with control flow; returns the names that fail."""
    failures, checked = [], 0
    for name in sorted(os.listdir(NODE_TESTS)):
        folder = os.path.join(NODE_TESTS, name)
        meta = json.load(open(os.path.join(folder, "meta.json")))
        # The ops listed include those of subgraphs. Opset 8's batched Scan has no form in the
        # exported opset.
        if not CONTROL_FLOW & set(meta["ops"]) or meta["opset"] < 9:
            continue
        model = onnx.load(os.path.join(folder, "model.onnx"))
        inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
        if any(i.type.tensor_type.elem_type == onnx.TensorProto.BFLOAT16 for i in inputs):
            continue  # onnxruntime's Python API cannot take bfloat16 arrays.
        exported = os.path.join(tmp, name + ".onnx")
        subprocess.run([sparkc, "optimize", os.path.join(folder, "model.onnx"), "-o", exported],
                       check=True, capture_output=True)
        onnx.checker.check_model(exported)
        session = ort.InferenceSession(exported, providers=["CPUExecutionProvider"])
        data = os.path.join(folder, "test_data_set_0")
        feeds = {i.name: value(os.path.join(data, f"input_{j}.pb"), meta["inputs"][j])
                 for j, i in enumerate(inputs)}
        outputs = session.run(None, feeds)
        problems = [m for j, out in enumerate(outputs)
                    if (m := mismatch(out, value(os.path.join(data, f"output_{j}.pb"), meta["outputs"][j]),
                                      meta["rtol"], meta["atol"]))]
        checked += 1
        if problems:
            print(f"check_exports: {name}: {problems[0]} MISMATCH")
            failures.append(name)
    print(f"check_exports: {checked} node tests with control flow, exported with their subgraphs, "
          f"{checked - len(failures)} give their reference outputs under onnxruntime")
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sparkc", default=os.path.join(ROOT, "target", "debug", "sparkc"))
    args = parser.parse_args()
    names = json.load(open(os.path.join(MODELS, "manifest.json")))["models"]
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        # Each model as optimized, and the CNN with its convolutions channels last too.
        variants = [(name, []) for name in names] + [("mobilenet", ["--layout", "nhwc"])]
        for name, flags in variants:
            folder = os.path.join(MODELS, name)
            label = name + ("/nhwc" if flags else "")
            exported = os.path.join(tmp, label.replace("/", "_") + ".onnx")
            subprocess.run([args.sparkc, "optimize", os.path.join(folder, "model.onnx"), "-o", exported, *flags],
                           check=True, capture_output=True)
            onnx.checker.check_model(exported)
            meta = json.load(open(os.path.join(folder, "meta.json")))
            session = ort.InferenceSession(exported, providers=["CPUExecutionProvider"])
            feeds = {n: value(os.path.join(folder, f"input_{j}.pb")) for j, n in enumerate(meta["inputs"])}
            outputs = session.run(None, feeds)
            worst = max(float(np.abs(out - value(os.path.join(folder, f"output_{j}.pb"))).max())
                        for j, out in enumerate(outputs))
            status = "ok" if worst <= 1e-4 else "MISMATCH"
            print(f"check_exports: {label:<14} onnxruntime runs the sparkc-optimized model, max abs diff {worst:.2e} {status}")
            if worst > 1e-4:
                failures.append(label)
        failures += check_control_flow(args.sparkc, tmp)
    if failures:
        sys.exit(f"check_exports: {len(failures)} exported model(s) disagree: {', '.join(failures)}")


if __name__ == "__main__":
    main()
