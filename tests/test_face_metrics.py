"""face_metrics: real shared faces as if generated, noise, and hand-worked values."""

import pathlib

import numpy as np
import pytest
from PIL import Image

from wav2pix_jax.evaluation import face_metrics as fm

SPEAKERS = ("jaimealtozano", "javiermuniz")
PER_SPEAKER = 12


def _frame_number(path: pathlib.Path) -> int:
  return int(path.stem.rsplit("_", 1)[1])


def load_real_faces(
    youtubers_dir, speaker: str, start: float, stop: float, count: int, size: int = 64
):
  """`count` distinct faces from the contiguous block [start, stop) as uint8 RGB.

  `start` and `stop` are fractions of the sorted N.
  """
  paths = sorted(
      (youtubers_dir / "train" / speaker).glob("cropped_face_frame_*.png"), key=_frame_number
  )
  block = paths[int(start * len(paths)) : int(stop * len(paths))]
  chosen = block[:: max(1, len(block) // count)][:count]
  faces = []
  for path in chosen:
    # The release stores JPEG bytes with red and blue swapped (OpenCV BGR order).
    bgr = np.asarray(Image.open(path).convert("RGB"))
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    faces.append(np.asarray(Image.fromarray(rgb).resize((size, size), Image.BICUBIC)))
  return np.stack(faces), [_frame_number(p) for p in chosen]


@pytest.fixture(scope="module")
def real_sets(youtubers_dir):
  """Disjoint blocks of frames.

  Classifier faces from the first 40 %, 'generated' faces from the last 30 %.
  """
  fit_faces, fit_labels, eval_faces, eval_labels, fit_n, eval_n = [], [], [], [], set(), set()
  for label, speaker in enumerate(SPEAKERS):
    faces, ns = load_real_faces(youtubers_dir, speaker, 0.0, 0.4, PER_SPEAKER)
    fit_faces.append(faces), fit_labels.extend([label] * len(faces)), fit_n.update(
        (speaker, n) for n in ns
    )
    faces, ns = load_real_faces(youtubers_dir, speaker, 0.7, 1.0, PER_SPEAKER)
    eval_faces.append(faces), eval_labels.extend([label] * len(faces)), eval_n.update(
        (speaker, n) for n in ns
    )
  assert not fit_n & eval_n
  fit = fm.analyze_faces(np.concatenate(fit_faces))
  evaluated = fm.analyze_faces(np.concatenate(eval_faces))
  return fit, np.array(fit_labels), evaluated, np.array(eval_labels)


@pytest.fixture(scope="module")
def noise_analysis():
  rng = np.random.default_rng(0)
  return fm.analyze_faces(rng.integers(0, 256, size=(20, 64, 64, 3), dtype=np.uint8))


def test_real_faces_are_detected(real_sets):
  _, _, evaluated, _ = real_sets
  assert evaluated.detection_rate > 0.8
  assert evaluated.embeddings.shape == (2 * PER_SPEAKER, 128)


def test_detection_rate_matches_analysis(real_sets, youtubers_dir):
  faces, _ = load_real_faces(youtubers_dir, SPEAKERS[0], 0.7, 1.0, 6)
  assert fm.detection_rate(faces) == pytest.approx(fm.analyze_faces(faces).detection_rate)


def test_noise_is_not_detected_but_still_embedded(noise_analysis):
  assert noise_analysis.detection_rate < 0.1
  emb = noise_analysis.embeddings
  assert np.all(np.isfinite(emb)) and np.all(np.linalg.norm(emb, axis=1) > 0.1)
  undetected = ~noise_analysis.detected
  # Fallback: the face box is the whole (detection-sized) image.
  np.testing.assert_array_equal(
      noise_analysis.boxes[undetected], [[0, 0, 127, 127]] * undetected.sum()
  )


def test_identity_near_perfect_on_disjoint_real_faces(real_sets):
  fit, fit_labels, evaluated, eval_labels = real_sets
  classifier = fm.fit_identity_classifier(fit.embeddings, fit_labels, num_classes=2)
  result = fm.identity_accuracy(classifier.predict(evaluated.embeddings), eval_labels, SPEAKERS)
  assert result["accuracy"] > 0.9
  assert result["chance"] == 0.5
  assert [row["speaker"] for row in result["per_speaker"]] == list(SPEAKERS)
  assert all(
      row["num_examples"] == PER_SPEAKER and row["accuracy"] > 0.8 for row in result["per_speaker"]
  )


def test_frechet_real_vs_real_small_real_vs_noise_large(real_sets, noise_analysis):
  fit, _, evaluated, _ = real_sets
  real_fd = fm.frechet_distance(evaluated.embeddings, fit.embeddings)
  noise_fd = fm.frechet_distance(noise_analysis.embeddings, fit.embeddings)
  assert real_fd < 0.1
  assert noise_fd > 0.3 and noise_fd > 5 * real_fd


def test_other_image_sizes_work(youtubers_dir):
  faces, _ = load_real_faces(youtubers_dir, SPEAKERS[1], 0.7, 1.0, 4, size=200)
  assert fm.analyze_faces(faces).detection_rate > 0.7
  small, _ = load_real_faces(youtubers_dir, SPEAKERS[1], 0.7, 1.0, 4, size=128)
  assert fm.analyze_faces(small).detection_rate > 0.7


# ----------------------------------------------------------------------------- hand-worked values


def test_frechet_closed_form_diagonal():
  mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
  var1, var2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
  expected = 1 + 0 + 4 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2  # sum (mu diff)^2 + (sqrt v1 - sqrt v2)^2
  got = fm.frechet_distance_from_stats(mu1, np.diag(var1), mu2, np.diag(var2), eps=0.0)
  assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_closed_form_non_diagonal():
  # S1 = 4 I commutes with anything: Tr sqrt(S1 S2) = 2 Tr sqrt(S2) = 2 (sqrt 3 + 1)
  # (eigenvalues 3, 1).
  s2 = np.array([[2.0, 1.0], [1.0, 2.0]])
  got = fm.frechet_distance_from_stats(
      np.zeros(2), 4 * np.eye(2), np.array([3.0, 4.0]), s2, eps=0.0
  )
  assert got == pytest.approx(25 + 8 + 4 - 4 * (np.sqrt(3) + 1), rel=1e-9)


def test_frechet_from_samples_with_exact_statistics():
  # Points +-a e_i around m have sample mean m and covariance diag(2 a^2 / (n - 1)) with n = 2 d.
  d = 3
  a1, a2 = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 1.0])
  m1, m2 = np.zeros(d), np.array([0.5, -1.0, 0.0])

  def points(m, a):
    return np.concatenate([m + np.diag(a), m - np.diag(a)])

  var1, var2 = 2 * a1**2 / (2 * d - 1), 2 * a2**2 / (2 * d - 1)
  expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
  assert fm.frechet_distance(points(m1, a1), points(m2, a2), eps=0.0) == pytest.approx(
      expected, rel=1e-9
  )
  # The default eps moves it by O(sqrt(eps)) per dimension only.
  assert fm.frechet_distance(points(m1, a1), points(m2, a2)) == pytest.approx(expected, abs=1e-4)


