"""Input pipeline: TFDS ArrayRecord datasets -> grain -> host-local numpy batches (DESIGN.md).

Batches are dicts of numpy arrays with this process's batch size B as leading axis:

    "waveform":   float32 [B, T]        `audio.preprocess`ed window (random in training, centred
                                        in eval)
    "face":       float32 [B, S, S, 3]  in [-1, 1] (PIL, antialiased Lanczos resize)
    "wrong_face": float32 [B, S, S, 3]  a real face of a DIFFERENT speaker, in [-1, 1]
    "speaker":    int32   [B]
    "mask":       bool    [B]           eval batches only: False marks padding rows

Datasets are found by TFDS name in `input.data_dir`, and prepared there (ArrayRecord) from
`input.manual_dir` on first use. Each process reads a disjoint shard of the records.

`input.num_workers > 0` decodes in grain worker processes, which are started with "spawn": they
re-import the main module, so a script must create iterators under `if __name__ == "__main__":`
(absl's `app.run(main)` does). Absl flags are marked parsed here if they aren't yet.

The training iterator is a `grain.DataLoaderIterator`: `get_state()` -> bytes and
`set_state(bytes)` continue the exact same batch sequence. To save it with Orbax next to the
train state (grain registers these argument classes with Orbax when both are installed):

    import grain, orbax.checkpoint as ocp
    manager = ocp.CheckpointManager(workdir, options=ocp.CheckpointManagerOptions(...))
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        input=grain.checkpoint.CheckpointSave(train_iter)))
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        input=grain.checkpoint.CheckpointRestore(train_iter)))
    # `train_iter` (a fresh iterator from the same config) now continues where the saved one was;
    # restored["input"] is that same iterator. Each process writes/reads its own
    # "process_<i>-of-<n>.json" in the item's directory.

`grain.checkpoint.CheckpointSave/Restore` are `grain.python.PyGrainCheckpointSave/Restore`; the
handler is `grain.checkpoint.CheckpointHandler` (== `grain.python.PyGrainCheckpointHandler`).
Restore before `parallel.prefetch_to_device`, and save the state of the batch the step consumed
(the prefetcher tracks it), not the iterator's read-ahead state.
"""

import dataclasses
import functools
import importlib
import io
import os
from typing import Iterator, Mapping

from absl import logging
import grain
import numpy as np
from PIL import Image

from wav2pix_jax.data import audio
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
_READ_OPTIONS = dict(num_threads=8, prefetch_buffer_size=128)
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


def _base_name(name: str) -> str:
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
  module = BUILDER_MODULES.get(_base_name(name))
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
class _SplitIndex:
  speakers: np.ndarray  # int32 [N]
  # For each speaker s: indices of the records of every OTHER speaker (wrong-face candidates).
  others: tuple[np.ndarray, ...]


@functools.lru_cache(maxsize=8)
def _scan_split(name: str, data_dir: str, split: str, window: int) -> _SplitIndex:
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
  return _SplitIndex(speakers=speakers, others=others)


@functools.lru_cache(maxsize=8)
def _first_windows(name: str, data_dir: str, split: str, windows_per_face: int) -> np.ndarray:
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


class _RecordSubset:
  """The records of a data source at `indices` (a grain data source)."""

  def __init__(self, source, indices: np.ndarray):
    self._source, self._indices = source, indices

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int):
    return self._source[int(self._indices[int(index)])]


# ---------------------------------------------------------------------------------------------
# Per-record transformation.


def decode_face(face, image_size: int) -> np.ndarray:
  """Encoded image bytes (or a uint8 array) -> float32 [S, S, 3] in [-1, 1]."""
  image = (
      Image.open(io.BytesIO(face))
      if isinstance(face, (bytes, bytearray))
      else Image.fromarray(face)
  )
  # JPEG only: decode at the smallest 1/2^k DCT scale still >= the target (a proper low-pass,
  # ~3x faster for 220 px crops -> 64); the Lanczos resize below does the rest.
  image.draft("RGB", (image_size, image_size))
  image = image.convert("RGB")
  if image.size != (image_size, image_size):
    image = image.resize((image_size, image_size), Image.Resampling.LANCZOS)
  return np.asarray(image, np.float32) / 127.5 - 1.0


