"""TFDS builder `wav2pix_videos`: speech/face records from a folder of the user's own videos.

Layout read (the manual dir):

    <videos>/<speaker>/<any/sub/path>/<name>.mp4|.mkv|.webm|.mov   videos with sound

Build (see `build.py` for every option):

    .venv/bin/python -m data_prep.videos.build --videos=PATH --data_dir=DIR

or, default options only, with the TFDS CLI (which needs the `[beam]` extra: tfds 4.9.10's
`tfds` command imports apache_beam and mlcroissant at start-up, even for builders without Beam):

    PYTHONPATH=. tfds build data_prep/videos --manual_dir=PATH --data_dir=DIR

Either one builds on Apache Beam when given Beam options (`beam_build.py`: one video per element,
for many processes or machines), e.g. 2 local processes:

    --beam_pipeline_options=\
runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing

Without them the build runs in this process, as always (no Beam needed).
"""

import dataclasses
import json
import logging
import pathlib
import pickle
import re
import shutil
import tempfile
import time
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds
import tqdm

from data_prep.features import record_features
from data_prep.videos import extract
from data_prep.videos import records

# Share of each speaker's records (the last ones in time order) that form "validation".
VALIDATION_FRACTION = 0.1
REPORT_NAME = "build_report.json"

_DESCRIPTION = """
Speech/face pairs cut from a folder of videos, one subfolder per speaker, the way the Wav2Pix
paper built its YouTubers dataset: frames sampled at a fixed rate (default 1 per second), the
most confident dlib frontal face of each frame cropped square with a margin (stored as a JPEG,
true RGB, 128 x 128 by default), paired with the speech around the frame (default frame time
+- 2 s, clipped to the video) as 16 kHz mono int16. `clip_id` is the video path relative to the
videos folder; `frame` is the frame time in milliseconds; the extra `face_box` is the square
crop (left, top, right, bottom) in pixels of the (display-rotated) frame. Speaker labels are the
sorted speaker folder names.

Splits are carved per speaker by contiguous time blocks, never at random: each speaker's
records in time order (videos sorted by path, then frame time) go to "train", except the last
`validation_fraction` of them, which form "validation". Train records of the boundary video
whose speech overlaps the first validation record's speech are dropped, so no speech is shared.
Skipped frames and files are counted in `build_report.json` beside the prepared dataset.
"""


@dataclasses.dataclass(frozen=True)
class _Item:
  """A kept record's metadata; its waveform and face stay spilled on disk until written."""

  speaker: str
  clip_id: str
  frame_ms: int
  window_ms: tuple[int, int]
  face_box: tuple[int, int, int, int]
  spill_path: str
  index: int


