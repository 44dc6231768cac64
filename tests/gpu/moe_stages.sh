#!/usr/bin/env bash
# The MoE decode chain step by step (bench_moe stages: graph-replayed prefixes of the routed
# chain, the shared expert alone, the whole layer), after a build and the GPU tests
# ($TESTS, default gpu_). Each step's cost is the difference of consecutive prefixes.
# Logs to $OUT.   device tool, carry [".devdeps"]:  bash tests/gpu/moe_stages.sh
set -uo pipefail
R=${OUT:-/tmp/dsv4-stages-out}
mkdir -p "$R"
source tests/gpu/setup.sh
build_and_test "$R"
timeout 200 ./build/bench_moe stages > "$R/stages.json" 2> "$R/stages.err"; echo "stages rc $?"
python3 - "$R/stages.json" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{"T"')]
names = {1: 'router', 2: 'permute', 3: 'L1', 4: 'SwiGLU', 5: 'L2', 6: 'combine'}
for T in sorted({r['T'] for r in rows}):
    for mode in ('W4A16', 'W4A4'):
        rs = {(r['stages'], r['shared']): r['time_us'] for r in rows if r['T'] == T and r['mode'] == mode}
        if not rs: continue
        prev, parts = 0.0, []
        for n in range(1, 7):
            t = rs.get((n, 0))
            if t is None: continue
            parts.append(f"{names[n]} {t - prev:.1f}")
            prev = t
        print(f"T={T:2d} {mode:5s} routed {prev:6.1f} us [{', '.join(parts)}]  shared alone {rs.get((-1, 1), 0):.1f}  "
              f"whole {rs.get((0, 1), 0):.1f}")
PY
