"""The typed evaluation report: what report.json looks like, written and read back.

A `Report` holds definitions and settings (JSON objects as written), the speakers and its rows by
name (generated, fused_<k>, real, mean_face; `scoring.evaluate` computes them). Each `Row` has
the metrics computed for it, None where not computed: the paper's dlib metrics (`DlibMetrics`),
pixel-space metrics where the dataset's face layout is known (`PixelMetrics`), fer's expressions
(`Expressions`) and clip-level metrics (`ClipMetrics`).

`summary()` (readable lines), `scalars()` ({"eval/<row>/<metric>": value} for TensorBoard and
eval/history.jsonl), `to_json()` / `from_json()` (the report.json schema that results/*/report.json
and scripts/ read; reports written before a metric existed load with it None) and
`write(out_dir)`. The JSON layout is known here only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Sequence

REPORT_FILENAME = "report.json"


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
  # Face attributes read back from the faces (evaluation/attributes.py evaluate_attributes: each
  # attribute's error against chance and the mean face), on synthetic_voice_faces; else None.
  attributes: dict[str, Any] | None = None

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
    if self.attributes is not None:
      out["attributes"] = dict(self.attributes)
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
        attributes=d.get("attributes"),
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
