#!/usr/bin/env bash
# One recipe over several seeds, one run after another (each has the machine to itself): the
# model seed and the data-order seed both set to each seed. Every run resumes where it stopped
# (rerun the same command after an interruption; delete $RUNS/seed<N> to start one again), and
# keeps all its checkpoints, so later metrics can score any step.
#
#     DATA=/path/to/tfds bash scripts/seeds.sh             # configs/fast.py, seeds 0 1 2
#     SEEDS="0 1 2" CONFIG=configs/fast.py EXTRA="--config.model.d_joint_channels=64" \
#       RUNS=workdirs/joint DATA=... bash scripts/seeds.sh
#
# STEPS=N trains N steps with no time limit (a run that does not depend on how busy the machine
# is: configs/fast.py's 60 training minutes are ~4,200 steps on a quiet 2-core EPYC); without it
# the config's own limits apply. EXTRA: more flags for every run.
#
# EVAL=<split> then evaluates each run's final model (the latest checkpoint) on that whole split
# into $RUNS/seed<N>/eval/final_<split>/report.json (skipped where that report exists) and
# summarises the seeds (scripts/seed_summary.py: $RUNS/summary_<split>.json and the goals table
# $RUNS/table_<split>.md). README's results are
#
#     DATA=/path/to/tfds STEPS=4200 EVAL=validation RUNS=workdirs/final bash scripts/seeds.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CONFIG=${CONFIG:-configs/fast.py}
SEEDS=${SEEDS:-0 1 2}
RUNS=${RUNS:-workdirs/seeds}
read -r -a EXTRA_FLAGS <<< "${EXTRA:-}"
FLAGS=(--config.log.max_checkpoints=1000)
if [[ -n "${DATA:-}" ]]; then FLAGS+=(--config.input.data_dir="$DATA"); fi
if [[ -n "${STEPS:-}" ]]; then
  FLAGS+=(--config.num_train_steps="$STEPS" --config.max_train_minutes=0)
fi
mkdir -p "$RUNS"
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
for seed in $SEEDS; do
  wd="$RUNS/seed$seed"
  mkdir -p "$wd"
  echo "seeds.sh: seed $seed -> $wd ($(git rev-parse --short HEAD), $cpu, $(nproc) cores)"
  "$PY" -m wav2pix_jax.main --config="$CONFIG" --workdir="$wd" "${FLAGS[@]}" \
    --config.seed="$seed" --config.input.shuffle_seed="$seed" "${EXTRA_FLAGS[@]}" 2>&1 \
    | tee -a "$wd/train_log.txt"
done
if [[ -n "${EVAL:-}" ]]; then
  reports=()
  for seed in $SEEDS; do
    wd="$RUNS/seed$seed"
    out="$wd/eval/final_$EVAL"
    if [[ ! -f "$out/report.json" ]]; then
      "$PY" -m wav2pix_jax.evaluate --workdir="$wd" --split="$EVAL" --checkpoint=latest \
        --out="$out" ${DATA:+--data_dir="$DATA"} 2>&1 | tee "$wd/eval_final_$EVAL.txt"
    fi
    reports+=("$out/report.json")
  done
  "$PY" scripts/seed_summary.py --out="$RUNS/summary_$EVAL.json" --table="$RUNS/table_$EVAL.md" \
    "${reports[@]}"
fi
