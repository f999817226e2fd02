#!/usr/bin/env bash
# The GPU check, run from the repository root on a machine with an NVIDIA GPU and the bundle
# that scripts/gpu_prepare.sh wrote (no Rust or LLVM needed there):
#
#   bash scripts/gpu_check.sh [BUNDLE_FOLDER (default gpu)] [LOG_FOLDER (default .)]
#
# 1. products on odd shapes (TF32, BF16, FP16, FP8; the target's kernels and sm_80's);
# 2. 4096-cubed GEMMs timed per kernel, against torch.matmul in the same script;
# 3. every whole model that travels, each with TF32 products, sm_80 kernels and exact FP32;
# 4. the quantized models (BF16, FP16, FP8, INT8, NVFP4, MXFP4, onnxruntime's QDQ models);
#    then the whole models' latency as graph replays and as plain launches, onnxruntime's, and
#    PyTorch eager's on CUDA where onnx2torch is installed (scripts/torch_eager.py);
# 5. every ONNX node test that compiles to GPU kernels, against the CPU executor and the
#    test's reference outputs (exact FP32 products), within NODE_TIMEOUT seconds.
# Each suite prints one PASS/FAIL line per artifact; the logs go to LOG_FOLDER.
set -uo pipefail
cd "$(dirname "$0")/.."
bundle="${1:-gpu}"
logs="${2:-.}"
work=$(mktemp -d)
mkdir -p "$logs"
tar -C "$work" -xJf "$bundle/bundle.tar.xz"
run="$work/sparkc-run"
device="${DEVICE:-cuda}"
# Seconds one sparkc-run process may take before it counts as hung and is stopped.
limit="${PROCESS_TIMEOUT:-60}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

# suite NAME FLAGS...: every artifact of $work/NAME over 8 processes (50 at most to one); artifacts a
# lost CUDA context left unrun are run again, one to a process.
suite() {
    local name="$1"
    shift
    local log="$logs/gpu_$name.log"
    local count chunk
    count=$(ls "$work/$name"/*.spark | wc -l)
    chunk=$(((count + 7) / 8))
    ls "$work/$name"/*.spark | xargs -n "$((chunk < 50 ? chunk : 50))" -P 8 \
        timeout "$limit" "$run" --device "$device" --check "$@" >"$log" 2>&1
    grep '^SKIP ' "$log" | sed 's/^SKIP \(.*\): not run.*/\1/' |
        xargs -r -n 1 -P 8 timeout "$limit" "$run" --device "$device" --check "$@" >>"$log" 2>&1
    sed -i '/^SKIP /d; /^[0-9]* passed, /d' "$log"
    local pass fail
    pass=$(grep -c '^PASS ' "$log")
    fail=$(grep -c '^FAIL ' "$log")
    echo "== $name: $pass passed, $fail failed, $((count - pass - fail)) unfinished (a process hung past ${limit} s) (log: $log)"
    grep -A3 '^FAIL ' "$log" | head -60
}

suite check --rtol 2e-2 --atol 2e-2
echo "== GEMM 4096 x 4096 x 4096"
for f in "$work"/bench/*.spark; do
    timeout "$limit" "$run" "$f" --device "$device" --profile 2>&1 | sed "s#$work/##"
done
python3 - <<'PY' 2>&1
import torch
n = 4096
a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)

def best_ms(fn, reps=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record(); torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    return min(times)

flop = 2 * n ** 3
ms = best_ms(lambda: a @ b)
print(f"torch.matmul bf16: {ms:.4f} ms, {flop / ms / 1e9:.1f} TFLOP/s")
torch.backends.cuda.matmul.allow_tf32 = True
af, bf = a.float(), b.float()
ms = best_ms(lambda: af @ bf)
print(f"torch.matmul fp32 (TF32): {ms:.4f} ms, {flop / ms / 1e9:.1f} TFLOP/s")
torch.backends.cuda.matmul.allow_tf32 = False
ms = best_ms(lambda: af @ bf)
print(f"torch.matmul fp32 (exact): {ms:.4f} ms, {flop / ms / 1e9:.1f} TFLOP/s")
a8 = a.to(torch.float8_e4m3fn)
b8 = b.to(torch.float8_e4m3fn).t().contiguous().t()
one = torch.tensor(1.0, device="cuda")
try:
    ms = best_ms(lambda: torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16))
    print(f"torch._scaled_mm fp8 e4m3: {ms:.4f} ms, {flop / ms / 1e9:.1f} TFLOP/s")
except Exception as e:
    print(f"torch._scaled_mm fp8: {e}")
PY

suite models --rtol 5e-2 --atol 5e-3
suite quant --rtol 5e-2 --atol 5e-2 --min-cosine 0.999
echo "== cosine of each model output against the CPU executor"
grep -h -B0 -A2 '^\(PASS\|FAIL\) ' "$logs/gpu_models.log" "$logs/gpu_quant.log" |
    awk '/^(PASS|FAIL)/ {m=$2} /cosine/ {print m, $0}' | sed "s#$work/##" | sort

echo "== whole-model latency (batch and sequence dims at 2 where symbolic)"
for f in "$work"/models/*.spark; do
    case "$f" in *.sm_80.spark | *.fp32.spark) continue ;; esac
    timeout "$limit" "$run" "$f" --device "$device" --iters 50 2>&1 | sed "s#$work/##"
done
python3 - "$work/ort" <<'PY' 2>&1
import glob, os, sys, time
import numpy as np
import onnxruntime as ort
providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
for folder in sorted(glob.glob(os.path.join(sys.argv[1], "*"))):
    session = ort.InferenceSession(os.path.join(folder, "model.onnx"), providers=providers)
    feed = {i.name: np.load(os.path.join(folder, f"input_{n}.npy")) for n, i in enumerate(session.get_inputs())}
    for _ in range(5):
        session.run(None, feed)
    times = []
    for _ in range(50):
        t = time.perf_counter(); session.run(None, feed); times.append(time.perf_counter() - t)
    print(f"onnxruntime {ort.__version__} {session.get_providers()[0]} {os.path.basename(folder)}: median {1e3 * np.median(times):.3f} ms over 50 runs")
PY

python3 scripts/torch_eager.py "$work/ort" 2>&1

echo "== ONNX node tests"
export -f suite
export run device work logs limit
timeout "${NODE_TIMEOUT:-900}" bash -c 'suite node --rtol 1e-3 --atol 1e-5' || echo "(the node tests ran out of time)"
rm -rf "$work"
