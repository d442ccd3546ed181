"""Face metrics in pixel space, for datasets whose face layout is known in advance (the synthetic
cartoon faces, which dlib's detector does not see): pixel vectors for identity, the mouth opening
and the brow height measured in the layout's boxes, and their within-speaker correlations."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from wav2pix_jax.evaluation import face_metrics

# ---------------------------------------------------------------------- pixel space (known layout)
#
# For datasets whose face layout is known in advance (the synthetic cartoon faces, which dlib's
# detector does not see): identity as the nearest per-speaker mean training face in pixel space,
# and the mouth opening measured directly in a box that holds every speaker's mouth.

Box = tuple  # (top, bottom, left, right) in pixels, bottom/right exclusive

# Mouth-interior membership of a pixel: 1 at luma <= DARK_LUMA[0] (the interior is ~30), 0 at
# luma >= DARK_LUMA[1] (lips, skin, noses and beards are brighter), linear in between.
DARK_LUMA = (30.0, 70.0)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _crop(images: np.ndarray, box: Box) -> np.ndarray:
  top, bottom, left, right = box
  h, w = images.shape[1:3]
  if not (0 <= top < bottom <= h and 0 <= left < right <= w):
    raise ValueError(f"box {box} (top, bottom, left, right) does not fit images of {h}x{w}")
  return images[:, top:bottom, left:right]


def pixel_vectors(images: np.ndarray, box: Box | None = None) -> np.ndarray:
  """float32 [N, D]: the (cropped) pixels of each image, 0..255, flattened."""
  images = face_metrics.check_images(images)
  if box is not None:
    images = _crop(images, box)
  return images.reshape(images.shape[0], -1).astype(np.float32)


def mouth_opening_px(images: np.ndarray, box: Box) -> np.ndarray:
  """float32 [N]: height in pixels of the dark mouth interior inside `box`.

  Per row, the mean over the box's columns of the interior membership (see DARK_LUMA); summed over
  rows. A blurry half-open mouth counts fractionally, so this is continuous for generated faces.
  """
  crop = _crop(face_metrics.check_images(images), box).astype(np.float32)
  luma = crop @ _LUMA
  lo, hi = DARK_LUMA
  membership = np.clip((hi - luma) / (hi - lo), 0.0, 1.0)
  return membership.mean(axis=2).sum(axis=1).astype(np.float32)


def within_group(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
  """`values` minus the mean of its group (e.g. speaker): what varies within each group."""
  values, groups = np.asarray(values, np.float64), np.asarray(groups)
  out = values.copy()
  for g in np.unique(groups):
    out[groups == g] -= values[groups == g].mean()
  return out


def mouth_expressivity(
    opening: np.ndarray, loudness: np.ndarray, speakers: np.ndarray | None = None
) -> dict:
  """Mouth opening (px) of every image and its Pearson correlation with speech loudness (dB).

  With `speakers`, also the correlation within speakers (both sides minus their per-speaker means):
  expression beyond identity; 0 or None for any per-speaker constant face (the mean-face row).
  """
  opening, loudness = np.asarray(opening, np.float64), np.asarray(loudness, np.float64)
  if opening.shape != loudness.shape:
    raise ValueError(f"opening {opening.shape} and loudness {loudness.shape} must align")
  result = {
      "num_faces": int(opening.size),
      "mouth_opening_mean": float(opening.mean()),
      "mouth_opening_std": float(opening.std()),
      "loudness_correlation": face_metrics.pearson(opening, loudness),
  }
  if speakers is not None:
    result["loudness_correlation_within_speaker"] = face_metrics.pearson(
        within_group(opening, speakers), within_group(loudness, speakers)
    )
  return result


# Eyebrow height: in each column of the brow boxes, the softmin-weighted row centroid of luma (the
# eyebrow is the darkest thing there, drawn darker than any hair); weights
# exp(-(luma - column min) / BROW_SOFTMIN_LUMA).
BROW_SOFTMIN_LUMA = 3.0


def brow_height_px(images: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
  """float32 [N]: eyebrow height in pixels above the bottom of the brow boxes.

  Mean over boxes and columns. Per column of each box, the row centroid of the darkest pixels
  (softmin of luma, BROW_SOFTMIN_LUMA), so a blurry generated eyebrow gives a continuous position.
  """
  images = face_metrics.check_images(images)
  heights = []
  for box in boxes:
    luma = _crop(images, box).astype(np.float32) @ _LUMA  # [N, rows, cols]
    weights = np.exp(-(luma - luma.min(axis=1, keepdims=True)) / BROW_SOFTMIN_LUMA)
    rows = np.arange(luma.shape[1], dtype=np.float32)[None, :, None]
    centroid = (weights * rows).sum(axis=1) / weights.sum(axis=1)  # [N, cols], 0 = top row
    heights.append(luma.shape[1] - 0.5 - centroid)  # 0 = centre of the bottom row
  return np.concatenate(heights, axis=1).mean(axis=1).astype(np.float32)


def brow_expressivity(
    height: np.ndarray, pitch: np.ndarray, speakers: np.ndarray | None = None
) -> dict:
  """Eyebrow height (px) of every image and its Pearson correlation with each clip's pitch.

  The pitch as e.g. a shift in semitones; with `speakers`, also within speakers (both sides minus
  their per-speaker means).
  """
  height, pitch = np.asarray(height, np.float64), np.asarray(pitch, np.float64)
  if height.shape != pitch.shape:
    raise ValueError(f"height {height.shape} and pitch {pitch.shape} must align")
  result = {
      "num_faces": int(height.size),
      "brow_height_mean": float(height.mean()),
      "brow_height_std": float(height.std()),
      "pitch_correlation": face_metrics.pearson(height, pitch),
  }
  if speakers is not None:
    result["pitch_correlation_within_speaker"] = face_metrics.pearson(
        within_group(height, speakers), within_group(pitch, speakers)
    )
  return result
