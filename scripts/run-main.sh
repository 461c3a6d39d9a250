#!/usr/bin/env bash
# Sets up the dependencies, builds the miras tool and runs the main job: every bundled golden file
# (linear models and TTT) checked in float64 and float32, then `miras recall`, the memorisation probes
# over every spec file in specs/ (table on stdout, results in a new folder under results/). It exits
# 1 when a probe fails, a spec file does not load or a threshold a spec declares fails.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
build/src/miras golden --precision both tests/data/golden/*.json
build/src/miras recall