def test_frechet_small_n_is_finite_symmetric_and_zero_on_itself():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(10, 128)), rng.normal(
      0.3, 1.0, size=(12, 128)
  )  # N << D: singular covariances
  ab, ba = fm.frechet_distance(a, b), fm.frechet_distance(b, a)
  assert np.isfinite(ab) and ab > 0 and ab == pytest.approx(ba, rel=1e-4)
  assert fm.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-3)


def test_frechet_rejects_bad_inputs():
  with pytest.raises(ValueError, match="same D"):
    fm.frechet_distance(np.zeros((4, 3)), np.zeros((4, 2)))
  with pytest.raises(ValueError, match="at least 2"):
    fm.frechet_distance(np.zeros((1, 3)), np.zeros((4, 3)))


def _landmarks_with_mouth(gap: float, eye_distance: float = 40.0) -> np.ndarray:
  points = np.zeros((fm.NUM_LANDMARKS, 2), np.float32)
  points[36], points[45] = (10.0, 20.0), (10.0 + eye_distance, 20.0)
  for x, (top, bottom) in enumerate(fm.INNER_LIP_PAIRS):
    points[top] = (20.0 + x, 50.0)
    points[bottom] = (20.0 + x, 50.0 + gap)
  return points


def test_mouth_opening_is_gap_over_eye_distance():
  landmarks = np.stack(
      [_landmarks_with_mouth(0.0), _landmarks_with_mouth(4.0), _landmarks_with_mouth(6.0, 30.0)]
  )
  np.testing.assert_allclose(fm.mouth_opening(landmarks), [0.0, 0.1, 0.2], rtol=1e-6)


