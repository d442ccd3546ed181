"""wav2pix_videos on Apache Beam builds the same records and report as the single-process build.

A small folder of talking videos is written here with PyAV (3 speakers, 2 videos of 4 s each, a
real face on a plain background and that speaker's real speech; plus one unreadable file and
one video without a face, so the report has failures and drops to agree on). It is built with
`tfds build` once single-process and once on Beam's DirectRunner with 2 worker processes, and
the two builds are compared record by record. Also: `tfds build` starts and builds the other
builders (TFDS 4.9.10's CLI imports apache_beam and mlcroissant at start: the `[beam]` extra).
"""

import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

try:
  import apache_beam  # noqa: F401 - only to know whether the Beam build can run here
except ImportError as e:
  pytest.skip(
      f"apache_beam is not importable ({e}): the Beam build tests need "
      "`pip install -e '.[beam]'`",
      allow_module_level=True,
  )

import video_helpers  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SPEAKERS = ("spk0", "spk1", "spk2")
VIDEOS_PER_SPEAKER = 2
SECONDS = 4
BEAM_OPTIONS = "runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing"
# One `tfds build` may take this long. pytest-timeout's limit (setup.cfg: 600 s) counts fixture
# setup too, and both_builds runs two builds in the setup of whichever of its tests comes first:
# this module's tests get room for two builds, so a build that hangs fails with its own
# TimeoutExpired (naming the command), not with pytest-timeout's stack dump.
BUILD_TIMEOUT_S = 900
pytestmark = pytest.mark.timeout(2 * BUILD_TIMEOUT_S + 300)


@pytest.fixture(scope="module")
def talking_videos(youtubers_dir, tmp_path_factory) -> pathlib.Path:
  """<root>/<speaker>/<video>.mp4: the 6 talking videos, an unreadable file, a faceless video."""
  root = tmp_path_factory.mktemp("talking_videos")
  video_helpers.write_talking_videos(
      root,
      youtubers_dir,
      speakers=len(SPEAKERS),
      videos_per_speaker=VIDEOS_PER_SPEAKER,
      seconds=SECONDS,
  )
  (root / "spk1" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
  video_helpers.write_video(
      root / "spk2" / "noface.mp4",
      video_helpers.canvas(None, 0, 0, 0, 320, 240),
      video_helpers.speech(youtubers_dir, "javiermuniz", 100, 3),
      seconds=3,
      fps=10,
  )
  return root


def _tfds_build(target: str, data_dir: pathlib.Path, *extra: str) -> float:
  """Runs `tfds build <target> --data_dir=...` as a user would; returns its wall time in s."""
  command = [
      sys.executable,
      "-m",
      "tensorflow_datasets.scripts.cli.main",
      "build",
      target,
      f"--data_dir={data_dir}",
      *extra,
  ]
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
  started = time.perf_counter()
  done = subprocess.run(
      command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
  )
  seconds = time.perf_counter() - started
  assert done.returncode == 0, f"{' '.join(command)}\n{done.stderr[-6000:]}"
  return seconds


def _read_build(data_dir: pathlib.Path) -> dict:
  """{"report", "splits": {split: [records in file order]}, "files": [shards], "speakers"}."""
  import tensorflow_datasets as tfds
  import data_prep.videos  # noqa: F401 - registers wav2pix_videos

  (version_dir,) = data_dir.glob("wav2pix_videos/*/")
  report = json.loads((version_dir / "build_report.json").read_text(encoding="utf-8"))
  builder = tfds.builder("wav2pix_videos", data_dir=str(data_dir))
  splits = {}
  for split in builder.info.splits:
    source = tfds.data_source("wav2pix_videos", split=split, data_dir=str(data_dir))
    splits[split] = [source[i] for i in range(len(source))]
  files = [p.name for p in version_dir.glob("*.array_record-*")]
  return {
      "report": report,
      "splits": splits,
      "files": files,
      "speakers": builder.info.features["speaker"].names,
  }


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


@pytest.fixture(scope="module")
def both_builds(talking_videos, tmp_path_factory):
  """(single-process build, Beam build) of the talking videos, and their wall times."""
  single_dir, beam_dir = tmp_path_factory.mktemp("single"), tmp_path_factory.mktemp("beam")
  single_s = _tfds_build("data_prep/videos", single_dir, f"--manual_dir={talking_videos}")
  beam_s = _tfds_build(
      "data_prep/videos",
      beam_dir,
      f"--manual_dir={talking_videos}",
      f"--beam_pipeline_options={BEAM_OPTIONS}",
  )
  # The figures for the README (run with -s to see them).
  videos = sum(1 for _ in talking_videos.rglob("*.mp4"))
  print(
      f"\nwav2pix_videos, {videos} videos: single process {single_s:.1f} s, "
      f"Beam DirectRunner 2 workers {beam_s:.1f} s (both including process start-up)"
  )
  return _read_build(single_dir), _read_build(beam_dir)


@pytest.mark.slow
def test_beam_build_writes_the_same_records_as_single_process(both_builds):
  single, beam = both_builds
  assert beam["speakers"] == single["speakers"] == sorted(SPEAKERS)
  assert sorted(beam["splits"]) == sorted(single["splits"]) == ["train", "validation"]
  for split, single_records in single["splits"].items():
    beam_records = beam["splits"][split]
    as_key = lambda r: (_text(r["clip_id"]), int(r["frame"]))
    assert [as_key(r) for r in beam_records] == [as_key(r) for r in single_records], split
    for ours, theirs in zip(beam_records, single_records):
      key = as_key(ours)
      assert _text(ours["speaker_name"]) == _text(theirs["speaker_name"]), key
      assert int(ours["speaker"]) == int(theirs["speaker"]), key
      np.testing.assert_array_equal(ours["waveform"], theirs["waveform"], err_msg=str(key))
      np.testing.assert_array_equal(ours["face"], theirs["face"], err_msg=str(key))
      np.testing.assert_array_equal(ours["face_box"], theirs["face_box"], err_msg=str(key))
  # The same shards (the file bytes differ: TFDS's Beam and single-process writers lay out
  # ArrayRecord chunks differently).
  assert sorted(beam["files"]) == sorted(single["files"])


def test_beam_build_writes_the_same_report(both_builds, talking_videos):
  single, beam = both_builds
  strip = lambda report: {k: v for k, v in report.items() if k != "seconds"}
  assert strip(beam["report"]) == strip(single["report"])
  # And that report counts what was planted: the faceless video's 3 frames and the unreadable
  # file, and every talking video's frames (1 per second) kept but for the validation gap.
  report = beam["report"]
  assert report["videos_dir"] == str(talking_videos)
  assert report["videos_found"] == 8 and report["videos_read"] == 7
  assert report["failed_by_reason"] == {"unreadable": 1, "no_audio": 0, "no_video": 0}
  assert list(report["failed_files"]) == ["spk1/broken.mp4"]
  assert report["frames_sampled"] == len(SPEAKERS) * VIDEOS_PER_SPEAKER * SECONDS + 3
  assert report["dropped"]["no_face"] == 3
  assert report["faces_kept"] + sum(report["dropped"].values()) == report["frames_sampled"]
  assert report["faces_kept"] == sum(len(r) for r in beam["splits"].values())
  for speaker in SPEAKERS:
    assert report["per_speaker"][speaker]["train"] > 0
    assert report["per_speaker"][speaker]["validation"] == 1  # round(0.1 * 8), at least one


def test_in_process_beam_build_and_its_counters(talking_videos, both_builds, tmp_path):
  """The default DirectRunner in this process; the Beam counters agree with the report."""
  import tensorflow_datasets as tfds
  from data_prep.videos import build
  from data_prep.videos import videos_dataset_builder

  builder = videos_dataset_builder.Wav2PixVideos(data_dir=str(tmp_path))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(
          manual_dir=str(talking_videos), beam_options=build.beam_options("runner=DirectRunner")
      )
  )
  report, single = builder.build_report, both_builds[0]["report"]
  assert {k: v for k, v in report.items() if k != "seconds"} == {
      k: v for k, v in single.items() if k != "seconds"
  }
  expected = {
      "videos_read": report["videos_read"],
      "videos_failed": report["videos_failed"],
      "frames_sampled": report["frames_sampled"],
      # Faces found before the validation carve dropped some of them.
      "faces_found": report["faces_kept"] + report["dropped"]["split_gap"],
      **{
          f"dropped_{reason}": count
          for reason, count in report["dropped"].items()
          if reason != "split_gap"
      },
  }
  # A counter never incremented is not reported.
  assert builder.beam_counters == {k: v for k, v in expected.items() if v}


