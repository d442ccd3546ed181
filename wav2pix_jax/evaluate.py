"""The paper's evaluation: face detection, identity, Frechet distance and expressivity, with reference rows.

Library: `evaluate(...)` -> a JSON-able report, `write_report`, `save_grid`. Every metric is computed
by `face_metrics` (dlib only, no learned model of ours), for three rows:

- "generated": the model's faces from held-out speech;
- "real": the real held-out faces paired with that speech (the ceiling);
- "mean_face": each speaker's pixel-mean training face, i.e. a "model" that only knows who speaks.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from wav2pix_jax import face_metrics

REPORT_FILENAME = "report.json"

DEFINITIONS = {
    "face_detection_rate": (
        "share of images in which dlib's frontal face detector finds a face (the 68-point landmark "
        f"predictor then runs); images resized to {face_metrics.DETECTION_SIZE} px, "
        f"{face_metrics.UPSAMPLE} up-samplings"
    ),
    "identity": (
        "accuracy of a nearest-centroid speaker classifier, fitted on dlib 128-d embeddings of the real "
        "training faces, applied to each image (full image as face box where none is detected); chance = "
        "1 / num_speakers"
    ),
    "frechet_distance": (
        "Frechet distance between Gaussians fitted to the row's dlib embeddings and to the real training "
        "faces' embeddings (eps = 1e-6 on the covariance diagonals); lower is closer"
    ),
    "expressivity": (
        "inner-lip gap (landmarks 62-64 vs 68-66) / outer-eye-corner distance on detected faces, and its "
        "Pearson correlation with the RMS level (dB) of the raw speech clip"
    ),
}

ROW_DESCRIPTIONS = {
    "generated": "faces generated from held-out speech",
    "real": "real held-out faces paired with that speech (ceiling)",
    "mean_face": "each speaker's pixel-mean training face (a model that only knows who is speaking)",
}


def _resize_batch(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
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


PIXEL_DEFINITIONS = {
    "pixel_identity": (
        "accuracy of a nearest-centroid speaker classifier in PIXEL space: each image's face box "
        "(the dataset's known layout) vs each speaker's mean real reference face in that box (the mean "
        "training face), Euclidean; chance = 1 / number of speakers with reference faces. For datasets "
        "with a known face layout (synthetic cartoon faces, which dlib does not detect)"
    ),
    "pixel_mouth": (
        "mouth opening measured directly in the dataset's known mouth box: height in px of the dark "
        "mouth interior (per row, mean membership luma <= 30 -> 1 .. >= 70 -> 0, summed over rows), on "
        "every image, and its Pearson correlation with the RMS level (dB) of the raw speech clip; "
        "'within_speaker': the same after subtracting each speaker's mean from both (expression beyond "
        "identity: None / ~0 for the mean-face row)"
    ),
    "pixel_brows": (
        "eyebrow height measured directly in the dataset's known eyebrow boxes: per column, the row "
        "centroid of the darkest pixels (softmin of luma, "
        f"{face_metrics.BROW_SOFTMIN_LUMA:g}), in px above the boxes' bottom, averaged over columns; on "
        "every image, and its Pearson correlation with each clip's pitch (the dataset's pitch_shift, "
        "semitones); 'within_speaker' as for the mouth"
    ),
}


def _reference_classes(train_speakers: np.ndarray) -> np.ndarray:
  """The speakers that have reference (training) faces, sorted: the identity classifiers' classes."""
  return np.unique(train_speakers)


def _identity(
    predicted_class: np.ndarray,
    classes: np.ndarray,
    speakers: np.ndarray,
    speaker_names: Sequence[str],
) -> dict:
  identity = face_metrics.identity_accuracy(classes[predicted_class], speakers, speaker_names)
  identity["chance"] = 1.0 / len(classes)
  identity["num_classes"] = int(len(classes))
  return identity


def _row(
    analysis: face_metrics.FaceAnalysis,
    *,
    speakers: np.ndarray,
    loudness: np.ndarray | None,
    classifier: face_metrics.CentroidClassifier,
    classes: np.ndarray,
    reference_embeddings: np.ndarray,
    speaker_names: Sequence[str],
) -> dict:
  identity = _identity(classifier.predict(analysis.embeddings), classes, speakers, speaker_names)
  for c, row in enumerate(identity["per_speaker"]):
    mask = speakers == c
    row["face_detection_rate"] = float(analysis.detected[mask].mean()) if mask.any() else None
  n = len(speakers)
  return {
      "face_detection_rate": analysis.detection_rate,
      "identity": identity,
      "frechet_distance": (
          face_metrics.frechet_distance(analysis.embeddings, reference_embeddings)
          if n >= 2
          else None
      ),
      "expressivity": None if loudness is None else face_metrics.expressivity(analysis, loudness),
  }


