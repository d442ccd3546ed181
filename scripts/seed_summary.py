"""Mean +- sd over runs of the headline numbers of evaluation reports (report.json files).

    python scripts/seed_summary.py --out=results/demo_seeds/summary.json \
        results/demo_seeds/seed0/test/report.json results/demo_seeds/seed1/test/report.json ...

Prints one line per metric (mean +- sample sd, n, the values) and writes them as JSON.
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


def summarize(reports: list[dict]) -> dict[str, dict]:
  """{metric: {"mean", "sd", "n", "values"}} over the reports' headline numbers
  (`Report.scalars`)."""
  flat = [eval_report.Report.from_json(r).scalars() for r in reports]
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
  return 0


if __name__ == "__main__":
  sys.exit(main())
