"""Build `synthetic_talking_faces`: `python -m data_prep.synthetic [--data_dir DIR]`.

Same result as `tfds build data_prep/synthetic` (whose CLI needs apache-beam to start).

With --export_wav=DIR, also writes the clips of one split as 16 kHz WAV files, to try a trained
model on (`python -m wav2pix_jax.generate --audio=...`):

    python -m data_prep.synthetic --export_wav=workdirs/demo/audio --split=test

DIR/<speaker>_clipNNN.wav (one clip, 1.25 s) with its real face DIR/<speaker>_clipNNN.png, and
DIR/<speaker>_all.wav: all of that speaker's clips of the split back to back (a few seconds of
changing loudness and pitch, for a talking-face video with --video).
"""

import argparse
import os
import time

import numpy as np

from data_prep.synthetic import SyntheticTalkingFaces
from data_prep.synthetic import synthetic_dataset_builder as syn


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


def main() -> None:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument(
      "--data_dir", default=None, help="TFDS data dir to write to (default: TFDS's)."
  )
  parser.add_argument(
      "--export_wav", default=None, metavar="DIR", help="also write a split's clips as WAV here"
  )
  parser.add_argument("--split", default="test", help="split for --export_wav (default: test)")
  parser.add_argument(
      "--max_clips", type=int, default=None, help="at most N clips per speaker (--export_wav)"
  )
  args = parser.parse_args()
  start = time.perf_counter()
  builder = SyntheticTalkingFaces(data_dir=args.data_dir)
  builder.download_and_prepare()
  counts = {name: split.num_examples for name, split in builder.info.splits.items()}
  print(f"{builder.name} in {builder.data_dir}: {counts} ({time.perf_counter() - start:.1f} s)")
  if args.export_wav:
    if args.split not in counts:
      parser.error(f"--split must be one of {sorted(counts)}, got {args.split!r}")
    paths = export_wav(builder, args.export_wav, args.split, args.max_clips)
    print(f"{len(paths)} WAV files ({args.split}) in {args.export_wav}")


if __name__ == "__main__":
  main()