class _ExampleMaker:
  """Record -> example: preprocessed window, face, a wrong face of another speaker, speaker id."""

  def __init__(
      self,
      *,
      source,
      split_index: _SplitIndex,
      window: int,
      image_size: int,
      preemphasis: float,
      random_window: bool,
      floor_division: bool = False,
  ):
    self._source = source
    self._others = split_index.others
    self._window = window
    self._image_size = image_size
    self._preemphasis = preemphasis
    self._random_window = random_window
    self._floor_division = floor_division

  def make(self, element, rng: np.random.Generator) -> dict[str, np.ndarray]:
    speaker = int(element["speaker"])
    waveform = audio.preprocess(
        element["waveform"],
        window=self._window,
        preemphasis=self._preemphasis,
        rng=rng if self._random_window else None,
        floor_division=self._floor_division,
    )
    others = self._others[speaker]
    wrong = self._source[int(others[rng.integers(others.shape[0])])]
    return {
        "waveform": waveform,
        "face": decode_face(element["face"], self._image_size),
        "wrong_face": decode_face(wrong["face"], self._image_size),
        "speaker": np.int32(speaker),
    }


class _MakeTrainExample(_ExampleMaker, grain.transforms.RandomMap):
  """Random window and wrong face from grain's per-record rng (a function of seed and position)."""

  def random_map(self, element, rng: np.random.Generator):
    return self.make(element, rng)


_KEY = "_record_key"


class _MakeEvalExample(_ExampleMaker, grain.transforms.Map):
  """Centred window; the wrong face depends only on (seed, record key), not on the sharding."""

  def __init__(self, *, seed: int, **kwargs):
    super().__init__(random_window=False, **kwargs)
    self._seed = seed

  def map(self, element):
    key = element.pop(_KEY)
    example = self.make(element, np.random.default_rng([self._seed, key]))
    example["mask"] = np.bool_(True)
    return example


class _RecordRange:
  """Records [start, stop) of a data source, each tagged with its key (a grain data source)."""

  def __init__(self, source, start: int, stop: int):
    self._source, self._start, self._stop = source, start, stop

  def __len__(self) -> int:
    return self._stop - self._start

  def __getitem__(self, index: int):
    key = self._start + int(index)
    return {**self._source[key], _KEY: key}


# ---------------------------------------------------------------------------------------------
# Iterators.


def _check_positive(**values) -> None:
  """Positive integer arguments; the error names the argument."""
  for key in values:
    config_lib.positive_int(values, key, prefix="")


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top

    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}")
  return process_index, process_count


