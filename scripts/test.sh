#!/usr/bin/env bash
# THE test command (README, .ci/run). Runs every check CI runs, in order of cost:
#   1. single header is current (tools/amalgamate.py --check)
#   2. CMake + ninja, -Wall -Wextra -Werror, ctest; every header compiled on its own; the server's
#      nginx, browser and load-smoke tests
#   3. CMake, ASan + UBSan (-fno-sanitize-recover=all), ctest
#   4. CMake, ThreadSanitizer: the concurrency, translator and thread-pool tests (oneDNN OFF: its
#      libgomp threads are not instrumented and would report false races)
#   5. CMake, tests compiled against single_include/, oneDNN and SentencePiece OFF (fallbacks), ctest
#   6. meson build + meson test (-Werror)
#   7. packaging: install to a temporary prefix, find_package(taskmoe CONFIG) from a consumer
#   8. the PyTorch reference and BLEU scorer tests (tools/train/tests; torch tests skip without it)
#   9. the Python module: pip install --no-build-isolation . into build/venv (as the README says),
#      pytest python/tests against build/werror's CLIs, and the reference's exporter check through
#      the module (tools/train/tests/test_module.py). The C API (taskmoe_c, its C test and the C
#      example compared with taskmoe-translate) is built and run by ctest in legs 2, 3 and 6.
# Build directories live under build/ (gitignored). Uses ccache when installed. Stops at the first
# failure.   usage: scripts/test.sh [-j N]
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=2
if [ "${1:-}" = "-j" ] && [ -n "${2:-}" ]; then jobs="$2"; fi

launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
start_all=$SECONDS

step() {  # step NAME COMMAND...
  local name="$1"; shift
  local t0=$SECONDS
  echo "==> $name"
  "$@"
  echo "==> $name: ok ($((SECONDS - t0)) s)"
}

cmake_leg() {  # cmake_leg BUILD_DIR CMAKE_ARGS...
  local dir="$1"; shift
  # Tools and examples everywhere (their CLI tests run in each leg); benchmarks only where a leg
  # asks for them (-DTASKMOE_BUILD_BENCHMARKS=ON): they add build time, not test coverage.
  cmake -S . -B "$dir" -G Ninja "${launcher[@]}" -DTASKMOE_BUILD_TOOLS=ON -DTASKMOE_BUILD_EXAMPLES=ON \
    -DTASKMOE_BUILD_BENCHMARKS=OFF -DTASKMOE_BUILD_C_API=ON "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
  ctest --test-dir "$dir" --output-on-failure -j "$jobs"
}

meson_leg() {
  if [ -d build/meson ]; then
    meson setup --reconfigure build/meson -Dwerror_tests=true -Dbenchmarks=false -Dcapi=true >/dev/null
  else
    meson setup build/meson -Dwerror_tests=true -Dbenchmarks=false -Dcapi=true >/dev/null
  fi
  ninja -C build/meson -j "$jobs"
  meson test -C build/meson --print-errorlogs --num-processes "$jobs"
}

step "single header is current" /usr/bin/python3 tools/amalgamate.py --check
# The server's heavy tests (nginx scale-out, headless Chromium, load smoke) run in this leg only.
step "cmake -Werror, each header alone" cmake_leg build/werror -DTASKMOE_WARNINGS_AS_ERRORS=ON \
  -DTASKMOE_BUILD_BENCHMARKS=ON -DTASKMOE_SERVER_HEAVY_TESTS=ON \
  -DTASKMOE_HEADER_CHECK=ON
sanitize_leg() {
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    cmake_leg build/sanitize -DTASKMOE_SANITIZE=ON -DTASKMOE_WARNINGS_AS_ERRORS=ON -DCMAKE_BUILD_TYPE=Debug
}
step "cmake asan+ubsan" sanitize_leg
tsan_leg() {
  cmake -S . -B build/tsan -G Ninja "${launcher[@]}" -DTASKMOE_TSAN=ON -DTASKMOE_WITH_ONEDNN=OFF \
    -DTASKMOE_WARNINGS_AS_ERRORS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTASKMOE_BUILD_TOOLS=OFF \
    -DTASKMOE_BUILD_EXAMPLES=OFF -DTASKMOE_BUILD_BENCHMARKS=OFF >/dev/null
  cmake --build build/tsan -j "$jobs" --target taskmoe_tests
  # halt_on_error: the first race fails the leg; second_deadlock_stack for lock-order reports.
  TSAN_OPTIONS="halt_on_error=1 abort_on_error=1 second_deadlock_stack=1" \
    build/tsan/tests/taskmoe_tests --source-file='*test_concurrency.cpp,*test_translator.cpp' \
    --test-case='*thread*,*parallel*,*concurren*,*many*,*several*'
  TSAN_OPTIONS="halt_on_error=1 abort_on_error=1" \
    build/tsan/tests/taskmoe_tests --source-file='*test_kernels.cpp' --test-case='*parallel*,gemm_packed_int8*'
}
step "cmake tsan (concurrency)" tsan_leg
step "cmake single header, no oneDNN, no SentencePiece" cmake_leg build/single-fallback \
  -DTASKMOE_SINGLE_HEADER_TESTS=ON -DTASKMOE_WITH_ONEDNN=OFF -DTASKMOE_WITH_SENTENCEPIECE=OFF \
  -DTASKMOE_WARNINGS_AS_ERRORS=ON -DTASKMOE_BUILD_C_API=OFF
