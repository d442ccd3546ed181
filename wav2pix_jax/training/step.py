"""The Wav2Pix training step: one state pytree, one pure step (D update, then G update against the
updated D), pmapped once. No files, no loop: training/loop.py runs it."""

import functools
from typing import Any, Callable, NamedTuple, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from wav2pix_jax.models import factory
from wav2pix_jax.training import augment
from wav2pix_jax.training import expression_loss
from wav2pix_jax.training import losses
from wav2pix_jax.training import parallel

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
  # Running means of D's scores on real pairs and on generated faces, {"real", "fake"} float32
  # scalars (config.loss.lecam > 0: the LeCam regulariser's anchors), else None.
  d_score_ema: PyTree = None


# ------------------------------------------------------------------------------------------
# State.
# ------------------------------------------------------------------------------------------


def make_optimizers(
    config: ml_collections.ConfigDict,
) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
  """Adam for each net, from config.optim.g / config.optim.d (fields checked by
  config_lib.validate)."""

  def adam(section: str) -> optax.GradientTransformation:
    cfg = config.optim[section]
    return optax.adam(cfg.learning_rate, b1=cfg.b1, b2=cfg.b2)

  return adam("g"), adam("d")


def create_train_state(
    config: ml_collections.ConfigDict, num_speakers: int, rng: jax.Array
) -> TrainState:
  """Initialises both nets and both optimizers (N(0, 0.02) weights; see models.py).

  The initialiser is compiled once per (config, num_speakers) and reused for every rng.
  """
  key = (config.to_json_best_effort(sort_keys=True), num_speakers)
  init = _COMPILED_INITS.pop(key, None) or jax.jit(_initializer(config, num_speakers))
  _COMPILED_INITS[key] = init  # the most recently used last
  while len(_COMPILED_INITS) > _MAX_COMPILED_INITS:
    del _COMPILED_INITS[next(iter(_COMPILED_INITS))]
  return init(rng)


# create_train_state's compiled initialisers, least recently used first.
_COMPILED_INITS: dict[tuple[str, int], Callable[[jax.Array], "TrainState"]] = {}
_MAX_COMPILED_INITS = 8


def _initializer(
    config: ml_collections.ConfigDict, num_speakers: int
) -> Callable[[jax.Array], TrainState]:
  g_model = factory.make_generator(config.model, num_speakers)
  d_model = factory.make_discriminator(config.model)
  g_tx, d_tx = make_optimizers(config)
  size = config.model.image_size
  ema = config.optim.g.ema_decay > 0
  lecam = config.loss.lecam > 0

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
        g_ema_params=g_vars["params"] if ema else None,
        d_score_ema=initial_score_ema() if lecam else None,
    )

  return init


def initial_score_ema() -> dict[str, jax.Array]:
  """LeCam's running means of D's real and fake scores before the first step: 0 (as MAGVIT)."""
  return {"real": jnp.zeros((), jnp.float32), "fake": jnp.zeros((), jnp.float32)}


def abstract_train_state(config: ml_collections.ConfigDict, num_speakers: int) -> TrainState:
  """Shapes and dtypes of the state, nothing allocated (the restore target)."""
  return jax.eval_shape(
      functools.partial(create_train_state, config, num_speakers), jax.random.PRNGKey(0)
  )


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


