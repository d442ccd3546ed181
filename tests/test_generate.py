"""generate CLI: PNG faces, talking-face video with sound, one-line errors with nothing
half-written."""

import numpy as np
import pytest
import soundfile
from PIL import Image

from wav2pix_jax import generate


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  from test_inference import save_run, tiny_config  # the workdir layout training leaves

  path = tmp_path_factory.mktemp("gen") / "wd"
  save_run(path, tiny_config(), steps=(1,))
  return path


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
  path = tmp_path_factory.mktemp("audio") / "talk.wav"
  t = np.arange(int(0.6 * 22_050)) / 22_050  # not 16 kHz: load_audio resamples
  soundfile.write(
      path,
      (0.3 * np.sin(2 * np.pi * 200 * t) * np.sin(2 * np.pi * 2 * t)).astype(np.float32),
      22_050,
  )
  return path


def test_one_face_per_file_and_every(workdir, speech, tmp_path):
  assert generate.main([f"--workdir={workdir}", f"--audio={speech}", f"--out={tmp_path}"]) == 0
  assert np.asarray(Image.open(tmp_path / "talk.png")).shape == (64, 64, 3)
  assert (
      generate.main(
          [f"--workdir={workdir}", f"--audio={speech}", f"--out={tmp_path}", "--every=0.1"]
      )
      == 0
  )
  # 0.6 s, 1024-sample windows every 1600 samples: 1 + (9600 - 1024) // 1600 = 6 faces.
  assert len(list((tmp_path / "talk").glob("face_*.png"))) == 6
  assert not list(tmp_path.glob(".*"))


def test_video_has_frames_and_sound(workdir, speech, tmp_path):
  import av

  video = tmp_path / "talk.mp4"
  assert (
      generate.main(
          [
              f"--workdir={workdir}",
              f"--audio={speech}",
              f"--out={tmp_path / 'f'}",
              f"--video={video}",
              "--fps=10",
          ]
      )
      == 0
  )
  with av.open(str(video)) as container:
    assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
    frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
  with av.open(str(video)) as container:
    sound = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
  assert len(frames) == 6 and frames[0].shape == (64, 64, 3)  # 0.6 s at 10 fps
  assert 0.5 * 16_000 < sound.size < 0.8 * 16_000 and np.abs(sound).max() > 0.05
  assert len(list((tmp_path / "f" / "talk").glob("*.png"))) == 6


def test_errors_are_one_line_and_write_nothing(workdir, speech, tmp_path, capsys):
  out = tmp_path / "o"
  assert (
      generate.main(
          [
              f"--workdir={workdir}",
              f"--audio={speech}",
              f"--audio={tmp_path / 'nope.wav'}",
              f"--out={out}",
          ]
      )
      == 1
  )
  err = capsys.readouterr().err.strip()
  assert err.startswith("wav2pix-generate: error:") and "nope.wav" in err and "\n" not in err
  assert not out.exists()
  assert (
      generate.main(
          [
              f"--workdir={workdir}",
              f"--audio={speech}",
              f"--audio={speech}",
              f"--out={out}",
              f"--video={tmp_path / 'v.mp4'}",
          ]
      )
      == 2
  )
  assert "exactly one" in capsys.readouterr().err
  assert generate.main([f"--workdir={tmp_path / 'none'}", f"--audio={speech}", f"--out={out}"]) == 1
  assert not out.exists()


def test_fuse_makes_one_face_from_every_window_of_every_file(workdir, speech, tmp_path, capsys):
  from wav2pix_jax.data import audio
  from wav2pix_jax.serving import inference

  other = tmp_path / "other.wav"
  soundfile.write(other, np.random.default_rng(0).normal(0, 0.1, 16_000).astype(np.float32), 16_000)
  out = tmp_path / "o"
  args = [f"--workdir={workdir}", f"--out={out}", "--fuse"]
  assert generate.main(args + [f"--audio={speech}", f"--audio={other}"]) == 0
  printed = capsys.readouterr().out
  face = np.asarray(Image.open(out / "fused.png"))
  generator = inference.load(workdir)
  waveforms = [audio.load_audio(f, sample_rate=16_000) for f in (speech, other)]
  np.testing.assert_array_equal(face, generator.generate_fused(waveforms, 16_000)[0])
  # 0.6 s and 1 s of 1024-sample windows, no overlap: 9 + 15.
  assert "1 face from the mean embedding of 24 window(s)" in printed and "fused.png" in printed
  # One file: named after it; --every sets the hop.
  assert generate.main(args + [f"--audio={speech}", "--every=0.01"]) == 0
  np.testing.assert_array_equal(
      np.asarray(Image.open(out / "talk.png")),
      generator.generate_fused(waveforms[0], 16_000, every=0.01)[0],
  )
  assert sorted(p.name for p in out.iterdir()) == ["fused.png", "talk.png"]  # nothing else


def test_fuse_errors_are_one_line(workdir, speech, tmp_path, capsys):
  short = tmp_path / "short.wav"
  soundfile.write(short, np.full(200, 0.5, np.float32), 16_000)
  silent = tmp_path / "silent.wav"
  soundfile.write(silent, np.zeros(16_000, np.float32), 16_000)
  out = tmp_path / "o"
  args = [f"--workdir={workdir}", f"--out={out}", "--fuse"]
  for extra, status, words in (
      ([f"--audio={speech}", f"--audio={short}"], 1, ["short.wav", "needs at least window"]),
      ([f"--audio={silent}"], 1, ["silent"]),
      ([f"--audio={speech}", f"--video={tmp_path / 'v.mp4'}"], 2, ["--fuse", "--video"]),
  ):
    assert generate.main(args + extra) == status, extra
    err = capsys.readouterr().err.strip()
    assert err.startswith("wav2pix-generate: error:") and "\n" not in err, err
    assert all(w in err for w in words), err
  assert not out.exists()
