"""Build `synthetic_talking_faces`: `python -m data_prep.synthetic [--data_dir DIR]`.

Same result as `tfds build data_prep/synthetic` (whose CLI needs apache-beam to start).
"""

import argparse
import time

from data_prep.synthetic import SyntheticTalkingFaces


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--data_dir", default=None, help="TFDS data dir to write to (default: TFDS's).")
  args = parser.parse_args()
  start = time.perf_counter()
  builder = SyntheticTalkingFaces(data_dir=args.data_dir)
  builder.download_and_prepare()
  counts = {name: split.num_examples for name, split in builder.info.splits.items()}
  print(f"{builder.name} in {builder.data_dir}: {counts} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
  main()
