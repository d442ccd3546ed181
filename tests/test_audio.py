"""Tests for wav2pix_jax.audio: loading any file to 16 kHz mono, and the one preprocessing path."""

import fractions

import av
import hypothesis
import numpy as np
import pytest
import scipy.signal
import soundfile
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from wav2pix_jax.data import audio


def sine(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
  t = np.arange(int(rate * seconds)) / rate
  return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_frequency(x: np.ndarray, rate: int) -> float:
  spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
  return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


def write_with_pyav(
    path, samples: np.ndarray, rate: int, codec: str, *, video: bool = False
) -> None:
  """Encodes mono float samples with FFmpeg; with `video`, adds a short video track too."""
  with av.open(str(path), "w") as container:
    if video:
      vstream = container.add_stream("mpeg4", rate=10)
      vstream.width, vstream.height, vstream.pix_fmt = 32, 32, "yuv420p"
    astream = container.add_stream(codec, rate=rate)
    astream.layout = "mono"
    frame_size = astream.codec_context.frame_size or 1024
    fmt = astream.codec_context.format.name
    if video:
      for i in range(int(len(samples) / rate * 10)):
        image = np.full((32, 32, 3), i * 20 % 255, np.uint8)
        for packet in vstream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
          container.mux(packet)
    for start in range(0, len(samples), frame_size):
      chunk = samples[start : start + frame_size]
      if len(chunk) < frame_size:
        chunk = np.pad(chunk, (0, frame_size - len(chunk)))
      data = chunk[None, :]  # mono: planar and packed layouts are both [1, samples]
      if fmt.startswith("s16"):
        data = (data * 32767).astype(np.int16)
      elif fmt.startswith("s32"):
        data = (data * 2147483647).astype(np.int32)
      frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout="mono")
      frame.sample_rate = rate
      frame.pts = start
      frame.time_base = fractions.Fraction(1, rate)
      for packet in astream.encode(frame):
        container.mux(packet)
    for packet in astream.encode(None):
      container.mux(packet)
    if video:
      for packet in vstream.encode(None):
        container.mux(packet)


# --- load_audio ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rate, channels, subtype",
    [
        (16000, 1, "PCM_16"),
        (8000, 1, "PCM_16"),
        (48000, 2, "PCM_16"),
        (44100, 1, "PCM_24"),
        (22050, 2, "FLOAT"),
        (32000, 1, "PCM_U8"),
    ],
)
def test_load_wav_any_rate_channels_format(tmp_path, rate, channels, subtype):
  x = sine(440.0, rate, 1.5)
  data = np.stack([x] * channels, axis=1) if channels > 1 else x
  path = tmp_path / f"a_{rate}_{channels}_{subtype}.wav"
  soundfile.write(path, data, rate, subtype=subtype)
  y = audio.load_audio(path)
  assert y.dtype == np.float32 and y.ndim == 1
  assert y.shape[0] == int(np.ceil(len(x) * 16000 / rate))
  assert dominant_frequency(y, 16000) == pytest.approx(440.0, abs=2.0)
  # Mono mix and resampling preserve the amplitude (away from the edges).
  assert np.max(np.abs(y[2000:-2000])) == pytest.approx(0.5, abs=0.02)
  reference = (
      scipy.signal.resample_poly(
          soundfile.read(path, dtype="float32")[0].reshape(len(x), -1).mean(1), 16000, rate
      )
      if rate != 16000
      else None
  )
  if reference is not None:
    np.testing.assert_allclose(y, reference, atol=1e-5)


