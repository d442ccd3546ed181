"""Face attributes of a trained workdir's faces for unseen voices (synthetic_voice_faces).

The evaluation of evaluate.py (pixel metrics: dlib does not see these cartoon faces) with its
attribute section, printed as the table of evaluation.attributes (each attribute's error on the
generated faces against chance and the mean training face); writes <out>/report.json (the
section under "attributes") and grid.png:

    python -m wav2pix_jax.attributes --workdir=workdirs/demo_unseen --split=test_unseen
"""

from __future__ import annotations

import pathlib
import sys
from typing import Sequence

from absl import flags

from wav2pix_jax import cli
from wav2pix_jax import config_lib
from wav2pix_jax.evaluation import attributes
from wav2pix_jax.evaluation import evaluator
from wav2pix_jax.evaluation import report as eval_report

PROG = "attributes"
# The tool's own flags (not absl's global FLAGS: see cli.parse_flags).
FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "workdir", None, "Training workdir (or its checkpoints/ dir).", flag_values=FLAGS
)
flags.DEFINE_string("split", "test_unseen", "Dataset split to evaluate.", flag_values=FLAGS)
flags.DEFINE_string(
    "out",
    None,
    f"Folder for {eval_report.REPORT_FILENAME} and grid.png (default: <workdir>/eval/<split>).",
    flag_values=FLAGS,
)
cli.define_checkpoint_flags(FLAGS)
flags.DEFINE_string("data_dir", None, "Override config.input.data_dir.", flag_values=FLAGS)
flags.mark_flag_as_required("workdir", flag_values=FLAGS)


def main(argv: Sequence[str] | None = None) -> int:
  """CLI: the attribute table of a workdir on a split; returns the exit status.

  A user's error is one line on stderr: status 2 for a bad command line, 1 otherwise.
  """
  status = cli.parse_command_line(FLAGS, argv, PROG, __doc__)
  if status is not None:
    return status
  out = FLAGS.out or str(pathlib.Path(FLAGS.workdir).expanduser() / "eval" / FLAGS.split)
  try:
    report = evaluator.evaluate_workdir(
        FLAGS.workdir,
        split=FLAGS.split,
        out_dir=out,
        step=FLAGS.step,
        checkpoint=FLAGS.checkpoint,
        data_dir=FLAGS.data_dir,
        dlib_metrics=False,
        with_attributes=True,
    )
  except (config_lib.ConfigError, OSError) as e:  # a bad setting or path; a bug keeps its traceback
    print(cli.error_line(PROG, e), file=sys.stderr)
    return 1
  print(attributes.table(report.attributes))
  for name, verdict in report.attributes["verdict"].items():
    print(f"  {name}: {verdict}")
  print(f"report: {pathlib.Path(out) / eval_report.REPORT_FILENAME}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
