"""A demo that trains visibly in a few minutes on a laptop CPU and stops by itself.

    python -m wav2pix_jax.main --config=configs/demo.py --workdir=workdirs/demo
    tensorboard --logdir=workdirs/demo     # or look at workdirs/demo/samples/*.png

The built-in synthetic_talking_faces dataset (8 voices with their cartoon faces, generated from
a seed into input.data_dir on first use, ~3 s) and a narrower model than the paper's.
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
  """Returns base.py on the synthetic dataset, with about 1/4 of the widths."""
  config = _sibling("base").get_config()
  config.batch_size = 16  # ~10 steps per epoch of the 168 synthetic training clips
  config.num_train_steps = 700  # ~70 epochs, 3-5 minutes on 2 CPU cores; identities emerge by the end

  config.model.embed_dim = 64  # speech embedding size
  config.model.encoder_channels = (16, 32, 64, 128, 256)  # 5 blocks: 8000 samples -> 8 steps
  config.model.encoder_hidden = (128,)  # one hidden dense layer
  config.model.classifier_hidden = 64  # speaker classifier width
  config.model.g_base_channels = 32  # generator widths 256-128-64-32
  config.model.d_base_channels = 32  # discriminator widths 32-64-128-256

  config.optim.g.learning_rate = 4e-4  # 4x the paper's: a visible result within the demo's budget

  config.input.dataset = "synthetic_talking_faces"  # generated from a seed, no downloads
  config.input.manual_dir = ""  # the synthetic builder needs no raw data
  config.input.audio_samples = 8_000  # 0.5 s windows (the synthetic clips are 1.25 s)

  config.log.every_steps = 25  # a progress line every ~7 s
  config.log.image_every_steps = 100  # a face grid every ~30 s (TensorBoard + samples/*.png)
  config.log.checkpoint_every_steps = 250  # checkpoints on 250, 500 and the end
  config.log.max_checkpoints = 2  # keep two
  config.log.num_images = 8  # faces per grid
  return config
