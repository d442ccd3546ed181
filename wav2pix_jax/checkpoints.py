"""Orbax checkpoints under <workdir>/checkpoints: train state + input-pipeline state + run metadata;
the best checkpoint by periodic validation under <workdir>/best (with best/best.json). The one
module that opens Orbax, lists a directory's steps and picks the step to load.

Each step directory holds three items:
  "state": the (unreplicated) TrainState, StandardSave / StandardRestore;
  "data":  the grain iterator's state (grain.checkpoint.CheckpointSave/Restore, one file per
           process);
  "meta":  JSON: the config, num_speakers and speaker names (to refuse an incompatible resume).
Orbax writes each step into a temporary directory and renames it when complete, so a
half-written checkpoint (a crash mid-save) is never listed as a step nor picked up for resume.
No pickle anywhere.

<workdir>/best/ (training's config.eval.best_metric) holds "state" and "meta" (the meta adds
"best": the record below) of the best periodic evaluation so far; best.json is a readable copy of
that record, written after the Orbax save is complete: {"step", "metric", "value", "scalars" (the
ones compared), "train_minutes"}.
"""

import errno
import json
import os
import pathlib
import re
from typing import Any, Iterable, Mapping, Optional

import grain
import grain.checkpoint  # noqa: F401  (registers grain's Orbax args)
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from wav2pix_jax import config_lib

PyTree = Any

# Config fields that fix the shapes of the state: a resume with different values can't work.
SHAPE_FIELDS = (
    "model.image_size",
    "model.embed_dim",
    "model.encoder_channels",
    "model.encoder_kernel_size",
    "model.encoder_stride",
    "model.encoder_hidden",
    "model.classifier_hidden",
    "model.g_base_channels",
    "model.d_base_channels",
    "model.param_dtype",
    "input.audio_samples",
    "model.g_upsample",
    "model.d_joint_channels",
    "model.d_conditioning",
    "model.d_score_sn",
)
# Fields that change the state's structure through a derived property only (EMA or LeCam's running
# means kept or not).
STRUCTURE_FIELDS = {
    "optim.g.ema_decay": lambda value: "on" if (value or 0) > 0 else "off",
    "loss.lecam": lambda value: "on" if (value or 0) > 0 else "off",
}

ITEMS = ("state", "data", "meta")
BEST = "best"  # <workdir>/best: the best checkpoint by periodic validation
BEST_RECORD = "best.json"  # <workdir>/best/best.json


def checkpoint_dir(workdir: str) -> str:
  """Where the checkpoints of a workdir live."""
  return os.path.join(os.path.abspath(os.path.expanduser(workdir)), "checkpoints")


def best_dir(workdir: str | os.PathLike) -> str:
  """Where the best checkpoint of a workdir lives (config.eval.best_metric)."""
  return os.path.join(os.path.abspath(os.path.expanduser(str(workdir))), BEST)


def list_steps(directory: str | os.PathLike) -> list[int]:
  """The complete steps of a checkpoint directory, oldest first ([] when it doesn't exist).

  Orbax names a step's folder with its number only once the step is complete (the temporary
  folder of a half-written one is "<step>.orbax-checkpoint-tmp-..."), so none of these is partial.
  """
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir())


def locate(
    path: str | os.PathLike,
) -> tuple[pathlib.Path, Optional[pathlib.Path], Optional[int]]:
  """(checkpoint dir, workdir or None, step fixed by the path or None) for a workdir, its
  checkpoints/ or best/ dir, or one step's dir; FileNotFoundError / ConfigError otherwise."""
  path = pathlib.Path(path).expanduser().absolute()
  if not path.exists():
    raise FileNotFoundError(f"{path}: no such workdir or checkpoint directory")
  if not path.is_dir():
    raise config_lib.ConfigError(
        f"{path}: expected a workdir or a checkpoint directory, got a file"
    )
  if (path / "checkpoints").is_dir():
    return path / "checkpoints", path, None
  if path.name.isdigit() and (path / "state").is_dir():  # one step: <workdir>/checkpoints/<step>
    ckpt_dir = path.parent
    workdir = ckpt_dir.parent if ckpt_dir.name in ("checkpoints", BEST) else None
    return ckpt_dir, workdir, int(path.name)
  if list_steps(path):
    return path, path.parent if path.name in ("checkpoints", BEST) else None, None
  raise config_lib.ConfigError(
      f"{path}: neither a workdir (with checkpoints/) nor a checkpoint directory "
      "(with numbered step folders); has training saved a checkpoint yet?"
  )


