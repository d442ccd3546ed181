"""Web demo: speak into the browser (or upload a file) and see the face a trained workdir generates.

    python -m wav2pix_jax.demo --workdir=workdirs/demo          # then open http://127.0.0.1:7860
    wav2pix-demo --workdir=DIR --step=1400 --port=8000 --max_seconds=20
    wav2pix-demo --workdir=DIR --checkpoint=latest     # default: the best by periodic validation

One page (demo_page.html): record from the microphone (MediaRecorder) or upload any file that
`wav2pix-generate` reads; the face (the centred window, as `generate` makes it) is shown
upscaled without blur next to the waveform, and clips of --video_seconds or more also get the
talking-face video of `generate --video` (the same functions). A "variety" switch samples with
the generator's dropout (refused, with the reason, for runs trained without dropout), "fuse all
windows" makes the face from the mean speech embedding of every window of the clip (`generate
--fuse`), and a step selector appears when the workdir has several checkpoints.

Safety: binds 127.0.0.1 unless --host says otherwise (with a warning); uploads are limited in
size (checked on Content-Length and again while streaming, before any decoding) and in decoded
duration; each upload is streamed to a private temporary directory (never the workdir, never
under the client's file name) that is removed when the request ends; generation is serialised
(one at a time, at most --max_waiting requests queued, more are told to retry). Errors caused by
the input are one line in the page; the server keeps serving. A user's error on the command line
(a bad flag, workdir or step) is one line on stderr and a non-zero exit status.

The work is serving/web_demo.py's (`Demo`, `serve`); this module is its command line. Needs the
[demo] extra (`pip install -e '.[demo]'`: starlette and uvicorn).
"""

from __future__ import annotations

import logging
import sys
from typing import Sequence

from absl import flags

from wav2pix_jax import cli
from wav2pix_jax import config_lib
from wav2pix_jax.data import audio
from wav2pix_jax.serving import web_app
from wav2pix_jax.serving import web_demo

PROG = "wav2pix-demo"
# The tool's own flags (not absl's global FLAGS: see cli.parse_flags).
FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "workdir", None, "Training workdir (or its checkpoints/ directory).", flag_values=FLAGS
)
flags.DEFINE_string(
    "host",
    "127.0.0.1",
    "Address to bind; 0.0.0.0 serves other machines too.",
    flag_values=FLAGS,
)
flags.DEFINE_integer("port", 7860, "Port to serve the page on.", flag_values=FLAGS)
cli.define_checkpoint_flags(FLAGS)  # the page's default checkpoint
flags.DEFINE_float("max_upload_mb", 10.0, "Largest upload accepted, in MiB.", flag_values=FLAGS)
flags.DEFINE_float(
    "max_seconds", 30.0, "Longest decoded sound accepted, in seconds.", flag_values=FLAGS
)
flags.DEFINE_float(
    "video_seconds",
    3.0,
    "Clips at least this long also get a talking-face video; 0: never.",
    flag_values=FLAGS,
)
flags.DEFINE_float("fps", 25.0, "Frame rate of the talking-face video.", flag_values=FLAGS)
flags.DEFINE_integer(
    "max_waiting",
    32,
    "Requests queued behind the current one; more get 503.",
    flag_values=FLAGS,
)
flags.DEFINE_boolean("library_logs", False, cli.LIBRARY_LOGS_HELP, flag_values=FLAGS)
flags.mark_flag_as_required("workdir", flag_values=FLAGS)


def _limits() -> web_demo.Limits:
  """The request limits the flags give; UsageError naming the flag on a bad value."""
  if not 0 < FLAGS.port < 65536:
    raise cli.UsageError(f"--port must be in 1..65535, got {FLAGS.port}")
  if not FLAGS.max_upload_mb > 0:
    raise cli.UsageError(f"--max_upload_mb must be positive, got {FLAGS.max_upload_mb:g}")
  try:
    return web_demo.Limits(
        max_upload_bytes=max(1, int(FLAGS.max_upload_mb * 2**20)),
        max_seconds=FLAGS.max_seconds,
        video_seconds=FLAGS.video_seconds,
        fps=FLAGS.fps,
        max_waiting=FLAGS.max_waiting,
    )
  except ValueError as e:
    raise cli.UsageError(f"--{e}") from None


def main(argv: Sequence[str] | None = None) -> int:
  """CLI: serves the page until interrupted; returns the exit status.

  A user's error is one line on stderr: status 2 for a bad command line, 1 otherwise.
  """
  if cli.wants_help(argv):
    print(cli.help_text(FLAGS, PROG, __doc__))
    return 0
  # Our progress lines ("INFO open http://..."); set before parsing, which logs through the root
  # logger (and would install Python's default console handler, level WARNING, first).
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  cli.quiet_library_logs()  # absl's own INFO lines while parsing: off whatever --library_logs says
  try:
    positional = cli.parse_flags(FLAGS, argv, PROG)
    if positional:
      raise cli.UsageError(f"unexpected arguments {positional}")
    limits = _limits()
  except cli.UsageError as e:
    print(cli.error_line(PROG, e), file=sys.stderr)
    return 2
  cli.quiet_library_logs(show=cli.library_logs_wanted(FLAGS.library_logs))
  try:
    demo = web_demo.Demo(FLAGS.workdir, step=FLAGS.step, checkpoint=FLAGS.checkpoint, limits=limits)
    if FLAGS.step is not None and FLAGS.step not in demo.steps():
      raise config_lib.ConfigError(
          f"{FLAGS.workdir}: no checkpoint for step {FLAGS.step}; available: {demo.steps()}"
      )
    web_app.serve(demo, host=FLAGS.host, port=FLAGS.port)
  except (config_lib.ConfigError, web_demo.DemoError, audio.AudioError, OSError, ImportError) as e:
    # A bad setting, workdir or path, or the [demo] extra missing; a bug keeps its traceback.
    print(cli.error_line(PROG, e), file=sys.stderr)
    return 1
  return 0


def run() -> None:
  """Console-script entry point (wav2pix-demo)."""
  raise SystemExit(main())


if __name__ == "__main__":
  run()
