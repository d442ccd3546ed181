"""Clip-level metrics: does each clip get its own face, or every clip of a speaker the same one?

Identity metrics cannot tell a model that draws each speaker's blurred average face from one that
follows the clip. These can (pure numpy; `report` wires them into every row):

- within-speaker matching: is the face generated for a clip closer to that clip's real face than
  to the speaker's other real faces? (chance 0.5; the mean face scores exactly 0.5);
- within-speaker diversity: the spread of a row's faces around each speaker's centroid over that
  of the real faces (1: as varied as the real faces; 0: one face per speaker);
- sharpness: the variance of the Laplacian of the row's images over that of the real faces.

Several clips may share one real face (the YouTubers' 5 speech windows per frame): clips whose
real faces have equal pixels are the same face (`face_ids`), never "another clip" to match against.
"""

from __future__ import annotations

import numpy as np

# ITU-R BT.601 luma, as face_metrics' pixel metrics.
_LUMA = np.array([0.299, 0.587, 0.114], np.float64)


def face_ids(images: np.ndarray) -> np.ndarray:
  """int64 [N]: one id per distinct image (equal pixels, equal id), numbered by first appearance."""
  images = np.ascontiguousarray(images)
  seen: dict[bytes, int] = {}
  return np.array([seen.setdefault(im.tobytes(), len(seen)) for im in images], np.int64)


def pixel_vectors(images: np.ndarray) -> np.ndarray:
  """float32 [N, H*W*C]: uint8 images as flat vectors in [0, 1] (the pixel space's points)."""
  images = np.asarray(images)
  return (images.reshape(images.shape[0], -1) / np.float32(255)).astype(np.float32)


def within_speaker_matching(
    generated: np.ndarray, real: np.ndarray, speakers: np.ndarray, real_ids: np.ndarray
) -> float | None:
  """Share of (clip i, clip j) pairs of one speaker with different real faces for which clip i's
  generated face is closer (Euclidean) to its own real face than to clip j's (a tie counts 1/2).

  generated, real: [N, D] one vector per clip (embeddings or pixels); speakers, real_ids: [N]
  (`face_ids` of the real images: clips with the same id share a real face and are not pairs).
  The mean over a speaker's ordered pairs, averaged over the speakers with at least two distinct
  real faces; None where there is none. Chance 0.5; a face that is the same for every clip of a
  speaker scores exactly 0.5 (each pair's two orders sum to 1); generated == real scores 1.
  """
  generated, real = np.asarray(generated, np.float64), np.asarray(real, np.float64)
  speakers, real_ids = np.asarray(speakers), np.asarray(real_ids)
  _check_aligned(generated, real, speakers, real_ids)
  per_speaker = []
  for s in np.unique(speakers):
    clips = np.flatnonzero(speakers == s)
    _, first, face_of_clip, clips_per_face = np.unique(
        real_ids[clips], return_index=True, return_inverse=True, return_counts=True
    )
    if first.size < 2:
      continue
    faces = real[clips[first]]  # each distinct real face once; clip j counts clips_per_face times
    wins = pairs = 0.0
    for k, i in enumerate(clips):
      dist = ((faces - generated[i]) ** 2).sum(axis=1)  # same path for the own face and the others
      own = dist[face_of_clip[k]]
      weight = clips_per_face.astype(np.float64)
      weight[face_of_clip[k]] = 0.0  # clips with the same real face are not "another clip"
      wins += float(weight @ ((dist > own) + 0.5 * (dist == own)))
      pairs += float(weight.sum())
    per_speaker.append(wins / pairs)
  return float(np.mean(per_speaker)) if per_speaker else None


def spread(points: np.ndarray) -> float:
  """Mean Euclidean distance of `points` [N, D] to their centroid."""
  points = np.asarray(points, np.float64)
  return float(np.linalg.norm(points - points.mean(axis=0), axis=1).mean())


