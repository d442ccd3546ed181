"""Wav2Pix training: one state pytree, one pure pmapped step (D update, then G update), the loop."""

import dataclasses
import functools
import json
import os
import time
from typing import Any, Callable, NamedTuple, Optional

from absl import logging
from clu import metric_writers
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from wav2pix_jax import augment
from wav2pix_jax import checkpoints
from wav2pix_jax import config_lib
from wav2pix_jax import evaluate as evaluate_lib
from wav2pix_jax import factory
from wav2pix_jax import inference
from wav2pix_jax import input_pipeline
from wav2pix_jax import loop
from wav2pix_jax import losses
from wav2pix_jax import monitor
from wav2pix_jax import parallel

PyTree = Any
Metrics = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training, both nets, one pytree (checkpointed as a whole)."""

  step: jax.Array  # number of completed iterations (D update + G update)
  g_params: PyTree  # speech encoder + speaker classifier + generator
  g_opt_state: optax.OptState
  g_batch_stats: PyTree  # BatchNorm running statistics (encoder, classifier)
  g_spectral: PyTree  # generator spectral-norm power-iteration vectors
  d_params: PyTree
  d_opt_state: optax.OptState
  d_spectral: PyTree
  rng: jax.Array  # raw uint32[2] key; split every step
  # Exponential moving average of g_params (config.optim.g.ema_decay > 0), else None: what
  # evaluation and generation use when present.
  g_ema_params: PyTree = None


# ------------------------------------------------------------------------------------------
# State.
# ------------------------------------------------------------------------------------------


def make_optimizers(
    config: ml_collections.ConfigDict,
) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
  """Adam for each net, from config.optim.g / config.optim.d."""

  def adam(section: str) -> optax.GradientTransformation:
    cfg = config.optim[section]
    if not cfg.learning_rate > 0:
      raise config_lib.ConfigError(
          f"config.optim.{section}.learning_rate must be > 0, got {cfg.learning_rate!r}"
      )
    return optax.adam(cfg.learning_rate, b1=cfg.b1, b2=cfg.b2)

  return adam("g"), adam("d")


def create_train_state(
    config: ml_collections.ConfigDict, num_speakers: int, rng: jax.Array
) -> TrainState:
  """Initialises both nets and both optimizers (N(0, 0.02) weights; see models.py)."""
  g_model = factory.make_generator(config.model, num_speakers)
  d_model = factory.make_discriminator(config.model)
  g_tx, d_tx = make_optimizers(config)
  size = config.model.image_size

  def init(rng):
    g_rng, d_rng, dropout_rng, state_rng = jax.random.split(rng, 4)
    waveform = jnp.zeros((1, config.input.audio_samples), jnp.float32)
    g_vars = g_model.init(
        {"params": g_rng, "dropout": dropout_rng}, waveform, train=False, update_spectral=False
    )
    d_vars = d_model.init(
        {"params": d_rng},
        jnp.zeros((1, size, size, 3), jnp.float32),
        jnp.zeros((1, config.model.embed_dim), jnp.float32),
        update_spectral=False,
    )
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_vars["params"],
        g_opt_state=g_tx.init(g_vars["params"]),
        g_batch_stats=g_vars["batch_stats"],
        g_spectral=g_vars["spectral"],
        d_params=d_vars["params"],
        d_opt_state=d_tx.init(d_vars["params"]),
        d_spectral=d_vars["spectral"],
        rng=state_rng,
        g_ema_params=g_vars["params"] if config.optim.g.ema_decay > 0 else None,
    )

  return jax.jit(init)(rng)


def abstract_train_state(config: ml_collections.ConfigDict, num_speakers: int) -> TrainState:
  """Shapes and dtypes of the state, nothing allocated (the restore target)."""
  return jax.eval_shape(
      functools.partial(create_train_state, config, num_speakers), jax.random.PRNGKey(0)
  )


def count_params(tree: PyTree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


# ------------------------------------------------------------------------------------------
# The step: D update, then G update against the updated D.
# ------------------------------------------------------------------------------------------


def _keep_if(ok: jax.Array, new: PyTree, old: PyTree) -> PyTree:
  """`new` where `ok`, else `old` (leafwise; used to skip non-finite updates)."""
  return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


def _all_finite(*values: jax.Array) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in values]))


class GForward(NamedTuple):
  """One train-mode forward of the G side, shared by both phases of a step (G runs once)."""

  outputs: tuple  # (fakes [B, S, S, 3], embedding [B, E], logits [B, num_speakers])
  pullback: Callable  # cotangents of `outputs` -> gradients w.r.t. g_params (the forward's vjp)
  batch_stats: PyTree  # BatchNorm statistics after this forward
  spectral: PyTree  # G's power-iteration vectors after this forward


def g_forward(
    state: TrainState, batch: dict, *, g_model, rng: jax.Array, update_spectral: bool
) -> GForward:
  """The G side in train mode (dropout mask from `rng`), with its vjp kept for the G phase."""

  def apply(g_params):
    return g_model.apply(
        {"params": g_params, "batch_stats": state.g_batch_stats, "spectral": state.g_spectral},
        batch["waveform"],
        train=True,
        update_spectral=update_spectral,
        rngs={"dropout": rng},
        mutable=["batch_stats", "spectral"],
    )

  outputs, vjp_fn, g_vars = jax.vjp(apply, state.g_params, has_aux=True)
  return GForward(
      outputs=outputs,
      pullback=lambda cotangents: vjp_fn(cotangents)[0],
      batch_stats=g_vars["batch_stats"],
      spectral=g_vars["spectral"],
  )


def _skip_if_nonfinite(
    new: TrainState, old: TrainState, metrics: Metrics, phase: str
) -> TrainState:
  """`new`, or `old` when the phase's loss or gradient norm is not finite (`<phase>_skipped` 1)."""
  ok = _all_finite(metrics[f"{phase}_loss"], metrics[f"{phase}_grad_norm"])
  new = _keep_if(ok, new, old)
  metrics[f"{phase}_skipped"] = 1.0 - ok.astype(jnp.float32)
  return new


