"""Every pmap / replicate / unreplicate / shard detail, and the multi-process start-up.

All here, so a move to jit + shardings touches one file.
"""

import collections
import os
import threading
from typing import Any, Callable, Iterable, Iterator, Optional

from absl import logging
import jax
import ml_collections
import numpy as np

from wav2pix_jax import config_lib

AXIS_NAME = "batch"  # the pmap axis: gradients and BatchNorm statistics are averaged over it

PyTree = Any


def _mesh(devices=None) -> jax.sharding.Mesh:
  devices = list(devices) if devices is not None else jax.local_devices()
  return jax.sharding.Mesh(np.array(devices), (AXIS_NAME,))


def check_batch_size(
    global_batch: int,
    *,
    process_count: Optional[int] = None,
    local_device_count: Optional[int] = None,
) -> int:
  """Returns the per-process batch size; raises a clear error naming `batch_size` if it can't split.

  The global batch is split evenly over processes, then over each process's local devices.
  """
  process_count = jax.process_count() if process_count is None else process_count
  local_device_count = (
      jax.local_device_count() if local_device_count is None else local_device_count
  )
  config_lib.positive_int({"batch_size": global_batch}, "batch_size")
  if global_batch % process_count:
    raise config_lib.ConfigError(
        f"config.batch_size={global_batch} is not divisible by the number of processes "
        f"({process_count}); choose a multiple of {process_count * local_device_count}."
    )
  per_process = global_batch // process_count
  if per_process % local_device_count:
    raise config_lib.ConfigError(
        f"config.batch_size={global_batch} gives {per_process} examples per process, which is not "
        f"divisible by the {local_device_count} local devices; choose a multiple of "
        f"{process_count * local_device_count}."
    )
  return per_process


def replicate(tree: PyTree, devices=None) -> PyTree:
  """Copies every leaf onto each local device: leaves get a leading [local_devices] axis."""
  mesh = _mesh(devices)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(AXIS_NAME))
  n = mesh.devices.size

  def put(x):
    x = np.asarray(jax.device_get(x))
    return jax.device_put(np.broadcast_to(x[None], (n,) + x.shape), sharding)

  return jax.tree.map(put, tree)


def unreplicate(tree: PyTree) -> PyTree:
  """The first device's copy of a replicated pytree (still on device)."""

  def first(x):
    if isinstance(x, jax.Array) and len(x.addressable_shards) > 1:
      shard = x.addressable_shards[0].data
      return shard[0] if shard.ndim == x.ndim else shard
    return x[0]

  return jax.tree.map(first, tree)


def unreplicate_to_host(tree: PyTree) -> PyTree:
  """The first device's copy of a replicated pytree as numpy arrays (what checkpoints store)."""
  return jax.device_get(unreplicate(tree))


def chief_decides(decision: bool) -> bool:
  """Process 0's `decision`, on every process (a collective: every process calls it at the same
  point); the value itself where there is one process."""
  if jax.process_count() == 1:
    return bool(decision)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  return bool(multihost_utils.broadcast_one_to_all(np.int32(bool(decision))))


