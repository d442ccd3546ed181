"""Hostile inputs (issue 6): every bad file is handled or skipped-and-counted / refused cleanly.

Dataset building: the `youtubers` builder on a small copy of the shared release with planted bad
files (and the `wav2pix_videos` extraction on bad video files); an interrupted build re-runs to a
complete dataset. Generation: the generate CLI on a tiny workdir with bad or unusual audio: each
gives a face (right shape) or ONE error line on stderr, a non-zero exit and nothing in --out.
Workdirs: config / checkpoint payloads are never executed (Orbax + JSON only).
"""

import ast
import io
import json
import logging
import os
import pathlib
import pickle
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image
import pytest
import soundfile

REPO = pathlib.Path(__file__).resolve().parents[1]
SR = 16_000


def _env():
  return dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")


# =============================================================================================
# Generation: the generate CLI on a tiny workdir.


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
  from test_inference import save_run, tiny_config  # the workdir layout training leaves

  path = tmp_path_factory.mktemp("hostile_gen") / "wd"
  save_run(path, tiny_config(), steps=(1,))
  return path


@pytest.fixture(scope="session")
def generator(workdir):
  from wav2pix_jax.serving import inference

  return inference.load(workdir)


def _speech(seconds: float, rate: int = SR, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  t = np.arange(int(round(seconds * rate))) / rate
  return (
      0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))
      + 0.01 * rng.normal(size=t.size)
  ).astype(np.float32)


def _generate(workdir, audio_path, out, capfd, *extra):
  """(exit status, stdout, stderr) of the generate CLI, in-process."""
  from wav2pix_jax import generate

  capfd.readouterr()
  status = generate.main([f"--workdir={workdir}", f"--audio={audio_path}", f"--out={out}", *extra])
  captured = capfd.readouterr()
  return status, captured.out, captured.err


def _assert_face(workdir, audio_path, out, capfd, generator) -> np.ndarray:
  """The CLI succeeds with one 64x64 RGB face; the model input it saw is finite."""
  from wav2pix_jax.data import audio

  status, _, err = _generate(workdir, audio_path, out, capfd)
  assert status == 0, err
  face = np.asarray(Image.open(out / f"{pathlib.Path(audio_path).stem}.png"))
  assert face.shape == (64, 64, 3) and face.dtype == np.uint8
  window = audio.preprocess(audio.load_audio(audio_path), window=generator.window)
  assert (
      np.all(np.isfinite(window)) and 0.0 < np.abs(window).max() <= 1.95 + 1e-6
  )  # peak 1, pre-emphasis
  assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left over
  return face


def _assert_refused(workdir, audio_path, out, capfd, match: str) -> str:
  """Exit 1, one `wav2pix-generate: error:` line naming the problem, nothing written to --out."""
  status, _, err = _generate(workdir, audio_path, out, capfd)
  assert status == 1, err
  assert err.endswith("\n") and err.count("\n") == 1, err
  assert err.startswith("wav2pix-generate: error:") and "Traceback" not in err, err
  assert match in err, err
  assert not out.exists() or not any(out.iterdir())
  return err


def test_generate_empty_file_is_refused(workdir, tmp_path, capfd):
  (tmp_path / "empty.wav").write_bytes(b"")
  _assert_refused(workdir, tmp_path / "empty.wav", tmp_path / "out", capfd, "empty file")


def test_generate_pure_silence_is_refused(workdir, tmp_path, capfd):
  soundfile.write(tmp_path / "silence.wav", np.zeros(SR, np.int16), SR)
  _assert_refused(workdir, tmp_path / "silence.wav", tmp_path / "out", capfd, "silent")


