#!/usr/bin/env bash
# Runs sparkc's whole test suite: installs what it needs (scripts/setup.sh: LLVM 22, the pinned
# ONNX test material, onnxruntime, ptxas), generates the node tests and models, runs cargo test, then checks
# that onnxruntime runs the models `sparkc optimize` writes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 scripts/gen_onnx_tests.py
python3 scripts/gen_models.py --out tests/data/generated/models
cargo test --workspace --all-targets -- --nocapture 2>&1 | grep -v '^running 0 tests$' | grep -Ev '^test .* \.\.\. ok$'
status="${PIPESTATUS[0]}"
[ "$status" -eq 0 ] || exit "$status"
cargo build --quiet -p sparkc-cli
python3 scripts/check_exports.py --sparkc target/debug/sparkc
