#!/usr/bin/env bash
# One device call: build for sm_90a, run every test (GPU ones included), run the benchmarks,
# and leave logs and JSON under $OUT. Here, first: `make devdeps` (the GPU machine has no
# package registry); then call the device tool with carry [".devdeps"] and the command
#   bash tests/gpu/run_device.sh
set -uo pipefail
OUT=${OUT:-/tmp/dsv4-device-out}
mkdir -p "$OUT"
if ! ldconfig -p | grep -q libcjson; then
    mkdir -p /tmp/cj
    for f in .devdeps/*.deb; do dpkg -x "$f" /tmp/cj; done
    ln -sf libcjson.so.1 /tmp/cj/usr/lib/x86_64-linux-gnu/libcjson.so
    export CPPFLAGS="-I/tmp/cj/usr/include" LDFLAGS="-L/tmp/cj/usr/lib/x86_64-linux-gnu -Wl,-rpath,/tmp/cj/usr/lib/x86_64-linux-gnu"
fi
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$OUT/device.txt"
make -j"$(nproc)" all bench 2>&1 | tail -5 | tee "$OUT/build.log" || exit 1
./build/test_runner 2>&1 | tee "$OUT/tests.log" | grep -v "^PASS"
for b in build/bench_*; do
    [ -x "$b" ] || continue
    name=$(basename "$b")
    "$b" > "$OUT/$name.json" 2> "$OUT/$name.err" && echo "$name: ok" || echo "$name: FAILED (see $name.err)"
done
