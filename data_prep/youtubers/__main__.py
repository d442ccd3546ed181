"""Build `youtubers`.

    python -m data_prep.youtubers --manual_dir ../shared/youtubers [--data_dir DIR]

Same result as `tfds build data_prep/youtubers --manual_dir ...` (whose CLI needs apache-beam to
start). Without --manual_dir the builder downloads the authors' release (needs internet).
"""

import argparse
import logging
import time

import tensorflow_datasets as tfds

from data_prep.youtubers import Youtubers


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument(
      "--data_dir", default=None, help="TFDS data dir to write to (default: TFDS's)."
  )
  parser.add_argument(
      "--manual_dir", default=None, help="Folder holding the release's train/ (and test/)."
  )
  args = parser.parse_args()
  logging.basicConfig(level=logging.INFO)
  start = time.perf_counter()
  builder = Youtubers(data_dir=args.data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=args.manual_dir)
  )
  counts = {name: split.num_examples for name, split in builder.info.splits.items()}
  print(f"{builder.name} in {builder.data_dir}: {counts} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
  main()
