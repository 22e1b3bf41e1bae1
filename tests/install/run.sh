#!/bin/sh
# run.sh BUILD_DIR CC — `cmake --install` into a scratch prefix, then build
# consumer.c with nothing but `pkg-config --cflags --libs hushcall` from that
# prefix and run it against the installed shared library.
set -eu
build=$1 cc=$2
here=$(cd "$(dirname "$0")" && pwd)
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT

cmake --install "$build" --prefix "$prefix" >/dev/null
for f in include/hushcall/hushcall.h include/hushcall/tpm.h; do
  test -f "$prefix/$f" || { echo "not installed: $f" >&2; exit 1; }
done
libdir=$(find "$prefix" -name hushcall.pc -path '*/pkgconfig/*' -exec dirname {} \; | xargs dirname)
test -n "$libdir" || { echo "not installed: hushcall.pc" >&2; exit 1; }
flags=$(PKG_CONFIG_PATH="$libdir/pkgconfig" pkg-config --define-prefix --cflags --libs hushcall)
# shellcheck disable=SC2086 # the flags are words
"$cc" -std=c11 "$here/consumer.c" $flags -o "$prefix/consumer"
LD_LIBRARY_PATH="$libdir" "$prefix/consumer"
