#!/usr/bin/env bash
# Profiling device call: build, the decode-linear GPU tests, bench_linear for decode sizes,
# an ncu source-level (SASS) profile of the decode kernel at wq_b M = 1, and per-kernel
# durations of one-token MoE forwards. Results packed to $OUT/profile.tgz.
#   device tool, carry [".devdeps"]:  bash tests/gpu/profile.sh
set -uo pipefail
FINAL=${OUT:-/tmp/dsv4-prof-out}
R=/tmp/dsv4-prof
rm -rf "$R"; mkdir -p "$R" "$FINAL"
trap 'tar czf "$FINAL/profile.tgz" -C "$R" .' EXIT
source tests/gpu/setup.sh
make -j"$(nproc)" all bench NVCCFLAGS_EXTRA="-Xptxas -v" > "$R/build.log" 2>&1 || { tail -30 "$R/build.log"; exit 1; }
echo "== tests"; timeout 200 ./build/test_runner ${TESTS:-gpu_linear gpu_moe backend} > "$R/tests.log" 2>&1; grep -v "^PASS" "$R/tests.log" | tail -12
echo "== bench"; timeout 100 ./build/bench_linear 64 > "$R/linear.json" 2> "$R/linear.err"; echo "linear rc $?"
cuobjdump --dump-sass --function '_Z16linear_decode_v2ILi0ELi0ELi8ELb0ELb0EEv12LinearParams' build/obj/src/cuda/linear_decode.o > "$R/sass_decode_nvfp4_mt8.txt" 2>&1
timeout 120 ncu --clock-control none --set full --import-source yes -k regex:linear_decode_v2 -c 1 -o "$R/decode" ./build/bench_linear 1 > "$R/ncu_run.txt" 2>&1
ncu -i "$R/decode.ncu-rep" --page source --csv --print-source sass > "$R/decode_source.csv" 2>&1
ncu -i "$R/decode.ncu-rep" --section SpeedOfLight --section WarpStateStats --section InstructionStats \
    --section MemoryWorkloadAnalysis --section Occupancy --section SchedulerStats > "$R/decode_summary.txt" 2>&1
grep -E "Duration|Throughput|Busy|Stall|Issued|Eligible|Active Warps|Hit Rate|Executed Ipc|No Eligible" "$R/decode_summary.txt" | head -40
timeout 60 ncu --clock-control none --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
    -k regex:linear_decode_v2 -c 1 ./build/bench_linear 1 > "$R/decode_stalls.txt" 2>&1
grep -E "stalled" "$R/decode_stalls.txt" | sed -E 's/smsp__average_warps_issue_stalled_//; s/_per_issue_active.ratio//; s/ +/ /g' |
    sort -k3 -n -r | head -12
echo "== grouped decode in the one-token MoE layer (L1, L2)"
timeout 120 ncu --clock-control none --section SpeedOfLight --section WarpStateStats --section SchedulerStats \
    --section MemoryWorkloadAnalysis -k regex:linear_decode_v2 -c 2 ./build/bench_moe 1 > "$R/ncu_moe_decode.txt" 2>&1
grep -E "linear_decode_v2|Duration|DRAM Throughput|Memory Throughput|Issued Warp|No Eligible|Stall" "$R/ncu_moe_decode.txt" | head -30
echo "== moe kernels (one-token layer, isolated durations)"
moe_kernel_times "$R" 24 200
python3 - "$R" <<'PY'
import json, sys, os
R = sys.argv[1]
for l in open(os.path.join(R, 'linear.json')):
    r = json.loads(l)
    if 'name' in r: print(f"  {r['name']:10s} M={r['M']:3d} {r['format']:9s} {r['mode']} {r['time_us']:7.2f} us  frac {r['frac_of_copy_bw']:.3f}  read-only {r['read_only_us']:6.2f} us  x{r['speedup_vs_cublas']:.2f}")
PY
