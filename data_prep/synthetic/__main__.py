"""Build `synthetic_talking_faces`: `python -m data_prep.synthetic [--data_dir DIR]`.

Same result as `tfds build data_prep/synthetic` (whose CLI needs apache-beam to start).

With --export_wav=DIR, also writes the clips of one split as 16 kHz WAV files, to try a trained
model on (`python -m wav2pix_jax.generate --audio=...`):

    python -m data_prep.synthetic --export_wav=workdirs/demo/audio --split=test

DIR/<speaker>_clipNNN.wav (one clip, 1.25 s) with its real face DIR/<speaker>_clipNNN.png, and
DIR/<speaker>_all.wav: all of that speaker's clips of the split back to back (a few seconds of
changing loudness and pitch, for a talking-face video with --video).
"""

import os
import sys
import time
from typing import Sequence

from absl import flags
import numpy as np

from data_prep.synthetic import SyntheticTalkingFaces
from data_prep.synthetic import synthetic_dataset_builder as syn
from wav2pix_jax import cli

PROG = "data_prep.synthetic"
# The tool's own flags (not absl's global FLAGS: see wav2pix_jax/cli.py).
FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "data_dir", None, "TFDS data dir to write to (default: TFDS's).", flag_values=FLAGS
)
flags.DEFINE_string(
    "export_wav", None, "Also write a split's clips as WAV to this folder.", flag_values=FLAGS
)
flags.DEFINE_string("split", "test", "Split for --export_wav.", flag_values=FLAGS)
flags.DEFINE_integer(
    "max_clips", None, "At most N clips per speaker (--export_wav).", flag_values=FLAGS
)


def export_wav(builder, out_dir: str, split: str, max_clips: int | None = None) -> list[str]:
  """Writes the split's clips (and one concatenation per speaker) as WAV; returns the paths."""
  import soundfile  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top

  source = tfds.data_source(builder.name, split=split, data_dir=builder.data_dir_root)
  records = sorted((source[i] for i in range(len(source))), key=lambda r: r["clip_id"])
  os.makedirs(out_dir, exist_ok=True)
  paths, per_speaker = [], {}
  for record in records:
    speaker = (
        record["speaker_name"].decode()
        if isinstance(record["speaker_name"], bytes)
        else record["speaker_name"]
    )
    clips = per_speaker.setdefault(speaker, [])
    if max_clips is not None and len(clips) >= max_clips:
      continue
    clips.append(record["waveform"])
    stem = str(
        record["clip_id"].decode() if isinstance(record["clip_id"], bytes) else record["clip_id"]
    )
    stem = stem.replace("/", "_")
    path = os.path.join(out_dir, f"{stem}.wav")
    soundfile.write(path, record["waveform"], syn.SAMPLE_RATE, subtype="PCM_16")
    Image.fromarray(record["face"]).save(os.path.join(out_dir, f"{stem}.png"))
    paths.append(path)
  for speaker, clips in per_speaker.items():
    path = os.path.join(out_dir, f"{speaker}_all.wav")
    soundfile.write(path, np.concatenate(clips), syn.SAMPLE_RATE, subtype="PCM_16")
    paths.append(path)
  return paths


def main(argv: Sequence[str] | None = None) -> int:
  """Builds the dataset (and exports WAV); returns the exit status (2: a bad command line)."""
  status = cli.parse_command_line(FLAGS, argv, PROG, __doc__)
  if status is not None:
    return status
  start = time.perf_counter()
  builder = SyntheticTalkingFaces(data_dir=FLAGS.data_dir)
  builder.download_and_prepare()
  counts = {name: split.num_examples for name, split in builder.info.splits.items()}
  print(f"{builder.name} in {builder.data_dir}: {counts} ({time.perf_counter() - start:.1f} s)")
  if FLAGS.export_wav:
    if FLAGS.split not in counts:
      message = f"--split must be one of {sorted(counts)}, got {FLAGS.split!r}"
      print(cli.error_line(PROG, message), file=sys.stderr)
      return 2
    paths = export_wav(builder, FLAGS.export_wav, FLAGS.split, FLAGS.max_clips)
    print(f"{len(paths)} WAV files ({FLAGS.split}) in {FLAGS.export_wav}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
