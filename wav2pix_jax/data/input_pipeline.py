"""Input pipeline: TFDS ArrayRecord datasets -> grain -> host-local numpy batches (DESIGN.md).

Batches are dicts of numpy arrays with this process's batch size B as leading axis:

    "waveform":   float32 [B, T]        `audio.preprocess`ed window (random in training, centred
                                        in eval)
    "face":       float32 [B, S, S, 3]  in [-1, 1] (PIL, antialiased Lanczos resize)
    "wrong_face": float32 [B, S, S, 3]  a real face of a DIFFERENT speaker, in [-1, 1]
    "speaker":    int32   [B]
    "mask":       bool    [B]           eval batches only: False marks padding rows

Datasets are found by TFDS name in `input.data_dir`, and prepared there (ArrayRecord) from
`input.manual_dir` on first use (datasets.py). Each process reads a disjoint shard of the records.

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

import io
from typing import Iterator

import grain
import numpy as np
from PIL import Image

from wav2pix_jax.data import audio
from wav2pix_jax.data import datasets
from wav2pix_jax import config_lib

_READ_OPTIONS = dict(num_threads=8, prefetch_buffer_size=128)

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
      split_index: datasets.SplitIndex,
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
  source = datasets.data_source(input_cfg, split)
  info = datasets.get_dataset_info(input_cfg)
  split_index = datasets.scan_split(info.name, info.data_dir, split, window)
  records = source
  windows_per_face = config_lib.at_least({"input": input_cfg}, "input.windows_per_face", 0)
  if windows_per_face:
    records = datasets.RecordSubset(
        source, datasets.first_windows(info.name, info.data_dir, split, windows_per_face)
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
  source = datasets.data_source(input_cfg, split)
  info = datasets.get_dataset_info(input_cfg)
  split_index = datasets.scan_split(info.name, info.data_dir, split, window)
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