def _pixel_row(
    images: np.ndarray,
    *,
    speakers: np.ndarray,
    loudness: np.ndarray | None,
    classifier: face_metrics.CentroidClassifier,
    classes: np.ndarray,
    speaker_names: Sequence[str],
    layout: dict,
    pitch: np.ndarray | None = None,
) -> dict:
  predicted = classifier.predict(face_metrics.pixel_vectors(images, layout.get("face_box")))
  row = {"identity": _identity(predicted, classes, speakers, speaker_names)}
  if layout.get("mouth_box") is not None:
    opening = face_metrics.mouth_opening_px(images, layout["mouth_box"])
    row["mouth"] = (
        None if loudness is None else face_metrics.mouth_expressivity(opening, loudness, speakers)
    )
  if layout.get("brow_boxes") is not None and pitch is not None:
    height = face_metrics.brow_height_px(images, layout["brow_boxes"])
    row["brows"] = face_metrics.brow_expressivity(height, pitch, speakers)
  return row


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
) -> dict:
  """The evaluation report (JSON-able): one row each for generated, real and mean-face images.

  generated: uint8 [N, S, S, 3] faces from held-out speech; real: uint8 [N, H, W, 3] the paired
  real faces (resized to S); speakers: int [N]; loudness: [N] RMS dB of each raw clip (or None to
  skip expressivity); train_real / train_speakers: real reference (training) faces and their
  speakers, for the identity classifiers, the Frechet reference set and the mean faces. Speakers
  with no reference face are left out of the classifiers' classes (chance = 1 / classes), but
  every evaluated speaker needs reference faces.

  dlib_metrics: the paper's dlib metrics (detection, identity, FD, expressivity; slow: ~0.1-0.3 s
  per image on a CPU). layout: {"face_box": (top, bottom, left, right) or None, "mouth_box": box or
  None, "brow_boxes": boxes or None} for datasets with a known face layout: adds a "pixel" entry to
  every row (PIXEL_DEFINITIONS). pitch: [N] each clip's pitch (the synthetic pitch_shift, semitones)
  for the eyebrow metric (with layout["brow_boxes"]), or None to skip it.
  cache: a dict kept between calls on the SAME real / reference faces (periodic evaluation): the
  dlib analyses of those are then computed once.
  """
  if not dlib_metrics and layout is None:
    raise ValueError("nothing to compute: dlib_metrics=False and no pixel layout")
  generated = face_metrics.check_images(generated, "generated")
  real = face_metrics.check_images(real, "real")
  train_real = face_metrics.check_images(train_real, "train_real")
  speakers = np.asarray(speakers).astype(np.int64)
  train_speakers = np.asarray(train_speakers).astype(np.int64)
  num_speakers = len(speaker_names)
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
  classes = _reference_classes(train_speakers)
  missing = sorted(set(speakers.tolist()) - set(classes.tolist()))
  if missing:
    raise ValueError(
        f"no reference (training) faces for evaluated speaker(s) "
        f"{[speaker_names[m] for m in missing]}"
    )
  class_index = np.searchsorted(classes, train_speakers)  # reference labels as 0..len(classes)-1

  size = generated.shape[1:3]
  train_real = _resize_batch(train_real, size)
  means = np.zeros((num_speakers,) + train_real.shape[1:], np.uint8)
  means[classes] = mean_faces(train_real, class_index, len(classes))
  images = {
      "generated": generated,
      "real": _resize_batch(real, size),
      "mean_face": means[speakers],
  }
  rows = {name: {"description": ROW_DESCRIPTIONS[name], "num_images": n} for name in images}
  definitions, settings = {}, {
      "image_size": list(size),
      "num_train_faces": int(train_real.shape[0]),
      "reference_speakers": [speaker_names[c] for c in classes],
  }
  common = dict(speakers=speakers, loudness=loudness, classes=classes, speaker_names=speaker_names)
  if dlib_metrics:
    cache = {} if cache is None else cache
    if "dlib" not in cache:
      # One analysis per speaker's mean face, then indexed: identical to analysing the N repeated images.
      cache["dlib"] = tuple(
          face_metrics.analyze_faces(x) for x in (train_real, images["real"], means[classes])
      )
    train_analysis, real_analysis, mean_analysis = cache["dlib"]
    classifier = face_metrics.fit_identity_classifier(
        train_analysis.embeddings, class_index, len(classes)
    )
    pick = np.searchsorted(classes, speakers)
    analyses = {
        "generated": face_metrics.analyze_faces(generated),
        "real": real_analysis,
        "mean_face": face_metrics.FaceAnalysis(
            detected=mean_analysis.detected[pick],
            boxes=mean_analysis.boxes[pick],
            landmarks=mean_analysis.landmarks[pick],
            embeddings=mean_analysis.embeddings[pick],
        ),
    }
    for name, analysis in analyses.items():
      rows[name].update(
          _row(
              analysis,
              classifier=classifier,
              reference_embeddings=train_analysis.embeddings,
              **common,
          )
      )
    definitions.update(DEFINITIONS)
    settings.update(
        {
            "detection_size": face_metrics.DETECTION_SIZE,
            "detector_upsample": face_metrics.UPSAMPLE,
            "embedding": "dlib_face_recognition_resnet_model_v1 (128-d)",
            "classifier": "nearest class centroid, Euclidean",
            "frechet_reference": "real training faces",
            "train_face_detection_rate": train_analysis.detection_rate,
        }
    )
  if layout is not None:
    layout = {
        "face_box": layout.get("face_box"),
        "mouth_box": layout.get("mouth_box"),
        "brow_boxes": layout.get("brow_boxes"),
    }
    pixel_classifier = face_metrics.fit_identity_classifier(
        face_metrics.pixel_vectors(train_real, layout["face_box"]), class_index, len(classes)
    )
    for name, batch in images.items():
      rows[name]["pixel"] = _pixel_row(
          batch, classifier=pixel_classifier, layout=layout, pitch=pitch, **common
      )
    definitions.update(
        {
            k: v
            for k, v in PIXEL_DEFINITIONS.items()
            if k != "pixel_brows" or (layout["brow_boxes"] is not None and pitch is not None)
        }
    )
    settings["pixel_layout"] = {
        k: None if v is None else [list(b) for b in v] if k == "brow_boxes" else list(v)
        for k, v in layout.items()
    }
  return {
      "definitions": definitions,
      "settings": settings,
      "speaker_names": list(speaker_names),
      "num_examples": n,
      "rows": rows,
  }