def d_loss(
    d_params: PyTree,
    d_spectral: PyTree,
    images: jax.Array,
    embedding: jax.Array,
    *,
    d_model,
    real_label: float,
    r1_weight: float = 0.0,
    gan: str = "lsgan",
    lecam_weight: float = 0.0,
    score_ema: Optional[dict] = None,
) -> tuple[jax.Array, tuple[dict, dict, PyTree]]:
  """(D loss, (terms, mean scores, D's spectral vectors after the call)) on d_inputs' output.

  One D call on [real; fake; wrong], each conditioned on `embedding` (D has no batch statistics,
  so this equals three calls). `gan`: losses.GAN_LOSSES; `lecam_weight` > 0 adds the LeCam
  regulariser against `score_ema` (the running means of the real and fake scores).
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
      real_scores=real, fake_scores=fake, wrong_scores=wrong, real_label=real_label, gan=gan
  )
  if lecam_weight > 0:
    terms["d_lecam"] = losses.lecam(
        real_scores=real,
        fake_scores=fake,
        ema_real=score_ema["real"],
        ema_fake=score_ema["fake"],
    )
    loss = loss + lecam_weight * terms["d_lecam"]
  if r1_weight > 0:
    reals = images[: embedding.shape[0]]
    # The penalty's D is the one that scored: the power iteration of this call, not the vectors
    # before it (at step 0 those are random and unrelated, sigma = u^T W v near 0: R1 ~1e13).
    spectral = d_vars["spectral"]
    terms["d_r1"] = losses.r1_penalty(d_params, spectral, reals, embedding, d_model=d_model)
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
    g_out: GForward,
    *,
    d_model,
    d_tx: optax.GradientTransformation,
    real_label: float,
    axis_name: Optional[str] = None,
    skip_nonfinite: bool = False,
    augment_policy: str = "",
    r1_weight: float = 0.0,
    augment_rng: Optional[jax.Array] = None,
    gan: str = "lsgan",
    lecam_weight: float = 0.0,
    lecam_decay: float = 0.99,
) -> tuple[TrainState, Metrics]:
  """One D update on real (0.9), generated (0) and wrong-face (0) pairs; G's params are untouched.

  `g_out`: this step's G forward (g_forward; train_step passes the one both phases share). Its
  faces and speech embedding are constants for D: no gradient flows back into G.
  `augment_policy`: DiffAugment on every image D sees (random draws from `augment_rng`);
  `r1_weight` > 0 adds the R1 penalty r1_weight/2 * E|d D(real, e) / d real|^2; `lecam_weight` > 0
  the LeCam regulariser, whose running means of the real and fake scores (state.d_score_ema) move
  towards this batch's (global) means by `lecam_decay` after the update.
  """
  images, embedding = d_inputs(batch, g_out, augment_policy=augment_policy, augment_rng=augment_rng)
  loss_fn = functools.partial(
      d_loss,
      d_model=d_model,
      real_label=real_label,
      r1_weight=r1_weight,
      gan=gan,
      lecam_weight=lecam_weight,
      score_ema=state.d_score_ema,
  )
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
  if lecam_weight > 0:
    means = {"real": metrics["d_score_real"], "fake": metrics["d_score_fake"]}
    new = new.replace(
        d_score_ema=jax.tree.map(
            lambda e, m: lecam_decay * e + (1.0 - lecam_decay) * m, state.d_score_ema, means
        )
    )
  if skip_nonfinite:
    new = _skip_if_nonfinite(new, state, metrics, "d")
  return new, metrics


def _d_on_fakes_and_reals(state, fakes, face, condition, d_model, loss_weights, augment_rng):
  """One D call on [fake; real] (DiffAugment'ed if asked): the fakes' scores, both features."""
  images = jnp.concatenate([fakes, face])
  if loss_weights.diff_augment:
    images = augment.diff_augment(images, augment_rng, loss_weights.diff_augment)
  scores, features = d_model.apply(
      {"params": state.d_params, "spectral": state.d_spectral},
      images,
      jnp.concatenate([condition, condition]),
      update_spectral=False,
  )
  fake_scores, _ = jnp.split(scores, 2)
  fake_features, real_features = jnp.split(features, 2)
  return fake_scores, fake_features, real_features


def g_loss_and_grads(
    state: TrainState,
    batch: dict,
    g_out: GForward,
    *,
    d_model,
    loss_weights: ml_collections.ConfigDict,
    axis_name: Optional[str] = None,
    augment_rng: Optional[jax.Array] = None,
    expression: Optional[expression_loss.ExpressionLoss] = None,
) -> tuple[jax.Array, tuple, PyTree]:
  """(G loss, (terms, speaker accuracy), d loss / d g_params) against state's D, via g_out's vjp.

  The loss is differentiated w.r.t. G's outputs (through D), and that cotangent is pulled back
  through the saved forward: the same gradient as differentiating a fresh forward, without one.
  D's speech-embedding input is a constant unless loss_weights.adversarial_into_encoder (the
  authors' code): otherwise G could raise D's score by moving the condition, not the face.
  `expression` (expression_loss.make) adds fer's expression terms.
  """
  face = batch["face"]

  def loss_fn(outputs):
    fakes, embedding, logits = outputs
    condition = (
        embedding if loss_weights.adversarial_into_encoder else jax.lax.stop_gradient(embedding)
    )
    fake_scores, fake_features, real_features = _d_on_fakes_and_reals(
        state, fakes.astype(face.dtype), face, condition, d_model, loss_weights, augment_rng
    )
    terms = {
        "g_adversarial": losses.generator_adversarial(
            fake_scores=fake_scores, gan=loss_weights.gan
        ),
        "g_feature_matching": losses.feature_matching(
            fake_features=fake_features, real_features=real_features, axis_name=axis_name
        ),
        "g_l1": losses.l1(predictions=fakes, targets=face, low_pass=loss_weights.l1_low_pass),
        "g_speaker_ce": losses.speaker_cross_entropy(logits=logits, labels=batch["speaker"]),
    }
    loss = (
        loss_weights.adversarial * terms["g_adversarial"]
        + loss_weights.feature_matching * terms["g_feature_matching"]
        + loss_weights.l1 * terms["g_l1"]
        + loss_weights.speaker_ce * terms["g_speaker_ce"]
    )
    if expression is not None:
      extra = expression.terms(fakes, face)
      terms.update(extra)
      loss = loss + expression.weighted(extra)
    accuracy = losses.speaker_accuracy(logits=logits, labels=batch["speaker"])
    return loss, (terms, accuracy)

  (loss, aux), cotangents = jax.value_and_grad(loss_fn, has_aux=True)(g_out.outputs)
  return loss, aux, g_out.pullback(cotangents)


def g_update(
    state: TrainState,
    batch: dict,
    g_out: GForward,
    *,
    d_model,
    g_tx: optax.GradientTransformation,
    loss_weights: ml_collections.ConfigDict,
    axis_name: Optional[str] = None,
    skip_nonfinite: bool = False,
    augment_rng: Optional[jax.Array] = None,
    expression: Optional[expression_loss.ExpressionLoss] = None,
) -> tuple[TrainState, Metrics]:
  """One G-side update (encoder, classifier, generator) against the current D; D is untouched.

  G loss = w_adv MSE(D(G(e), e), 1) + w_fm feature matching + w_l1 L1(G(e), face)
      + w_ce CE(speaker).
  `g_out`: this step's shared G forward (g_forward, from train_step); BatchNorm statistics are taken
  from it.
  """
  loss, (terms, accuracy), grads = g_loss_and_grads(
      state,
      batch,
      g_out,
      d_model=d_model,
      loss_weights=loss_weights,
      axis_name=axis_name,
      augment_rng=augment_rng,
      expression=expression,
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
    expression: Optional[expression_loss.ExpressionLoss] = None,
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
      g_out,
      d_model=d_model,
      d_tx=d_tx,
      real_label=loss_cfg.real_label,
      axis_name=axis_name,
      skip_nonfinite=skip_nonfinite,
      augment_policy=loss_cfg.diff_augment,
      r1_weight=loss_cfg.r1,
      augment_rng=d_augment_rng,
      gan=loss_cfg.gan,
      lecam_weight=loss_cfg.lecam,
      lecam_decay=loss_cfg.lecam_decay,
  )
  state, g_metrics = g_update(
      state,
      batch,
      g_out,
      d_model=d_model,
      g_tx=g_tx,
      loss_weights=loss_cfg,
      axis_name=axis_name,
      skip_nonfinite=skip_nonfinite,
      augment_rng=g_augment_rng,
      expression=expression,
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
      expression=expression_loss.make(config.loss),
  )


def make_p_train_step(config: ml_collections.ConfigDict, num_speakers: int) -> Callable:
  """The pmapped train step (state donated)."""
  return parallel.pmap(make_train_step(config, num_speakers, axis_name=parallel.AXIS_NAME))
