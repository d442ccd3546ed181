"""The documented path without raw data at hand: the youtubers builder downloads the authors'
release (the download itself is replaced by a local copy in the release's GitHub zip layout)."""

import shutil

import pytest
import tensorflow_datasets as tfds

from wav2pix_jax.data import datasets

import helpers


@pytest.fixture()
def fake_release(youtubers_dir, tmp_path, monkeypatch):
  """A 2-speaker, 2-faces-each slice laid out as GitHub's zip extracts it; downloads return it."""
  extracted = tmp_path / "extracted"
  for speaker in ("jaimealtozano", "javiermuniz"):
    src = youtubers_dir / "train" / speaker
    dst = extracted / "Wav2Pix-master" / "dataset" / "train" / speaker
    dst.mkdir(parents=True)
    frames = sorted(int(p.stem.rsplit("_", 1)[1]) for p in src.glob("cropped_face_frame_*.png"))[
        :10
    ]
    for n in frames:
      shutil.copy(src / f"cropped_face_frame_{n}.png", dst)
      shutil.copy(src / f"preprocessed_frame_{n}.wav", dst)
  urls = []

  def download_and_extract(self, url):
    urls.append(url)
    return str(extracted)

  monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", download_and_extract)
  datasets._prepared_builder.cache_clear()
  yield urls
  datasets._prepared_builder.cache_clear()


@pytest.mark.parametrize("manual_dir", ["", "/nonexistent/shared/youtubers"])
def test_no_manual_dir_downloads_the_release(fake_release, tmp_path, manual_dir, caplog):
  config = helpers.load_config("base")
  config.input.data_dir = str(tmp_path / "data")
  config.input.manual_dir = manual_dir
  info = datasets.get_dataset_info(config.input)
  assert fake_release == ["https://github.com/miqueltubau/Wav2Pix/archive/refs/heads/master.zip"]
  assert info.speaker_names == ("jaimealtozano", "javiermuniz")
  assert info.split_sizes == {"train": 10, "validation": 10}  # per speaker: 1 face each, 5 windows
  if manual_dir:  # a configured folder that is missing is named, then the download is used
    assert "is not a directory: downloading dataset 'youtubers'" in caplog.text


def test_missing_manual_dir_without_a_download_is_a_clear_error(tmp_path):
  config = helpers.load_config("base")
  config.input.dataset = "wav2pix_videos"
  config.input.data_dir = str(tmp_path / "data")
  config.input.manual_dir = str(tmp_path / "no_videos_here")
  with pytest.raises(ValueError, match="input.manual_dir .* is not a directory"):
    datasets.get_dataset_info(config.input)
