"""Speech I/O and THE one preprocessing path (training, evaluation and generation all use it).

`load_audio` turns any common audio or video file into 16 kHz mono float32; `preprocess` turns a
waveform into the model's input: a `window`-sample crop, divided by its peak |x|, pre-emphasised
(y[t] = x[t] - 0.95 x[t-1], y[0] = x[0]), as in the authors' reference code. `windows` applies the
same preprocessing to sliding windows of a long recording. Every failure caused by the data (an
unreadable file, silence, a clip too short, NaN) raises `AudioError`, a `ValueError`.
"""

import math
import os
from typing import Iterator

import numpy as np

SAMPLE_RATE = 16_000
PREEMPHASIS = 0.95
# Peak |x| (on the [-1, 1] scale; int16 is divided by 32768 first) below which a window is silence.
SILENCE_THRESHOLD = 1e-6
# Native-rate samples decoded and resampled at a time: bounds memory for hour-long files.
_CHUNK_SAMPLES = 1 << 18


class AudioError(ValueError):
  """Audio that cannot be used: unreadable, silent, too short, or not finite."""


# ---------------------------------------------------------------------------------------------
# Preprocessing.


def _as_float(waveform) -> np.ndarray:
  """1-D float64 view of `waveform`; integer PCM is scaled to [-1, 1]."""
  x = np.asarray(waveform)
  if x.ndim != 1:
    raise AudioError(f"expected a 1-D mono waveform, got shape {x.shape}")
  if np.issubdtype(x.dtype, np.integer):
    half_range = float(2 ** (8 * x.dtype.itemsize - 1))
    offset = (
        half_range if np.issubdtype(x.dtype, np.unsignedinteger) else 0.0
    )  # 8-bit PCM is unsigned
    return (x.astype(np.float64) - offset) / half_range
  if np.issubdtype(x.dtype, np.floating):
    return x.astype(np.float64)
  raise AudioError(f"expected an integer or float waveform, got dtype {x.dtype}")


def _check_window(window: int, preemphasis: float) -> None:
  if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
    raise ValueError(f"window must be a positive number of samples, got {window!r}")
  if not (np.isfinite(preemphasis) and 0.0 <= preemphasis < 1.0):
    raise ValueError(f"preemphasis must be in [0, 1), got {preemphasis!r}")


def _normalise_and_emphasise(
    segment: np.ndarray, preemphasis: float, floor_division: bool = False
) -> np.ndarray:
  """Peak-normalise then pre-emphasise one float64 window; AudioError on silence.

  floor_division: the authors' code divided int16 samples by their int peak under Python 2, i.e.
  floor division: every negative sample became -1, every other one 0 (the peak itself 1).
  """
  peak = float(np.max(np.abs(segment)))
  if peak < SILENCE_THRESHOLD:
    raise AudioError(f"audio window is silent (peak |x| = {peak:.3g} < {SILENCE_THRESHOLD:g})")
  x = segment / peak
  if floor_division:
    x = np.floor(x)
  y = np.empty_like(x)
  y[0] = x[0]
  y[1:] = x[1:] - preemphasis * x[:-1]
  return y.astype(np.float32)


def preprocess(
    waveform,
    *,
    window: int,
    preemphasis: float = PREEMPHASIS,
    rng: np.random.Generator | None = None,
    floor_division: bool = False,
) -> np.ndarray:
  """float32 [window]: a random (rng) or centred (no rng) window, / max|x|, pre-emphasised.

  floor_division=True reproduces the authors' Python 2 integer division (see
  `_normalise_and_emphasise`); config.input.floor_division.
  """
  _check_window(window, preemphasis)
  x = _as_float(waveform)
  if x.shape[0] < window:
    raise AudioError(
        f"audio has {x.shape[0]} samples ({x.shape[0] / SAMPLE_RATE:.3f} s at 16 kHz), "
        f"needs at least window={window}"
    )
  if not np.all(np.isfinite(x)):
    raise AudioError("audio contains NaN or infinite samples")
  slack = x.shape[0] - window
  start = int(rng.integers(0, slack + 1)) if rng is not None else slack // 2
  return _normalise_and_emphasise(x[start : start + window], preemphasis, floor_division)


