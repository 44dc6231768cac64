# Sourced by the device scripts: the GPU machine has no package registry, so cJSON comes from
# the Debian packages `make devdeps` put in .devdeps/ (carried by the device tool), unpacked
# into /tmp/cj and handed to make through CPPFLAGS/LDFLAGS. Nothing happens where the system
# already has libcjson.
if ! ldconfig -p | grep -q libcjson; then
    mkdir -p /tmp/cj
    for f in .devdeps/*.deb; do dpkg -x "$f" /tmp/cj; done
    ln -sf libcjson.so.1 /tmp/cj/usr/lib/x86_64-linux-gnu/libcjson.so
    export CPPFLAGS="-I/tmp/cj/usr/include" LDFLAGS="-L/tmp/cj/usr/lib/x86_64-linux-gnu -Wl,-rpath,/tmp/cj/usr/lib/x86_64-linux-gnu"
fi
