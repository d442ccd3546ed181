"""The practical peak of this machine: a 2048^3 float32 matmul in JAX (and optionally torch).

.venv/bin/python -m benchmarks.peak [--torch-python=/work/torchref-venv/bin/python]
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Sequence

from absl import flags

from benchmarks import timing
from wav2pix_jax import cli

N = 2048

PROG = "benchmarks.peak"
# The tool's own flags (not absl's global FLAGS: see wav2pix_jax/cli.py).
FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "torch-python", None, "Also time torch with this interpreter.", flag_values=FLAGS
)
flags.DEFINE_integer("steps", 20, "Timed matmuls.", flag_values=FLAGS)
flags.DEFINE_integer("n", N, "Matrix size (n x n times n x n).", flag_values=FLAGS)

# The same measurement with torch (2 threads), as ../shared/reference/peak_gemm.py does it,
# without that script's wait of up to 15 minutes for an idle machine.
_TORCH_SNIPPET = """
import json, os, time, torch
def busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
torch.set_num_threads({threads})
n = {n}
a = torch.randn(n, n); b = torch.randn(n, n)
for _ in range({warmup}): a @ b
wall, cpu, other = [], [], []
for _ in range({steps}):
    b0, c0, t0 = busy(), time.process_time(), time.perf_counter()
    a @ b
    t1, c1, b1 = time.perf_counter(), time.process_time(), busy()
    wall.append(t1 - t0); cpu.append(c1 - c0); other.append(((b1 - b0) - (c1 - c0)) / (t1 - t0))
print(json.dumps({{"wall": wall, "cpu": cpu, "other": other, "torch": torch.__version__}}))
"""


def jax_peak(*, n: int = N, steps: int = 20, warmup: int = 3) -> dict:
  """Times a jitted n^3 float32 matmul; GFLOP/s median and best, with the machine load."""
  import jax
  import jax.numpy as jnp

  from benchmarks import xla_cost

  ka, kb = jax.random.split(jax.random.PRNGKey(0))
  a = jax.random.normal(ka, (n, n), jnp.float32)
  b = jax.random.normal(kb, (n, n), jnp.float32)
  compiled, info = xla_cost.compile_aot(jax.jit(jnp.matmul), a, b)
  samples = timing.time_calls(
      lambda: compiled(a, b).block_until_ready(), steps=steps, warmup=warmup
  )
  flops = 2.0 * n**3
  res = {
      "impl": "jax",
      "kind": "peak",
      "name": "peak",
      "sgemm_n": n,
      "flops_per_iter": flops,
      "xla_flops": info["flops_per_device"],
      "compile_s": info["compile_s"],
  }
  res.update(timing.summarize(samples, batch=1, flops=flops))
  return res


def torch_peak(
    python: str, *, n: int = N, steps: int = 20, warmup: int = 3, threads: int = 2
) -> dict:
  """The same matmul in torch, in a subprocess of `python`."""
  code = _TORCH_SNIPPET.format(n=n, steps=steps, warmup=warmup, threads=threads)
  try:
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=600)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
  except (OSError, subprocess.TimeoutExpired, IndexError, json.JSONDecodeError) as e:
    return {"impl": "torch", "kind": "peak", "name": "peak", "error": f"{type(e).__name__}: {e}"}
  flops = 2.0 * n**3
  samples = timing.Samples(wall_s=out["wall"], cpu_s=out["cpu"], other_cores=out["other"])
  res = {
      "impl": "torch",
      "kind": "peak",
      "name": "peak",
      "sgemm_n": n,
      "flops_per_iter": flops,
      "torch": out["torch"],
      "threads": threads,
  }
  res.update(timing.summarize(samples, batch=1, flops=flops))
  return res


def main(argv: Sequence[str] | None = None) -> int:
  """CLI entry; returns the exit status."""
  status = cli.parse_command_line(FLAGS, argv, PROG, __doc__)
  if status is not None:
    return status
  torch_python = FLAGS["torch-python"].value
  results = [jax_peak(n=FLAGS.n, steps=FLAGS.steps)]
  if torch_python:
    results.append(torch_peak(torch_python, n=FLAGS.n, steps=FLAGS.steps))
  for r in results:
    s = timing.headline(r)
    print(
        f"{r['impl']:6s} {FLAGS.n}^3 f32 matmul: "
        + (
            f"{s['gflops_per_s_median']} GFLOP/s median, {s['gflops_per_s_best']} best"
            if s
            else r.get("error", "?")
        )
    )
  print(json.dumps(results))
  return 0


if __name__ == "__main__":
  sys.exit(main())
