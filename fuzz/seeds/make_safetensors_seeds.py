"""Regenerates the tiny seed inputs of fuzz/fuzz_safetensors.c:
   python3 fuzz/seeds/make_safetensors_seeds.py fuzz/seeds/fuzz_safetensors"""
import json, struct, sys, os
out = sys.argv[1]
def img(hdr, data):
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data
seeds = {
 "empty": img({}, b""),
 "one_f32": img({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(range(8))),
 "mixed": img({"__metadata__": {"format": "pt"},
               "a": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]},
               "s": {"dtype": "F8_E8M0", "shape": [2], "data_offsets": [8, 10]},
               "q": {"dtype": "F4", "shape": [2, 2], "data_offsets": [10, 12]},
               "z": {"dtype": "I64", "shape": [0], "data_offsets": [12, 12]},
               "c": {"dtype": "F6_E2M3", "shape": [4], "data_offsets": [12, 15]},
               "k": {"dtype": "U8", "shape": [], "data_offsets": [15, 16]}}, bytes(range(16))),
 "overlap": img({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                 "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}, bytes(6)),
}
for k, v in seeds.items():
    open(os.path.join(out, k + ".safetensors"), "wb").write(v)
