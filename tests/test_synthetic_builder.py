"""The `synthetic_talking_faces` TFDS builder: splits, determinism, and that it is learnable."""

import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_prep.synthetic import SyntheticTalkingFaces
from data_prep.synthetic import synthetic_dataset_builder as syn

NAME = "synthetic_talking_faces"
SEEN = [s for s in syn.SPEAKERS if s not in syn.UNSEEN_SPEAKERS]


def _build(data_dir) -> tuple[tfds.core.DatasetBuilder, float]:
  start = time.perf_counter()
  builder = SyntheticTalkingFaces(data_dir=str(data_dir))
  builder.download_and_prepare()
  return builder, time.perf_counter() - start


def _read(data_dir, split: str) -> list[dict]:
  source = tfds.data_source(NAME, split=split, data_dir=str(data_dir))
  return sorted((source[i] for i in range(len(source))), key=lambda r: r["clip_id"])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("synthetic")
  builder, seconds = _build(data_dir)
  size = sum(f.stat().st_size for f in data_dir.rglob("*") if f.is_file())
  print(f"\nsynthetic build: {seconds:.1f} s, {size / 1e6:.1f} MB on disk")  # a figure, not a bound
  records = {split: _read(data_dir, split) for split in builder.info.splits}
  return data_dir, builder, records


def _pitch_hz(waveform: np.ndarray) -> float:
  """A trivial pitch estimate: the first autocorrelation peak within 90% of the best, 70-400 Hz."""
  x = waveform.astype(np.float64)
  x -= x.mean()
  spectrum = np.fft.rfft(x, 2 * len(x))
  acf = np.fft.irfft(np.abs(spectrum) ** 2)[: len(x)]
  lo, hi = 16000 // 400, 16000 // 70
  window = acf[lo:hi]
  peaks = [i for i in range(1, len(window) - 1) if window[i - 1] < window[i] >= window[i + 1]]
  best = max(window[i] for i in peaks)
  return 16000 / (lo + next(i for i in peaks if window[i] >= 0.9 * best))


def _mouth_pixels(face: np.ndarray) -> int:
  """Dark-red mouth-interior pixels in the lower middle of the face."""
  region = face[34:58, 18:46].astype(int)
  r, g, b = region[..., 0], region[..., 1], region[..., 2]
  return int(np.sum((r < 110) & (g < 50) & (b < 60) & (r > g + 20)))


@pytest.mark.slow
def test_splits_counts_and_features(built):
  _, builder, records = built
  n_seen = len(SEEN)
  counts = {split: len(r) for split, r in records.items()}
  assert counts == {
      "train": n_seen * len(syn.SEEN_SPLITS["train"]),
      "validation": n_seen * len(syn.SEEN_SPLITS["validation"]),
      "test": n_seen * len(syn.SEEN_SPLITS["test"]),
      "test_unseen": len(syn.UNSEEN_SPEAKERS) * syn.CLIPS_PER_SPEAKER,
  }
  assert builder.info.features["speaker"].names == list(syn.SPEAKERS)
  assert (
      builder.info.features["loudness"].dtype
      == builder.info.features["pitch_shift"].dtype
      == np.float32
  )
  assert (
      builder.info.citation and builder.info.homepage and "test_unseen" in builder.info.description
  )
  for record in records["train"][:5] + records["test_unseen"][:5]:
    assert record["waveform"].dtype == np.int16 and record["waveform"].shape == (syn.CLIP_SAMPLES,)
    assert record["face"].dtype == np.uint8 and record["face"].shape == (64, 64, 3)
    assert 0 <= record["loudness"] <= 1 and -1 <= record["pitch_shift"] <= 1
    assert syn.SPEAKERS[record["speaker"]] == record["speaker_name"].decode()
    assert np.abs(record["waveform"]).max() < 32767  # no clipping


