"""Shared test helpers: configs loaded by path, with overrides, random batches of the right
shapes, and the scripts/ tools loaded as modules.

Tests import it as `helpers` (pytest puts tests/ on sys.path: rootdir-relative "prepend" imports).
"""

import importlib.util
import pathlib

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_SPEAKERS = 3


def load_script(name: str):
  """scripts/<name>.py as a module (scripts/ is not a package)."""
  spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(name: str, **overrides):
  """configs/<name>.py's get_config(), with dotted-key overrides ("optim.g.learning_rate": 1e-3)."""
  spec = importlib.util.spec_from_file_location(f"test_cfg_{name}", REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for key, value in overrides.items():
    node = config
    *path, last = key.split(".")
    for part in path:
      node = node[part]
    node[last] = value
  return config


def tiny_config(**overrides):
  """configs/tiny.py with overrides."""
  return load_config("tiny", **overrides)


def random_batch(
    config, batch_size: int = 4, seed: int = 0, num_speakers: int = NUM_SPEAKERS
) -> dict:
  """A host batch of `config`'s shapes: uniform waveforms and faces in [-1, 1], random speakers."""
  rng = np.random.default_rng(seed)
  s = config.model.image_size
  return {
      "waveform": rng.uniform(-1, 1, (batch_size, config.input.audio_samples)).astype(np.float32),
      "face": rng.uniform(-1, 1, (batch_size, s, s, 3)).astype(np.float32),
      "wrong_face": rng.uniform(-1, 1, (batch_size, s, s, 3)).astype(np.float32),
      "speaker": rng.integers(0, num_speakers, batch_size).astype(np.int32),
  }
