#!/usr/bin/env python3
"""Interop between dsv4's safetensors code and Python's `safetensors` (the reference).

  st_interop.py check FILE EXPECT.json   FILE was written by dsv4; EXPECT lists every tensor
                                         (dtype, shape, hex bytes, optional values) and the
                                         metadata. Loads FILE with the reference and compares.
  st_interop.py write FILE EXPECT.json   Writes FILE with safetensors.numpy.save_file and
                                         EXPECT for dsv4 to compare against.
Exit status 0 = identical, 1 = mismatch (printed), 2 = usage.
"""
import json
import sys

import numpy as np
import safetensors
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

NUMPY_DTYPES = {"F64", "F32", "F16", "I64", "U64", "I32", "U32", "I16", "U16", "I8", "U8",
                "BOOL", "C64"}


def fail(msg):
    print("st_interop:", msg)
    sys.exit(1)


def check(path, expect_path):
    with open(expect_path) as f:
        want = json.load(f)
    with open(path, "rb") as f:
        raw = f.read()
    # deserialize() runs the reference validation and hands back raw bytes for every dtype,
    # including those numpy cannot represent (BF16, F8_*, F4, F6_*).
    got = {name: info for name, info in safetensors.deserialize(raw)}
    if set(got) != set(want["tensors"]):
        fail(f"tensor names differ: got {sorted(got)}, want {sorted(want['tensors'])}")
    for name, w in want["tensors"].items():
        g = got[name]
        if g["dtype"] != w["dtype"] or list(g["shape"]) != w["shape"]:
            fail(f"{name}: got {g['dtype']}{g['shape']}, want {w['dtype']}{w['shape']}")
        if bytes(g["data"]) != bytes.fromhex(w["hex"]):
            fail(f"{name}: bytes differ")
    if all(w["dtype"] in NUMPY_DTYPES for w in want["tensors"].values()):
        arrays = load_file(path)
        for name, w in want["tensors"].items():
            a = arrays[name]
            if list(a.shape) != w["shape"] or a.tobytes() != bytes.fromhex(w["hex"]):
                fail(f"{name}: numpy array differs (shape {a.shape})")
            if "values" in w and a.reshape(-1).tolist() != w["values"]:
                fail(f"{name}: values {a.reshape(-1).tolist()} != {w['values']}")
    with safe_open(path, framework="numpy") as f:
        meta = f.metadata() or {}
    if meta != want.get("metadata", {}):
        fail(f"metadata {meta} != {want.get('metadata', {})}")
    print(f"st_interop: {path}: {len(got)} tensors identical")


def write(path, expect_path):
    rng = np.random.default_rng(1234)
    t = {
        "f32": (rng.standard_normal((3, 5)) * 100).astype(np.float32),
        "f64": rng.standard_normal((2, 2)),
        "f16": rng.standard_normal((7,)).astype(np.float16),
        "i64": rng.integers(-2**62, 2**62, size=(4,), dtype=np.int64),
        "u64": rng.integers(0, 2**63, size=(2, 1), dtype=np.uint64),
        "i32": rng.integers(-2**31, 2**31, size=(3,), dtype=np.int32),
        "u32": rng.integers(0, 2**32, size=(3,), dtype=np.uint32),
        "i16": rng.integers(-2**15, 2**15, size=(5,), dtype=np.int16),
        "u16": rng.integers(0, 2**16, size=(5,), dtype=np.uint16),
        "i8": rng.integers(-128, 128, size=(9,), dtype=np.int8),
        "u8": rng.integers(0, 256, size=(2, 3, 2), dtype=np.uint8),
        "bool": rng.integers(0, 2, size=(6,)).astype(bool),
        "c64": (rng.standard_normal(3) + 1j * rng.standard_normal(3)).astype(np.complex64),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "model.layers.0.self_attn.q_proj.weight": np.arange(12, dtype=np.float32).reshape(4, 3),
    }
    dtypes = {"float32": "F32", "float64": "F64", "float16": "F16", "int64": "I64", "uint64": "U64",
              "int32": "I32", "uint32": "U32", "int16": "I16", "uint16": "U16", "int8": "I8",
              "uint8": "U8", "bool": "BOOL", "complex64": "C64"}
    try:
        import ml_dtypes
        t["bf16"] = rng.standard_normal((2, 3)).astype(ml_dtypes.bfloat16)
        t["f8_e4m3"] = rng.integers(0, 256, size=(8,), dtype=np.uint8).view(ml_dtypes.float8_e4m3fn)
        t["f8_e5m2"] = rng.integers(0, 256, size=(4,), dtype=np.uint8).view(ml_dtypes.float8_e5m2)
        t["f8_e8m0"] = rng.integers(0, 255, size=(4,), dtype=np.uint8).view(ml_dtypes.float8_e8m0fnu)
        dtypes.update({"bfloat16": "BF16", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
                       "float8_e8m0fnu": "F8_E8M0"})
    except (ImportError, AttributeError):
        pass
    meta = {"format": "np", "note": "written by st_interop.py \u00e9"}
    save_file(t, path, metadata=meta)
    want = {"tensors": {k: {"dtype": dtypes[v.dtype.name], "shape": list(v.shape), "hex": v.tobytes().hex()}
                        for k, v in t.items()},
            "metadata": meta}
    with open(expect_path, "w") as f:
        json.dump(want, f)


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("check", "write"):
        print(__doc__)
        sys.exit(2)
    (check if sys.argv[1] == "check" else write)(sys.argv[2], sys.argv[3])


if __name__ == "__main__":
    main()
