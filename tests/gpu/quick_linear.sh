# A shorter device call than run_device.sh: build, the GPU tests matching $1 (default gpu_),
# and the benchmarks named in $2 (default "bench_linear"); JSON and logs to $OUT.
set -uo pipefail
mkdir -p /tmp/r
if ! ldconfig -p | grep -q libcjson; then mkdir -p /tmp/cj; for f in .devdeps/*.deb; do dpkg -x "$f" /tmp/cj; done; ln -sf libcjson.so.1 /tmp/cj/usr/lib/x86_64-linux-gnu/libcjson.so; export CPPFLAGS="-I/tmp/cj/usr/include" LDFLAGS="-L/tmp/cj/usr/lib/x86_64-linux-gnu -Wl,-rpath,/tmp/cj/usr/lib/x86_64-linux-gnu"; fi
make -j16 all bench NVCCFLAGS_EXTRA="-Xptxas -v" > /tmp/r/build.log 2>&1 || { tail -30 /tmp/r/build.log; exit 1; }
timeout 240 ./build/test_runner "${1:-gpu_}" 2>&1 | tee /tmp/r/tests.log | grep -v "^PASS" | tail -30
for b in ${2:-bench_linear}; do timeout 240 ./build/$b > /tmp/r/$b.json 2>/tmp/r/$b.err; echo "$b rc $?"; tail -3 /tmp/r/$b.err; done
cp /tmp/r/* $OUT/ 2>/dev/null
