"""The web demo's work: a trained workdir's faces for uploaded speech, no web framework.

    service = web_demo.Demo("workdirs/demo", limits=web_demo.Limits(max_seconds=20))
    result = service.run_bytes(open("a.wav", "rb").read())
    web_app.serve(service, port=7860)  # the page, with uvicorn (serving/web_app.py)

`Demo` does the work (generators cached per step, one request at a time, uploads checked for size
and decoded duration before any generation). The web app around it is serving/web_app.py; the
command line wav2pix_jax/demo.py; the Space, app.py. Importing this module imports neither the
[demo] extra nor JAX.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import os
import pathlib
import re
import tempfile
import threading
import time
from typing import Any

import numpy as np

from wav2pix_jax.data import audio
from wav2pix_jax.serving import video

DEMO_EXTRA_HINT = "the web demo needs the [demo] extra: pip install -e '.[demo]'"
ENVELOPE_POINTS = 400  # min/max pairs of the waveform drawing


class DemoError(ValueError):
  """A request the demo refuses; its message is one line, shown in the page as it is."""

  def __init__(self, message: str, status: int = 400):
    super().__init__(" ".join(str(message).split()))
    self.status = status


@dataclasses.dataclass(frozen=True)
class Limits:
  """What one request may ask for (the CLI's flags)."""

  max_upload_bytes: int = 10 * 2**20  # uploads larger than this are refused before decoding
  max_seconds: float = 30.0  # decoded sound longer than this is refused (checked while decoding)
  video_seconds: float = 3.0  # clips at least this long also get a talking-face video; 0: never
  fps: float = 25.0  # frame rate of that video
  max_waiting: int = 32  # requests queued behind the one being generated; more get HTTP 503

  def __post_init__(self):
    for name in ("max_upload_bytes", "max_seconds", "fps", "max_waiting"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    if not self.video_seconds >= 0:
      raise ValueError(f"video_seconds must be >= 0, got {self.video_seconds!r}")


class Demo:
  """The demo's work, without the web server: generators cached per step, one request at a time."""

  def __init__(
      self,
      workdir: str | os.PathLike,
      *,
      step: int | None = None,
      checkpoint: str = "best",
      limits=Limits(),
  ):
    # JAX is imported with the first Demo, not with this module.
    from wav2pix_jax.serving import inference  # pylint: disable=g-import-not-at-top
    from wav2pix_jax.serving import restore  # pylint: disable=g-import-not-at-top

    self._inference = inference
    self._restore = restore
    self.workdir = pathlib.Path(workdir).expanduser().absolute()
    self.default_step = step
    self.checkpoint = checkpoint  # without --step: "best" (else the latest) or "latest"
    self.limits = limits
    self._generators: dict[int, Any] = {}  # step -> inference.FaceGenerator
    self._lock = threading.Lock()  # serialises generation
    self._cache_lock = threading.Lock()  # guards the cache (info() need not wait for a generation)
    restore.checkpoint_steps(self.workdir)  # a missing or empty workdir fails here, clearly

  def steps(self) -> list[int]:
    """The workdir's checkpoint steps, oldest first (read anew: training may still be saving)."""
    return self._restore.checkpoint_steps(self.workdir)

  def checkpoint_choice(self):
    """The default checkpoint (--step, else --checkpoint's choice) and why (`.source`)."""
    return self._restore.choose_checkpoint(
        self.workdir, self.default_step, checkpoint=self.checkpoint
    )

  def generator(self, step: int | None = None):
    """The generator of `step` (None: --step, else --checkpoint's: the best by periodic
    validation, else the newest), loaded once per step."""
    steps = self.steps()
    if not steps:
      raise DemoError(f"{self.workdir.name}: no complete checkpoint yet", status=503)
    if step is None:
      step = self.default_step if self.default_step is not None else self.checkpoint_choice().step
    with self._cache_lock:
      if step not in self._generators:
        if step not in steps:
          raise DemoError(f"no checkpoint for step {step}; available steps: {steps}")
        loaded = self._inference.load(self.workdir, step)
        first = next(iter(self._generators.values()), None)
        if first is not None and first.config.to_json() == loaded.config.to_json():
          loaded = first.with_variables(loaded.variables, step=step)  # the compiled function too
        self._generators[step] = loaded
        for gone in [s for s in self._generators if s not in steps and s != step]:
          del self._generators[gone]  # deleted by a training run that keeps a few checkpoints
      return self._generators[step]

  def info(self) -> dict:
    """What the page needs to draw its controls."""
    steps = self.steps()
    generator = self.generator()
    return {
        "workdir": self.workdir.name,
        "steps": steps,
        "default_step": generator.step,
        "image_size": generator.image_size,
        "window_seconds": generator.window / generator.sample_rate,
        "can_sample": generator.can_sample,
        "variety_note": (
            "" if generator.can_sample else "variety is off: " + self._inference.NO_DROPOUT_MESSAGE
        ),
        "max_upload_bytes": self.limits.max_upload_bytes,
        "max_seconds": self.limits.max_seconds,
        "video_seconds": self.limits.video_seconds,
        "fps": self.limits.fps,
    }

  def warm_up(self) -> float:
    """Loads the default generator and runs a noise clip through every stage a request uses
    (decoding, generation, PNG, and the video when the limits allow one), so that the first
    visitor does not wait for compilation and imports; returns the seconds it took."""
    import soundfile  # pylint: disable=g-import-not-at-top

    start = time.perf_counter()
    generator = self.generator()
    rate = generator.sample_rate
    seconds = min(max(self.limits.video_seconds, 1.0), self.limits.max_seconds)
    samples = max(generator.window, int(seconds * rate))
    noise = np.random.default_rng(0).normal(0, 0.1, samples).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, noise, rate, format="WAV")
    self._run_bytes(buffer.getvalue())
    return time.perf_counter() - start

  def run_bytes(self, data: bytes, **kwargs) -> dict:
    """`run_file` on bytes (a notebook, a test): written to a private temporary directory."""
    if len(data) > self.limits.max_upload_bytes:
      raise DemoError(too_big(len(data), self.limits.max_upload_bytes), status=413)
    return self._run_bytes(data, **kwargs)

  def _run_bytes(self, data: bytes, **kwargs) -> dict:
    with tempfile.TemporaryDirectory(prefix="wav2pix-demo-") as private:
      path = pathlib.Path(private) / "upload"
      path.write_bytes(data)
      return self.run_file(path, **kwargs)

  def run_file(
      self,
      path: str | os.PathLike,
      *,
      step: int | None = None,
      variety: bool = False,
      seed: int = 0,
      fuse: bool = False,
  ) -> dict:
    """Face (PNG data URL), waveform envelope and, for long clips, the talking-face MP4 (base64).

    fuse: the face of the mean speech embedding of every window of the clip (`generate --fuse`)
    instead of the centred window's.
    """
    path = pathlib.Path(path)
    with self._lock:
      start = time.perf_counter()
      generator = self._generator_for(step, variety)
      waveform = self._load_speech(path, generator)
      seconds = waveform.shape[0] / generator.sample_rate
      face, window_start, window_seconds, fused = self._face(
          generator, waveform, path, fuse=fuse, variety=variety, seed=seed
      )
      result = {
          "face": "data:image/png;base64," + base64.b64encode(_png(face)).decode("ascii"),
          "size": generator.image_size,
          "step": generator.step,
          "seconds": round(seconds, 3),
          "window_start": round(window_start, 4),
          "window_seconds": window_seconds,
          "envelope": _envelope(waveform),
          "variety": bool(variety),
          "seed": int(seed),
          "fused_windows": fused,  # 0: the centred window alone
          "video": None,
          "note": "",
      }
      if self.limits.video_seconds and seconds >= self.limits.video_seconds:
        result.update(self._video(generator, waveform, variety=variety, seed=seed))
      result["ms"] = round(1000 * (time.perf_counter() - start))
      return result

  def _generator_for(self, step: int | None, variety: bool):
    """The generator of `step`; DemoError (500) if it cannot load, (400) for variety without one."""
    try:
      generator = self.generator(step)
    except (ValueError, OSError) as e:
      if isinstance(e, DemoError):
        raise
      raise DemoError(f"step {step}: {e}", status=500) from None
    if variety and not generator.can_sample:
      raise DemoError(self._inference.NO_DROPOUT_MESSAGE)
    return generator

  def _load_speech(self, path: pathlib.Path, generator) -> np.ndarray:
    """The uploaded file's waveform at the generator's rate; DemoError if too short or silent."""
    rate = generator.sample_rate
    try:
      waveform = audio.load_audio(path, sample_rate=rate, max_seconds=self.limits.max_seconds)
    except audio.AudioError as e:
      raise DemoError(_without_path(e, path)) from None
    seconds = waveform.shape[0] / rate
    if waveform.shape[0] < generator.window:
      raise DemoError(
          f"too short: {seconds:.2f} s of sound; this model needs at least "
          f"{generator.window / rate:.2f} s of speech"
      )
    if float(np.max(np.abs(waveform))) < audio.SILENCE_THRESHOLD:
      raise DemoError(f"the recording is silent ({seconds:.1f} s without sound)")
    return waveform

  def _face(
      self, generator, waveform: np.ndarray, path, *, fuse: bool, variety: bool, seed: int
  ) -> tuple[np.ndarray, float, float, int]:
    """(face, window start s, window length s, fused windows or 0); DemoError if silent there."""
    rate = generator.sample_rate
    window_start = (waveform.shape[0] - generator.window) // 2 / rate
    window_seconds, fused = generator.window / rate, 0
    try:
      if fuse:
        windows = generator.fusion_windows(waveform, rate)
        fused = len(windows) - self._inference.check_not_all_silent(windows)
        face = generator.generate_fused_preprocessed(windows, sample=variety, seed=seed)[0]
        window_start, window_seconds = 0.0, len(windows) * generator.window / rate
      else:
        face = generator.generate(waveform, rate, sample=variety, seed=seed)[0]
    except audio.AudioError as e:
      raise DemoError(
          f"the middle {generator.window / rate:.2f} s of the recording (the face's window) is "
          f"silent; speak in the middle of the clip ({_without_path(e, path)})"
      ) from None
    return face, window_start, window_seconds, fused

  def _video(self, generator, waveform: np.ndarray, *, variety: bool, seed: int) -> dict:
    """The talking-face video of `generate --video`: same windows, same writer."""
    fps = self.limits.fps
    windows = video.video_windows(generator, waveform, fps=fps)
    silent = self._inference.check_not_all_silent(windows)
    frames = generator.generate_preprocessed(windows, sample=variety, seed=seed)
    with tempfile.TemporaryDirectory(prefix="wav2pix-demo-") as private:
      target = pathlib.Path(private) / "talking.mp4"
      video.write_video(target, frames, waveform, sample_rate=generator.sample_rate, fps=fps)
      mp4 = base64.b64encode(target.read_bytes()).decode("ascii")
    note = f"{len(frames)} frames at {fps:g} fps"
    if silent:
      note += f"; {silent} of them from silent windows (pauses)"
    return {"video": mp4, "frames": len(frames), "note": note}


def _png(image: np.ndarray) -> bytes:
  from PIL import Image  # pylint: disable=g-import-not-at-top

  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  return buffer.getvalue()


def _envelope(waveform: np.ndarray, points: int = ENVELOPE_POINTS) -> list[list[float]]:
  """[[min, max], ...] of `points` equal slices of the waveform, for the page's drawing."""
  points = max(1, min(points, waveform.shape[0]))
  usable = waveform[: waveform.shape[0] // points * points].reshape(points, -1)
  return np.round(np.stack([usable.min(axis=1), usable.max(axis=1)], axis=1), 3).tolist()


def _without_path(error: Exception, path: pathlib.Path) -> str:
  """The error's message with the private temporary path replaced by words."""
  text = str(error).replace(f"{path}: ", "the uploaded file: ")
  text = re.sub(r"\[Errno -?\d+\] ", "", text)  # FFmpeg's error numbers say nothing to a visitor
  return text.replace(f": '{path}'", "").replace(str(path), "the file")


def too_big(size: int, limit: int) -> str:
  return f"the file is {size / 2**20:.1f} MB; the limit is {limit / 2**20:g} MB"
