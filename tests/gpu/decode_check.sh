#!/usr/bin/env bash
# Device iteration on the decode kernel: build (register report), the GPU tests (filter $TESTS,
# default gpu_), compute-sanitizer memcheck on each filter in $MEMCHECK (default gpu_linear), bench_linear up
# to 64 rows (AB=1: also with DSV4_PDL=0), bench_moe up to $MAXT (64) tokens, and the decode
# kernel's executed instructions and isolated duration at wq_b M = 1 (ncu); MOE_KERNELS=1 adds
# the isolated duration of each kernel of a one-token MoE layer.
# Results packed to $OUT/decode.tgz.
#   device tool, carry [".devdeps"]:  bash tests/gpu/decode_check.sh
set -uo pipefail
FINAL=${OUT:-/tmp/dsv4-decode-out}
R=/tmp/dsv4-decode
rm -rf "$R"; mkdir -p "$R" "$FINAL"
trap 'tar czf "$FINAL/decode.tgz" -C "$R" .' EXIT
source tests/gpu/setup.sh
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
make -j"$(nproc)" all bench NVCCFLAGS_EXTRA="-Xptxas -v" > "$R/build.log" 2>&1 || { grep -E "error" "$R/build.log" | head; tail -30 "$R/build.log"; exit 1; }
echo "== tests"; timeout ${TEST_S:-200} ./build/test_runner ${TESTS:-gpu_} > "$R/tests.log" 2>&1; echo "rc $?"
grep -v "^PASS" "$R/tests.log" | grep -v "^  " | tail -20
if command -v compute-sanitizer > /dev/null; then
    for f in ${MEMCHECK:-gpu_linear}; do # filters, one run each
        echo "== memcheck $f"
        timeout ${MEMCHECK_S:-150} compute-sanitizer --tool memcheck --error-exitcode 9 ./build/test_runner $f \
            > "$R/memcheck_$f.log" 2>&1
        echo "memcheck rc $?"; tail -2 "$R/memcheck_$f.log"
    done
fi
echo "== bench"
run_lin() { # name, env...
    local n=$1; shift
    env "$@" timeout 100 ./build/bench_linear 64 > "$R/linear_$n.json" 2> "$R/linear_$n.err"; echo "linear $n rc $?"
}
run_lin plan
[ -n "${AB:-}" ] && run_lin nopdl DSV4_PDL=0
timeout 120 ./build/bench_moe ${MAXT:-64} > "$R/moe.json" 2> "$R/moe.err"; echo "moe rc $?"
timeout 60 ncu --clock-control none --metrics smsp__inst_executed.sum,gpu__time_duration.sum \
    -k regex:linear_decode_v2 -c 1 ./build/bench_linear 1 > "$R/ncu_inst.txt" 2>&1
echo "ncu: $(grep -E "inst_executed|time_duration" "$R/ncu_inst.txt" | sed -E 's/ +/ /g' | tr '\n' ' ')"
[ -n "${MOE_KERNELS:-}" ] && moe_kernel_times "$R" 12 150 # isolated per-kernel durations of a one-token MoE layer
python3 - "$R" <<'PY'
import json, sys, os, glob
R = sys.argv[1]
def rows(f):
    try: return [json.loads(l) for l in open(f) if l.startswith('{')]
    except Exception: return []
for f in sorted(glob.glob(os.path.join(R, 'linear_*.json'))):
  for r in rows(f):
    if 'name' in r and r['M'] <= 64: print(f"  {os.path.basename(f)[7:-5]:9s} {r['name']:10s} M={r['M']:3d} {r['format']:9s} {r['mode']} {r['time_us']:7.2f} us  frac {r['frac_of_copy_bw']:.3f}  read-only {r['read_only_us']:6.2f}  cublas {r['cublas_bf16_time_us']:6.2f} x{r['speedup_vs_cublas']:.2f}")
for r in rows(os.path.join(R, 'moe.json')):
    if 'T' in r: print(f"  moe {r['router']:6s} T={r['T']:3d} {r['mode']} {r['time_us']:8.2f} us  roof {r['roofline_us']:7.2f}  x{r['time_over_roofline']:.2f}  bf16 {r['bf16_time_us']:8.2f} x{r['speedup_vs_bf16']:.2f}")
PY
