"""Datasets: a TFDS name -> a prepared ArrayRecord dataset, what the model needs to know of it
(DatasetInfo: speakers, split sizes, face layout), its records (tfds.data_source) and per-split
indexes (speaker of each record, wrong-face candidates, each face's first windows).

Datasets are found by TFDS name in `input.data_dir`, and prepared there (ArrayRecord) from
`input.manual_dir` on first use (our builders are imported lazily by name, BUILDER_MODULES).
input_pipeline.py turns the records into batches (and names DatasetInfo, get_dataset_info and
data_source for its callers).
"""

import dataclasses
import functools
import importlib
import os
from typing import Mapping

from absl import logging
import numpy as np

from wav2pix_jax import config_lib

# Our builders, by TFDS name -> the module whose import registers them (imported lazily, so one
# missing builder doesn't break the others).
BUILDER_MODULES = {
    "youtubers": "data_prep.youtubers",
    "synthetic_talking_faces": "data_prep.synthetic",
    "synthetic_voice_faces": "data_prep.synthetic_voice_faces",
    "wav2pix_videos": "data_prep.videos",
}
REQUIRED_FEATURES = ("waveform", "face", "speaker")
_SCAN_CHUNK = 512


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the model needs to know about a prepared dataset."""

  name: str
  data_dir: str
  num_speakers: int
  speaker_names: tuple[str, ...]
  split_sizes: Mapping[str, int]
  # The face layout every image shares, where the builder declares one (its FACE_LAYOUT:
  # {"face_box", "mouth_box", "brow_boxes"}, pixel boxes) for pixel-space metrics; None for
  # real faces (dlib metrics only).
  face_layout: Mapping | None = None


# ---------------------------------------------------------------------------------------------
# Finding and preparing datasets.


def base_name(name: str) -> str:
  return name.split(":")[0].split("/")[0]


def _data_dir(input_cfg) -> str:
  data_dir = input_cfg.data_dir
  if not data_dir:
    raise config_lib.ConfigError(
        "input.data_dir is not set: pass --config.input.data_dir=/path/to/tensorflow_datasets "
        "(where prepared TFDS datasets live, or will be prepared)"
    )
  return os.path.expanduser(os.fspath(data_dir))


def _import_builder_module(name: str) -> None:
  module = BUILDER_MODULES.get(base_name(name))
  if module is None:
    return  # a builder registered by the caller, or a dataset prepared elsewhere
  try:
    importlib.import_module(module)
  except ModuleNotFoundError as e:
    if e.name and module.startswith(e.name):
      raise config_lib.ConfigError(
          f"dataset {name!r} needs the builder module {module}, which is not installed "
          f"in this checkout ({e})"
      ) from None
    raise


@functools.lru_cache(maxsize=None)
def _prepared_builder(name: str, data_dir: str, manual_dir: str | None):
  """The TFDS builder of `name` in `data_dir`, prepared (ArrayRecord) if it wasn't yet."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  _import_builder_module(name)
  try:
    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
  except tfds.core.registered.DatasetNotFoundError:
    raise config_lib.ConfigError(
        f"unknown dataset {name!r} (not registered, not prepared in {data_dir}); "
        f"known Wav2Pix datasets: {', '.join(sorted(BUILDER_MODULES))}"
    ) from None
  if not builder.is_prepared():
    if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None) and manual_dir is not None:
      if not os.path.isdir(os.path.expanduser(manual_dir)):
        if not getattr(builder, "RELEASE_URL", None):
          raise config_lib.ConfigError(
              f"dataset {name!r} is not prepared in {data_dir} and input.manual_dir "
              f"{manual_dir!r} is not a directory: pass --config.input.manual_dir=<raw data folder>"
          )
        # configs/base.py points at ../shared/youtubers, which only this project's machines have.
        logging.warning(
            "input.manual_dir %s is not a directory: downloading dataset %r from %s instead",
            manual_dir,
            name,
            builder.RELEASE_URL,
        )
        manual_dir = None
    download_config = tfds.download.DownloadConfig(
        manual_dir=os.path.expanduser(manual_dir) if manual_dir else None
    )
    try:
      builder.download_and_prepare(download_config=download_config)
    except OSError as e:  # requests' ConnectionError and friends are OSErrors
      if manual_dir is not None or not getattr(builder, "RELEASE_URL", None):
        raise
      raise config_lib.ConfigError(
          f"dataset {name!r} is not prepared in {data_dir} and its download from "
          f"{builder.RELEASE_URL} failed ({type(e).__name__}: {' '.join(str(e).split())[:200]}): "
          f"without internet, pass --config.input.manual_dir=<local copy of the release>"
      ) from None
    except AssertionError as e:
      if "manual" in str(e).lower():
        raise config_lib.ConfigError(
            f"dataset {name!r} needs its raw data: pass --config.input.manual_dir=<folder> "
            f"({' '.join(str(e).split())[:300]})"
        ) from None
      raise
  file_format = getattr(builder.info.file_format, "value", builder.info.file_format)
  if file_format != "array_record":
    raise config_lib.ConfigError(
        f"dataset {name!r} in {data_dir} was prepared as {file_format}, the pipeline reads "
        f"ArrayRecord: rebuild it with file_format='array_record' (e.g. in a fresh data_dir)"
    )
  missing = [key for key in REQUIRED_FEATURES if key not in builder.info.features]
  if missing:
    raise config_lib.ConfigError(
        f"dataset {name!r} lacks the record features {missing} (see DESIGN.md 'Record format')"
    )
  return builder


