"""Wav2Pix losses: pure, keyword-only functions of arrays (no models, no config)."""

from typing import Optional

import jax
import jax.numpy as jnp
import optax


def at_least_f32(x: jax.Array) -> jax.Array:
  """x in at least float32 (bfloat16/float16 up-cast; float64, in x64 tests, kept)."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def lsgan(*, scores: jax.Array, target: float) -> jax.Array:
  """Least-squares GAN term: mean((scores - target)^2) over the batch."""
  return jnp.mean(jnp.square(at_least_f32(scores) - target))


def discriminator_loss(
    *,
    real_scores: jax.Array,
    fake_scores: jax.Array,
    wrong_scores: jax.Array,
    real_label: float = 0.9,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Matching-aware LSGAN D loss: real pairs -> real_label, fakes -> 0, wrong faces -> 0.

  Returns (total, {"d_real", "d_fake", "d_wrong"}).
  """
  terms = {
      "d_real": lsgan(scores=real_scores, target=real_label),
      "d_fake": lsgan(scores=fake_scores, target=0.0),
      "d_wrong": lsgan(scores=wrong_scores, target=0.0),
  }
  return terms["d_real"] + terms["d_fake"] + terms["d_wrong"], terms


def generator_adversarial(*, fake_scores: jax.Array) -> jax.Array:
  """LSGAN G term: the generator wants D to score its fakes as 1."""
  return lsgan(scores=fake_scores, target=1.0)


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


def l1(*, predictions: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean absolute error."""
  return jnp.mean(jnp.abs(at_least_f32(predictions) - at_least_f32(targets)))


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
