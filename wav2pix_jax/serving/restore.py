"""What a trained workdir holds for serving: which checkpoint to load and why, its config and
metadata, and the generator side of its Orbax state.

    choice = restore.choose_checkpoint("workdirs/base")   # the best, else the latest; .source: why
    config, num_speakers, speaker_names, restored = restore.read_generator(choice, use_ema=True)

`inference.load` builds its FaceGenerator from these; the web demo lists a workdir's steps with
`checkpoint_steps`. Orbax itself is checkpoints.py's (locate, list, pick, open, partial restore);
a workdir's config is read over base.py's defaults and checked enough to build the generator. A
user's error (a missing step, a config.json that does not match the saved arrays) is a
ConfigError naming the path.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import ml_collections

from wav2pix_jax import checkpoints
from wav2pix_jax import config_lib
from wav2pix_jax.models import factory


def _config_and_meta(manager, ckpt_dir: pathlib.Path, workdir: pathlib.Path | None, step: int):
  """(config, num_speakers, speaker names or None) of checkpoint `step` (ConfigError)."""
  try:
    meta = checkpoints.load_meta(manager, step)
  except ValueError as e:  # not JSON, not UTF-8 (a pickle, say): never anything else
    raise config_lib.ConfigError(
        f"{ckpt_dir}: the metadata of checkpoint step {step} is not valid JSON ({e})"
    ) from None
  config_path = workdir / "config.json" if workdir is not None else None
  if config_path is not None and config_path.is_file():
    try:
      raw = json.loads(config_path.read_bytes().decode("utf-8"))
    except ValueError as e:
      raise config_lib.ConfigError(f"{config_path} is not valid JSON ({e})") from None
    config = _parse_config(raw, config_path)
    # A hand-edited config.json must still describe the saved arrays: say which field differs
    # (rather than let the restore fail on parameter shapes).
    differences = (
        checkpoints.shape_differences(meta["config"], raw, label="config.json")
        if isinstance(meta.get("config"), dict)
        else []
    )
    if differences:
      raise config_lib.ConfigError(
          f"{config_path} does not match checkpoint step {step} ({'; '.join(differences)}): "
          "restore the checkpoint's values, or remove config.json to use the config saved with "
          "the checkpoint"
      )
  elif meta.get("config"):
    config = _parse_config(meta["config"], f"the config saved with {ckpt_dir}/{step}")
  else:
    raise config_lib.ConfigError(
        f"{ckpt_dir}: no config.json in the workdir and no config stored with step {step}"
    )
  num_speakers = meta.get("num_speakers")
  names = meta.get("speaker_names")
  if num_speakers is None and workdir is not None and (workdir / "dataset.json").is_file():
    dataset = json.loads((workdir / "dataset.json").read_text())
    num_speakers, names = dataset["num_speakers"], dataset.get("speaker_names")
  if num_speakers is None:
    raise config_lib.ConfigError(f"{ckpt_dir}: step {step} does not record num_speakers")
  return config, int(num_speakers), tuple(names) if names else None


def _parse_config(raw, source) -> ml_collections.ConfigDict:
  """A saved config over base.py's defaults, checked enough to build the generator from it."""
  try:
    config = config_lib.with_defaults(raw)
    factory.check_model_config(config.model)
  except (AttributeError, KeyError, TypeError) as e:
    # A hand-edited config.json: a list, a missing section, a key like "__reduce__", a wrong type.
    raise config_lib.ConfigError(
        f"{source} does not describe a model ({type(e).__name__}: {e})"
    ) from None
  return config


CHECKPOINT_CHOICES = ("best", "latest")  # load(checkpoint=...), the tools' --checkpoint


@dataclasses.dataclass(frozen=True)
class Choice:
  """The checkpoint `load` reads: its Orbax directory, step and why (`choose_checkpoint`)."""

  directory: pathlib.Path  # <workdir>/checkpoints or <workdir>/best (or a bare checkpoint dir)
  workdir: pathlib.Path | None
  step: int
  which: str  # "best", "latest" or "step" (asked for, by step= or the path)
  source: str  # one line: which step and why


def _describe(record: dict) -> str:
  """ "identity 100.0%, FD 0.104" from a best checkpoint's record (what it was chosen on)."""
  parts = []
  for key, value in (record.get("scalars") or {}).items():
    name = key.rsplit("/", 1)[-1]
    if name in ("identity", "pixel_identity"):
      parts.append(f"{name.replace('_', ' ')} {float(value):.1%}")
    elif name == "frechet_distance":
      parts.append(f"FD {float(value):.3f}")
  return ", ".join(parts) or f"{record.get('metric', 'periodic validation')}"


