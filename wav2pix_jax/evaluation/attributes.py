"""Face attributes measured from pixels, and what a model predicts of them for unseen voices.

For `synthetic_voice_faces` (data_prep/synthetic_voice_faces), whose face attributes follow the
voice by a known mapping and whose layout is known: `measure(images)` reads each attribute back
from face pixels (generated or real), `evaluate_attributes` compares the generated faces of a
split's speakers with the ground truth, against chance and against the mean training face;
`section` does it for a trained workdir's faces: the "attributes" section of the evaluation's one
report (evaluation/evaluator.py evaluate_workdir; `python -m wav2pix_jax.attributes` prints it).

Attributes (ATTRIBUTES): beard, jaw, hair_length (follow the pitch), head_size (follows the
formant spacing) in [0, 1]; shirt and background colours (palette indices), the controls: random,
unpredictable from the voice. On unseen speakers, a predictable attribute "beats the mean face"
only if the model learned what the voice says about the face; a control that beats chance there
is luck (see its interval), and on training speakers it is memorising.

The face geometry (where the cheeks, locks and jaw are) is the dataset builder's own
(data_prep/synthetic_voice_faces), imported on first use.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Mapping, Sequence

import numpy as np

from wav2pix_jax import config_lib
from wav2pix_jax.data import datasets
from wav2pix_jax.data import input_pipeline

DATASET = "synthetic_voice_faces"


@dataclasses.dataclass(frozen=True)
class Attribute:
  kind: str  # "continuous" (0..1, error |measured - true|) or "categorical" (error: mismatch)
  follows: str | None  # the voice attribute it follows, None for a control
  doc: str


ATTRIBUTES = {
    "beard": Attribute("continuous", "pitch", "beard density 0..1, cheeks vs forehead colour"),
    "jaw": Attribute(
        "continuous",
        "pitch",
        "0 oval .. 1 square, from the head's width at 0.7 vs 0.35 of its depth",
    ),
    "hair_length": Attribute(
        "continuous", "pitch", "0 crop .. 1 shoulders, hair rows in columns beside the head"
    ),
    "head_size": Attribute("continuous", "formants", "0..1 from the height of the head's top"),
    "shirt": Attribute("categorical", None, "nearest palette colour in the shirt box (control)"),
    "background": Attribute("categorical", None, "nearest palette colour in the corners (control)"),
}
PREDICTABLE = tuple(name for name, a in ATTRIBUTES.items() if a.follows)
CONTROLS = tuple(name for name, a in ATTRIBUTES.items() if not a.follows)

DEFINITIONS = {
    "error": (
        "mean over examples of |measured - true| (continuous attributes, 0..1) or of measured != "
        "true (colours); the true value is the speaker's, from the dataset's extras"
    ),
    "chance": (
        "the error of a voice-blind guess: the training examples' median (continuous: the best "
        "constant) or a colour drawn with the training frequencies (categorical: 1 - p_train(true))"
    ),
    "skill": "1 - error / chance: 0 at chance, 1 perfect, < 0 worse than chance",
    "correlation": (
        "Pearson r of measured and true values over examples (continuous; None if constant)"
    ),
    "vs_mean_face": (
        "mean-face error - generated error (> 0: the generated faces are closer to the truth than "
        "the pixel-mean training face), with a 95 % bootstrap interval over the split's speakers"
    ),
}


@functools.cache
def _svf():
  # pylint: disable-next=g-import-not-at-top
  from data_prep.synthetic_voice_faces import synthetic_voice_faces_dataset_builder

  return synthetic_voice_faces_dataset_builder


# ----------------------------------------------------------------------------------- measurement


def _to_layout_size(images: np.ndarray) -> np.ndarray:
  """float64 [N, 64, 64, 3] (the layout's size; others are resized with Lanczos)."""
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
    raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
  size = _svf().IMAGE_SIZE
  if images.shape[1:3] != (size, size):
    from PIL import Image  # pylint: disable=g-import-not-at-top

    images = np.stack(
        [
            np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.LANCZOS))
            for im in images
        ]
    )
  return images.astype(np.float64)


def _box(images: np.ndarray, box) -> np.ndarray:
  top, bottom, left, right = box
  return images[:, top:bottom, left:right]


def _mean_colour(images: np.ndarray, *boxes) -> np.ndarray:
  """[N, 3]: the mean colour over the boxes."""
  pixels = np.concatenate([_box(images, b).reshape(len(images), -1, 3) for b in boxes], axis=1)
  return pixels.mean(axis=1)