def num_windows(num_samples: int, *, window: int, hop: int) -> int:
  """How many windows `windows` returns for a recording of `num_samples`."""
  return 0 if num_samples < window else 1 + (num_samples - window) // hop


def windows(
    waveform,
    *,
    window: int,
    hop: int,
    preemphasis: float = PREEMPHASIS,
    silent: str = "raise",
    floor_division: bool = False,
) -> np.ndarray:
  """float32 [N, window]: window i covers samples [i*hop, i*hop + window), each preprocessed.

  `silent` says what a silent window becomes: "raise" (AudioError) or "zeros" (all-zero input,
  so a talking-face video keeps one frame per hop through pauses).
  """
  _check_window(window, preemphasis)
  if isinstance(hop, bool) or not isinstance(hop, (int, np.integer)) or hop < 1:
    raise ValueError(f"hop must be a positive number of samples, got {hop!r}")
  if silent not in ("raise", "zeros"):
    raise ValueError(f"silent must be 'raise' or 'zeros', got {silent!r}")
  x = _as_float(waveform)
  count = num_windows(x.shape[0], window=window, hop=hop)
  if count == 0:
    raise AudioError(
        f"audio has {x.shape[0]} samples ({x.shape[0] / SAMPLE_RATE:.3f} s at 16 kHz), "
        f"needs at least window={window}"
    )
  if not np.all(np.isfinite(x)):
    raise AudioError("audio contains NaN or infinite samples")
  out = np.zeros((count, window), np.float32)
  for i in range(count):
    segment = x[i * hop : i * hop + window]
    try:
      out[i] = _normalise_and_emphasise(segment, preemphasis, floor_division)
    except AudioError as e:
      if silent == "raise":
        raise AudioError(f"window {i} (samples {i * hop}..{i * hop + window}): {e}") from None
  return out


# ---------------------------------------------------------------------------------------------
# Loading.


