#!/usr/bin/env python3
"""Reference encodings for tests/test_format_fp.c, computed with ml_dtypes.

usage: fp_oracle.py FORMAT IN OUT
  FORMAT  e2m1 | e4m3 | ue8m0 | bf16
  IN      little-endian float32 inputs
  OUT     one uint8 code per input (uint16 little-endian for bf16)

ml_dtypes implements round-to-nearest-even casts with its own overflow rules. Where the
dsv4 contract (src/format/fp.h) documents different special-value semantics, the inputs
or outputs are transformed here, in one place, and the C test checks those cases again
with explicit expected codes:
  e2m1   NaN -> 0x0 (ml_dtypes gives 0x8/0x0 by sign); +-Inf saturates in both.
  e4m3   satfinite: finite values are clipped to +-448 before the cast (ml_dtypes turns
         overflow into NaN), +-Inf -> +-448, NaN -> 0x7f.
  ue8m0  ceil(log2 x) instead of nearest: ml_dtypes rounds to a neighbouring power of
         two, one up when that is below x; x <= 2^-127 -> 0x00, x > 2^127 -> 0xfe,
         NaN or x < 0 -> 0xff.
  bf16   none.
"""
import sys

import ml_dtypes
import numpy as np


def e2m1(x):
    with np.errstate(invalid="ignore", over="ignore"):
        codes = x.astype(ml_dtypes.float4_e2m1fn).view(np.uint8) & 0xF
    codes[np.isnan(x)] = 0x0
    return codes.astype(np.uint8)


def e4m3(x):
    clipped = np.clip(x, -448.0, 448.0)  # NaN passes through clip
    with np.errstate(invalid="ignore", over="ignore"):
        codes = clipped.astype(ml_dtypes.float8_e4m3fn).view(np.uint8).copy()
    codes[np.isnan(x)] = 0x7F
    return codes


def ue8m0_ceil(x):
    tiny = np.float32(2.0**-127)
    huge = np.float32(2.0**127)
    inside = (x > tiny) & (x <= huge)
    xi = np.where(inside, x, np.float32(1.0))
    with np.errstate(invalid="ignore", over="ignore"):
        near = xi.astype(ml_dtypes.float8_e8m0fnu)
    codes = near.view(np.uint8).astype(np.int32)
    back = near.astype(np.float32)
    codes = codes + (back < xi)  # nearest fell below x: take the next power up
    out = np.full(x.shape, 0xFF, dtype=np.int32)
    out[inside] = codes[inside]
    out[(x >= 0) & (x <= tiny)] = 0x00  # x >= 0 is also true for -0.0
    out[x > huge] = 0xFE
    return out.astype(np.uint8)


def bf16(x):
    with np.errstate(invalid="ignore", over="ignore"):
        return x.astype(ml_dtypes.bfloat16).view(np.uint16).astype("<u2")


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    fmt, src, dst = sys.argv[1:]
    x = np.fromfile(src, dtype="<f4")
    fn = {"e2m1": e2m1, "e4m3": e4m3, "ue8m0": ue8m0_ceil, "bf16": bf16}.get(fmt)
    if fn is None:
        sys.exit(f"unknown format {fmt}")
    fn(x).tofile(dst)


if __name__ == "__main__":
    main()