def test_expressivity_uses_detected_faces_only():
  gaps = np.array([1.0, 2.0, 3.0, 4.0, 50.0])
  loudness = np.array(
      [-40.0, -30.0, -20.0, -10.0, -60.0]
  )  # the undetected outlier would flip the sign
  analysis = fm.FaceAnalysis(
      detected=np.array([True, True, True, True, False]),
      boxes=np.zeros((5, 4), np.int64),
      landmarks=np.stack([_landmarks_with_mouth(g) for g in gaps]),
      embeddings=np.zeros((5, 128), np.float32),
  )
  result = fm.expressivity(analysis, loudness)
  assert result["num_faces"] == 4
  assert result["loudness_correlation"] == pytest.approx(1.0)
  assert result["mouth_opening_mean"] == pytest.approx(np.mean(gaps[:4]) / 40.0)


def test_loudness_db_of_sines():
  t = np.arange(16000) / 16000.0
  sine = np.sin(2 * np.pi * 440 * t)
  levels = fm.loudness_db([sine, 0.1 * sine, (0.5 * 32767 * sine).astype(np.int16), np.zeros(100)])
  np.testing.assert_allclose(levels[:3], [-3.0103, -23.0103, -9.0309], atol=1e-3)
  assert levels[3] == -100.0


def test_pearson():
  assert fm.pearson(np.arange(5.0), -2 * np.arange(5.0)) == pytest.approx(-1.0)
  assert fm.pearson(np.arange(2.0), np.arange(2.0)) is None
  assert fm.pearson(np.ones(4), np.arange(4.0)) is None


def test_identity_accuracy_per_speaker_rows():
  result = fm.identity_accuracy(
      np.array([0, 1, 1, 2, 2, 0]), np.array([0, 0, 1, 2, 2, 2]), ["a", "b", "c"]
  )
  assert result["accuracy"] == pytest.approx(4 / 6)
  assert result["chance"] == pytest.approx(1 / 3)
  assert [r["accuracy"] for r in result["per_speaker"]] == [0.5, 1.0, pytest.approx(2 / 3)]


def test_centroid_classifier():
  embeddings = np.array([[0.0, 0.0], [0.0, 2.0], [10.0, 0.0], [10.0, 2.0]])
  classifier = fm.fit_identity_classifier(embeddings, np.array([0, 0, 1, 1]), num_classes=2)
  np.testing.assert_allclose(classifier.centroids, [[0, 1], [10, 1]])
  np.testing.assert_array_equal(classifier.predict(np.array([[1.0, 5.0], [6.0, -3.0]])), [0, 1])
  with pytest.raises(ValueError, match="no training faces"):
    fm.fit_identity_classifier(embeddings, np.array([0, 0, 0, 0]), num_classes=2)


def test_rejects_float_and_misshaped_images():
  with pytest.raises(ValueError, match="uint8"):
    fm.analyze_faces(np.zeros((2, 64, 64, 3), np.float32))
  with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
    fm.detection_rate(np.zeros((64, 64, 3), np.uint8))
  with pytest.raises(ValueError, match="empty"):
    fm.face_embeddings(np.zeros((0, 64, 64, 3), np.uint8))


# ----------------------------------------------------------------------------- the field's metrics


