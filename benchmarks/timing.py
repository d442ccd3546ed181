"""Wall-clock timing with a record of machine load: the measurement core of the benchmarks.

The machines these run on are shared. For every timed sample we record how many cores OTHER
processes kept busy meanwhile (the machine's busy time from /proc/stat minus our own CPU time),
so that noisy samples can be told apart from clean ones; the same method as the PyTorch
reference (../shared/reference/wav2pix_torch_ref.py), so that both sides are judged alike.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from typing import Callable, Sequence

# A sample is "clean" when other processes kept fewer than this many cores busy meanwhile.
CLEAN_OTHER_CORES = 0.25

_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def loadavg() -> list[float] | None:
  """The 1, 5 and 15 minute load averages, or None where /proc is absent."""
  try:
    with open("/proc/loadavg") as f:
      return [float(x) for x in f.read().split()[:3]]
  except OSError:
    return None


def machine_busy_s() -> float:
  """CPU-seconds the whole machine has spent busy so far (user+nice+system+irq+...)."""
  try:
    with open("/proc/stat") as f:
      ticks = [int(x) for x in f.readline().split()[1:9]]
  except OSError:
    return float("nan")
  return (sum(ticks) - ticks[3] - ticks[4]) / _HZ  # minus idle and iowait


class LoadMeter:
  """Measures wall time, our CPU time and the cores kept busy by other processes."""

  def __enter__(self) -> "LoadMeter":
    self._b0, self._c0, self._t0 = machine_busy_s(), time.process_time(), time.perf_counter()
    return self

  def __exit__(self, *exc) -> None:
    t1, c1, b1 = time.perf_counter(), time.process_time(), machine_busy_s()
    self.wall_s = t1 - self._t0
    self.cpu_s = c1 - self._c0
    self.other_cores = ((b1 - self._b0) - self.cpu_s) / max(self.wall_s, 1e-9)


def other_cores_busy(window_s: float = 2.0) -> float:
  """Cores kept busy by other processes over `window_s` seconds (we sleep meanwhile)."""
  with LoadMeter() as m:
    time.sleep(window_s)
  return m.other_cores


def wait_idle(
    max_wait_s: float, threshold: float = 0.15, window_s: float = 2.0
) -> tuple[float, float]:
  """Waits (up to max_wait_s) until other processes use < threshold cores.

  Returns (other cores busy in the last window, seconds waited)."""
  t0 = time.perf_counter()
  while True:
    other = other_cores_busy(window_s)
    waited = time.perf_counter() - t0
    if other < threshold or waited >= max_wait_s:
      return round(other, 2), round(waited, 1)


@dataclasses.dataclass
class Samples:
  """Per-call wall time, CPU time and other processes' load of each timed sample."""

  wall_s: list[float] = dataclasses.field(default_factory=list)
  cpu_s: list[float] = dataclasses.field(default_factory=list)
  other_cores: list[float] = dataclasses.field(default_factory=list)

  def num_clean(self) -> int:
    return sum(o < CLEAN_OTHER_CORES for o in self.other_cores)


def time_calls(
    fn: Callable[[], object],
    *,
    steps: int,
    warmup: int,
    inner: int = 1,
    max_steps: int | None = None,
) -> Samples:
  """Times samples of `inner` calls of `fn` (which must block until its work is done).

  Runs `warmup` untimed calls, then at least `steps` samples, and keeps sampling (up to
  `max_steps`) until `steps` of them are clean."""
  for _ in range(warmup):
    fn()
  max_steps = max(max_steps or steps, steps)
  samples = Samples()
  while len(samples.wall_s) < max_steps:
    with LoadMeter() as m:
      for _ in range(inner):
        fn()
    samples.wall_s.append(m.wall_s / inner)
    samples.cpu_s.append(m.cpu_s / inner)
    samples.other_cores.append(m.other_cores)
    if len(samples.wall_s) >= steps and samples.num_clean() >= steps:
      break
  return samples


def _stats(wall: Sequence[float], cpu: Sequence[float], batch: int, flops: float | None) -> dict:
  med = statistics.median(wall)
  return {
      "n": len(wall),
      "ms_min": round(min(wall) * 1e3, 3),
      "ms_median": round(med * 1e3, 3),
      "ms_max": round(max(wall) * 1e3, 3),
      "samples_per_s_median": round(batch / med, 2),
      "samples_per_s_best": round(batch / min(wall), 2),
      "gflops_per_s_median": round(flops / med / 1e9, 2) if flops else None,
      "gflops_per_s_best": round(flops / min(wall) / 1e9, 2) if flops else None,
      # Our CPU-seconds per wall-second: ~= the cores we used, when we had them to ourselves.
      "cpu_util_median": round(statistics.median(c / w for c, w in zip(cpu, wall)), 2),
  }


def summarize(samples: Samples, *, batch: int, flops: float | None) -> dict:
  """Statistics over all samples and over the clean ones, plus the raw per-sample lists.

  Same keys as the PyTorch reference's JSON, so rows of both can be compared field by field."""
  res = {"all": _stats(samples.wall_s, samples.cpu_s, batch, flops)}
  clean = [i for i, o in enumerate(samples.other_cores) if o < CLEAN_OTHER_CORES]
  res["clean"] = (
      _stats([samples.wall_s[i] for i in clean], [samples.cpu_s[i] for i in clean], batch, flops)
      if clean
      else None
  )
  res["all_ms"] = [round(w * 1e3, 2) for w in samples.wall_s]
  res["all_cpu_util"] = [round(c / w, 2) for c, w in zip(samples.cpu_s, samples.wall_s)]
  res["all_other_cores"] = [round(o, 2) for o in samples.other_cores]
  return res


def headline(result: dict) -> dict | None:
  """The statistics a table shows: clean samples when there are enough, else all of them."""
  clean, every = result.get("clean"), result.get("all")
  if clean and every and clean["n"] >= max(3, every["n"] // 2):
    return dict(clean, which="clean")
  return dict(every, which="all") if every else None
