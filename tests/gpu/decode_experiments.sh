#!/usr/bin/env bash
# Decode-kernel experiments (development): builds with -DDSV4_DECODE_EXPERIMENTS and each variant's
# flags ($VARIANTS, default ring depths 4, 3, 2) and times bench_linear (M <= 16) and, with MOE=1,
# bench_moe (<= 16 tokens) with DSV4_DECODE_EXPERIMENT=0 (normal), 1 (weight stream only) and 2
# (expansion + MMA only) ($EXPERIMENTS). Results packed to $OUT/exp.tgz.
#   device tool, carry [".devdeps"]:  bash tests/gpu/decode_experiments.sh
set -uo pipefail
source tests/gpu/setup.sh
R=/tmp/exp; rm -rf $R; mkdir -p $R
summ() { python3 - "$1" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    if not l.startswith('{'): continue
    r = json.loads(l)
    if 'name' in r: print(f"    {r['name']:10s} M={r['M']:3d} {r['format']:9s} {r['mode']} {r['time_us']:7.2f} us  frac {r['frac_of_copy_bw']:.3f}  read-only {r['read_only_us']:6.2f}")
    if 'T' in r: print(f"    moe {r['router']:6s} T={r['T']:3d} {r['mode']} {r['time_us']:8.2f} us  roof {r['roofline_us']:7.2f}")
PY
}
# VARIANTS: "name:flags;name:flags" (default: ring depths 4, 3, 2); EXPERIMENTS (default "0 1 2")
IFS=';' read -ra VS <<< "${VARIANTS:-s4:-DDECODE_STAGES=4;s3:-DDECODE_STAGES=3;s2:-DDECODE_STAGES=2}"
for v in "${VS[@]}"; do
    n=${v%%:*}; f="-DDSV4_DECODE_EXPERIMENTS ${v#*:}"
    make -j16 BUILD=build-$n NVCCFLAGS_EXTRA="$f" bench > $R/build_$n.log 2>&1 || { echo "build $n failed"; tail -5 $R/build_$n.log; continue; }
    for e in ${EXPERIMENTS:-0 1 2}; do
        echo "== $n experiment $e"
        DSV4_DECODE_EXPERIMENT=$e timeout 60 ./build-$n/bench_linear 16 > $R/lin_${n}_$e.json 2> $R/lin_${n}_$e.err
        summ $R/lin_${n}_$e.json
        if [ -n "${MOE:-}" ]; then DSV4_DECODE_EXPERIMENT=$e timeout 60 ./build-$n/bench_moe 16 > $R/moe_${n}_$e.json 2>&1; summ $R/moe_${n}_$e.json | grep W4A16; fi
    done
done
tar czf $OUT/exp.tgz -C $R .
