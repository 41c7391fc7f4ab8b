#!/usr/bin/env bash
# The single place that installs what building, testing and training need.
# Debian packages only; non-interactive and idempotent. Used by README, .ci/run and developers.
#
#   scripts/install-deps.sh            # build + test dependencies (C++ and Python reference side)
#   scripts/install-deps.sh --minimal  # C++ build + test only (no python3-torch)
set -euo pipefail

minimal=0
for arg in "$@"; do
  case "$arg" in
    --minimal) minimal=1 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "install-deps.sh: unknown option '$arg'" >&2; exit 2 ;;
  esac
done

packages=(
  g++ cmake ninja-build meson pkg-config git xz-utils python3
  libeigen3-dev libdnnl-dev libsentencepiece-dev sentencepiece libxsimd-dev
  doctest-dev nlohmann-json3-dev libbenchmark-dev
  clang-14 libclang-rt-14-dev  # the libFuzzer harnesses (tests/fuzz, the fuzz leg of scripts/test.sh)
  # taskmoe-server (tools/server) and its tests: HTTP library, a real client, the nginx scale-out
  # test, the load test and the web page's headless-browser test.
  libcpp-httplib-dev python3-requests nginx wrk chromium chromium-driver python3-selenium
  # The Python module (python/): pybind11, headers, pip install . into a venv, pytest.
  python3-dev python3-pybind11 pybind11-dev python3-venv python3-setuptools python3-wheel python3-pip
  python3-pytest python3-numpy
)
if [ "$minimal" = 0 ]; then
  # The PyTorch reference model, its trainer and the golden-fixture generator (tools/train).
  # libopenblas0-pthread: without it Debian's torch falls back to the reference BLAS (~20x slower).
  packages+=(python3-torch python3-numpy python3-sentencepiece python3-matplotlib libopenblas0-pthread)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" = 0 ]; then
  echo "install-deps.sh: all ${#packages[@]} packages already installed"
  exit 0
fi

sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
echo "install-deps.sh: installing ${missing[*]}"
$sudo apt-get install -y --no-install-recommends "${missing[@]}" || {
  # A stale package list is the usual cause; refresh once and retry.
  $sudo apt-get update
  $sudo apt-get install -y --no-install-recommends "${missing[@]}"
}
