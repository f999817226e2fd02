#!/usr/bin/env bash
# Runs sparkc's whole test suite: installs the pinned ONNX test material, generates it, runs cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c 'import onnx, sys; sys.exit(onnx.__version__ != "1.23.2")' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check 'onnx==1.23.2' numpy
fi
python3 scripts/gen_onnx_tests.py
cargo test --workspace --all-targets -- --nocapture 2>&1 | grep -v '^running 0 tests$' | grep -Ev '^test .* \.\.\. ok$'
exit "${PIPESTATUS[0]}"
