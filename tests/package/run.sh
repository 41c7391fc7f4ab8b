#!/usr/bin/env bash
# Packaging test: install taskmoe into a temporary prefix, then configure, build and run a
# consumer project that only knows the prefix (find_package(taskmoe CONFIG)). Also checks the
# pkg-config file.   usage: tests/package/run.sh [source dir] [work dir] [extra cmake args...]
set -euo pipefail
src="$(cd "${1:-$(dirname "$0")/../..}" && pwd)"
work="${2:-$(mktemp -d)}"
shift 2 2>/dev/null || true
rm -rf "$work" && mkdir -p "$work" && work="$(cd "$work" && pwd)"
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S "$src" -B "$work/build" "${gen[@]}" -DCMAKE_INSTALL_PREFIX="$work/prefix" \
  -DTASKMOE_BUILD_TESTS=OFF -DTASKMOE_BUILD_TOOLS=OFF -DTASKMOE_BUILD_EXAMPLES=OFF \
  -DTASKMOE_BUILD_BENCHMARKS=OFF "$@" >/dev/null
cmake --install "$work/build" >/dev/null
cmake -S "$src/tests/package" -B "$work/consumer" "${gen[@]}" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/consumer" -j2 >/dev/null
out="$("$work/consumer/consumer")"
echo "$out"
version="$(sed -n 's/^#define TASKMOE_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\)$/\2/p' "$src/include/taskmoe/version.hpp" | paste -sd.)"
case "$out" in "taskmoe $version "*) ;; *) echo "package test: expected version $version" >&2; exit 1 ;; esac
pc_version="$(PKG_CONFIG_PATH="$work/prefix/share/pkgconfig" pkg-config --modversion taskmoe)"
[ "$pc_version" = "$version" ] || { echo "package test: taskmoe.pc says $pc_version" >&2; exit 1; }
echo "package test: OK (cmake package and pkg-config, version $version)"