class _StreamResampler:
  """Chunked `scipy.signal.resample_poly(x, up, down)`: same output, bounded memory.

  Each chunk is resampled with `pad` extra input samples on both sides (more than the FIR
  filter's half length) and starts at a multiple of `down`, so its interior outputs are exactly
  the whole-signal outputs; only those interior outputs are emitted.
  """

  def __init__(self, from_rate: int, to_rate: int):
    g = math.gcd(from_rate, to_rate)
    self.up, self.down = to_rate // g, from_rate // g
    half_len = 10 * max(self.up, self.down)  # resample_poly's default filter half length
    self.pad = self.down * math.ceil((half_len // self.up + 8) / self.down)
    self._buf: list[np.ndarray] = []
    self._buf_len = 0
    self._buf_start = 0  # global input index of the buffer's first sample (multiple of down)
    self._emitted = 0  # global output samples emitted so far
    self._total_in = 0

  def push(self, x: np.ndarray) -> Iterator[np.ndarray]:
    self._buf.append(x)
    self._buf_len += x.shape[0]
    self._total_in += x.shape[0]
    if self._buf_len >= _CHUNK_SAMPLES + 2 * self.pad:
      yield self._drain(final=False)

  def flush(self) -> Iterator[np.ndarray]:
    if self._buf_len:
      yield self._drain(final=True)

  def _drain(self, *, final: bool) -> np.ndarray:
    import scipy.signal  # pylint: disable=g-import-not-at-top

    buf = np.concatenate(self._buf)
    y = (
        scipy.signal.resample_poly(buf, self.up, self.down)
        if (self.up, self.down) != (1, 1)
        else buf
    )
    offset = self._buf_start * self.up // self.down  # global index of y[0]
    if final:
      stop = -(-self._total_in * self.up // self.down)
    else:
      stop = (self._buf_start + buf.shape[0] - self.pad) * self.up // self.down
    out = y[self._emitted - offset : stop - offset]
    self._emitted = stop
    if not final:
      # Keep enough input to compute outputs from `stop` on, starting at a multiple of down.
      keep_from = max(0, (stop * self.down // self.up) - self.pad)
      keep_from -= keep_from % self.down
      keep_from = max(keep_from, self._buf_start)
      rest = buf[keep_from - self._buf_start :]
      self._buf, self._buf_len, self._buf_start = [rest], rest.shape[0], keep_from
    else:
      self._buf, self._buf_len = [], 0
    return out.astype(np.float32, copy=False)


# Leading bytes of the files handed to libsndfile (WAV/RF64/W64, AIFF, FLAC, Ogg, AU, CAF, NIST,
# VOC, MP3 with an ID3 tag); everything else goes straight to FFmpeg. libsndfile sniffs unrecognised
# bytes as MPEG audio, and its mpg123 then prints warnings on the process's stderr (fd 2), which a
# CLI cannot silence: a corrupt file must give ONE error line.
_SNDFILE_MAGIC = (
    b"RIFF",
    b"RIFX",
    b"RF64",
    b"riff",
    b"FORM",
    b"fLaC",
    b"OggS",
    b".snd",
    b"dns.",
    b"caff",
    b"NIST",
    b"Creative Voice",
    b"ID3",
)


def _sndfile_format(path: str) -> bool:
  """Whether the file starts like a format libsndfile reads (else FFmpeg reads it)."""
  with open(path, "rb") as f:
    head = f.read(16)
  # MP3s without an ID3 tag start with a frame sync that random bytes often mimic: FFmpeg reads
  # them.
  return head.startswith(_SNDFILE_MAGIC)


def _soundfile_blocks(path: str) -> tuple[int, int | None, Iterator[np.ndarray]]:
  """(sample_rate, frames, mono float32 blocks) via libsndfile.

  Raises if libsndfile can't open it.
  """
  import soundfile  # pylint: disable=g-import-not-at-top

  f = soundfile.SoundFile(path)

  def blocks():
    with f:
      for block in f.blocks(blocksize=_CHUNK_SAMPLES, dtype="float32", always_2d=True):
        yield block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]

  return f.samplerate, (f.frames if 0 < f.frames < 2**40 else None), blocks()


def _pyav_blocks(path: str) -> tuple[int, int | None, Iterator[np.ndarray]]:
  """(sample_rate, estimated frames, mono float32 blocks) via FFmpeg (PyAV).

  For compressed audio and video sound tracks.
  """
  import av  # pylint: disable=g-import-not-at-top

  container = av.open(path)
  try:
    if not container.streams.audio:
      raise AudioError(
          f"{path}: no audio stream (streams: "
          f"{', '.join(s.type for s in container.streams) or 'none'})"
      )
    stream = container.streams.audio[0]
    rate = stream.codec_context.sample_rate or stream.rate
    if not rate:
      raise AudioError(f"{path}: audio stream has no sample rate")
    if stream.duration and stream.time_base:
      frames = int(stream.duration * stream.time_base * rate)
    elif container.duration:
      frames = int(container.duration * rate / av.time_base)
    else:
      frames = None
  except BaseException:
    container.close()
    raise
  # Planar float keeps the channels apart so mono is their plain mean, as for soundfile.
  resampler = av.AudioResampler(format="fltp", rate=rate)

  def to_mono(frames):
    for frame in frames:
      if frame.samples:
        planes = frame.to_ndarray()
        yield planes.mean(axis=0, dtype=np.float32) if planes.shape[0] > 1 else planes[0]

  def blocks():
    with container:
      for frame in container.decode(stream):
        yield from to_mono(resampler.resample(frame))
      yield from to_mono(resampler.resample(None))

  return int(rate), frames, blocks()


def load_audio(
    path: str | os.PathLike, *, sample_rate: int = SAMPLE_RATE, max_seconds: float | None = None
) -> np.ndarray:
  """float32 mono waveform at `sample_rate` from any audio file or a video's sound track.

  max_seconds: AudioError as soon as the decoded sound is longer (checked while decoding, so a
  small file that decodes to hours never fills memory).
  """
  path = os.fspath(path)
  _check_load_args(path, sample_rate, max_seconds)
  rate, frames, blocks = _open_blocks(path)
  if rate < 1:
    raise AudioError(f"{path}: invalid sample rate {rate}")
  waveform = _decode(path, rate, frames, blocks, sample_rate, max_seconds)
  if waveform.shape[0] == 0:
    raise AudioError(f"{path}: contains no audio samples")
  return waveform


def _check_load_args(path: str, sample_rate, max_seconds) -> None:
  """ValueError for a bad sample_rate or max_seconds, AudioError for a path that holds no file."""
  if (
      isinstance(sample_rate, bool)
      or not isinstance(sample_rate, (int, np.integer))
      or sample_rate < 1
  ):
    raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
  if max_seconds is not None and not max_seconds > 0:
    raise ValueError(f"max_seconds must be positive, got {max_seconds!r}")
  if not os.path.exists(path):
    raise AudioError(f"{path}: no such file")
  if os.path.isdir(path):
    raise AudioError(f"{path}: is a directory, expected an audio or video file")
  if os.path.getsize(path) == 0:
    raise AudioError(f"{path}: empty file")


def _open_blocks(path: str) -> tuple[int, int | None, Iterator[np.ndarray]]:
  """(sample rate, frames or None, float32 mono blocks): libsndfile, else FFmpeg."""
  try:
    if not _sndfile_format(path):
      raise AudioError("not a libsndfile format")
    return _soundfile_blocks(path)
  except Exception:  # pylint: disable=broad-except
    # libsndfile doesn't know the format (m4a, video, ...): FFmpeg reads nearly everything.
    try:
      return _pyav_blocks(path)
    except AudioError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise AudioError(f"{path}: not a readable audio or video file ({_one_line(e)})") from None


def _decode(path: str, rate, frames, blocks, sample_rate: int, max_seconds) -> np.ndarray:
  """The blocks resampled to `sample_rate`, AudioError past max_seconds or on bad data."""
  resampler = _StreamResampler(int(rate), sample_rate)
  expected = -(-frames * sample_rate // rate) if frames and frames < 2**36 else None
  limit = None if max_seconds is None else int(math.ceil(max_seconds * sample_rate))
  if limit is not None and expected is not None:
    expected = min(expected, limit + 1)  # a header may claim any length

  def append(piece: np.ndarray) -> None:
    output.append(piece)
    if limit is not None and output.size > limit:
      raise AudioError(f"{path}: longer than the limit of {max_seconds:g} s")

  output = _Growable(expected)
  try:
    for block in blocks:
      if not np.all(np.isfinite(block)):
        raise AudioError(f"{path}: decoded audio contains NaN or infinite samples")
      for piece in resampler.push(block):
        append(piece)
    for piece in resampler.flush():
      append(piece)
  except AudioError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise AudioError(f"{path}: corrupt or unreadable audio data ({_one_line(e)})") from None
  return output.array()


class _Growable:
  """float32 output buffer: sized up front when the length is known, grown by 1.5x otherwise."""

  def __init__(self, capacity: int | None):
    self._data = np.empty(max(capacity or 0, 1 << 16), np.float32)
    self._size = 0

  def append(self, piece: np.ndarray) -> None:
    end = self._size + piece.shape[0]
    if end > self._data.shape[0]:
      grown = np.empty(max(end, self._data.shape[0] * 3 // 2), np.float32)
      grown[: self._size] = self._data[: self._size]
      self._data = grown
    self._data[self._size : end] = piece
    self._size = end

  @property
  def size(self) -> int:
    return self._size

  def array(self) -> np.ndarray:
    if self._size == self._data.shape[0]:
      return self._data
    if self._size * 4 >= self._data.shape[0] * 3:
      return self._data[: self._size]  # a view: at most 1/4 of the buffer is wasted
    return self._data[: self._size].copy()


def _one_line(e: BaseException) -> str:
  text = " ".join(str(e).split()) or type(e).__name__
  return text[:200]
