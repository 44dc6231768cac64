#!/usr/bin/env bash
# The closing device call of a session: build, every test (GPU ones included), memcheck on the
# filters in $MEMCHECK (default: gpu_linear gpu_moe gpu_quantize), every benchmark at full size
# (bench_moe up to $MAXT, default 16384). Everything packed to $OUT/final.tgz.
#   device tool, carry [".devdeps"]:  bash tests/gpu/final_check.sh
set -uo pipefail
FINAL=${OUT:-/tmp/dsv4-final-out}
R=/tmp/dsv4-final
rm -rf "$R"; mkdir -p "$R" "$FINAL"
trap 'tar czf "$FINAL/final.tgz" -C "$R" .' EXIT
source tests/gpu/setup.sh
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$R/device.txt"
make -j"$(nproc)" all bench NVCCFLAGS_EXTRA="-Xptxas -v" > "$R/build.log" 2>&1 || { tail -30 "$R/build.log"; exit 1; }
# ptxas serialises every wgmma when it may not keep an A-fragment register until the covering
# wait (linear_prefill_wgmma.cu: frag_use): the kernel still computes right, at about half speed
grep -q "instructions are serialized" "$R/build.log" && { echo "WARNING: ptxas serialised wgmma:"; grep -m3 "instructions are serialized" "$R/build.log"; }
echo "== tests"; timeout 240 ./build/test_runner > "$R/tests.log" 2>&1; echo "rc $?"; grep -v "^PASS" "$R/tests.log" | grep -v "^  " | tail -8
for f in ${MEMCHECK:-gpu_linear gpu_moe gpu_quantize}; do
    timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 ./build/test_runner $f > "$R/memcheck_$f.log" 2>&1
    echo "memcheck $f rc $? $(tail -1 "$R/memcheck_$f.log")"
done
echo "== benchmarks"
timeout 100 ./build/bench_linear > "$R/bench_linear.json" 2> "$R/bench_linear.err"; echo "linear rc $?"
timeout 170 ./build/bench_moe ${MAXT:-16384} > "$R/bench_moe.json" 2> "$R/bench_moe.err"; echo "moe rc $?"
timeout 60 ./build/bench_quantize > "$R/bench_quantize.json" 2> "$R/bench_quantize.err"; echo "quantize rc $?"
timeout 60 ./build/bench_mhc > "$R/bench_mhc.json" 2> "$R/bench_mhc.err"; echo "mhc rc $?"
