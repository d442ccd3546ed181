"""Model-free face metrics: detection, identity, Frechet distance, expressivity, retrieval.

Everything here works on uint8 RGB images [N, H, W, 3] of any size and uses only dlib and the two
models shipped by `face_recognition_models` (68-point landmarks, 128-d face-embedding ResNet),
loaded lazily once per process.

Detection setting (measured on real YouTubers faces resized to 64x64 vs uniform noise): dlib's HOG
frontal detector cannot see faces smaller than ~80 px, so every image is first resized (bicubic) so
that its longer side is `DETECTION_SIZE` = 128 px, then detected with `UPSAMPLE` = 0 extra pyramid
levels. On 120 real 64x64 faces of the two shared speakers this detects 100 % (vs 55 % at 64 px
without upsampling) and 0 % of noise images; 128 px + 0 upsampling is also ~4x cheaper than 64 px +
2 upsamplings, which gives the same rate. All landmarks, boxes and embeddings refer to that resized
image.

Embeddings: where no face is detected, the whole image is used as the face rectangle, the 68-point
predictor is run inside it and the descriptor computed from those landmarks, so every image gets an
embedding (identity and Frechet distance are then defined on every image, as a face classifier
applied to every generated image would be). `FaceAnalysis.detected` tells which ones were real
detections; expressivity uses detected faces only, since fallback landmarks are not meaningful.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import numpy as np
from PIL import Image

DETECTION_SIZE = 128  # longer image side (px) the detector sees; see the module docstring
UPSAMPLE = 0  # dlib detector pyramid up-samplings at DETECTION_SIZE
EMBED_DIM = 128
NUM_LANDMARKS = 68
# iBUG 68-point scheme, 0-indexed: inner lip 60..67;
# upper inner lip 61, 62, 63 faces lower 67, 66, 65.
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))
OUTER_EYE_CORNERS = (36, 45)


def model_file(name: str) -> str:
  """Path of a model file shipped by the `face_recognition_models` package.

  Found without importing the package: its __init__ imports `pkg_resources`, which setuptools 82
  removed and which Python 3.12+ virtualenvs do not have at all.
  """
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top

  spec = importlib.util.find_spec("face_recognition_models")
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError(
        "the dlib metrics need the face-recognition-models package: "
        "pip install face-recognition-models"
    )
  path = os.path.join(list(spec.submodule_search_locations)[0], "models", name)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: missing from the face-recognition-models package")
  return path


@functools.lru_cache(maxsize=1)
def _models():
  """(detector, shape predictor, face recogniser), loaded once on first use."""
  import dlib  # pylint: disable=g-import-not-at-top

  detector = dlib.get_frontal_face_detector()
  predictor = dlib.shape_predictor(model_file("shape_predictor_68_face_landmarks.dat"))
  recogniser = dlib.face_recognition_model_v1(
      model_file("dlib_face_recognition_resnet_model_v1.dat")
  )
  return detector, predictor, recogniser


def check_images(images: np.ndarray, name: str = "images") -> np.ndarray:
  """Validates a uint8 RGB batch [N, H, W, 3] and returns it as a C-contiguous numpy array."""
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise ValueError(
        f"{name} must be uint8 RGB in [0, 255], got dtype {images.dtype}; "
        "convert images in [-1, 1] with "
        "np.clip((x + 1) * 127.5, 0, 255).round().astype(np.uint8)"
    )
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"{name} must have shape [N, H, W, 3], got {images.shape}")
  if images.shape[0] == 0:
    raise ValueError(f"{name} is empty: need at least one image")
  return np.ascontiguousarray(images)


def resize_for_detection(image: np.ndarray, size: int = DETECTION_SIZE) -> np.ndarray:
  """Bicubic resize of one uint8 RGB image so that its longer side is `size` px."""
  h, w = image.shape[:2]
  scale = size / max(h, w)
  new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
  if (new_h, new_w) == (h, w):
    return np.ascontiguousarray(image)
  return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BICUBIC))


@dataclasses.dataclass(frozen=True)
class FaceAnalysis:
  """Per-image dlib results; coordinates are in the detection-sized image (see module docstring)."""

  detected: np.ndarray  # bool [N]: the frontal detector found a face
  boxes: np.ndarray  # int [N, 4] (left, top, right, bottom); the full image where not detected
  landmarks: np.ndarray  # float32 [N, 68, 2] (x, y) from the 68-point predictor inside `boxes`
  embeddings: np.ndarray  # float32 [N, 128] dlib face descriptors

  @property
  def detection_rate(self) -> float:
    return float(np.mean(self.detected))


def analyze_faces(images: np.ndarray) -> FaceAnalysis:
  """Detects, landmarks and embeds the face in each image (the highest-scoring one if several)."""
  import dlib  # pylint: disable=g-import-not-at-top

  images = check_images(images)
  detector, predictor, recogniser = _models()
  n = images.shape[0]
  detected = np.zeros([n], bool)
  boxes = np.zeros([n, 4], np.int64)
  landmarks = np.zeros([n, NUM_LANDMARKS, 2], np.float32)
  embeddings = np.zeros([n, EMBED_DIM], np.float32)
  for i, image in enumerate(images):
    image = resize_for_detection(image)
    rects, scores, _ = detector.run(image, UPSAMPLE)
    if len(rects):
      rect = rects[int(np.argmax(scores))]
      detected[i] = True
    else:
      rect = dlib.rectangle(0, 0, image.shape[1] - 1, image.shape[0] - 1)
    shape = predictor(image, rect)
    boxes[i] = rect.left(), rect.top(), rect.right(), rect.bottom()
    landmarks[i] = [(p.x, p.y) for p in shape.parts()]
    embeddings[i] = np.asarray(recogniser.compute_face_descriptor(image, shape), np.float32)
  return FaceAnalysis(detected=detected, boxes=boxes, landmarks=landmarks, embeddings=embeddings)


def detect_faces(images: np.ndarray) -> np.ndarray:
  """bool [N]: whether dlib's frontal detector finds a face (detection only, no embedding)."""
  images = check_images(images)
  detector = _models()[0]
  return np.array([len(detector(resize_for_detection(im), UPSAMPLE)) > 0 for im in images], bool)


