"""Build `youtubers`.

    python -m data_prep.youtubers --manual_dir ../shared/youtubers [--data_dir DIR]

Same result as `tfds build data_prep/youtubers --manual_dir ...` (whose CLI needs apache-beam to
start). Without --manual_dir the builder downloads the authors' release (needs internet).
"""

import logging
import time
from typing import Sequence

from absl import flags
import tensorflow_datasets as tfds

from data_prep.youtubers import Youtubers
from wav2pix_jax import cli

PROG = "data_prep.youtubers"
# The tool's own flags (not absl's global FLAGS: see wav2pix_jax/cli.py).
FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "data_dir", None, "TFDS data dir to write to (default: TFDS's).", flag_values=FLAGS
)
flags.DEFINE_string(
    "manual_dir", None, "Folder holding the release's train/ (and test/).", flag_values=FLAGS
)


def main(argv: Sequence[str] | None = None) -> int:
  """Builds the dataset; returns the exit status (2: a bad command line, as one line)."""
  status = cli.parse_command_line(FLAGS, argv, PROG, __doc__)
  if status is not None:
    return status
  logging.basicConfig(level=logging.INFO)
  start = time.perf_counter()
  builder = Youtubers(data_dir=FLAGS.data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=FLAGS.manual_dir)
  )
  counts = {name: split.num_examples for name, split in builder.info.splits.items()}
  print(f"{builder.name} in {builder.data_dir}: {counts} ({time.perf_counter() - start:.1f} s)")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
