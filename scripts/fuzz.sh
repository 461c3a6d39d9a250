#!/usr/bin/env bash
# Builds the libFuzzer target of the spec parser with clang (AddressSanitizer and
# UndefinedBehaviorSanitizer on) into build-fuzz/ and runs it for SECONDS seconds (default 60) on
# fuzz/corpus plus the inputs it found before. Crashes are written to build-fuzz/findings/; once
# fixed, copy each one into fuzz/regressions/, which the test suite replays.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
flags="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g"
cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DMIRAS_BUILD_FUZZ=ON -DMIRAS_BUILD_TESTS=OFF -DMIRAS_BUILD_CLI=OFF -DMIRAS_BUILD_BENCH=OFF \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target spec_fuzzer
mkdir -p build-fuzz/corpus build-fuzz/findings
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# The first corpus directory receives new inputs; fuzz/corpus and fuzz/regressions only seed it.
build-fuzz/fuzz/spec_fuzzer build-fuzz/corpus fuzz/corpus fuzz/regressions \
  -dict=fuzz/spec.dict -max_len=4096 -timeout=10 -rss_limit_mb=4096 \
  -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix=build-fuzz/findings/
