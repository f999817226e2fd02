#!/usr/bin/env bash
# Runs sparkc's whole test suite: installs the pinned ONNX test material and onnxruntime (the
# reference for whole models), generates the node tests and models, runs cargo test, then checks
# that onnxruntime runs the models `sparkc optimize` writes.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c 'import onnx, onnxruntime, numpy, sys; sys.exit(onnx.__version__ != "1.23.2")' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check 'onnx==1.23.2' 'onnxruntime==1.32.0' numpy
fi
python3 scripts/gen_onnx_tests.py
python3 scripts/gen_models.py --out tests/data/generated/models
cargo test --workspace --all-targets -- --nocapture 2>&1 | grep -v '^running 0 tests$' | grep -Ev '^test .* \.\.\. ok$'
status="${PIPESTATUS[0]}"
[ "$status" -eq 0 ] || exit "$status"
cargo build --quiet -p sparkc-cli
python3 scripts/check_exports.py --sparkc target/debug/sparkc
