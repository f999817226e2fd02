#!/usr/bin/env bash
# Installs what building and testing sparkc needs on a fresh Debian/Ubuntu machine with Rust:
# LLVM 22 for inkwell (Debian's llvm-22-dev; bookworm carries it in its security suite), and
# from PyPI the pinned ONNX test material, onnxruntime (the whole-model reference) and ptxas
# (nvidia-cuda-nvcc, which checks every generated kernel).
set -euo pipefail
if [ ! -x /usr/lib/llvm-22/bin/llvm-config ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q llvm-22-dev
fi
if ! python3 -c 'import onnx, onnxruntime, numpy, sys; sys.exit(onnx.__version__ != "1.23.2")' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check 'onnx==1.23.2' 'onnxruntime==1.32.0' numpy 'ml_dtypes>=0.5'
fi
if ! python3 -c 'import site, os, sys; sys.exit(not any(os.path.exists(os.path.join(p, "nvidia/cu13/bin/ptxas")) for p in site.getsitepackages()))'; then
  python3 -m pip install --quiet --disable-pip-version-check nvidia-cuda-nvcc
fi
