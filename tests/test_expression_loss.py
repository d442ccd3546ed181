"""fer's expression classifier as a training loss (training/expression_loss.py): its jnp
preprocessing against the evaluation's cv2-exact one, the terms' values and gradients, and the
train step with the loss on and off."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wav2pix_jax import config_lib
from wav2pix_jax.evaluation import emotion
from wav2pix_jax.training import expression_loss
from wav2pix_jax.training import step as step_lib

import helpers


@pytest.fixture(scope="module")
def classifier():
  return emotion.load()


def _faces(n: int, size: int, seed: int = 0) -> np.ndarray:
  """uint8 RGB images with smooth structure (so a resize has something to interpolate)."""
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(0, 255, (n, 8, 8, 3))
  return np.clip(np.kron(coarse, np.ones((1, size // 8, size // 8, 1))), 0, 255).astype(np.uint8)


def _to_float(images: np.ndarray) -> np.ndarray:
  return images.astype(np.float32) / 127.5 - 1.0


@pytest.mark.parametrize("size", [64, 32, 128])
def test_preprocess_float_is_the_evaluations_preprocessing_without_its_rounding(size):
  images = _faces(3, size)
  want = emotion.preprocess(images)
  got = np.asarray(emotion.preprocess_float(_to_float(images)))
  assert got.shape == want.shape == (3, 64, 64, 1)
  # cv2 rounds the luma (and the resized values) to grey levels: half a level, 1/255 in [-1, 1].
  np.testing.assert_allclose(got, want, atol=1.01 / 255 if size == 64 else 2.01 / 255)


def test_layer_outputs_are_the_classifiers_probabilities_before_the_softmax(classifier):
  x = emotion.preprocess(_faces(4, 64))
  logits, features = classifier.layer_outputs(x, (classifier.logits_layer, "add_4"))
  assert classifier.features_layer == "add_4" and features.shape == (4, 4, 4, 128)
  np.testing.assert_allclose(
      jax.nn.softmax(logits), classifier.probabilities_preprocessed(x), rtol=1e-4, atol=1e-6
  )


def _loss(classifier, expression=1.0, features=1.0):
  return expression_loss.ExpressionLoss(classifier, expression, features)


def test_terms_are_zero_for_the_real_face_and_positive_for_another(classifier):
  faces = jnp.asarray(_to_float(_faces(4, 64, seed=1)))
  others = jnp.asarray(_to_float(_faces(4, 64, seed=2)))
  loss = _loss(classifier, 2.0, 3.0)
  same = loss.terms(faces, faces)
  assert set(same) == {"g_expression", "g_expression_features"}
  assert abs(float(same["g_expression"])) < 1e-6 and float(same["g_expression_features"]) == 0.0
  other = loss.terms(others, faces)
  assert float(other["g_expression"]) > 1e-3 and float(other["g_expression_features"]) > 1e-3
  want = 2.0 * other["g_expression"] + 3.0 * other["g_expression_features"]
  np.testing.assert_allclose(loss.weighted(other), want, rtol=1e-6)
  assert set(_loss(classifier, 0.0, 1.0).terms(others, faces)) == {"g_expression_features"}
  assert set(_loss(classifier, 1.0, 0.0).terms(others, faces)) == {"g_expression"}


def test_the_gradient_reaches_the_generated_face_only(classifier):
  faces = jnp.asarray(_to_float(_faces(2, 64, seed=3)))
  fakes = jnp.asarray(_to_float(_faces(2, 64, seed=4)))
  loss = _loss(classifier)
  g_fake, g_real = jax.grad(lambda f, r: loss.weighted(loss.terms(f, r)), argnums=(0, 1))(
      fakes, faces
  )
  assert np.isfinite(np.asarray(g_fake)).all() and float(jnp.abs(g_fake).max()) > 0
  assert float(jnp.abs(g_real).max()) == 0.0  # the real face's side is a constant


def test_make_is_none_when_off_and_the_loss_when_on():
  assert expression_loss.make(helpers.tiny_config().loss) is None
  made = expression_loss.make(helpers.tiny_config(**{"loss.expression_features": 0.5}).loss)
  assert made.expression_weight == 0.0 and made.features_weight == 0.5


def test_bad_weights_are_refused_naming_the_field():
  with pytest.raises(ValueError, match=r"loss\.expression"):
    config_lib.validate(helpers.tiny_config(**{"loss.expression": -1.0}))


def test_the_train_step_logs_and_trains_with_the_expression_terms():
  config = helpers.tiny_config(**{"loss.expression": 1.0, "loss.expression_features": 1.0})
  num_speakers = helpers.NUM_SPEAKERS
  state = step_lib.create_train_state(config, num_speakers, jax.random.PRNGKey(0))
  train_step = jax.jit(step_lib.make_train_step(config, num_speakers, axis_name=None))
  batch = helpers.random_batch(config)
  new, metrics = train_step(state, batch)
  assert {"g_expression", "g_expression_features"} <= set(metrics)
  assert all(np.isfinite(float(metrics[k])) for k in ("g_expression", "g_expression_features"))
  # G's loss is the paper's terms plus the expression terms, each at its weight (1 here).
  w = config.loss
  paper = sum(
      w[name] * float(metrics[f"g_{name}"])
      for name in ("adversarial", "feature_matching", "l1", "speaker_ce")
  )
  extra = float(metrics["g_expression"]) + float(metrics["g_expression_features"])
  np.testing.assert_allclose(float(metrics["g_loss"]), paper + extra, rtol=1e-5)
  assert int(new.step) == 1 and float(metrics["g_grad_norm"]) > 0
