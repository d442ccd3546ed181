"""The inputs of an evaluation (`scoring.evaluate`), checked and brought to one face size.

`prepare` checks the arrays (ValueError where they do not fit together), resizes the real and
reference faces to the generated size, and derives what every row's metrics need: each speaker's
mean reference face (the mean-face row), the identity classifiers' classes, the fused rows.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from PIL import Image

from wav2pix_jax.evaluation import face_metrics


def resize_batch(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Bicubic resize of a uint8 batch to (H, W); a no-op where the size already matches."""
  if images.shape[1:3] == size:
    return images
  return np.stack(
      [np.asarray(Image.fromarray(im).resize(size[::-1], Image.BICUBIC)) for im in images]
  )


def mean_faces(train_real: np.ndarray, train_speakers: np.ndarray, num_speakers: int) -> np.ndarray:
  """uint8 [num_speakers, H, W, 3]: the pixel-mean training face of each speaker."""
  train_speakers = np.asarray(train_speakers)
  means = []
  for s in range(num_speakers):
    faces = train_real[train_speakers == s]
    if not len(faces):
      raise ValueError(f"speaker {s} has no training faces: cannot build its mean face")
    means.append(np.clip(np.round(faces.astype(np.float64).mean(0)), 0, 255).astype(np.uint8))
  return np.stack(means)


@dataclasses.dataclass(frozen=True)
class Inputs:
  """`evaluate`'s inputs, checked and brought to the generated faces' size."""

  images: dict[str, np.ndarray]  # generated, real, mean_face: one image per held-out example
  fused: dict[int, tuple[np.ndarray, np.ndarray]]  # k: (faces, speakers), sorted by k
  train_real: np.ndarray  # the reference (training) faces
  means: np.ndarray  # [num_speakers, S, S, 3] each speaker's mean reference face
  classes: np.ndarray  # the speakers with reference faces, sorted
  class_index: np.ndarray  # each reference face's speaker as 0..len(classes)-1
  pitch: np.ndarray | None
  common: dict[str, Any]  # speakers, loudness, classes, speaker_names: every metric's arguments

  @property
  def fused_rows(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The fused rows in print order (faces, speakers by row name)."""
    return {f"fused_{k}": v for k, v in self.fused.items()}


def prepare(
    generated, real, speakers, loudness, train_real, train_speakers, speaker_names, pitch, fused
) -> Inputs:
  """Checks `evaluate`'s arguments (ValueError) and derives what every row's metrics need."""
  num_speakers = len(speaker_names)
  generated, real, speakers, loudness, train_real, train_speakers, pitch = _checked_inputs(
      generated, real, speakers, loudness, train_real, train_speakers, num_speakers, pitch
  )
  classes = _reference_classes(speakers, train_speakers, speaker_names)
  class_index = np.searchsorted(classes, train_speakers)  # reference labels as 0..len(classes)-1
  fused = _checked_fused(fused, classes, generated.shape[1:3])
  train_real, means, images = _row_images(
      generated, real, speakers, train_real, classes, class_index, num_speakers
  )
  return Inputs(
      images=images,
      fused=fused,
      train_real=train_real,
      means=means,
      classes=classes,
      class_index=class_index,
      pitch=pitch,
      common=dict(
          speakers=speakers, loudness=loudness, classes=classes, speaker_names=speaker_names
      ),
  )


def _checked_inputs(
    generated, real, speakers, loudness, train_real, train_speakers, num_speakers, pitch
):
  """`evaluate`'s arrays checked and converted; raises ValueError where they don't fit together."""
  generated = face_metrics.check_images(generated, "generated")
  real = face_metrics.check_images(real, "real")
  train_real = face_metrics.check_images(train_real, "train_real")
  speakers = np.asarray(speakers).astype(np.int64)
  train_speakers = np.asarray(train_speakers).astype(np.int64)
  n = generated.shape[0]
  if real.shape[0] != n or speakers.shape != (n,):
    raise ValueError(
        f"generated ({n}), real ({real.shape[0]}) and speakers {speakers.shape} must align"
    )
  if train_speakers.shape != (train_real.shape[0],):
    raise ValueError(
        f"train_speakers {train_speakers.shape} must have one entry per train_real face"
    )
  for name, labels in (("speakers", speakers), ("train_speakers", train_speakers)):
    if labels.min() < 0 or labels.max() >= num_speakers:
      raise ValueError(f"{name} must lie in [0, {num_speakers}) for {num_speakers} speaker_names")
  if loudness is not None:
    loudness = np.asarray(loudness, np.float64)
    if loudness.shape != (n,):
      raise ValueError(f"loudness {loudness.shape} must have one value per generated image ({n})")
  if pitch is not None:
    pitch = np.asarray(pitch, np.float64)
    if pitch.shape != (n,):
      raise ValueError(f"pitch {pitch.shape} must have one value per generated image ({n})")
  return generated, real, speakers, loudness, train_real, train_speakers, pitch


def _reference_classes(speakers, train_speakers, speaker_names) -> np.ndarray:
  """The speakers that have reference (training) faces, sorted: the identity classifiers' classes.

  Raises ValueError if an evaluated speaker has none.
  """
  classes = np.unique(train_speakers)
  missing = sorted(set(speakers.tolist()) - set(classes.tolist()))
  if missing:
    raise ValueError(
        f"no reference (training) faces for evaluated speaker(s) "
        f"{[speaker_names[m] for m in missing]}"
    )
  return classes


def _checked_fused(fused, classes, size) -> dict[int, tuple[np.ndarray, np.ndarray]]:
  """`evaluate`'s `fused`, checked, converted and sorted by k."""
  fused = dict(sorted((fused or {}).items()))
  for k, (faces, labels) in fused.items():
    faces = face_metrics.check_images(faces, f"fused[{k}]")
    labels = np.asarray(labels).astype(np.int64)
    if k < 2 or labels.shape != faces.shape[:1] or faces.shape[1:3] != size:
      raise ValueError(
          f"fused[{k}]: need k >= 2 and one speaker per face of the generated size, got "
          f"{faces.shape} faces and {labels.shape} speakers"
      )
    if set(labels.tolist()) - set(classes.tolist()):
      raise ValueError(f"fused[{k}]: speakers without reference faces")
    fused[k] = (faces, labels)
  return fused


def _row_images(generated, real, speakers, train_real, classes, class_index, num_speakers):
  """(reference faces at the generated size, [num_speakers, ...] mean faces, each row's images)."""
  size = generated.shape[1:3]
  train_real = resize_batch(train_real, size)
  means = np.zeros((num_speakers,) + train_real.shape[1:], np.uint8)
  means[classes] = mean_faces(train_real, class_index, len(classes))
  images = {
      "generated": generated,
      "real": resize_batch(real, size),
      "mean_face": means[speakers],
  }
  return train_real, means, images
