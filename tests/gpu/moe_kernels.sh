set -uo pipefail
R=/tmp/mp; mkdir -p $R
if ! ldconfig -p | grep -q libcjson; then mkdir -p /tmp/cj; for f in .devdeps/*.deb; do dpkg -x "$f" /tmp/cj; done; ln -sf libcjson.so.1 /tmp/cj/usr/lib/x86_64-linux-gnu/libcjson.so; export CPPFLAGS="-I/tmp/cj/usr/include" LDFLAGS="-L/tmp/cj/usr/lib/x86_64-linux-gnu -Wl,-rpath,/tmp/cj/usr/lib/x86_64-linux-gnu"; fi
make -j16 all bench > $R/build.log 2>&1 || { tail -20 $R/build.log; exit 1; }
timeout 200 ncu --clock-control none --metrics gpu__time_duration.sum,launch__grid_size -k 'regex:k_moe|linear_|quantize|rmsnorm' --launch-count 24 ./build/bench_moe 1 > $R/ncu_moe.txt 2>&1; echo "ncu rc $?"
grep -E "^  [a-zA-Z_].*\(|gpu__time_duration|launch__grid_size" $R/ncu_moe.txt | sed -E 's/\(LinearParams\)//; s/, Context.*//' | paste - - - | awk '{printf "%-60s grid %-8s %s us\n", $1" "$2, $(NF-3), $NF}' | head -30
cp $R/ncu_moe.txt $OUT/
