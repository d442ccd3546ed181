"""The per-lever table of an A/B over seeds: issue 22's goal metrics, one row per arm.

    python scripts/arms_table.py --runs=workdirs/arms --out=results/arms/table.md
    python scripts/arms_table.py --runs=workdirs/arms --step=1000 --out=... fast adv1 low_pass_l1

`--runs` holds scripts/arms_seeds.sh's layout, <arm>/seed<N>/. Without --step each seed's final
model is read from its evaluation report (<arm>/seed<N>/eval/final_<split>/report.json, as
`EVAL=<split> scripts/seeds.sh` writes it); with --step, from training's periodic evaluation at
that step (<arm>/seed<N>/eval/history.jsonl: fewer pairs, `eval.max_examples`, but free and at
any step every run reached). Runs committed under results/ (report.json and history.jsonl at the
top of each seed folder) are read as well. Each cell: mean +- sample sd over the arm's seeds
and the worst seed.

An arm beats the seed spread on a metric when its worst seed is better than the baseline arm's
best seed ("above spread"), and falls below it when its best seed is worse than the baseline's
worst ("below spread"); anything else is within the spread: not a difference these seeds show.
Sharpness and diversity are ratios to the real faces': above 1 is no better than below (a sharpness
of 50 is noise), so they are compared by their distance from 1.
"""

import json
import pathlib
import sys
from typing import Sequence

from absl import flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import seed_summary  # pylint: disable=g-import-not-at-top,wrong-import-position

from wav2pix_jax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

PROG = "arms_table"
FLAGS = flags.FlagValues()
flags.DEFINE_string("runs", None, "Folder of <arm>/seed<N>/ runs.", flag_values=FLAGS)
flags.DEFINE_integer(
    "step",
    None,
    "Read training's periodic evaluation at this step instead of the final reports.",
    flag_values=FLAGS,
)
flags.DEFINE_string("split", "validation", "The final reports' split.", flag_values=FLAGS)
flags.DEFINE_string("baseline", "fast", "The arm the others are compared with.", flag_values=FLAGS)
flags.DEFINE_string("out", None, "Write the Markdown table here.", flag_values=FLAGS)

# The goal metrics of seed_summary.GOALS that have a goal: (metric, label, goal, higher, percent).
COLUMNS = tuple(g for g in seed_summary.GOALS if g[2] is not None)


def history_scalars(path: pathlib.Path, step: int) -> dict[str, float] | None:
  """Periodic evaluation at `step` from history.jsonl as report scalars (None: not reached)."""
  for line in path.read_text().splitlines():
    record = json.loads(line)
    if record.get("step") == step:
      out = dict(record["metrics"])
      for key in list(out):
        chance = out.get(
            key.replace("expression_agreement", "expression_chance_agreement") + "_within_speaker"
        )
        if key.endswith("/expression_agreement") and chance is not None:
          out[key + "_over_chance"] = out[key] - chance
      return out
  return None


def _first_file(*paths: pathlib.Path) -> pathlib.Path | None:
  return next((p for p in paths if p.is_file()), None)


def arm_scalars(arm_dir: pathlib.Path, step: int | None, split: str) -> dict[str, dict]:
  """{seed folder name: scalars} for each of the arm's seeds that has the step or the report.

  A seed folder is a run's workdir, or its files as committed under results/ (history.jsonl and
  report.json at its top)."""
  out = {}
  for seed_dir in sorted(arm_dir.glob("seed*")):
    if step is not None:
      history = _first_file(seed_dir / "eval" / "history.jsonl", seed_dir / "history.jsonl")
      scalars = history_scalars(history, step) if history else None
    else:
      report = _first_file(
          seed_dir / "eval" / f"final_{split}" / "report.json", seed_dir / "report.json"
      )
      scalars = seed_summary._scalars(json.loads(report.read_text())) if report else None
    if scalars is not None:
      out[seed_dir.name] = scalars
  return out


