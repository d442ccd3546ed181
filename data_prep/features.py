"""The one record format shared by every Wav2Pix dataset builder (see DESIGN.md)."""

from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds

SAMPLE_RATE = 16_000


def record_features(speakers: Sequence[str], face_format: str = "jpeg", **extra) -> tfds.features.FeaturesDict:
  """FeaturesDict of a speech/face record; `speakers` are the ClassLabel names, `extra` adds features."""
  if len(set(speakers)) != len(speakers) or not speakers:
    raise ValueError(f"speaker names must be unique and non-empty, got {list(speakers)}")
  return tfds.features.FeaturesDict({
      "waveform": tfds.features.Tensor(shape=(None,), dtype=np.int16),
      "face": tfds.features.Image(shape=(None, None, 3), encoding_format=face_format),
      "speaker": tfds.features.ClassLabel(names=list(speakers)),
      "speaker_name": tfds.features.Text(),
      "clip_id": tfds.features.Text(),
      "frame": tfds.features.Scalar(dtype=np.int64),
      **extra,
  })
