"""Trains Wav2Pix: `python -m wav2pix_jax.main --config=configs/demo.py --workdir=workdirs/demo`.

Every config field can be overridden on the command line, e.g. `--config.batch_size=32
--config.optim.d.learning_rate=2e-4`. Re-running with the same --workdir resumes training.
A user's error (a bad config value, a missing dataset, an incompatible resume) is one line on
stderr and exit status 1. The console shows our progress and every warning; --library_logs (or
WAV2PIX_LIBRARY_LOGS=1) adds the libraries' INFO logs (Orbax, TFDS, grain, clu).
"""

import sys
from typing import Sequence

from absl import flags
from absl import logging
from ml_collections import config_flags

from wav2pix_jax import cli
from wav2pix_jax import config_lib

PROG = "wav2pix-train"
# The tool's own flags (not absl's global FLAGS: see cli.parse_flags).
FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, TensorBoard logs and samples.", flag_values=FLAGS
)
config_flags.DEFINE_config_file(
    "config",
    None,
    "Training configuration file (e.g. configs/base.py).",
    flag_values=FLAGS,
    lock_config=True,
)
flags.DEFINE_boolean("library_logs", False, cli.LIBRARY_LOGS_HELP, flag_values=FLAGS)
flags.mark_flags_as_required(["config", "workdir"], flag_values=FLAGS)


def main(argv: Sequence[str] | None = None) -> int:
  """CLI: trains (resuming from the workdir); returns the exit status.

  A bad command line (unknown flag, missing or unreadable config file) is one line on stderr and
  status 2; a user's error in the config or the data one line and status 1.
  """
  if cli.wants_help(argv):
    print(cli.help_text(FLAGS, PROG, __doc__))
    return 0
  try:
    positional = cli.parse_flags(FLAGS, argv, PROG)
    if positional:
      raise cli.UsageError(f"unexpected arguments {positional}")
    _loaded_config()
  except cli.UsageError as e:
    print(cli.error_line(PROG, e), file=sys.stderr)
    return 2
  _log_to_console()
  cli.quiet_library_logs(show=cli.library_logs_wanted(FLAGS.library_logs))
  _hide_accelerators_from_tensorflow()

  from wav2pix_jax.training import loop  # pylint: disable=g-import-not-at-top

  try:
    logging.info("Config:\n%s", FLAGS.config)
    loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except config_lib.ConfigError as e:  # a user's error: one line; a bug keeps its traceback
    print(cli.error_line(PROG, e), file=sys.stderr)
    return 1
  return 0


def _loaded_config() -> None:
  """UsageError if --config could not be loaded (config_flags defers the error to first use)."""
  try:
    FLAGS.config.keys()
  except OSError as e:  # a missing file, or one that failed to import
    raise cli.UsageError(str(e).replace("config_config", "--config")) from None


def _log_to_console() -> None:
  """absl's log lines (ours and the libraries') on stderr from INFO up, as absl's app.run would."""
  if not flags.FLAGS.is_parsed():  # absl's logging reads its own flags (verbosity) once parsed
    flags.FLAGS.mark_as_parsed()
  logging.use_absl_handler()
  logging.set_verbosity(logging.INFO)


def _hide_accelerators_from_tensorflow() -> None:
  """TF (used by TFDS to build a dataset, never by training) must not grab the GPUs JAX uses."""
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError:  # reading prepared datasets needs no TensorFlow
    return
  tf.config.experimental.set_visible_devices([], "GPU")


def run() -> None:
  """Console-script entry point (`wav2pix-train`)."""
  raise SystemExit(main())


if __name__ == "__main__":
  run()
