#!/usr/bin/env bash
# Every run of docs/scaling.md, through `examples/test_time_scaling.rs` with its recipe (400
# base steps, 3000 path and LoRA steps, batch 128, the toy reference's path and optimizer):
# the task families of `l2d::demo::task` that need serial computation per answer token, at two
# lengths and two base depths; the one-token tasks with a base trained for 3000 steps; and the
# quickstart's addition with the training noise's scale σ lowered from the paper's 64.
# All with `--seed 1` (their own bases, paths, training streams and 500 held-out problems):
# the example's default was chosen from these curves and its own run (seed 0) is reported
# apart, so nothing is chosen on the figures it reports.
#
#   scripts/scaling_search.sh [OUT_DIR]          (default target/scaling-search)
#   python3 scripts/scaling_table.py [OUT_DIR]   (the table of docs/scaling.md)
#
# Each run writes OUT_DIR/<name>.json (the curve), the full report and plot in OUT_DIR/<name>/
# and its log; a run whose curve exists is skipped, a failing one reported and passed over.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/scaling-search}
mkdir -p "$out"
cargo build --release --example test_time_scaling
bin=target/release/examples/test_time_scaling

run() {
  local name=$1
  shift
  if [[ -f "$out/$name.json" ]]; then
    echo "$name: done already"
    return
  fi
  echo "$name"
  if "$bin" --seed 1 --test-size 500 "$@" --json "$out/$name.json" --out-dir "$out/$name" \
    >"$out/$name.log" 2>&1; then
    tail -n 12 "$out/$name.log"
  else
    echo "$name failed:"
    tail -n 3 "$out/$name.log"
  fi
}

for setting in "modular-sum 4" "modular-sum 6" "permutation 5" "permutation 7" \
  "multiplication 2" "multiplication 3"; do
  read -r task digits <<<"$setting"
  for layers in 1 2; do
    run "$task-d$digits-l$layers" --task "$task" --digits "$digits" --layers "$layers"
  done
done
run modular-sum-d8-l1 --task modular-sum --digits 8 --layers 1
for setting in "modular-sum 4" "permutation 5"; do
  read -r task digits <<<"$setting"
  for layers in 1 2; do
    run "$task-d$digits-l$layers-base3000" --task "$task" --digits "$digits" \
      --layers "$layers" --base-steps 3000
  done
done
for sigma in 64 16 8 4 1; do
  run "addition-d6-l2-sigma$sigma" --task addition --digits 6 --layers 2 --no-lora \
    --noise-scale "$sigma"
done
