"""Build `synthetic_voice_faces`: `python -m data_prep.synthetic_voice_faces [--data_dir DIR]`.

With --grid=PNG, also writes one face of every speaker (unseen ones last) to look at.
"""

import argparse
import time

import numpy as np
from PIL import Image

from data_prep.synthetic_voice_faces import SyntheticVoiceFaces
from data_prep.synthetic_voice_faces import synthetic_voice_faces_dataset_builder as svf


def speaker_grid(path: str, columns: int = 16) -> None:
  """One face per speaker (loudness 0.5, no pitch shift), in speaker order, as one PNG."""
  faces = [svf.draw_face(s, 0.5, 0.0) for s in svf.make_speakers()]
  rows = -(-len(faces) // columns)
  canvas = np.full((rows * svf.IMAGE_SIZE, columns * svf.IMAGE_SIZE, 3), 255, np.uint8)
  for i, face in enumerate(faces):
    r, c = divmod(i, columns)
    canvas[r * 64 : (r + 1) * 64, c * 64 : (c + 1) * 64] = face
  Image.fromarray(canvas).save(path)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
      "--data_dir", default=None, help="TFDS data dir to write to (default: TFDS's)"
  )
  parser.add_argument("--grid", default=None, metavar="PNG", help="also write a grid of speakers")
  args = parser.parse_args()
  if args.grid:
    speaker_grid(args.grid)
    print(f"speaker grid: {args.grid}")
  start = time.perf_counter()
  builder = SyntheticVoiceFaces(data_dir=args.data_dir)
  builder.download_and_prepare()
  counts = {name: split.num_examples for name, split in builder.info.splits.items()}
  print(f"{builder.name} in {builder.data_dir}: {counts} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
  main()
