"""The one face-grid writer: rows of faces side by side, optionally labelled, as an image or PNG.

Training's samples (generated faces above the real ones), the evaluation grid (one band per
speaker, real and generated faces in pairs) and the attribute grid (each speaker's real face above
its generated one) are all `grid` calls; `save_png` writes one.
"""

from __future__ import annotations

import os
import pathlib
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from wav2pix_jax.serving import inference

LABEL_HEIGHT = 14  # px above a labelled row, for its label


def grid(
    rows: Sequence[np.ndarray],
    *,
    gap: int = 0,
    labels: Sequence[str] | None = None,
) -> np.ndarray:
  """uint8 [H, W, 3]: each row's faces left to right, rows top to bottom, on white.

  rows: batches [n_i, S, S, 3] of one face size (uint8, or float in [-1, 1]); a row may be
  shorter than the widest (white to its right). gap: px between faces and around the grid.
  labels: one text per row, drawn in LABEL_HEIGHT px above it.
  """
  rows = [_uint8(r) for r in rows]
  if labels is not None and len(labels) != len(rows):
    raise ValueError(f"{len(labels)} labels for {len(rows)} rows")
  size = rows[0].shape[1:3]
  if any(r.shape[1:3] != size for r in rows):
    raise ValueError(f"every face must be {size}, got {[r.shape[1:3] for r in rows]}")
  (h, w), label_h = size, 0 if labels is None else LABEL_HEIGHT
  cols = max(len(r) for r in rows)
  canvas = Image.new(
      "RGB",
      (cols * w + (cols + 1) * gap, len(rows) * (label_h + h + gap) + gap),
      (255, 255, 255),
  )
  draw = ImageDraw.Draw(canvas)
  y = gap
  for i, row in enumerate(rows):
    if labels is not None:
      draw.text((gap, y), str(labels[i]), fill=(0, 0, 0))
    y += label_h
    for j, face in enumerate(row):
      canvas.paste(Image.fromarray(face), (gap + j * (w + gap), y))
    y += h + gap
  return np.array(canvas)


def save_png(path: str | os.PathLike, image: np.ndarray) -> pathlib.Path:
  """Writes a uint8 [H, W, 3] image (a `grid`) as a PNG, making its folder; returns the path."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(image).save(path)
  return path


def _uint8(images: np.ndarray) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"faces must be [N, H, W, 3], got {images.shape}")
  return images if images.dtype == np.uint8 else inference.to_uint8(images)
