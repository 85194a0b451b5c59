#!/usr/bin/env bash
# Installs the built library into a temporary prefix and builds and runs two consumers of it: one
# with CMake (find_package(chunkcache CONFIG REQUIRED)), one with a plain compiler command and
# `pkg-config --cflags --libs chunkcache` (as a Make or Meson build would).
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