class Wav2PixVideos(tfds.core.GeneratorBasedBuilder):
  """Speech/face records from `<videos>/<speaker>/<video>` (see DESIGN.md, record format)."""

  name = "wav2pix_videos"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Put your videos (with sound) in a folder with one subfolder per speaker:
  `<manual_dir>/<speaker>/<video>.mp4` (also .mkv, .webm, .mov; nested folders are fine).
  Build with `python -m data_prep.videos.build --videos=<manual_dir> --data_dir=<data_dir>`
  or `tfds build data_prep/videos --manual_dir=<manual_dir> --data_dir=<data_dir>`.
  """

  def __init__(
      self,
      *,
      options: extract.ExtractOptions | None = None,
      validation_fraction: float = VALIDATION_FRACTION,
      file_format=None,
      **kwargs,
  ):
    if not 0.0 <= validation_fraction < 1.0:
      raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    self.options = options or extract.ExtractOptions()
    self.validation_fraction = validation_fraction
    self.build_report: dict | None = None
    self.beam_counters: dict[str, int] | None = None  # after a Beam build: its Beam counters
    self._spill_dir: pathlib.Path | None = None
    # ArrayRecord by default: random access through tfds.data_source, no TensorFlow to read.
    super().__init__(file_format=file_format or "array_record", **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        # Speaker names come from the folders found, set in _split_generators.
        features=record_features(
            None, face_format="jpeg", face_box=tfds.features.Tensor(shape=(4,), dtype=np.int32)
        ),
        supervised_keys=("waveform", "face"),
        homepage="https://imatge-upc.github.io/wav2pix/",
    )

  def _download_and_prepare(self, dl_manager, download_config=None):
    beam = download_config is not None and bool(
        download_config.beam_options or download_config.beam_runner
    )
    if beam:
      # TFDS hands its Beam pipeline to `_split_generators` only when that method's signature
      # has a `pipeline` parameter, and then always builds one (which needs apache_beam): so
      # the pipeline is asked for only when Beam options were given.
      self._split_generators = self._beam_split_generators
    else:
      self._spill_dir = pathlib.Path(tempfile.mkdtemp(prefix="wav2pix_videos_"))
    try:
      super()._download_and_prepare(dl_manager, download_config)
    except Exception as e:
      # A Beam build declares its splits before any video is read, and TFDS then fails on an
      # empty one (the single-process build leaves an empty validation split out): say why.
      empty = re.search(r"generated examples is 0 for split (\w+)", str(e)) if beam else None
      if empty is None:
        raise
      why = (
          "no speaker gave 2 or more records, so none has a validation block; build with "
          "validation_fraction=0 or more videos"
          if empty.group(1) == "validation"
          else "no usable speech/face records (see the log for each video's drops)"
      )
      raise ValueError(
          f"Beam build of wav2pix_videos from {dl_manager.manual_dir}: empty "
          f"{empty.group(1)} split: {why}"
      ) from e
    finally:
      self.__dict__.pop("_split_generators", None)
      if self._spill_dir is not None:
        shutil.rmtree(self._spill_dir, ignore_errors=True)
        self._spill_dir = None

  def _find_videos(self, dl_manager) -> tuple[pathlib.Path, dict[str, list[pathlib.Path]]]:
    root = pathlib.Path(dl_manager.manual_dir)
    speakers = extract.find_videos(root)
    self.info.features["speaker"].names = sorted(speakers)
    return root, speakers

  def _report_header(self, root: pathlib.Path, speakers: dict[str, list[pathlib.Path]]) -> dict:
    """The report's fields that come from the folder and the options, not from the videos."""
    return dict(
        videos_dir=str(root),
        options=self.options,
        validation_fraction=self.validation_fraction,
        videos_per_speaker={s: len(v) for s, v in speakers.items()},
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    started = time.time()
    root, speakers = self._find_videos(dl_manager)
    counts = records.ReportCounts()
    items = self._extract_all(root, speakers, counts)
    train, validation = [], []
    for speaker, speaker_items in records.group_by_speaker(items).items():
      speaker_train, speaker_validation, gap = records.carve_speaker(
          speaker_items, self.validation_fraction
      )
      train.extend(speaker_train)
      validation.extend(speaker_validation)
      counts.add(records.SpeakerSplit(speaker, len(speaker_train), len(speaker_validation), gap))
    self._set_report(
        counts.report(**self._report_header(root, speakers), seconds=time.time() - started),
        write=True,
    )
    splits = {"train": self._generate_examples(train)}
    if validation:
      splits["validation"] = self._generate_examples(validation)
    return splits

  def _beam_split_generators(self, dl_manager: tfds.download.DownloadManager, pipeline):
    """The Beam build: one video per element; the report is written by the pipeline itself."""
    try:
      from data_prep.videos import beam_build  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(
          f"a Beam build of wav2pix_videos needs apache-beam ({e}): " "pip install -e '.[beam]'"
      ) from None
    started = time.time()
    root, speakers = self._find_videos(dl_manager)
    videos = [
        (number, speaker, path.relative_to(root).as_posix(), str(path))
        for number, (speaker, path) in enumerate(_video_order(speakers))
    ]
    return beam_build.build_splits(
        pipeline,
        videos,
        options=self.options,
        validation_fraction=self.validation_fraction,
        report_header=self._report_header(root, speakers),
        report_path=str(self.data_path / REPORT_NAME),
        started=started,
    )

  def _process_pipeline_result(self, pipeline_result) -> None:
    """After a Beam build: reads back the report the pipeline wrote, logs it and its counters."""
    self._set_report(
        json.loads((self.data_path / REPORT_NAME).read_text(encoding="utf-8")), write=False
    )
    try:
      from data_prep.videos import beam_build  # pylint: disable=g-import-not-at-top

      self.beam_counters, distributions = beam_build.metrics(pipeline_result)
      logging.info(
          "wav2pix_videos Beam counters: %s; distributions: %s",
          json.dumps(self.beam_counters, sort_keys=True),
          json.dumps(distributions, sort_keys=True),
      )
    except Exception as e:  # noqa: BLE001 - counters are a progress aid; the report is the record
      logging.warning("could not read the Beam counters: %s", e)

  def _set_report(self, report: dict, write: bool) -> None:
    """Keeps, writes (single-process build) and logs the report; no train records: an error."""
    self.build_report = report
    report_path = self.data_path / REPORT_NAME
    if write:
      report_path.parent.mkdir(parents=True, exist_ok=True)
      report_path.write_text(
          json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
      )
    logging.info(
        "wav2pix_videos build report (%s):\n%s",
        report_path.name,
        json.dumps(report, indent=2, ensure_ascii=False),
    )
    if not report["records"]["train"]:
      raise ValueError(
          f"no usable speech/face records in {report['videos_dir']}; build report: "
          f"{json.dumps(report, ensure_ascii=False)}"
      )

  def _extract_all(
      self,
      root: pathlib.Path,
      speakers: dict[str, list[pathlib.Path]],
      counts: records.ReportCounts,
  ) -> list[_Item]:
    """Runs `extract_video` on every file, spilling records to disk and counting into `counts`."""
    detector = extract.face_detector()
    items = []
    paths = list(_video_order(speakers))
    for number, (speaker, path) in enumerate(tqdm.tqdm(paths, desc="wav2pix_videos", unit="video")):
      clip_id = path.relative_to(root).as_posix()
      result = extract.extract_video(path, self.options, detector)
      counts.add(records.VideoSummary.of(number, speaker, clip_id, result))
      if result.failure:
        logging.warning("skipping %s (%s): %s", clip_id, result.failure, result.error)
        continue
      if not result.records:
        continue
      spill_path = str(self._spill_dir / f"{number:07d}.pkl")
      with open(spill_path, "wb") as f:
        pickle.dump(
            [(r.waveform, r.face_jpeg) for r in result.records], f, protocol=pickle.HIGHEST_PROTOCOL
        )
      items.extend(
          _Item(speaker, clip_id, r.frame_ms, r.window_ms, r.face_box, spill_path, i)
          for i, r in enumerate(result.records)
      )
    return items

  def _generate_examples(self, items: list[_Item]) -> Iterator[tuple[str, dict]]:
    loaded_path, loaded = None, None
    for item in items:
      if item.spill_path != loaded_path:
        with open(item.spill_path, "rb") as f:
          loaded_path, loaded = item.spill_path, pickle.load(f)
      waveform, face_jpeg = loaded[item.index]
      yield records.example(
          item.speaker, item.clip_id, item.frame_ms, item.face_box, waveform, face_jpeg
      )


def _video_order(speakers: dict[str, list[pathlib.Path]]) -> Iterator[tuple[str, pathlib.Path]]:
  """(speaker, path) of every video in build order: speakers sorted, then their sorted paths."""
  for speaker in sorted(speakers):
    for path in speakers[speaker]:
      yield speaker, path
