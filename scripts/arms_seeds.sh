#!/usr/bin/env bash
# An A/B of recipe arms over seeds, seed-major (every arm's seed 0, then every arm's seed 1, ...),
# so an interrupted campaign still compares the arms on the seeds it reached. Each run is
# scripts/seeds.sh's (model and data-order seed, all checkpoints kept, resumable): rerun the same
# command to go on where it stopped.
#
#     DATA=/path/to/tfds STEPS=4200 RUNS=/path/to/runs bash scripts/arms_seeds.sh
#     ARMS="fast score_sn projection" SEEDS="0 1 2" ...
#
# Arms (each fast.py plus its flags): fast (as it is), score_sn (D's score layer spectrally
# normalised), projection (projection-conditioned D with SN score and projection layers), joint
# (the joint 1x1 layer of d_joint_channels=64).
set -euo pipefail
cd "$(dirname "$0")/.."
ARMS=${ARMS:-fast score_sn projection}
SEEDS=${SEEDS:-0 1 2}
RUNS=${RUNS:-workdirs/arms}

arm_flags() {
  case "$1" in
    fast) ;;
    score_sn) echo "--config.model.d_score_sn=True" ;;
    projection) echo "--config.model.d_conditioning=projection --config.model.d_score_sn=True" ;;
    joint) echo "--config.model.d_joint_channels=64" ;;
    *) echo "arms_seeds.sh: unknown arm '$1' (fast score_sn projection joint)" >&2; exit 2 ;;
  esac
}

for arm in $ARMS; do arm_flags "$arm" > /dev/null; done  # an unknown arm fails before any run
for seed in $SEEDS; do
  for arm in $ARMS; do
    SEEDS="$seed" RUNS="$RUNS/$arm" EXTRA="$(arm_flags "$arm") ${EXTRA:-}" bash scripts/seeds.sh
  done
done
