"""Evaluates a trained workdir on a split: faces, the report (report.json) and a grid.

    python -m wav2pix_jax.evaluate --workdir=workdirs/demo --split=test

The work is evaluation/evaluator.py's `evaluate_workdir`; this module is its command line.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Sequence

from absl import flags

from wav2pix_jax import cli
from wav2pix_jax import config_lib
from wav2pix_jax.evaluation import evaluator
from wav2pix_jax.evaluation import report as eval_report
from wav2pix_jax.serving import inference

# ----------------------------------------------------------------------------- CLI

PROG = "wav2pix-evaluate"
# The tool's own flags (not absl's global FLAGS: see cli.parse_flags).
FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "workdir", None, "Training workdir (or its checkpoints/ dir).", flag_values=FLAGS
)
flags.DEFINE_string("split", "test", "Dataset split to evaluate.", flag_values=FLAGS)
flags.DEFINE_string(
    "out",
    None,
    "Output folder for report.json and grid.png (default: <workdir>/eval/<split>).",
    flag_values=FLAGS,
)
cli.define_checkpoint_flags(FLAGS)
flags.DEFINE_integer(
    "max_examples", None, "Evaluate only the first N examples (default: all).", flag_values=FLAGS
)
flags.DEFINE_integer(
    "batch_size", inference.DEFAULT_BATCH_SIZE, "Waveforms per generator call.", flag_values=FLAGS
)
flags.DEFINE_integer(
    "train_faces_per_speaker",
    None,
    "Real training faces per speaker for the identity classifier / FD reference (default: the "
    "run's config.eval.reference_faces_per_speaker).",
    flag_values=FLAGS,
)
flags.DEFINE_string("data_dir", None, "Override config.input.data_dir.", flag_values=FLAGS)
flags.DEFINE_boolean(
    "no_dlib",
    False,
    "Skip the dlib metrics (pixel-space metrics only, for datasets with a known face layout).",
    flag_values=FLAGS,
)
flags.DEFINE_list(
    "fuse",
    [],
    "Also evaluate faces each generated from the mean speech embedding of K examples of one "
    "speaker, for each K listed (e.g. 1,3,10: rows fused_3 and fused_10; 1 is the generated row).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "precise_bn",
    0,
    "Recompute G's BatchNorm statistics for its weights on the first N training records instead "
    "of the checkpoint's running averages (0: the checkpoint's; a run with "
    "config.precise_bn_examples > 0 already saved recomputed ones).",
    flag_values=FLAGS,
)
flags.DEFINE_boolean("library_logs", False, cli.LIBRARY_LOGS_HELP, flag_values=FLAGS)
flags.mark_flag_as_required("workdir", flag_values=FLAGS)


def main(argv: Sequence[str] | None = None) -> int:
  """CLI: evaluate, print a summary; returns the exit status.

  A user's error is one line on stderr: status 2 for a bad command line, 1 otherwise.
  """
  if cli.wants_help(argv):
    print(cli.help_text(FLAGS, PROG, __doc__))
    return 0
  try:
    positional = cli.parse_flags(FLAGS, argv, PROG)
    if positional:
      raise cli.UsageError(f"unexpected arguments {positional}")
    for name in ("max_examples", "batch_size", "train_faces_per_speaker"):
      value = FLAGS[name].value
      if value is not None and value < 1:
        raise cli.UsageError(f"--{name} must be a positive integer, got {value}")
    if FLAGS.precise_bn < 0:
      raise cli.UsageError(f"--precise_bn must be 0 or a positive integer, got {FLAGS.precise_bn}")
    fuse = [int(k) if k.strip().isdigit() else 0 for k in FLAGS.fuse]
    if any(k < 1 for k in fuse):
      raise cli.UsageError(
          f"--fuse must list positive integers (windows per face), got {','.join(FLAGS.fuse)}"
      )
  except cli.UsageError as e:
    print(cli.error_line(PROG, e), file=sys.stderr)
    return 2
  cli.quiet_library_logs(show=cli.library_logs_wanted(FLAGS.library_logs))
  out = FLAGS.out or str(pathlib.Path(FLAGS.workdir).expanduser() / "eval" / FLAGS.split)
  try:
    report = evaluator.evaluate_workdir(
        FLAGS.workdir,
        split=FLAGS.split,
        out_dir=out,
        step=FLAGS.step,
        checkpoint=FLAGS.checkpoint,
        max_examples=FLAGS.max_examples,
        batch_size=FLAGS.batch_size,
        train_faces_per_speaker=FLAGS.train_faces_per_speaker,
        data_dir=FLAGS.data_dir,
        dlib_metrics=not FLAGS.no_dlib,
        fuse=fuse,
        precise_bn_examples=FLAGS.precise_bn,
        announce=lambda line: print(line, flush=True),  # which checkpoint and why, before the work
    )
  except (config_lib.ConfigError, OSError) as e:  # a bad setting or path; a bug keeps its traceback
    print(cli.error_line(PROG, e), file=sys.stderr)
    return 1
  print(report.summary())
  print(f"report: {pathlib.Path(out) / eval_report.REPORT_FILENAME}")
  return 0


def run() -> None:
  """Console-script entry point (wav2pix-evaluate)."""
  raise SystemExit(main())


if __name__ == "__main__":
  run()
