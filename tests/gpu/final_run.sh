set -uo pipefail
R=/tmp/r; mkdir -p $R
if ! ldconfig -p | grep -q libcjson; then mkdir -p /tmp/cj; for f in .devdeps/*.deb; do dpkg -x "$f" /tmp/cj; done; ln -sf libcjson.so.1 /tmp/cj/usr/lib/x86_64-linux-gnu/libcjson.so; export CPPFLAGS="-I/tmp/cj/usr/include" LDFLAGS="-L/tmp/cj/usr/lib/x86_64-linux-gnu -Wl,-rpath,/tmp/cj/usr/lib/x86_64-linux-gnu"; fi
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > $R/device.txt
make -j16 all bench NVCCFLAGS_EXTRA="-Xptxas -v" > $R/build.log 2>&1 || { tail -30 $R/build.log; exit 1; }
export DSV4_CLI=./build/dsv4
timeout 200 ./build/test_runner > $R/tests.log 2>&1; grep -v "^PASS" $R/tests.log | tail -25
for b in bench_linear bench_moe bench_quantize bench_mhc; do timeout 150 ./build/$b > $R/$b.json 2>$R/$b.err; echo "$b rc $?"; tar czf $OUT/r.tgz -C $R .; done
DSV4_DECODE_V1=1 timeout 60 ./build/bench_linear > $R/bench_linear_v1.json 2>/dev/null; echo "v1 rc $?"
tar czf $OUT/r.tgz -C $R .
timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 ./build/test_runner gpu_linear > $R/memcheck.log 2>&1; echo "memcheck rc $?"; tail -3 $R/memcheck.log
tar czf $OUT/r.tgz -C $R .