def get_dataset_info(input_cfg) -> DatasetInfo:
  """Speakers and split sizes of `input_cfg.dataset`.

  Prepares it in `input_cfg.data_dir` if needed.
  """
  data_dir = _data_dir(input_cfg)
  name = input_cfg.dataset
  if not name or not isinstance(name, str):
    raise config_lib.ConfigError(
        f"input.dataset must be a TFDS name, got {name!r}; "
        f"known: {', '.join(sorted(BUILDER_MODULES))}"
    )
  builder = _prepared_builder(name, data_dir, input_cfg.manual_dir or None)
  names = tuple(builder.info.features["speaker"].names)
  return DatasetInfo(
      name=name,
      data_dir=data_dir,
      num_speakers=len(names),
      speaker_names=names,
      split_sizes={split: info.num_examples for split, info in builder.info.splits.items()},
      face_layout=getattr(builder, "FACE_LAYOUT", None),
  )


def data_source(input_cfg, split: str):
  """tfds.data_source of `split`; faces stay encoded bytes (decoded and resized once, with PIL)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  info = get_dataset_info(input_cfg)
  if split not in info.split_sizes:
    raise config_lib.ConfigError(
        f"dataset {info.name!r} has no split {split!r}; splits: {sorted(info.split_sizes)}"
    )
  return tfds.data_source(
      info.name, split=split, data_dir=info.data_dir, decoders={"face": tfds.decode.SkipDecoding()}
  )


@dataclasses.dataclass(frozen=True)
class SplitIndex:
  speakers: np.ndarray  # int32 [N]
  # For each speaker s: indices of the records of every OTHER speaker (wrong-face candidates).
  others: tuple[np.ndarray, ...]


@functools.lru_cache(maxsize=8)
def scan_split(name: str, data_dir: str, split: str, window: int) -> SplitIndex:
  """Speaker of each record; checks that every clip covers the window and there are 2+ speakers."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  # Faces are not decoded: the scan reads only labels and waveform lengths.
  source = tfds.data_source(
      name, split=split, data_dir=data_dir, decoders={"face": tfds.decode.SkipDecoding()}
  )
  num_speakers = source.dataset_info.features["speaker"].num_classes
  speakers = np.empty(len(source), np.int32)
  for start in range(0, len(source), _SCAN_CHUNK):
    keys = list(range(start, min(start + _SCAN_CHUNK, len(source))))
    for key, record in zip(keys, source.__getitems__(keys)):
      speakers[key] = record["speaker"]
      if record["waveform"].shape[0] < window:
        raise config_lib.ConfigError(
            f"dataset {name!r} split {split!r} record {key} "
            f"(clip {record.get('clip_id', b'?')!r}) has "
            f"{record['waveform'].shape[0]} samples, shorter than input.audio_samples={window}: "
            f"lower audio_samples or rebuild the dataset with longer clips"
        )
  present = np.unique(speakers)
  if present.size < 2:
    names = [source.dataset_info.features["speaker"].names[s] for s in present]
    raise config_lib.ConfigError(
        f"dataset {name!r} split {split!r} has {present.size} speaker(s) {names}: wrong faces "
        "(a real face of a different speaker) need at least 2"
    )
  others = tuple(np.flatnonzero(speakers != s).astype(np.int64) for s in range(num_speakers))
  return SplitIndex(speakers=speakers, others=others)


@functools.lru_cache(maxsize=8)
def first_windows(name: str, data_dir: str, split: str, windows_per_face: int) -> np.ndarray:
  """Record indices keeping the first `windows_per_face` records (by frame) of each clip_id.

  In the YouTubers release a clip_id is one face and its records are the 5 speech windows the
  authors cut around it (earlier copies of the release kept 2); this recreates a smaller release.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  source = tfds.data_source(
      name, split=split, data_dir=data_dir, decoders={"face": tfds.decode.SkipDecoding()}
  )
  keys = []
  for start in range(0, len(source), _SCAN_CHUNK):
    indices = list(range(start, min(start + _SCAN_CHUNK, len(source))))
    for index, record in zip(indices, source.__getitems__(indices)):
      keys.append((record["clip_id"], int(record["frame"]), index))
  keys.sort()
  kept, previous, rank = [], None, 0
  for clip, _, index in keys:
    rank = rank + 1 if clip == previous else 0
    previous = clip
    if rank < windows_per_face:
      kept.append(index)
  return np.asarray(sorted(kept), np.int64)


class RecordSubset:
  """The records of a data source at `indices` (a grain data source)."""

  def __init__(self, source, indices: np.ndarray):
    self._source, self._indices = source, indices

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int):
    return self._source[int(self._indices[int(index)])]