def test_speakers_disjoint_between_train_and_test_unseen(built):
  _, _, records = built
  speakers = {split: {int(r["speaker"]) for r in rs} for split, rs in records.items()}
  assert speakers["train"] == speakers["validation"] == speakers["test"]
  assert not speakers["train"] & speakers["test_unseen"]
  assert {syn.SPEAKERS[i] for i in speakers["test_unseen"]} == set(syn.UNSEEN_SPEAKERS)
  clips = {split: {r["clip_id"] for r in rs} for split, rs in records.items()}
  assert not clips["train"] & clips["validation"] and not clips["train"] & clips["test"]


@pytest.mark.slow
def test_same_seed_gives_identical_records(built, tmp_path):
  _, _, records = built
  _, _ = _build(tmp_path)
  for split, first in records.items():
    second = _read(tmp_path, split)
    assert [r["clip_id"] for r in first] == [r["clip_id"] for r in second]
    for a, b in zip(first, second):
      np.testing.assert_array_equal(a["waveform"], b["waveform"])
      np.testing.assert_array_equal(a["face"], b["face"])
      assert a["loudness"] == b["loudness"] and a["pitch_shift"] == b["pitch_shift"]
  # And a different seed gives different speakers.
  assert syn.make_speakers(syn.SEED + 1) != syn.make_speakers(syn.SEED)


def test_faces_identify_speakers(built):
  _, _, records = built
  faces = lambda split, s: np.stack(
      [r["face"] for r in records[split] if r["speaker"] == s]
  ).astype(float)
  speakers = sorted({int(r["speaker"]) for r in records["train"]})
  means = np.stack([faces("train", s).mean(0) for s in speakers])
  between = min(np.abs(means[i] - means[j]).mean() for i in range(len(means)) for j in range(i))
  assert between > 20  # mean faces differ clearly (0..255 scale)
  correct = total = 0
  for s_index, s in enumerate(speakers):
    for face in faces("test", s):
      correct += int(np.argmin(np.abs(means - face).mean(axis=(1, 2, 3))) == s_index)
      total += 1
  assert correct == total


def test_a_trivial_pitch_estimate_separates_speakers(built):
  _, _, records = built
  pitch = {
      split: [(int(r["speaker"]), _pitch_hz(r["waveform"]), float(r["pitch_shift"])) for r in rs]
      for split, rs in records.items()
      if split in ("train", "test")
  }
  speakers = sorted({s for s, _, _ in pitch["train"]})
  centres = np.array(
      [np.median([np.log(f) for s, f, _ in pitch["train"] if s == k]) for k in speakers]
  )
  predicted = [speakers[int(np.argmin(np.abs(centres - np.log(f))))] for _, f, _ in pitch["test"]]
  accuracy = np.mean([p == s for p, (s, _, _) in zip(predicted, pitch["test"])])
  assert accuracy >= 0.9, accuracy
  # Within a speaker, the estimate follows the clip's pitch shift (semitones).
  residual = [
      12 * (np.log2(f) - centres[speakers.index(s)] / np.log(2)) for s, f, _ in pitch["train"]
  ]
  shift = [p for _, _, p in pitch["train"]]
  assert np.corrcoef(residual, shift)[0, 1] > 0.8


def test_mouth_follows_loudness_and_eyebrows_follow_pitch(built):
  _, _, records = built
  train = records["train"]
  mouth = [_mouth_pixels(r["face"]) for r in train]
  loudness = [float(r["loudness"]) for r in train]
  assert np.corrcoef(mouth, loudness)[0, 1] > 0.9
  # Eyebrows: the same speaker and loudness drawn at both pitch extremes differ above the eyes only.
  speaker = syn.make_speakers()[0]
  low, high = (syn.draw_face(speaker, 0.5, p).astype(int) for p in (-1.0, 1.0))
  changed_rows = np.nonzero(np.abs(high - low).sum(axis=(1, 2)) > 30)[0]
  assert changed_rows.size and changed_rows.max() < 30  # eyes are at row ~27 of 64