def d_inputs(
    batch: dict,
    g_out: GForward,
    *,
    augment_policy: str = "",
    augment_rng: Optional[jax.Array] = None,
) -> tuple[jax.Array, jax.Array]:
  """D's images [real; fake; wrong] (DiffAugmented with `augment_policy`) and the embedding [B, E].

  The fakes and the speech embedding are detached: no gradient of the D loss flows into G.
  """
  fakes, embedding, _ = g_out.outputs
  fakes = jax.lax.stop_gradient(fakes)
  embedding = jax.lax.stop_gradient(embedding)
  images = jnp.concatenate([batch["face"], fakes.astype(batch["face"].dtype), batch["wrong_face"]])
  if augment_policy:
    images = augment.diff_augment(images, augment_rng, augment_policy)
  return images, embedding


def r1_penalty(d_params: PyTree, d_spectral: PyTree, reals, embedding, *, d_model) -> jax.Array:
  """E|d D(real, e) / d real|^2 over the batch (D's power iteration not advanced)."""

  def real_scores_sum(x):
    scores, _ = d_model.apply(
        {"params": d_params, "spectral": d_spectral}, x, embedding, update_spectral=False
    )
    return jnp.sum(losses.at_least_f32(scores))

  grads = jax.grad(real_scores_sum)(reals)
  return jnp.mean(jnp.sum(jnp.square(grads), axis=(1, 2, 3)))


def d_loss(
    d_params: PyTree,
    d_spectral: PyTree,
    images: jax.Array,
    embedding: jax.Array,
    *,
    d_model,
    real_label: float,
    r1_weight: float = 0.0,
) -> tuple[jax.Array, tuple[dict, dict, PyTree]]:
  """(D loss, (terms, mean scores, D's spectral vectors after the call)) on d_inputs' output.

  One D call on [real; fake; wrong], each conditioned on `embedding` (D has no batch statistics,
  so this equals three calls).
  """
  (scores, _), d_vars = d_model.apply(
      {"params": d_params, "spectral": d_spectral},
      images,
      jnp.concatenate([embedding] * 3),
      update_spectral=True,
      mutable=["spectral"],
  )
  real, fake, wrong = jnp.split(losses.at_least_f32(scores), 3)
  loss, terms = losses.discriminator_loss(
      real_scores=real, fake_scores=fake, wrong_scores=wrong, real_label=real_label
  )
  if r1_weight > 0:
    reals = images[: embedding.shape[0]]
    # The penalty's D is the one that scored: the power iteration of this call, not the vectors
    # before it (at step 0 those are random and unrelated, sigma = u^T W v near 0: R1 ~1e13).
    spectral = d_vars["spectral"]
    terms["d_r1"] = r1_penalty(d_params, spectral, reals, embedding, d_model=d_model)
    loss = loss + 0.5 * r1_weight * terms["d_r1"]
  scores = {
      "d_score_real": jnp.mean(real),
      "d_score_fake": jnp.mean(fake),
      "d_score_wrong": jnp.mean(wrong),
  }
  return loss, (terms, scores, d_vars["spectral"])


