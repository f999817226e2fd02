"""PyTorch eager latency on CUDA of the GPU check's ONNX models, the reference beside sparkc's
whole-model timings (scripts/gpu_check.sh): each model converted by onnx2torch, run on the
same inputs, timed as sparkc-run times a run (inputs from the host, outputs back to it),
median of 50 runs after 5 warm-ups. Skips, saying why, where torch, CUDA or onnx2torch is
missing.

Usage: python3 scripts/torch_eager.py FOLDER   (FOLDER/NAME/model.onnx, FOLDER/NAME/input_N.npy)
"""

import glob
import os
import sys
import time

import numpy as np


def main():
    try:
        import torch
        from onnx2torch import convert
    except ImportError as e:
        print(f"PyTorch eager: skipped ({e})")
        return
    if not torch.cuda.is_available():
        print("PyTorch eager: skipped (no CUDA device)")
        return
    for folder in sorted(glob.glob(os.path.join(sys.argv[1], "*"))):
        name = os.path.basename(folder)
        try:
            model = convert(os.path.join(folder, "model.onnx")).cuda().eval()
        except Exception as e:  # onnx2torch raises plain exceptions for unsupported ops
            print(f"PyTorch eager {name}: onnx2torch cannot convert it ({e})")
            continue
        paths = sorted(glob.glob(os.path.join(folder, "input_*.npy")),
                       key=lambda p: int(p.rsplit("_", 1)[1].split(".")[0]))
        arrays = [np.load(p) for p in paths]

        def run():
            inputs = [torch.from_numpy(a).cuda() for a in arrays]
            out = model(*inputs)
            outs = out if isinstance(out, (tuple, list)) else [out]
            return [o.cpu() for o in outs]

        with torch.no_grad():
            for _ in range(5):
                run()
            times = []
            for _ in range(50):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
        print(f"PyTorch {torch.__version__} eager (onnx2torch) CUDA {name}: "
              f"median {1e3 * np.median(times):.3f} ms over 50 runs")


if __name__ == "__main__":
    main()
