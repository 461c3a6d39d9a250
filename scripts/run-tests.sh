#!/usr/bin/env bash
# Sets up the dependencies, builds everything, builds the consumer example against the installed
# package, and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh

# The consumer example builds against the installed package, as a downstream project would.
rm -rf build/install build/consumer
cmake --install build --prefix build/install >/dev/null
cmake -S examples/consumer -B build/consumer -DCMAKE_PREFIX_PATH="$PWD/build/install" >/dev/null
cmake --build build/consumer -j "$(nproc)" >/dev/null
build/consumer/consumer

ctest --test-dir build --output-on-failure -j "$(nproc)"
