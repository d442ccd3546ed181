"""The web demo's work and its web app: a trained workdir's faces for uploaded speech.

    service = web_demo.Demo("workdirs/demo", limits=web_demo.Limits(max_seconds=20))
    result = service.run_bytes(open("a.wav", "rb").read())   # no web framework needed
    web_demo.serve(service, port=7860)                        # the page, with uvicorn

`Demo` does the work (generators cached per step, one request at a time, uploads checked for size
and decoded duration before any generation); `create_app` wraps it in a Starlette app (GET /, GET
/api/info, POST /api/generate); `serve` runs it with uvicorn, `serving_in_background` in a thread
(tests, notebooks, benchmarks). The command line is wav2pix_jax/demo.py; the Space, app.py.

Needs the [demo] extra (`pip install -e '.[demo]'`: starlette and uvicorn) for the web app only,
imported when an app is built or served: importing this module imports neither (nor JAX).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import importlib.resources
import io
import ipaddress
import logging as std_logging
import os
import pathlib
import re
import shutil
import tempfile
import threading
import time
import types
from typing import Any

import numpy as np

from wav2pix_jax.data import audio
from wav2pix_jax.serving import video

DEMO_EXTRA_HINT = "the web demo needs the [demo] extra: pip install -e '.[demo]'"
ENVELOPE_POINTS = 400  # min/max pairs of the waveform drawing
_CHUNK = 1 << 16  # bytes of an upload written at a time


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
      raise DemoError(_too_big(len(data), self.limits.max_upload_bytes), status=413)
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


def _too_big(size: int, limit: int) -> str:
  return f"the file is {size / 2**20:.1f} MB; the limit is {limit / 2**20:g} MB"


def page() -> str:
  """The demo's HTML page (one file, no external resources: works offline)."""
  return (
      importlib.resources.files("wav2pix_jax.serving").joinpath("demo_page.html").read_text("utf-8")
  )


# ---------------------------------------------------------------------------------------------
# The web app (Starlette: one page and two JSON endpoints).


def create_app(demo: Demo):
  """The ASGI app serving `demo`: GET / (the page), GET /api/info, POST /api/generate."""
  web = _web()
  endpoints = _Endpoints(demo, web)
  return web.Starlette(
      routes=[
          web.Route("/", endpoints.index),
          web.Route("/api/info", endpoints.info),
          web.Route("/api/generate", endpoints.generate, methods=["POST"]),
      ]
  )


def _web() -> types.SimpleNamespace:
  """The [demo] extra's names the app uses (anyio, Starlette's); ImportError with the hint."""
  try:
    import anyio  # pylint: disable=g-import-not-at-top
    from starlette.applications import Starlette  # pylint: disable=g-import-not-at-top
    from starlette.requests import ClientDisconnect  # pylint: disable=g-import-not-at-top
    from starlette.responses import HTMLResponse  # pylint: disable=g-import-not-at-top
    from starlette.responses import JSONResponse  # pylint: disable=g-import-not-at-top
    from starlette.routing import Route  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"{DEMO_EXTRA_HINT} ({e})") from None
  return types.SimpleNamespace(
      anyio=anyio,
      Starlette=Starlette,
      ClientDisconnect=ClientDisconnect,
      HTMLResponse=HTMLResponse,
      JSONResponse=JSONResponse,
      Route=Route,
  )


class _Endpoints:
  """The app's request handlers around one Demo."""

  def __init__(self, demo: Demo, web: types.SimpleNamespace):
    self.demo = demo
    self.web = web
    self.html = page()
    self.limits = demo.limits
    self.waiting = 0  # requests admitted and not yet answered (the event loop's thread only)

  def error(self, message: str, status: int):
    """A JSON error response: the message as one line."""
    return self.web.JSONResponse({"error": " ".join(str(message).split())}, status_code=status)

  async def index(self, request):
    del request
    return self.web.HTMLResponse(self.html, headers={"Cache-Control": "no-store"})

  async def info(self, request):
    del request
    try:
      return self.web.JSONResponse(await self.web.anyio.to_thread.run_sync(self.demo.info))
    except Exception as e:  # pylint: disable=broad-except
      return self.error(_describe(e), getattr(e, "status", 500))

  async def generate(self, request):
    """The uploaded speech's face: refused early when too big or busy, else queued, then run."""
    try:
      options = _options(request.query_params)
    except DemoError as e:
      return self.error(str(e), e.status)
    refusal = _refusal(request.headers.get("content-length"), self.waiting, self.limits)
    if refusal is not None:
      return self.error(*refusal)
    self.waiting += 1
    private = tempfile.mkdtemp(prefix="wav2pix-demo-")  # mode 0700, in the system's temp dir
    try:
      path = pathlib.Path(private) / "upload"
      await _receive(request, path, self.limits.max_upload_bytes)
      run = lambda: self.demo.run_file(path, **options)
      return self.web.JSONResponse(await self.web.anyio.to_thread.run_sync(run))
    except DemoError as e:
      return self.error(str(e), e.status)
    except self.web.ClientDisconnect:
      return self.error("the upload was interrupted", 400)  # nobody is left to read it
    except Exception as e:  # pylint: disable=broad-except
      _LOG.exception("generation failed")
      return self.error(f"internal error: {_describe(e)}", 500)
    finally:
      self.waiting -= 1
      shutil.rmtree(private, ignore_errors=True)


