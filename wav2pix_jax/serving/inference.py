"""Load a trained generator from a workdir and turn speech into faces (uint8 RGB).

    generator = inference.load("workdirs/base")          # best checkpoint, else the latest
    print(generator.source)  # "step 3500: the best by periodic validation (...); latest is 4181"
    faces = generator.generate(waveform, 16_000)         # [1, S, S, 3]: the centred 1 s window
    frames = generator.generate(waveform, 16_000, every=0.04)  # one face per 40 ms hop

Only the generator side (speech encoder, speaker classifier, generator: params, BatchNorm
statistics, spectral-norm vectors) is restored from the Orbax checkpoint; the discriminator and the
optimizer states are never read. The model is rebuilt from the workdir's config.json (or the config
stored with the checkpoint) through `factory.make_generator`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import pathlib
import types
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from wav2pix_jax.data import audio
from wav2pix_jax import checkpoints
from wav2pix_jax import config_lib
from wav2pix_jax.models import factory

DEFAULT_BATCH_SIZE = 32  # windows per device call: bounds memory for long recordings
# Why sample=True is refused for a run trained without dropout (the CLI and the web demo say it).
NO_DROPOUT_MESSAGE = (
    "this run's generator has no dropout (model.dropout_rate=0), its only source "
    "of randomness: sampling would repeat the deterministic face"
)


@dataclasses.dataclass
class FaceGenerator:
  """A generator: speech -> faces.

  Build it with `load` (a checkpoint) or `from_state` (training).
  """

  config: ml_collections.ConfigDict
  num_speakers: int
  speaker_names: tuple[str, ...] | None
  step: int
  variables: dict  # {"params", "batch_stats", "spectral"} of the G side
  batch_size: int = DEFAULT_BATCH_SIZE
  # The authors' predict() never called .eval(): dropout on and BatchNorm on the batch's own
  # statistics (the faces then depend on the batch). None: config.eval.train_mode.
  train_mode: bool | None = None
  # Which checkpoint `load` chose: "best", "latest", "step" (asked for); "" when built otherwise.
  which: str = ""
  # One line saying which step and why ("step 3500: the best by periodic validation (identity
  # 100.0%, FD 0.104); latest is 4181"), for the tools to print.
  source: str = ""

  def __post_init__(self):
    self._model = factory.make_generator(self.config.model, self.num_speakers, inference=True)
    model = self._model
    if self.train_mode is None:
      self.train_mode = bool(self.config.eval.train_mode)
    train_mode = self.train_mode

    def apply(variables, fn, inputs, rng=None):
      rngs = {} if rng is None else {"dropout": rng}
      if train_mode:
        return model.apply(variables, inputs, method=fn, rngs=rngs, mutable=["batch_stats"])[0]
      return model.apply(variables, inputs, method=fn, rngs=rngs)

    def encode(variables, waveform):
      # The encoder runs in inference mode (BatchNorm running statistics) unless train_mode.
      return apply(variables, lambda m, w: m.encoder(w, train=train_mode), waveform)

    def decode(variables, embedding, rng, sample):
      # `sample` only switches the generator's dropout on, its one source of randomness.
      return apply(
          variables,
          lambda m, e: m.generator(e, train=sample, update_spectral=False),
          embedding,
          rng,
      )

    def forward(variables, waveform, rng, sample):
      return decode(variables, encode(variables, waveform), rng, sample)

    # jit: (G variables, float32 waveforms [B, window], dropout key, sample) -> faces in [-1, 1].
    # The variables are an argument, not a constant: `with_variables` reuses the compiled function.
    self.forward = jax.jit(forward, static_argnums=3)
    # The same two stages apart, for fusing several windows into one face (`generate_fused`):
    # (variables, waveforms [B, window]) -> embeddings [B, E]; (variables, embeddings [B, E],
    # dropout key, sample) -> faces in [-1, 1].
    self.encode = jax.jit(encode)
    self.decode = jax.jit(decode, static_argnums=3)

  @classmethod
  def from_state(
      cls, config: ml_collections.ConfigDict, num_speakers: int, state, **kwargs
  ) -> FaceGenerator:
    """The generator of a (host or single-device) TrainState; kwargs: the other fields."""
    return cls(
        config=config,
        num_speakers=num_speakers,
        step=int(state.step),
        variables=generator_variables(state),
        **{"speaker_names": None, **kwargs},
    )

  def with_variables(self, variables: dict, *, step: int | None = None) -> FaceGenerator:
    """The same generator (same compiled function, nothing recompiled) with other G variables."""
    new = copy.copy(self)
    new.variables = variables
    if step is not None:
      new.step = int(step)
    return new

  @property
  def image_size(self) -> int:
    return int(self.config.model.image_size)

  @property
  def window(self) -> int:
    """Samples per model input (config.input.audio_samples)."""
    return int(self.config.input.audio_samples)

  @property
  def sample_rate(self) -> int:
    return int(self.config.input.sample_rate)

  def generate_preprocessed(
      self, waveforms: np.ndarray, *, sample: bool = False, seed: int = 0
  ) -> np.ndarray:
    """uint8 [B, S, S, 3] from already preprocessed windows float32 [B, window].

    Runs in fixed-size chunks.
    """
    key = self._dropout_key(sample, seed)
    sample = bool(sample or self.train_mode)
    return self._in_chunks(
        self._checked_windows(waveforms),
        np.zeros((self.image_size, self.image_size, 3), np.uint8),
        lambda chunk, index: to_uint8(
            self.forward(self.variables, chunk, jax.random.fold_in(key, index), sample)
        ),
    )

  def embed_preprocessed(self, waveforms: np.ndarray) -> np.ndarray:
    """float32 [B, E]: the speech embeddings of preprocessed windows float32 [B, window]."""
    return self._in_chunks(
        self._checked_windows(waveforms),
        np.zeros((int(self.config.model.embed_dim),), np.float32),
        lambda chunk, index: self.encode(self.variables, chunk),
    )

  def generate_from_embeddings(
      self, embeddings: np.ndarray, *, sample: bool = False, seed: int = 0
  ) -> np.ndarray:
    """uint8 [B, S, S, 3] from speech embeddings float32 [B, E] (the generator alone)."""
    key = self._dropout_key(sample, seed)
    sample = bool(sample or self.train_mode)
    embed_dim = int(self.config.model.embed_dim)
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.ndim != 2 or embeddings.shape[1] != embed_dim:
      raise ValueError(f"embeddings must be [B, {embed_dim}], got {embeddings.shape}")
    return self._in_chunks(
        embeddings,
        np.zeros((self.image_size, self.image_size, 3), np.uint8),
        lambda chunk, index: to_uint8(
            self.decode(self.variables, chunk, jax.random.fold_in(key, index), sample)
        ),
    )

  def generate_fused_preprocessed(
      self, waveforms: np.ndarray, *, sample: bool = False, seed: int = 0
  ) -> np.ndarray:
    """uint8 [1, S, S, 3]: ONE face from the mean speech embedding of preprocessed windows
    float32 [B, window]; silent (all-zero) windows are left out (AudioError if all are)."""
    waveforms = self._checked_windows(waveforms)
    check_not_all_silent(waveforms)
    voiced = waveforms[np.any(waveforms != 0, axis=1)]
    if not voiced.shape[0]:
      raise audio.AudioError("no speech window to fuse")
    fused = mean_embeddings(self.embed_preprocessed(voiced), [np.arange(voiced.shape[0])])
    return self.generate_from_embeddings(fused, sample=sample, seed=seed)

  def generate_fused(
      self,
      waveforms: np.ndarray | Sequence[np.ndarray],
      sample_rate: int,
      *,
      every: float | None = None,
      sample: bool = False,
      seed: int = 0,
  ) -> np.ndarray:
    """uint8 [1, S, S, 3]: ONE face from the mean embedding of every window of one recording, or
    of several recordings of one voice (a list), all at `sample_rate`.

    The windows tile each recording (a window's length apart, or `every` seconds); the tail
    shorter than a window is left out, and so are silent windows (pauses).
    """
    if isinstance(waveforms, np.ndarray) and waveforms.ndim == 1:
      waveforms = [waveforms]
    if not len(waveforms):
      raise ValueError("generate_fused needs at least one recording")
    windows = np.concatenate([self.fusion_windows(w, sample_rate, every=every) for w in waveforms])
    return self.generate_fused_preprocessed(windows, sample=sample, seed=seed)

  def fusion_windows(
      self, waveform: np.ndarray, sample_rate: int, *, every: float | None = None
  ) -> np.ndarray:
    """float32 [N, window]: the windows `generate_fused` averages for one recording.

    One window every `every` seconds (default: the window's length, no overlap); silent ones are
    all zeros (`generate_fused_preprocessed` leaves them out).
    """
    return self._hop_windows(
        waveform, sample_rate, self.window / self.sample_rate if every is None else every
    )

  def generate(
      self,
      waveform: np.ndarray,
      sample_rate: int,
      *,
      every: float | None = None,
      sample: bool = False,
      seed: int = 0,
  ) -> np.ndarray:
    """uint8 [N, S, S, 3] faces from a raw mono waveform at `sample_rate`.

    every=None: one face from the centred `window` (the model's input length, 1 s in the paper).
    every=seconds: one face per window starting at 0, every, 2 every, ... (silent windows give
    the face of an all-zero input). sample=True switches the generator's dropout on (seeded).
    """
    return self.generate_preprocessed(
        self.windows(waveform, sample_rate, every=every), sample=sample, seed=seed
    )

  def windows(
      self, waveform: np.ndarray, sample_rate: int, *, every: float | None = None
  ) -> np.ndarray:
    """The model inputs `generate` uses: float32 [N, window], preprocessed as in training.

    A silent window (a pause) becomes all zeros when `every` is set (a talking-face video keeps
    one frame per tick); audio that is silent throughout is refused (`audio.AudioError`).
    """
    if every is None:
      waveform = self._resampled(waveform, sample_rate)
      return audio.preprocess(waveform, window=self.window, **self.preprocess_options)[None]
    windows = self._hop_windows(waveform, sample_rate, every)
    check_not_all_silent(windows)
    return windows

  def _hop_windows(self, waveform: np.ndarray, sample_rate: int, every: float) -> np.ndarray:
    """One preprocessed window every `every` seconds from the start; silent ones all zeros."""
    if isinstance(every, bool) or not isinstance(every, (int, float)) or not every > 0:
      raise ValueError(f"every must be a positive number of seconds, got {every!r}")
    waveform = self._resampled(waveform, sample_rate)
    hop = max(1, int(round(every * self.sample_rate)))
    return audio.windows(
        waveform, window=self.window, hop=hop, silent="zeros", **self.preprocess_options
    )

  def _checked_windows(self, waveforms: np.ndarray) -> np.ndarray:
    waveforms = np.asarray(waveforms, np.float32)
    if waveforms.ndim != 2 or waveforms.shape[1] != self.window:
      raise ValueError(f"preprocessed waveforms must be [B, {self.window}], got {waveforms.shape}")
    return waveforms

  def _dropout_key(self, sample: bool, seed: int) -> jax.Array:
    if sample and not self.can_sample:
      raise config_lib.ConfigError(NO_DROPOUT_MESSAGE)
    return jax.random.PRNGKey(seed)

  def _in_chunks(self, inputs: np.ndarray, row: np.ndarray, apply) -> np.ndarray:
    """[B, *row.shape] of row.dtype: apply(chunk, chunk index) on chunks of `batch_size` rows."""
    out = np.zeros((inputs.shape[0],) + row.shape, row.dtype)
    for index, start in enumerate(range(0, inputs.shape[0], self.batch_size)):
      chunk = inputs[start : start + self.batch_size]
      rows = chunk.shape[0]
      # One compiled shape, whatever the length (not in train_mode: padding rows would enter
      # the batch statistics).
      if rows < self.batch_size and not self.train_mode:
        padding = np.zeros((self.batch_size - rows,) + chunk.shape[1:], chunk.dtype)
        chunk = np.concatenate([chunk, padding])
      out[start : start + rows] = np.asarray(apply(jnp.asarray(chunk), index))[:rows]
    return out

  @property
  def can_sample(self) -> bool:
    """Whether `sample=True` can vary the faces: the generator's dropout is its only randomness."""
    return self.train_mode or float(self.config.model.dropout_rate) > 0

  @property
  def preprocess_options(self) -> dict:
    """The training run's speech preprocessing, as keyword arguments of `audio.preprocess`."""
    return {
        "preemphasis": float(self.config.input.preemphasis),
        "floor_division": bool(self.config.input.floor_division),
    }

  def _resampled(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    waveform = np.asarray(waveform)
    if waveform.ndim != 1:
      raise ValueError(
          f"waveform must be mono [T], got shape {waveform.shape}; average the channels first"
      )
    if (
        isinstance(sample_rate, bool)
        or not isinstance(sample_rate, (int, np.integer))
        or sample_rate < 1
    ):
      raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    if np.issubdtype(waveform.dtype, np.integer):
      waveform = waveform.astype(np.float32) / 32768.0
    waveform = waveform.astype(np.float32)
    if sample_rate == self.sample_rate:
      return waveform
    import scipy.signal  # pylint: disable=g-import-not-at-top

    g = math.gcd(int(sample_rate), self.sample_rate)
    return scipy.signal.resample_poly(
        waveform, self.sample_rate // g, int(sample_rate) // g
    ).astype(np.float32)


def generator_variables(state) -> dict:
  """The G-side variables of a (host or single-device) TrainState, as `Wav2PixG.apply` wants them:
  the EMA of G's weights when training keeps one (config.optim.g.ema_decay), else the weights."""
  params = state.g_params if state.g_ema_params is None else state.g_ema_params
  return {"params": params, "batch_stats": state.g_batch_stats, "spectral": state.g_spectral}


def check_not_all_silent(windows: np.ndarray) -> int:
  """The number of silent (all-zero) windows; AudioError when every window is silent."""
  silent = int(np.sum(~np.any(windows != 0, axis=1)))
  if windows.shape[0] and silent == windows.shape[0]:
    raise audio.AudioError(f"the audio is silent throughout (all {silent} windows)")
  return silent


def mean_embeddings(embeddings: np.ndarray, groups: Sequence[np.ndarray]) -> np.ndarray:
  """float32 [G, E]: the mean of each group (row indices) of embeddings [N, E], summed in float64
  so that the mean of identical rows is that row exactly."""
  embeddings = np.asarray(embeddings, np.float64)
  if any(len(g) == 0 for g in groups):
    raise ValueError("every group needs at least one embedding")
  return np.stack([embeddings[np.asarray(g)].mean(0) for g in groups]).astype(np.float32)


def to_uint8(images: np.ndarray) -> np.ndarray:
  """Images in [-1, 1] -> uint8 in [0, 255]."""
  return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


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


def load(
    workdir_or_checkpoint_dir: str | os.PathLike,
    step: int | None = None,
    *,
    checkpoint: str = "best",
    batch_size: int = DEFAULT_BATCH_SIZE,
    use_ema: bool = True,
) -> FaceGenerator:
  """The generator of a training run: a workdir, its checkpoints/ or best/ dir, or one step's dir.

  step=None: checkpoint="best" loads the best checkpoint by periodic validation where the run kept
  one (<workdir>/best), else the newest complete checkpoint; "latest" the newest
  (`choose_checkpoint`; the generator's `which` and `source` say which and why). use_ema: when
  the run kept an EMA of G's weights (config.optim.g.ema_decay), generate with it.
  """
  choice = choose_checkpoint(workdir_or_checkpoint_dir, step, checkpoint=checkpoint)
  if not isinstance(batch_size, int) or batch_size < 1:
    raise config_lib.ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")

  manager = checkpoints.open_directory(choice.directory)
  config, num_speakers, speaker_names = _config_and_meta(
      manager, choice.directory, choice.workdir, choice.step
  )
  target = _restore_target(config, num_speakers, use_ema)
  restored = _restore_generator(manager, choice.directory, choice.step, target)
  variables = generator_variables(
      types.SimpleNamespace(**{"g_params": None, "g_ema_params": None, **restored})
  )
  return FaceGenerator(
      config=config,
      num_speakers=num_speakers,
      speaker_names=speaker_names,
      step=choice.step,
      variables=variables,
      batch_size=batch_size,
      which=choice.which,
      source=choice.source,
  )


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
