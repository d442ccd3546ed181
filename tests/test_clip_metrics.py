"""Clip-level metrics: within-speaker matching and diversity, sharpness, on hand-checked values."""

import numpy as np
import pytest

from wav2pix_jax.evaluation import clip_metrics as cm


def _faces(num_speakers=2, faces_per_speaker=4, windows_per_face=5, size=8, seed=0):
  """Random uint8 'real faces', each repeated for `windows_per_face` consecutive clips (as the
  YouTubers' speech windows per frame), and the clips' speakers."""
  rng = np.random.default_rng(seed)
  faces = rng.integers(0, 256, (num_speakers * faces_per_speaker, size, size, 3), np.uint8)
  speakers = np.repeat(np.arange(num_speakers), faces_per_speaker * windows_per_face)
  return np.repeat(faces, windows_per_face, axis=0), speakers


def test_face_ids_are_equal_exactly_for_equal_pixels():
  a, b = np.zeros((2, 2, 3), np.uint8), np.ones((2, 2, 3), np.uint8)
  assert cm.face_ids(np.stack([a, b, a, b, b])).tolist() == [0, 1, 0, 1, 1]


def test_matching_by_hand():
  """Speaker 0: real 0, 10, 20 and generated 1, 9, 0: 2 + 2 + 0 wins of 6 pairs. Speaker 1:
  real 0, 10, generated 5, 5: both ties, 1/2. Speakers weigh equally."""
  real = np.array([[0.0], [10.0], [20.0], [0.0], [10.0]])
  generated = np.array([[1.0], [9.0], [0.0], [5.0], [5.0]])
  speakers = np.array([0, 0, 0, 1, 1])
  ids = np.arange(5)
  assert cm.within_speaker_matching(generated, real, speakers, ids) == pytest.approx(
      (4 / 6 + 1 / 2) / 2
  )
  # Other speakers' real faces never count: one speaker alone scores the same.
  assert cm.within_speaker_matching(generated[:3], real[:3], speakers[:3], ids[:3]) == 4 / 6


def test_matching_counts_another_clip_with_its_weight():
  """Real faces 0 (2 clips) and 10 (1 clip); generated 1, 1, 11: clip 2 (own face 10) wins
  against the 2 clips of face 0, clips 0 and 1 win against clip 2: 4 of 4 ordered pairs."""
  real = np.array([[0.0], [0.0], [10.0]])
  generated = np.array([[1.0], [1.0], [11.0]])
  assert cm.within_speaker_matching(generated, real, np.zeros(3), np.array([0, 0, 1])) == 1.0
  generated = np.array([[1.0], [1.0], [1.0]])  # clip 2 loses its 2 pairs: 2 of 4
  assert cm.within_speaker_matching(generated, real, np.zeros(3), np.array([0, 0, 1])) == 0.5


def test_one_face_for_every_clip_is_chance_and_no_diversity():
  """The mean face: the same image for every clip of a speaker. Unequal numbers of clips per real
  face, so only a symmetric count of the pairs gives exactly 1/2."""
  real, speakers = _faces()
  real, speakers = real[:-3], speakers[:-3]  # speaker 1's last face has 2 clips
  for images in (
      np.full_like(real, 128),  # one face for everyone
      np.stack([real[speakers == s].mean(0).astype(np.uint8) for s in speakers]),  # per speaker
  ):
    metrics = cm.row_metrics(images, real, speakers)
    assert metrics["matching_pixels"] == 0.5
    assert metrics["diversity_pixels"] == 0.0


