"""The `youtubers` TFDS builder on the real release.

On a small slice of it, and on the whole shared copy.
"""

import io
import pathlib
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from data_prep.youtubers import Youtubers
from data_prep.youtubers import youtubers_dataset_builder as ytb

PAIRS_PER_SPEAKER = 12


def _frames(speaker_dir: pathlib.Path) -> list[int]:
  return sorted(int(p.stem.rsplit("_", 1)[1]) for p in speaker_dir.glob("cropped_face_frame_*.png"))


def _build(manual_dir: pathlib.Path, data_dir: pathlib.Path) -> tfds.core.DatasetBuilder:
  builder = Youtubers(data_dir=str(data_dir))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
  )
  return builder


@pytest.fixture(scope="module")
def small_build(youtubers_dir, tmp_path_factory):
  """12 pairs per speaker copied from the release, plus an unpaired face and a corrupt pair."""
  manual = tmp_path_factory.mktemp("manual")
  speakers = sorted(p.name for p in (youtubers_dir / "train").iterdir() if p.is_dir())
  for speaker in speakers:
    src, dst = youtubers_dir / "train" / speaker, manual / "train" / speaker
    dst.mkdir(parents=True)
    for n in _frames(src)[:PAIRS_PER_SPEAKER]:
      shutil.copy(src / f"cropped_face_frame_{n}.png", dst)
      shutil.copy(src / f"preprocessed_frame_{n}.wav", dst)
  first = manual / "train" / speakers[0]
  # An unpaired face and an unreadable pair: both skipped, neither aborts the build.
  shutil.copy(
      first / f"cropped_face_frame_{_frames(first)[0]}.png", first / "cropped_face_frame_999999.png"
  )
  (first / "cropped_face_frame_1.png").write_bytes(b"not an image")
  (first / "preprocessed_frame_1.wav").write_bytes(b"not a wav")
  data_dir = tmp_path_factory.mktemp("data")
  builder = _build(manual, data_dir)
  return manual, data_dir, speakers, builder


def test_small_build_counts_labels_and_dtypes(small_build):
  manual, data_dir, speakers, builder = small_build
  assert speakers == ["jaimealtozano", "javiermuniz"]
  assert builder.info.features["speaker"].names == speakers
  assert set(builder.info.splits.keys()) == {"train", "validation"}  # no test/ folder in the copy
  # 12 pairs per speaker: 2 faces x 5 windows, then 2 windows of a third face. The last face
  # (10% of 3, rounded, at least 1) -> validation.
  assert builder.info.splits["train"].num_examples == 2 * 10
  assert builder.info.splits["validation"].num_examples == 2 * 2
  assert (
      builder.info.citation and builder.info.homepage and "validation" in builder.info.description
  )
  for split in ("train", "validation"):
    source = tfds.data_source("youtubers", split=split, data_dir=str(data_dir))
    for i in range(len(source)):
      record = source[i]
      assert record["waveform"].dtype == np.int16 and record["waveform"].shape == (16000,)
      assert (
          record["face"].dtype == np.uint8
          and record["face"].ndim == 3
          and record["face"].shape[2] == 3
      )
      assert speakers[record["speaker"]] == record["speaker_name"].decode()
      assert (
          record["clip_id"].decode()
          == f"{record['speaker_name'].decode()}/face{record['frame'] // 5}"
      )