def write_report(report: dict, out_dir: str | os.PathLike) -> pathlib.Path:
  """Writes `report` as out_dir/report.json (atomically: no half-written file) and returns its path."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  path = out_dir / REPORT_FILENAME
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
  os.replace(tmp, path)
  return path


def save_grid(
    path: str | os.PathLike,
    *,
    real: np.ndarray,
    generated: np.ndarray,
    speakers: np.ndarray,
    speaker_names: Sequence[str],
    per_speaker: int = 8,
    gap: int = 4,
) -> pathlib.Path:
  """PNG grid: one band per speaker (name on top), each cell a real face next to its generated face."""
  generated = face_metrics.check_images(generated, "generated")
  size = generated.shape[1]
  real = _resize_batch(face_metrics.check_images(real, "real"), generated.shape[1:3])
  speakers = np.asarray(speakers)
  if not (real.shape[0] == generated.shape[0] == speakers.shape[0]):
    raise ValueError("real, generated and speakers must have the same length")
  present = [s for s in range(len(speaker_names)) if np.any(speakers == s)]
  label_h, cell_w = 14, 2 * size + gap
  cols = min(per_speaker, max(int(np.sum(speakers == s)) for s in present))
  width = cols * cell_w + (cols + 1) * gap
  height = len(present) * (label_h + size + gap) + gap
  canvas = Image.new("RGB", (width, height), (255, 255, 255))
  draw = ImageDraw.Draw(canvas)
  y = gap
  for s in present:
    draw.text((gap, y), str(speaker_names[s]), fill=(0, 0, 0))
    y += label_h
    for j, i in enumerate(np.flatnonzero(speakers == s)[:per_speaker]):
      x = gap + j * (cell_w + gap)
      canvas.paste(Image.fromarray(real[i]), (x, y))
      canvas.paste(Image.fromarray(generated[i]), (x + size + gap, y))
    y += size + gap
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  canvas.save(path)
  return path


# ----------------------------------------------------------------------------- workdir evaluation / CLI


def _centred(waveform: np.ndarray, window: int) -> np.ndarray:
  """The centred `window` of a clip: the samples the model sees in evaluation (audio.preprocess)."""
  start = max(0, (waveform.shape[0] - window) // 2)
  return waveform[start : start + window]


def face_layout(dataset: str) -> dict | None:
  """The known face layout of a dataset ({"face_box", "mouth_box"}) or None (real faces: dlib only)."""
  if dataset.split(":")[0].split("/")[0] != "synthetic_talking_faces":
    return None
  from data_prep.synthetic import synthetic_dataset_builder as syn  # pylint: disable=g-import-not-at-top

  return {"face_box": syn.FACE_BOX, "mouth_box": syn.MOUTH_BOX, "brow_boxes": syn.BROW_BOXES}


def _reference_faces(
    input_cfg, info, *, image_size: int, per_speaker: int, eval_split: str | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """Up to `per_speaker` real faces per speaker, evenly spaced over the train split (uint8 RGB).

  Speakers with no training face (held out of training, e.g. the synthetic "test_unseen" ones) take
  their reference faces from `eval_split` instead (their names are returned); speakers in neither
  get none and are left out of the identity classes.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from wav2pix_jax import inference  # pylint: disable=g-import-not-at-top
  from wav2pix_jax import input_pipeline  # pylint: disable=g-import-not-at-top

  train_split = input_cfg.train_split
  splits = [train_split] + ([eval_split] if eval_split and eval_split != train_split else [])
  faces, labels, from_eval = [], [], []
  covered: set[int] = set()
  for split in splits:
    source = tfds.data_source(
        info.name,
        split=split,
        data_dir=info.data_dir,
        decoders={"face": tfds.decode.SkipDecoding()},
    )
    speakers = np.array([int(source[i]["speaker"]) for i in range(len(source))], np.int64)
    for s in range(info.num_speakers):
      own = np.flatnonzero(speakers == s)
      if s in covered or own.size == 0:
        continue
      covered.add(s)
      if split != train_split:
        from_eval.append(info.speaker_names[s])
      keys = own[
          np.unique(np.linspace(0, own.size - 1, min(per_speaker, own.size)).round().astype(int))
      ]
      faces.extend(
          inference.to_uint8(input_pipeline.decode_face(source[int(k)]["face"], image_size))
          for k in keys
      )
      labels.extend([s] * len(keys))
  if not faces:
    raise ValueError(f"no real faces in split {train_split!r} for the identity classifier")
  return np.stack(faces), np.asarray(labels, np.int64), from_eval


