"""Load a trained generator from a workdir and turn speech into faces (uint8 RGB).

    generator = inference.load("workdirs/base")          # best checkpoint, else the latest
    print(generator.source)  # "step 3500: the best by periodic validation (...); latest is 4181"
    faces = generator.generate(waveform, 16_000)         # [1, S, S, 3]: the centred 1 s window
    frames = generator.generate(waveform, 16_000, every=0.04)  # one face per 40 ms hop

Only the generator side (speech encoder, speaker classifier, generator: params, BatchNorm
statistics, spectral-norm vectors) is restored from the Orbax checkpoint; the discriminator and the
optimizer states are never read. The model is rebuilt from the workdir's config.json (or the config
stored with the checkpoint) through `factory.make_generator`. Which checkpoint, its config and the
restore are serving/restore.py's.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import types
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from wav2pix_jax.data import audio
from wav2pix_jax import config_lib
from wav2pix_jax.models import factory
from wav2pix_jax.models import networks
from wav2pix_jax.serving import restore

DEFAULT_BATCH_SIZE = 32  # windows per device call: bounds memory for long recordings
# Why sample=True is refused for a run trained without dropout (the CLI and the web demo say it).
NO_DROPOUT_MESSAGE = (
    "this run's generator has no dropout (model.dropout_rate=0) and no noise input "
    "(model.noise_dim=0), its sources of randomness: sampling would repeat the deterministic face"
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
      # `sample` switches the generator's randomness on: its dropout and its noise input.
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

  def with_precise_batch_stats(self, waveforms: np.ndarray, *, batch: int) -> FaceGenerator:
    """The same generator with BatchNorm statistics recomputed for its weights on preprocessed
    training windows [N, window], `batch` at a time (networks.precise_batch_stats): a checkpoint
    saved with running averages (config.precise_bn_examples = 0) judged without their lag."""
    batch = min(int(batch), len(waveforms))
    count = len(waveforms) // batch
    if count < 1:
      raise ValueError("precise BatchNorm statistics need at least one window")
    windows = np.asarray(waveforms[: count * batch], np.float32).reshape(count, batch, -1)
    model = factory.make_generator(self.config.model, self.num_speakers, axis_name=None)
    stats = jax.jit(lambda v, w: networks.precise_batch_stats(model, v, w))(self.variables, windows)
    return self.with_variables({**self.variables, "batch_stats": stats})

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
    """Whether `sample=True` can vary the faces: the generator's dropout or noise input."""
    model = self.config.model
    return self.train_mode or float(model.dropout_rate) > 0 or int(model.noise_dim) > 0

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
  (`restore.choose_checkpoint`; the generator's `which` and `source` say which and why).
  use_ema: when the run kept an EMA of G's weights (config.optim.g.ema_decay), generate with it.
  """
  choice = restore.choose_checkpoint(workdir_or_checkpoint_dir, step, checkpoint=checkpoint)
  if not isinstance(batch_size, int) or batch_size < 1:
    raise config_lib.ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
  config, num_speakers, speaker_names, restored = restore.read_generator(choice, use_ema=use_ema)
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