def test_validation_is_last_face_block_and_never_shares_a_face(small_build):
  _, data_dir, speakers, _ = small_build
  by_split = {}
  for split in ("train", "validation"):
    source = tfds.data_source("youtubers", split=split, data_dir=str(data_dir))
    by_split[split] = [
        (source[i]["speaker_name"].decode(), int(source[i]["frame"])) for i in range(len(source))
    ]
  for speaker in speakers:
    train_n = [n for s, n in by_split["train"] if s == speaker]
    val_n = [n for s, n in by_split["validation"] if s == speaker]
    assert val_n and max(train_n) < min(val_n)  # a contiguous block at the end
    assert not {n // 5 for n in train_n} & {n // 5 for n in val_n}


def test_faces_are_true_rgb_and_audio_is_untouched(small_build):
  manual, data_dir, _, _ = small_build
  source = tfds.data_source("youtubers", split="train", data_dir=str(data_dir))
  import soundfile

  for i in range(0, len(source), 7):
    record = source[i]
    src = manual / "train" / record["speaker_name"].decode()
    raw = np.asarray(
        Image.open(src / f"cropped_face_frame_{record['frame']}.png").convert("RGB")
    ).astype(float)
    face = record["face"].astype(float)
    assert face.shape == raw.shape
    swapped_err = np.abs(face - raw[..., ::-1]).mean()
    as_is_err = np.abs(face - raw).mean()
    assert swapped_err < 3.0, swapped_err  # JPEG q95 re-encoding noise only
    assert as_is_err > 3 * swapped_err  # and the channels really were swapped
    wav, rate = soundfile.read(src / f"preprocessed_frame_{record['frame']}.wav", dtype="int16")
    assert rate == 16000
    np.testing.assert_array_equal(record["waveform"], wav)
  # True colour: skin is redder than it is blue (the raw release is the other way round).
  face = source[0]["face"].astype(float)
  centre = face[
      face.shape[0] // 3 : 2 * face.shape[0] // 3, face.shape[1] // 3 : 2 * face.shape[1] // 3
  ]
  assert centre[..., 0].mean() > centre[..., 2].mean()


def test_reads_back_without_tensorflow(small_build):
  _, data_dir, _, _ = small_build
  code = (
      # As if TensorFlow were not installed: the path finder no longer sees it.
      "import sys\n"
      "finder = next(f for f in sys.meta_path if getattr(f, '__name__', '') == 'PathFinder')\n"
      "class NoTensorFlow:\n"
      "  @staticmethod\n"
      "  def find_spec(name, path=None, target=None):\n"
      "    if name.split('.')[0] == 'tensorflow': return None\n"
      "    return finder.find_spec(name, path, target)\n"
      "sys.meta_path[sys.meta_path.index(finder)] = NoTensorFlow\n"
      "import tensorflow_datasets as tfds\n"
      f"s = tfds.data_source('youtubers', split='validation', data_dir={str(data_dir)!r})\n"
      "r = s[0]; assert r['face'].shape[2] == 3 and r['waveform'].shape == (16000,)\n"
      "assert 'tensorflow' not in sys.modules\n"
      "print('OK', len(s))\n"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert out.returncode == 0 and "OK 4" in out.stdout, out.stderr[-2000:]


def test_find_pairs_counts_what_it_leaves_out(small_build):
  manual, _, speakers, _ = small_build
  pairs, skipped = ytb.find_pairs(manual / "train")
  assert skipped["face_without_wav"] == 1 and skipped["wav_without_face"] == 0
  assert len(pairs) == 2 * PAIRS_PER_SPEAKER + 1  # the corrupt pair is paired, then fails to load
  assert ytb._load_example(next(p for p in pairs if p.frame == 1)) is None


def test_test_folder_becomes_test_split(youtubers_dir, tmp_path):
  manual = tmp_path / "manual"
  # 2 faces (5 windows each) for train/ -> one face each in train and validation; 1 face for test/.
  for split, frames in (("train", slice(0, 10)), ("test", slice(10, 15))):
    src = youtubers_dir / "train" / "javiermuniz"
    dst = manual / split / "javiermuniz"
    dst.mkdir(parents=True)
    for n in _frames(src)[frames]:
      shutil.copy(src / f"cropped_face_frame_{n}.png", dst)
      shutil.copy(src / f"preprocessed_frame_{n}.wav", dst)
  builder = _build(manual, tmp_path / "data")
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": 5,
      "validation": 5,
      "test": 5,
  }
  assert builder.info.features["speaker"].names == ["javiermuniz"]


def test_a_split_with_no_pairs_is_left_out(youtubers_dir, tmp_path):
  # One face per speaker: no validation block can be carved; the build still succeeds.
  src = youtubers_dir / "train" / "javiermuniz"
  dst = tmp_path / "manual" / "train" / "javiermuniz"
  dst.mkdir(parents=True)
  for n in _frames(src)[:5]:
    shutil.copy(src / f"cropped_face_frame_{n}.png", dst)
    shutil.copy(src / f"preprocessed_frame_{n}.wav", dst)
  builder = _build(tmp_path / "manual", tmp_path / "data")
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 5}


def test_missing_train_folder_is_a_clear_error(tmp_path):
  (tmp_path / "manual" / "stuff").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match="no train/ folder"):
    _build(tmp_path / "manual", tmp_path / "data")


def test_carve_validation_rejects_bad_fraction():
  with pytest.raises(ValueError, match="fraction"):
    ytb.carve_validation([], fraction=1.0)


@pytest.mark.slow
def test_whole_shared_folder_every_pair_is_one_record(youtubers_dir, youtubers_tfds):
  builder = Youtubers(data_dir=str(youtubers_tfds))  # conftest built it (the quality gate's data)
  counts = {k: v.num_examples for k, v in builder.info.splits.items()}
  pairs, _ = ytb.find_pairs(youtubers_dir / "train")
  # The authors' whole training release: 5 speech windows of each of 540 + 569 faces.
  assert counts["train"] + counts["validation"] == len(pairs) == 5545
  assert counts == {"train": 4990, "validation": 555}
  assert 0.08 < counts["validation"] / len(pairs) < 0.12