def pick_step(
    directory: str | os.PathLike, step: Optional[int] = None, path_step: Optional[int] = None
) -> int:
  """The step to load from `directory`: `step`, the path's, or the newest complete one
  (ConfigError when there is none, or when `step` isn't there or contradicts the path)."""
  steps = list_steps(directory)
  if not steps:
    raise config_lib.ConfigError(f"{directory}: no complete checkpoint yet")
  if step is None:
    step = path_step if path_step is not None else steps[-1]
  elif path_step is not None and step != path_step:
    raise config_lib.ConfigError(
        f"step={step} contradicts the checkpoint path, which names step {path_step}"
    )
  if step not in steps:
    raise config_lib.ConfigError(
        f"{directory}: no checkpoint for step {step}; available steps: {steps}"
    )
  return step


def open_directory(directory: str | os.PathLike) -> ocp.CheckpointManager:
  """A manager to read an existing checkpoint directory (nothing created, nothing deleted)."""
  return ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(create=False), item_names=ITEMS
  )


def create_best_manager(workdir: str) -> ocp.CheckpointManager:
  """A manager for <workdir>/best that deletes nothing itself (`keep_only` does, once best.json
  names the new best: a crash at any moment leaves one complete best checkpoint)."""
  options = ocp.CheckpointManagerOptions(create=True, cleanup_tmp_directories=True)
  return ocp.CheckpointManager(best_dir(workdir), options=options, item_names=ITEMS)


def keep_only(manager: ocp.CheckpointManager, step: int) -> None:
  """Deletes every step of `manager`'s directory but `step`."""
  manager.reload()
  for other in manager.all_steps():
    if other != step:
      manager.delete(other)


def write_best_record(workdir: str, record: Mapping) -> str:
  """<workdir>/best/best.json (a temporary file renamed: never half-written)."""
  path = os.path.join(best_dir(workdir), BEST_RECORD)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(_jsonable(dict(record)), f, indent=2)
  os.replace(tmp, path)
  return path


def read_best(workdir: str | os.PathLike) -> Optional[dict]:
  """The record of <workdir>/best's checkpoint ({"step", "metric", "value", "scalars",
  "train_minutes"}), or None when there is no complete best checkpoint.

  best.json names the step; when it is missing, unreadable or names a step no longer there (a
  crash between the Orbax save and best.json), the record saved with the newest step is used.
  """
  directory = best_dir(workdir)
  steps = list_steps(directory)
  if not steps:
    return None
  try:
    with open(os.path.join(directory, BEST_RECORD)) as f:
      record = json.load(f)
    if isinstance(record, dict) and record.get("step") in steps:
      return record
  except (OSError, ValueError):
    pass
  try:
    record = load_meta(open_directory(directory), steps[-1]).get(BEST)
  except ValueError:
    record = None
  return dict(record) if isinstance(record, Mapping) else {"step": steps[-1]}


def create_manager(workdir: str, *, max_to_keep: int, create: bool = True) -> ocp.CheckpointManager:
  """A CheckpointManager for <workdir>/checkpoints keeping the `max_to_keep` latest steps."""
  if not isinstance(max_to_keep, int) or max_to_keep < 1:
    raise config_lib.ConfigError(
        f"config.log.max_checkpoints must be a positive integer, got {max_to_keep!r}"
    )
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=create, cleanup_tmp_directories=True
  )
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_names=ITEMS)