def _peak_normalised_clips(built):
  """Per seen speaker: (its training waveforms divided by max|x|, as the model sees them;
  loudness)."""
  _, _, records = built
  for speaker in range(len(SEEN)):
    clips = [r for r in records["train"] if r["speaker"] == speaker]
    yield (
        [r["waveform"].astype(float) / np.abs(r["waveform"]).max() for r in clips],
        [float(r["loudness"]) for r in clips],
    )


def test_loudness_survives_peak_normalisation(built):
  """After dividing by max|x| (the model's preprocessing), effort still shows: the fixed noise floor
  sits lower under the peak of a louder clip."""
  for clips, loudness in _peak_normalised_clips(built):
    floor_db = []
    for x in clips:
      frame_rms = np.sqrt(np.mean(x[: len(x) // 160 * 160].reshape(-1, 160) ** 2, axis=1))
      floor_db.append(20 * np.log10(np.percentile(frame_rms, 5)))
    assert np.corrcoef(floor_db, loudness)[0, 1] < -0.8


def test_quiet_speech_is_breathy(built):
  """Vocal effort also sets the phonation (since 1.1.0): within each speaker, the voicing strength
  (normalised autocorrelation peak at pitch lags) rises with loudness, whatever the peak level."""
  for clips, loudness in _peak_normalised_clips(built):
    voicing = []
    for x in clips:
      x = x - x.mean()
      acf = np.fft.irfft(np.abs(np.fft.rfft(x, 2 * len(x))) ** 2)[: len(x)]
      voicing.append(acf[16000 // 400 : 16000 // 70].max() / acf[0])
    assert np.corrcoef(voicing, loudness)[0, 1] > 0.9


def test_reads_back_without_tensorflow(built):
  data_dir, _, _ = built
  code = (
      "import sys\n"
      "finder = next(f for f in sys.meta_path if getattr(f, '__name__', '') == 'PathFinder')\n"
      "class NoTensorFlow:\n"
      "  @staticmethod\n"
      "  def find_spec(name, path=None, target=None):\n"
      "    if name.split('.')[0] == 'tensorflow': return None\n"
      "    return finder.find_spec(name, path, target)\n"
      "sys.meta_path[sys.meta_path.index(finder)] = NoTensorFlow\n"
      "import tensorflow_datasets as tfds\n"
      f"s = tfds.data_source({NAME!r}, split='test_unseen', data_dir={str(data_dir)!r})\n"
      "r = s[0]; assert r['face'].shape == (64, 64, 3) and 0 <= r['loudness'] <= 1\n"
      "assert 'tensorflow' not in sys.modules\n"
      "print('OK', len(s))\n"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert (
      out.returncode == 0 and f"OK {len(syn.UNSEEN_SPEAKERS) * syn.CLIPS_PER_SPEAKER}" in out.stdout
  ), out.stderr[-2000:]


def test_export_wav_writes_clips_faces_and_one_recording_per_speaker(built, tmp_path):
  import soundfile
  from data_prep.synthetic.__main__ import export_wav

  _, builder, records = built
  paths = export_wav(builder, str(tmp_path), "test", max_clips=2)
  assert len(paths) == 3 * len(SEEN)  # two clips and one concatenation per seen speaker
  first = min(r["clip_id"] for r in records["test"] if r["speaker_name"].decode() == SEEN[0])
  stem = first.decode().replace("/", "_")
  wave, rate = soundfile.read(tmp_path / f"{stem}.wav", dtype="int16")
  want = next(r for r in records["test"] if r["clip_id"] == first)
  assert rate == syn.SAMPLE_RATE and np.array_equal(wave, want["waveform"])
  assert (tmp_path / f"{stem}.png").is_file()
  assert soundfile.info(tmp_path / f"{SEEN[0]}_all.wav").frames == 2 * syn.CLIP_SAMPLES
