#!/usr/bin/env python3
"""Writes reference encodings from ml_dtypes (an implementation independent of sparkc's) for
tests/codecs.rs: every code of each 8- and 4-bit float format decoded, a sweep of values
(every tie, its neighbours, random and out-of-range values) encoded, and NVFP4/MXFP4 block
quantizations computed with numpy in float32 as NVIDIA's and the OCP MX specs define them.

Writes <format>_decode.npy (float32 per code), <format>_inputs.npy (float32),
<format>_codes.npy (uint8, non-saturating astype) and <format>_saturated.npy (uint8, values
clipped to the largest finite one first), then <block>_<axis>_{input,codes,scales,tensor_scale}.npy.
"""
import argparse
import os

import ml_dtypes
import numpy as np

FORMATS = {
    "f8e4m3fn": ml_dtypes.float8_e4m3fn,
    "f8e5m2": ml_dtypes.float8_e5m2,
    "f8e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "f8e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    "f4e2m1": ml_dtypes.float4_e2m1fn,
}


def decode_table(dtype, codes):
    return np.arange(codes, dtype=np.uint8).view(dtype).astype(np.float32)


def sweep(values, rng):
    """Representable values, the ties between neighbours, the floats either side of each
    tie, random values across the range, and the specials."""
    finite = np.unique(values[np.isfinite(values)])
    ties = (finite[:-1] + finite[1:]) / 2
    top = finite.max()
    tiny = finite[finite > 0].min()
    parts = [
        finite,
        ties,
        np.nextafter(ties, np.float32(np.inf)),
        np.nextafter(ties, np.float32(-np.inf)),
        rng.uniform(-1.25 * top, 1.25 * top, 4000).astype(np.float32),
        (np.exp2(rng.uniform(np.log2(tiny) - 3, np.log2(top) + 1, 4000))
         * rng.choice([-1, 1], 4000)).astype(np.float32),
        np.array([0.0, -0.0, np.inf, -np.inf, np.nan, top * 1.0625, top * 4, -top * 4,
                  tiny / 2, -tiny / 2, tiny / 4, 1e30, -1e30], dtype=np.float32),
    ]
    return np.concatenate(parts).astype(np.float32)


def e2m1(x):
    """float32 → E2M1 codes, saturating."""
    return np.clip(x, -6, 6).astype(ml_dtypes.float4_e2m1fn).view(np.uint8)


def contiguous(codes, scales, axis):
    """Moves the blocked axis back into place, in C order (np.save keeps a view's order)."""
    return (np.ascontiguousarray(np.moveaxis(codes, -1, axis)),
            np.ascontiguousarray(np.moveaxis(scales, -1, axis)))


def nvfp4(x, axis):
    """NVFP4 as NVIDIA defines it: tensor scale amax/(6·448), E4M3 block scales of 16."""
    x = np.moveaxis(x, axis, -1)
    amax = np.abs(x).max()
    ts = amax / np.float32(6 * 448) if amax > 0 else np.float32(1)
    blocks = -(-x.shape[-1] // 16)
    codes = np.zeros(x.shape, np.uint8)
    scales = np.zeros(x.shape[:-1] + (blocks,), np.uint8)
    for b in range(blocks):
        part = x[..., b * 16:(b + 1) * 16]
        bamax = np.abs(part).max(axis=-1)
        wanted = np.minimum(bamax / np.float32(6) / ts, np.float32(448))
        sc = wanted.astype(ml_dtypes.float8_e4m3fn)
        scales[..., b] = sc.view(np.uint8)
        scale = sc.astype(np.float32) * ts
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(scale[..., None] > 0, part / scale[..., None], np.float32(0))
        codes[..., b * 16:(b + 1) * 16] = e2m1(q.astype(np.float32))
    return contiguous(codes, scales, axis) + (np.float32(ts),)


def mxfp4(x, axis):
    """MXFP4 as the OCP MX spec defines it: E8M0 scale 2^(floor(log2 amax) - 2) per 32."""
    x = np.moveaxis(x, axis, -1)
    blocks = -(-x.shape[-1] // 32)
    codes = np.zeros(x.shape, np.uint8)
    scales = np.zeros(x.shape[:-1] + (blocks,), np.uint8)
    for b in range(blocks):
        part = x[..., b * 32:(b + 1) * 32]
        bamax = np.abs(part).max(axis=-1)
        _, e = np.frexp(bamax)
        exponent = np.where(bamax > 0, np.clip(e - 1 - 2, -127, 127), -127)
        scales[..., b] = (exponent + 127).astype(np.uint8)
        scale = np.ldexp(np.float32(1), exponent).astype(np.float32)
        codes[..., b * 32:(b + 1) * 32] = e2m1((part / scale[..., None]).astype(np.float32))
    return contiguous(codes, scales, axis) + (np.float32(1),)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tests/data/generated/codecs")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(7)
    save = lambda name, a: np.save(os.path.join(args.out, name + ".npy"), a)
    for name, dtype in FORMATS.items():
        table = decode_table(dtype, 16 if name == "f4e2m1" else 256)
        inputs = sweep(table, rng)
        top = np.float32(np.nanmax(table[np.isfinite(table)]))
        save(name + "_decode", table)
        save(name + "_inputs", inputs)
        save(name + "_codes", inputs.astype(dtype).view(np.uint8))
        save(name + "_saturated", np.clip(inputs, -top, top).astype(dtype).view(np.uint8))
    save("f8e8m0_decode", decode_table(ml_dtypes.float8_e8m0fnu, 256))
    # ml_dtypes sends zero and overflow to NaN where ONNX saturates: only the range between.
    e8m0_inputs = np.exp2(rng.uniform(-126, 126, 4000)).astype(np.float32)
    e8m0_inputs = np.concatenate([e8m0_inputs, np.exp2(np.arange(-126, 127)).astype(np.float32) * 1.5])
    save("f8e8m0_inputs", e8m0_inputs)
    save("f8e8m0_codes", e8m0_inputs.astype(ml_dtypes.float8_e8m0fnu).view(np.uint8))
    magnitudes = np.exp2(rng.uniform(-8, 8, (48, 1))).astype(np.float32)
    matrix = (rng.standard_normal((48, 80)) * magnitudes).astype(np.float32)
    matrix[3, :] = 0
    for block, quantize in (("nvfp4", nvfp4), ("mxfp4", mxfp4)):
        for axis in (0, 1):
            codes, scales, ts = quantize(matrix, axis)
            stem = f"{block}_{axis}_"
            save(stem + "input", matrix)
            save(stem + "codes", codes)
            save(stem + "scales", scales)
            save(stem + "tensor_scale", np.array([ts], np.float32))


if __name__ == "__main__":
    main()
