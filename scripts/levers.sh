#!/usr/bin/env bash
# Issue 10's small-data levers, A/B on the real data: configs/fast.py as it is ("fast") and with
# one lever each, same seed and the same training minutes, one run after another (each has the
# machine to itself). Writes each run's evaluation history, config and training log (the
# trainer's lines of its console) to results/levers/<arm>/, then a table (each run at the last step all reached, and at its end) and
# the time-to-quality figure (scripts/plot_quality.py; needs matplotlib: pip install -e .[plots]).
#
#     DATA=/path/to/tfds bash scripts/levers.sh      # MINUTES=20 ARMS="fast diffaug r1 ..."
#
# CONFIG (default configs/fast.py) and EXTRA (more flags for every run) try it small, e.g.
# CONFIG=configs/tiny.py EXTRA="--config.eval.every_steps=1" MINUTES=0.2.
#
# ARMS="sn_torch floor_division into_encoder train_mode": configs/authors.py's behaviours, each
# alone on fast.py.
# A lever wins where it beats "fast" on the same minutes; one run per arm is one seed: a
# difference smaller than fast's own step-to-step wobble (README) is not a win.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
MINUTES=${MINUTES:-20}
RUNS=${RUNS:-workdirs/levers}
OUT=${OUT:-results/levers}
ARMS=${ARMS:-fast diffaug r1 resize_conv joint}  # ema: measured already (README)
CONFIG=${CONFIG:-configs/fast.py}
read -r -a EXTRA_FLAGS <<< "${EXTRA:-}"
DATA_FLAG=()
if [[ -n "${DATA:-}" ]]; then DATA_FLAG=(--config.input.data_dir="$DATA"); fi

lever() {
  case "$1" in
    fast) ;;
    diffaug) echo "--config.loss.diff_augment=color,translation,cutout" ;;
    r1) echo "--config.loss.r1=1.0" ;;
    resize_conv) echo "--config.model.g_upsample=resize_conv" ;;
    joint) echo "--config.model.d_joint_channels=64" ;;
    ema) echo "--config.optim.g.ema_decay=0.999" ;;
    # configs/authors.py's behaviours one at a time (issue 10 part 3: do they explain anything?)
    sn_torch) echo "--config.model.sn_init=torch" ;;
    floor_division) echo "--config.input.floor_division=True" ;;
    into_encoder) echo "--config.loss.adversarial_into_encoder=True" ;;
    train_mode) echo "--config.eval.train_mode=True" ;;
    *) echo "levers.sh: unknown arm '$1' (fast diffaug r1 resize_conv joint ema sn_torch" \
      "floor_division into_encoder train_mode)" >&2; exit 2 ;;
  esac
}

mkdir -p "$OUT"
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "{\"commit\": \"$(git rev-parse --short HEAD)\", \"cpu\": \"$cpu\", \"cores\": $(nproc)," \
  "\"minutes\": $MINUTES, \"arms\": \"$ARMS\"}" > "$OUT/runs.json"
specs=()
for arm in $ARMS; do
  flags=$(lever "$arm")
  wd="$RUNS/$arm"
  mkdir -p "$OUT/$arm"
  # A run resumes where it stopped: delete $RUNS/<arm> to start it again.
  # shellcheck disable=SC2086  # $flags: zero or one flag
  mkdir -p "$wd"
  "$PY" -m wav2pix_jax.main --config="$CONFIG" --workdir="$wd" "${DATA_FLAG[@]}" \
    --config.max_train_minutes="$MINUTES" $flags "${EXTRA_FLAGS[@]}" 2>&1 \
    | tee -a "$wd/console.log" | grep -E "step [0-9]+/|Finished|rror" || true
  grep "train.py:" "$wd/console.log" > "$OUT/$arm/train_log.txt" || true
  if [[ ! -s "$wd/eval/history.jsonl" ]]; then
    echo "levers.sh: arm '$arm' left no evaluations in $wd/eval/history.jsonl (its log:" \
      "$wd/console.log)" >&2
    exit 1
  fi
  cp "$wd/eval/history.jsonl" "$wd/config.json" "$OUT/$arm/"
  specs+=("$arm=$OUT/$arm/history.jsonl")
done
"$PY" scripts/plot_quality.py --out="$OUT/time_to_quality.png" \
  --title="$CONFIG and one lever each, $MINUTES training minutes" "${specs[@]}" \
  | tee "$OUT/table.md"
