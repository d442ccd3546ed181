"""Build `synthetic_voice_faces`: `python -m data_prep.synthetic_voice_faces [--data_dir DIR]`.

With --grid=PNG, also writes one face of every speaker (unseen ones last) to look at.
"""

import time
from typing import Sequence

from absl import flags
import numpy as np
from PIL import Image

from data_prep.synthetic_voice_faces import SyntheticVoiceFaces
from data_prep.synthetic_voice_faces import synthetic_voice_faces_dataset_builder as svf
from wav2pix_jax import cli

PROG = "data_prep.synthetic_voice_faces"
# The tool's own flags (not absl's global FLAGS: see wav2pix_jax/cli.py).
FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "data_dir", None, "TFDS data dir to write to (default: TFDS's)", flag_values=FLAGS
)
flags.DEFINE_string("grid", None, "Also write a grid of speakers to this PNG.", flag_values=FLAGS)


def speaker_grid(path: str, columns: int = 16) -> None:
  """One face per speaker (loudness 0.5, no pitch shift), in speaker order, as one PNG."""
  faces = [svf.draw_face(s, 0.5, 0.0) for s in svf.make_speakers()]
  rows = -(-len(faces) // columns)
  canvas = np.full((rows * svf.IMAGE_SIZE, columns * svf.IMAGE_SIZE, 3), 255, np.uint8)
  for i, face in enumerate(faces):
    r, c = divmod(i, columns)
    canvas[r * 64 : (r + 1) * 64, c * 64 : (c + 1) * 64] = face
  Image.fromarray(canvas).save(path)


def main(argv: Sequence[str] | None = None) -> int:
  """Builds the dataset; returns the exit status (2: a bad command line, as one line)."""
  status = cli.parse_command_line(FLAGS, argv, PROG, __doc__)
  if status is not None:
    return status
  if FLAGS.grid:
    speaker_grid(FLAGS.grid)
    print(f"speaker grid: {FLAGS.grid}")
  start = time.perf_counter()
  builder = SyntheticVoiceFaces(data_dir=FLAGS.data_dir)
  builder.download_and_prepare()
  counts = {name: split.num_examples for name, split in builder.info.splits.items()}
  print(f"{builder.name} in {builder.data_dir}: {counts} ({time.perf_counter() - start:.1f} s)")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
