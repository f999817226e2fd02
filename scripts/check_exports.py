#!/usr/bin/env python3
"""Runs `sparkc optimize` on the generated whole models and checks the written ONNX with the onnx
checker and onnxruntime: each exported model (and MobileNet with channels-last convolutions,
written as functions) must load, run, and give onnxruntime's own outputs for the original model
(tests/data/generated/models/<name>/output_*.pb) within 1e-4.

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


def tensor(path):
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


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
            feeds = {n: tensor(os.path.join(folder, f"input_{j}.pb")) for j, n in enumerate(meta["inputs"])}
            outputs = session.run(None, feeds)
            worst = max(float(np.abs(out - tensor(os.path.join(folder, f"output_{j}.pb"))).max())
                        for j, out in enumerate(outputs))
            status = "ok" if worst <= 1e-4 else "MISMATCH"
            print(f"check_exports: {label:<14} onnxruntime runs the sparkc-optimized model, max abs diff {worst:.2e} {status}")
            if worst > 1e-4:
                failures.append(label)
    if failures:
        sys.exit(f"check_exports: {len(failures)} exported model(s) disagree: {', '.join(failures)}")


if __name__ == "__main__":
    main()