def choose_checkpoint(
    workdir_or_checkpoint_dir: str | os.PathLike,
    step: int | None = None,
    *,
    checkpoint: str = "best",
) -> Choice:
  """The checkpoint `load` reads, and why.

  An explicit `step` (or a path naming one step) wins; else checkpoint="best" picks the best
  checkpoint by periodic validation (<workdir>/best, kept by training's config.eval.best_metric)
  where the workdir has one, and the newest complete checkpoint otherwise; "latest" the newest.
  """
  if checkpoint not in CHECKPOINT_CHOICES:
    raise config_lib.ConfigError(
        f"checkpoint must be one of {list(CHECKPOINT_CHOICES)}, got {checkpoint!r}"
    )
  ckpt_dir, workdir, path_step = checkpoints.locate(workdir_or_checkpoint_dir)
  best = checkpoints.read_best(workdir) if workdir is not None else None
  best_dir = pathlib.Path(checkpoints.best_dir(workdir)) if best else None
  steps = checkpoints.list_steps(ckpt_dir)
  run_steps = checkpoints.list_steps(workdir / "checkpoints") if workdir is not None else steps
  latest = run_steps[-1] if run_steps else None
  in_best = best_dir is not None and ckpt_dir == best_dir  # the path names <workdir>/best
  if step is not None or path_step is not None:
    directory = ckpt_dir
    if path_step is None and step not in steps and best is not None:
      if step != best["step"]:
        raise config_lib.ConfigError(
            f"{ckpt_dir}: no checkpoint for step {step}; available steps: "
            f"{sorted(set(steps) | {best['step']})}"
        )
      directory = best_dir  # the best step, gone from checkpoints/ (config.log.max_checkpoints)
    chosen = checkpoints.pick_step(directory, step, path_step)
    others = [f"latest is {latest}"] if latest is not None else []
    if best is not None:
      others.append(f"best {best['step']}")
    line = f"step {chosen}: as asked" + (f"; {', '.join(others)}" if others else "")
    return Choice(directory, workdir, chosen, "step", line)
  if best is not None and (checkpoint == "best" or in_best):
    tail = "it is also the latest" if latest == best["step"] else f"latest is {latest}"
    line = f"step {best['step']}: the best by periodic validation ({_describe(best)}); {tail}"
    return Choice(best_dir, workdir, best["step"], "best", line)
  chosen = checkpoints.pick_step(ckpt_dir)
  if best is not None:
    line = (
        f"step {chosen}: the latest checkpoint, as asked; the best by periodic validation is "
        f"step {best['step']} ({_describe(best)})"
    )
  elif workdir is not None and checkpoint == "best":
    line = f"step {chosen}: the latest checkpoint (no best checkpoint in {workdir.name}/best)"
  else:
    line = f"step {chosen}: the latest checkpoint"
  return Choice(ckpt_dir, workdir, chosen, "latest", line)


def checkpoint_steps(workdir_or_checkpoint_dir: str | os.PathLike) -> list[int]:
  """The steps `load` can restore from this path, oldest first (one when the path names a step):
  the checkpoints' and the best checkpoint's."""
  ckpt_dir, workdir, path_step = checkpoints.locate(workdir_or_checkpoint_dir)
  if path_step is not None:
    return [path_step]
  best = checkpoints.read_best(workdir) if workdir is not None else None
  return sorted(set(checkpoints.list_steps(ckpt_dir)) | ({best["step"]} if best else set()))


def read_generator(choice: Choice, *, use_ema: bool = True) -> tuple:
  """(config, num_speakers, speaker names or None, the restored G-side entries of the saved
  TrainState) of the checkpoint `choice` names. use_ema: the EMA of G's weights where the run
  kept one (config.optim.g.ema_decay), under "g_ema_params"; else "g_params"."""
  manager = checkpoints.open_directory(choice.directory)
  config, num_speakers, speaker_names = _config_and_meta(
      manager, choice.directory, choice.workdir, choice.step
  )
  target = _restore_target(config, num_speakers, use_ema)
  restored = _restore_generator(manager, choice.directory, choice.step, target)
  return config, num_speakers, speaker_names, restored


def _restore_target(config: ml_collections.ConfigDict, num_speakers: int, use_ema: bool) -> dict:
  """The G-side entries of the saved TrainState, as abstract arrays on one local device."""
  model = factory.make_generator(config.model, num_speakers)
  window = int(config.input.audio_samples)
  abstract = jax.eval_shape(
      lambda: model.init(
          {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)},
          jnp.zeros((1, window), jnp.float32),
          train=False,
          update_spectral=False,
      )
  )
  # Only the G-side entries of the saved TrainState are read (partial restore).
  target = {
      "g_params": abstract["params"],
      "g_batch_stats": abstract["batch_stats"],
      "g_spectral": abstract["spectral"],
  }
  # Training kept an EMA of G's weights: generate with it (what the run's evaluation used).
  ema = use_ema and config.optim.g.ema_decay > 0
  if ema:
    target = {"g_ema_params": target.pop("g_params"), **target}
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), target)


def _restore_generator(manager, ckpt_dir: pathlib.Path, step: int, target: dict) -> dict:
  """`target` restored from the checkpoint of `step` (partial restore); ConfigError on mismatch."""
  try:
    restored = checkpoints.restore_partial(manager, step, target)
  except (ValueError, KeyError) as e:
    raise config_lib.ConfigError(
        f"{ckpt_dir}/{step}: the checkpoint does not match the generator built from its "
        f"config ({' '.join(str(e).split())[:300]})"
    ) from None
  # Orbax restores the saved arrays whatever the target's shapes: compare them here.
  wrong = [
      f"{jax.tree_util.keystr(path)} {tuple(got.shape)} vs {tuple(want.shape)}"
      for (path, want), got in zip(
          jax.tree_util.tree_leaves_with_path(target), jax.tree.leaves(restored)
      )
      if tuple(got.shape) != tuple(want.shape)
  ]
  if wrong or jax.tree.structure(restored) != jax.tree.structure(target):
    raise config_lib.ConfigError(
        f"{ckpt_dir}/{step}: the checkpoint does not match the generator built from its "
        f"config ({'; '.join(wrong[:3]) or 'different parameters'})"
    )
  return restored
