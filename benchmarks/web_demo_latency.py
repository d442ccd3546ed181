"""Web demo latency: time from upload to face over HTTP (python -m wav2pix_jax.demo's server).

    .venv/bin/python -m benchmarks.web_demo_latency --workdir=workdirs/demo --runs=10
        --out=results/web_demo/latency.json

Serves the workdir's newest checkpoint with the demo's own app (uvicorn, loopback, in a thread),
warms the generator up, then POSTs --runs different --seconds-long WAV clips one after another
and times each from the first byte sent to the parsed JSON with the face (decode, resample,
generate, PNG); the server's own share is the response's "ms". Records the machine's load.
"""

from __future__ import annotations

import io
import json
import os
import platform
import statistics
import time
from typing import Sequence
import urllib.request

from absl import flags
import numpy as np

from wav2pix_jax import cli

PROG = "benchmarks.web_demo_latency"
# The tool's own flags (not absl's global FLAGS: see wav2pix_jax/cli.py).
FLAGS = flags.FlagValues()
flags.DEFINE_string("workdir", "workdirs/demo", "A trained workdir.", flag_values=FLAGS)
flags.DEFINE_integer("runs", 10, "Timed uploads.", flag_values=FLAGS)
flags.DEFINE_float("seconds", 1.0, "Length of each uploaded clip.", flag_values=FLAGS)
flags.DEFINE_string("out", None, "Write the results here as JSON.", flag_values=FLAGS)


def _clip(seconds: float, seed: int, rate: int = 16_000) -> bytes:
  """A voiced-speech-like WAV: a 120-220 Hz harmonic tone with syllable-rate loudness, and noise."""
  import soundfile  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * rate)) / rate
  f0 = rng.uniform(120, 220)
  voice = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
  wave = 0.2 * voice * (1.2 + np.sin(2 * np.pi * 4 * t)) + 0.01 * rng.normal(size=t.size)
  buffer = io.BytesIO()
  soundfile.write(buffer, wave.astype(np.float32), rate, format="WAV")
  return buffer.getvalue()


def _commit() -> str | None:
  """The repository's HEAD (with "+dirty" for uncommitted changes), or None outside git."""
  import subprocess  # pylint: disable=g-import-not-at-top

  here = os.path.dirname(os.path.abspath(__file__))
  try:
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=here,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=here, check=False).returncode
  except (OSError, subprocess.CalledProcessError):
    return None
  return head + ("+dirty" if dirty else "")


def main(argv: Sequence[str] | None = None) -> dict:
  """Runs the benchmark; returns its report (exits after --help or a bad command line)."""
  status = cli.parse_command_line(FLAGS, argv, PROG, __doc__)
  if status is not None:
    raise SystemExit(status)

  import jax  # pylint: disable=g-import-not-at-top

  from wav2pix_jax.serving import web_app  # pylint: disable=g-import-not-at-top
  from wav2pix_jax.serving import web_demo  # pylint: disable=g-import-not-at-top

  service = web_demo.Demo(FLAGS.workdir)
  warm_up_s = service.warm_up()
  info = service.info()
  round_trip_ms, server_ms = [], []
  with web_app.serving_in_background(web_app.create_app(service)) as url:
    for run in range(FLAGS.runs):
      data = _clip(FLAGS.seconds, seed=run)
      request = urllib.request.Request(f"{url}/api/generate", data=data, method="POST")
      start = time.perf_counter()
      with urllib.request.urlopen(request, timeout=300) as response:
        result = json.loads(response.read())
      round_trip_ms.append(1000 * (time.perf_counter() - start))
      server_ms.append(result["ms"])
      assert result["size"] == info["image_size"] and result["face"].startswith("data:image/png")
  report = {
      "what": "upload to face over HTTP on loopback, --seconds WAV clips, one at a time",
      "workdir": os.path.abspath(FLAGS.workdir),
      "step": info["default_step"],
      "image_size": info["image_size"],
      "clip_seconds": FLAGS.seconds,
      "runs": FLAGS.runs,
      "round_trip_ms": {
          "median": statistics.median(round_trip_ms),
          "min": min(round_trip_ms),
          "max": max(round_trip_ms),
          "all": [round(x, 1) for x in round_trip_ms],
      },
      "server_ms_median": statistics.median(server_ms),
      "warm_up_s": round(warm_up_s, 2),
      "load_average_1_5_15": os.getloadavg(),
      "cpu_count": os.cpu_count(),
      "processor": platform.processor() or platform.machine(),
      "jax": jax.__version__,
      "commit": _commit(),
      "devices": [str(d) for d in jax.devices()],
  }
  print(json.dumps(report, indent=2))
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(report, f, indent=2)
  return report


if __name__ == "__main__":
  main()