@dataclasses.dataclass
class EvalSet:
  """Everything but the generated faces: held-out speech, paired real faces, reference faces."""

  dataset: str
  split: str
  speaker_names: list[str]
  waveforms: np.ndarray  # float32 [N, window]: preprocessed centred windows (the model's input)
  real: np.ndarray  # uint8 [N, S, S, 3]
  speakers: np.ndarray  # int64 [N]
  loudness: np.ndarray  # float32 [N]: RMS dB of the raw (not normalised) window
  train_real: np.ndarray  # uint8 [M, S, S, 3] reference faces
  train_speakers: np.ndarray  # int64 [M]
  reference_from_eval_split: list[str]  # speakers whose reference faces come from `split`
  layout: dict | None  # known face layout (pixel metrics) or None
  pitch: np.ndarray | None = None  # float64 [N]: each clip's pitch_shift where the dataset has one

  _cache: dict = dataclasses.field(default_factory=dict, repr=False)

  def evaluate(self, generated: np.ndarray, *, dlib_metrics: bool = True) -> dict:
    """The report for `generated` (uint8 [N, S, S, 3], one face per example, in order)."""
    report = evaluate(
        generated=generated,
        real=self.real,
        speakers=self.speakers,
        loudness=self.loudness,
        train_real=self.train_real,
        train_speakers=self.train_speakers,
        speaker_names=self.speaker_names,
        dlib_metrics=dlib_metrics,
        layout=self.layout,
        cache=self._cache,
        pitch=self.pitch,
    )
    report["settings"]["reference_faces_from_eval_split"] = list(self.reference_from_eval_split)
    return report


