"""Wav2Pix speed benchmarks: JAX rows, optionally interleaved with the PyTorch reference.

    .venv/bin/python -m benchmarks.run --torch-python=/work/torchref-venv/bin/python \
        --out=bench.json [--rows=train-64-*,generate-64-b1-subpixel] [--wait-idle=60]

Prints a table (median/min/max ms, samples/s, XLA FLOPs per iteration, GFLOP/s, compile time,
other processes' load) and the JAX/torch ratios, and writes everything to --out as JSON.
See benchmarks/README.md and benchmarks/rows.py for the row names.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
import traceback
import types
from typing import Sequence

from absl import flags

from benchmarks import rows as rows_lib
from benchmarks import timing, torch_ref
from wav2pix_jax import cli

TORCH_VARIANTS = {"authors": False, "detach": True}  # variant -> the reference's --detach-in-d

PROG = "benchmarks.run"
TORCH_PYTHON_ENV = "WAV2PIX_TORCH_PYTHON"
# The tool's own flags (not absl's global FLAGS: see wav2pix_jax/cli.py); hyphenated names, read
# as attributes with underscores through parsed_args().
FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "rows",
    None,
    "Comma-separated row names or glob patterns over the defaults "
    f"(default: {','.join(rows_lib.DEFAULT_ROWS)}).",
    flag_values=FLAGS,
)
flags.DEFINE_boolean("list", False, "Print the default rows and exit.", flag_values=FLAGS)
flags.DEFINE_string("out", None, "Write the results here as JSON.", flag_values=FLAGS)
flags.DEFINE_string(
    "torch-python",
    None,
    "Python with torch: also run the PyTorch reference for each row "
    f"(default: ${TORCH_PYTHON_ENV}).",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "torch-ref",
    None,
    "wav2pix_torch_ref.py or its folder (default: $WAV2PIX_TORCH_REF, "
    "else ../shared/reference relative to the repo).",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "torch-variants",
    "authors,detach",
    "Reference training steps to run: authors (its D step back-propagates through G, as the "
    "authors' code), detach (--detach-in-d, same work as ours).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "torch-threads", None, "Threads of the reference (default: its own, 2).", flag_values=FLAGS
)
flags.DEFINE_integer("steps", 10, "Timed samples per train row.", flag_values=FLAGS)
flags.DEFINE_integer("warmup", 3, "Untimed calls before timing.", flag_values=FLAGS)
flags.DEFINE_integer("gen-steps", 20, "Timed samples per generate row.", flag_values=FLAGS)
flags.DEFINE_integer(
    "gen-inner",
    0,
    "Calls per timed generate sample (0: 10 for batch <= 4, else 1).",
    flag_values=FLAGS,
)
flags.DEFINE_integer("pipeline-steps", 30, "Timed batches per pipeline row.", flag_values=FLAGS)
flags.DEFINE_float(
    "max-steps-factor",
    1.5,
    "Keep sampling up to factor*steps until `steps` clean samples exist.",
    flag_values=FLAGS,
)
flags.DEFINE_float(
    "wait-idle",
    0.0,
    "Before each row, wait up to this many seconds for the other processes to go idle "
    "(< 0.15 cores).",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "data-dir",
    "/tmp/tfds_data",
    "TFDS data_dir with the prepared youtubers records (pipeline rows).",
    flag_values=FLAGS,
)
flags.DEFINE_boolean(
    "prepare-data",
    False,
    "Build youtubers into --data-dir from the release if it is not there.",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "host-devices",
    0,
    "Fake this many CPU devices (XLA_FLAGS) so pmap splits the batch.",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "config", None, "Config file instead of configs/base.py / base_128.py.", flag_values=FLAGS
)


def parsed_args() -> types.SimpleNamespace:
  """The parsed flags as attributes (--gen-steps: .gen_steps); --torch-python's default read now."""
  values = {name.replace("-", "_"): value for name, value in FLAGS.flag_values_dict().items()}
  if not FLAGS["torch-python"].present:
    values["torch_python"] = os.environ.get(TORCH_PYTHON_ENV)
  return types.SimpleNamespace(**values)


