"""Minimal widths for tests: a few seconds per step on a CPU; the synthetic dataset.

Tests set input.data_dir to a temporary directory (the dataset is generated there from its seed).
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  """Returns base.py shrunk to the smallest model that still has every layer."""
  config = base.get_config()
  config.batch_size = 4  # 2 per fake CPU device in tests
  config.num_train_steps = 3  # a few iterations

  config.model.embed_dim = 8  # tiny speech embedding
  config.model.encoder_channels = (4, 4, 8, 8, 8)  # 5 blocks: 1024 samples -> 1 time step
  config.model.encoder_hidden = (16,)  # one hidden dense layer
  config.model.classifier_hidden = 8  # tiny speaker classifier
  config.model.g_base_channels = 4  # generator widths 32-16-8-4
  config.model.d_base_channels = 4  # discriminator widths 4-8-16-32

  config.input.dataset = "synthetic_talking_faces"  # generated from a seed, no downloads
  config.input.manual_dir = ""  # the synthetic builder needs no raw data
  config.input.audio_samples = 1_024  # 64 ms windows: enough for the 5-block encoder
  config.input.num_workers = 0  # decode in the test process

  config.log.every_steps = 1  # log every step
  config.log.image_every_steps = 2  # an image grid on step 2 (and at the end)
  config.log.checkpoint_every_steps = 2  # a scheduled checkpoint on step 2 (and one at the end)
  config.log.max_checkpoints = 2  # keep two
  config.log.num_images = 4  # faces per grid

  config.eval.every_steps = 0  # no periodic evaluation (tests/test_periodic_eval.py turns it on)
  config.eval.max_examples = 6  # a handful of examples when it is on
  config.eval.dlib = False  # pixel-space metrics only (dlib can't see the synthetic cartoon faces)
  config.eval.reference_faces_per_speaker = 2  # mean faces from 2 training faces per speaker
  return config
