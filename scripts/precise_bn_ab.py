"""The same checkpoints judged with BatchNorm's running averages and with recomputed statistics.

    python scripts/precise_bn_ab.py --workdirs=W1,W2,W3 --data_dir=D [--steps=100,200] \
        [--examples=640] [--out=results/precise_bn/ab.json]

For every checkpoint of each workdir (a run trained with config.precise_bn_examples=0, so its
checkpoints hold the running averages), the periodic evaluation of training (the run's own
config.eval: split, examples, reference faces, dlib) twice on the same weights:

  running   the checkpoint's BatchNorm running averages (what evaluation used before);
  precise   the statistics recomputed for those weights on the first --examples training records
            (config.precise_bn_examples; FaceGenerator.with_precise_batch_stats).

Training never reads these statistics, so both arms are one training run: the difference is the
estimator alone. Prints one line per checkpoint (identity / detection / FD of each arm) and a
summary per arm over every checkpoint: mean identity, and the share of evaluations at or below 75 %
(the swing: one speaker's face for every clip).
"""

import json
import pathlib
import sys
from typing import Sequence

from absl import flags
import numpy as np

from wav2pix_jax import checkpoints
from wav2pix_jax import cli
from wav2pix_jax import config_lib
from wav2pix_jax.evaluation import data as eval_data
from wav2pix_jax.evaluation import evaluator as evaluator_lib
from wav2pix_jax.serving import inference

PROG = "precise_bn_ab"
FLAGS = flags.FlagValues()
flags.DEFINE_list(
    "workdirs", [], "Training workdirs (config.precise_bn_examples=0).", flag_values=FLAGS
)
flags.DEFINE_string("data_dir", None, "Override config.input.data_dir.", flag_values=FLAGS)
flags.DEFINE_list(
    "steps", [], "Checkpoint steps (default: all in each workdir).", flag_values=FLAGS
)
flags.DEFINE_integer("examples", 640, "Training records for the recomputation.", flag_values=FLAGS)
flags.DEFINE_string("out", None, "Write the rows and the summary as JSON here.", flag_values=FLAGS)
KEYS = ("identity", "face_detection_rate", "frechet_distance")
SWING = 0.75  # identity at or below this: one speaker's face for (nearly) every clip


def _row(scalars: dict) -> dict:
  return {k: scalars.get(f"eval/generated/{k}") for k in KEYS}


def _arm_text(arm: str, row: dict) -> str:
  """ "running 95.3% / 98.4% / 0.155": identity / detection / FD."""
  identity, detection = 100 * row["identity"], 100 * row["face_detection_rate"]
  return f"{arm} {identity:5.1f}% / {detection:5.1f}% / {row['frechet_distance']:.3f}"


def summary(rows: list[dict]) -> dict:
  """Per arm: evaluations, mean / min identity, the share at or below SWING, mean FD."""
  out = {}
  for arm in ("running", "precise"):
    ids = np.array([r[arm]["identity"] for r in rows], np.float64)
    fds = np.array([r[arm]["frechet_distance"] for r in rows], np.float64)
    out[arm] = {
        "evaluations": int(len(ids)),
        "identity_mean": float(ids.mean()),
        "identity_min": float(ids.min()),
        "swing_share": float(np.mean(ids <= SWING)),
        "fd_mean": float(fds.mean()),
    }
  return out


def main(argv: Sequence[str] | None = None) -> int:
  if cli.wants_help(argv):
    print(cli.help_text(FLAGS, PROG, __doc__))
    return 0
  try:
    cli.parse_flags(FLAGS, argv, PROG)
    if not FLAGS.workdirs:
      raise cli.UsageError("--workdirs is required")
    if FLAGS.examples < 1:
      raise cli.UsageError(f"--examples must be positive, got {FLAGS.examples}")
  except cli.UsageError as e:
    print(cli.error_line(PROG, e), file=sys.stderr)
    return 2
  cli.quiet_library_logs()
  rows, evaluators = [], {}
  for workdir in FLAGS.workdirs:
    workdir = pathlib.Path(workdir).expanduser()
    config = config_lib.with_defaults(json.loads((workdir / "config.json").read_text()))
    if FLAGS.data_dir:
      config.input.data_dir = FLAGS.data_dir
    if config.precise_bn_examples:
      print(f"{PROG}: warning: {workdir} saved recomputed statistics: both arms are those")
    key = json.dumps(config.eval.to_dict(), sort_keys=True) + config.input.data_dir
    if key not in evaluators:  # one eval set (and dlib's analyses of its real faces) per setting
      evaluators[key] = evaluator_lib.PeriodicEvaluator(config)
    evaluate = evaluators[key]
    windows, _, _ = eval_data.read_split(
        config.input,
        split=config.input.train_split,
        image_size=config.model.image_size,
        batch_size=64,
        max_examples=FLAGS.examples,
    )
    directory = checkpoints.checkpoint_dir(str(workdir))
    steps = [int(s) for s in FLAGS.steps] or checkpoints.list_steps(directory)
    for step in steps:
      generator = inference.load(str(workdir), step)
      precise = generator.with_precise_batch_stats(windows, batch=int(config.batch_size))
      row = {"workdir": str(workdir), "step": step}
      for arm, gen in (("running", generator), ("precise", precise)):
        row[arm] = _row(evaluate(gen)[1])
      rows.append(row)
      print(
          f"{workdir.name} step {step:6d}  "
          + "  ".join(_arm_text(arm, row[arm]) for arm in row if arm in ("running", "precise")),
          flush=True,
      )
  result = {"rows": rows, "summary": summary(rows), "examples": FLAGS.examples}
  for arm, s in result["summary"].items():
    print(
        f"{arm:8s} {s['evaluations']} evaluations: identity mean {100 * s['identity_mean']:.1f}% "
        f"min {100 * s['identity_min']:.1f}%, <= {100 * SWING:.0f}% in "
        f"{100 * s['swing_share']:.0f}%; FD mean {s['fd_mean']:.3f}"
    )
  if FLAGS.out:
    pathlib.Path(FLAGS.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(FLAGS.out).write_text(json.dumps(result, indent=1))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