def _fix_absl_flags_for_workers() -> None:
  """grain worker processes read absl flags; outside absl.app.run they are not parsed yet."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _num_workers(input_cfg) -> int:
  workers = config_lib.at_least({"input": input_cfg}, "input.num_workers", 0)
  if workers:
    _fix_absl_flags_for_workers()
  return int(workers)


def create_train_iterator(
    input_cfg,
    *,
    batch_size: int,
    image_size: int,
    seed: int | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    num_epochs: int | None = None,
) -> grain.DataLoaderIterator:
  """Endless (or `num_epochs`) shuffled training batches of this process's shard; checkpointable.

  `seed` (default `input_cfg.shuffle_seed`) fixes the order (reshuffled every epoch), the audio
  windows and the wrong faces. Partial batches are dropped; so are the few records a shard split
  would leave uneven (every process gets the same number of records).
  """
  _check_positive(batch_size=batch_size, image_size=image_size)
  process_index, process_count = _process(process_index, process_count)
  seed = _train_seed(input_cfg, seed)
  window = input_cfg.audio_samples
  config_lib.positive_int({"input": input_cfg}, "input.audio_samples")
  split = input_cfg.train_split
  source, records, split_index = _train_records(input_cfg, split, window)
  shard_size = len(records) // process_count
  if shard_size < batch_size:
    raise config_lib.ConfigError(
        f"split {split!r} has {len(records)} records: {shard_size} per process "
        f"({process_count} processes), fewer than the per-process batch_size={batch_size}"
    )
  shard_options = grain.sharding.ShardOptions(
      shard_index=process_index, shard_count=process_count, drop_remainder=True
  )
  sampler = grain.samplers.IndexSampler(
      num_records=len(records),
      shard_options=shard_options,
      shuffle=True,
      num_epochs=num_epochs,
      seed=int(seed),
  )
  loader = grain.DataLoader(
      data_source=records,
      sampler=sampler,
      shard_options=shard_options,
      operations=[
          _MakeTrainExample(
              source=source,
              split_index=split_index,
              window=window,
              image_size=image_size,
              preemphasis=input_cfg.preemphasis,
              random_window=True,
              floor_division=bool(input_cfg.floor_division),
          ),
          grain.transforms.Batch(batch_size=batch_size, drop_remainder=True),
      ],
      worker_count=_num_workers(input_cfg),
      read_options=grain.ReadOptions(**_READ_OPTIONS),
  )
  return iter(loader)


def _train_seed(input_cfg, seed) -> int:
  """`seed`, or input.shuffle_seed where None; ConfigError unless an integer in [0, 2**32)."""
  if seed is None:
    return config_lib.at_least(
        {"input": input_cfg}, "input.shuffle_seed", 0, below=config_lib.SEED_LIMIT
    )
  return config_lib.at_least({"seed": seed}, "seed", 0, below=config_lib.SEED_LIMIT, prefix="")


def _train_records(input_cfg, split: str, window: int):
  """(the split's source, the records to train on, the split's index of usable windows).

  The records are the whole source, or with input.windows_per_face > 0 each face's first windows.
  """
  source = data_source(input_cfg, split)
  info = get_dataset_info(input_cfg)
  split_index = _scan_split(info.name, info.data_dir, split, window)
  records = source
  windows_per_face = config_lib.at_least({"input": input_cfg}, "input.windows_per_face", 0)
  if windows_per_face:
    records = _RecordSubset(
        source, _first_windows(info.name, info.data_dir, split, windows_per_face)
    )
  return source, records, split_index


def create_eval_iterator(
    input_cfg,
    *,
    split: str | None = None,
    batch_size: int,
    image_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
    max_examples: int | None = None,
    seed: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
  """One pass over `split` (default `input_cfg.eval_split`), centred windows, in record order.

  Every batch has exactly `batch_size` rows and a "mask" [B] (False on padding): the last partial
  batch is padded with copies of its first row, and every process yields the same number of
  batches (padding-only batches where its shard is shorter), so pmapped eval steps stay in step
  across processes. Sum metrics over mask == True. Wrong faces are deterministic given `seed`.
  """
  _check_positive(batch_size=batch_size, image_size=image_size)
  process_index, process_count = _process(process_index, process_count)
  split = split or input_cfg.eval_split
  window = input_cfg.audio_samples
  config_lib.positive_int({"input": input_cfg}, "input.audio_samples")
  source = data_source(input_cfg, split)
  info = get_dataset_info(input_cfg)
  split_index = _scan_split(info.name, info.data_dir, split, window)
  num_records = len(source)
  if max_examples is not None:
    _check_positive(max_examples=max_examples)
    num_records = min(num_records, max_examples)
  # Our own even split (the first num_records % process_count shards get one more record): grain's
  # DataLoader sharding drops the remainder even with drop_remainder=False.
  bounds = [num_records * i // process_count for i in range(process_count + 1)]
  shard = _RecordRange(source, bounds[process_index], bounds[process_index + 1])
  sampler = grain.samplers.IndexSampler(
      num_records=len(shard), shard_options=grain.sharding.NoSharding(), shuffle=False, num_epochs=1
  )
  loader = grain.DataLoader(
      data_source=shard,
      sampler=sampler,
      shard_options=grain.sharding.NoSharding(),
      operations=[
          _MakeEvalExample(
              source=source,
              split_index=split_index,
              window=window,
              image_size=image_size,
              preemphasis=input_cfg.preemphasis,
              seed=seed,
              floor_division=bool(input_cfg.floor_division),
          ),
          grain.transforms.Batch(batch_size=batch_size, drop_remainder=False),
      ],
      worker_count=_num_workers(input_cfg),
      read_options=grain.ReadOptions(**_READ_OPTIONS),
  )
  largest_shard = max(b - a for a, b in zip(bounds, bounds[1:]))
  return _pad_batches(
      iter(loader), batch_size=batch_size, num_batches=-(-largest_shard // batch_size)
  )


def _pad_batches(batches, *, batch_size: int, num_batches: int) -> Iterator[dict[str, np.ndarray]]:
  """Pads the last batch to `batch_size` rows, then adds all-padding batches up to `num_batches`."""
  produced, template = 0, None
  for batch in batches:
    rows = batch["mask"].shape[0]
    if rows < batch_size:
      batch = {
          key: np.concatenate([value, np.repeat(value[:1], batch_size - rows, axis=0)])
          for key, value in batch.items()
      }
      batch["mask"][rows:] = False
    produced, template = produced + 1, batch
    yield batch
  if template is None and num_batches:
    raise config_lib.ConfigError(
        "this process's eval shard is empty, so there is no example to pad with: "
        "use fewer processes or a larger split"
    )
  for _ in range(num_batches - produced):
    yield {**template, "mask": np.zeros(batch_size, bool)}
