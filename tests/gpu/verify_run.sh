# Device check after fixes: all tests, then memcheck of the linear and MoE-layer GPU tests.
set -uo pipefail
R=/tmp/r; mkdir -p $R
if ! ldconfig -p | grep -q libcjson; then mkdir -p /tmp/cj; for f in .devdeps/*.deb; do dpkg -x "$f" /tmp/cj; done; ln -sf libcjson.so.1 /tmp/cj/usr/lib/x86_64-linux-gnu/libcjson.so; export CPPFLAGS="-I/tmp/cj/usr/include" LDFLAGS="-L/tmp/cj/usr/lib/x86_64-linux-gnu -Wl,-rpath,/tmp/cj/usr/lib/x86_64-linux-gnu"; fi
make -j16 all > $R/build.log 2>&1 || { tail -30 $R/build.log; exit 1; }
export DSV4_CLI=./build/dsv4
timeout 200 ./build/test_runner > $R/tests.log 2>&1; grep -v "^PASS" $R/tests.log | grep -v "^  \|^     " | tail -8
tar czf $OUT/r.tgz -C $R .
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 ./build/test_runner gpu_linear > $R/memcheck.log 2>&1; echo "memcheck gpu_linear rc $?"; tail -2 $R/memcheck.log
tar czf $OUT/r.tgz -C $R .
