#!/usr/bin/env python3
"""Independent NVFP4 weight quantizer (ModelOpt semantics) for tests/test_format_quant.c.

usage: nvfp4_oracle.py ROWS COLS IN OUT
  IN   ROWS*COLS little-endian float32, row-major
  OUT  global (float32, 4 bytes) + packed q (ROWS*COLS/2 bytes) + e4m3 scales (ROWS*COLS/16)

What ModelOpt's NVFP4QTensor does, in fp32 throughout:
  weights_scaling_factor_2 = amax(|W|) / (6 * 448)
  per_block_scale = per_block_amax / (6 * weights_scaling_factor_2); zeros -> 1.0; cast e4m3
  q = cast_fp4(W / (float(per_block_scale) * weights_scaling_factor_2))
  cast_fp4: bucket |v| by the midpoints 0.25 .. 5 of the e2m1 grid; a value exactly on a
  midpoint goes to the even code (up at 0.75, 1.75, 3.5; down at 0.25, 1.25, 2.5, 5).
Two documented deviations (see src/format/quant.h), applied here the same way:
  * a non-zero block whose e4m3 scale rounds to 0 divides by 1.0 * global (ModelOpt divides
    by 0 and emits +-6 codes; both dequantize to 0);
  * the sign bit comes from signbit(v), so an exact -0.0 encodes as 0x8 (ModelOpt: v < 0).
The e4m3 cast is clipped to 448 first (ml_dtypes would give NaN past 448; dsv4 saturates).
"""
import sys

import ml_dtypes
import numpy as np

F32 = np.float32
E2M1_MIDPOINTS = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], dtype=F32)
ROUND_UP_AT_MIDPOINT = np.array([False, True, False, True, False, True, False])


def cast_fp4(v):
    a = np.abs(v)
    # side="left": a value equal to midpoint i lands in bucket i (the lower neighbour)
    code = np.searchsorted(E2M1_MIDPOINTS, a, side="left").astype(np.uint8)
    on_mid = np.zeros(a.shape, dtype=bool)
    for i, mid in enumerate(E2M1_MIDPOINTS):
        if ROUND_UP_AT_MIDPOINT[i]:
            on_mid |= a == mid
    code = code + on_mid.astype(np.uint8)
    return code | (np.signbit(v).astype(np.uint8) << 3)


def quantize(w):
    rows, cols = w.shape
    g = F32(np.abs(w).max()) / F32(6.0 * 448.0)
    blocks = w.reshape(rows, cols // 16, 16)
    block_amax = np.abs(blocks).max(axis=-1)
    scale = block_amax / (F32(6.0) * g)
    scale[block_amax == 0] = F32(1.0)
    scale_e4m3 = np.clip(scale, 0, 448).astype(ml_dtypes.float8_e4m3fn)
    sf = scale_e4m3.astype(F32)
    divisor = np.where(sf == 0, F32(1.0), sf) * g
    codes = cast_fp4(blocks / divisor[..., None]).reshape(rows, cols)
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)
    return F32(g), packed, scale_e4m3.view(np.uint8)


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    rows, cols = int(sys.argv[1]), int(sys.argv[2])
    w = np.fromfile(sys.argv[3], dtype="<f4").reshape(rows, cols)
    g, packed, scales = quantize(w)
    with open(sys.argv[4], "wb") as f:
        f.write(np.array([g], dtype="<f4").tobytes())
        f.write(packed.tobytes())
        f.write(scales.tobytes())


if __name__ == "__main__":
    main()