def _towards(pixels: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
  """Per pixel, how far from colour `start` to colour `end` it is (projection), clipped to 0..1.

  pixels [N, ..., 3]; start, end [N, 3] (one pair per image).
  """
  shape = (len(pixels),) + (1,) * (pixels.ndim - 2) + (3,)
  start, end = start.reshape(shape), end.reshape(shape)
  axis = end - start
  norm2 = np.maximum((axis**2).sum(-1), 1.0)
  return np.clip(((pixels - start) * axis).sum(-1) / norm2, 0.0, 1.0)


def _row_value(profile: np.ndarray, y: np.ndarray) -> np.ndarray:
  """profile [N, H] of per-row values (row r centred at r + 0.5), linearly read at y [N]."""
  rows = np.arange(profile.shape[1]) + 0.5
  return np.array([np.interp(yy, rows, p) for p, yy in zip(profile, y)])


def _nearest(colours: np.ndarray, palette: Sequence[tuple]) -> np.ndarray:
  palette = np.asarray(palette, np.float64)
  return np.argmin(((colours[:, None, :] - palette[None]) ** 2).sum(-1), axis=1).astype(np.int64)


def _jaw_from_ratio(ratio: np.ndarray) -> np.ndarray:
  """Inverts width(0.7 depth) / width(0.35 depth) of the superelliptic jaw to the jaw attribute."""
  svf = _svf()
  y1, y2 = svf.ATTRIBUTE_LAYOUT["jaw_rows"]
  jaw = np.linspace(0.0, 1.0, 201)
  n = svf.jaw_exponent(jaw)
  curve = ((1 - y2**n) / (1 - y1**n)) ** (1 / n)  # increasing in n
  return np.interp(ratio, curve, jaw)


def measure(images: np.ndarray) -> dict[str, np.ndarray]:
  """Every attribute of each face: float64 [N] in 0..1 (continuous), int64 [N] (categorical)."""
  svf = _svf()
  layout = svf.ATTRIBUTE_LAYOUT
  x = _to_layout_size(images)
  background = _mean_colour(x, *layout["background_boxes"])
  hair = _mean_colour(x, layout["hair_box"])
  skin = _mean_colour(x, layout["skin_box"])
  out = {}

  # Head size: the hair cap's top, found in the middle columns above the lowest possible hairline.
  left, right = layout["top_columns"]
  above = svf.CENTRE_Y - svf.HALF_HEIGHT[1] * 0.78  # the highest hairline: below it, skin
  rows = int(np.floor(above))
  coverage = _towards(x[:, :rows, left:right], background, hair).mean(axis=2)  # [N, rows]
  top = rows - coverage.sum(axis=1)
  half_height = svf.CENTRE_Y - svf.CAP_ABOVE_HEAD - top
  lo, hi = svf.HALF_HEIGHT
  out["head_size"] = np.clip((half_height - lo) / (hi - lo), 0.0, 1.0)

  # Beard: how far the cheeks beside the mouth are from the forehead's skin towards the hair.
  cheeks = np.concatenate(
      [_box(x, b).reshape(len(x), -1, 3) for b in layout["cheek_boxes"]], axis=1
  )
  out["beard"] = _towards(cheeks, skin, hair).mean(axis=1)

  # Hair length: rows of hair in the columns of the locks, below their shortest length.
  start = int(svf.LOCK_TOP + svf.LOCK_MIN)
  stop = int(np.ceil(start + svf.LOCK_RANGE)) + 2  # the longest lock's end; the shirt is lower
  locks = np.concatenate(
      [x[:, start:stop, a:b] for a, b in layout["lock_columns"]], axis=2
  )  # [N, rows, cols, 3]
  length = _towards(locks, background, hair).mean(axis=2).sum(axis=1)
  out["hair_length"] = np.clip(length / svf.LOCK_RANGE, 0.0, 1.0)

  # Jaw: the head's width (non-background, relative to how far the cheeks' colour is from the
  # background) at two depths below its centre, using the measured head height. Only the columns
  # beside the mouth are measured; the middle ones are always inside the head at these depths.
  y1, y2 = (svf.CENTRE_Y + f * half_height for f in layout["jaw_rows"])
  distance = np.linalg.norm(x - background[:, None, None, :], axis=-1)  # [N, H, W]
  inside = np.concatenate([distance[:, :, a:b] for a, b in layout["jaw_inside"]], 2).mean(2)
  inside = np.maximum(_row_value(inside, y1), 1.0)  # skin or beard: the same at both depths
  sides = np.concatenate([distance[:, :, a:b] for a, b in layout["jaw_columns"]], 2)
  middle = layout["jaw_columns"][1][0] - layout["jaw_columns"][0][1]
  width = np.clip(sides / inside[:, None, None], 0.0, 1.0).sum(axis=2) + middle  # [N, H]
  out["jaw"] = _jaw_from_ratio(_row_value(width, y2) / _row_value(width, y1))

  out["shirt"] = _nearest(_mean_colour(x, layout["shirt_box"]), list(svf.SHIRTS.values()))
  out["background"] = _nearest(background, list(svf.BACKGROUNDS.values()))
  return {name: out[name] for name in ATTRIBUTES}


# ----------------------------------------------------------------------------------- evaluation


def attribute_errors(name: str, measured: np.ndarray, truth: np.ndarray) -> np.ndarray:
  """float64 [N]: per example, |measured - true| (continuous) or measured != true (categorical)."""
  measured, truth = np.asarray(measured), np.asarray(truth)
  if ATTRIBUTES[name].kind == "categorical":
    return (measured.astype(np.int64) != truth.astype(np.int64)).astype(np.float64)
  return np.abs(measured.astype(np.float64) - truth.astype(np.float64))


def chance_error(name: str, truth: np.ndarray, train_truth: np.ndarray) -> tuple[object, float]:
  """(the voice-blind guess, its mean error on `truth`): what a model knows without the voice.

  Continuous: the training median, the best constant for |error|. Categorical: a colour drawn
  from the training colours' frequencies (expected error 1 - p_train(true colour)); the single
  most frequent colour would be a coin toss on a few held-out speakers.
  """
  truth, train_truth = np.asarray(truth), np.asarray(train_truth)
  if ATTRIBUTES[name].kind == "categorical":
    values, counts = np.unique(train_truth.astype(np.int64), return_counts=True)
    frequency = dict(zip(values.tolist(), (counts / counts.sum()).tolist()))
    error = np.mean([1.0 - frequency.get(int(t), 0.0) for t in truth])
    return "a training colour at random", float(error)
  median = float(np.median(train_truth.astype(np.float64)))
  return median, float(attribute_errors(name, np.full(truth.shape, median), truth).mean())


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.size < 2 or a.std() < 1e-9 or b.std() < 1e-9:
    return None
  return float(np.corrcoef(a, b)[0, 1])


def _speaker_bootstrap(
    difference: np.ndarray, speakers: np.ndarray, num: int, seed: int
) -> tuple[float, float]:
  """95 % interval of the mean of `difference` [N] when the split's speakers are resampled."""
  groups = [np.flatnonzero(speakers == s) for s in np.unique(speakers)]
  sums = np.array([difference[g].sum() for g in groups])
  counts = np.array([len(g) for g in groups])
  rng = np.random.default_rng(seed)
  picks = rng.integers(len(groups), size=(num, len(groups)))
  means = sums[picks].sum(1) / counts[picks].sum(1)
  low, high = np.percentile(means, [2.5, 97.5])
  return float(low), float(high)


def evaluate_attributes(
    *,
    generated: np.ndarray,
    truth: Mapping[str, np.ndarray],
    speakers: np.ndarray,
    train_truth: Mapping[str, np.ndarray],
    mean_face: np.ndarray,
    real: np.ndarray | None = None,
    bootstrap: int = 2000,
    seed: int = 0,
) -> dict:
  """Each attribute's error on the generated faces, against chance and against the mean face.

  generated (and real): uint8 [N, S, S, 3], one face per example; truth: {attribute: [N]} the
  speakers' true values; speakers [N]; train_truth: {attribute: [M]} over the training speakers'
  examples (for chance); mean_face: uint8 [S, S, 3], the pixel-mean training face.
  """
  speakers = np.asarray(speakers)
  n = len(speakers)
  for images, what in ((generated, "generated"), (real, "real")):
    if images is not None and len(images) != n:
      raise ValueError(f"{what} has {len(images)} faces for {n} examples (speakers)")
  rows = {"generated": measure(generated), "mean_face": measure(np.asarray(mean_face)[None])}
  if real is not None:
    rows["real"] = measure(real)
  report = {
      "num_examples": int(n),
      "num_speakers": int(len(np.unique(speakers))),
      "definitions": DEFINITIONS,
      "attributes": {},
  }
  for name in ATTRIBUTES:
    true = np.asarray(truth[name])
    if true.shape != (n,):
      raise ValueError(f"truth[{name!r}] has shape {true.shape}, want ({n},)")
    entry, per_example = _attribute_entry(name, rows, true, train_truth[name])
    difference = per_example["mean_face"] - per_example["generated"]
    low, high = _speaker_bootstrap(difference, speakers, bootstrap, seed)
    entry["vs_mean_face"] = {"difference": float(difference.mean()), "interval_95": [low, high]}
    report["attributes"][name] = entry
  report["verdict"] = verdicts(report)
  return report


def _attribute_entry(
    name: str, rows: Mapping[str, dict], true: np.ndarray, train_truth: np.ndarray
) -> tuple[dict, dict[str, np.ndarray]]:
  """One attribute's report entry (without vs_mean_face) and each row's errors per example."""
  attribute = ATTRIBUTES[name]
  constant, chance = chance_error(name, true, train_truth)
  entry = {
      "kind": attribute.kind,
      "follows": attribute.follows or "nothing (control)",
      "measured_by": attribute.doc,
      "chance": {"guess": constant, "error": chance},
  }
  per_example = {}
  for row, measured in rows.items():
    values = np.asarray(measured[name])
    values = np.broadcast_to(values, true.shape) if values.shape == (1,) else values
    errors = attribute_errors(name, values, true)
    per_example[row] = errors
    result = {
        "error": float(errors.mean()),
        "skill": float(1.0 - errors.mean() / chance) if chance > 0 else None,
    }
    if attribute.kind == "continuous":
      result["mean"] = float(np.mean(values))
      result["correlation"] = _pearson(values, true)
    if row == "mean_face":
      result["value"] = values[0].item()
    entry[row] = result
  return entry, per_example


def verdicts(report: dict) -> dict[str, str]:
  """One line per attribute: does the generated face beat the mean face (speaker interval > 0)?"""
  out = {}
  for name, entry in report["attributes"].items():
    low, high = entry["vs_mean_face"]["interval_95"]
    skill = entry["generated"]["skill"]
    if low > 0:
      state = "beats the mean face"
    elif high < 0:
      state = "worse than the mean face"
    else:
      state = "no better than the mean face"
    note = (
        "" if ATTRIBUTES[name].follows else " (control: beating the mean face = memorising or luck)"
    )
    out[name] = f"{state} (skill {skill:+.2f}){note}" if skill is not None else state + note
  return out


def _signed(value: float | None, width: int) -> str:
  return f"{'' if value is None else f'{value:+.2f}':>{width}}"


def table(report: dict) -> str:
  """The report as a readable table, one attribute per line."""
  head = (
      f"{'attribute':<12}{'follows':<20}{'generated':>10}{'mean face':>10}{'chance':>8}"
      f"{'real':>7}{'skill':>7}{'r':>7}   mean face - generated [95% over speakers]"
  )
  lines = [
      f"{report['num_examples']} examples of {report['num_speakers']} speakers "
      f"(split {report.get('run', {}).get('split', '?')}); errors: |measured - true| (0..1) or "
      "mismatch rate (colours)",
      head,
  ]
  for name, e in report["attributes"].items():
    r = e["generated"].get("correlation")
    real = e.get("real", {}).get("error")
    low, high = e["vs_mean_face"]["interval_95"]
    lines.append(
        f"{name:<12}{e['follows']:<20}{e['generated']['error']:>10.3f}"
        f"{e['mean_face']['error']:>10.3f}{e['chance']['error']:>8.3f}"
        f"{'' if real is None else f'{real:.3f}':>7}{_signed(e['generated']['skill'], 7)}"
        f"{_signed(r, 7)}   {e['vs_mean_face']['difference']:+.3f} "
        f"[{low:+.3f}, {high:+.3f}]"
    )
  return "\n".join(lines)


# ----------------------------------------------------------------------------------- workdir / CLI


def _split_truth(source, count: int) -> dict[str, np.ndarray]:
  """{attribute: [count]} of the first `count` records of a data source."""
  records = [source[i] for i in range(count)]
  return {name: np.array([r[name] for r in records]) for name in ATTRIBUTES}


def mean_training_face(input_cfg, image_size: int) -> tuple[np.ndarray, dict]:
  """The pixel-mean face of the train split (uint8 [S, S, 3]) and the split's attribute truth."""
  source = datasets.data_source(input_cfg, input_cfg.train_split)
  total = np.zeros((image_size, image_size, 3), np.float64)
  for i in range(len(source)):
    total += input_pipeline.decode_face(source[i]["face"], image_size)
  mean = (total / len(source) + 1.0) * 127.5
  return np.clip(np.round(mean), 0, 255).astype(np.uint8), _split_truth(source, len(source))


def check_dataset(input_cfg, workdir: str | os.PathLike) -> None:
  """ConfigError unless `input_cfg` (a run's config.input) reads DATASET."""
  if datasets.base_name(str(input_cfg.dataset)) != DATASET:
    raise config_lib.ConfigError(
        f"{workdir} was trained on {input_cfg.dataset!r}: attribute ground truth and layout exist "
        f"only for {DATASET!r} (configs/demo_unseen.py)"
    )


def section(
    input_cfg, *, split: str, generated: np.ndarray, real: np.ndarray, speakers: np.ndarray
) -> dict:
  """The report's attribute section (`evaluate_attributes`) of faces generated for the first
  len(generated) records of `split` (record order), with the train split's mean face and truth."""
  truth = _split_truth(datasets.data_source(input_cfg, split), len(generated))
  mean_face, train_truth = mean_training_face(input_cfg, generated.shape[1])
  return evaluate_attributes(
      generated=generated,
      truth=truth,
      speakers=speakers,
      train_truth=train_truth,
      mean_face=mean_face,
      real=real,
  )
