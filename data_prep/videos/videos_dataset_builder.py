"""TFDS builder `wav2pix_videos`: speech/face records from a folder of the user's own videos.

Layout read (the manual dir):

    <videos>/<speaker>/<any/sub/path>/<name>.mp4|.mkv|.webm|.mov   videos with sound

Build (see `build.py` for every option):

    .venv/bin/python -m data_prep.videos.build --videos=PATH --data_dir=DIR

or, default options only, with the TFDS CLI (which needs apache-beam installed: tfds 4.9.10's
`tfds` command imports it at start-up, even for builders that do not use Beam):

    PYTHONPATH=. tfds build data_prep/videos --manual_dir=PATH --data_dir=DIR
"""

import collections
import dataclasses
import json
import logging
import pathlib
import pickle
import shutil
import tempfile
import time
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds
import tqdm

from data_prep.features import record_features
from data_prep.videos import extract

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


def carve_validation(items: list[_Item], fraction: float) -> tuple[list[_Item], list[_Item], int]:
  """(train, validation, dropped): per speaker, the last `fraction` of records in time order.

  Train records of the first validation record's video whose speech window overlaps its window
  are dropped (returned as a count) so the two splits never share speech.
  """
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
  by_speaker = collections.defaultdict(list)
  for item in items:
    by_speaker[item.speaker].append(item)
  train, validation, dropped = [], [], 0
  for speaker in sorted(by_speaker):
    ordered = sorted(by_speaker[speaker], key=lambda it: (it.clip_id, it.frame_ms))
    num_val = round(fraction * len(ordered))
    if fraction > 0 and len(ordered) >= 2:
      num_val = min(max(num_val, 1), len(ordered) - 1)
    cut = len(ordered) - num_val
    validation.extend(ordered[cut:])
    first_val = ordered[cut] if num_val else None
    for item in ordered[:cut]:
      if (first_val is not None and item.clip_id == first_val.clip_id
          and item.window_ms[1] > first_val.window_ms[0]):
        dropped += 1
      else:
        train.append(item)
  return train, validation, dropped


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

  def __init__(self, *, options: extract.ExtractOptions | None = None,
               validation_fraction: float = VALIDATION_FRACTION, file_format=None, **kwargs):
    if not 0.0 <= validation_fraction < 1.0:
      raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    self.options = options or extract.ExtractOptions()
    self.validation_fraction = validation_fraction
    self.build_report: dict | None = None
    self._spill_dir: pathlib.Path | None = None
    # ArrayRecord by default: random access through tfds.data_source, no TensorFlow to read.
    super().__init__(file_format=file_format or "array_record", **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        # Speaker names come from the folders found, set in _split_generators.
        features=record_features(
            None, face_format="jpeg", face_box=tfds.features.Tensor(shape=(4,), dtype=np.int32)),
        supervised_keys=("waveform", "face"),
        homepage="https://imatge-upc.github.io/wav2pix/",
    )

  def _download_and_prepare(self, dl_manager, download_config=None):
    self._spill_dir = pathlib.Path(tempfile.mkdtemp(prefix="wav2pix_videos_"))
    try:
      super()._download_and_prepare(dl_manager, download_config)
    finally:
      shutil.rmtree(self._spill_dir, ignore_errors=True)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = pathlib.Path(dl_manager.manual_dir)
    started = time.time()
    speakers = extract.find_videos(root)
    self.info.features["speaker"].names = sorted(speakers)
    items, report = self._extract_all(root, speakers)
    train, validation, gap = carve_validation(items, self.validation_fraction)
    report["dropped"]["split_gap"] = gap
    report["faces_kept"] = len(train) + len(validation)
    report["records"] = {"train": len(train), "validation": len(validation)}
    for split, split_items in (("train", train), ("validation", validation)):
      for item in split_items:
        report["per_speaker"][item.speaker][split] += 1
    report["seconds"] = round(time.time() - started, 2)
    self.build_report = report
    report_path = pathlib.Path(self.data_path) / REPORT_NAME
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    logging.info("wav2pix_videos build report (%s):\n%s", report_path.name,
                 json.dumps(report, indent=2, ensure_ascii=False))
    if not train:
      raise ValueError(f"no usable speech/face records in {root}; build report: "
                       f"{json.dumps(report, ensure_ascii=False)}")
    splits = {"train": self._generate_examples(train)}
    if validation:
      splits["validation"] = self._generate_examples(validation)
    return splits

  def _extract_all(self, root: pathlib.Path, speakers: dict[str, list[pathlib.Path]]):
    """Runs `extract_video` on every file, spilling records to disk; returns (items, report)."""
    detector = extract.face_detector()
    report = {
        "videos_dir": str(root),
        "options": dataclasses.asdict(self.options),
        "validation_fraction": self.validation_fraction,
        "speakers": sorted(speakers),
        "videos_found": sum(len(v) for v in speakers.values()),
        "videos_read": 0,
        "videos_failed": 0,
        "failed_by_reason": {reason: 0 for reason in extract.FILE_FAIL_REASONS},
        "failed_files": {},
        "frames_sampled": 0,
        "faces_kept": 0,
        "dropped": {reason: 0 for reason in extract.FRAME_DROP_REASONS},
        "records": {},
        "per_speaker": {s: {"videos": len(v), "train": 0, "validation": 0} for s, v in speakers.items()},
    }
    items = []
    paths = [(speaker, path) for speaker in sorted(speakers) for path in speakers[speaker]]
    for number, (speaker, path) in enumerate(tqdm.tqdm(paths, desc="wav2pix_videos", unit="video")):
      clip_id = path.relative_to(root).as_posix()
      result = extract.extract_video(path, self.options, detector)
      if result.failure:
        report["videos_failed"] += 1
        report["failed_by_reason"][result.failure] += 1
        report["failed_files"][clip_id] = f"{result.failure}: {result.error}"
        logging.warning("skipping %s (%s): %s", clip_id, result.failure, result.error)
        continue
      report["videos_read"] += 1
      report["frames_sampled"] += result.frames_sampled
      for reason, count in result.dropped.items():
        report["dropped"][reason] += count
      if not result.records:
        continue
      spill_path = str(self._spill_dir / f"{number:07d}.pkl")
      with open(spill_path, "wb") as f:
        pickle.dump([(r.waveform, r.face_jpeg) for r in result.records], f, protocol=pickle.HIGHEST_PROTOCOL)
      items.extend(_Item(speaker, clip_id, r.frame_ms, r.window_ms, r.face_box, spill_path, i)
                   for i, r in enumerate(result.records))
    return items, report

  def _generate_examples(self, items: list[_Item]) -> Iterator[tuple[str, dict]]:
    loaded_path, loaded = None, None
    for item in items:
      if item.spill_path != loaded_path:
        with open(item.spill_path, "rb") as f:
          loaded_path, loaded = item.spill_path, pickle.load(f)
      waveform, face_jpeg = loaded[item.index]
      yield f"{item.clip_id}@{item.frame_ms}", {
          "waveform": waveform,
          "face": face_jpeg,
          "speaker": item.speaker,
          "speaker_name": item.speaker,
          "clip_id": item.clip_id,
          "frame": item.frame_ms,
          "face_box": np.asarray(item.face_box, np.int32),
      }
