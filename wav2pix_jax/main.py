"""Trains Wav2Pix: `python -m wav2pix_jax.main --config=configs/demo.py --workdir=workdirs/demo`.

Every config field can be overridden on the command line, e.g. `--config.batch_size=32
--config.optim.d.learning_rate=2e-4`. Re-running with the same --workdir resumes training.
A user's error (a bad config value, a missing dataset, an incompatible resume) is one line on
stderr and exit status 1. The console shows our progress and every warning; --library_logs (or
WAV2PIX_LIBRARY_LOGS=1) adds the libraries' INFO logs (Orbax, TFDS, grain, clu).
"""

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from wav2pix_jax import cli
from wav2pix_jax import config_lib

FLAGS = flags.FLAGS

flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard logs and samples.")
config_flags.DEFINE_config_file(
    "config", None, "Training configuration file (e.g. configs/base.py).", lock_config=True
)
flags.DEFINE_boolean("library_logs", False, cli.LIBRARY_LOGS_HELP)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  cli.quiet_library_logs(show=cli.library_logs_wanted(FLAGS.library_logs))
  _hide_accelerators_from_tensorflow()

  from wav2pix_jax.training import loop  # pylint: disable=g-import-not-at-top

  try:
    logging.info("Config:\n%s", FLAGS.config)
    loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except config_lib.ConfigError as e:  # a user's error: one line; a bug keeps its traceback
    print(cli.error_line("wav2pix-train", e), file=sys.stderr)
    return 1
  return 0


def _hide_accelerators_from_tensorflow() -> None:
  """TF (used by TFDS to build a dataset, never by training) must not grab the GPUs JAX uses."""
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError:  # reading prepared datasets needs no TensorFlow
    return
  tf.config.experimental.set_visible_devices([], "GPU")


def run():
  """Console-script entry point (`wav2pix-train`)."""
  app.run(main)


if __name__ == "__main__":
  run()
