#!/usr/bin/env bash
# Sets up the dependencies, builds the miras tool and runs the main job: every bundled golden file
# of the linear models checked in float64 and float32, then `miras recall`, the memorisation probes
# over every spec file in specs/ (table on stdout, results in a new folder under results/). It exits
# 1 when a probe fails, a spec file does not load or a threshold a spec declares fails.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
golden_files=()
for file in tests/data/golden/*.json; do
  case "$(basename "$file")" in ttt_*) ;; *) golden_files+=("$file") ;; esac
done
build/src/miras golden --precision both "${golden_files[@]}"
build/src/miras recall
