#!/usr/bin/env bash
# Quick device iteration on the decode path: build, the GPU tests (filter $TESTS, default
# gpu_), bench_linear and bench_moe up to $MAXM / $MAXT (64) rows/tokens (AB=1: also with
# DSV4_PDL=0), and the decode kernel's executed instructions and duration at wq_b M = 1 (ncu).
# Results packed to $OUT/quick.tgz.
#   device tool, carry [".devdeps"]:  bash tests/gpu/perf_quick.sh
set -uo pipefail
FINAL=${OUT:-/tmp/dsv4-quick-out}
R=/tmp/dsv4-quick
rm -rf "$R"; mkdir -p "$R" "$FINAL"
trap 'tar czf "$FINAL/quick.tgz" -C "$R" .' EXIT
source tests/gpu/setup.sh
make -j"$(nproc)" all bench NVCCFLAGS_EXTRA="-Xptxas -v" > "$R/build.log" 2>&1 || { tail -30 "$R/build.log"; exit 1; }
echo "== tests"; timeout 200 ./build/test_runner ${TESTS:-gpu_} > "$R/tests.log" 2>&1; grep -v "^PASS" "$R/tests.log" | grep -v "^  " | tail -12
echo "== bench"
timeout 100 ./build/bench_linear ${MAXM:-64} > "$R/linear.json" 2> "$R/linear.err"; echo "linear rc $?"
timeout 120 ./build/bench_moe ${MAXT:-64} > "$R/moe.json" 2> "$R/moe.err"; echo "moe rc $?"
if [ -n "${AB:-}" ]; then # the same without programmatic dependent launch
    DSV4_PDL=0 timeout 100 ./build/bench_linear ${MAXM:-64} > "$R/linear_nopdl.json" 2> "$R/linear_nopdl.err"
    DSV4_PDL=0 timeout 120 ./build/bench_moe ${MAXT:-64} > "$R/moe_nopdl.json" 2> "$R/moe_nopdl.err"
fi
timeout 60 ncu --clock-control none --metrics smsp__inst_executed.sum,gpu__time_duration.sum -k regex:linear_decode_v2 -c 1 ./build/bench_linear 1 > "$R/ncu_inst.txt" 2>&1
grep -E "inst_executed|time_duration" "$R/ncu_inst.txt" | head -4
python3 - "$R" <<'PY'
import json, sys, os
R = sys.argv[1]
def rows(f):
    try: return [json.loads(l) for l in open(os.path.join(R, f)) if l.startswith('{')]
    except Exception: return []
for f in ['linear.json', 'linear_nopdl.json']:
  for r in rows(f):
    if 'name' in r: print(f"  {f[:-5]:12s} {r['name']:10s} M={r['M']:3d} {r['format']:9s} {r['mode']} {r['time_us']:7.2f} us  frac {r['frac_of_copy_bw']:.3f}  read-only {r['read_only_us']:6.2f}  cublas {r['cublas_bf16_time_us']:6.2f} x{r['speedup_vs_cublas']:.2f}")
for f in ['moe.json', 'moe_nopdl.json']:
  for r in rows(f):
    if 'T' in r: print(f"  {f[:-5]:9s} {r['router']:6s} T={r['T']:3d} {r['mode']} {r['time_us']:8.2f} us  roof {r['roofline_us']:7.2f}  x{r['time_over_roofline']:.2f}  bf16 {r['bf16_time_us']:8.2f} x{r['speedup_vs_bf16']:.2f}")
PY