def detection_rate(images: np.ndarray) -> float:
  """The paper's metric: share of images in which a face is detected.

  The 68-point predictor then runs.
  """
  return float(np.mean(detect_faces(images)))


def face_embeddings(images: np.ndarray) -> np.ndarray:
  """float32 [N, 128] dlib face descriptors.

  The full image is the face box where none is detected.
  """
  return analyze_faces(images).embeddings


# ----------------------------------------------------------------------------- identity


@dataclasses.dataclass(frozen=True)
class CentroidClassifier:
  """Nearest class centroid in the (Euclidean) dlib embedding space."""

  centroids: np.ndarray  # float32 [num_classes, D]

  def predict(self, embeddings: np.ndarray) -> np.ndarray:
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.ndim != 2 or embeddings.shape[1] != self.centroids.shape[1]:
      raise ValueError(f"embeddings must be [N, {self.centroids.shape[1]}], got {embeddings.shape}")
    d2 = ((embeddings[:, None, :] - self.centroids[None, :, :]) ** 2).sum(-1)
    return np.argmin(d2, axis=1)


def fit_identity_classifier(
    embeddings: np.ndarray, labels: np.ndarray, num_classes: int
) -> CentroidClassifier:
  """Fits a nearest-centroid speaker classifier on embeddings of REAL training faces."""
  embeddings = np.asarray(embeddings, np.float32)
  labels = np.asarray(labels)
  if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
    raise ValueError(
        f"need embeddings [N, D] and labels [N], got {embeddings.shape} and {labels.shape}"
    )
  missing = [c for c in range(num_classes) if not np.any(labels == c)]
  if missing:
    raise ValueError(f"no training faces for class(es) {missing}: every speaker needs real faces")
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(
        f"labels must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]"
    )
  centroids = np.stack([embeddings[labels == c].mean(0) for c in range(num_classes)])
  return CentroidClassifier(centroids=centroids.astype(np.float32))


def identity_accuracy(
    predictions: np.ndarray, labels: np.ndarray, speaker_names: Sequence[str]
) -> dict:
  """Overall accuracy, chance level (1 / num_speakers) and one row per speaker."""
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  if predictions.shape != labels.shape:
    raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} differ in shape")
  correct = predictions == labels
  per_speaker = []
  for c, name in enumerate(speaker_names):
    mask = labels == c
    per_speaker.append(
        {
            "speaker": name,
            "num_examples": int(mask.sum()),
            "accuracy": float(correct[mask].mean()) if mask.any() else None,
        }
    )
  return {
      "accuracy": float(correct.mean()),
      "chance": 1.0 / len(speaker_names),
      "num_examples": int(labels.size),
      "per_speaker": per_speaker,
  }


# ----------------------------------------------------------------------------- the field's metrics
#
# The face-from-voice literature's metrics on face embeddings (here dlib's): cosine similarity to
# the speaker's real faces (SF2F, Vox2Face), retrieval recall@k of the true speaker among all
# (Speech2Face, SF2F), and 1:2 matching (Wen et al.). Every image counts, with the embedding of the
# full image where no face is detected (as for identity).