def load_eval_set(
    input_cfg,
    *,
    split: str,
    image_size: int,
    max_examples: int | None = None,
    train_faces_per_speaker: int = 100,
    batch_size: int = 32,
) -> EvalSet:
  """Reads `split` (the first `max_examples` records, centred windows) and the reference faces."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from wav2pix_jax import inference  # pylint: disable=g-import-not-at-top
  from wav2pix_jax import input_pipeline  # pylint: disable=g-import-not-at-top

  info = input_pipeline.get_dataset_info(input_cfg)
  waveforms, real, speakers = [], [], []
  for batch in input_pipeline.create_eval_iterator(
      input_cfg,
      split=split,
      batch_size=batch_size,
      image_size=image_size,
      max_examples=max_examples,
      process_index=0,
      process_count=1,
  ):
    mask = np.asarray(batch["mask"], bool)
    waveforms.append(np.asarray(batch["waveform"], np.float32)[mask])
    real.append(inference.to_uint8(batch["face"][mask]))
    speakers.append(np.asarray(batch["speaker"], np.int64)[mask])
  waveforms, real, speakers = (
      np.concatenate(waveforms),
      np.concatenate(real),
      np.concatenate(speakers),
  )
  # Loudness of the raw (not peak-normalised) window the model heard; the eval iterator reads
  # records in order, so record i is example i.
  source = tfds.data_source(
      info.name, split=split, data_dir=info.data_dir, decoders={"face": tfds.decode.SkipDecoding()}
  )
  loudness = face_metrics.loudness_db(
      [_centred(np.asarray(source[i]["waveform"]), waveforms.shape[1]) for i in range(len(real))]
  )
  pitch = None
  if len(real) and "pitch_shift" in source[0]:  # the synthetic clips' known pitch (eyebrow metric)
    pitch = np.array([float(source[i]["pitch_shift"]) for i in range(len(real))], np.float64)
  train_real, train_speakers, from_eval = _reference_faces(
      input_cfg, info, image_size=image_size, per_speaker=train_faces_per_speaker, eval_split=split
  )
  return EvalSet(
      dataset=info.name,
      split=split,
      speaker_names=list(info.speaker_names),
      waveforms=waveforms,
      real=real,
      speakers=speakers,
      loudness=loudness,
      train_real=train_real,
      train_speakers=train_speakers,
      reference_from_eval_split=from_eval,
      layout=face_layout(info.name),
      pitch=pitch,
  )


def evaluate_workdir(
    workdir: str,
    *,
    split: str = "test",
    out_dir: str | os.PathLike,
    step: int | None = None,
    max_examples: int | None = None,
    batch_size: int = 32,
    train_faces_per_speaker: int = 100,
    data_dir: str | None = None,
    grid_per_speaker: int = 8,
    dlib_metrics: bool = True,
) -> dict:
  """Generates faces for `split` with a trained workdir's generator, evaluates, writes report + grid."""
  from wav2pix_jax import inference  # pylint: disable=g-import-not-at-top
  from wav2pix_jax import input_pipeline  # pylint: disable=g-import-not-at-top

  try:
    generator = inference.load(workdir, step, batch_size=batch_size)
  except (AttributeError, KeyError, TypeError) as e:
    # A hand-edited config.json (a list, a missing section, a key like "__reduce__").
    raise ValueError(
        f"{workdir}: config.json does not describe a model ({type(e).__name__}: {e})"
    ) from None
  config = generator.config
  input_cfg = config.input
  if data_dir is not None:
    input_cfg = _with_overrides(input_cfg, data_dir=data_dir)
  info = input_pipeline.get_dataset_info(input_cfg)
  if info.num_speakers != generator.num_speakers or (
      generator.speaker_names and tuple(generator.speaker_names) != tuple(info.speaker_names)
  ):
    raise ValueError(
        f"the checkpoint was trained on speakers {generator.speaker_names} "
        f"({generator.num_speakers}) but dataset {info.name!r} has {list(info.speaker_names)}"
    )
  eval_set = load_eval_set(
      input_cfg,
      split=split,
      image_size=generator.image_size,
      max_examples=max_examples,
      train_faces_per_speaker=train_faces_per_speaker,
      batch_size=batch_size,
  )
  generated = generator.generate_preprocessed(eval_set.waveforms)
  report = eval_set.evaluate(generated, dlib_metrics=dlib_metrics)
  report["run"] = {
      "workdir": os.path.abspath(os.path.expanduser(str(workdir))),
      "step": generator.step,
      "dataset": info.name,
      "split": split,
      "train_faces_per_speaker": train_faces_per_speaker,
  }
  write_report(report, out_dir)
  save_grid(
      pathlib.Path(out_dir) / "grid.png",
      real=eval_set.real,
      generated=generated,
      speakers=eval_set.speakers,
      speaker_names=eval_set.speaker_names,
      per_speaker=grid_per_speaker,
  )
  return report