def d_update(
    state: TrainState,
    batch: dict,
    *,
    g_model,
    d_model,
    d_tx: optax.GradientTransformation,
    real_label: float,
    rng: jax.Array,
    axis_name: Optional[str] = None,
    skip_nonfinite: bool = False,
    g_out: Optional[GForward] = None,
    augment_policy: str = "",
    r1_weight: float = 0.0,
    augment_rng: Optional[jax.Array] = None,
) -> tuple[TrainState, Metrics]:
  """One D update on real (0.9), generated (0) and wrong-face (0) pairs; G's params are untouched.

  `g_out`: this step's G forward (train_step passes the one both phases share); None runs it here
  (dropout from `rng`, with this step's spectral power iteration for G). Its faces and speech
  embedding are constants for D: no gradient flows back into G. `augment_policy`: DiffAugment on
  every image D sees (random draws from `augment_rng`); `r1_weight` > 0 adds the R1 penalty
  r1_weight/2 * E|d D(real, e) / d real|^2.
  """
  if g_out is None:
    g_out = g_forward(state, batch, g_model=g_model, rng=rng, update_spectral=True)
  images, embedding = d_inputs(batch, g_out, augment_policy=augment_policy, augment_rng=augment_rng)
  loss_fn = functools.partial(d_loss, d_model=d_model, real_label=real_label, r1_weight=r1_weight)
  (loss, (terms, scores, d_spectral)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.d_params, state.d_spectral, images, embedding
  )
  grads = parallel.pmean(grads, axis_name)
  updates, d_opt_state = d_tx.update(grads, state.d_opt_state, state.d_params)
  d_params = optax.apply_updates(state.d_params, updates)
  metrics = parallel.pmean({"d_loss": loss, **terms, **scores}, axis_name)
  metrics["d_grad_norm"] = optax.global_norm(grads)
  new = state.replace(
      d_params=d_params, d_opt_state=d_opt_state, d_spectral=d_spectral, g_spectral=g_out.spectral
  )
  if skip_nonfinite:
    new = _skip_if_nonfinite(new, state, metrics, "d")
  return new, metrics


def g_loss_and_grads(
    state: TrainState,
    batch: dict,
    g_out: GForward,
    *,
    d_model,
    loss_weights: ml_collections.ConfigDict,
    axis_name: Optional[str] = None,
    augment_rng: Optional[jax.Array] = None,
) -> tuple[jax.Array, tuple, PyTree]:
  """(G loss, (terms, speaker accuracy), d loss / d g_params) against state's D, via g_out's vjp.

  The loss is differentiated w.r.t. G's outputs (through D), and that cotangent is pulled back
  through the saved forward: the same gradient as differentiating a fresh forward, without one.
  D's speech-embedding input is a constant unless loss_weights.adversarial_into_encoder (the
  authors' code): otherwise G could raise D's score by moving the condition, not the face.
  """
  face = batch["face"]

  def loss_fn(outputs):
    fakes, embedding, logits = outputs
    condition = (
        embedding if loss_weights.adversarial_into_encoder else jax.lax.stop_gradient(embedding)
    )
    images = jnp.concatenate([fakes.astype(face.dtype), face])
    if loss_weights.diff_augment:
      images = augment.diff_augment(images, augment_rng, loss_weights.diff_augment)
    # One D call on [fake; real]: scores of the fakes, features of both for feature matching.
    scores, features = d_model.apply(
        {"params": state.d_params, "spectral": state.d_spectral},
        images,
        jnp.concatenate([condition, condition]),
        update_spectral=False,
    )
    fake_scores, _ = jnp.split(scores, 2)
    fake_features, real_features = jnp.split(features, 2)
    terms = {
        "g_adversarial": losses.generator_adversarial(fake_scores=fake_scores),
        "g_feature_matching": losses.feature_matching(
            fake_features=fake_features, real_features=real_features, axis_name=axis_name
        ),
        "g_l1": losses.l1(predictions=fakes, targets=face),
        "g_speaker_ce": losses.speaker_cross_entropy(logits=logits, labels=batch["speaker"]),
    }
    loss = (
        loss_weights.adversarial * terms["g_adversarial"]
        + loss_weights.feature_matching * terms["g_feature_matching"]
        + loss_weights.l1 * terms["g_l1"]
        + loss_weights.speaker_ce * terms["g_speaker_ce"]
    )
    accuracy = losses.speaker_accuracy(logits=logits, labels=batch["speaker"])
    return loss, (terms, accuracy)

  (loss, aux), cotangents = jax.value_and_grad(loss_fn, has_aux=True)(g_out.outputs)
  return loss, aux, g_out.pullback(cotangents)


