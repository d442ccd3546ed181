#!/usr/bin/env bash
# Issue 14's benchmark for unseen voices: trains configs/demo_unseen.py (for at most MINUTES of
# training time), then reports the face attributes of the generated faces of never-heard speakers
# (test_unseen) and of held-out clips of the training speakers (test) to results/demo_unseen/.
#
#     bash scripts/demo_unseen.sh              # MINUTES=20 WD=workdirs/demo_unseen DATA=workdirs/tfds
#     SKIP_TRAIN=1 bash scripts/demo_unseen.sh # only the reports, of an existing workdir
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
MINUTES=${MINUTES:-20}
WD=${WD:-workdirs/demo_unseen}
DATA=${DATA:-$PWD/workdirs/tfds}
OUT=${OUT:-results/demo_unseen}
mkdir -p "$OUT"
if [ -z "${SKIP_TRAIN:-}" ]; then
  start=$(date +%s)
  "$PY" -m wav2pix_jax.main --config=configs/demo_unseen.py --workdir="$WD" \
    --config.input.data_dir="$DATA" --config.max_train_minutes="$MINUTES" 2>&1 \
    | grep -E "step [0-9]+/|Finished|error" || true
  echo "{\"commit\": \"$(git rev-parse --short HEAD)\", \"train_wall_s\": $(( $(date +%s) - start )), \"loadavg_after\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}" > "$OUT/train.json"
fi
cp "$WD/config.json" "$OUT/config.json"
for split in test_unseen test; do
  echo "== $split"
  "$PY" -m wav2pix_jax.attributes --workdir="$WD" --split="$split" --out="$OUT/$split" --data_dir="$DATA"
done
