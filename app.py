"""The web demo as a Hugging Face Space (Docker SDK) or on any host: serves $WAV2PIX_WORKDIR.

    WAV2PIX_WORKDIR=workdirs/demo python app.py        # http://0.0.0.0:7860, as a Space expects

Environment: WAV2PIX_WORKDIR (required: a training workdir), WAV2PIX_STEP (default:
<workdir>/best, else the newest checkpoint), WAV2PIX_MAX_UPLOAD_MB (10), WAV2PIX_MAX_SECONDS (30),
WAV2PIX_VIDEO_SECONDS (3), HOST (0.0.0.0), PORT (7860), WAV2PIX_LIBRARY_LOGS (1: the libraries'
INFO logs too). The same page and limits as `python -m wav2pix_jax.demo`; README.md ("Web demo")
says how to deploy it (space/Dockerfile).
"""

import logging
import os
import sys
from typing import Mapping

from wav2pix_jax import cli
from wav2pix_jax.serving import web_app
from wav2pix_jax.serving import web_demo


def demo_from_env(env: Mapping[str, str] = os.environ) -> web_demo.Demo:
  """The Demo that the environment describes; ValueError (one line) on a missing or bad value."""
  workdir = env.get("WAV2PIX_WORKDIR", "")
  if not workdir:
    raise ValueError("set WAV2PIX_WORKDIR to a training workdir (e.g. workdirs/demo)")

  def number(name: str, default: float, kind=float):
    text = env.get(name, "")
    try:
      return kind(text) if text else default
    except ValueError:
      raise ValueError(f"{name} must be a number, got {text!r}") from None

  limits = web_demo.Limits(
      max_upload_bytes=int(number("WAV2PIX_MAX_UPLOAD_MB", 10.0) * 2**20),
      max_seconds=number("WAV2PIX_MAX_SECONDS", 30.0),
      video_seconds=number("WAV2PIX_VIDEO_SECONDS", 3.0),
  )
  return web_demo.Demo(workdir, step=number("WAV2PIX_STEP", None, int), limits=limits)


def main() -> None:
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  # As the CLI: our lines and every warning; the libraries' INFO logs with WAV2PIX_LIBRARY_LOGS=1.
  cli.quiet_library_logs(show=cli.library_logs_wanted())
  try:
    service = demo_from_env()
    web_app.serve(
        service,
        host=os.environ.get("HOST", "0.0.0.0"),
        port=int(os.environ.get("PORT", "7860")),
    )
  except (ValueError, OSError, ImportError) as e:
    print(cli.error_line("app.py", e), file=sys.stderr)
    raise SystemExit(1) from None


if __name__ == "__main__":
  main()