def shard(batch: PyTree, num_devices: Optional[int] = None) -> PyTree:
  """Reshapes host-local [B, ...] leaves to [local_devices, B / local_devices, ...].

  Numpy, no copy.
  """
  n = jax.local_device_count() if num_devices is None else num_devices

  def split(x):
    x = np.asarray(x)
    if x.shape[0] % n:
      raise ValueError(
          f"a host batch of {x.shape[0]} can't be split over {n} local devices; "
          f"config.batch_size must be a multiple of the device count"
      )
    return x.reshape((n, x.shape[0] // n) + x.shape[1:])

  return jax.tree.map(split, batch)


def put_sharded(batch: PyTree, devices=None) -> PyTree:
  """Moves a `shard`ed batch onto the local devices, one slice of the leading axis per device."""
  sharding = jax.sharding.NamedSharding(_mesh(devices), jax.sharding.PartitionSpec(AXIS_NAME))
  return jax.tree.map(lambda x: jax.device_put(x, sharding), batch)


def pmap(fn: Callable, *, donate_state: bool = True, **kwargs) -> Callable:
  """`jax.pmap` over AXIS_NAME; by default donates argument 0 (the train state)."""
  if donate_state:
    kwargs.setdefault("donate_argnums", (0,))
  return jax.pmap(fn, axis_name=AXIS_NAME, **kwargs)


def pmean(tree: PyTree, axis_name: Optional[str]) -> PyTree:
  """lax.pmean over `axis_name`, or the identity when not running under pmap (axis_name None)."""
  return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def device_rng(rng: jax.Array, axis_name: Optional[str]) -> jax.Array:
  """A different rng per device (folds in the device index) so dropout masks don't repeat."""
  return rng if axis_name is None else jax.random.fold_in(rng, jax.lax.axis_index(axis_name))


class DevicePrefetcher(Iterator[PyTree]):
  """Shards host batches and puts them on the local devices `size` steps ahead, in a thread.

  `get_state` (e.g. a grain iterator's `get_state`) is called right after each host batch is
  drawn, so `last_state` is the input pipeline's state just after the batch most recently
  returned by `next()`, NOT after the ones still waiting in the queue: what a checkpoint must store.
  """

  def __init__(
      self,
      iterator: Iterable[PyTree],
      size: int = 2,
      get_state: Optional[Callable[[], Any]] = None,
      devices=None,
  ):
    if size < 1:
      raise ValueError(f"prefetch size must be >= 1, got {size}")
    self._iterator = iter(iterator)
    self._get_state = get_state
    self._devices = devices
    self._queue: collections.deque = collections.deque()
    self._ready = threading.Semaphore(0)
    self._free = threading.Semaphore(size)
    self._stop = threading.Event()
    self.last_state = get_state() if get_state is not None else None
    self._thread = threading.Thread(target=self._fill, daemon=True, name="device-prefetch")
    self._thread.start()

  def _fill(self):
    try:
      while not self._stop.is_set():
        self._free.acquire()
        if self._stop.is_set():
          return
        try:
          batch = next(self._iterator)
        except StopIteration:
          self._queue.append(("stop", None, None))
          self._ready.release()
          return
        state = self._get_state() if self._get_state is not None else None
        device_batch = put_sharded(
            shard(batch, len(self._devices) if self._devices else None), self._devices
        )
        self._queue.append(("batch", device_batch, state))
        self._ready.release()
    except BaseException as e:  # pylint: disable=broad-except
      self._queue.append(("error", e, None))
      self._ready.release()

  def __next__(self) -> PyTree:
    self._ready.acquire()
    kind, value, state = self._queue.popleft()
    if kind == "stop":
      self._queue.appendleft((kind, value, state))
      self._ready.release()
      raise StopIteration
    if kind == "error":
      self._queue.appendleft((kind, value, state))
      self._ready.release()
      raise RuntimeError("the input pipeline failed while prefetching") from value
    self.last_state = state
    self._free.release()
    return value

  def close(self):
    """Stops the background thread after the batch it is drawing (if any)."""
    self._stop.set()
    self._free.release()
    self._thread.join(timeout=10)


def prefetch_to_device(iterator: Iterable[PyTree], size: int = 2, **kwargs) -> DevicePrefetcher:
  """Shards + device-puts host batches ahead of time; see DevicePrefetcher."""
  return DevicePrefetcher(iterator, size, **kwargs)


# ------------------------------------------------------------------------------------------
# Multi-process start-up.
# ------------------------------------------------------------------------------------------


def distributed_args(config: ml_collections.ConfigDict) -> dict:
  """The explicit `jax.distributed.initialize` arguments of `config` ({} = auto-detect).

  Raises:
    ConfigError: some but not all of coordinator_address / num_processes / process_id are set, or
      they are out of range.
  """
  return config_lib.launch_args(config)  # the rule lives in the one config schema


def _backend_will_be_cpu() -> bool:
  """Whether JAX will run on the CPU, decided without initialising a backend (which would make
  jax.distributed.initialize() fail): JAX_PLATFORMS, else no accelerator plugin installed."""
  platforms = jax.config.jax_platforms or os.environ.get("JAX_PLATFORMS", "")
  if platforms:
    return platforms.split(",")[0].strip().lower() == "cpu"
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  import importlib.util  # pylint: disable=g-import-not-at-top

  if importlib.util.find_spec("libtpu") is not None:
    return False
  if importlib.util.find_spec("jax_plugins") is not None:  # jax[cuda*] / jax[rocm] plugins
    return False
  return not list(importlib.metadata.entry_points(group="jax_plugins"))


def maybe_initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """jax.distributed.initialize() when config.distributed is set (or JAX_COORDINATOR_ADDRESS is).

  With config.coordinator_address / num_processes / process_id set (all three) they are passed
  on; otherwise initialize() auto-detects SLURM / Open MPI / Cloud TPU clusters. Call it before
  the first device query.
  """
  args = distributed_args(config)  # validated even when distributed is off: a typo fails fast
  multi_host_env = bool(os.environ.get("JAX_COORDINATOR_ADDRESS"))
  if not (config.distributed or multi_host_env) or jax.distributed.is_initialized():
    if args and not config.distributed:
      raise config_lib.ConfigError(
          "--config.coordinator_address / num_processes / process_id are set but "
          "--config.distributed is False; add --config.distributed=True"
      )
    return
  if _backend_will_be_cpu():  # cross-process collectives on CPU need an implementation
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  logging.info(
      "jax.distributed.initialize(%s)",
      ", ".join(f"{k}={v!r}" for k, v in args.items()) or "auto-detect",
  )
  jax.distributed.initialize(**args)
