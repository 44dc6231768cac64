#!/usr/bin/env bash
# Same-run A/B of an environment switch: build, the GPU tests ($TESTS, default gpu_; "none"
# skips them), then every benchmark of $BENCHES (';'-separated command lines of build/
# programs, default the decode-size MoE and linear ones) once with the default environment
# and once with $AB_ENV (default DSV4_L2_HINTS=0), alternating, $REPS times (default 2).
# JSON to $OUT/<n>_<a|b>_<rep>.json (stderr of all to $OUT/bench.err), a one-line summary per
# result on stdout, the tests' tally last.
#   device tool, carry [".devdeps"]:  AB_ENV="DSV4_PDL=0" bash tests/gpu/ab_check.sh
set -uo pipefail
R=${OUT:-/tmp/dsv4-ab-out}
mkdir -p "$R"
source tests/gpu/setup.sh
build_and_test "$R" 300
AB_ENV=${AB_ENV:-DSV4_L2_HINTS=0}
IFS=';' read -ra CMDS <<< "${BENCHES:-bench_moe 16;bench_moe stages;bench_linear 16 1}"
summary() {
    python3 - "$1" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    if not l.startswith('{'): continue
    r = json.loads(l)
    t = r.get('us_per_launch', r.get('time_us', r.get('us')))
    key = ' '.join(f"{k}={r[k]}" for k in ('bench', 'path', 'name', 'format', 'weight', 'router', 'mode', 'M', 'T', 'tokens', 'stages',
                                          'shared', 'scale_mode') if k in r)
    print(f"    {key}: {t}")
PY
}
for rep in $(seq 1 "${REPS:-2}"); do
    for n in "${!CMDS[@]}"; do
        c=${CMDS[$n]}
        echo "== [$rep] $c"
        timeout 240 ./build/$c > "$R/${n}_a_$rep.json" 2>> "$R/bench.err"; echo "  default rc $?"
        env $AB_ENV timeout 240 ./build/$c > "$R/${n}_b_$rep.json" 2>> "$R/bench.err"; echo "  $AB_ENV rc $?"
    done
done
for n in "${!CMDS[@]}"; do
    echo "== ${CMDS[$n]}: default, then $AB_ENV (rep 1)"
    summary "$R/${n}_a_1.json"; echo "  --"; summary "$R/${n}_b_1.json"
done
[ -f "$R/tests.log" ] && { echo "== tests"; tail -1 "$R/tests.log"; }
