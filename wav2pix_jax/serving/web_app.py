"""The web demo's web app: the page and two JSON endpoints around a `web_demo.Demo`.

    service = web_demo.Demo("workdirs/demo")
    web_app.serve(service, port=7860)  # the page, with uvicorn, until interrupted

`create_app` wraps a Demo in a Starlette app (GET /, GET /api/info, POST /api/generate): uploads
refused early when too big or when the queue is full, streamed to a private temporary file, then
run in a worker thread; `serve` runs it with uvicorn, `serving_in_background` in a thread (tests,
notebooks, benchmarks). The only module that imports the [demo] extra (`pip install -e
'.[demo]'`: starlette and uvicorn), lazily: importing it imports neither.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import ipaddress
import logging as std_logging
import pathlib
import shutil
import tempfile
import threading
import time
import types
from typing import Any

from wav2pix_jax.serving import web_demo


def page() -> str:
  """The demo's HTML page (one file, no external resources: works offline)."""
  return (
      importlib.resources.files("wav2pix_jax.serving").joinpath("demo_page.html").read_text("utf-8")
  )


# ---------------------------------------------------------------------------------------------
# The web app (Starlette: one page and two JSON endpoints).


def create_app(demo: web_demo.Demo):
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
    raise ImportError(f"{web_demo.DEMO_EXTRA_HINT} ({e})") from None
  return types.SimpleNamespace(
      anyio=anyio,
      Starlette=Starlette,
      ClientDisconnect=ClientDisconnect,
      HTMLResponse=HTMLResponse,
      JSONResponse=JSONResponse,
      Route=Route,
  )


class _Endpoints:
  """The app's request handlers around one web_demo.Demo."""

  def __init__(self, demo: web_demo.Demo, web: types.SimpleNamespace):
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
    except web_demo.DemoError as e:
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
    except web_demo.DemoError as e:
      return self.error(str(e), e.status)
    except self.web.ClientDisconnect:
      return self.error("the upload was interrupted", 400)  # nobody is left to read it
    except Exception as e:  # pylint: disable=broad-except
      _LOG.exception("generation failed")
      return self.error(f"internal error: {_describe(e)}", 500)
    finally:
      self.waiting -= 1
      shutil.rmtree(private, ignore_errors=True)


def _refusal(length: str | None, waiting: int, limits: web_demo.Limits) -> tuple[str, int] | None:
  """(message, status) for an upload refused before reading it (Content-Length, queue), or None."""
  if length is not None:
    if not length.isdigit():
      return f"bad Content-Length {length[:40]!r}", 400
    if int(length) > limits.max_upload_bytes:
      return web_demo.too_big(int(length), limits.max_upload_bytes), 413
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
        raise web_demo.DemoError(web_demo.too_big(size, max_bytes), status=413)
      f.write(chunk)
  if size == 0:
    raise web_demo.DemoError("no file received (the upload is empty)", status=400)


_LOG = std_logging.getLogger(__name__)


def _describe(e: Exception) -> str:
  return " ".join(str(e).split())[:300] or type(e).__name__


def _options(query) -> dict:
  """step / variety / seed / fuse from the query string; web_demo.DemoError on bad values."""
  options: dict[str, Any] = {}
  step = query.get("step", "")
  if step:
    if not step.isdigit():
      raise web_demo.DemoError(f"step must be a checkpoint number, got {step[:40]!r}")
    options["step"] = int(step)
  variety = query.get("variety", "0")
  if variety not in ("0", "1", "true", "false"):
    raise web_demo.DemoError(f"variety must be 0 or 1, got {variety[:40]!r}")
  options["variety"] = variety in ("1", "true")
  seed = query.get("seed", "0") or "0"
  if not seed.isdigit() or int(seed) >= 2**31:
    raise web_demo.DemoError(f"seed must be an integer in [0, 2^31), got {seed[:40]!r}")
  options["seed"] = int(seed)
  fuse = query.get("fuse", "0")
  if fuse not in ("0", "1", "true", "false"):
    raise web_demo.DemoError(f"fuse must be 0 or 1, got {fuse[:40]!r}")
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
    raise ImportError(f"{web_demo.DEMO_EXTRA_HINT} ({e})") from None
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


def serve(demo: web_demo.Demo, *, host: str = "127.0.0.1", port: int = 7860) -> None:
  """Warms the generator up, then serves the page until interrupted (uvicorn)."""
  try:
    import uvicorn  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"{web_demo.DEMO_EXTRA_HINT} ({e})") from None
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
