#!/usr/bin/env bash
# Trains the MQAR table of docs/benchmarks.md: six layers at (L, N) = (64, 4) and (128, 8), model
# width d = 64, two blocks, the default setting group of `miras train` (V = 256, 16384 training
# sequences, 8 epochs, learning rate 1e-2), evaluated every 64 steps so that the early stop at
# 0.99 ends a run soon after it gets there. The linear layers and softmax attention have 2 heads of
# size 32, as Zoology's DeltaNet at d = 64. The MLP memories (Titans, Moneta) train through the
# slower tape reverse pass (docs/training.md), so they keep their specs' 2 heads of size 8 and run
# 640 steps at (64, 4) and 320 steps of 32 sequences at (128, 8). DeltaNet runs the same at size 8. Softmax attention at
# (128, 8), whose tape pass costs T^2 per sequence, runs 640 steps.
# Usage: scripts/mqar-table.sh [OUT] (default results/mqar-table); runs two trainings at a time
# (MIRAS_JOBS). A run whose results.json exists in OUT is kept, and MIRAS_SKIP lists run names to leave out.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-results/mqar-table}"
miras="${MIRAS:-build/src/miras}"
[ -x "$miras" ] || { echo "error: $miras is not built; run scripts/build.sh first or set MIRAS" >&2; exit 2; }
mkdir -p "$out"

common="--task mqar --d-model 64 --layers 2 --eval-every 64 --no-plots --force"
runs=()
# The longest runs first, so that two at a time finish close together.
small="--seq-len 64 --pairs 4 --steps 640"
for spec in moneta titans; do runs+=("$spec-L64-N4|specs/$spec.json $common $small"); done
runs+=("deltanet_k8-L64-N4|specs/deltanet.json $common $small")
small="--seq-len 128 --pairs 8 --steps 320 --batch 32"
for spec in moneta titans; do runs+=("$spec-L128-N8|specs/$spec.json $common $small"); done
runs+=("deltanet_k8-L128-N8|specs/deltanet.json $common $small")
for point in "64 4" "128 8"; do
  set -- $point
  shape="--seq-len $1 --pairs $2"
  for spec in softmax_attention linear_attention deltanet gated_deltanet; do
    budget=""
    if [ "$spec" = softmax_attention ] && [ "$1" = 128 ]; then budget="--steps 640"; fi
    runs+=("$spec-L$1-N$2|specs/$spec.json $common $shape --heads 2 --head-dim 32 $budget")
  done
done

todo=()
for run in "${runs[@]}"; do
  name="${run%%|*}"
  [ -f "$out/$name/results.json" ] && continue
  case " ${MIRAS_SKIP:-} " in *" $name "*) continue ;; esac
  todo+=("$run")
done

[ ${#todo[@]} -eq 0 ] || printf '%s\n' "${todo[@]}" | xargs -P "${MIRAS_JOBS:-2}" -I{} bash -c '
  name="${1%%|*}"; arguments="${1#*|}"
  if "$2" train $arguments --out "$3/$name" > "$3/$name.log" 2>&1; then echo "done $name"; else echo "FAILED $name (see $3/$name.log)"; fi
' _ {} "$miras" "$out"

echo
printf '%-28s %10s %10s %12s %12s\n' run "best acc" "at step" "tokens/s" "layer share"
for log in "$out"/*.log; do
  name=$(basename "$log" .log)
  best=$(sed -n 's/^best: lr [^,]*, test accuracy \([0-9.]*\) at step \([0-9]*\).*/\1 \2/p' "$log")
  speed=$(sed -n 's/^training: \([0-9]*\) tokens\/s; of the step time \([0-9.]*\)%.*/\1 \2%/p' "$log")
  printf '%-28s %10s %10s %12s %12s\n' "$name" ${best:-- -} ${speed:-- -}
done