def _refusal(length: str | None, waiting: int, limits: Limits) -> tuple[str, int] | None:
  """(message, status) for an upload refused before reading it (Content-Length, queue), or None."""
  if length is not None:
    if not length.isdigit():
      return f"bad Content-Length {length[:40]!r}", 400
    if int(length) > limits.max_upload_bytes:
      return _too_big(int(length), limits.max_upload_bytes), 413
  if waiting > limits.max_waiting:
    return f"busy: {waiting} requests are queued; try again in a moment", 503
  return None


async def _receive(request, path: pathlib.Path, max_bytes: int) -> None:
  """Streams the request's body into `path`; DemoError if it is empty or passes `max_bytes`."""
  size = 0
  with open(path, "wb") as f:
    async for chunk in request.stream():
      size += len(chunk)
      if size > max_bytes:
        raise DemoError(_too_big(size, max_bytes), status=413)
      f.write(chunk)
  if size == 0:
    raise DemoError("no file received (the upload is empty)", status=400)


_LOG = std_logging.getLogger(__name__)


def _describe(e: Exception) -> str:
  return " ".join(str(e).split())[:300] or type(e).__name__


def _options(query) -> dict:
  """step / variety / seed / fuse from the query string; DemoError on bad values."""
  options: dict[str, Any] = {}
  step = query.get("step", "")
  if step:
    if not step.isdigit():
      raise DemoError(f"step must be a checkpoint number, got {step[:40]!r}")
    options["step"] = int(step)
  variety = query.get("variety", "0")
  if variety not in ("0", "1", "true", "false"):
    raise DemoError(f"variety must be 0 or 1, got {variety[:40]!r}")
  options["variety"] = variety in ("1", "true")
  seed = query.get("seed", "0") or "0"
  if not seed.isdigit() or int(seed) >= 2**31:
    raise DemoError(f"seed must be an integer in [0, 2^31), got {seed[:40]!r}")
  options["seed"] = int(seed)
  fuse = query.get("fuse", "0")
  if fuse not in ("0", "1", "true", "false"):
    raise DemoError(f"fuse must be 0 or 1, got {fuse[:40]!r}")
  options["fuse"] = fuse in ("1", "true")
  return options


def is_loopback(host: str) -> bool:
  """Whether binding `host` serves this machine only."""
  if host == "localhost":
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


@contextlib.contextmanager
def serving_in_background(app, *, host: str = "127.0.0.1"):
  """Serves the ASGI `app` with uvicorn in a thread on a free port; yields its base URL.

  For tests, notebooks and benchmarks; the CLI uses `serve`.
  """
  import socket  # pylint: disable=g-import-not-at-top

  try:
    import uvicorn  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"{DEMO_EXTRA_HINT} ({e})") from None
  sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
  sock.bind((host, 0))
  server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
  thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
  thread.start()
  deadline = time.monotonic() + 60
  while not server.started:
    if not thread.is_alive() or time.monotonic() > deadline:
      sock.close()
      raise RuntimeError("the demo server did not start")
    time.sleep(0.05)
  try:
    yield f"http://{f'[{host}]' if ':' in host else host}:{sock.getsockname()[1]}"
  finally:
    server.should_exit = True
    thread.join(30)
    sock.close()


def serve(demo: Demo, *, host: str = "127.0.0.1", port: int = 7860) -> None:
  """Warms the generator up, then serves the page until interrupted (uvicorn)."""
  try:
    import uvicorn  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"{DEMO_EXTRA_HINT} ({e})") from None
  app = create_app(demo)
  if not is_loopback(host):
    _LOG.warning(
        "serving on %s: anyone who can reach this machine can use the demo (no authentication); "
        "browsers only allow the microphone over https or on localhost",
        host,
    )
  _LOG.info("%s", demo.checkpoint_choice().source)
  seconds = demo.warm_up()
  _LOG.info("generator of step %s ready in %.1f s", demo.info()["default_step"], seconds)
  shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
  _LOG.info("open http://%s:%d", f"[{shown}]" if ":" in shown else shown, port)
  uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