def _clusters(num_classes, per_class, dim=16, spread=0.05, seed=0):
  """Embeddings around one random prototype per class: (prototypes, embeddings, labels)."""
  rng = np.random.default_rng(seed)
  prototypes = rng.normal(size=(num_classes, dim))
  labels = np.repeat(np.arange(num_classes), per_class)
  return prototypes, prototypes[labels] + spread * rng.normal(size=(labels.size, dim)), labels


def test_speaker_similarity_of_a_perfect_generator():
  prototypes, reference, reference_labels = _clusters(12, 5)
  _, generated, labels = _clusters(12, 3, seed=1)
  generated = prototypes[labels] + 0.05 * np.random.default_rng(2).normal(size=generated.shape)
  result = fm.speaker_similarity(generated, labels, reference, reference_labels, 12)
  assert result["matching_1_2"] == 1.0
  assert [(r["k"], r["recall"], r["chance"]) for r in result["recall"]] == [
      (1, 1.0, 1 / 12),
      (5, 1.0, 5 / 12),
      (10, 1.0, 10 / 12),
  ]
  assert result["cosine_similarity"] > 0.99 > result["cosine_similarity_other_speakers"]


def test_speaker_similarity_of_a_random_generator_is_near_chance():
  _, reference, reference_labels = _clusters(10, 4)
  rng = np.random.default_rng(3)
  generated, labels = rng.normal(size=(4000, 16)), rng.integers(0, 10, 4000)
  result = fm.speaker_similarity(generated, labels, reference, reference_labels, 10)
  recall = {r["k"]: r["recall"] for r in result["recall"]}
  assert recall[1] == pytest.approx(0.1, abs=0.02)
  assert recall[5] == pytest.approx(0.5, abs=0.03)
  assert recall[10] is None  # k >= number of speakers: trivially 1, n/a
  assert result["matching_1_2"] == pytest.approx(0.5, abs=0.02)
  assert result["cosine_similarity"] == pytest.approx(
      result["cosine_similarity_other_speakers"], abs=0.02
  )


def test_speaker_similarity_hand_worked():
  """2-d unit vectors at known angles: every value below is worked out from the cosines."""
  unit = lambda deg: [np.cos(np.radians(deg)), np.sin(np.radians(deg))]
  reference = np.array([unit(0), unit(60), unit(90)])
  reference_labels = np.array([0, 0, 1])
  cos = lambda deg: np.cos(np.radians(deg))
  # Image at 30 deg (speaker 0): its speaker's faces at 30 and 30 deg, the other's at 60 deg:
  # wins both pairs; its speaker's mean face (at 30 deg) is the closer mean: rank 1.
  # Image at 80 deg (speaker 0): faces at 80 and 20 deg vs 10 deg: loses both pairs; the mean
  # faces at 30 and 90 deg are 50 and 10 deg away: rank 2.
  result = fm.speaker_similarity(
      np.array([unit(30), 2.0 * np.array(unit(80))]),
      np.array([0, 0]),
      reference,
      reference_labels,
      2,
  )
  assert result["matching_1_2"] == 0.5
  assert result["recall"][0] == {"k": 1, "recall": 0.5, "chance": 0.5}
  assert result["recall"][1] == {"k": 5, "recall": None, "chance": 1.0}
  assert result["cosine_similarity"] == pytest.approx((cos(30) + (cos(80) + cos(20)) / 2) / 2)
  assert result["cosine_similarity_other_speakers"] == pytest.approx((cos(60) + cos(10)) / 2)
  # Ties (exact in floating point): an image at 45 deg between one face of each speaker at 0 and
  # 90 deg: the pair counts 1/2, and the tied mean faces count against (rank 2).
  result = fm.speaker_similarity(
      np.array([[1.0, 1.0]]), np.array([0]), np.eye(2), np.array([0, 1]), 2
  )
  assert result["matching_1_2"] == 0.5 and result["recall"][0]["recall"] == 0.0


def test_speaker_similarity_needs_reference_faces_per_class():
  with pytest.raises(ValueError, match=r"no reference faces for class\(es\) \[1\]"):
    fm.speaker_similarity(np.ones((1, 2)), np.array([0]), np.ones((2, 2)), np.array([0, 0]), 2)
