#!/usr/bin/env bash
# Installs the built library into a temporary prefix and builds and runs two consumers of it: one
# with CMake (find_package(chunkcache CONFIG REQUIRED)), one with a plain compiler command and
# `pkg-config --cflags --libs chunkcache` (as a Make or Meson build would), and the conformance
# kit's test again with `pkg-config ... chunkcache-testing`. The CMake consumer also
# builds a Backend of its own (tests/package/dir_backend.cc), runs the conformance kit on it
# (chunkcache::testing) and builds my_chunkcache, the chunkcache tool with that backend's scheme
# dir:// registered (chunkcache::tool), which this script then drives.
# Usage: package_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build_dir=$1
source_dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null

echo "== CMake consumer"
cmake -S "$source_dir/tests/package" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/build" >/dev/null
"$work/build/consumer"

echo "== my_chunkcache: the tool (chunkcache::tool) with the consumer's dir:// backend"
fail() { echo "my_chunkcache: $*" >&2; exit 1; }
tool=$work/build/my_chunkcache
store=$work/store
backend="--backend=dir://$store"
# About 100 kB of JSON, stored in chunks of 4 KiB: several files per entry.
{ printf '['; seq -s, 1 20000 | tr -d '\n'; printf ']'; } > "$work/doc.json"
out=$("$tool" "$backend" --chunk_size=4096 put k "$work/doc.json") || fail "put failed: $out"
echo "$out"
[[ "$out" == "stored k: $(stat -c %s "$work/doc.json") bytes -> "*" chunks "* ]] ||
  fail "put printed: $out"
out=$("$tool" "$backend" verify k) || fail "verify failed: $out"
echo "$out"
[[ "$out" == "ok: k: "*"checksum ok, decoded" ]] || fail "verify printed: $out"
out=$("$tool" "$backend" inspect k) || fail "inspect failed: $out"
[[ "$out" == *"manifest:       cc:{k} ("* && "$out" == *"checksum ok:    yes"* ]] ||
  fail "inspect printed: $out"
"$tool" "$backend" get k -o "$work/got.json" || fail "get failed"
cmp -s "$work/doc.json" "$work/got.json" || fail "get returned other bytes"
# A chunk file damaged on disk: verify says corrupt (2); a missing key is 3, named with the store.
chunk=$(find "$store" -name '*.v' -size +2k | head -n 1)
printf 'XXXX' | dd of="$chunk" bs=1 seek=200 conv=notrunc status=none
set +e
out=$("$tool" "$backend" verify k); code=$?
[[ $code == 2 && "$out" == "corrupt: k: "* ]] || fail "verify of a damaged chunk: $code $out"
out=$("$tool" "$backend" verify absent); code=$?
set -e
[[ $code == 3 && "$out" == "missing: absent: no such key \"absent\" (read cc:{absent} on dir://$store)" ]] ||
  fail "verify of a missing key: $code $out"
echo "put, verify, inspect, get, a damaged chunk and a missing key: as expected"

echo "== The Backend conformance kit (chunkcache::testing) on the consumer's own backend"
"$work/build/dir_backend_conformance"

echo "== pkg-config consumer"
pc=$(find "$work/prefix" -name chunkcache.pc)
[[ -n "$pc" ]] || { echo "chunkcache.pc was not installed" >&2; exit 1; }
export PKG_CONFIG_PATH
PKG_CONFIG_PATH=$(dirname "$pc")
flags=$(pkg-config --cflags --libs chunkcache)
echo "pkg-config --cflags --libs chunkcache: $flags"
# The flags must point into the prefix installed above, not where the build was configured for.
[[ "$flags" == *"-I$work/prefix/"* ]] || { echo "include dir is not in the prefix" >&2; exit 1; }
# shellcheck disable=SC2086  # the flags are words
"${CXX:-c++}" -o "$work/pc_consumer" "$source_dir/tests/package/main.cc" $flags
"$work/pc_consumer"
echo "== pkg-config consumer of the conformance kit (chunkcache-testing)"
flags=$(pkg-config --cflags --libs chunkcache-testing)
echo "pkg-config --cflags --libs chunkcache-testing: $flags"
# shellcheck disable=SC2086  # the flags are words
"${CXX:-c++}" -o "$work/pc_conformance" "$source_dir/tests/package/dir_backend_conformance.cc" \
  "$source_dir/tests/package/dir_backend.cc" $flags
"$work/pc_conformance"