step "meson" meson_leg
step "packaging" tests/package/run.sh . build/package
fuzz_leg() {
  # libFuzzer harnesses (tests/fuzz/README.md), clang + ASan + UBSan: build, run the committed
  # corpus and regressions once (ctest), then fuzz each harness for TASKMOE_FUZZ_SECONDS (default
  # 20, CI's share of its 25 minutes; fuzz longer by hand after changing a parser). A crash, a
  # leak, an input slower than 10 s or above 2 GB RSS fails the leg; the input is left in
  # build/fuzz/artifacts/. New corpus entries accumulate in build/fuzz/work/ (not committed).
  local dir=build/fuzz secs="${TASKMOE_FUZZ_SECONDS:-20}" cxx="${TASKMOE_FUZZ_CXX:-clang++-14}"
  if ! command -v "$cxx" >/dev/null; then
    echo "$cxx not found: scripts/install-deps.sh installs clang-14 and libclang-rt-14-dev"
    return 1
  fi
  cmake -S . -B "$dir" -G Ninja "${launcher[@]}" -DCMAKE_CXX_COMPILER="$cxx" -DTASKMOE_BUILD_FUZZERS=ON \
    -DTASKMOE_BUILD_TESTS=OFF -DTASKMOE_BUILD_TOOLS=OFF -DTASKMOE_BUILD_EXAMPLES=OFF \
    -DTASKMOE_BUILD_BENCHMARKS=OFF -DTASKMOE_INSTALL=OFF >/dev/null
  cmake --build "$dir" -j "$jobs"
  ctest --test-dir "$dir" --output-on-failure
  mkdir -p "$dir/artifacts"
  local h
  for h in tmoe safetensors config sentencepiece translate vocabulary_map; do
    local work="$dir/work/$h" log="$dir/fuzz_$h.log" dict=()
    mkdir -p "$work"
    if [ -f "tests/fuzz/dict/$h.dict" ]; then dict=(-dict="tests/fuzz/dict/$h.dict"); fi
    if ! ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$dir/tests/fuzz/fuzz_$h" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 "${dict[@]}" -artifact_prefix="$dir/artifacts/fuzz_$h-" \
        "$work" "tests/fuzz/corpus/$h" "tests/fuzz/regressions/$h" >"$log" 2>&1; then
      tail -n 80 "$log"
      echo "fuzz_$h: finding (input in $dir/artifacts/, log $log)"
      return 1
    fi
    echo "fuzz_$h: $(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)"
  done
}
step "fuzzers (libFuzzer, ${TASKMOE_FUZZ_SECONDS:-20} s each)" fuzz_leg
python_leg() {
  if ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
    echo "python3-torch is not installed: the reference-model tests will be skipped" \
         "(scripts/install-deps.sh installs it; --minimal does not)"
  fi
  /usr/bin/python3 -m unittest discover -s tools/train/tests -t tools/train/tests
}
step "python reference tests" python_leg
python_module_leg() {
  # Built once, by pip as a user would (README); setuptools keeps its objects in build/setuptools,
  # so a rerun without changes does not recompile. Warnings are errors here as in leg 2.
  [ -x build/venv/bin/python ] || /usr/bin/python3 -m venv --system-site-packages build/venv
  TASKMOE_WARNINGS_AS_ERRORS=1 build/venv/bin/pip install --no-build-isolation --no-index --no-deps -q .
  # TASKMOE_REQUIRE_ALL: a missing CLI or model fails instead of skipping.
  TASKMOE_REQUIRE_ALL=1 TASKMOE_TRANSLATE=build/werror/examples/taskmoe-translate \
    TASKMOE_CONVERT=build/werror/tools/taskmoe-convert \
    build/venv/bin/python -m pytest -q -rs -p no:cacheprovider python/tests
  # The exporter check needs the module: run the reference tests that use it with the venv.
  build/venv/bin/python -m unittest discover -s tools/train/tests -t tools/train/tests -p 'test_module.py'
}
step "python module (pip install, pytest) and exporter check" python_module_leg
echo "scripts/test.sh: all checks passed in $((SECONDS - start_all)) s"