def g_update(
    state: TrainState,
    batch: dict,
    *,
    g_model,
    d_model,
    g_tx: optax.GradientTransformation,
    loss_weights: ml_collections.ConfigDict,
    rng: jax.Array,
    axis_name: Optional[str] = None,
    skip_nonfinite: bool = False,
    g_out: Optional[GForward] = None,
    augment_rng: Optional[jax.Array] = None,
) -> tuple[TrainState, Metrics]:
  """One G-side update (encoder, classifier, generator) against the current D; D is untouched.

  G loss = w_adv MSE(D(G(e), e), 1) + w_fm feature matching + w_l1 L1(G(e), face)
      + w_ce CE(speaker).
  `g_out`: this step's shared G forward (from train_step); None runs one here (dropout from `rng`,
  no power iteration). BatchNorm statistics are taken from that forward.
  """
  if g_out is None:
    g_out = g_forward(state, batch, g_model=g_model, rng=rng, update_spectral=False)
  loss, (terms, accuracy), grads = g_loss_and_grads(
      state,
      batch,
      g_out,
      d_model=d_model,
      loss_weights=loss_weights,
      axis_name=axis_name,
      augment_rng=augment_rng,
  )
  grads = parallel.pmean(grads, axis_name)
  updates, g_opt_state = g_tx.update(grads, state.g_opt_state, state.g_params)
  g_params = optax.apply_updates(state.g_params, updates)
  metrics = parallel.pmean({"g_loss": loss, **terms, "speaker_accuracy": accuracy}, axis_name)
  metrics["g_grad_norm"] = optax.global_norm(grads)
  # BatchNorm already averaged its batch statistics over devices (axis_name in the model).
  new = state.replace(g_params=g_params, g_opt_state=g_opt_state, g_batch_stats=g_out.batch_stats)
  if skip_nonfinite:
    new = _skip_if_nonfinite(new, state, metrics, "g")
  return new, metrics


def ema_update(ema: PyTree, params: PyTree, *, decay: float, step: jax.Array) -> PyTree:
  """ema <- d * ema + (1 - d) * params, d = min(decay, (1 + step) / (10 + step)) (a short warm-up,
  so the average is not dominated by the initial weights early on)."""
  step = step.astype(jnp.float32)
  d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
  return jax.tree.map(lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype), ema, params)


def with_ema_update(state: TrainState, *, decay: float) -> TrainState:
  """`state` with its g_ema_params moved towards its g_params (ema_update at state.step)."""
  return state.replace(
      g_ema_params=ema_update(state.g_ema_params, state.g_params, decay=decay, step=state.step)
  )


def step_rngs(rng: jax.Array, axis_name: Optional[str]) -> tuple[jax.Array, ...]:
  """(next state rng, dropout rng, D's DiffAugment rng, G's DiffAugment rng) from `rng`.

  All but the first differ per device (different dropout masks and augmentations on each).
  """
  rng, dropout_rng, d_augment_rng, g_augment_rng = jax.random.split(rng, 4)
  dropout_rng = parallel.device_rng(dropout_rng, axis_name)
  d_augment_rng = parallel.device_rng(d_augment_rng, axis_name)
  g_augment_rng = parallel.device_rng(g_augment_rng, axis_name)
  return rng, dropout_rng, d_augment_rng, g_augment_rng


def train_step(
    state: TrainState,
    batch: dict,
    *,
    g_model,
    d_model,
    g_tx,
    d_tx,
    loss_cfg: ml_collections.ConfigDict,
    axis_name: Optional[str] = parallel.AXIS_NAME,
    skip_nonfinite: bool = False,
    ema_decay: float = 0.0,
) -> tuple[TrainState, Metrics]:
  """One Wav2Pix iteration: D update, then G update against the UPDATED D. Pure; pmap it.

  G's params don't change during the D phase, so G runs forward once (one dropout mask, one
  power iteration, one BatchNorm statistics update): the D phase uses its outputs as constants,
  the G phase pulls the loss gradient back through its saved vjp. With `ema_decay` > 0 the EMA of
  G's weights follows the updated ones.
  """
  rng, dropout_rng, d_augment_rng, g_augment_rng = step_rngs(state.rng, axis_name)
  g_out = g_forward(state, batch, g_model=g_model, rng=dropout_rng, update_spectral=True)
  state, d_metrics = d_update(
      state,
      batch,
      g_model=g_model,
      d_model=d_model,
      d_tx=d_tx,
      real_label=loss_cfg.real_label,
      rng=dropout_rng,
      axis_name=axis_name,
      skip_nonfinite=skip_nonfinite,
      g_out=g_out,
      augment_policy=loss_cfg.diff_augment,
      r1_weight=loss_cfg.r1,
      augment_rng=d_augment_rng,
  )
  state, g_metrics = g_update(
      state,
      batch,
      g_model=g_model,
      d_model=d_model,
      g_tx=g_tx,
      loss_weights=loss_cfg,
      rng=dropout_rng,
      axis_name=axis_name,
      skip_nonfinite=skip_nonfinite,
      g_out=g_out,
      augment_rng=g_augment_rng,
  )
  if ema_decay > 0:
    state = with_ema_update(state, decay=ema_decay)
  return state.replace(step=state.step + 1, rng=rng), {**d_metrics, **g_metrics}