def scalars(report: dict) -> dict[str, float]:
  """Flat {"eval/<row>/<metric>": value} of a report's headline numbers (for TensorBoard)."""
  out = {}
  for name, row in report["rows"].items():
    values = {}
    if "face_detection_rate" in row:
      values["face_detection_rate"] = row["face_detection_rate"]
      values["identity"] = row["identity"]["accuracy"]
      values["frechet_distance"] = row["frechet_distance"]
      values["mouth_loudness_r"] = (row["expressivity"] or {}).get("loudness_correlation")
    if "pixel" in row:
      values["pixel_identity"] = row["pixel"]["identity"]["accuracy"]
      mouth = row["pixel"].get("mouth") or {}
      values["pixel_mouth_loudness_r"] = mouth.get("loudness_correlation")
      values["pixel_mouth_loudness_r_within_speaker"] = mouth.get(
          "loudness_correlation_within_speaker"
      )
      values["pixel_mouth_opening_std"] = mouth.get("mouth_opening_std")
      brows = row["pixel"].get("brows") or {}
      values["pixel_brow_pitch_r"] = brows.get("pitch_correlation")
      values["pixel_brow_pitch_r_within_speaker"] = brows.get("pitch_correlation_within_speaker")
    out.update({f"eval/{name}/{k}": float(v) for k, v in values.items() if v is not None})
  return out


def _with_overrides(cfg, **overrides):
  """A copy of a ConfigDict section with some fields replaced."""
  cfg = cfg.copy_and_resolve_references()
  for key, value in overrides.items():
    cfg[key] = value
  return cfg


class PeriodicEvaluator:
  """The evaluation during training (config.eval): a fixed eval set, faces from the current G.

  Built once (reads config.eval.split, default config.input.eval_split, capped at
  config.eval.max_examples, and the reference faces); each call generates with an
  `inference.FaceGenerator` (the current weights) and returns (report, scalars). dlib metrics
  only where config.eval.dlib is set (slow, and blind to the synthetic cartoon faces); pixel
  metrics wherever the layout is known.
  """

  def __init__(self, config, *, batch_size: int = 32):
    eval_cfg = config.eval
    self.split = eval_cfg.split or config.input.eval_split
    self.eval_set = load_eval_set(
        config.input,
        split=self.split,
        image_size=config.model.image_size,
        max_examples=eval_cfg.max_examples,
        train_faces_per_speaker=eval_cfg.reference_faces_per_speaker,
        batch_size=batch_size,
    )
    self.dlib_metrics = bool(eval_cfg.dlib)
    if not self.dlib_metrics and self.eval_set.layout is None:
      raise ValueError(
          f"config.eval.dlib=False but dataset {self.eval_set.dataset!r} has no known face "
          "layout for pixel-space metrics: nothing to evaluate"
      )

  def __call__(self, generator) -> tuple[dict, dict[str, float]]:
    """(report, scalars) of `generator` (an `inference.FaceGenerator`) on the eval set."""
    generated = generator.generate_preprocessed(self.eval_set.waveforms)
    report = self.eval_set.evaluate(generated, dlib_metrics=self.dlib_metrics)
    report["run"] = {"dataset": self.eval_set.dataset, "split": self.split}
    return report, scalars(report)