def _values(seeds: dict[str, dict], key: str) -> list[float]:
  return [s[f"eval/generated/{key}"] for s in seeds.values() if f"eval/generated/{key}" in s]


def compare(values: list[float], base: list[float], key: str, higher: bool) -> str:
  """ "above spread" / "below spread" / "" for an arm's values against the baseline's."""
  if not values or not base or values is base:
    return ""
  mine = [seed_summary.goodness(v, key, higher) for v in values]
  theirs = [seed_summary.goodness(b, key, higher) for b in base]
  if min(mine) > max(theirs):
    return "above spread"
  if max(mine) < min(theirs):
    return "below spread"
  return ""


def cell(values: list[float], base: list[float], column: tuple) -> str:
  """One table cell: mean +- sd and the worst seed (one seed: its value), and the comparison
  with the baseline."""
  key, _, _, higher, percent = column
  if not values:
    return "n/a"
  sign = points = key.endswith("_over_chance")
  fmt = lambda v: seed_summary._fmt(v, percent, sign, points)
  verdict = compare(values, base, key, higher)
  verdict = f" **{verdict}**" if verdict else ""
  if key in seed_summary.RATIOS_TO_REAL and max(values) > 1:
    verdict = " (above the real faces')" + verdict
  if len(values) == 1:  # one seed: its value, no spread
    return fmt(values[0]) + verdict
  mean = sum(values) / len(values)
  sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
  worst = min(values, key=lambda v: seed_summary.goodness(v, key, higher))
  sd_text = seed_summary._fmt(sd, percent, points=points)
  return f"{fmt(mean)} +- {sd_text} (worst {fmt(worst)}){verdict}"


def table(arms: dict[str, dict[str, dict]], baseline: str) -> str:
  """The Markdown table: one row per arm (baseline first), one column per goal."""
  header = []
  for key, label, goal, higher, percent in COLUMNS:
    goal_text = seed_summary.goal_text(key, goal, higher, percent)
    header.append(f"{label.split(' (')[0]} ({goal_text})")
  lines = ["| arm | seeds | " + " | ".join(header) + " |", "| --- " * (2 + len(COLUMNS)) + "|"]
  base = arms.get(baseline, {})
  for arm, seeds in arms.items():
    cells = [
        cell(_values(seeds, c[0]), _values(base, c[0]) if arm != baseline else [], c)
        for c in COLUMNS
    ]
    lines.append(f"| {arm} | {', '.join(seeds) or 'none'} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
  """CLI entry (arm names are the arguments; none: every arm under --runs); the exit status."""
  names, status = cli.parse_with_arguments(
      FLAGS, argv, PROG, __doc__, lambda args: None if FLAGS.runs else "give --runs"
  )
  if status is not None:
    return status
  runs = pathlib.Path(FLAGS.runs)
  if not runs.is_dir():
    print(cli.error_line(PROG, f"--runs={runs} is not a folder"), file=sys.stderr)
    return 1
  names = names or sorted(p.name for p in runs.iterdir() if any(p.glob("seed*")))
  missing = [name for name in names if not (runs / name).is_dir()]
  if missing:
    print(cli.error_line(PROG, f"no arm folder {', '.join(missing)} under {runs}"), file=sys.stderr)
    return 1
  names = sorted(names, key=lambda n: n != FLAGS.baseline)  # the baseline first
  try:
    arms = {name: arm_scalars(runs / name, FLAGS.step, FLAGS.split) for name in names}
  except (OSError, ValueError, KeyError) as e:  # an unreadable or truncated history / report
    print(cli.error_line(PROG, f"{type(e).__name__}: {e}"), file=sys.stderr)
    return 1
  if not any(arms.values()):
    where = f"step {FLAGS.step}" if FLAGS.step is not None else f"final_{FLAGS.split} reports"
    print(cli.error_line(PROG, f"no run under {runs} has its {where}"), file=sys.stderr)
    return 1
  text = table(arms, FLAGS.baseline)
  print(text, end="")
  if FLAGS.out:
    pathlib.Path(FLAGS.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(FLAGS.out).write_text(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
