"""scripts/speech_probes.py (issue 22 part 2): its targets, scores and the embedding probe find a
within-speaker signal where the speech carries one and none where it does not."""

import numpy as np
import pytest

import helpers


def _probes():
  return helpers.load_script("speech_probes")


def _landmarks(left, right, nose):
  points = np.zeros((1, 68, 2))
  points[0, 36], points[0, 45], points[0, 30] = left, right, nose
  return points


def test_pose_reads_yaw_pitch_and_roll_off_the_eye_corners_and_nose():
  probes = _probes()
  straight = probes.pose(_landmarks((0, 0), (10, 0), (5, 3)))
  assert straight["yaw"][0] == pytest.approx(0.0)
  assert straight["pitch"][0] == pytest.approx(0.3)
  assert straight["roll"][0] == pytest.approx(0.0)
  turned = probes.pose(_landmarks((0, 0), (10, 0), (7, 3)))
  assert turned["yaw"][0] == pytest.approx(0.2)
  # The same face rotated by 30 degrees: roll 30, yaw and pitch unchanged.
  c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
  rotate = lambda p: (c * p[0] - s * p[1], s * p[0] + c * p[1])
  rolled = probes.pose(_landmarks(rotate((0, 0)), rotate((10, 0)), rotate((7, 3))))
  assert rolled["roll"][0] == pytest.approx(30.0)
  assert rolled["yaw"][0] == pytest.approx(0.2) and rolled["pitch"][0] == pytest.approx(0.3)


def test_within_speaker_r_ignores_what_knowing_the_speaker_gives():
  probes = _probes()
  rng = np.random.default_rng(0)
  speakers = np.repeat([0, 1], 200)
  target = 10.0 * speakers + rng.normal(size=400)
  speaker_only = 10.0 * speakers + 0.1 * rng.normal(size=400)
  assert np.corrcoef(speaker_only, target)[0, 1] > 0.95  # pooled: looks like a perfect probe
  assert abs(probes.within_r(speaker_only, target, speakers)) < 0.2
  assert probes.within_r(target + 0.1 * rng.normal(size=400), target, speakers) > 0.95
  scores = probes.score_continuous(speaker_only, target, speakers, {0: 0.0, 1: 10.0})
  assert scores["r2_over_speaker_mean"] < 0.05


def test_expression_scored_against_each_speakers_most_common_class():
  probes = _probes()
  speakers = np.array([0, 0, 0, 1, 1, 1])
  target = np.array([6, 6, 3, 3, 3, 6])
  scores = probes.score_expression(target, target, speakers, {0: 6, 1: 3})
  assert scores["accuracy"] == 1.0 and scores["within_speaker_chance"] == pytest.approx(4 / 6)


def test_folds_keep_a_faces_windows_together():
  probes = _probes()
  face_ids = np.repeat(np.arange(60), 5)
  folds = probes._folds(face_ids)
  for face in range(60):
    assert len(set(folds[face_ids == face])) == 1
  assert sorted(set(folds)) == [0, 1, 2, 3, 4]


def _split(rng, n_faces, carries: bool):
  """Two speakers; per face a mouth opening and an expression; embeddings = speaker offset plus,
  where `carries`, the face's targets."""
  speakers = np.repeat([0, 1], n_faces // 2)
  mouth = 0.3 * speakers + rng.normal(size=n_faces)
  expression = np.where(rng.random(n_faces) < 0.5, 6, 3)
  face_ids = np.arange(n_faces)
  embeddings = rng.normal(size=(n_faces, 16)) + 3.0 * speakers[:, None]
  if carries:
    embeddings[:, 0] += 2.0 * mouth
    embeddings[:, 1] += 2.0 * (expression == 6)
  data = {
      "speakers": speakers,
      "face_ids": face_ids,
      "embeddings": embeddings,
      "detected": np.ones(n_faces, bool),
      "expression": expression,
      "mouth": mouth,
  }
  for key in ("yaw", "pitch", "roll"):
    data[key] = rng.normal(size=n_faces)
  return data


@pytest.mark.parametrize("carries", [True, False])
def test_embedding_probe_finds_a_within_speaker_signal_only_where_there_is_one(carries):
  probes = _probes()
  rng = np.random.default_rng(1)
  train, val = _split(rng, 400, carries), _split(rng, 200, carries)
  baselines = probes.speaker_baselines(train, train["detected"], train["speakers"])
  preds, _ = probes.embedding_probe(train, val, num_speakers=2)
  scores = probes.score_all(preds.__getitem__, val, baselines)
  mouth, expression = scores["mouth"], scores["expression"]
  if carries:
    assert mouth["within_speaker_r"] > 0.8 and mouth["r2_over_speaker_mean"] > 0.5
    assert expression["accuracy"] > expression["within_speaker_chance"] + 0.2
  else:
    assert abs(mouth["within_speaker_r"]) < 0.25 and mouth["r2_over_speaker_mean"] < 0.05
    assert expression["accuracy"] < expression["within_speaker_chance"] + 0.1