class _IteratorStateSnapshot:
  """Presents a recorded grain iterator state to grain's checkpoint handler.

  The device prefetcher draws batches ahead of training; the state to store is the one right
  after the last batch TRAINED on, recorded by the prefetcher, not the live iterator's state.
  grain's handler writes `get_state().decode()` for anything that isn't a grain DatasetIterator;
  its restore into a real DatasetIterator json-decodes the same text, so dict states go as JSON.
  """

  def __init__(self, state: Any):
    self._state = state

  def get_state(self) -> bytes:
    if isinstance(self._state, bytes):
      return self._state
    return json.dumps(self._state, indent=4).encode()


def _jsonable(value: Any) -> Any:
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (np.floating,)):
    return float(value)
  return value


def make_meta(
    config: ml_collections.ConfigDict,
    *,
    num_speakers: int,
    speaker_names: Optional[Iterable[str]] = None,
) -> dict:
  """The JSON metadata stored beside each checkpoint (and as workdir/config.json)."""
  return {
      "config": _jsonable(config.to_dict()),
      "num_speakers": int(num_speakers),
      "speaker_names": list(speaker_names) if speaker_names is not None else None,
  }


def save(
    manager: ocp.CheckpointManager,
    step: int,
    *,
    state: PyTree,
    data_state: Any,
    meta: dict,
    force: bool = True,
) -> bool:
  """Saves host (numpy) `state`, the recorded input-pipeline state and `meta` (async)."""
  items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
  if data_state is not None:
    items["data"] = grain.checkpoint.CheckpointSave(_IteratorStateSnapshot(data_state))
  return manager.save(int(step), args=ocp.args.Composite(**items), force=force)


def disk_full_error(error: BaseException, directory: str, step: Optional[int]) -> Optional[OSError]:
  """A clear OSError(ENOSPC) if `error` is the disk filling up in a save.

  `error`, or what it was raised from. Orbax raises a failed write of an async save from a later
  save, wait or close, wrapped or not; the failing file's name, if it is inside a step's temporary
  directory, gives the step.
  """
  seen, e = set(), error
  while e is not None and id(e) not in seen:
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
      break
    seen.add(id(e))
    e = e.__cause__ or e.__context__
  else:
    return None
  where = str(e.filename or "")
  match = re.search(r"(?:^|/)(\d+)\.orbax-checkpoint-tmp", where)
  if match:
    step = int(match.group(1))
  complete = list_steps(directory)
  latest = f"step {complete[-1]}" if complete else "none"
  return OSError(
      errno.ENOSPC,
      f"disk full: no space left on the device while writing the checkpoint of step {step} "
      f"in {directory}{f' ({where})' if where else ''}. The complete checkpoints there "
      f"(latest: {latest}) are intact and the half-written one is never used: free some "
      f"space (or lower config.log.max_checkpoints) and re-run the same command to resume.",
  )


def latest_step(manager: ocp.CheckpointManager) -> Optional[int]:
  """The newest COMPLETE checkpoint step, or None (temporary half-written dirs are ignored)."""
  manager.reload()
  return manager.latest_step()


def load_meta(manager: ocp.CheckpointManager, step: int) -> dict:
  """The JSON metadata of a checkpoint step."""
  return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def _abstract(tree: PyTree) -> PyTree:
  """ShapeDtypeStructs placed on the first local device (restore target, nothing allocated)."""
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding), tree)


