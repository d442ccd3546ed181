"""The demo on synthetic_voice_faces: can a model say something about a NEVER-HEARD voice's face?

    python -m wav2pix_jax.main --config=configs/demo_unseen.py --workdir=workdirs/demo_unseen
    python -m wav2pix_jax.attributes --workdir=workdirs/demo_unseen --split=test_unseen

configs/demo.py (same model, optimiser and losses) on 64 training speakers whose face attributes
follow their voices (data_prep/synthetic_voice_faces); 16 more are held out in test_unseen, where
wav2pix_jax.attributes measures each attribute of the generated faces against the truth, chance
and the mean face.
"""

import importlib.util
import os

import ml_collections


def _sibling(name: str):
  """Imports configs/<name>.py by path, so this file loads from any working directory."""
  spec = importlib.util.spec_from_file_location(
      f"wav2pix_configs_{name}", os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config() -> ml_collections.ConfigDict:
  """Returns demo.py on synthetic_voice_faces."""
  config = _sibling("demo").get_config()
  config.input.dataset = "synthetic_voice_faces"  # 64 + 16 speakers, faces follow voices (seeded)
  config.num_train_steps = 4_000  # ~100 epochs of the 640 training clips (16 per batch)
  config.log.checkpoint_every_steps = 1_000  # checkpoints every ~1,000 steps and at the end
  # No periodic evaluation: evaluate.py knows the pixel layout of synthetic_talking_faces only
  # (evaluate.face_layout), and its identity metric means little for 64 speakers with 2 clips
  # each in validation. The attribute report is wav2pix_jax.attributes (after training).
  config.eval.every_steps = 0  # off
  return config