def _setup_env(args) -> None:
  """Environment that must be set before JAX is imported."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if args.host_devices:
    xla_flags = [
        f
        for f in os.environ.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]
    xla_flags.append(f"--xla_force_host_platform_device_count={args.host_devices}")
    os.environ["XLA_FLAGS"] = " ".join(xla_flags)


def _max_steps(args, steps: int) -> int:
  return max(steps, int(round(steps * args.max_steps_factor)))


def _gen_inner(args, batch: int) -> int:
  return args.gen_inner or (10 if batch <= 4 else 1)


def run_jax_row(row: rows_lib.Row, args) -> dict:
  """Measures one JAX row; a dict with "skipped" or "error" if it could not."""
  from benchmarks import jax_rows, peak

  try:
    if row.kind == "peak":
      return peak.jax_peak(steps=args.gen_steps)
    if row.kind == "train":
      return jax_rows.bench_train(
          row,
          steps=args.steps,
          warmup=args.warmup,
          max_steps=_max_steps(args, args.steps),
          config_path=args.config,
      )
    if row.kind == "phases":
      return jax_rows.bench_phases(
          row,
          steps=args.steps,
          warmup=args.warmup,
          max_steps=_max_steps(args, args.steps),
          config_path=args.config,
      )
    if row.kind == "generate":
      return jax_rows.bench_generate(
          row,
          steps=args.gen_steps,
          warmup=args.warmup,
          inner=_gen_inner(args, row.batch),
          max_steps=_max_steps(args, args.gen_steps),
          config_path=args.config,
      )
    if row.kind == "pipeline":
      return jax_rows.bench_pipeline(
          row,
          steps=args.pipeline_steps,
          warmup=args.warmup,
          data_dir=args.data_dir,
          prepare=args.prepare_data,
          config_path=args.config,
      )
    raise ValueError(row.kind)
  except jax_rows.Skip as e:
    return {"impl": "jax", "name": row.name, "kind": row.kind, "skipped": str(e)}
  except Exception as e:  # noqa: BLE001  (one broken row must not lose the others)
    return {
        "impl": "jax",
        "name": row.name,
        "kind": row.kind,
        "error": f"{type(e).__name__}: {e}",
        "traceback": traceback.format_exc(limit=8),
    }


def run_torch_row(row: rows_lib.Row, variant: str, args, script) -> dict:
  """Runs the reference for one row group and variant."""
  base = {
      "impl": "torch",
      "variant": variant,
      "kind": row.kind,
      "image_size": row.image_size,
      "batch": row.batch,
  }
  if row.kind == "peak":
    from benchmarks import peak

    return dict(peak.torch_peak(args.torch_python, steps=args.gen_steps), variant=variant)
  train = row.kind == "train"
  steps = args.steps if train else args.gen_steps
  cli = torch_ref.reference_args(
      mode=row.torch_mode,
      image_size=row.image_size,
      batch=row.batch,
      steps=steps,
      warmup=args.warmup,
      inner=1 if train else _gen_inner(args, row.batch),
      max_steps=_max_steps(args, steps),
      detach_in_d=TORCH_VARIANTS[variant],
      threads=args.torch_threads,
  )
  res = torch_ref.run_reference(args.torch_python, script, cli)
  return {
      **res,
      **base,
      "ref_impl": res.get("impl"),
      "name": f"{row.kind}-{row.image_size}-b{row.batch}",
  }


# ------------------------------------------------------------------------------------------
# Table
# ------------------------------------------------------------------------------------------


def _fmt(x, spec=".1f", missing="-"):
  return missing if x is None else format(x, spec)


def _row_label(res: dict) -> str:
  if res["impl"] == "torch":
    return f"{res['name']} torch-{res.get('variant', '')}"
  return f"{res['name']} jax"


def table_lines(results: list[dict]) -> list[str]:
  """A markdown table of all rows, in run order."""
  head = (
      "| row | median ms | min ms | max ms | samples/s | GFLOP/iter | GFLOP/s | compile s "
      "| other cores | n |"
  )
  lines = [head, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for res in results:
    label = _row_label(res)
    if "skipped" in res or "error" in res:
      why = res.get("skipped") or res.get("error")
      lines.append(f"| {label} | {'skipped' if 'skipped' in res else 'ERROR'}: " f"{why[:150]} |")
      continue
    if res.get("kind") == "phases":
      for phase, ph in res["phases"].items():
        s = timing.headline(ph)
        lines.append(
            _stat_line(f"{label} {phase}", s, ph.get("flops_per_iter"), ph.get("compile_s"), ph)
        )
      continue
    s = timing.headline(res)
    flops = res.get("flops_per_iter")
    lines.append(_stat_line(label, s, flops, res.get("compile_s"), res))
  return lines


def _stat_line(label, s, flops, compile_s, res) -> str:
  other = res.get("all_other_cores") or []
  other_med = statistics.median(other) if other else None
  return (
      f"| {label} | {_fmt(s['ms_median'])} | {_fmt(s['ms_min'])} | {_fmt(s['ms_max'])} "
      f"| {_fmt(s['samples_per_s_median'])} "
      f"| {_fmt(flops / 1e9 if flops else None, '.2f')} "
      f"| {_fmt(s['gflops_per_s_median'])} | {_fmt(compile_s, '.1f')} "
      f"| {_fmt(other_med, '.2f')} | {s['n']}{'' if s['which'] == 'clean' else '*'} |"
  )


def ratios(results: list[dict]) -> list[dict]:
  """For each JAX row, torch median / JAX median per reference variant (> 1: JAX faster)."""
  torch_by = {}
  for r in results:
    if r["impl"] == "torch" and "error" not in r and timing.headline(r):
      torch_by[(r["kind"], r.get("image_size"), r.get("batch"), r["variant"])] = r
  out = []
  for r in results:
    if r["impl"] != "jax" or "skipped" in r or "error" in r or r["kind"] == "phases":
      continue
    js = timing.headline(r)
    for variant in TORCH_VARIANTS:
      t = torch_by.get((r["kind"], r.get("image_size"), r.get("batch"), variant))
      if t is None:
        continue
      ts = timing.headline(t)
      out.append(
          {
              "row": r["name"],
              "torch_variant": variant,
              "jax_ms_median": js["ms_median"],
              "torch_ms_median": ts["ms_median"],
              "speedup_median": round(ts["ms_median"] / js["ms_median"], 3),
              "speedup_best": round(ts["ms_min"] / js["ms_min"], 3),
              "torch_gflop_per_iter": t.get("gflop_per_iter"),
              "jax_xla_gflop_per_iter": (
                  round(r["flops_per_iter"] / 1e9, 3) if r.get("flops_per_iter") else None
              ),
          }
      )
  return out


def ratio_lines(rat: list[dict]) -> list[str]:
  if not rat:
    return []
  lines = [
      "| row | vs torch | JAX ms | torch ms | torch/JAX (median) | (best) |",
      "| --- | --- | ---: | ---: | ---: | ---: |",
  ]
  for q in rat:
    lines.append(
        f"| {q['row']} | {q['torch_variant']} | {q['jax_ms_median']:.1f} "
        f"| {q['torch_ms_median']:.1f} | {q['speedup_median']:.2f}x "
        f"| {q['speedup_best']:.2f}x |"
    )
  return lines


# ------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------


def _meta(args) -> dict:
  import jax

  meta = {
      "argv": sys.argv,
      "python": platform.python_version(),
      "jax": jax.__version__,
      "backend": jax.default_backend(),
      "local_devices": jax.local_device_count(),
      "cpu_count": os.cpu_count(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "platform": platform.platform(),
      "loadavg_start": timing.loadavg(),
      "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
  }
  try:
    with open("/proc/cpuinfo") as f:
      meta["cpu_model"] = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  try:
    import subprocess

    meta["git_commit"] = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=torch_ref.REPO_ROOT,
    ).stdout.strip()
    # What the commit does not say: uncommitted changes to tracked files (measured code that no
    # commit holds), listed so a reader knows the figures are not exactly git_commit's.
    meta["git_uncommitted"] = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        cwd=torch_ref.REPO_ROOT,
    ).stdout.split("\n")[:-1]
  except OSError:
    pass
  return meta


def main(argv: Sequence[str] | None = None) -> int:
  """CLI entry; returns the exit status."""
  status = cli.parse_command_line(FLAGS, argv, PROG, f"{__doc__}\n{rows_lib.__doc__}")
  if status is not None:
    return status
  args = parsed_args()
  if args.list:
    print("\n".join(rows_lib.DEFAULT_ROWS))
    return 0
  rows = rows_lib.select_rows(args.rows)
  variants = [v.strip() for v in args.torch_variants.split(",") if v.strip()]
  for v in variants:
    if v not in TORCH_VARIANTS:
      raise SystemExit(f"--torch-variants: unknown {v!r}; choose from {list(TORCH_VARIANTS)}")
  script = None
  if args.torch_python:
    script = torch_ref.locate_reference(args.torch_ref)
  _setup_env(args)

  meta = _meta(args)
  meta["torch_ref"] = str(script) if script else None
  order = rows_lib.schedule(rows, variants if script else [])
  print(
      f"# {len(order)} runs on {meta.get('cpu_model', '?')} x{meta['cpu_count']}, "
      f"jax {meta['jax']} ({meta['backend']}, {meta['local_devices']} device(s)), "
      f"load {meta['loadavg_start']}",
      flush=True,
  )

  results: list[dict] = []
  for i, (impl, item) in enumerate(order):
    waited = None
    if args.wait_idle > 0:
      waited = timing.wait_idle(args.wait_idle)
    t0 = time.perf_counter()
    if impl == "jax":
      res = run_jax_row(item, args)
    else:
      row, variant = item
      res = run_torch_row(row, variant, args, script)
    res["row_wall_s"] = round(time.perf_counter() - t0, 1)
    if waited:
      res["other_cores_at_start"], res["waited_s"] = waited
    results.append(res)
    s = timing.headline(res) if "all" in res else None
    print(
        f"[{i + 1}/{len(order)}] {_row_label(res)}: "
        + (
            f"{s['ms_median']:.1f} ms median ({s['samples_per_s_median']:.1f} samples/s)"
            if s
            else res.get("skipped")
            or res.get("error")
            or (f"{res.get('phases_sum_ms_median')} ms (phases)")
        ),
        flush=True,
    )
    if args.out:  # keep partial results if a long run is interrupted
      _write(args.out, meta, results)

  meta["loadavg_end"] = timing.loadavg()
  rat = ratios(results)
  print()
  print("\n".join(table_lines(results)))
  print(
      "\n(* = fewer clean samples than asked: statistics over all samples; "
      "other cores = median cores kept busy by other processes while timing)"
  )
  if rat:
    print()
    print("\n".join(ratio_lines(rat)))
  if args.out:
    _write(args.out, meta, results, rat)
    print(f"\nwrote {args.out}")
  return 0


def _write(path: str, meta: dict, results: list[dict], rat: list[dict] | None = None) -> None:
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump({"meta": meta, "rows": results, "ratios": rat or ratios(results)}, f, indent=1)
  os.replace(tmp, path)


if __name__ == "__main__":
  sys.exit(main())
