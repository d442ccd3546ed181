"""Wav2Pix losses: pure, keyword-only functions of arrays (no models, no config)."""

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import optax

from wav2pix_jax.config_lib import GAN_LOSSES


def at_least_f32(x: jax.Array) -> jax.Array:
  """x in at least float32 (bfloat16/float16 up-cast; float64, in x64 tests, kept)."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def lsgan(*, scores: jax.Array, target: float) -> jax.Array:
  """Least-squares GAN term: mean((scores - target)^2) over the batch."""
  return jnp.mean(jnp.square(at_least_f32(scores) - target))


# loss.gan, config_lib.GAN_LOSSES: "lsgan" (the paper's least squares: D's real target is
# loss.real_label), "hinge" and "logistic" (the non-saturating loss of Goodfellow et al.) on D's raw
# scores; wrong-face pairs count as fakes in every one.


def _d_term(scores: jax.Array, *, real: bool, gan: str, real_label: float) -> jax.Array:
  """One D term: `scores` pushed towards "real" or "fake" under the objective `gan`."""
  scores = at_least_f32(scores)
  if gan == "lsgan":
    return lsgan(scores=scores, target=real_label if real else 0.0)
  if gan == "hinge":
    return jnp.mean(jax.nn.relu(1.0 - scores if real else 1.0 + scores))
  if gan == "logistic":
    return jnp.mean(jax.nn.softplus(-scores if real else scores))
  raise ValueError(f"unknown GAN loss {gan!r}; expected one of {GAN_LOSSES}")


def discriminator_loss(
    *,
    real_scores: jax.Array,
    fake_scores: jax.Array,
    wrong_scores: jax.Array,
    real_label: float = 0.9,
    gan: str = "lsgan",
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Matching-aware D loss: real pairs are real, generated faces and wrong faces are fakes.

  `gan` = "lsgan" (real pairs -> real_label, the others -> 0), "hinge" or "logistic"
  (`real_label` unused). Returns (total, {"d_real", "d_fake", "d_wrong"}).
  """
  term = functools.partial(_d_term, gan=gan, real_label=real_label)
  terms = {
      "d_real": term(real_scores, real=True),
      "d_fake": term(fake_scores, real=False),
      "d_wrong": term(wrong_scores, real=False),
  }
  return terms["d_real"] + terms["d_fake"] + terms["d_wrong"], terms


def generator_adversarial(*, fake_scores: jax.Array, gan: str = "lsgan") -> jax.Array:
  """G's adversarial term: lsgan MSE(scores, 1); hinge -mean(scores); logistic softplus(-scores)."""
  scores = at_least_f32(fake_scores)
  if gan == "lsgan":
    return lsgan(scores=scores, target=1.0)
  if gan == "hinge":
    return -jnp.mean(scores)
  if gan == "logistic":
    return jnp.mean(jax.nn.softplus(-scores))
  raise ValueError(f"unknown GAN loss {gan!r}; expected one of {GAN_LOSSES}")


def lecam(
    *, real_scores: jax.Array, fake_scores: jax.Array, ema_real: jax.Array, ema_fake: jax.Array
) -> jax.Array:
  """LeCam regulariser (Tseng et al. 2021, as in MAGVIT): real scores held under the running mean
  of the fake scores and fake scores over that of the real ones, so D's scores cannot run apart
  on small data: mean(relu(real - ema_fake)^2) + mean(relu(ema_real - fake)^2)."""
  real = at_least_f32(real_scores)
  fake = at_least_f32(fake_scores)
  return jnp.mean(jnp.square(jax.nn.relu(real - ema_fake))) + jnp.mean(
      jnp.square(jax.nn.relu(ema_real - fake))
  )


def feature_matching(
    *,
    fake_features: jax.Array,
    real_features: jax.Array,
    axis_name: Optional[str] = None,
) -> jax.Array:
  """MSE between the batch means of D's features on fakes and on reals (reals are a constant).

  With `axis_name` (inside pmap), the batch means are GLOBAL means over every device's batch,
  so the loss on N devices equals the loss on one device with the whole batch.
  """
  fake_mean = jnp.mean(at_least_f32(fake_features), axis=0)
  real_mean = jnp.mean(at_least_f32(jax.lax.stop_gradient(real_features)), axis=0)
  if axis_name is not None:
    fake_mean = jax.lax.pmean(fake_mean, axis_name)
    real_mean = jax.lax.pmean(real_mean, axis_name)
  return jnp.mean(jnp.square(fake_mean - real_mean))


def l1(*, predictions: jax.Array, targets: jax.Array, low_pass: int = 1) -> jax.Array:
  """Mean absolute error. With low_pass = k > 1 (images [N, H, W, C], k dividing H and W), of the
  k x k block means: the L1 then pins only what is coarser than k pixels and leaves the finer
  detail to the adversarial term."""
  predictions, targets = at_least_f32(predictions), at_least_f32(targets)
  if low_pass > 1:
    predictions, targets = block_mean(predictions, low_pass), block_mean(targets, low_pass)
  return jnp.mean(jnp.abs(predictions - targets))


def block_mean(images: jax.Array, k: int) -> jax.Array:
  """[N, H / k, W / k, C]: the means of the k x k blocks of images [N, H, W, C]."""
  n, h, w, c = images.shape
  if h % k or w % k:
    raise ValueError(f"block size {k} does not divide the images' {h} x {w}")
  return images.reshape(n, h // k, k, w // k, k, c).mean(axis=(2, 4))


def speaker_cross_entropy(*, logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy of the auxiliary speaker classifier against integer labels."""
  return jnp.mean(
      optax.softmax_cross_entropy_with_integer_labels(
          at_least_f32(logits), labels.astype(jnp.int32)
      )
  )


def speaker_accuracy(*, logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Share of the batch whose speaker the auxiliary classifier gets right."""
  return jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))


def r1_penalty(d_params, d_spectral, reals, embedding, *, d_model) -> jax.Array:
  """E|d D(real, e) / d real|^2 over the batch (D's power iteration not advanced)."""

  def real_scores_sum(x):
    scores, _ = d_model.apply(
        {"params": d_params, "spectral": d_spectral}, x, embedding, update_spectral=False
    )
    return jnp.sum(at_least_f32(scores))

  grads = jax.grad(real_scores_sum)(reals)
  return jnp.mean(jnp.sum(jnp.square(grads), axis=(1, 2, 3)))
