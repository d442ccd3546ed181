"""wav2pix_videos: build from small videos made of the shared real faces and speech, then check.

The videos are planted: faces placed at known spots on a plain background, the speech of the
same speaker as the soundtrack, plus files that must be skipped and counted (corrupt, empty,
no audio, silent, no face, a face too small, audio too short).
"""

import json
import os
import pathlib
import subprocess
import sys

import av
import numpy as np
from PIL import Image
import pytest

from data_prep.videos import extract
import video_helpers

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
FRAME_W, FRAME_H = 320, 240
FACE_SIDE = 160  # planted face side (dlib box about 125-150 px)
SMALL_FACE_SIDE = 80  # planted face side of the "too small" video (dlib box about 72 px)
MIN_FACE_SIZE = 100  # build option: keeps the big faces, drops the small one
SECONDS = 3  # planted videos: frames sampled at 0, 1, 2 s ...
LONG_SECONDS = 6  # ... but "clip one.mp4": frames at 0..5 s, windows away from the start
FPS = 10
SPEAKERS = {"javiermuniz": "javiermuniz", "Zoë speaker": "jaimealtozano"}  # folder -> source


def _true_rgb_face(youtubers_dir, speaker: str, index: int) -> np.ndarray:
  return video_helpers.true_rgb_face(youtubers_dir, speaker, index)


def _speech(youtubers_dir, speaker: str, start: int, seconds: int) -> np.ndarray:
  return video_helpers.speech(youtubers_dir, speaker, start, seconds)


def _canvas(face: np.ndarray | None, side: int, left: int, top: int) -> np.ndarray:
  return video_helpers.canvas(face, side, left, top, FRAME_W, FRAME_H)


def _write_video(
    path: pathlib.Path,
    image: np.ndarray | None,
    audio: np.ndarray | None,
    video_codec: str = "libx264",
    audio_codec: str = "aac",
    seconds: int = SECONDS,
) -> None:
  video_helpers.write_video(
      path, image, audio, seconds=seconds, fps=FPS, video_codec=video_codec, audio_codec=audio_codec
  )


