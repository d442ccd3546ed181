"""Runs the PyTorch reference (wav2pix_torch_ref.py) in a subprocess and reads its JSON line.

The reference lives outside the repo (torch is not a dependency of this project). It is found
via --torch-ref (a file or its folder), else $WAV2PIX_TORCH_REF, else ../shared/reference
relative to the repo root.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT_NAME = "wav2pix_torch_ref.py"
DEFAULT_REF_DIR = REPO_ROOT.parent / "shared" / "reference"


def locate_reference(path: str | None = None) -> pathlib.Path:
  """The reference script: `path` (file or folder), $WAV2PIX_TORCH_REF, or the default."""
  candidate = pathlib.Path(path or os.environ.get("WAV2PIX_TORCH_REF") or DEFAULT_REF_DIR)
  if candidate.is_dir():
    candidate = candidate / SCRIPT_NAME
  if not candidate.is_file():
    raise FileNotFoundError(
        f"PyTorch reference not found at {candidate}; pass --torch-ref=PATH or set "
        f"WAV2PIX_TORCH_REF"
    )
  return candidate


def reference_args(
    *,
    mode: str,
    image_size: int,
    batch: int,
    steps: int,
    warmup: int,
    inner: int = 1,
    max_steps: int | None = None,
    detach_in_d: bool = False,
    wait_idle_s: float = 0.0,
    threads: int | None = None,
    num_ids: int | None = None,
) -> list[str]:
  """Command-line flags of the reference for one row."""
  args = [
      "--mode",
      mode,
      "--image-size",
      str(image_size),
      "--batch",
      str(batch),
      "--steps",
      str(steps),
      "--warmup",
      str(warmup),
      "--inner",
      str(inner),
  ]
  if max_steps:
    args += ["--max-steps", str(max_steps)]
  if detach_in_d:
    args.append("--detach-in-d")
  if wait_idle_s > 0:
    args += ["--wait-idle", str(wait_idle_s)]
  if threads:
    args += ["--threads", str(threads)]
  if num_ids:
    args += ["--num-ids", str(num_ids)]
  return args


def run_reference(
    python: str, script: pathlib.Path, args: list[str], *, timeout_s: float = 3600.0
) -> dict:
  """Runs the reference once; its JSON result, or {"error": ...} if it failed."""
  cmd = [python, str(script), *args]
  t0 = time.perf_counter()
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=script.parent)
  except (OSError, subprocess.TimeoutExpired) as e:
    return {"error": f"{type(e).__name__}: {e}", "cmd": cmd}
  elapsed = round(time.perf_counter() - t0, 1)
  for line in reversed(proc.stdout.strip().splitlines()):
    if line.startswith("{"):
      try:
        res = json.loads(line)
      except json.JSONDecodeError:
        continue
      res["cmd"] = cmd
      res["process_s"] = elapsed
      return res
  tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
  return {"error": f"exit {proc.returncode}: " + " | ".join(tail), "cmd": cmd}
