#!/usr/bin/env bash
# A/B device call for decode work: build, the GPU tests, decode-regime benchmarks with and
# without PDL (DSV4_PDL=0) and with the v1 decode kernel, and an ncu profile of the decode
# kernel (wq_b M = 1 and the grouped MoE L1 at one token). Results packed to $OUT/perf.tgz.
#   device tool, carry [".devdeps"]:  bash tests/gpu/perf_ab.sh [ncu]
set -uo pipefail
FINAL=${OUT:-/tmp/dsv4-perf-out}
R=/tmp/dsv4-perf
rm -rf "$R"; mkdir -p "$R" "$FINAL"
trap 'tar czf "$FINAL/perf.tgz" -C "$R" .' EXIT
if ! ldconfig -p | grep -q libcjson; then
    mkdir -p /tmp/cj
    for f in .devdeps/*.deb; do dpkg -x "$f" /tmp/cj; done
    ln -sf libcjson.so.1 /tmp/cj/usr/lib/x86_64-linux-gnu/libcjson.so
    export CPPFLAGS="-I/tmp/cj/usr/include" LDFLAGS="-L/tmp/cj/usr/lib/x86_64-linux-gnu -Wl,-rpath,/tmp/cj/usr/lib/x86_64-linux-gnu"
fi
make -j"$(nproc)" all bench NVCCFLAGS_EXTRA="-Xptxas -v" > "$R/build.log" 2>&1 || { tail -30 "$R/build.log"; exit 1; }
echo "== tests"; timeout 200 ./build/test_runner gpu_ > "$R/tests.log" 2>&1; grep -v "^PASS" "$R/tests.log" | tail -20
echo "== bench"
timeout 100 ./build/bench_linear 64 > "$R/linear_pdl.json" 2> "$R/linear_pdl.err"; echo "linear pdl rc $?"
DSV4_PDL=0 timeout 100 ./build/bench_linear 64 > "$R/linear_nopdl.json" 2>> "$R/linear_nopdl.err"; echo "linear nopdl rc $?"
timeout 100 ./build/bench_moe 64 > "$R/moe_pdl.json" 2> "$R/moe_pdl.err"; echo "moe pdl rc $?"
DSV4_PDL=0 timeout 100 ./build/bench_moe 64 > "$R/moe_nopdl.json" 2> "$R/moe_nopdl.err"; echo "moe nopdl rc $?"
if [ "${1:-}" = ncu ]; then
    echo "== ncu"
    timeout 150 ncu --clock-control none --set full -k regex:linear_decode_v2 -c 3 ./build/bench_linear 1 > "$R/ncu_decode.txt" 2>&1
    echo "ncu rc $?"
fi
python3 - "$R" <<'PY'
import json, sys, os
R = sys.argv[1]
def rows(f):
    try: return [json.loads(l) for l in open(os.path.join(R, f)) if l.startswith('{')]
    except Exception as e: return []
for f in ['linear_pdl.json', 'linear_nopdl.json']:
    print(f)
    for r in rows(f):
        if 'name' in r: print(f"  {r['name']:10s} M={r['M']:3d} {r['format']:9s} {r['mode']} {r['time_us']:7.2f} us  frac {r['frac_of_copy_bw']:.3f}  read-only {r['read_only_us']:6.2f} us  cublas {r['cublas_bf16_time_us']:6.2f} x{r['speedup_vs_cublas']:.2f}")
for f in ['moe_pdl.json', 'moe_nopdl.json']:
    print(f)
    for r in rows(f):
        if 'T' in r: print(f"  {r['router']:6s} T={r['T']:3d} {r['mode']} {r['time_us']:8.2f} us  roof {r['roofline_us']:7.2f}  x{r['time_over_roofline']:.2f}  bf16 x{r['speedup_vs_bf16']:.2f}")
PY
