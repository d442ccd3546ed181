#!/usr/bin/env bash
# An A/B of recipe arms over seeds, seed-major (every arm's seed 0, then every arm's seed 1, ...),
# so an interrupted campaign still compares the arms on the seeds it reached. Each run is
# scripts/seeds.sh's (model and data-order seed, all checkpoints kept, resumable): rerun the same
# command to go on where it stopped.
#
#     DATA=/path/to/tfds STEPS=4200 RUNS=/path/to/runs bash scripts/arms_seeds.sh
#     ARMS="fast score_sn projection" SEEDS="0 1 2" ...
#
# Arms (each fast.py as it is plus its flags; the arms screened in results/arms before fast.py took
# adversarial weight 1 ran at 0.1: EXTRA=--config.loss.adversarial=0.1 reruns them as they were):
# fast (as it is), score_sn (D's score layer spectrally normalised), projection
# (projection-conditioned D with SN score and projection layers), joint (the joint 1x1 layer of
# d_joint_channels=64); issue 22's: hinge, logistic (the adversarial objective), lecam (MAGVIT v2's
# pairing: non-saturating losses, LeCam 0.001, its means decaying by 0.999), expression (fer's
# expression KL in G's loss, weight 10), expression_features (fer's features as a perceptual loss,
# weight 10), low_pass_l1 (L1 of 4 x 4 block means), low_l1 (L1 weight 30 instead of 100), noise (a
# noise input of 16 values beside the embedding), noise_low_l1 (the noise input with L1 weight 30),
# adv01 (adversarial weight 0.1: fast.py before it took base.py's 1, results/arms/adv01), adv1
# (adversarial weight 1, what fast.py has now, so the same runs as fast; at 0.1 the GAN term was
# ~1.5 % of G's loss at the end of a run), adv1_l1_10 (adversarial weight 1 and L1 weight 10, the
# two terms about equal).
#
# Each run's final model is what the issue judges: evaluate it on all of validation with
#     python -m wav2pix_jax.evaluate --workdir=$RUNS/<arm>/seed<N> --checkpoint=latest
# and summarise an arm with scripts/seed_summary.py over its seeds' report.json files; the arms side
# by side (the per-lever table; --step=N compares them at any step from the periodic evaluation):
#     python scripts/arms_table.py --runs=$RUNS --out=$RUNS/table.md
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
    hinge) echo "--config.loss.gan=hinge" ;;
    logistic) echo "--config.loss.gan=logistic" ;;
    lecam)
      echo "--config.loss.gan=logistic --config.loss.lecam=0.001 --config.loss.lecam_decay=0.999"
      ;;
    expression) echo "--config.loss.expression=10.0" ;;
    expression_features) echo "--config.loss.expression_features=10.0" ;;
    low_pass_l1) echo "--config.loss.l1_low_pass=4" ;;
    low_l1) echo "--config.loss.l1=30.0" ;;
    noise) echo "--config.model.noise_dim=16" ;;
    noise_low_l1) echo "--config.model.noise_dim=16 --config.loss.l1=30.0" ;;
    adv01) echo "--config.loss.adversarial=0.1" ;;
    adv1) echo "--config.loss.adversarial=1.0" ;;
    adv1_l1_10) echo "--config.loss.adversarial=1.0 --config.loss.l1=10.0" ;;
    *)
      echo "arms_seeds.sh: unknown arm '$1' (fast score_sn projection joint hinge logistic" \
        "lecam expression expression_features low_pass_l1 low_l1 noise noise_low_l1 adv01" \
        "adv1 adv1_l1_10)" >&2
      exit 2
      ;;
  esac
}

for arm in $ARMS; do arm_flags "$arm" > /dev/null; done  # an unknown arm fails before any run
for seed in $SEEDS; do
  for arm in $ARMS; do
    SEEDS="$seed" RUNS="$RUNS/$arm" EXTRA="$(arm_flags "$arm") ${EXTRA:-}" bash scripts/seeds.sh
  done
done
