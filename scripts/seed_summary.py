"""Mean +- sd over runs of the headline numbers of evaluation reports (report.json files).

    python scripts/seed_summary.py --out=results/demo_seeds/summary.json \
        results/demo_seeds/seed0/test/report.json results/demo_seeds/seed1/test/report.json ...

Prints one line per metric (mean +- sample sd, n, the values) and writes them as JSON.
With --table, also writes the goals of issue 22 as a Markdown table: each goal's metric on the
generated faces (mean +- sd over the reports, the worst report, every report's value) beside
the real faces' and the mean faces' (the first report's: they do not depend on the model).

    python scripts/seed_summary.py --out=results/final/summary.json \
        --table=results/final/table.md results/final/seed{0,1,2}/report.json
"""

import json
import math
import pathlib
import sys
from typing import Sequence

from absl import flags

from wav2pix_jax import cli
from wav2pix_jax.evaluation import report as eval_report

PROG = "seed_summary"
# The tool's own flags (not absl's global FLAGS: see wav2pix_jax/cli.py).
FLAGS = flags.FlagValues()
flags.DEFINE_string("out", None, "Write the summary here as JSON.", flag_values=FLAGS)
flags.DEFINE_string("table", None, "Write the goals table (Markdown) here.", flag_values=FLAGS)

# Issue 22's goals on the final model: (metric, label, goal, higher is better, as a percentage).
# "expression_agreement_over_chance" is derived: agreement minus within-speaker chance.
GOALS = (
    ("identity", "identity (chance 50 %)", 0.97, True, True),
    ("face_detection_rate", "dlib detection", 0.95, True, True),
    ("frechet_distance", "Frechet distance", 0.06, False, False),
    ("clip_matching_dlib", "within-speaker matching, dlib (chance 50 %)", 0.60, True, True),
    ("clip_matching_pixels", "within-speaker matching, pixels (chance 50 %)", None, True, True),
    ("clip_diversity_dlib", "within-speaker diversity, dlib (real 1)", 0.5, True, False),
    ("clip_diversity_pixels", "within-speaker diversity, pixels (real 1)", None, True, False),
    ("sharpness", "sharpness (real 1)", 0.7, True, False),
    (
        "expression_agreement_over_chance",
        "expression agreement minus within-speaker chance",
        0.05,
        True,
        True,
    ),
)


# Ratios to the real faces (1 = as real): above 1 is no better than below (a sharpness of 50 is
# noise, not detail), so these are judged by their distance from 1 in log space, min(v, 1 / v), and
# a goal g on them means g <= value <= 1 / g.
RATIOS_TO_REAL = ("sharpness", "clip_diversity_dlib", "clip_diversity_pixels")


def goodness(value: float, key: str, higher: bool) -> float:
  """`value` of metric `key` on a scale where larger is better."""
  if key in RATIOS_TO_REAL:
    return min(value, 1 / value) if value > 0 else 0.0
  return value if higher else -value


def _scalars(report: dict) -> dict[str, float]:
  """The report's headline numbers, plus each row's expression agreement over within-speaker
  chance where both exist."""
  out = eval_report.Report.from_json(report).scalars()
  for key in list(out):
    if key.endswith("/expression_agreement"):
      chance = out.get(
          key.replace("expression_agreement", "expression_chance_agreement") + "_within_speaker"
      )
      if chance is not None:
        out[key + "_over_chance"] = out[key] - chance
  return out


def summarize(reports: list[dict]) -> dict[str, dict]:
  """{metric: {"mean", "sd", "n", "values"}} over the reports' headline numbers
  (`Report.scalars`)."""
  flat = [_scalars(r) for r in reports]
  keys = sorted(set().union(*flat))
  out = {}
  for key in keys:
    values = [f[key] for f in flat if key in f and f[key] is not None and math.isfinite(f[key])]
    if not values:
      continue
    mean = sum(values) / len(values)
    sd = (
        math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        if len(values) > 1
        else 0.0
    )
    out[key] = {"mean": mean, "sd": sd, "n": len(values), "values": values}
  return out


