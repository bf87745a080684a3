#!/bin/sh
# Build tincd and tinc 1.1 from the source tarball beside this script and
# install them into PREFIX (PREFIX/sbin/tincd, PREFIX/sbin/tinc), apart from
# the system's tincd.  `make tinc11` runs it; the end-to-end tests use the
# result (see README.md beside this script).
#
# Usage: sh build.sh PREFIX
#
# Idempotent: PREFIX appears only once the build has succeeded (the install
# goes to a staging directory first and is then renamed into place), so an
# interrupted build never leaves a half-installed tinc behind.  Nothing is
# downloaded: meson's fallback subprojects are turned off.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
tarball=$here/tinc-1.1pre18-940d15c46b.tar.gz
prefix=${1:?usage: sh build.sh PREFIX}
case $prefix in /*) ;; *) prefix=$(pwd)/$prefix ;; esac
case $prefix in /|*/..|*/../*) echo "build.sh: refusing PREFIX $prefix" >&2; exit 2 ;; esac

missing=
for tool in meson ninja cc pkg-config; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    echo "build.sh: cannot build tinc 1.1: missing$missing (Debian: apt install meson ninja-build gcc" \
        "pkg-config libssl-dev zlib1g-dev liblzo2-dev libncurses-dev libreadline-dev)" >&2
    exit 1
fi

work=$prefix.work
rm -rf "$work"
mkdir -p "$work"
log=$work/build.log
tar -xzf "$tarball" -C "$work"
start=$(date +%s)
echo "building tinc 1.1 into $prefix (log: $log)"
if ! {
    meson setup "$work/build" "$work/tinc-1.1pre18" --prefix="$prefix" --buildtype=release \
        --wrap-mode=nofallback -Ddocs=disabled -Dtests=disabled -Dsystemd=disabled -Dlz4=disabled \
        -Dminiupnpc=disabled &&
        ninja -C "$work/build" &&
        DESTDIR="$work/stage" meson install --no-rebuild -C "$work/build"
} >"$log" 2>&1; then
    tail -n 25 "$log" >&2
    echo "build.sh: the tinc 1.1 build failed; the whole log is in $log" >&2
    exit 1
fi
"$work/stage$prefix/sbin/tincd" --version | head -n 1
rm -rf "$prefix"
mv "$work/stage$prefix" "$prefix"
rm -rf "$work"
echo "tinc 1.1 built in $(($(date +%s) - start)) s: $prefix/sbin/tincd, $prefix/sbin/tinc"
