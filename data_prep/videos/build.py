"""Build the `wav2pix_videos` dataset from a folder of videos (one subfolder per speaker).

    python -m data_prep.videos.build --videos=PATH --data_dir=DIR [--frames_per_second=1 ...]

On Apache Beam (`pip install -e '.[beam]'`), one video per element, e.g. 2 local processes:

    python -m data_prep.videos.build --videos=PATH --data_dir=DIR --beam_pipeline_options=\
runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing

(Beam 2.77's DirectRunner first tries its Prism runner, which it downloads from GitHub and which
runs the Python workers inside this process; `runner=FnApiRunner` with the same options always
starts the N worker processes.)

Read it back with `tfds.data_source("wav2pix_videos", split="train", data_dir=DIR)`
(after `import data_prep.videos`). The build report is written beside the prepared dataset
(DIR/wav2pix_videos/1.0.0/build_report.json), logged, and printed. One DIR holds one build:
asking for other videos or options where a build exists is an error unless --overwrite.
"""

import dataclasses
import json
import pathlib

from absl import app
from absl import flags
from absl import logging
import tensorflow_datasets as tfds

from data_prep.videos import extract
from data_prep.videos import videos_dataset_builder

_DEFAULTS = extract.ExtractOptions()
_VIDEOS = flags.DEFINE_string("videos", None, "Folder with one subfolder of videos per speaker.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir to write to (default: TFDS's).")
_VALIDATION_FRACTION = flags.DEFINE_float(
    "validation_fraction",
    videos_dataset_builder.VALIDATION_FRACTION,
    "Share of each speaker's records (the last in time order) that form the validation split.",
)
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Rebuild even if the dataset is already prepared."
)
_BEAM_OPTIONS = flags.DEFINE_string(
    "beam_pipeline_options",
    None,
    "Build on Apache Beam with these comma-separated pipeline options (as `tfds build` takes "
    "them), e.g. runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing.",
)

# One flag per extraction option, with the option's own default and its comment as help.
_HELP = {
    "frames_per_second": "Frames sampled per second of video (the paper: 1).",
    "face_margin": "Border added on each side of the face box, as a fraction of its side.",
    "min_face_size": "Smallest accepted detected face box side, in original pixels.",
    "face_size": "Side in pixels of the stored square face JPEG.",
    "speech_seconds": "Seconds of speech kept around each frame (frame time +- half).",
    "min_speech_seconds": "Drop frames whose speech window (clipped to the video) is shorter.",
    "silence_rms": "Drop frames whose speech RMS (full scale 1.0) is below this.",
    "detect_max_side": "Downscale frames to this longer side before face detection (speed).",
    "detector_upsample": "dlib upsampling passes (finds smaller faces, slower).",
    "detector_threshold": "dlib detection score threshold (higher: only confident faces).",
    "jpeg_quality": "JPEG quality of the stored faces.",
}
_OPTION_FLAGS = {}
for _field in dataclasses.fields(extract.ExtractOptions):
  _define = {int: flags.DEFINE_integer, float: flags.DEFINE_float}[
      type(getattr(_DEFAULTS, _field.name))
  ]
  _OPTION_FLAGS[_field.name] = _define(
      _field.name, getattr(_DEFAULTS, _field.name), _HELP[_field.name]
  )


def build(
    videos: str,
    data_dir: str | None = None,
    options: extract.ExtractOptions | None = None,
    validation_fraction: float = videos_dataset_builder.VALIDATION_FRACTION,
    overwrite: bool = False,
    beam_pipeline_options: str | None = None,
) -> dict:
  """Prepares the dataset (or reuses a matching one) and returns its build report.

  `beam_pipeline_options` ("runner=...,key=value,..."): build on Apache Beam with them.
  """
  pipeline_options = beam_options(beam_pipeline_options) if beam_pipeline_options else None
  videos_path = pathlib.Path(videos).expanduser()
  if not videos_path.is_dir():
    raise FileNotFoundError(f"--videos folder not found: {videos_path}")
  builder = videos_dataset_builder.Wav2PixVideos(
      data_dir=data_dir, options=options, validation_fraction=validation_fraction
  )
  report_path = pathlib.Path(builder.data_path) / videos_dataset_builder.REPORT_NAME
  if builder.is_prepared() and not overwrite:
    previous = json.loads(report_path.read_text(encoding="utf-8")) if report_path.exists() else {}
    wanted = {
        "videos_dir": str(videos_path.resolve()),
        "options": dataclasses.asdict(builder.options),
        "validation_fraction": validation_fraction,
    }
    differs = [key for key, value in wanted.items() if previous.get(key) != value]
    if differs:
      raise ValueError(
          f"{builder.data_path} already holds a build with different {differs}; "
          "pass --overwrite to rebuild it, or choose another --data_dir"
      )
    logging.info(
        "already prepared at %s (same videos and options); nothing to do", builder.data_path
    )
    return previous
  mode = (
      tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
      if not overwrite
      else tfds.download.GenerateMode.FORCE_REDOWNLOAD
  )
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(
          manual_dir=str(videos_path.resolve()), download_mode=mode, beam_options=pipeline_options
      )
  )
  return builder.build_report


def beam_options(comma_separated: str):
  """Beam PipelineOptions from "key=value,..." (as `tfds build --beam_pipeline_options` takes)."""
  try:
    from apache_beam.options import pipeline_options  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ValueError(
        "--beam_pipeline_options needs apache-beam: pip install -e '.[beam]'"
    ) from None
  return pipeline_options.PipelineOptions(
      flags=[f"--{option}" for option in comma_separated.split(",") if option]
  )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _VIDEOS.value:
    raise app.UsageError("--videos=PATH is required (a folder with one subfolder per speaker)")
  try:
    options = extract.ExtractOptions(**{name: flag.value for name, flag in _OPTION_FLAGS.items()})
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  if not 0.0 <= _VALIDATION_FRACTION.value < 1.0:
    raise app.UsageError(
        f"--validation_fraction must be in [0, 1), got {_VALIDATION_FRACTION.value}"
    )
  try:
    report = build(
        _VIDEOS.value,
        _DATA_DIR.value,
        options,
        _VALIDATION_FRACTION.value,
        _OVERWRITE.value,
        _BEAM_OPTIONS.value,
    )
  except (FileNotFoundError, ValueError) as e:
    raise SystemExit(f"error: {e}") from None
  print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
  app.run(main)
