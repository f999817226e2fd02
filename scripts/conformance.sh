#!/usr/bin/env bash
# Regenerates docs/conformance.md from a run of the ONNX node tests on the CPU executor.
set -euo pipefail
cd "$(dirname "$0")/.."
SPARKC_BLESS=1 cargo test -p sparkc-tests --test onnx_node_run -- --nocapture