def test_generate_silence_with_every_is_refused(workdir, tmp_path, capfd):
  # With --every a silent window INSIDE speech is the face of an all-zero input (a video keeps its
  # frames; tests/test_generate_rules.py), but a recording silent throughout is refused.
  soundfile.write(tmp_path / "silence.wav", np.zeros(SR // 4, np.int16), SR)
  status, _, err = _generate(
      workdir, tmp_path / "silence.wav", tmp_path / "out", capfd, "--every=0.05"
  )
  assert status == 1 and err.count("\n") == 1 and "Traceback" not in err, err
  assert err.startswith("wav2pix-generate: error:") and "silent throughout" in err, err
  assert not (tmp_path / "out").exists()


def test_generate_clipping_square_wave(workdir, generator, tmp_path, capfd):
  t = np.arange(SR) / SR
  square = np.where(np.sin(2 * np.pi * 150 * t) >= 0, 32767, -32768).astype(np.int16)  # full-scale
  soundfile.write(tmp_path / "clipped.wav", square, SR)
  _assert_face(workdir, tmp_path / "clipped.wav", tmp_path / "out", capfd, generator)


def test_generate_dc_offset(workdir, generator, tmp_path, capfd):
  soundfile.write(
      tmp_path / "dc.wav", (_speech(0.5) * 0.5 + 0.45).astype(np.float32), SR, subtype="FLOAT"
  )
  _assert_face(workdir, tmp_path / "dc.wav", tmp_path / "out", capfd, generator)
  soundfile.write(tmp_path / "constant.wav", np.full(SR // 2, 0.3, np.float32), SR, subtype="FLOAT")
  _assert_face(workdir, tmp_path / "constant.wav", tmp_path / "out", capfd, generator)


@pytest.mark.slow
def test_generate_8khz_and_48khz_match_16khz(workdir, generator, tmp_path, capfd):
  from scipy import signal

  speech = _speech(0.5)
  soundfile.write(tmp_path / "s16.wav", speech, SR, subtype="FLOAT")
  reference = _assert_face(workdir, tmp_path / "s16.wav", tmp_path / "out", capfd, generator)
  soundfile.write(
      tmp_path / "s48.wav",
      signal.resample_poly(speech, 3, 1).astype(np.float32),
      48_000,
      subtype="FLOAT",
  )
  at_48k = _assert_face(workdir, tmp_path / "s48.wav", tmp_path / "out", capfd, generator)
  # 8 kHz holds only the speech below 4 kHz: its face is the face of that band-limited speech
  # at 16 kHz (the same signal, upsampled here with the same polyphase filter family).
  at_8k_speech = signal.resample_poly(speech, 1, 2).astype(np.float32)
  soundfile.write(tmp_path / "s8.wav", at_8k_speech, 8_000, subtype="FLOAT")
  at_8k = _assert_face(workdir, tmp_path / "s8.wav", tmp_path / "out", capfd, generator)
  soundfile.write(
      tmp_path / "s8up.wav",
      signal.resample_poly(at_8k_speech, 2, 1).astype(np.float32),
      SR,
      subtype="FLOAT",
  )
  band_limited = _assert_face(workdir, tmp_path / "s8up.wav", tmp_path / "out", capfd, generator)
  # 48 kHz -> 16 kHz gives back (nearly) the same input, hence (nearly) the same face.
  assert np.abs(at_48k.astype(int) - reference.astype(int)).mean() < 2.0
  assert np.abs(at_8k.astype(int) - band_limited.astype(int)).mean() < 2.0


def test_generate_stereo_is_downmixed(workdir, generator, tmp_path, capfd):
  speech = _speech(0.5)
  soundfile.write(tmp_path / "mono.wav", speech, SR, subtype="FLOAT")
  soundfile.write(tmp_path / "stereo.wav", np.stack([speech, speech], 1), SR, subtype="FLOAT")
  soundfile.write(
      tmp_path / "halves.wav",
      np.stack([speech * 2 - 0.1, 0.1 * np.ones_like(speech)], 1) / 2,
      SR,
      subtype="FLOAT",
  )
  mono = _assert_face(workdir, tmp_path / "mono.wav", tmp_path / "out", capfd, generator)
  np.testing.assert_array_equal(
      _assert_face(workdir, tmp_path / "stereo.wav", tmp_path / "out", capfd, generator), mono
  )
  # The channel mean, not the first channel: (2s - 0.1 + 0.1) / 2 / 2 = s / 2, same face after
  # normalising.
  halves = _assert_face(workdir, tmp_path / "halves.wav", tmp_path / "out", capfd, generator)
  assert np.abs(halves.astype(int) - mono.astype(int)).max() <= 2


def test_generate_24bit_and_float_wav(workdir, generator, tmp_path, capfd):
  speech = _speech(0.5)
  soundfile.write(tmp_path / "pcm16.wav", speech, SR, subtype="PCM_16")
  soundfile.write(tmp_path / "pcm24.wav", speech, SR, subtype="PCM_24")
  soundfile.write(tmp_path / "f32.wav", speech, SR, subtype="FLOAT")
  soundfile.write(tmp_path / "f64.wav", speech.astype(np.float64), SR, subtype="DOUBLE")
  faces = [
      _assert_face(workdir, tmp_path / f"{name}.wav", tmp_path / "out", capfd, generator)
      for name in ("pcm16", "pcm24", "f32", "f64")
  ]
  for face in faces[1:]:
    assert np.abs(face.astype(int) - faces[0].astype(int)).max() <= 2


def test_generate_float_wav_with_nan_is_refused(workdir, tmp_path, capfd):
  speech = _speech(0.5)
  speech[100] = np.nan
  soundfile.write(tmp_path / "nan.wav", speech, SR, subtype="FLOAT")
  _assert_refused(workdir, tmp_path / "nan.wav", tmp_path / "out", capfd, "NaN")


def test_generate_short_clips(workdir, generator, tmp_path, capfd):
  # 0.2 s is longer than the tiny model's 1024-sample window: a face. Shorter than the window:
  # refused.
  soundfile.write(tmp_path / "short.wav", _speech(0.2), SR)
  _assert_face(workdir, tmp_path / "short.wav", tmp_path / "out", capfd, generator)
  soundfile.write(tmp_path / "tiny.wav", _speech(0.03), SR)
  _assert_refused(
      workdir, tmp_path / "tiny.wav", tmp_path / "out2", capfd, "needs at least window=1024"
  )


def test_generate_long_file(workdir, generator, tmp_path, capfd):
  # 10 minutes at 8 kHz (stands in for an hour-long recording; the decode streams in chunks).
  minutes = 10
  rng = np.random.default_rng(0)
  with soundfile.SoundFile(
      tmp_path / "long.wav", "w", samplerate=8_000, channels=1, subtype="PCM_16"
  ) as f:
    for _ in range(minutes):
      f.write((rng.normal(0, 3000, 60 * 8_000)).clip(-32768, 32767).astype(np.int16))
  start = time.perf_counter()
  status, _, err = _generate(workdir, tmp_path / "long.wav", tmp_path / "out", capfd)
  seconds = time.perf_counter() - start
  assert status == 0, err
  assert np.asarray(Image.open(tmp_path / "out" / "long.png")).shape == (64, 64, 3)
  print(f"\n10 min at 8 kHz: one face in {seconds:.1f} s")  # a figure, not a bound: CPUs differ


def test_generate_corrupt_files_are_refused(workdir, tmp_path, capfd):
  for seed in (0, 1):  # seed 1 starts like an MPEG frame (libsndfile's mpg123 used to warn on fd 2)
    (tmp_path / "noise.wav").write_bytes(np.random.default_rng(seed).bytes(3000))
    _assert_refused(workdir, tmp_path / "noise.wav", tmp_path / "out", capfd, "noise.wav")
  # A RIFF/WAVE header followed by garbage.
  (tmp_path / "header.wav").write_bytes(b"RIFF\xff\xff\x00\x00WAVEfmt " + b"\x07" * 200)
  _assert_refused(workdir, tmp_path / "header.wav", tmp_path / "out", capfd, "header.wav")
  # An image named like audio (FFmpeg opens it, as a picture with no sound).
  Image.new("RGB", (8, 8)).save(tmp_path / "picture.wav", format="PNG")
  _assert_refused(workdir, tmp_path / "picture.wav", tmp_path / "out", capfd, "no audio stream")


def test_generate_truncated_wav_gives_a_face(workdir, generator, tmp_path, capfd):
  # The header promises 1 s but the data stops at 0.4 s: what is there is used.
  soundfile.write(tmp_path / "cut.wav", _speech(1.0), SR, subtype="PCM_16")
  data = (tmp_path / "cut.wav").read_bytes()
  (tmp_path / "cut.wav").write_bytes(data[: 44 + 2 * int(0.4 * SR)])
  _assert_face(workdir, tmp_path / "cut.wav", tmp_path / "out", capfd, generator)


def test_generate_directory_given_as_file_is_refused(workdir, tmp_path, capfd):
  (tmp_path / "folder.wav").mkdir()
  _assert_refused(workdir, tmp_path / "folder.wav", tmp_path / "out", capfd, "is a directory")


def test_generate_missing_and_dangling_symlink_are_refused(workdir, tmp_path, capfd):
  (tmp_path / "dangling.wav").symlink_to(tmp_path / "gone.wav")
  _assert_refused(workdir, tmp_path / "dangling.wav", tmp_path / "out", capfd, "no such file")


def test_generate_out_is_a_file_is_refused(workdir, tmp_path, capfd):
  soundfile.write(tmp_path / "ok.wav", _speech(0.2), SR)
  (tmp_path / "out").write_text("keep me")
  status, _, err = _generate(workdir, tmp_path / "ok.wav", tmp_path / "out", capfd)
  assert status == 1 and err.count("\n") == 1 and err.startswith("wav2pix-generate: error:"), err
  assert (tmp_path / "out").read_text() == "keep me"


def test_generate_cli_subprocess_stderr_is_one_line(workdir, tmp_path):
  """As a user runs it: the real stderr of the process holds the one error line and nothing else."""
  (tmp_path / "noise.wav").write_bytes(np.random.default_rng(1).bytes(3000))
  done = subprocess.run(
      [
          sys.executable,
          "-m",
          "wav2pix_jax.generate",
          f"--workdir={workdir}",
          f"--audio={tmp_path / 'noise.wav'}",
          f"--out={tmp_path / 'out'}",
      ],
      cwd=REPO,
      env=_env(),
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert done.returncode == 1, done.stderr
  lines = done.stderr.strip().splitlines()
  assert (
      len(lines) == 1
      and lines[0].startswith("wav2pix-generate: error:")
      and "noise.wav" in lines[0]
  ), done.stderr
  assert not (tmp_path / "out").exists()


# =============================================================================================
# Workdirs are read through Orbax + JSON only: planted payloads never run.


def _marker_payloads(directory: pathlib.Path, marker: pathlib.Path) -> dict[str, bytes]:
  """A pickle and a Python file that would each create `marker` if loaded / run."""

  class Payload:

    def __reduce__(self):
      return pathlib.Path.touch, (marker,)

  return {
      "pickle": pickle.dumps(Payload()),
      "python": f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n".encode(),
  }


def test_planted_pickle_and_python_files_never_run(workdir, tmp_path):
  from wav2pix_jax.serving import inference

  planted = tmp_path / "wd"
  shutil.copytree(workdir, planted)
  marker = tmp_path / "EXECUTED"
  payloads = _marker_payloads(tmp_path, marker)
  step_dir = planted / "checkpoints" / "1"
  places = [
      planted / "config.py",
      planted / "checkpoints" / "1" / "__init__.py",
      step_dir / "state" / "evil.py",
      planted / "sitecustomize.py",
      step_dir / "meta" / "evil.py",
  ]
  for place in places:
    place.write_bytes(payloads["python"])
  for place in (
      planted / "checkpoints" / "state.pkl",
      step_dir / "state.pkl",
      step_dir / "state" / "evil.pkl",
      step_dir / "meta" / "metadata.pkl",
      planted / "config.pkl",
  ):
    place.write_bytes(payloads["pickle"])
  # Loading works (the planted files are simply not read) and runs nothing.
  loaded = inference.load(planted)
  assert loaded.step == 1 and loaded.generate(_speech(0.2), SR).shape == (1, 64, 64, 3)
  done = subprocess.run(
      [
          sys.executable,
          "-m",
          "wav2pix_jax.generate",
          f"--workdir={planted}",
          "--audio=x.wav",
          f"--out={tmp_path / 'out'}",
      ],
      cwd=tmp_path,
      env=_env(),
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert (
      done.returncode == 1 and "x.wav" in done.stderr
  )  # loaded the workdir, then refused the missing file
  assert not marker.exists()
  # The payloads are live: loading them the unsafe way would have created the marker.
  pickle.loads(payloads["pickle"])
  assert marker.exists()
  marker.unlink()
  subprocess.run([sys.executable, str(places[0])], check=True)
  assert marker.exists()


def test_config_json_with_code_is_data_or_a_clear_error(workdir, tmp_path, capfd):
  from wav2pix_jax.serving import inference

  marker = tmp_path / "EXECUTED"
  payloads = _marker_payloads(tmp_path, marker)
  code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
  planted = tmp_path / "wd"
  shutil.copytree(workdir, planted)
  # 1. Code inside JSON strings stays a string.
  config = json.loads((planted / "config.json").read_text())
  config["input"]["dataset"] = code
  config["input"]["data_dir"] = "!!python/object/apply:os.system ['touch marker']"
  (planted / "config.json").write_text(json.dumps(config))
  assert inference.load(planted).config.input.dataset == code
  # ... and keys ConfigDict refuses, or a config of the wrong shape: one line, no traceback.
  soundfile.write(tmp_path / "ok.wav", _speech(0.2), SR)
  for i, bad in enumerate(
      ({**config, "__reduce__": code}, [code], code, {}, {**config, "model": 3})
  ):
    (planted / "config.json").write_text(json.dumps(bad))
    _assert_refused(planted, tmp_path / "ok.wav", tmp_path / f"out_bad{i}", capfd, "config.json")
  # 2. A config.json that is Python code, or a pickle: a clear one-line error.
  for name, payload in (("python", payloads["python"]), ("pickle", payloads["pickle"])):
    (planted / "config.json").write_bytes(payload)
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON \("):
      inference.load(planted)
    _assert_refused(
        planted,
        tmp_path / "ok.wav",
        tmp_path / f"out_{name}",
        capfd,
        "config.json is not valid JSON",
    )
  # 3. The checkpoint's own JSON metadata replaced by a pickle: a clear one-line error too.
  shutil.rmtree(planted)
  shutil.copytree(workdir, planted)
  (planted / "config.json").unlink()
  meta_files = [p for p in (planted / "checkpoints" / "1" / "meta").iterdir() if p.is_file()]
  assert meta_files
  for path in meta_files:
    path.write_bytes(payloads["pickle"])
  _assert_refused(
      planted,
      tmp_path / "ok.wav",
      tmp_path / "out_meta",
      capfd,
      "metadata of checkpoint step 1 is not valid JSON",
  )
  assert not marker.exists()


_FORBIDDEN_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "dill",
    "cloudpickle",
    "marshal",
    "shelve",
    "joblib",
}
_FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}


def _unsafe_loading(source: str) -> list[str]:
  """Imports of pickle-like modules, calls of eval/exec/compile/__import__, allow_pickle=True."""
  found = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      found += [a.name for a in node.names if a.name.split(".")[0] in _FORBIDDEN_MODULES]
    elif (
        isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in _FORBIDDEN_MODULES
    ):
      found.append(node.module)
    elif isinstance(node, ast.Call):
      if isinstance(node.func, ast.Name) and node.func.id in _FORBIDDEN_CALLS:
        found.append(f"{node.func.id}()")
      found += [
          f"{k.arg}=True"
          for k in node.keywords
          if k.arg == "allow_pickle"
          and not (isinstance(k.value, ast.Constant) and k.value.value is False)
      ]
    elif (
        isinstance(node, ast.Attribute)
        and node.attr in ("load_pickle", "loads")
        and isinstance(node.value, ast.Name)
        and node.value.id in _FORBIDDEN_MODULES
    ):
      found.append(f"{node.value.id}.{node.attr}")
  return found


def test_package_never_unpickles_or_evals():
  # The checker itself catches what it should (and ignores the word in prose).
  assert _unsafe_loading(
      "import pickle\nx = eval('1')\nnp.load(p, allow_pickle=True)\n'''no pickle'''"
  ) == ["pickle", "eval()", "allow_pickle=True"]
  assert _unsafe_loading("from cloudpickle import loads\nexec(code)") == ["cloudpickle", "exec()"]
  assert _unsafe_loading('"""No pickle anywhere; never eval(config)."""') == []
  files = sorted((REPO / "wav2pix_jax").rglob("*.py"))
  assert len(files) >= 10
  offenders = {
      str(f.relative_to(REPO)): bad for f in files if (bad := _unsafe_loading(f.read_text()))
  }
  assert offenders == {}


# =============================================================================================
# Dataset building: the youtubers builder on a copy of the shared release with planted bad files.

GOOD_PAIRS = 6  # per speaker, copied from the release
ODD = "Zoë Ñ 日本 speaker"  # a speaker folder with spaces and non-ASCII characters
# Planted pairs in the ODD folder: name -> (frame N, what the build must do with it).
PLANTED = {
    "truncated_jpeg": (100000, "skip"),
    "empty_face": (100005, "skip"),
    "zero_length_wav": (100010, "skip"),
    "zero_byte_wav": (100015, "skip"),
    "wav_8bit": (100020, "convert"),
    "wav_44k": (100025, "convert"),
    "wav_stereo": (100030, "convert"),
    "wav_float": (100035, "convert"),
    "wav_24bit": (100040, "convert"),
    "real_png": (100045, "keep"),
    "face_is_directory": (100050, "skip"),
    "wav_is_directory": (100055, "skip"),
    "wav_broken_symlink": (100060, "skip"),
    "face_broken_symlink": (100065, "skip"),
}


def _release_frames(speaker_dir: pathlib.Path) -> list[int]:
  return sorted(int(p.stem.rsplit("_", 1)[1]) for p in speaker_dir.glob("cropped_face_frame_*.png"))


def _plant_release(youtubers_dir: pathlib.Path, manual: pathlib.Path) -> dict:
  """Copies GOOD_PAIRS pairs per speaker (javiermuniz into the ODD folder) and plants PLANTED."""
  from scipy import signal

  sources = {"jaimealtozano": "jaimealtozano", ODD: "javiermuniz"}
  for folder, source in sources.items():
    src, dst = youtubers_dir / "train" / source, manual / "train" / folder
    dst.mkdir(parents=True)
    for n in _release_frames(src)[:GOOD_PAIRS]:
      shutil.copy(src / f"cropped_face_frame_{n}.png", dst)
      shutil.copy(src / f"preprocessed_frame_{n}.wav", dst)
  odd = manual / "train" / ODD
  src = youtubers_dir / "train" / "javiermuniz"
  first = _release_frames(src)[0]
  face_bytes = (src / f"cropped_face_frame_{first}.png").read_bytes()
  speech, rate = soundfile.read(src / f"preprocessed_frame_{first}.wav", dtype="int16")
  assert rate == SR and speech.shape == (SR,)
  as_float = speech.astype(np.float32) / 32768.0
  for name, (n, _) in PLANTED.items():
    face, wav = odd / f"cropped_face_frame_{n}.png", odd / f"preprocessed_frame_{n}.wav"
    face.write_bytes(face_bytes)
    soundfile.write(wav, speech, SR, subtype="PCM_16")
    if name == "truncated_jpeg":
      face.write_bytes(face_bytes[: len(face_bytes) // 2])
    elif name == "empty_face":
      face.write_bytes(b"")
    elif name == "zero_length_wav":
      soundfile.write(wav, np.zeros(0, np.int16), SR, subtype="PCM_16")
    elif name == "zero_byte_wav":
      wav.write_bytes(b"")
    elif name == "wav_8bit":
      soundfile.write(wav, as_float, SR, subtype="PCM_U8")
    elif name == "wav_44k":
      soundfile.write(
          wav, signal.resample_poly(as_float, 441, 160).astype(np.float32), 44_100, subtype="PCM_16"
      )
    elif name == "wav_stereo":
      soundfile.write(wav, np.stack([as_float, as_float], 1), SR, subtype="PCM_16")
    elif name == "wav_float":
      soundfile.write(wav, as_float, SR, subtype="FLOAT")
    elif name == "wav_24bit":
      soundfile.write(wav, as_float, SR, subtype="PCM_24")
    elif name == "real_png":  # a true PNG (of the same BGR pixels) under the release's .png name
      with Image.open(io.BytesIO(face_bytes)) as image:
        image.convert("RGB").save(face, format="PNG")
      assert face.read_bytes().startswith(b"\x89PNG")
    elif name == "face_is_directory":
      face.unlink()
      face.mkdir()
    elif name == "wav_is_directory":
      wav.unlink()
      wav.mkdir()
    elif name == "wav_broken_symlink":
      wav.unlink()
      wav.symlink_to(odd / "missing.wav")
    elif name == "face_broken_symlink":
      face.unlink()
      face.symlink_to(odd / "missing.png")
  (odd / "notes.txt").write_text("not part of the release")
  (odd / "cropped_face_frame_x.png").write_bytes(face_bytes)  # no frame number
  (manual / "train" / "stray file.wav").write_bytes(b"")  # a file where speaker folders live
  return {"speech": speech, "face_bytes": face_bytes}


class _Records(logging.Handler):

  def __init__(self):
    super().__init__(logging.INFO)
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


def _build_youtubers(manual, data_dir):
  import tensorflow_datasets as tfds
  from data_prep.youtubers import Youtubers

  builder = Youtubers(data_dir=str(data_dir))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  return builder


def _all_records(data_dir) -> dict:
  import tensorflow_datasets as tfds

  records = {}
  for split in ("train", "validation"):
    source = tfds.data_source("youtubers", split=split, data_dir=str(data_dir))
    for i in range(len(source)):
      r = source[i]
      records[(r["speaker_name"].decode(), int(r["frame"]))] = r
  return records


@pytest.fixture(scope="module")
def hostile_release(youtubers_dir, tmp_path_factory):
  manual = tmp_path_factory.mktemp("hostile manual ä")
  planted = _plant_release(youtubers_dir, manual)
  data_dir = tmp_path_factory.mktemp("hostile data")
  handler, root = _Records(), logging.getLogger()
  old_level = root.level
  root.addHandler(handler)
  root.setLevel(logging.INFO)
  try:
    builder = _build_youtubers(manual, data_dir)
  finally:
    root.removeHandler(handler)
    root.setLevel(old_level)
  return {
      "manual": manual,
      "data_dir": data_dir,
      "builder": builder,
      "log": handler.messages,
      "records": _all_records(data_dir),
      **planted,
  }


def _outcome(hostile_release, name: str):
  """The record of a planted pair, or None; a skipped pair must be logged as skipped."""
  n, expected = PLANTED[name]
  record = hostile_release["records"].get((ODD, n))
  skipped = [m for m in hostile_release["log"] if m.startswith(f"youtubers: skipping {ODD}/{n}:")]
  assert (record is None) == bool(skipped) == (expected == "skip"), (name, skipped)
  return record


def test_build_completes_with_counts_and_labels(hostile_release):
  builder, records = hostile_release["builder"], hostile_release["records"]
  assert builder.info.features["speaker"].names == [
      ODD,
      "jaimealtozano",
  ]  # sorted; spaces, non-ASCII kept
  kept = sum(1 for _, what in PLANTED.values() if what != "skip")
  num_skipped = len(PLANTED) - kept
  assert len(records) == 2 * GOOD_PAIRS + kept
  assert sum(s.num_examples for s in builder.info.splits.values()) == 2 * GOOD_PAIRS + kept
  # Skipped pairs are counted in the log (per split), unrecognised files at pairing time.
  unreadable = [m for m in hostile_release["log"] if "unreadable pairs skipped" in m]
  assert (
      sum(int(m.split(" records, ")[1].split()[0]) for m in unreadable) == num_skipped
  ), unreadable
  summary = next(m for m in hostile_release["log"] if "files left out" in m)
  assert "'unrecognised_file': 2" in summary, summary  # notes.txt, cropped_face_frame_x.png
  for record in records.values():
    assert record["waveform"].dtype == np.int16 and record["waveform"].shape == (SR,)
    assert (
        record["face"].dtype == np.uint8
        and record["face"].ndim == 3
        and record["face"].shape[2] == 3
    )


def test_speaker_folder_with_spaces_and_non_ascii(hostile_release):
  names = hostile_release["builder"].info.features["speaker"].names
  ours = [
      r for (speaker, n), r in hostile_release["records"].items() if speaker == ODD and n < 100000
  ]
  assert len(ours) == GOOD_PAIRS
  for r in ours:
    assert names[int(r["speaker"])] == ODD and r["clip_id"].decode().startswith(f"{ODD}/face")


@pytest.mark.parametrize("name", [k for k, (_, what) in PLANTED.items() if what == "skip"])
def test_bad_pair_is_skipped_and_logged(hostile_release, name):
  # truncated JPEG, 0-byte face, 0-frame wav, 0-byte wav, directories and dangling symlinks named
  # like release files: each pair is left out and logged, the build goes on.
  assert _outcome(hostile_release, name) is None


@pytest.mark.parametrize("name", ["wav_8bit", "wav_44k", "wav_stereo", "wav_float", "wav_24bit"])
def test_wrong_wav_format_is_converted(hostile_release, name):
  # Decision: convert (downmix, resample to 16 kHz, requantise to int16), not skip.
  record = _outcome(hostile_release, name)
  got = record["waveform"].astype(np.float64)
  want = hostile_release["speech"].astype(np.float64)
  assert got.shape == want.shape == (SR,)
  rel_err = np.sqrt(np.mean((got - want) ** 2) / np.mean(want**2))
  assert rel_err < {"wav_8bit": 0.2, "wav_44k": 0.05}.get(name, 1e-3), (name, rel_err)


def test_real_png_named_png_is_read_and_swapped(hostile_release):
  record = _outcome(hostile_release, "real_png")
  with Image.open(io.BytesIO(hostile_release["face_bytes"])) as image:
    bgr = np.asarray(image.convert("RGB")).astype(float)
  face = record["face"].astype(float)
  assert face.shape == bgr.shape
  # Treated like the release's JPEG-in-.png faces: BGR swapped to true RGB.
  assert np.abs(face - bgr[..., ::-1]).mean() < 3.0 < np.abs(face - bgr).mean()


def test_interrupted_build_rerun_completes(hostile_release, tmp_path):
  """A build killed (SIGKILL) half-way leaves a partial dir.

  The re-run completes with the right counts.
  """
  data_dir = tmp_path / "data"
  script = (
      "import os, signal\n"
      "from data_prep.youtubers import youtubers_dataset_builder as ytb\n"
      "load, calls = ytb._load_example, [0]\n"
      "def dying(pair):\n"
      "  calls[0] += 1\n"
      "  if calls[0] == 8: os.kill(os.getpid(), signal.SIGKILL)\n"
      "  return load(pair)\n"
      "ytb._load_example = dying\n"
      "import tensorflow_datasets as tfds\n"
      f"b = ytb.Youtubers(data_dir={str(data_dir)!r})\n"
      "b.download_and_prepare(download_config=tfds.download.DownloadConfig("
      f"manual_dir={str(hostile_release['manual'])!r}))\n"
  )
  done = subprocess.run(
      [sys.executable, "-c", script],
      cwd=REPO,
      env=_env(),
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
  leftovers = [p for p in data_dir.rglob("*") if "incomplete" in p.name or "tmp" in p.name.lower()]
  assert leftovers, sorted(data_dir.rglob("*"))  # the kill really left a partial build behind
  builder = _build_youtubers(hostile_release["manual"], data_dir)
  expected = hostile_release["builder"].info.splits
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      k: v.num_examples for k, v in expected.items()
  }
  records = _all_records(data_dir)
  assert records.keys() == hostile_release["records"].keys()


# =============================================================================================
# Dataset building: the wav2pix_videos extraction on bad files (each a failure reason, never a
# raise).


def _sine(seconds: float) -> np.ndarray:
  t = np.arange(int(seconds * SR)) / SR
  return (8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)


def test_videos_audio_file_with_video_extension_is_no_video(tmp_path):
  from data_prep.videos import extract

  soundfile.write(
      tmp_path / "speech.mp4", _sine(2.0), SR, subtype="PCM_16", format="WAV"
  )  # WAV bytes, .mp4 name
  result = extract.extract_video(tmp_path / "speech.mp4", extract.ExtractOptions())
  assert result.failure == "no_video" and not result.records, result
  Image.new("RGB", (64, 64)).save(tmp_path / "still.mov", format="JPEG")  # a picture, .mov name
  result = extract.extract_video(tmp_path / "still.mov", extract.ExtractOptions())
  assert result.failure in ("no_audio", "unreadable") and not result.records, result


def test_videos_truncated_file_is_counted_not_raised(tmp_path):
  from data_prep.videos import extract
  from test_videos_builder import _write_video

  image = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
  _write_video(tmp_path / "whole.mp4", image, _sine(3.0))
  data = (tmp_path / "whole.mp4").read_bytes()
  (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
  assert extract.extract_video(tmp_path / "whole.mp4", extract.ExtractOptions()).failure is None
  result = extract.extract_video(tmp_path / "cut.mp4", extract.ExtractOptions())
  assert (
      result.failure == "unreadable" and result.error
  ), result  # moov atom (the index) is at the end


def test_videos_directory_and_dangling_symlink_named_like_videos(tmp_path):
  from data_prep.videos import extract

  speaker = tmp_path / "Zoë speaker"
  speaker.mkdir()
  soundfile.write(speaker / "sound.mp4", _sine(2.0), SR, subtype="PCM_16", format="WAV")
  (speaker / "folder.mp4").mkdir()  # a folder named like a video: a folder (searched), not a video
  (speaker / "gone.mp4").symlink_to(tmp_path / "moved away.mp4")  # a dangling link: a failed video
  found = extract.find_videos(tmp_path)
  assert found == {"Zoë speaker": [speaker / "gone.mp4", speaker / "sound.mp4"]}
  result = extract.extract_video(speaker / "gone.mp4", extract.ExtractOptions())
  assert result.failure == "unreadable" and "No such file" in result.error, result
  result = extract.extract_video(speaker / "folder.mp4", extract.ExtractOptions())
  assert result.failure == "unreadable", result


def test_evaluate_cli_malformed_config_is_one_line(workdir, tmp_path, capfd):
  from wav2pix_jax import evaluate

  planted = tmp_path / "wd"
  shutil.copytree(workdir, planted)
  config = json.loads((planted / "config.json").read_text())
  (planted / "config.json").write_text(json.dumps({**config, "__reduce__": "x"}))
  capfd.readouterr()
  assert evaluate.main([f"--workdir={planted}", f"--out={tmp_path / 'out'}"]) == 1
  err = capfd.readouterr().err
  assert (
      err.count("\n") == 1 and err.startswith("wav2pix-evaluate: error:") and "config.json" in err
  ), err
  assert not (tmp_path / "out").exists()


def test_cli_config_json_edited_away_from_its_checkpoint_is_one_line(workdir, tmp_path, capfd):
  """config.json with another model.embed_dim than its checkpoint: one line naming the field."""
  from wav2pix_jax import evaluate

  planted = tmp_path / "wd"
  shutil.copytree(workdir, planted)
  config = json.loads((planted / "config.json").read_text())
  config["model"]["embed_dim"] += 8
  (planted / "config.json").write_text(json.dumps(config))
  soundfile.write(tmp_path / "ok.wav", _speech(0.2), SR)
  err = _assert_refused(planted, tmp_path / "ok.wav", tmp_path / "out", capfd, "model.embed_dim")
  assert "does not match checkpoint step 1" in err, err
  capfd.readouterr()
  assert evaluate.main([f"--workdir={planted}", f"--out={tmp_path / 'eval'}"]) == 1
  err = capfd.readouterr().err
  assert err.count("\n") == 1 and err.startswith("wav2pix-evaluate: error:"), err
  assert "model.embed_dim" in err and "Traceback" not in err, err