def test_load_stereo_is_mean_of_channels(tmp_path):
  left, right = sine(300.0, 16000, 1.0, 0.6), sine(300.0, 16000, 1.0, 0.2)
  soundfile.write(tmp_path / "s.wav", np.stack([left, right], 1), 16000, subtype="FLOAT")
  np.testing.assert_allclose(audio.load_audio(tmp_path / "s.wav"), (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("fmt", ["flac", "ogg"])
def test_load_soundfile_compressed(tmp_path, fmt):
  path = tmp_path / f"a.{fmt}"
  soundfile.write(path, sine(1000.0, 24000, 1.0), 24000)
  y = audio.load_audio(path)
  assert y.shape[0] == pytest.approx(16000, abs=400)
  assert dominant_frequency(y, 16000) == pytest.approx(1000.0, abs=3.0)


@pytest.mark.parametrize(
    "name, codec, rate", [("a.mp3", "libmp3lame", 44100), ("a.m4a", "aac", 48000)]
)
def test_load_pyav_compressed(tmp_path, name, codec, rate):
  path = tmp_path / name
  write_with_pyav(path, sine(700.0, rate, 1.0), rate, codec)
  y = audio.load_audio(path)
  assert y.dtype == np.float32
  assert y.shape[0] == pytest.approx(16000, abs=1600)  # encoder priming/padding adds a little
  assert dominant_frequency(y, 16000) == pytest.approx(700.0, abs=3.0)


def test_load_video_sound_track(tmp_path):
  path = tmp_path / "clip.mp4"
  write_with_pyav(path, sine(500.0, 48000, 1.0), 48000, "aac", video=True)
  y = audio.load_audio(path)
  assert y.shape[0] == pytest.approx(16000, abs=1600)
  assert dominant_frequency(y, 16000) == pytest.approx(500.0, abs=3.0)


def test_load_other_target_rate(tmp_path):
  soundfile.write(tmp_path / "a.wav", sine(440.0, 16000, 1.0), 16000)
  y = audio.load_audio(tmp_path / "a.wav", sample_rate=8000)
  assert y.shape == (8000,)
  assert dominant_frequency(y, 8000) == pytest.approx(440.0, abs=2.0)


def test_stream_resampler_matches_resample_poly(monkeypatch):
  monkeypatch.setattr(audio, "_CHUNK_SAMPLES", 997)
  rng = np.random.default_rng(0)
  x = rng.standard_normal(20011).astype(np.float32)
  for rate in (8000, 11025, 44100, 48000):
    resampler = audio._StreamResampler(rate, 16000)  # pylint: disable=protected-access
    pieces, i = [], 0
    while i < len(x):
      n = int(rng.integers(1, 2500))
      pieces += list(resampler.push(x[i : i + n]))
      i += n
    pieces += list(resampler.flush())
    np.testing.assert_allclose(
        np.concatenate(pieces), scipy.signal.resample_poly(x, 16000, rate), atol=1e-6
    )


def test_load_errors_name_the_file(tmp_path):
  (tmp_path / "empty.wav").write_bytes(b"")
  (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
  (tmp_path / "text.mp3").write_text("definitely not audio\n" * 50)
  write_with_pyav_video_only(tmp_path / "silent_movie.mp4")
  cases = {
      tmp_path / "missing.wav": "no such file",
      tmp_path: "is a directory",
      tmp_path / "empty.wav": "empty file",
      tmp_path / "junk.wav": "not a readable",
      tmp_path / "text.mp3": "not a readable",
      tmp_path / "silent_movie.mp4": "no audio stream",
  }
  for path, message in cases.items():
    with pytest.raises(audio.AudioError, match=message) as info:
      audio.load_audio(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
  with pytest.raises(ValueError, match="sample_rate"):
    audio.load_audio(tmp_path / "empty.wav", sample_rate=0)


def write_with_pyav_video_only(path) -> None:
  with av.open(str(path), "w") as container:
    stream = container.add_stream("mpeg4", rate=10)
    stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
    for _ in range(5):
      for packet in stream.encode(
          av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
      ):
        container.mux(packet)
    for packet in stream.encode(None):
      container.mux(packet)


def test_load_max_seconds_stops_long_audio_while_decoding(tmp_path):
  soundfile.write(tmp_path / "a.wav", sine(440.0, 44100, 2.0), 44100)
  soundfile.write(tmp_path / "a.ogg", sine(440.0, 44100, 2.0), 44100, format="OGG")
  for name in ("a.wav", "a.ogg"):
    assert audio.load_audio(tmp_path / name, max_seconds=2.5).shape == (32000,)
    with pytest.raises(audio.AudioError, match=r"a\.\w+: longer than the limit of 1\.5 s"):
      audio.load_audio(tmp_path / name, max_seconds=1.5)
  # A header that claims hours reserves no more than the limit.
  header = bytearray((tmp_path / "a.wav").read_bytes()[:44])
  header[40:44] = (2**31).to_bytes(4, "little")  # data chunk size: 24 hours at 44.1 kHz x 2 bytes
  (tmp_path / "liar.wav").write_bytes(bytes(header) + (tmp_path / "a.wav").read_bytes()[44:])
  assert audio.load_audio(tmp_path / "liar.wav", max_seconds=3).shape[0] <= 32000
  with pytest.raises(ValueError, match="max_seconds must be positive"):
    audio.load_audio(tmp_path / "a.wav", max_seconds=0)


def test_truncated_wav_loads_what_is_there_or_raises(tmp_path):
  path = tmp_path / "t.wav"
  soundfile.write(path, sine(440.0, 16000, 1.0), 16000)
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])
  y = audio.load_audio(path)  # libsndfile reads the frames that exist
  assert 0 < y.shape[0] <= 16000 and np.all(np.isfinite(y))


FUZZ_EXAMPLES = 400


@hypothesis.settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
@hypothesis.given(
    data=st.one_of(
        st.binary(min_size=0, max_size=2000),
        # Valid headers followed by arbitrary bytes reach deeper into the decoders.
        st.sampled_from(
            [
                b"RIFF\x24\x08\x00\x00WAVEfmt ",
                b"fLaC",
                b"OggS",
                b"ID3\x03\x00",
                b"\xff\xfb\x90",
                b"\x00\x00\x00\x20ftypisom",
                b"\x1aE\xdf\xa3",
            ]
        ).flatmap(lambda head: st.binary(max_size=2000).map(lambda tail: head + tail)),
    )
)
def test_fuzz_load_audio_raises_only_audio_error(tmp_path, data):
  path = tmp_path / "fuzz.bin"
  path.write_bytes(data)
  try:
    y = audio.load_audio(path)
  except audio.AudioError:
    return
  assert y.dtype == np.float32 and y.ndim == 1 and np.all(np.isfinite(y))


# --- preprocess ----------------------------------------------------------------------------------


def test_preprocess_centre_crop_normalise_preemphasis():
  x = np.arange(10, dtype=np.float32) - 3.0  # -3 .. 6
  y = audio.preprocess(x, window=4)  # centre: samples 3..6 = [0, 1, 2, 3]
  expected = np.array([0, 1, 2, 3]) / 3.0
  expected[1:] -= 0.95 * expected[:-1]
  np.testing.assert_allclose(y, expected, rtol=1e-6)
  assert y.dtype == np.float32


def test_preprocess_int16_equals_float_and_no_preemphasis_option():
  rng = np.random.default_rng(1)
  x = rng.integers(-20000, 20000, 16000).astype(np.int16)
  np.testing.assert_allclose(
      audio.preprocess(x, window=16000),
      audio.preprocess(x / 32768.0, window=16000),
      rtol=1e-6,
      atol=1e-7,
  )
  flat = audio.preprocess(x, window=16000, preemphasis=0.0)
  assert np.max(np.abs(flat)) == pytest.approx(1.0)


def test_preprocess_random_window_uses_rng():
  x = np.sin(np.arange(20000) * 0.01) + np.arange(20000) * 1e-4
  a = audio.preprocess(x, window=16000, rng=np.random.default_rng(0))
  b = audio.preprocess(x, window=16000, rng=np.random.default_rng(0))
  starts = {
      audio.preprocess(x, window=16000, rng=np.random.default_rng(s))[:5].tobytes()
      for s in range(10)
  }
  np.testing.assert_array_equal(a, b)
  assert len(starts) > 1


def test_preprocess_errors():
  with pytest.raises(audio.AudioError, match="has 100 samples.*needs at least window=16000"):
    audio.preprocess(np.ones(100), window=16000)
  with pytest.raises(audio.AudioError, match="silent"):
    audio.preprocess(np.zeros(16000, np.int16), window=16000)
  with pytest.raises(audio.AudioError, match="NaN"):
    audio.preprocess(np.full(16000, np.nan), window=16000)
  with pytest.raises(audio.AudioError, match="1-D"):
    audio.preprocess(np.ones((2, 16000)), window=16000)
  with pytest.raises(ValueError, match="window"):
    audio.preprocess(np.ones(10), window=0)


@hypothesis.settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@hypothesis.given(
    x=st.one_of(
        hnp.arrays(
            dtype=st.sampled_from([np.float16, np.float32, np.float64]),
            shape=st.integers(0, 64),
            elements=st.floats(allow_nan=True, allow_infinity=True, width=16),
        ),
        hnp.arrays(
            dtype=np.float64,
            shape=st.integers(0, 64),
            elements=st.floats(allow_nan=True, allow_infinity=True),
        ),
        hnp.arrays(dtype=st.sampled_from([np.int16, np.int32, np.uint8]), shape=st.integers(0, 64)),
        st.integers(0, 64).flatmap(
            lambda n: st.floats(allow_nan=True).map(lambda v: np.full(n, v))
        ),
    ),
    window=st.integers(1, 48),
    use_rng=st.booleans(),
)
def test_fuzz_preprocess_raises_only_audio_error(x, window, use_rng):
  try:
    y = audio.preprocess(x, window=window, rng=np.random.default_rng(0) if use_rng else None)
  except audio.AudioError:
    return
  assert y.shape == (window,) and y.dtype == np.float32
  assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.95 + 1e-6


# --- windows -------------------------------------------------------------------------------------


def test_windows_match_preprocess_of_each_slice():
  rng = np.random.default_rng(2)
  x = rng.standard_normal(5000).astype(np.float32)
  w = audio.windows(x, window=1000, hop=400)
  assert w.shape == (audio.num_windows(5000, window=1000, hop=400), 1000) == (11, 1000)
  for i in range(11):
    np.testing.assert_array_equal(w[i], audio.preprocess(x[i * 400 : i * 400 + 1000], window=1000))


def test_windows_silence_policy_and_short_input():
  x = np.concatenate([np.ones(100), np.zeros(300), np.ones(100)])
  with pytest.raises(audio.AudioError, match="window 1 .*silent"):
    audio.windows(x, window=100, hop=100)
  w = audio.windows(x, window=100, hop=100, silent="zeros")
  assert w.shape == (5, 100) and not w[1:4].any() and w[0, 0] == 1.0
  with pytest.raises(audio.AudioError, match="needs at least"):
    audio.windows(np.ones(50), window=100, hop=10)
