"""evaluation.attributes: face attributes measured from pixels, and the unseen-voice report."""

import json

import numpy as np
from PIL import Image
import pytest

from data_prep.synthetic_voice_faces import synthetic_voice_faces_dataset_builder as svf
from wav2pix_jax.evaluation import attributes

SPEAKERS = svf.make_speakers()
SEEN, UNSEEN = SPEAKERS[: svf.NUM_SEEN], SPEAKERS[svf.NUM_SEEN :]
CLIPS = 3  # faces per speaker, each with its own expression


def _faces(speakers, seed: int) -> tuple[np.ndarray, dict, np.ndarray]:
  """CLIPS faces per speaker (random loudness and pitch shift), their truth and speaker ids."""
  rng = np.random.default_rng(seed)
  faces, truth, ids = [], {name: [] for name in attributes.ATTRIBUTES}, []
  for index, speaker in enumerate(speakers):
    for _ in range(CLIPS):
      faces.append(svf.draw_face(speaker, rng.uniform(0, 1), rng.uniform(-1, 1)))
      for name in truth:
        truth[name].append(svf.attributes(speaker)[name])
      ids.append(index)
  return np.stack(faces), {k: np.asarray(v) for k, v in truth.items()}, np.asarray(ids)


@pytest.fixture(scope="module")
def data():
  train_faces, train_truth, _ = _faces(SEEN, seed=0)
  unseen_faces, unseen_truth, unseen_ids = _faces(UNSEEN, seed=1)
  mean_face = np.clip(np.round(train_faces.astype(np.float64).mean(0)), 0, 255).astype(np.uint8)
  return dict(
      train_faces=train_faces,
      train_truth=train_truth,
      faces=unseen_faces,
      truth=unseen_truth,
      speakers=unseen_ids,
      mean_face=mean_face,
  )


def _report(data, generated, **kwargs):
  return attributes.evaluate_attributes(
      generated=generated,
      truth=data["truth"],
      speakers=data["speakers"],
      train_truth=data["train_truth"],
      mean_face=data["mean_face"],
      **kwargs,
  )


def test_measure_recovers_the_truth_on_real_faces(data):
  faces = np.concatenate([data["train_faces"], data["faces"]])
  truth = {k: np.concatenate([data["train_truth"][k], data["truth"][k]]) for k in data["truth"]}
  measured = attributes.measure(faces)
  assert set(measured) == set(attributes.ATTRIBUTES)
  for name, attribute in attributes.ATTRIBUTES.items():
    errors = attributes.attribute_errors(name, measured[name], truth[name])
    if attribute.kind == "categorical":
      assert errors.sum() == 0, name  # every colour, every face
    else:
      assert errors.mean() < 0.04 and errors.max() < 0.12, (name, errors.mean(), errors.max())
      assert np.corrcoef(measured[name], truth[name])[0, 1] > 0.98, name


def test_measure_works_at_128_pixels(data):
  big = np.stack([np.asarray(Image.fromarray(f).resize((128, 128))) for f in data["faces"][:12]])
  small, large = attributes.measure(data["faces"][:12]), attributes.measure(big)
  for name in attributes.ATTRIBUTES:
    np.testing.assert_allclose(large[name], small[name], atol=0.08, err_msg=name)


def test_measure_rejects_float_images():
  with pytest.raises(ValueError, match="uint8"):
    attributes.measure(np.zeros((1, 64, 64, 3), np.float32))


def test_mean_face_is_at_chance_for_the_predictable_attributes(data):
  report = _report(data, data["faces"])
  for name in attributes.PREDICTABLE:
    entry = report["attributes"][name]
    # The mean face's measured value is one constant for every speaker: no better than the best
    # voice-blind constant (chance), up to the measurement's own error.
    assert entry["mean_face"]["error"] >= entry["chance"]["error"] - 0.02, name
    assert entry["mean_face"]["skill"] < 0.1 and entry["mean_face"]["correlation"] is None, name


def test_real_faces_beat_chance_and_the_mean_face_everywhere(data):
  report = _report(data, data["faces"], real=data["faces"])
  for name, entry in report["attributes"].items():
    assert entry["generated"]["skill"] > 0.8, name
    assert entry["real"]["error"] == entry["generated"]["error"]
    assert entry["vs_mean_face"]["interval_95"][0] > 0, name
    assert report["verdict"][name].startswith("beats the mean face")
  json.dumps(report)  # JSON-able
  table = attributes.table(report)
  assert all(name in table for name in attributes.ATTRIBUTES)


