#!/usr/bin/env bash
# The README's demo figures, over seeds: trains configs/demo.py with each seed, evaluates the
# `test` and `test_unseen` splits, and writes mean +- sd (scripts/seed_summary.py) and each run's
# wall time and CPU to results/demo_seeds/.
#
#     bash scripts/demo_seeds.sh            # SEEDS="0 1 2" by default; RUNS=workdirs/demo_seeds
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-0 1 2}
RUNS=${RUNS:-workdirs/demo_seeds}
OUT=${OUT:-results/demo_seeds}
mkdir -p "$OUT"
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "{\"commit\": \"$(git rev-parse --short HEAD)\", \"cpu\": \"$cpu\", \"cores\": $(nproc), \"runs\": [" > "$OUT/runs.json"
sep=""
for seed in $SEEDS; do
  wd="$RUNS/seed$seed"
  rm -rf "$wd"
  start=$(date +%s)
  "$PY" -m wav2pix_jax.main --config=configs/demo.py --workdir="$wd" --config.seed="$seed" \
    --config.input.shuffle_seed="$seed" 2>&1 | grep -E "step [0-9]+/|Finished|error" || true
  train_s=$(( $(date +%s) - start ))
  for split in test test_unseen; do
    "$PY" -m wav2pix_jax.evaluate --workdir="$wd" --split="$split" --out="$OUT/seed$seed/$split" > /dev/null
  done
  echo "$sep{\"seed\": $seed, \"train_wall_s\": $train_s, \"loadavg_after\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}" >> "$OUT/runs.json"
  sep=","
  echo "seed $seed: trained in $train_s s"
done
echo "]}" >> "$OUT/runs.json"
for split in test test_unseen; do
  echo "== $split"
  "$PY" scripts/seed_summary.py --out="$OUT/summary_$split.json" $(for s in $SEEDS; do echo "$OUT/seed$s/$split/report.json"; done)
done
