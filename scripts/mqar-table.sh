#!/usr/bin/env bash
# Trains the MQAR table of docs/benchmarks.md: six layers at (L, N) = (64, 4) and (128, 8), model
# width d = 64, two blocks, the default setting group of `miras train` (V = 256, 16384 training
# sequences, 8 epochs, learning rate 1e-2), evaluated every 64 steps so that the early stop at
# 0.99 ends a run soon after it gets there. The linear layers and softmax attention have 2 heads of
# size 32, as Zoology's DeltaNet at d = 64; the MLP memories (Titans, Moneta) keep their specs' 2
# heads of size 8 and a shorter run, because their reverse pass is the tape's (docs/training.md).
# Usage: scripts/mqar-table.sh [OUT] (default results/mqar-table); runs two trainings at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-results/mqar-table}"
miras="${MIRAS:-build/src/miras}"
[ -x "$miras" ] || { echo "error: $miras is not built; run scripts/build.sh first or set MIRAS" >&2; exit 2; }
mkdir -p "$out"

common="--task mqar --d-model 64 --layers 2 --eval-every 64 --no-plots --force"
runs=()
for point in "64 4" "128 8"; do
  set -- $point
  shape="--seq-len $1 --pairs $2"
  for spec in softmax_attention linear_attention deltanet gated_deltanet; do
    runs+=("$spec-L$1-N$2|specs/$spec.json $common $shape --heads 2 --head-dim 32")
  done
  # The same small heads as the MLP memories, for a comparison at equal head size.
  runs+=("deltanet_k8-L$1-N$2|specs/deltanet.json $common $shape --steps 300 --batch 32")
  for spec in titans moneta; do
    runs+=("$spec-L$1-N$2|specs/$spec.json $common $shape --steps 300 --batch 32")
  done
done

printf '%s\n' "${runs[@]}" | xargs -P "${MIRAS_JOBS:-2}" -I{} bash -c '
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
