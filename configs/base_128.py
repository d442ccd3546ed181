"""The paper's 128x128 variant: base.py with a bigger face (one more G/D stage)."""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  """Returns base.py with 128x128 faces."""
  config = base.get_config()
  config.model.image_size = 128  # G: 4x4x1024 -> ... -> 128x128x3; D: one more stride-2 conv
  return config
