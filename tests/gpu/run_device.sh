#!/usr/bin/env bash
# One device call: build for sm_90a, run every test (GPU ones included), the GPU tests again
# under compute-sanitizer, the HF oracle comparison, and the benchmarks; logs and JSON go to
# $OUT. Here, first: `make devdeps` (the GPU machine has no package registry); then call the
# device tool with carry [".devdeps"] and the command
#   bash tests/gpu/run_device.sh
# Each stage is bounded so the whole call stays inside the 10-minute limit. SKIP_ORACLE=1 leaves
# the HF comparison out; MEMCHECK_FILTER narrows the memcheck run (default: every GPU test). The device tool
# returns at most 8 files, so everything is written to a scratch folder and packed into
# $OUT/device-run.tgz at the end (plus the summary on stdout).
set -uo pipefail
FINAL=${OUT:-/tmp/dsv4-device-out}
OUT=/tmp/dsv4-run
rm -rf "$OUT"
mkdir -p "$OUT" "$FINAL"
trap 'tar czf "$FINAL/device-run.tgz" -C "$OUT" .' EXIT
source tests/gpu/setup.sh
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$OUT/device.txt"
make -j"$(nproc)" all bench NVCCFLAGS_EXTRA="-Xptxas -v" > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
export DSV4_CLI=./build/dsv4
echo "== tests"; timeout 240 ./build/test_runner > "$OUT/tests.log" 2>&1; grep -v "^PASS" "$OUT/tests.log" | tail -40
if command -v compute-sanitizer >/dev/null; then
    echo "== compute-sanitizer memcheck (GPU tests)"
    # the harness self-test provokes a capture failure on purpose: memcheck would count it
    timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 ./build/test_runner ${MEMCHECK_FILTER:-gpu_} -harness_catches > "$OUT/memcheck.log" 2>&1
    echo "memcheck exit $?"; tail -5 "$OUT/memcheck.log"
fi
PY=/opt/torch/.venv/bin/python; [ -x "$PY" ] || PY=python3
if [ -z "${SKIP_ORACLE:-}" ]; then
    echo "== HF oracle"; timeout 120 env PYTHONUNBUFFERED=1 OUT="$OUT" "$PY" tests/oracle/compare_hf.py build/dsv4 > "$OUT/oracle.log" 2>&1
    echo "oracle exit $?"; tail -32 "$OUT/oracle.log" | grep -E '"config"|"pass"|cosine_min|max_rel|greedy_identical"|error'""
fi
echo "== benchmarks"
for b in build/bench_*; do
    [ -x "$b" ] || continue
    name=$(basename "$b")
    timeout 90 "$b" > "$OUT/$name.json" 2> "$OUT/$name.err" && echo "$name: ok" || echo "$name: FAILED (see $name.err)"
done