def restore(
    manager: ocp.CheckpointManager, step: int, *, abstract_state: PyTree, data_iterator: Any = None
) -> PyTree:
  """Restores the state into `abstract_state`'s structure; sets `data_iterator`'s state in place.

  A checkpoint written before a state field existed restores when this run leaves that field None
  (e.g. TrainState.d_score_ema, None unless loss.lecam > 0): every array must still be there.
  """
  target = _abstract(abstract_state)
  items = {}
  has_data = os.path.isdir(os.path.join(str(manager.directory), str(step), "data"))
  if data_iterator is not None and has_data:
    items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
  try:
    state_args = ocp.args.StandardRestore(target)
    return manager.restore(step, args=ocp.args.Composite(state=state_args, **items))["state"]
  except ValueError as e:
    if "tree structures do not match" not in str(e):
      raise
    mismatch = e
  # The saved tree lacks fields of this run's state: read what it has (a partial restore), then
  # require every array of this run's state to have been read.
  path = os.path.join(str(manager.directory), str(step), "state")
  with ocp.PyTreeCheckpointer() as checkpointer:
    state = checkpointer.restore(
        path, args=ocp.args.PyTreeRestore(item=target, partial_restore=True)
    )
  read = jax.tree.leaves(state)
  if jax.tree.structure(state) != jax.tree.structure(target) or any(
      isinstance(x, jax.ShapeDtypeStruct) for x in read
  ):
    raise ValueError(
        f"checkpoint step {step} lacks arrays this run's state needs (saved with another "
        f"configuration?): {mismatch}"
    ) from mismatch
  if items:
    manager.restore(step, args=ocp.args.Composite(**items))
  return state


def restore_partial(manager: ocp.CheckpointManager, step: int, target: PyTree) -> PyTree:
  """The entries of `target` (abstract arrays) read from step's saved state; the rest of the state
  (the discriminator, optimizer states) is never read."""
  return manager.restore(
      step,
      args=ocp.args.Composite(state=ocp.args.PyTreeRestore(item=target, partial_restore=True)),
  )["state"]


def _get(config_dict: Mapping, dotted: str) -> Any:
  value: Any = config_dict
  for key in dotted.split("."):
    if not isinstance(value, Mapping) or key not in value:
      return None
    value = value[key]
  return value


def _normalise(value: Any) -> Any:
  if isinstance(value, (list, tuple)):
    return [_normalise(v) for v in value]
  return value


def shape_differences(saved: Mapping, current: Mapping, *, label: str = "config") -> list[str]:
  """ "<field>: checkpoint <value> vs <label> <value>" for each SHAPE_FIELDS / STRUCTURE_FIELDS
  field where a checkpoint's saved config and `current` (plain dicts) disagree."""
  # Both on top of base.py's defaults: a field added since the checkpoint was written takes the
  # default, which is the behaviour it was trained with.
  saved = config_lib.with_defaults(dict(saved)).to_dict()
  current = config_lib.with_defaults(dict(current)).to_dict()
  differences = []
  for field in SHAPE_FIELDS + tuple(STRUCTURE_FIELDS):
    old_value, new_value = _get(saved, field), _get(current, field)
    if field in STRUCTURE_FIELDS:
      old_value, new_value = STRUCTURE_FIELDS[field](old_value), STRUCTURE_FIELDS[field](new_value)
    if _normalise(old_value) != _normalise(new_value):
      differences.append(f"{field}: checkpoint {old_value!r} vs {label} {new_value!r}")
  return differences


def check_compatible(
    meta: Mapping, config: ml_collections.ConfigDict, *, num_speakers: int, where: str = ""
) -> None:
  """Raises ConfigError naming every field whose value would change the state's shapes."""
  differences = shape_differences(
      meta.get("config", {}), make_meta(config, num_speakers=num_speakers)["config"]
  )
  if meta.get("num_speakers") != num_speakers:
    differences.append(
        f"num_speakers (from the dataset): checkpoint {meta.get('num_speakers')!r} "
        f"vs dataset {num_speakers!r}"
    )
  if differences:
    raise config_lib.ConfigError(
        f"refusing to resume from the checkpoint{(' in ' + where) if where else ''}: the config "
        f"changes the shapes of the saved state ({'; '.join(differences)}). Use a new --workdir "
        f"or the checkpoint's values."
    )