@pytest.fixture(scope="module")
def planted(youtubers_dir, tmp_path_factory):
  """Writes the videos folder; returns (root, {clip_id: (canvas, speech, face box)})."""
  root = tmp_path_factory.mktemp("videos")
  good = {}
  jm, za = root / "javiermuniz", root / "Zoë speaker"
  jm.mkdir()
  za.mkdir()
  specs = [  # (clip_id, source speaker, face index, face position, speech start, codecs, seconds)
      ("javiermuniz/clip one.mp4", "javiermuniz", 0, (30, 20), 0, ("libx264", "aac"), LONG_SECONDS),
      ("javiermuniz/clip2.MKV", "javiermuniz", 200, (140, 60), 20, ("mpeg4", "aac"), SECONDS),
      ("Zoë speaker/second.MOV", "jaimealtozano", 0, (150, 30), 0, ("libx264", "aac"), SECONDS),
      (
          "Zoë speaker/vid é.webm",
          "jaimealtozano",
          300,
          (40, 70),
          20,
          ("libvpx", "libopus"),
          SECONDS,
      ),
  ]
  for clip_id, source, face_index, (left, top), speech_start, (vcodec, acodec), seconds in specs:
    canvas = _canvas(_true_rgb_face(youtubers_dir, source, face_index), FACE_SIDE, left, top)
    speech = _speech(youtubers_dir, source, speech_start, seconds)
    _write_video(root / clip_id, canvas, speech, vcodec, acodec, seconds)
    good[clip_id] = (canvas, speech, (left, top, left + FACE_SIDE, top + FACE_SIDE))
  face = _true_rgb_face(youtubers_dir, "javiermuniz", 100)
  speech = _speech(youtubers_dir, "javiermuniz", 40, SECONDS)
  (jm / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
  (jm / "empty.mp4").write_bytes(b"")
  _write_video(jm / "mute.mp4", _canvas(face, FACE_SIDE, 60, 40), None)
  _write_video(
      jm / "silent.mp4", _canvas(face, FACE_SIDE, 60, 40), np.zeros(SECONDS * 16_000, np.int16)
  )
  _write_video(jm / "noface.mp4", _canvas(None, 0, 0, 0), speech)
  _write_video(jm / "small.mp4", _canvas(face, SMALL_FACE_SIDE, 60, 40), speech)
  _write_video(jm / "short_audio.mp4", _canvas(face, FACE_SIDE, 60, 40), speech[:8_000])
  with av.open(str(jm / "sound only.mp4"), "w") as out:  # an audio file with a video extension
    video_helpers.write_audio(out, out.add_stream("aac", rate=16_000, layout="mono"), speech)
  (za / "notes.txt").write_text("not a video")
  (root / "empty speaker").mkdir()
  return root, good


@pytest.fixture(scope="module")
def built(planted, tmp_path_factory):
  """Builds through the module CLI, as a user would; returns (root, good, data_dir, report)."""
  root, good = planted
  data_dir = tmp_path_factory.mktemp("tfds")
  command = [
      sys.executable,
      "-m",
      "data_prep.videos.build",
      f"--videos={root}",
      f"--data_dir={data_dir}",
      "--validation_fraction=0.25",
      f"--min_face_size={MIN_FACE_SIZE}",
  ]
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
  done = subprocess.run(
      command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
  )
  assert done.returncode == 0, done.stderr[-4000:]
  reports = list(data_dir.glob("wav2pix_videos/*/build_report.json"))
  assert len(reports) == 1, list(data_dir.rglob("*"))
  report = json.loads(reports[0].read_text(encoding="utf-8"))
  assert json.loads(done.stdout[done.stdout.index("{") :]) == report  # the CLI prints it too
  return root, good, data_dir, report


def test_report_counts_what_was_planted(built):
  _, _, _, report = built
  assert report["speakers"] == ["Zoë speaker", "javiermuniz"]  # "empty speaker" holds no video
  assert report["videos_found"] == 12
  assert report["videos_failed"] == 4
  assert report["videos_read"] == 8
  assert report["failed_by_reason"] == {"unreadable": 2, "no_audio": 1, "no_video": 1}
  assert {k: v.split(":")[0] for k, v in report["failed_files"].items()} == {
      "javiermuniz/broken.mp4": "unreadable",
      "javiermuniz/empty.mp4": "unreadable",
      "javiermuniz/mute.mp4": "no_audio",
      "javiermuniz/sound only.mp4": "no_video",
  }
  assert report["frames_sampled"] == 7 * SECONDS + LONG_SECONDS
  assert report["dropped"] == {
      "no_face": 3,
      "face_too_small": 3,
      "too_short_audio": 3,
      "silent_audio": 3,
      "split_gap": 2,
  }
  # 4 good videos give 6 + 3 + 3 + 3 frames; per speaker the last 2 (round(0.25 * 9) and
  # round(0.25 * 6)) go to validation, and the first frame of each boundary video shares
  # speech with them, so it is dropped.
  assert report["faces_kept"] == 13
  assert report["records"] == {"train": 9, "validation": 4}
  assert report["per_speaker"] == {
      "Zoë speaker": {"videos": 2, "train": 3, "validation": 2},
      "javiermuniz": {"videos": 10, "train": 6, "validation": 2},
  }
  sampled = report["faces_kept"] + sum(report["dropped"].values())
  assert sampled == report["frames_sampled"]


@pytest.fixture(scope="module")
def splits(built):
  """{split: (data source, decoded records)}, read back as the input pipeline will."""
  import tensorflow_datasets as tfds
  import data_prep.videos  # noqa: F401 - registers wav2pix_videos

  out = {}
  for split in ("train", "validation"):
    source = tfds.data_source("wav2pix_videos", split=split, data_dir=str(built[2]))
    out[split] = source, [source[i] for i in range(len(source))]
  return out


def test_splits_are_contiguous_time_blocks(splits):
  source, train = splits["train"]
  _, validation = splits["validation"]
  names = source.dataset_info.features["speaker"].names
  assert names == ["Zoë speaker", "javiermuniz"]
  as_key = lambda r: (
      r["clip_id"].decode() if isinstance(r["clip_id"], bytes) else r["clip_id"],
      int(r["frame"]),
  )
  assert sorted(map(as_key, train)) == [("Zoë speaker/second.MOV", t) for t in (0, 1000, 2000)] + [
      ("javiermuniz/clip one.mp4", t) for t in range(0, LONG_SECONDS * 1000, 1000)
  ]
  assert sorted(map(as_key, validation)) == [
      ("Zoë speaker/vid é.webm", t) for t in (1000, 2000)
  ] + [("javiermuniz/clip2.MKV", t) for t in (1000, 2000)]
  for record in train + validation:
    name = (
        record["speaker_name"].decode()
        if isinstance(record["speaker_name"], bytes)
        else record["speaker_name"]
    )
    assert names[int(record["speaker"])] == name
    assert as_key(record)[0].startswith(name + "/")


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
  a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
  a, b = a - a.mean(), b - b.mean()
  return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def test_faces_are_crops_of_the_planted_faces_in_true_rgb(built, splits):
  good = built[1]
  records, more = splits["train"][1], splits["validation"][1]
  options = extract.ExtractOptions()
  for record in records + more:
    clip_id = (
        record["clip_id"].decode() if isinstance(record["clip_id"], bytes) else record["clip_id"]
    )
    canvas, _, (left, top, right, bottom) = good[clip_id]
    face = np.asarray(record["face"])
    assert face.shape == (options.face_size, options.face_size, 3) and face.dtype == np.uint8
    # Found where it was planted: a square crop centred on the planted face, covering most of it.
    x0, y0, x1, y1 = (int(v) for v in record["face_box"])
    assert x1 - x0 == y1 - y0 >= MIN_FACE_SIZE, (clip_id, (x0, y0, x1, y1))
    assert 0 <= x0 and 0 <= y0 and x1 <= FRAME_W and y1 <= FRAME_H
    assert abs((x0 + x1) / 2 - (left + right) / 2) < 0.2 * FACE_SIDE, (clip_id, (x0, y0, x1, y1))
    assert abs((y0 + y1) / 2 - (top + bottom) / 2) < 0.2 * FACE_SIDE, (clip_id, (x0, y0, x1, y1))
    overlap = max(0, min(x1, right) - max(x0, left)) * max(0, min(y1, bottom) - max(y0, top))
    assert overlap > 0.6 * FACE_SIDE**2, clip_id
    # The stored face is that crop of the planted image, up to video + JPEG compression.
    expected = np.asarray(
        Image.fromarray(canvas).crop((x0, y0, x1, y1)).resize(face.shape[:2], Image.LANCZOS)
    )
    assert _correlation(face, expected) > 0.9, clip_id
    # True RGB: channel means match the planted image (a red/blue swap would not).
    np.testing.assert_allclose(face.reshape(-1, 3).mean(0), expected.reshape(-1, 3).mean(0), atol=8)
    assert _correlation(face, expected[..., ::-1]) < _correlation(face, expected) - 0.02
    # And it is not another planted face.
    for other_id, (other_canvas, _, _) in good.items():
      if other_id != clip_id:
        other = np.asarray(
            Image.fromarray(other_canvas).crop((x0, y0, x1, y1)).resize(face.shape[:2])
        )
        assert _correlation(face, other) < _correlation(face, expected) - 0.1, (clip_id, other_id)


def test_speech_is_the_planted_speech_around_the_frame(built, splits):
  from scipy import signal

  good = built[1]
  records, more = splits["train"][1], splits["validation"][1]
  for record in records + more:
    clip_id = (
        record["clip_id"].decode() if isinstance(record["clip_id"], bytes) else record["clip_id"]
    )
    _, speech, _ = good[clip_id]
    waveform = np.asarray(record["waveform"]).astype(np.float64)
    assert record["waveform"].dtype == np.int16
    frame_s, length_s = int(record["frame"]) / 1000, len(speech) / 16_000
    # Frame time +- 2 s, clipped to the video.
    start, end = max(frame_s - 2.0, 0.0), min(frame_s + 2.0, length_s)
    assert abs(len(waveform) - (end - start) * 16_000) <= 1100, (clip_id, frame_s, len(waveform))
    # Where in the source speech does it come from? The best cross-correlation lag must be the
    # window start, give or take the codec delay (AAC priming is 1024 samples).
    source = speech.astype(np.float64)
    scores = signal.correlate(source, waveform, mode="full")  # index k: lag k - (len(waveform) - 1)
    lag = int(np.argmax(scores)) - (len(waveform) - 1)
    assert abs(lag - start * 16_000) <= 1100, (clip_id, frame_s, lag)
    skip = max(0, -lag)  # samples of the waveform before the source starts (codec delay)
    n = min(len(waveform) - skip, len(source) - max(lag, 0))
    assert _correlation(waveform[skip : skip + n], source[max(lag, 0) : max(lag, 0) + n]) > 0.8, (
        clip_id,
        frame_s,
        lag,
    )


def test_rebuild_with_other_options_needs_overwrite(built):
  from data_prep.videos import build

  root, _, data_dir, report = built
  same = build.build(
      str(root), str(data_dir), extract.ExtractOptions(min_face_size=MIN_FACE_SIZE), 0.25
  )
  assert same == report  # already prepared with these options: reused, not rebuilt
  with pytest.raises(ValueError, match="--overwrite"):
    build.build(str(root), str(data_dir), extract.ExtractOptions(min_face_size=MIN_FACE_SIZE), 0.5)
  with pytest.raises(FileNotFoundError, match="--videos folder not found"):
    build.build(str(root / "nope"), str(data_dir))


def test_find_videos_errors_and_extensions(tmp_path):
  with pytest.raises(FileNotFoundError, match="one subfolder per speaker"):
    extract.find_videos(tmp_path / "missing")
  (tmp_path / "a").mkdir()
  (tmp_path / "a" / "x.txt").write_text("")
  with pytest.raises(ValueError, match="no videos found"):
    extract.find_videos(tmp_path)
  for name in ("b.MP4", "c.Mkv", "d.webm", "e.mov", ".hidden.mp4"):
    (tmp_path / "a" / name).write_bytes(b"")
  assert [p.name for p in extract.find_videos(tmp_path)["a"]] == [
      "b.MP4",
      "c.Mkv",
      "d.webm",
      "e.mov",
  ]


def test_square_crop_box_is_square_and_clamped():
  assert extract.square_crop_box((100, 100, 140, 140), 0.25, 320, 240) == (90, 90, 150, 150)
  assert extract.square_crop_box((0, 0, 40, 40), 0.25, 320, 240) == (0, 0, 60, 60)  # shifted in
  assert extract.square_crop_box((300, 220, 320, 240), 0.5, 320, 240) == (280, 200, 320, 240)
  assert extract.square_crop_box((0, 0, 300, 200), 0.5, 320, 240) == (30, 0, 270, 240)  # shrunk


def test_detect_face_takes_the_most_confident_face():
  class FakeRect:

    def __init__(self, *ltrb):
      self.ltrb = ltrb

    def left(self):
      return self.ltrb[0]

    def top(self):
      return self.ltrb[1]

    def right(self):
      return self.ltrb[2]

    def bottom(self):
      return self.ltrb[3]

  class FakeDetector:

    def run(self, image, upsample, threshold):
      return (
          [FakeRect(0, 0, 10, 10), FakeRect(20, 20, 40, 40), FakeRect(5, 5, 9, 9)],
          [0.3, 1.5, 0.9],
          [0, 0, 0],
      )

  image = np.zeros((1280, 960, 3), np.uint8)  # downscaled by 2 for detection: boxes scale back
  box, score = extract.detect_face(
      FakeDetector(), image, extract.ExtractOptions(detect_max_side=640)
  )
  assert (box, score) == ((40, 40, 80, 80), 1.5)


def test_options_are_validated():
  with pytest.raises(ValueError, match="min_speech_seconds"):
    extract.ExtractOptions(speech_seconds=1.0, min_speech_seconds=2.0)
  with pytest.raises(ValueError, match="frames_per_second"):
    extract.ExtractOptions(frames_per_second=0)
