#!/usr/bin/env bash
# wgmma prefill kernel experiments (development): builds the benchmarks once per variant
# ($VARIANTS, "name:flags;name:flags") and times the dense 4096³ wgmma cases of bench_linear
# (and, with MOE=1, bench_moe at 4096 and 16384 tokens). Timing-only variants
# (WGMMA_EXP_NOPERM: x copied without the k reorder; WGMMA_EXP_NOEXPAND: raw weight words as
# fragments) compute wrong results on purpose. Results packed to $OUT/exp.tgz.
#   device tool, carry [".devdeps"]:  VARIANTS="base:;s4:-DWGMMA_STAGES=4" bash tests/gpu/prefill_experiments.sh
set -uo pipefail
source tests/gpu/setup.sh
R=/tmp/pexp; rm -rf $R; mkdir -p $R
IFS=';' read -ra VS <<< "${VARIANTS:-base:;noperm:-DWGMMA_EXP_NOPERM;noexpand:-DWGMMA_EXP_NOEXPAND}"
for v in "${VS[@]}"; do
    n=${v%%:*}; f="${v#*:}"
    make -j"$(nproc)" BUILD=build-$n NVCCFLAGS_EXTRA="$f" bench > $R/build_$n.log 2>&1 || { echo "build $n failed"; tail -5 $R/build_$n.log; continue; }
    timeout 60 ./build-$n/bench_linear 4096 4096 > $R/lin_$n.json 2> $R/lin_$n.err
    [ -n "${MOE:-}" ] && timeout 120 ./build-$n/bench_moe 16384 4096 > $R/moe_$n.json 2> $R/moe_$n.err
    python3 - "$n" $R/lin_$n.json $R/moe_$n.json <<'PY'
import json, sys
for f in sys.argv[2:]:
    try: lines = open(f)
    except OSError: continue
    for l in lines:
        if not l.startswith('{'): continue
        r = json.loads(l)
        if r.get('path') == 'prefill_wgmma': print(f"  {sys.argv[1]:10s} {r['name']} {r['format']} {r['mode']} {r['time_us']:8.1f} us {r['tflops']:6.1f} TF x{r['speedup_vs_cublas']:.2f}")
        if 'T' in r and r['T'] >= 4096: print(f"  {sys.argv[1]:10s} moe {r['router']} T={r['T']} {r['mode']} {r['time_us']:9.1f} us bf16 x{r['speedup_vs_bf16']:.2f}")
PY
done
tar czf $OUT/exp.tgz -C $R .
