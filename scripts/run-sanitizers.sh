#!/usr/bin/env bash
# Builds the test suites with AddressSanitizer and UndefinedBehaviorSanitizer into build-sanitize/
# and runs them; any finding fails the run. With arguments, builds and runs only the named test
# executables (for example: scripts/run-sanitizers.sh spec_fuzz_test reliability_test).
# The registry is narrowed to its 33 linear, preset and spec-file combinations
# (MIRAS_REGISTRY_FULL=OFF) to keep the sanitized build short; set MIRAS_SANITIZE_FULL=1 to
# sanitize all 136.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# -O1 without debug information keeps the instrumented build shorter than RelWithDebInfo; the
# AddressSanitizer documentation suggests -O1 or higher for reasonable run time.
flags="-O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"
full=OFF
if [ "${MIRAS_SANITIZE_FULL:-0}" = 1 ]; then full=ON; fi
cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE= -DMIRAS_BUILD_BENCH=OFF -DMIRAS_REGISTRY_FULL="$full" \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
if [ $# -eq 0 ]; then
  cmake --build build-sanitize -j "$(nproc)"
  ctest --test-dir build-sanitize --output-on-failure -j "$(nproc)"
else
  cmake --build build-sanitize -j "$(nproc)" --target "$@"
  for target in "$@"; do
    echo "== $target" >&2
    "build-sanitize/tests/$target" --gtest_brief=1
  done
fi
