"""CLI: faces (PNG) or a talking-face video (MP4 with the original sound) from audio files.

    wav2pix-generate --workdir=workdirs/base --audio=a.wav --audio=b.m4a --out=faces/
    wav2pix-generate --workdir=workdirs/base --audio=talk.wav --out=faces/ --every=0.5
    wav2pix-generate --workdir=workdirs/base --audio=talk.wav --out=faces/ --video=talk.mp4 --fps=25
    wav2pix-generate --workdir=workdirs/base --audio=a.wav --audio=b.wav --out=faces/ --fuse

One face per file (its centred window) by default; with --every, one face per window start;
with --fuse, ONE face from the mean speech embedding of every window of every file given (windows
a window's length apart, or --every s; silent ones left out), written as <out>/<name>.png for one
file and <out>/fused.png for several;
with --video, one frame per 1/fps s, each generated from the window CENTRED on that frame's time
(the recording is padded with half a window of silence at both ends). With --every or --video a
silent window (a pause) still gets a face, generated from silence, and the count of such windows
is printed; a recording that is silent throughout is refused. Outputs are written to a temporary
name and renamed when complete, so a failure leaves nothing half-written. A user's error (a bad
flag, file or workdir) is one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile
from typing import Sequence

from absl import flags
import numpy as np
from PIL import Image

from wav2pix_jax.data import audio
from wav2pix_jax import cli
from wav2pix_jax import config_lib
from wav2pix_jax.serving import video

PROG = "wav2pix-generate"
# The tool's own flags (not absl's global FLAGS: see cli.parse_flags).
FLAGS = flags.FlagValues()
flags.DEFINE_string("workdir", None, "Training workdir (or checkpoint dir).", flag_values=FLAGS)
flags.DEFINE_multi_string(
    "audio",
    None,
    "Audio or video file; repeat it for several (files may also follow as plain arguments).",
    flag_values=FLAGS,
)
flags.DEFINE_string("out", None, "Output folder for the PNG faces.", flag_values=FLAGS)
cli.define_checkpoint_flags(FLAGS)
flags.DEFINE_float("every", None, "One face every S seconds.", flag_values=FLAGS)
flags.DEFINE_string(
    "video", None, "Write a talking-face MP4 (one --audio only).", flag_values=FLAGS
)
flags.DEFINE_float("fps", 25.0, "Video frame rate.", flag_values=FLAGS)
flags.DEFINE_boolean(
    "fuse",
    False,
    "One face from the mean speech embedding of all windows of all the files (one voice).",
    flag_values=FLAGS,
)
flags.DEFINE_boolean("sample", False, "Keep the generator's dropout on.", flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Seed of --sample.", flag_values=FLAGS)
flags.DEFINE_boolean("library_logs", False, cli.LIBRARY_LOGS_HELP, flag_values=FLAGS)
flags.mark_flags_as_required(["workdir", "audio", "out"], flag_values=FLAGS)


def _save_pngs(out_dir: pathlib.Path, name: str, faces: np.ndarray) -> list[pathlib.Path]:
  """<out>/<name>.png for one face, <out>/<name>/face_00000.png ... for several.

  Atomic per target.
  """
  out_dir.mkdir(parents=True, exist_ok=True)
  if faces.shape[0] == 1:
    tmp = out_dir / f".{name}.png.tmp"
    Image.fromarray(faces[0]).save(tmp, format="PNG")
    os.replace(tmp, out_dir / f"{name}.png")
    return [out_dir / f"{name}.png"]
  staging = pathlib.Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{name}."))
  for i, face in enumerate(faces):
    Image.fromarray(face).save(staging / f"face_{i:05d}.png")
  target = out_dir / name
  if target.exists():
    import shutil  # pylint: disable=g-import-not-at-top

    shutil.rmtree(target)
  os.replace(staging, target)
  return sorted(target.glob("*.png"))


def _report_silent(path, silent: int, total: int) -> None:
  """Says how many windows were silent (their faces come from an all-zero input)."""
  if silent:
    print(f"{path}: {silent} of {total} windows are silent; their faces are generated from silence")


def _fuse(generator, files, waveforms, out_dir: pathlib.Path, name: str) -> None:
  """`--fuse`: one face from the mean embedding of every window of every file.

  Written to <out>/<name>.png.
  """
  from wav2pix_jax.serving import inference  # pylint: disable=g-import-not-at-top

  windows = []
  for path, waveform in zip(files, waveforms):
    try:
      windows.append(generator.fusion_windows(waveform, generator.sample_rate, every=FLAGS.every))
    except audio.AudioError as e:
      raise audio.AudioError(f"{path}: {e}") from None
  windows = np.concatenate(windows)
  silent = inference.check_not_all_silent(windows)
  face = generator.generate_fused_preprocessed(windows, sample=FLAGS.sample, seed=FLAGS.seed)
  (target,) = _save_pngs(out_dir, name, face)
  used = len(windows) - silent
  left_out = f" ({silent} silent left out)" if silent else ""
  print(
      f"{', '.join(map(str, files))}: 1 face from the mean embedding of {used} window(s)"
      f"{left_out} -> {target}"
  )


def _talking_face(generator, path, waveform: np.ndarray, out_dir: pathlib.Path, name: str) -> None:
  """`--video`: one frame per 1/fps s, written as the MP4 (with the sound) and as PNGs."""
  from wav2pix_jax.serving import inference  # pylint: disable=g-import-not-at-top

  windows = video.video_windows(generator, waveform, fps=FLAGS.fps)
  _report_silent(path, inference.check_not_all_silent(windows), len(windows))
  faces = generator.generate_preprocessed(windows, sample=FLAGS.sample, seed=FLAGS.seed)
  video.write_video(FLAGS.video, faces, waveform, sample_rate=generator.sample_rate, fps=FLAGS.fps)
  saved = _save_pngs(out_dir, name, faces)
  print(f"{path}: {len(faces)} frames -> {FLAGS.video} and {len(saved)} PNG(s) in {out_dir}")


def main(argv: Sequence[str] | None = None) -> int:
  """CLI entry; returns the exit status (2: a bad command line, 1: another user's error)."""
  if cli.wants_help(argv):
    print(cli.help_text(FLAGS, PROG, __doc__))
    return 0

  def fail(message, status: int = 1) -> int:
    print(cli.error_line(PROG, message), file=sys.stderr)
    return status

  try:
    positional = cli.parse_flags(FLAGS, argv, PROG)
  except cli.UsageError as e:
    return fail(e, 2)
  files = list(FLAGS.audio) + positional
  if FLAGS.every is not None and not FLAGS.every > 0:
    return fail(f"--every must be a positive number of seconds, got {FLAGS.every}", 2)
  if not FLAGS.fps > 0:
    return fail(f"--fps must be positive, got {FLAGS.fps}", 2)
  if FLAGS.video is not None and len(files) != 1:
    return fail(f"--video needs exactly one --audio file, got {len(files)}", 2)
  if FLAGS.video is not None and FLAGS.every is not None:
    return fail("--video sets the face rate from --fps; drop --every", 2)
  if FLAGS.fuse and FLAGS.video is not None:
    return fail("--fuse makes one face from all windows; drop --video", 2)
  stems = [pathlib.Path(f).stem for f in files]
  if len(set(stems)) != len(stems) and not FLAGS.fuse:
    return fail(f"two --audio files share a name ({stems}); outputs would overwrite each other", 2)
  cli.quiet_library_logs(show=cli.library_logs_wanted(FLAGS.library_logs))

  try:
    from wav2pix_jax.serving import inference  # pylint: disable=g-import-not-at-top

    generator = inference.load(FLAGS.workdir, FLAGS.step, checkpoint=FLAGS.checkpoint)
    print(generator.source)
    # Decode everything first: a bad file fails before anything is written.
    waveforms = [audio.load_audio(f, sample_rate=generator.sample_rate) for f in files]
    out_dir = pathlib.Path(FLAGS.out)
    if FLAGS.fuse:
      _fuse(generator, files, waveforms, out_dir, stems[0] if len(files) == 1 else "fused")
      return 0
    for path, stem, waveform in zip(files, stems, waveforms):
      if FLAGS.video is not None:
        _talking_face(generator, path, waveform, out_dir, stem)
      else:
        windows = generator.windows(waveform, generator.sample_rate, every=FLAGS.every)
        if FLAGS.every is not None:
          _report_silent(path, inference.check_not_all_silent(windows), len(windows))
        faces = generator.generate_preprocessed(windows, sample=FLAGS.sample, seed=FLAGS.seed)
        saved = _save_pngs(out_dir, stem, faces)
        print(f"{path}: {len(faces)} face(s) -> {saved[0] if len(saved) == 1 else out_dir / stem}")
  except (config_lib.ConfigError, audio.AudioError, OSError) as e:
    # A bad setting, audio file or path; anything else is a bug and keeps its traceback.
    return fail(e)
  return 0


def run() -> None:
  """Console-script entry point (wav2pix-generate)."""
  raise SystemExit(main())


if __name__ == "__main__":
  run()
