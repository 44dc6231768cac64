set -uo pipefail
OUT2=$OUT; mkdir -p /tmp/r
if ! ldconfig -p | grep -q libcjson; then mkdir -p /tmp/cj; for f in .devdeps/*.deb; do dpkg -x "$f" /tmp/cj; done; ln -sf libcjson.so.1 /tmp/cj/usr/lib/x86_64-linux-gnu/libcjson.so; export CPPFLAGS="-I/tmp/cj/usr/include" LDFLAGS="-L/tmp/cj/usr/lib/x86_64-linux-gnu -Wl,-rpath,/tmp/cj/usr/lib/x86_64-linux-gnu"; fi
make -j16 all bench NVCCFLAGS_EXTRA="-Xptxas -v" > /tmp/r/build.log 2>&1 || { tail -30 /tmp/r/build.log; exit 1; }
timeout 200 ./build/test_runner gpu_linear 2>&1 | tee /tmp/r/tests.log | grep -v "^PASS" | tail -30
timeout 200 ./build/bench_linear > /tmp/r/bench_linear.json 2>/tmp/r/bench_linear.err; echo "bench rc $?"
cat /tmp/r/bench_linear.json | python3 -c "
import sys,json
for l in sys.stdin:
  d=json.loads(l)
  if 'name' in d: print(d['name'],d['M'],d['format'],d['mode'],d['path'],'t=%.1fus'%d['time_us'],'bw=%.2f'%d['frac_of_copy_bw'],'tf=%.0f'%d['tflops'],'x_cublas=%.2f'%d['speedup_vs_cublas'])
  else: print(d)
"
cp /tmp/r/* $OUT2/ 2>/dev/null
