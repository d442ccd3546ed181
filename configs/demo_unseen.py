"""The demo on synthetic_voice_faces: can a model say something about a NEVER-HEARD voice's face?

    python -m wav2pix_jax.main --config=configs/demo_unseen.py --workdir=workdirs/demo_unseen
    python -m wav2pix_jax.attributes --workdir=workdirs/demo_unseen --split=test_unseen

configs/demo.py (same model, optimiser and losses) on 64 training speakers whose face attributes
follow their voices (data_prep/synthetic_voice_faces); 16 more are held out in test_unseen, where
wav2pix_jax.attributes measures each attribute of the generated faces against the truth, chance
and the mean face.
"""

import ml_collections

from configs import demo


def get_config() -> ml_collections.ConfigDict:
  """Returns demo.py on synthetic_voice_faces."""
  config = demo.get_config()
  config.input.dataset = "synthetic_voice_faces"  # 64 + 16 speakers, faces follow voices (seeded)
  config.num_train_steps = 4_000  # ~100 epochs of the 640 training clips (16 per batch)
  config.log.checkpoint_every_steps = 1_000  # checkpoints every ~1,000 steps and at the end
  # No periodic evaluation: its identity metric means little for 64 speakers with 2 clips each in
  # validation, and what this dataset is for, the attribute report on test_unseen, is
  # wav2pix_jax.attributes (after training).
  config.eval.every_steps = 0  # off
  return config
