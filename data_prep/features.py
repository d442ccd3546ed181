"""The one record format shared by every Wav2Pix dataset builder (see DESIGN.md)."""

from typing import Optional, Sequence

import numpy as np
import tensorflow_datasets as tfds

SAMPLE_RATE = 16_000


def record_features(
    speakers: Optional[Sequence[str]], face_format: str = "jpeg", **extra
) -> tfds.features.FeaturesDict:
  """FeaturesDict of a speech/face record.

  `speakers` are the ClassLabel names, `extra` adds features.

  `speakers=None` leaves the ClassLabel names unset, for builders that only learn them from the
  data: set them in `_split_generators` with `self.info.features["speaker"].names = names`.
  """
  if speakers is not None and (len(set(speakers)) != len(speakers) or not speakers):
    raise ValueError(f"speaker names must be unique and non-empty, got {list(speakers)}")
  speaker_label = (
      tfds.features.ClassLabel()
      if speakers is None
      else tfds.features.ClassLabel(names=list(speakers))
  )
  return tfds.features.FeaturesDict(
      {
          "waveform": tfds.features.Tensor(shape=(None,), dtype=np.int16),
          "face": tfds.features.Image(shape=(None, None, 3), encoding_format=face_format),
          "speaker": speaker_label,
          "speaker_name": tfds.features.Text(),
          "clip_id": tfds.features.Text(),
          "frame": tfds.features.Scalar(dtype=np.int64),
          **extra,
      }
  )