RECALL_KS = (1, 5, 10)


def cosine_similarities(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """float64 [N, M]: cosine similarity of each row of a [N, D] to each row of b [M, D]."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ValueError(f"need two embedding sets [N, D] with the same D, got {a.shape} and {b.shape}")
  a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
  b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
  return a @ b.T


def speaker_similarity(
    embeddings: np.ndarray,
    labels: np.ndarray,
    reference_embeddings: np.ndarray,
    reference_labels: np.ndarray,
    num_classes: int,
    ks: Sequence[int] = RECALL_KS,
) -> dict:
  """Cosine similarity, recall@k and 1:2 matching of images [N, D] against real reference faces.

  labels [N] and reference_labels [M] are class indices in [0, num_classes); every class needs
  reference faces. Returns:
  - cosine_similarity: mean over images of the mean cosine similarity to its class's reference
    faces; cosine_similarity_other_speakers: the same to the OTHER classes' faces (each other
    class weighted equally): what the wrong person's face scores (None with one class);
  - recall: [{"k", "recall", "chance"}]: share of images whose class's mean reference embedding
    is among the k most cosine-similar class means (a tie counts against); recall None (n/a)
    where k >= num_classes (trivially 1); chance = k / num_classes;
  - matching_1_2: is the image more cosine-similar to a real face of its class than to a real
    face of a random other class: the exact mean over all such pairs (a tie counts 1/2) and
    over other classes (equally weighted); chance 0.5 (None with one class).
  """
  emb = np.asarray(embeddings, np.float64)
  ref = np.asarray(reference_embeddings, np.float64)
  labels, reference_labels = np.asarray(labels), np.asarray(reference_labels)
  _check_similarity_labels(emb, labels, ref, reference_labels, num_classes)
  sims = cosine_similarities(emb, ref)  # [N, M]
  members = [reference_labels == c for c in range(num_classes)]
  # [N, C]: mean similarity of each image to each class's reference faces.
  per_class = np.stack([sims[:, m].mean(1) for m in members], axis=1)
  rows = np.arange(labels.size)
  own = per_class[rows, labels]
  other = None
  if num_classes > 1:
    other = float(((per_class.sum(1) - own) / (num_classes - 1)).mean())
  centroids = np.stack([ref[m].mean(0) for m in members])
  return {
      "cosine_similarity": float(own.mean()),
      "cosine_similarity_other_speakers": other,
      "recall": _recall_at_k(cosine_similarities(emb, centroids), labels, num_classes, ks),
      "matching_1_2": _matching_1_2(sims, labels, members) if num_classes > 1 else None,
  }


def _check_similarity_labels(emb, labels, ref, reference_labels, num_classes: int) -> None:
  """ValueError unless every embedding has a label in range and every class reference faces."""
  if labels.shape != emb.shape[:1] or reference_labels.shape != ref.shape[:1]:
    raise ValueError(
        f"need one label per embedding: {labels.shape} for {emb.shape}, "
        f"{reference_labels.shape} for {ref.shape}"
    )
  missing = [c for c in range(num_classes) if not np.any(reference_labels == c)]
  if missing:
    raise ValueError(f"no reference faces for class(es) {missing}")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"labels must lie in [0, {num_classes})")


def _recall_at_k(
    to_centroids: np.ndarray, labels: np.ndarray, num_classes: int, ks: Sequence[int]
) -> list[dict]:
  """recall@k from each image's cosine similarity to every class's mean reference [N, C]."""
  rows = np.arange(labels.size)
  # 1 = first; ties count against.
  rank = (to_centroids >= to_centroids[rows, labels][:, None]).sum(1)
  return [
      {
          "k": int(k),
          "recall": float(np.mean(rank <= k)) if k < num_classes else None,
          "chance": min(k / num_classes, 1.0),
      }
      for k in ks
  ]


def _matching_1_2(sims: np.ndarray, labels: np.ndarray, members: list[np.ndarray]) -> float:
  """1:2 matching from the similarities [N, M] to the reference faces (2 classes or more)."""
  scores = np.zeros(labels.size)
  for i, (s, c) in enumerate(zip(sims, labels)):
    positive = np.sort(s[members[c]])
    wins = []
    for o in range(len(members)):
      if o != c:
        negative = s[members[o]]
        # Pairs (positive, negative) with positive > negative, plus half the ties.
        below = np.searchsorted(positive, negative, side="right")
        tied = below - np.searchsorted(positive, negative, side="left")
        wins.append(
            ((positive.size - below).sum() + 0.5 * tied.sum()) / (positive.size * negative.size)
        )
    scores[i] = np.mean(wins)
  return float(scores.mean())


# ----------------------------------------------------------------------------- Frechet distance


def frechet_distance_from_stats(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
  """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), with S = sigma + eps * I."""
  import scipy.linalg  # pylint: disable=g-import-not-at-top

  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  eye = np.eye(mu1.shape[0])
  s1 = np.asarray(sigma1, np.float64) + eps * eye
  s2 = np.asarray(sigma2, np.float64) + eps * eye
  covmean = scipy.linalg.sqrtm(s1 @ s2)
  if np.iscomplexobj(covmean):
    # Round-off gives tiny imaginary parts; a large one means the sqrtm itself failed.
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(f"sqrtm failed: imaginary component {np.abs(covmean.imag).max():.3g}")
    covmean = covmean.real
  diff = mu1 - mu2
  return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean), 0.0))


def frechet_distance(
    embeddings_a: np.ndarray, embeddings_b: np.ndarray, eps: float = 1e-6
) -> float:
  """Frechet distance between Gaussians fitted to two embedding sets [N, D] (sample covariance).

  With N <= D (a few dozen faces vs 128 dims) the covariances are singular; `eps` on the diagonal
  keeps sqrtm well defined and shifts the distance only by O(sqrt(eps)) per dimension.
  """
  a, b = np.asarray(embeddings_a, np.float64), np.asarray(embeddings_b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ValueError(f"need two embedding sets [N, D] with the same D, got {a.shape} and {b.shape}")
  if a.shape[0] < 2 or b.shape[0] < 2:
    raise ValueError(
        f"need at least 2 embeddings per set for a covariance, got {a.shape[0]} and {b.shape[0]}"
    )
  return frechet_distance_from_stats(
      a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False), eps=eps
  )


# ----------------------------------------------------------------------------- expressivity


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
  """float32 [N]: mean inner-lip gap / outer-eye-corner distance.

  Inner-lip gap: points 62-64 vs 68-66, 1-indexed.
  """
  landmarks = np.asarray(landmarks, np.float32)
  if landmarks.ndim != 3 or landmarks.shape[1:] != (NUM_LANDMARKS, 2):
    raise ValueError(f"landmarks must be [N, 68, 2], got {landmarks.shape}")
  top = landmarks[:, [p for p, _ in INNER_LIP_PAIRS]]
  bottom = landmarks[:, [q for _, q in INNER_LIP_PAIRS]]
  gap = np.linalg.norm(bottom - top, axis=-1).mean(-1)
  left, right = OUTER_EYE_CORNERS
  face_size = np.linalg.norm(landmarks[:, right] - landmarks[:, left], axis=-1)
  return (gap / np.maximum(face_size, 1e-6)).astype(np.float32)


def loudness_db(
    waveforms: np.ndarray | Sequence[np.ndarray], floor_db: float = -100.0
) -> np.ndarray:
  """float32 [N]: RMS level in dB (re full scale 1.0) of each raw clip, floored at `floor_db`."""
  levels = []
  for w in waveforms:
    w = np.asarray(w)
    if np.issubdtype(w.dtype, np.integer):
      w = w.astype(np.float64) / 32768.0
    rms = np.sqrt(np.mean(np.square(w, dtype=np.float64))) if w.size else 0.0
    levels.append(max(20.0 * np.log10(max(rms, 1e-12)), floor_db))
  return np.asarray(levels, np.float32)


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
  """Pearson correlation; None where fewer than 3 points or either side is constant."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.shape != y.shape or x.ndim != 1:
    raise ValueError(f"need two 1-d arrays of the same length, got {x.shape} and {y.shape}")
  if x.size < 3 or np.std(x) == 0 or np.std(y) == 0:
    return None
  return float(np.corrcoef(x, y)[0, 1])


def expressivity(analysis: FaceAnalysis, loudness: np.ndarray) -> dict:
  """Mouth opening of the detected faces and its Pearson correlation with speech loudness (dB)."""
  loudness = np.asarray(loudness, np.float64)
  if loudness.shape != analysis.detected.shape:
    raise ValueError(
        f"loudness {loudness.shape} must have one value per image {analysis.detected.shape}"
    )
  mask = analysis.detected
  opening = mouth_opening(analysis.landmarks[mask])
  return {
      "num_faces": int(mask.sum()),
      "mouth_opening_mean": float(opening.mean()) if opening.size else None,
      "mouth_opening_std": float(opening.std()) if opening.size else None,
      "loudness_correlation": pearson(opening, loudness[mask]),
  }