def summary(report: dict) -> str:
  """A few readable lines: one per row (dlib metrics, then pixel-space ones where computed)."""
  rows = report["rows"]
  first = next(iter(rows.values()))
  chance = (first.get("identity") or first.get("pixel", {}).get("identity"))["chance"]
  lines = [
      f"{report['num_examples']} examples, {len(report['speaker_names'])} speakers "
      f"(identity chance {chance:.1%})"
  ]
  for name, row in rows.items():
    parts = []
    if "face_detection_rate" in row:
      fd = row["frechet_distance"]
      corr = (row["expressivity"] or {}).get("loudness_correlation")
      parts.append(
          f"dlib: detection {row['face_detection_rate']:.1%}  identity {row['identity']['accuracy']:.1%}  "
          f"FD {'n/a' if fd is None else f'{fd:.3f}'}  mouth~loudness r "
          f"{'n/a' if corr is None else f'{corr:+.2f}'}"
      )
    if "pixel" in row:
      mouth = row["pixel"].get("mouth") or {}
      corr = mouth.get("loudness_correlation")
      within = mouth.get("loudness_correlation_within_speaker")
      parts.append(
          f"pixel: identity {row['pixel']['identity']['accuracy']:.1%}  mouth~loudness r "
          f"{'n/a' if corr is None else f'{corr:+.2f}'} (within speakers "
          f"{'n/a' if within is None else f'{within:+.2f}'})"
          + (
              f" (opening {mouth['mouth_opening_mean']:.2f}+-{mouth['mouth_opening_std']:.2f} px)"
              if mouth
              else ""
          )
      )
      brows = row["pixel"].get("brows")
      if brows:
        corr, within = brows["pitch_correlation"], brows.get("pitch_correlation_within_speaker")
        parts[-1] += (
            f"  eyebrows~pitch r {'n/a' if corr is None else f'{corr:+.2f}'} (within speakers "
            f"{'n/a' if within is None else f'{within:+.2f}'}) (height "
            f"{brows['brow_height_mean']:.2f}+-{brows['brow_height_std']:.2f} px)"
        )
    lines.append(f"{name:>10}: " + "  |  ".join(parts))
  return "\n".join(lines)


def _parser():
  import argparse  # pylint: disable=g-import-not-at-top

  parser = argparse.ArgumentParser(
      prog="wav2pix-evaluate", description="The paper's metrics for a trained Wav2Pix workdir."
  )
  parser.add_argument("--workdir", required=True, help="training workdir (or its checkpoints/ dir)")
  parser.add_argument("--split", default="test", help="dataset split to evaluate (default: test)")
  parser.add_argument(
      "--out",
      default=None,
      help="output folder for report.json and grid.png (default: <workdir>/eval/<split>)",
  )
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  parser.add_argument(
      "--max_examples", type=int, default=None, help="evaluate only the first N examples"
  )
  parser.add_argument("--batch_size", type=int, default=32, help="waveforms per generator call")
  parser.add_argument(
      "--train_faces_per_speaker",
      type=int,
      default=100,
      help="real training faces per speaker for the identity classifier / FD reference",
  )
  parser.add_argument("--data_dir", default=None, help="override config.input.data_dir")
  parser.add_argument(
      "--no_dlib",
      dest="dlib",
      action="store_false",
      help="skip the dlib metrics (pixel-space metrics only, for datasets with a known layout)",
  )
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """CLI: evaluate, print a summary; errors as one line on stderr and exit status 1."""
  import sys  # pylint: disable=g-import-not-at-top

  args = _parser().parse_args(argv)
  for name in ("max_examples", "batch_size", "train_faces_per_speaker"):
    value = getattr(args, name)
    if value is not None and value < 1:
      print(
          f"wav2pix-evaluate: error: --{name} must be a positive integer, got {value}",
          file=sys.stderr,
      )
      return 2
  if args.out is None:
    args.out = str(pathlib.Path(args.workdir).expanduser() / "eval" / args.split)
  try:
    report = evaluate_workdir(
        args.workdir,
        split=args.split,
        out_dir=args.out,
        step=args.step,
        max_examples=args.max_examples,
        batch_size=args.batch_size,
        train_faces_per_speaker=args.train_faces_per_speaker,
        data_dir=args.data_dir,
        dlib_metrics=args.dlib,
    )
  except (ValueError, FileNotFoundError, OSError) as e:
    print(f"wav2pix-evaluate: error: {' '.join(str(e).split())}", file=sys.stderr)
    return 1
  print(summary(report))
  print(f"report: {pathlib.Path(args.out) / REPORT_FILENAME}")
  return 0


def run() -> None:
  """Console-script entry point (wav2pix-evaluate)."""
  raise SystemExit(main())


if __name__ == "__main__":
  run()