def make_train_step(
    config: ml_collections.ConfigDict,
    num_speakers: int,
    *,
    axis_name: Optional[str] = parallel.AXIS_NAME,
) -> Callable:
  """train_step with the models, optimizers and loss weights bound (not yet pmapped)."""
  g_tx, d_tx = make_optimizers(config)
  return functools.partial(
      train_step,
      g_model=factory.make_generator(config.model, num_speakers, axis_name=axis_name),
      d_model=factory.make_discriminator(config.model),
      g_tx=g_tx,
      d_tx=d_tx,
      loss_cfg=config.loss,
      axis_name=axis_name,
      skip_nonfinite=bool(config.skip_nonfinite),
      ema_decay=float(config.optim.g.ema_decay),
  )


def make_p_train_step(config: ml_collections.ConfigDict, num_speakers: int) -> Callable:
  """The pmapped train step (state donated)."""
  return parallel.pmap(make_train_step(config, num_speakers, axis_name=parallel.AXIS_NAME))


# ------------------------------------------------------------------------------------------
# Host-side helpers.
# ------------------------------------------------------------------------------------------


def check_config(config: ml_collections.ConfigDict) -> int:
  """Fails fast (naming the field) on configs that can't train; returns the per-process batch."""
  factory.check_model_config(config.model)
  make_optimizers(config)
  for field in (
      "num_train_steps",
      "log.every_steps",
      "log.image_every_steps",
      "log.checkpoint_every_steps",
      "log.max_checkpoints",
      "log.num_images",
      "input.audio_samples",
  ):
    value = config
    for key in field.split("."):
      value = value[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise config_lib.ConfigError(f"config.{field} must be a positive integer, got {value!r}")
  for field in ("adversarial", "feature_matching", "l1", "speaker_ce", "r1"):
    if config.loss[field] < 0:
      raise config_lib.ConfigError(f"config.loss.{field} must be >= 0, got {config.loss[field]!r}")
  try:
    augment.parse_policy(config.loss.diff_augment)
  except ValueError as e:
    raise config_lib.ConfigError(f"config.loss.diff_augment: {e}") from None
  if not 0.0 <= config.optim.g.ema_decay < 1.0:
    raise config_lib.ConfigError(
        f"config.optim.g.ema_decay must be in [0, 1), got {config.optim.g.ema_decay!r}"
    )
  minutes = config.max_train_minutes
  if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes < 0:
    raise config_lib.ConfigError(
        f"config.max_train_minutes must be >= 0 (0 = no time limit), got {minutes!r}"
    )
  value = config.log.divergence_window
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise config_lib.ConfigError(
        f"config.log.divergence_window must be a positive integer, got {value!r}"
    )
  for field, minimum in (("every_steps", 0), ("max_examples", 1)):  # periodic evaluation
    value = config.eval[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
      raise config_lib.ConfigError(
          f"config.eval.{field} must be an integer >= {minimum}, got {value!r}"
      )
  return parallel.check_batch_size(config.batch_size)


def image_grid(generated: np.ndarray, real: np.ndarray) -> np.ndarray:
  """uint8 [2S, N*S, 3]: generated faces on the top row, the real faces for the same speech below
  (each uint8, or in [-1, 1])."""

  def row(images):
    images = np.asarray(images)
    images = images if images.dtype == np.uint8 else inference.to_uint8(images)
    return np.concatenate(list(images), axis=1)

  return np.concatenate([row(generated), row(real)], axis=0)


def _save_png(path: str, image: np.ndarray) -> None:
  from PIL import Image  # pylint: disable=g-import-not-at-top

  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(image).save(path)


def _hparams(config: ml_collections.ConfigDict) -> dict:
  flat = {}

  def walk(prefix, node):
    for key, value in node.items():
      name = f"{prefix}{key}"
      if isinstance(value, (ml_collections.ConfigDict, dict)):
        walk(name + ".", value)
      elif isinstance(value, (bool, int, float, str)):
        flat[name] = value
      else:
        flat[name] = str(value)

  walk("", config)
  return flat


def distributed_args(config: ml_collections.ConfigDict) -> dict:
  """The explicit `jax.distributed.initialize` arguments of `config` ({} = auto-detect).

  Raises:
    ConfigError: some but not all of coordinator_address / num_processes / process_id are set, or
      they are out of range.
  """
  address = config.coordinator_address or ""
  num_processes = config.num_processes
  process_id = config.process_id
  for name, value in (("num_processes", num_processes), ("process_id", process_id)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
      raise config_lib.ConfigError(
          f"--config.{name} must be an integer (-1 = auto-detect), got {value!r}"
      )
  given = {
      "coordinator_address": bool(address),
      "num_processes": num_processes != -1,
      "process_id": process_id != -1,
  }
  if not any(given.values()):
    return {}
  if not all(given.values()):
    unset = ", ".join(f"--config.{k}" for k, v in given.items() if not v)
    raise config_lib.ConfigError(
        "an explicit multi-process launch needs --config.coordinator_address=HOST:PORT, "
        "--config.num_processes=N and --config.process_id=I together; missing: "
        f"{unset} (leave all three unset to auto-detect SLURM / Open MPI / Cloud TPU)"
    )
  host, _, port = str(address).rpartition(":")
  if not host or not port.isdigit():
    raise config_lib.ConfigError(f"--config.coordinator_address must be HOST:PORT, got {address!r}")
  if num_processes < 1:
    raise config_lib.ConfigError(f"--config.num_processes must be >= 1, got {num_processes}")
  if not 0 <= process_id < num_processes:
    raise config_lib.ConfigError(
        f"--config.process_id must be in [0, {num_processes}) "
        f"(--config.num_processes={num_processes}), got {process_id}"
    )
  return {
      "coordinator_address": str(address),
      "num_processes": int(num_processes),
      "process_id": int(process_id),
  }


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


# ------------------------------------------------------------------------------------------
# The loop.
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
  """What `setup` builds for the loop: everything but the step itself."""

  config: ml_collections.ConfigDict
  workdir: str
  is_chief: bool
  state: TrainState  # host copy (restored or fresh)
  start_step: int
  local_batch: int  # examples per step on this process
  train_iter: Any  # grain iterator with get_state/set_state (the position is checkpointed)
  checkpointer: loop.Checkpointer
  writer: metric_writers.MetricWriter
  generator: inference.FaceGenerator  # one compiled G; the current weights are swapped in
  grid_batch: Optional[dict]  # fixed speech/faces for the image grids (None: first train batch)
  evaluator: Optional[evaluate_lib.PeriodicEvaluator]  # process 0, config.eval.every_steps > 0
  quality: Optional[monitor.QualityHistory]  # <workdir>/eval/history.jsonl (with the evaluator)
  clock: loop.TrainClock

  def current_generator(self, state, step: int) -> inference.FaceGenerator:
    host = parallel.unreplicate(state)
    return self.generator.with_variables(inference.generator_variables(host), step=step)


def setup(config: ml_collections.ConfigDict, workdir: str) -> Run:
  """Checks the config, restores or creates the state, opens data, checkpoints, logs, evaluation."""
  maybe_initialize_distributed(config)
  workdir = os.path.abspath(os.path.expanduser(workdir))
  local_batch = check_config(config)
  is_chief = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)

  info = input_pipeline.get_dataset_info(config.input)
  num_speakers = info.num_speakers
  meta = checkpoints.make_meta(config, num_speakers=num_speakers, speaker_names=info.speaker_names)
  manager = checkpoints.create_manager(workdir, max_to_keep=config.log.max_checkpoints)
  latest = _compatible_latest_step(manager, config, num_speakers, workdir)
  train_iter = _train_iterator(config, local_batch)
  state = _initial_state(config, num_speakers, manager, latest, train_iter)
  start_step = int(state.step)

  if is_chief:
    _write_run_files(workdir, config, info)
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)
  if start_step == 0:
    writer.write_hparams(_hparams(config))
  # Grids: in inference mode whatever config.eval.train_mode says (the periodic evaluation follows
  # it); the current weights are swapped in (one compiled function for the whole run).
  generator = inference.FaceGenerator.from_state(
      config, num_speakers, state, train_mode=False, speaker_names=tuple(info.speaker_names)
  )
  grid_batch = _grid_batch(config) if is_chief else None
  evaluator = quality = None
  if is_chief and config.eval.every_steps:  # the eval set is read once, on process 0
    evaluator, quality = _periodic_evaluation(config, workdir, generator.batch_size, start_step)
  minutes_before = loop.minutes_at_checkpoint(
      manager, latest, fallback=quality.minutes_before if quality else 0.0
  )
  clock = loop.TrainClock(minutes_before=minutes_before)
  return Run(
      config=config,
      workdir=workdir,
      is_chief=is_chief,
      state=state,
      start_step=start_step,
      local_batch=local_batch,
      train_iter=train_iter,
      checkpointer=loop.Checkpointer(manager, meta=meta, latest=latest, minutes=clock.minutes),
      writer=writer,
      generator=generator,
      grid_batch=grid_batch,
      evaluator=evaluator,
      quality=quality,
      clock=clock,
  )


def _compatible_latest_step(
    manager, config: ml_collections.ConfigDict, num_speakers: int, workdir: str
) -> Optional[int]:
  """The latest checkpoint's step (None: none); an incompatible one is refused before anything is
  built."""
  latest = checkpoints.latest_step(manager)
  if latest is not None:
    checkpoints.check_compatible(
        checkpoints.load_meta(manager, latest), config, num_speakers=num_speakers, where=workdir
    )
  return latest


def _train_iterator(config: ml_collections.ConfigDict, local_batch: int):
  """This process's shard of the training data, `local_batch` examples a step."""
  return input_pipeline.create_train_iterator(
      config.input,
      batch_size=local_batch,
      image_size=config.model.image_size,
      seed=config.input.shuffle_seed,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
  )


def _initial_state(
    config: ml_collections.ConfigDict, num_speakers: int, manager, latest: Optional[int], train_iter
) -> TrainState:
  """The host state: restored from step `latest` (with the data position), else a fresh one."""
  abstract = abstract_train_state(config, num_speakers)
  logging.info(
      "G parameters: %d, D parameters: %d",
      count_params(abstract.g_params),
      count_params(abstract.d_params),
  )
  if latest is None:
    return create_train_state(config, num_speakers, jax.random.PRNGKey(config.seed))
  state = checkpoints.restore(manager, latest, abstract_state=abstract, data_iterator=train_iter)
  logging.info("Resumed from %s at step %d.", manager.directory, int(state.step))
  return state


def _write_run_files(workdir: str, config: ml_collections.ConfigDict, info) -> None:
  """<workdir>/config.json and dataset.json (name, number and names of the speakers)."""
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  with open(os.path.join(workdir, "dataset.json"), "w") as f:
    dataset = {"dataset": info.name, "num_speakers": info.num_speakers}
    json.dump({**dataset, "speaker_names": list(info.speaker_names)}, f, indent=2)


def _periodic_evaluation(
    config: ml_collections.ConfigDict, workdir: str, batch_size: int, start_step: int
) -> tuple[evaluate_lib.PeriodicEvaluator, monitor.QualityHistory]:
  """The evaluator (its eval set read here, once) and the history it appends to."""
  evaluator = evaluate_lib.PeriodicEvaluator(config, batch_size=batch_size)
  logging.info(
      "Evaluating every %d steps on %d examples of split %r.",
      config.eval.every_steps,
      len(evaluator.eval_set.speakers),
      evaluator.split,
  )
  quality = monitor.QualityHistory(
      os.path.join(workdir, "eval", "history.jsonl"), start_step=start_step
  )
  return evaluator, quality


def _grid_batch(config: ml_collections.ConfigDict) -> Optional[dict]:
  """A fixed batch for the image grids: validation speech if there is such a split."""
  try:
    return next(
        iter(
            input_pipeline.create_eval_iterator(
                config.input,
                batch_size=config.log.num_images,
                image_size=config.model.image_size,
                process_index=0,
                process_count=1,
                max_examples=config.log.num_images,
            )
        )
    )
  except (ValueError, StopIteration) as e:
    logging.warning("No eval batch for image grids (%s); using the first training batch.", e)
    return None


def write_images(run: Run, state, step: int, batch: dict) -> None:
  """The generated-vs-real face grid: TensorBoard and <workdir>/samples/step_N.png (process 0)."""
  if not run.is_chief:
    return
  if run.grid_batch is None:  # no eval split: the first training batch seen here, kept
    run.grid_batch = {
        k: np.asarray(v).reshape((-1,) + v.shape[2:])[: run.config.log.num_images]
        for k, v in jax.device_get(batch).items()
    }
  generator = run.current_generator(state, step)
  images = generator.generate_preprocessed(np.asarray(run.grid_batch["waveform"]))
  grid = image_grid(images, run.grid_batch["face"])
  run.writer.write_images(step, {"faces/generated_top_real_bottom": grid[None]})
  _save_png(os.path.join(run.workdir, "samples", f"step_{step:07d}.png"), grid)


def run_evaluation(run: Run, state, step: int) -> None:
  """The periodic evaluation: TensorBoard scalars, eval/history.jsonl, eval/periodic/report.json."""
  start = time.time()
  report, scalars = run.evaluator(run.current_generator(state, step))
  scalars["eval/seconds"] = time.time() - start
  row = run.quality.append(step, run.clock.minutes(at=start), scalars)
  run.clock.eval_seconds += scalars["eval/seconds"]
  scalars["eval/train_minutes"] = row["train_minutes"]
  run.writer.write_scalars(step, scalars)
  report.write(os.path.join(run.workdir, "eval", "periodic"))  # the latest one
  logging.info(
      "eval at step %d (%s, %.1f s):\n%s",
      step,
      run.evaluator.split,
      scalars["eval/seconds"],
      report.summary(),
  )


def log_step(run: Run, step: int, scalars: dict[str, float], speed: str) -> None:
  run.writer.write_scalars(step, scalars)
  logging.info(
      "step %d/%d  d_loss %.4f  g_loss %.4f (adv %.4f fm %.4f l1 %.4f ce %.4f)%s",
      step,
      run.config.num_train_steps,
      scalars["d_loss"],
      scalars["g_loss"],
      scalars["g_adversarial"],
      scalars["g_feature_matching"],
      scalars["g_l1"],
      scalars["g_speaker_ce"],
      speed,
  )


def _evaluation_due(run: Run, step: int) -> bool:
  """Whether the periodic evaluation runs after `step` (process 0, config.eval.every_steps)."""
  return run.evaluator is not None and loop.due(
      step, run.config.eval.every_steps, run.config.num_train_steps
  )


def _step_metrics(run: Run) -> loop.StepMetrics:
  """The loop's metrics: fetched one step late, checked, watched for divergence."""
  return loop.StepMetrics(
      divergence=monitor.DivergenceMonitor(
          window=run.config.log.divergence_window, real_label=run.config.loss.real_label
      ),
      last_saved=lambda: run.checkpointer.last_saved,
  )


def _time_limit(run: Run, state, step: int) -> Optional[str]:
  """Why to stop after `step` when config.max_train_minutes is reached, else None.

  The run's last model is always evaluated: here, unless this step's periodic evaluation was due.
  """
  max_minutes = float(run.config.max_train_minutes or 0.0)
  if not max_minutes or run.clock.minutes() < max_minutes:
    return None
  minutes = run.clock.minutes()
  stopped_by = f"max_train_minutes={max_minutes:g} (at {minutes:.1f} training minutes)"
  if run.evaluator is not None and not _evaluation_due(run, step):
    run_evaluation(run, state, step)
  return stopped_by


def train_loop(
    run: Run, p_train_step: Callable, state, prefetcher, metrics: loop.StepMetrics, stop
) -> tuple[Any, int, Optional[str]]:
  """Steps run.start_step + 1 .. num_train_steps and their periodic actions.

  Returns (replicated state, the last step completed, why it stopped early: a signal's name, the
  time limit, or None when it finished or the data ran out).
  """
  log, num_steps, start_step = run.config.log, run.config.num_train_steps, run.start_step
  progress = loop.Progress(
      start_step=start_step,
      num_steps=num_steps,
      clock=run.clock,
      max_minutes=float(run.config.max_train_minutes or 0.0),
  )
  step = start_step
  for step in range(start_step + 1, num_steps + 1):  # `step` = iterations completed after it
    try:
      batch = next(prefetcher)
    except StopIteration:
      logging.warning("The training data ran out at step %d.", step - 1)
      return state, step - 1, None
    state, device_metrics = p_train_step(state, batch)
    if step == start_step + 1:
      progress.compiled(step, device_metrics)  # steps/s excludes compilation
    metrics.add(step, device_metrics)  # checks the previous step's
    if loop.due(step, log.checkpoint_every_steps, num_steps) or stop.signal_name:
      metrics.flush()  # nothing unchecked goes into a checkpoint
    if loop.due(step, log.every_steps, num_steps):
      scalars = metrics.means(step)
      speed_scalars, speed = progress.report(step)
      log_step(run, step, {**scalars, **speed_scalars}, speed)
    if loop.due(step, log.image_every_steps, num_steps):
      write_images(run, state, step, batch)
    if _evaluation_due(run, step):
      run_evaluation(run, state, step)
    if loop.due(step, log.checkpoint_every_steps, num_steps):
      run.checkpointer.save(step, state, prefetcher.last_state)
    if stop.signal_name is not None:
      return state, step, stop.signal_name
    stopped_by = _time_limit(run, state, step)
    if stopped_by:
      return state, step, stopped_by
  return state, step, None


def _log_end(run: Run, step: int, stopped_by: Optional[str]) -> None:
  where = run.checkpointer.manager.directory
  if stopped_by:
    logging.warning("Stopped by %s after step %d; checkpoint saved in %s.", stopped_by, step, where)
  else:
    logging.info("Finished at step %d; checkpoint in %s.", step, where)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains (resuming from the workdir's latest checkpoint); returns the final host state."""
  run = setup(config, workdir)
  p_train_step = make_p_train_step(config, run.generator.num_speakers)
  state = parallel.replicate(run.state)
  prefetcher = parallel.prefetch_to_device(
      run.train_iter, size=2, get_state=run.train_iter.get_state
  )
  checkpointer, metrics = run.checkpointer, _step_metrics(run)
  logging.info(
      "Training from step %d to %d, %d examples per step (%d per process, %d local devices).",
      run.start_step,
      config.num_train_steps,
      config.batch_size,
      run.local_batch,
      jax.local_device_count(),
  )
  completed = False
  try:
    with loop.StopRequest() as stop:
      state, step, stopped_by = train_loop(run, p_train_step, state, prefetcher, metrics, stop)
      metrics.flush()
      if checkpointer.last_saved != step:
        checkpointer.save(step, state, prefetcher.last_state)
      checkpointer.manager.wait_until_finished()
    metrics.log_skipped(step - run.start_step)
    _log_end(run, step, stopped_by)
    completed = True
  except Exception as e:  # pylint: disable=broad-except
    full = checkpointer.disk_full(e)
    if full is not None:
      raise full from e
    raise
  finally:
    prefetcher.close()
    checkpointer.close(completed=completed)
    run.writer.flush()
  return parallel.unreplicate_to_host(state)