def test_a_model_that_returns_the_mean_face_is_no_better_than_the_mean_face(data):
  generated = np.repeat(data["mean_face"][None], len(data["faces"]), axis=0)
  report = _report(data, generated)
  for name, entry in report["attributes"].items():
    assert entry["vs_mean_face"]["difference"] == 0.0
    assert report["verdict"][name].startswith("no better than the mean face")


def _training_faces_of(data, picks) -> np.ndarray:
  """Per unseen speaker i, the CLIPS training faces of training speaker picks[i]."""
  faces = data["train_faces"].reshape(len(SEEN), CLIPS, *data["train_faces"].shape[1:])
  return np.concatenate([faces[p] for p in picks])


def _closest_voices() -> list[int]:
  """Per unseen speaker, the training speaker with the closest pitch and formants."""
  voice = lambda s: (np.log(s.f0), 4 * s.formant_scale)
  seen = np.array([voice(s) for s in SEEN])
  scale = seen.std(0)
  return [int(np.argmin((((seen - voice(u)) / scale) ** 2).sum(1))) for u in UNSEEN]


def test_a_model_that_hears_the_voice_beats_the_mean_face_on_predictable_attributes_only(data):
  """A "model" that answers with the face of the training speaker whose voice (pitch, formants)
  is closest gets what the voice says, and nothing of the controls."""
  generated = _training_faces_of(data, _closest_voices())
  report = _report(data, generated)
  for name in attributes.PREDICTABLE:
    entry = report["attributes"][name]
    assert entry["generated"]["skill"] > 0.2, (name, entry["generated"])
  assert report["attributes"]["head_size"]["vs_mean_face"]["interval_95"][0] > 0
  assert report["attributes"]["hair_length"]["vs_mean_face"]["interval_95"][0] > 0
  for name in attributes.CONTROLS:  # right by luck at most: not clearly better than the mean face
    assert report["attributes"][name]["vs_mean_face"]["interval_95"][0] <= 0, name
    assert not report["verdict"][name].startswith("beats")


def test_a_model_that_ignores_the_voice_is_at_chance_everywhere(data):
  """Faces of training speakers with no relation to the voice (a fixed shuffle)."""
  picks = np.random.default_rng(0).integers(len(SEEN), size=len(UNSEEN))
  generated = _training_faces_of(data, picks)
  report = _report(data, generated)
  for name, entry in report["attributes"].items():
    assert entry["generated"]["skill"] < 0.35, (name, entry["generated"])
    assert entry["vs_mean_face"]["interval_95"][0] < 0.05, name


def test_measure_tolerates_blur_like_a_generator_s(data):
  """Generated faces are blurry: a Gaussian blur of 1 px moves no measurement far (the jaw most,
  towards oval, by about 0.06)."""
  from PIL import ImageFilter

  blurred = np.stack(
      [np.asarray(Image.fromarray(f).filter(ImageFilter.GaussianBlur(1.0))) for f in data["faces"]]
  )
  measured = attributes.measure(blurred)
  for name in attributes.ATTRIBUTES:
    error = attributes.attribute_errors(name, measured[name], data["truth"][name]).mean()
    assert error < (0.1 if name == "jaw" else 0.04), (name, error)


def test_truth_must_match_the_examples(data):
  truth = dict(data["truth"], jaw=data["truth"]["jaw"][:-1])
  with pytest.raises(ValueError, match="jaw"):
    _report(dict(data, truth=truth), data["faces"])
  with pytest.raises(ValueError, match="generated"):
    _report(data, data["faces"][:-1])


def test_voice_faces_declare_the_talking_faces_layout():
  """Pixel identity, mouth and brow metrics read the layout from the builder (DatasetInfo)."""
  from data_prep.synthetic import synthetic_dataset_builder as syn
  from data_prep.synthetic_voice_faces import synthetic_voice_faces_dataset_builder as voice

  assert voice.SyntheticVoiceFaces.FACE_LAYOUT == syn.SyntheticTalkingFaces.FACE_LAYOUT
  assert voice.SyntheticVoiceFaces.FACE_LAYOUT["mouth_box"] == voice.MOUTH_BOX
