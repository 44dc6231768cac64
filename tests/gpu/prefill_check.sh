#!/usr/bin/env bash
# Device iteration on the prefill kernels: build (register report), the GPU tests (filter
# $TESTS, default gpu_), bench_linear (all sizes), bench_moe up to $MAXT tokens (default all),
# and, unless QUICK=1, an ncu look at the quantize / RMSNorm row kernels at 4096 rows and the
# mHC benchmark with and without PDL. Results packed to $OUT/prefill.tgz.
#   device tool, carry [".devdeps"]:  bash tests/gpu/prefill_check.sh
set -uo pipefail
FINAL=${OUT:-/tmp/dsv4-prefill-out}
R=/tmp/dsv4-prefill
rm -rf "$R"; mkdir -p "$R" "$FINAL"
trap 'tar czf "$FINAL/prefill.tgz" -C "$R" .' EXIT
source tests/gpu/setup.sh
make -j"$(nproc)" all bench NVCCFLAGS_EXTRA="-Xptxas -v" > "$R/build.log" 2>&1 || { grep -E "error" "$R/build.log" | head; tail -30 "$R/build.log"; exit 1; }
# ptxas serialises every wgmma when it may not keep an A-fragment register until the covering
# wait (linear_prefill_wgmma.cu: frag_use): the kernel still computes right, at about half speed
grep -q "instructions are serialized" "$R/build.log" && { echo "WARNING: ptxas serialised wgmma:"; grep -m3 "instructions are serialized" "$R/build.log"; }
grep -A3 "Compiling entry.*linear_prefill_wgmma" "$R/build.log" | grep -E "registers|spill" | paste - - | sed -E 's/ +/ /g' | head -8
echo "== tests"; timeout ${TEST_S:-150} ./build/test_runner ${TESTS:-gpu_} > "$R/tests.log" 2>&1; echo "rc $?"
grep -v "^PASS" "$R/tests.log" | tail -25
echo "== bench"
timeout 100 ./build/bench_linear ${MAXM:-100000} ${MINM:-0} > "$R/linear.json" 2> "$R/linear.err"; echo "linear rc $?"
timeout 150 ./build/bench_moe ${MAXT:-16384} > "$R/moe.json" 2> "$R/moe.err"; echo "moe rc $?"
python3 - "$R" <<'PY'
import json, sys, os
R = sys.argv[1]
def rows(f):
    try: return [json.loads(l) for l in open(os.path.join(R, f)) if l.startswith('{')]
    except Exception: return []
for r in rows('linear.json'):
    if 'name' in r and r['M'] >= 128: print(f"  {r['name']:10s} M={r['M']:5d} {r['format']:9s} {r['mode']} {r['path']:15s} {r['time_us']:9.2f} us {r.get('tflops',0):7.1f} TF  cublas {r['cublas_bf16_time_us']:9.2f} x{r['speedup_vs_cublas']:.2f}")
for r in rows('moe.json'):
    if 'T' in r: print(f"  {r['router']:6s} T={r['T']:5d} {r['mode']} {r['time_us']:10.2f} us  roof {r['roofline_us']:8.2f} x{r['time_over_roofline']:.2f}  bf16 {r['bf16_time_us']:10.2f} x{r['speedup_vs_bf16']:.2f}")
PY
if [ -n "${PROFILE_WGMMA:-}" ]; then
    # the dense 4096³ wgmma kernel, W4A4 (ACT 1) and W4A16 (ACT 0): speed of light, stall
    # reasons, tensor-pipe activity and the breakdown of the L1/TEX throughput
    M="sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,breakdown:l1tex__throughput.avg.pct_of_peak_sustained_active"
    for st in long_scoreboard short_scoreboard barrier membar mio_throttle lg_throttle wait math_pipe_throttle sleeping dispatch_stall no_instruction selected not_selected misc; do
        M="$M,smsp__average_warps_issue_stalled_${st}_per_issue_active.ratio"
    done
    for act in 1 0; do
        echo "== ncu wgmma prefill, square 4096, ACT $act"
        timeout 120 ncu --clock-control none --section SpeedOfLight --metrics "$M" --kernel-name-base mangled \
            -k "regex:_Z20linear_prefill_wgmmaILi0ELi${act}ELi128ELb0E" -c 1 ./build/bench_linear 4096 4096 > "$R/ncu_wgmma_$act.txt" 2>&1
        grep -E "Duration|Throughput|hmma|l1tex__|stalled" "$R/ncu_wgmma_$act.txt" | sed -E 's/smsp__average_warps_issue_stalled_//; s/_per_issue_active.ratio//' | head -40
    done
fi
[ -n "${QUICK:-}" ] && exit 0
echo "== ncu quantize / rmsnorm rows (4096 x 4096, first launch = static scale)"
for k in k_quantize_rows k_rmsnorm_rows; do
    timeout 120 ncu --clock-control none --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
        --section LaunchStats --section WarpStateStats -k regex:$k -c 1 ./build/bench_quantize > "$R/ncu_$k.txt" 2>&1
    grep -E "Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Grid Size|Block Size|Stall|L2 Hit|Mem Busy|Max Bandwidth" "$R/ncu_$k.txt" | head -24
done
echo "== mHC (PDL on / off)"
timeout 60 ./build/bench_mhc > "$R/mhc.json" 2> "$R/mhc.err"
DSV4_PDL=0 timeout 60 ./build/bench_mhc > "$R/mhc_nopdl.json" 2> "$R/mhc_nopdl.err"
for f in mhc mhc_nopdl; do echo "-- $f"; grep -v '"device"' "$R/$f.json" | cut -c1-260; done
