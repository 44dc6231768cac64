#!/usr/bin/env bash
# Development: the GPU tests matching $TESTS (if set), then ncu per-instruction stall samples (SASS) of the one-token
# router + layout kernel (k_moe_route_place, bench_moe 1), the 25 hottest instructions printed;
# the full CSV goes to $OUT/src.csv.   device tool, carry [".devdeps"]: bash tests/gpu/route_profile.sh
source tests/gpu/setup.sh; mkdir -p /tmp/t; make -j16 all bench > /tmp/t/build.log 2>&1 || tail -20 /tmp/t/build.log
[ -n "${TESTS:-}" ] && { timeout 100 ./build/test_runner $TESTS > /tmp/t/sw.log 2>&1; echo "tests rc $?"; tail -2 /tmp/t/sw.log; }
timeout 200 ncu --clock-control none --warp-sampling-interval 0 --section WarpStateStats --section SourceCounters --section LaunchStats -k regex:k_moe_route_place -c 1 --page source --csv --print-source sass ./build/bench_moe 1 > /tmp/t/src.csv 2> /tmp/t/src.err; echo "ncu rc $?"
python3 - <<'PY'
import csv
rows = list(csv.reader(open('/tmp/t/src.csv')))
hdr_i = next(i for i, r in enumerate(rows) if any('Source' == c or 'Address' in c for c in r))
hdr = rows[hdr_i]
print(hdr)
samp = [i for i, c in enumerate(hdr) if 'Warp Stall Sampling (All' in c]
src = [i for i, c in enumerate(hdr) if c == 'Source']
if samp:
    s = samp[0]
    data = []
    for r in rows[hdr_i + 1:]:
        try: data.append((float(r[s] or 0), r))
        except (ValueError, IndexError): pass
    tot = sum(d[0] for d in data)
    print("total samples", tot, "instructions", len(data))
    for v, r in sorted(data, key=lambda d: -d[0])[:25]:
        print(f"{v:8.0f} {100*v/tot:5.1f}% ", r[src[0]] if src else r[:3])
PY
cp /tmp/t/src.csv $OUT/ 2>/dev/null