def within_speaker_diversity(
    generated: np.ndarray, real: np.ndarray, speakers: np.ndarray
) -> float | None:
  """Per speaker, `spread` of the generated vectors over the spread of the real ones (one vector
  per clip each, [N, D]), averaged over speakers with at least 2 clips and real faces that vary.

  1: as varied as the real faces; 0: one face per speaker (the mean face). None: no such speaker.
  """
  generated, real = np.asarray(generated, np.float64), np.asarray(real, np.float64)
  speakers = np.asarray(speakers)
  _check_aligned(generated, real, speakers)
  ratios = []
  for s in np.unique(speakers):
    clips = speakers == s
    real_spread = spread(real[clips]) if clips.sum() >= 2 else 0.0
    if real_spread > 0:
      ratios.append(spread(generated[clips]) / real_spread)
  return float(np.mean(ratios)) if ratios else None


def laplacian_variance(images: np.ndarray) -> np.ndarray:
  """float64 [N]: variance of the 4-neighbour Laplacian of each image's luma (0..255), over the
  interior pixels: high for sharp edges and texture, ~0 for a blurred or flat image."""
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3 or min(images.shape[1:3]) < 3:
    raise ValueError(f"need RGB images [N, H>=3, W>=3, 3], got {images.shape}")
  luma = images.astype(np.float64) @ _LUMA
  laplacian = (
      luma[:, :-2, 1:-1]
      + luma[:, 2:, 1:-1]
      + luma[:, 1:-1, :-2]
      + luma[:, 1:-1, 2:]
      - 4.0 * luma[:, 1:-1, 1:-1]
  )
  return laplacian.reshape(images.shape[0], -1).var(axis=1)


def sharpness(images: np.ndarray, real: np.ndarray) -> float | None:
  """Mean `laplacian_variance` of `images` over that of the `real` faces (same size): 1 = as sharp
  as the real faces, lower = blurrier. None where the real faces are all flat."""
  if np.asarray(images).shape[1:] != np.asarray(real).shape[1:]:
    raise ValueError(f"images {np.shape(images)} and real {np.shape(real)} differ in size")
  reference = float(laplacian_variance(real).mean())
  return float(laplacian_variance(images).mean()) / reference if reference > 0 else None


def row_metrics(
    images: np.ndarray,
    real: np.ndarray,
    speakers: np.ndarray,
    *,
    real_ids: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    real_embeddings: np.ndarray | None = None,
) -> dict:
  """One row's clip metrics: uint8 `images` [N, S, S, 3], one per clip, against the clips' `real`
  faces (same size) of `speakers` [N]; in dlib space too where `embeddings` and `real_embeddings`
  ([N, 128] each) are given (else those keys are None). real_ids: `face_ids(real)` if None."""
  real_ids = face_ids(real) if real_ids is None else real_ids
  pixels, real_pixels = pixel_vectors(images), pixel_vectors(real)
  out = {
      "matching_pixels": within_speaker_matching(pixels, real_pixels, speakers, real_ids),
      "diversity_pixels": within_speaker_diversity(pixels, real_pixels, speakers),
      "sharpness": sharpness(images, real),
      "matching_dlib": None,
      "diversity_dlib": None,
  }
  if embeddings is not None and real_embeddings is not None:
    out["matching_dlib"] = within_speaker_matching(embeddings, real_embeddings, speakers, real_ids)
    out["diversity_dlib"] = within_speaker_diversity(embeddings, real_embeddings, speakers)
  return out


def _check_aligned(*arrays: np.ndarray) -> None:
  lengths = [a.shape[0] for a in arrays]
  if len(set(lengths)) != 1:
    raise ValueError(f"one entry per clip expected in every array, got lengths {lengths}")
  if any(a.ndim != 2 for a in arrays[:2]):
    raise ValueError(f"vectors [N, D] expected, got {[a.shape for a in arrays[:2]]}")