def test_the_real_faces_themselves_score_one_everywhere():
  real, speakers = _faces()
  embeddings = np.random.default_rng(1).normal(size=(len(real) // 5, 128)).repeat(5, axis=0)
  metrics = cm.row_metrics(real, real, speakers, embeddings=embeddings, real_embeddings=embeddings)
  assert metrics == {
      "matching_pixels": 1.0,
      "diversity_pixels": 1.0,
      "sharpness": 1.0,
      "matching_dlib": 1.0,
      "diversity_dlib": 1.0,
  }


def test_clips_sharing_a_real_face_are_not_another_clip():
  """Counted as pairs, the 4 other windows of the same real face would all be ties (1/2 each)."""
  real, speakers = _faces()
  vectors = cm.pixel_vectors(real)
  ids = cm.face_ids(real)
  assert np.unique(ids).size == 8 and np.bincount(ids).tolist() == [5] * 8
  assert cm.within_speaker_matching(vectors, vectors, speakers, ids) == 1.0
  every_clip_distinct = cm.within_speaker_matching(vectors, vectors, speakers, np.arange(40))
  # per clip: 15 other faces' clips won, 4 same-face clips tied, of 19
  assert every_clip_distinct == pytest.approx((15 + 4 / 2) / 19)


def test_speakers_with_one_real_face_are_left_out():
  real = np.array([[0.0], [0.0], [0.0], [10.0]])
  generated = np.array([[0.0], [0.0], [10.0], [10.0]])
  speakers = np.array([0, 0, 1, 1])
  ids = np.array([0, 0, 1, 2])
  # speaker 0 has a single real face: no pair; speaker 1: clip 2 loses, clip 3 wins
  assert cm.within_speaker_matching(generated, real, speakers, ids) == 0.5
  assert cm.within_speaker_matching(generated[:2], real[:2], speakers[:2], ids[:2]) is None


def test_diversity_by_hand():
  """Speaker 0: real 0, 2 (spread 1), generated 0, 1 (spread 0.5); speaker 1: real 0, 4 (spread
  2), generated 0, 8 (spread 4); speaker 2 has one clip and speaker 3 one repeated face: left out.
  """
  real = np.array([[0.0], [2.0], [0.0], [4.0], [7.0], [3.0], [3.0]])
  generated = np.array([[0.0], [1.0], [0.0], [8.0], [1.0], [1.0], [2.0]])
  speakers = np.array([0, 0, 1, 1, 2, 3, 3])
  assert cm.within_speaker_diversity(generated, real, speakers) == pytest.approx((0.5 + 2) / 2)
  assert cm.within_speaker_diversity(generated[4:], real[4:], speakers[4:]) is None


def test_sharpness_by_hand():
  """A 0/255 checkerboard's Laplacian is +-4 * 255 everywhere inside: variance 1020^2."""
  board = (np.indices((4, 4)).sum(0) % 2 * 255).astype(np.uint8)
  board = np.repeat(board[None, ..., None], 3, axis=-1)
  flat = np.full_like(board, 77)
  np.testing.assert_allclose(cm.laplacian_variance(np.concatenate([board, flat])), [1020**2, 0])
  assert cm.sharpness(board, board) == 1.0
  assert cm.sharpness(np.concatenate([board, flat]), board) == pytest.approx(0.5)
  assert cm.sharpness(board, flat) is None  # nothing to compare with
  real, _ = _faces()
  blurred = ((real[:, :-1, :-1].astype(int) + real[:, 1:, 1:]) // 2).astype(np.uint8)
  assert cm.sharpness(blurred, real[:, :-1, :-1]) < 0.7


def test_misaligned_inputs_raise():
  with pytest.raises(ValueError, match="one entry per clip"):
    cm.within_speaker_matching(np.zeros((3, 2)), np.zeros((3, 2)), np.zeros(2), np.arange(3))
  with pytest.raises(ValueError, match="vectors"):
    cm.within_speaker_diversity(np.zeros(3), np.zeros(3), np.zeros(3))
  with pytest.raises(ValueError, match="differ in size"):
    cm.sharpness(np.zeros((1, 4, 4, 3), np.uint8), np.zeros((1, 5, 5, 3), np.uint8))
  with pytest.raises(ValueError, match="RGB images"):
    cm.laplacian_variance(np.zeros((1, 2, 2, 3), np.uint8))