def test_beam_build_with_no_validation_block_says_why(youtubers_dir, tmp_path):
  """Beam declares its splits up front: an empty validation split fails with a clear error."""
  import tensorflow_datasets as tfds
  from data_prep.videos import build
  from data_prep.videos import extract
  from data_prep.videos import videos_dataset_builder

  # One frame (at 0 s) per speaker: a record each, so no speaker has a validation block.
  video_helpers.write_talking_videos(
      tmp_path / "videos", youtubers_dir, speakers=2, videos_per_speaker=1, seconds=2
  )
  builder = videos_dataset_builder.Wav2PixVideos(
      data_dir=str(tmp_path / "tfds"), options=extract.ExtractOptions(frames_per_second=0.5)
  )
  with pytest.raises(ValueError, match="empty validation split: no speaker gave 2 or more"):
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=str(tmp_path / "videos"),
            beam_options=build.beam_options("runner=DirectRunner"),
        )
    )


def test_beam_options_flag(monkeypatch):
  from apache_beam.options import pipeline_options
  from data_prep.videos import build

  options = build.beam_options(BEAM_OPTIONS).view_as(pipeline_options.DirectOptions)
  assert (options.direct_num_workers, options.direct_running_mode) == (2, "multi_processing")
  monkeypatch.setitem(sys.modules, "apache_beam.options", None)  # as if Beam were not installed
  with pytest.raises(ValueError, match=r"needs apache-beam: pip install -e '\.\[beam\]'"):
    build.beam_options(BEAM_OPTIONS)


@pytest.mark.slow
def test_tfds_cli_builds_the_synthetic_builder(tmp_path):
  seconds = _tfds_build("data_prep/synthetic", tmp_path)
  counts = {split: len(records) for split, records in _read_synthetic(tmp_path).items()}
  assert counts == {"train": 168, "validation": 36, "test": 36, "test_unseen": 80}, seconds


def _read_synthetic(data_dir: pathlib.Path) -> dict:
  import tensorflow_datasets as tfds
  import data_prep.synthetic  # noqa: F401 - registers synthetic_talking_faces

  return {
      split: tfds.data_source("synthetic_talking_faces", split=split, data_dir=str(data_dir))
      for split in ("train", "validation", "test", "test_unseen")
  }


@pytest.mark.slow
def test_tfds_cli_builds_the_youtubers_builder(youtubers_dir, tmp_path):
  _tfds_build("data_prep/youtubers", tmp_path, f"--manual_dir={youtubers_dir}")
  import tensorflow_datasets as tfds
  import data_prep.youtubers  # noqa: F401 - registers youtubers

  source = tfds.data_source("youtubers", split="train", data_dir=str(tmp_path))
  assert len(source) == 4990  # the release's count (see test_youtubers_builder.py)
