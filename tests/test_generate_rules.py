"""What generate promises about variety and silence (docs/generate.md)."""

import numpy as np
import pytest
import soundfile

from wav2pix_jax import generate
from wav2pix_jax.serving import inference

from test_inference import save_run, tiny_config  # the workdir layout training leaves


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
  """Tiny runs: one with the generator's dropout (0.5), one without (like the demo), and one
  without dropout but with a noise input."""
  root = tmp_path_factory.mktemp("runs")
  dropout = root / "dropout"
  save_run(dropout, tiny_config(), steps=(1,))
  deterministic_config = tiny_config()
  deterministic_config.model.dropout_rate = 0.0
  deterministic = root / "deterministic"
  save_run(deterministic, deterministic_config, steps=(1,))
  noise_config = tiny_config()
  noise_config.model.dropout_rate = 0.0
  noise_config.model.noise_dim = 4
  save_run(root / "noise", noise_config, steps=(1,))
  return dropout, deterministic, root / "noise"


def _write(path, samples):
  soundfile.write(path, np.asarray(samples, np.float32), 16_000)
  return path


def _speech(seconds):
  t = np.arange(int(seconds * 16_000)) / 16_000
  return 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))


@pytest.mark.slow
def test_sample_varies_faces_only_where_there_is_dropout(workdirs, tmp_path, capsys):
  dropout, deterministic, _ = workdirs
  clip = _write(tmp_path / "a.wav", _speech(0.5))
  generator = inference.load(dropout)
  assert generator.can_sample
  waveform = _speech(0.5).astype(np.float32)
  a = generator.generate(waveform, 16_000, sample=True, seed=1)
  b = generator.generate(waveform, 16_000, sample=True, seed=2)
  assert not np.array_equal(a, b)
  assert not inference.load(deterministic).can_sample
  assert (
      generate.main(
          [
              f"--workdir={deterministic}",
              f"--audio={clip}",
              f"--out={tmp_path / 'o'}",
              "--sample",
              "--seed=3",
          ]
      )
      == 1
  )
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "no dropout (model.dropout_rate=0)" in err
  assert not (tmp_path / "o").exists()
  # Without --sample the deterministic run generates as usual.
  assert (
      generate.main([f"--workdir={deterministic}", f"--audio={clip}", f"--out={tmp_path / 'o'}"])
      == 0
  )


@pytest.mark.slow
def test_a_noise_input_samples_faces_without_dropout(workdirs):
  generator = inference.load(workdirs[2])
  assert generator.can_sample
  waveform = _speech(0.5).astype(np.float32)
  a = generator.generate(waveform, 16_000, sample=True, seed=1)
  assert not np.array_equal(a, generator.generate(waveform, 16_000, sample=True, seed=2))
  # Deterministic generation: the noise at zero, the same faces every time.
  np.testing.assert_array_equal(
      generator.generate(waveform, 16_000), generator.generate(waveform, 16_000)
  )


def test_silent_windows_get_faces_and_are_counted_but_all_silence_is_refused(
    workdirs, tmp_path, capsys
):
  dropout, _, _ = workdirs
  # 0.5 s of speech, then 0.5 s of silence: windows of 1024 samples every 0.1 s.
  clip = _write(tmp_path / "pause.wav", np.concatenate([_speech(0.5), np.zeros(8_000)]))
  assert (
      generate.main(
          [f"--workdir={dropout}", f"--audio={clip}", f"--out={tmp_path / 'o'}", "--every=0.1"]
      )
      == 0
  )
  out = capsys.readouterr().out
  # Windows start at 0, 0.1, ..., 0.9 s (1 + (16000 - 1024) // 1600 = 10); those starting at
  # 0.5 s or later (5) are silent.
  assert "5 of 10 windows are silent" in out
  assert len(list((tmp_path / "o" / "pause").glob("face_*.png"))) == 10
  silence = _write(tmp_path / "silence.wav", np.zeros(16_000))
  for extra in ("--every=0.1", f"--video={tmp_path / 'v.mp4'}"):
    assert (
        generate.main(
            [f"--workdir={dropout}", f"--audio={silence}", f"--out={tmp_path / 's'}", extra]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "silent throughout" in err
  assert not (tmp_path / "s").exists() and not (tmp_path / "v.mp4").exists()
