# Sourced by the device scripts. The GPU machine has no package registry, so cJSON comes from
# the Debian packages `make devdeps` put in .devdeps/ (carried by the device tool), unpacked
# into /tmp/cj and handed to make through CPPFLAGS/LDFLAGS. Nothing happens where the system
# already has libcjson. Also defines moe_kernel_times and build_and_test (below).
if ! ldconfig -p | grep -q libcjson; then
    mkdir -p /tmp/cj
    for f in .devdeps/*.deb; do dpkg -x "$f" /tmp/cj; done
    ln -sf libcjson.so.1 /tmp/cj/usr/lib/x86_64-linux-gnu/libcjson.so
    export CPPFLAGS="-I/tmp/cj/usr/include" LDFLAGS="-L/tmp/cj/usr/lib/x86_64-linux-gnu -Wl,-rpath,/tmp/cj/usr/lib/x86_64-linux-gnu"
fi

# moe_kernel_times OUTDIR LAUNCHES TIMEOUT: the isolated duration (ncu) of each of the first
# LAUNCHES MoE and linear kernels of one-token MoE forwards (bench_moe 1), printed a line each;
# the raw ncu output goes to OUTDIR/ncu_moe.txt.
moe_kernel_times() {
    timeout "$3" ncu --clock-control none --metrics gpu__time_duration.sum -k 'regex:k_moe|linear_' --launch-count "$2" \
        ./build/bench_moe 1 > "$1/ncu_moe.txt" 2>&1; echo "ncu moe rc $?"
    grep -E "^  [a-zA-Z_].*\(|gpu__time_duration" "$1/ncu_moe.txt" | sed -E 's/\(LinearParams\)//; s/, Context.*//' |
        paste - - | awk '{print $1, $2, $NF " us"}' | head -"$2"
}

# build_and_test OUTDIR [TIMEOUT]: build everything and the benchmarks (log OUTDIR/build.log;
# exits the calling script on failure), then the tests matching $TESTS (default gpu_; "none"
# skips them; log OUTDIR/tests.log), printing the return code and the non-passing lines.
build_and_test() {
    make -j"$(nproc)" all bench > "$1/build.log" 2>&1 || { tail -30 "$1/build.log"; exit 1; }
    if [ "${TESTS:-gpu_}" != none ]; then
        echo "== tests"; timeout "${2:-240}" ./build/test_runner ${TESTS:-gpu_} > "$1/tests.log" 2>&1; echo "rc $?"
        grep -v "^PASS" "$1/tests.log" | grep -v "^  " | tail -8
    fi
}