def _fmt(value: float | None, percent: bool, sign: bool = False, points: bool = False) -> str:
  """`value` as a percentage (or percentage points), else to 3 decimals; `sign`: always signed."""
  if value is None:
    return "n/a"
  if percent:
    return f"{100 * value:{'+' if sign else ''}.1f} {'points' if points else '%'}"
  return f"{value:{'+' if sign else ''}.3f}"


def goal_text(key: str, goal: float | None, higher: bool, percent: bool) -> str:
  """The goal column's text: ">= 97.0 %", "<= 0.060", or for a ratio to the real faces its band."""
  if goal is None:
    return ""
  sign = points = key.endswith("_over_chance")
  text = f"{'>=' if higher else '<='} {_fmt(goal, percent, sign, points)}"
  if key in RATIOS_TO_REAL:
    text += f" and <= {_fmt(1 / goal, percent)}"
  return text


def goals_table(reports: list[dict], names: Sequence[str]) -> str:
  """Issue 22's goals as a Markdown table over the reports (one per seed, named by `names`)."""
  summary = summarize(reports)
  first = _scalars(reports[0])
  lines = [
      f"| metric | goal | generated, mean +- sd ({len(reports)} seeds) | worst seed | "
      f"{' | '.join(names)} | real faces | mean face |",
      "| --- " * (6 + len(names)) + "|",
  ]
  for key, label, goal, higher, percent in GOALS:
    s = summary.get(f"eval/generated/{key}")
    if s is None:
      continue
    sign = points = key.endswith("_over_chance")
    worst = min(s["values"], key=lambda v: goodness(v, key, higher))
    met = ""
    if goal is not None:
      met = (
          " (met)" if goodness(worst, key, higher) >= goodness(goal, key, higher) else " (not met)"
      )
    goal_cell = goal_text(key, goal, higher, percent)
    fmt = lambda v: _fmt(v, percent, sign, points)
    per_seed = [fmt(_scalars(r).get(f"eval/generated/{key}")) for r in reports]
    mean_sd = f"{fmt(s['mean'])} +- {_fmt(s['sd'], percent, points=points)}"
    lines.append(
        f"| {label} | {goal_cell} | {mean_sd} | {fmt(worst)}{met} | {' | '.join(per_seed)} | "
        f"{fmt(first.get(f'eval/real/{key}'))} | {fmt(first.get(f'eval/mean_face/{key}'))} |"
    )
  return "\n".join(lines) + "\n"


def _names(paths: Sequence[str]) -> list[str]:
  """Each path's folders that not every path shares (seed0/eval/x/report.json ... -> seed0)."""
  parts = [pathlib.Path(p).parent.parts for p in paths]
  names = []
  for own in parts:
    differing = [
        part for i, part in enumerate(own) if any(i >= len(o) or o[i] != part for o in parts)
    ]
    names.append("/".join(differing) or own[-1] if own else str(len(names)))
  return names


def main(argv: Sequence[str] | None = None) -> int:
  """CLI entry (the report.json files are the arguments); returns the exit status."""
  paths, status = cli.parse_with_arguments(
      FLAGS,
      argv,
      PROG,
      __doc__,
      lambda args: None if args else "give the report.json files, one per run",
  )
  if status is not None:
    return status
  reports = []
  for path in paths:
    try:
      reports.append(json.loads(pathlib.Path(path).read_text()))
    except (OSError, ValueError) as e:
      print(cli.error_line(PROG, f"{path}: {e}"), file=sys.stderr)
      return 1
  summary = summarize(reports)
  for key, s in summary.items():
    print(
        f"{key:60s} {s['mean']:+.3f} +- {s['sd']:.3f}  (n={s['n']}: "
        f"{', '.join(f'{v:+.3f}' for v in s['values'])})"
    )
  if FLAGS.out:
    pathlib.Path(FLAGS.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(FLAGS.out).write_text(json.dumps({"reports": paths, "metrics": summary}, indent=1))
  if FLAGS.table:
    names = _names(paths)
    pathlib.Path(FLAGS.table).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(FLAGS.table).write_text(goals_table(reports, names))
  return 0


if __name__ == "__main__":
  sys.exit(main())
