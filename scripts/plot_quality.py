"""Time to quality: detection, identity and Frechet distance of generated faces against training
minutes, from the periodic evaluations of one or more runs (<workdir>/eval/history.jsonl).

    python scripts/plot_quality.py --out=results/time_to_quality.png \
        fast=results/fast/history.jsonl base=results/base/history.jsonl

Each run is LABEL=PATH. Dashed lines: the real faces' and each speaker's mean face's values
(reference rows of the same evaluations). Also prints a markdown table: each run at the last step
all runs reached, and at its own last evaluation. Needs matplotlib (`pip install -e .[plots]`).
"""

import json
import pathlib
import sys
from typing import Sequence

from absl import flags

from wav2pix_jax import cli

PROG = "plot_quality"
# The tool's own flags (not absl's global FLAGS: see wav2pix_jax/cli.py).
FLAGS = flags.FlagValues()
flags.DEFINE_string("out", None, "PNG to write.", flag_values=FLAGS)
flags.DEFINE_string("title", "", "Figure title.", flag_values=FLAGS)
flags.mark_flag_as_required("out", flag_values=FLAGS)

METRICS = (
    ("face_detection_rate", "face detection (dlib)", 100.0, "%"),
    ("identity", "identity accuracy", 100.0, "%"),
    ("frechet_distance", "Frechet distance (dlib embeddings)", 1.0, ""),
)


def read_history(path: str) -> list[dict]:
  """The evaluation rows of a history.jsonl, in step order."""
  rows = [json.loads(line) for line in pathlib.Path(path).read_text().splitlines() if line.strip()]
  if not rows:
    raise ValueError(f"{path}: no evaluations recorded")
  return sorted(rows, key=lambda r: r["step"])


def _cells(row: dict) -> list[str]:
  values = []
  for metric, _, scale, unit in METRICS:
    value = row["metrics"].get(f"eval/generated/{metric}")
    values.append("" if value is None else f"{value * scale:.1f} %" if unit else f"{value:.3f}")
  return [str(row["step"]), f"{row['train_minutes']:.1f}", *values]


def table(runs: list[tuple[str, list[dict]]]) -> str:
  """Markdown: each run at the last step all of them evaluated, and at its own last evaluation."""
  shared = set.intersection(*({r["step"] for r in rows} for _, rows in runs))
  lines = [
      "| run | step | training minutes | " + " | ".join(name for _, name, _, _ in METRICS) + " |",
      "|" + " --- |" * (3 + len(METRICS)),
  ]
  for label, rows in runs:
    picked = [r for r in rows if shared and r["step"] == max(shared)] + [rows[-1]]
    for row in {r["step"]: r for r in picked}.values():
      lines.append("| " + " | ".join([label, *_cells(row)]) + " |")
  return "\n".join(lines)


def _plot(runs: list[tuple[str, list[dict]]], plt):
  """The figure: one panel per metric, a line per run, the first run's reference rows."""
  fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 3.6))
  for ax, (metric, name, scale, unit) in zip(axes, METRICS):
    for label, rows in runs:
      pts = [
          (r["train_minutes"], r["metrics"][f"eval/generated/{metric}"] * scale)
          for r in rows
          if f"eval/generated/{metric}" in r["metrics"]
      ]
      if pts:
        ax.plot(*zip(*pts), marker="o", markersize=3, label=label)
    rows = runs[0][1]
    for row, style in (("real", ":"), ("mean_face", "--")):
      key = f"eval/{row}/{metric}"
      if key in rows[-1]["metrics"]:
        ax.axhline(
            rows[-1]["metrics"][key] * scale,
            color="gray",
            linestyle=style,
            label="real faces" if row == "real" else "mean face per speaker",
        )
    ax.set_xlabel("training minutes")
    ax.set_title(name + (f" ({unit})" if unit else ""), fontsize=10)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  return fig


def main(argv: Sequence[str] | None = None) -> int:
  """CLI entry (the arguments: runs as LABEL=path/to/history.jsonl); returns the exit status."""
  specs, status = cli.parse_with_arguments(
      FLAGS,
      argv,
      PROG,
      __doc__,
      lambda args: None if args else "give the runs as LABEL=path/to/history.jsonl",
  )
  if status is not None:
    return status
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    print(cli.error_line(PROG, "needs matplotlib (pip install -e '.[plots]')"), file=sys.stderr)
    return 1
  runs = []
  for spec in specs:
    label, sep, path = spec.partition("=")
    if not sep:
      print(cli.error_line(PROG, f"expected LABEL=PATH, got {spec!r}"), file=sys.stderr)
      return 2
    runs.append((label, read_history(path)))
  print(table(runs))
  fig = _plot(runs, plt)
  if FLAGS.title:
    fig.suptitle(FLAGS.title, fontsize=11)
  fig.tight_layout()
  out = pathlib.Path(FLAGS.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, dpi=110)
  print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
