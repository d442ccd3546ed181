"""The paper's 128x128 variant: base.py with a bigger face (one more G/D stage)."""

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
  """Returns base.py with 128x128 faces."""
  config = _sibling("base").get_config()
  config.model.image_size = 128  # G: 4x4x1024 -> ... -> 128x128x3; D: one more stride-2 conv
  return config
