#!/usr/bin/env python3
"""Latency of `sparkc bench` against onnxruntime (CPU, same thread count, same inputs), in one run.

Builds the benchmark-scale models of scripts/gen_models.py (plus examples/models/tiny_cnn.onnx),
runs both engines on identical .npy inputs, and prints median latency and the ratio
sparkc / onnxruntime per model. With --write, the table goes to docs/benchmarks.md.

Usage: python3 scripts/bench.py [--threads N] [--iters I] [--warmup W] [--write]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPARKC = os.path.join(ROOT, "target", "release", "sparkc")


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}"


def ort_median(model, feeds, threads, warmup, iters, optimize=True):
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    for _ in range(warmup):
        session.run(None, feeds)
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        session.run(None, feeds)
        samples.append(time.perf_counter() - start)
    return float(np.median(samples)) * 1e3


def sparkc_median(model, inputs, threads, warmup, iters):
    command = [SPARKC, "bench", model, "--json", "--threads", str(threads), "--warmup", str(warmup), "--iters", str(iters)]
    for name, path in inputs:
        command += ["--input", f"{name}={path}"]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["median_ms"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="write docs/benchmarks.md")
    args = parser.parse_args()

    subprocess.run(["cargo", "build", "--release", "-p", "sparkc-cli"], cwd=ROOT, check=True)
    out = os.path.join(ROOT, "target", "bench-models")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_models.py"), "--out", out, "--scale", "bench"], check=True)

    cases = []
    for name in json.load(open(os.path.join(out, "manifest.json")))["models"]:
        folder = os.path.join(out, name)
        meta = json.load(open(os.path.join(folder, "meta.json")))
        inputs = [(n, os.path.join(folder, f"input_{j}.npy")) for j, n in enumerate(meta["inputs"])]
        cases.append((name, os.path.join(folder, "model.onnx"), inputs))
    tiny = os.path.join(out, "tiny_cnn_input.npy")
    np.save(tiny, np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32))
    cases.append(("tiny_cnn (batch 8)", os.path.join(ROOT, "examples", "models", "tiny_cnn.onnx"), [("image", tiny)]))

    rows = []
    for name, model, inputs in cases:
        feeds = {n: np.load(p) for n, p in inputs}
        ours = sparkc_median(model, inputs, args.threads, args.warmup, args.iters)
        theirs = ort_median(model, feeds, args.threads, args.warmup, args.iters)
        plain = ort_median(model, feeds, args.threads, args.warmup, args.iters, optimize=False)
        rows.append((name, ours, theirs, ours / theirs, plain, ours / plain))
        print(f"{name:<22} sparkc {ours:9.3f} ms   onnxruntime {theirs:9.3f} ms   ratio {ours / theirs:5.2f}   "
              f"(unoptimized onnxruntime {plain:9.3f} ms, ratio {ours / plain:5.2f})", flush=True)

    if args.write:
        lines = [
            "# Benchmarks",
            "",
            "Median latency of one inference on the CPU, `sparkc bench` against onnxruntime",
            f"{ort.__version__} (default graph optimizations) with the same thread count and the same",
            "inputs, measured in one run of `python3 scripts/bench.py --write`. A ratio below 1 means",
            "sparkc is faster.",
            "",
            f"Machine: {machine()}; {args.threads} threads, {args.warmup} warm-up and {args.iters} timed runs.",
            "",
            "The last two columns run onnxruntime with its graph optimizations off (no Conv+BatchNorm",
            "folding, no fused activations or attention, no blocked layouts): what its kernels alone do",
            "on the graph as written. sparkc runs its optimized graph (`sparkc bench` without `--no-opt`).",
            "",
            "| model | sparkc ms | onnxruntime ms | sparkc / onnxruntime | onnxruntime, no graph optimizations, ms | sparkc / that |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        lines += [f"| {n} | {a:.3f} | {b:.3f} | {r:.2f} | {p:.3f} | {q:.2f} |" for n, a, b, r, p, q in rows]
        lines += [
            "",
            "Models (scripts/gen_models.py, `bench` scale): `bert_encoder` is 4 layers of width 256 over",
            "128 tokens; `gpt_decoder` is 4 pre-norm layers of width 256 over 128 tokens with a 2000-word",
            "head; `mobilenet` is a MobileNetV3-style CNN on a 160×160 image; `tiny_cnn` is the example",
            "model at batch 8.",
            "",
            "Where this stands against the first target (no model slower than 1.5× onnxruntime) and why:",
            "see `docs/cpu-backend.md`, section *Against onnxruntime*.",
            "",
        ]
        # Only the CPU section is generated: the sections after it (GPU figures) are kept.
        path = os.path.join(ROOT, "docs", "benchmarks.md")
        kept = ""
        if os.path.exists(path):
            with open(path) as f:
                old = f.read()
            cut = old.find("\n## ")
            if cut >= 0:
                kept = old[cut + 1:]
        with open(path, "w") as f:
            f.write("\n".join(lines) + ("\n" + kept if kept else ""))
        print("wrote docs/benchmarks.md")


if __name__ == "__main__":
    main()
