"""Ahead-of-time compilation with timings and XLA's own cost analysis."""

from __future__ import annotations

import time
from typing import Any, Callable


def flops_of(compiled: Any) -> float | None:
  """FLOPs of one call of a compiled executable, from XLA's cost analysis (None if absent).

  For a pmapped executable this is the cost of ONE device's program."""
  try:
    analysis = compiled.cost_analysis()
  except Exception:  # noqa: BLE001  (not every backend / version implements it)
    return None
  if isinstance(analysis, (list, tuple)):  # older JAX: one dict per program
    analysis = analysis[0] if analysis else None
  if not analysis:
    return None
  flops = analysis.get("flops")
  return float(flops) if flops is not None and flops >= 0 else None


def compile_aot(fn: Any, *args: Any) -> tuple[Callable, dict]:
  """Lowers and compiles a jitted/pmapped `fn` for `args`.

  Returns (the compiled executable, {"lower_s", "compile_s", "flops_per_device"})."""
  t0 = time.perf_counter()
  lowered = fn.lower(*args)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  return compiled, {
      "lower_s": round(t1 - t0, 3),
      "compile_s": round(t2 - t1, 3),
      "flops_per_device": flops_of(compiled),
  }
