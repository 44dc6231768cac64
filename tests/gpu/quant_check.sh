#!/usr/bin/env bash
# Device check of the quantize / fused RMSNorm row kernels: build, their GPU tests with the
# automatic layout and with every forced threads-per-row (DSV4_ROW_THREADS), then
# bench_quantize per layout. device tool, carry [".devdeps"]:  bash tests/gpu/quant_check.sh
set -uo pipefail
R=/tmp/dsv4-qc; rm -rf "$R"; mkdir -p "$R" "${OUT:-/tmp}"
trap 'tar czf "${OUT:-/tmp}/qc.tgz" -C "$R" .' EXIT
source tests/gpu/setup.sh
make -j"$(nproc)" all bench > "$R/build.log" 2>&1 || { tail -30 "$R/build.log"; exit 1; }
for t in "" 32 64 128 256; do
    echo "== tests DSV4_ROW_THREADS=${t:-auto}"
    for f in test_gpu_quantize test_gpu_norm_mhc; do
        DSV4_ROW_THREADS=$t timeout 120 ./build/test_runner $f > "$R/tests$t-$f.log" 2>&1
        grep -v "^PASS" "$R/tests$t-$f.log" | tail -4
    done
done
for t in "" ${BENCH_TPR:-32 64 128}; do
    echo "== bench DSV4_ROW_THREADS=${t:-auto}"
    DSV4_ROW_THREADS=$t timeout 90 ./build/bench_quantize > "$R/bench$t.json" 2> "$R/bench$t.err"
    python3 -c "
import json,sys
for l in open('$R/bench$t.json'):
    if l.startswith('{'):
        r=json.loads(l); print(f\"  {r['bench'][:8]} {r['M']:5d}x{r['K']} {r['scale_mode']:15s} {r['us_per_launch']:7.2f} us  {r['fraction_of_copy']:.3f}\")
"
done
