"""Losses on values worked out by hand, and feature matching under pmap == on one device."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wav2pix_jax.training import losses


def test_lsgan_hand_values():
  # (1-0)^2, (3-0)^2 -> mean 5 ; against 1: 0, 4 -> 2
  assert float(losses.lsgan(scores=jnp.array([1.0, 3.0]), target=0.0)) == pytest.approx(5.0)
  assert float(losses.lsgan(scores=jnp.array([1.0, 3.0]), target=1.0)) == pytest.approx(2.0)


def test_lsgan_is_keyword_only():
  with pytest.raises(TypeError, match=r"takes 0 positional arguments but 2 were given"):
    losses.lsgan(jnp.array([1.0]), 0.0)  # pylint: disable=too-many-function-args


def test_discriminator_loss_hand_values():
  total, terms = losses.discriminator_loss(
      real_scores=jnp.array([0.9, 1.9]),  # (0)^2, (1)^2 -> 0.5
      fake_scores=jnp.array([1.0, -1.0]),  # 1, 1 -> 1
      wrong_scores=jnp.array([2.0, 0.0]),  # 4, 0 -> 2
  )
  assert float(terms["d_real"]) == pytest.approx(0.5)
  assert float(terms["d_fake"]) == pytest.approx(1.0)
  assert float(terms["d_wrong"]) == pytest.approx(2.0)
  assert float(total) == pytest.approx(3.5)


def test_discriminator_loss_real_label_is_a_parameter():
  total, _ = losses.discriminator_loss(
      real_scores=jnp.array([1.0]),
      fake_scores=jnp.array([0.0]),
      wrong_scores=jnp.array([0.0]),
      real_label=1.0,
  )
  assert float(total) == 0.0


def test_generator_adversarial_targets_one():
  # (0-1)^2, (3-1)^2 -> (1 + 4) / 2
  assert float(losses.generator_adversarial(fake_scores=jnp.array([0.0, 3.0]))) == pytest.approx(
      2.5
  )


def test_hinge_and_logistic_hand_values():
  real, fake, wrong = jnp.array([2.0, 0.5]), jnp.array([-2.0, 0.0]), jnp.array([1.0, -0.5])
  # hinge: relu(1 - real) = 0, 0.5 -> 0.25; relu(1 + fake) = 0, 1 -> 0.5; wrong: 2, 0.5 -> 1.25
  total, terms = losses.discriminator_loss(
      real_scores=real, fake_scores=fake, wrong_scores=wrong, gan="hinge"
  )
  assert [float(terms[k]) for k in ("d_real", "d_fake", "d_wrong")] == pytest.approx(
      [0.25, 0.5, 1.25]
  )
  assert float(total) == pytest.approx(2.0)
  assert float(losses.generator_adversarial(fake_scores=fake, gan="hinge")) == pytest.approx(1.0)
  # logistic: softplus(-real), softplus(fake), softplus(wrong); G: softplus(-fake)
  sp = lambda x: math.log1p(math.exp(x))
  _, terms = losses.discriminator_loss(
      real_scores=real, fake_scores=fake, wrong_scores=wrong, gan="logistic", real_label=0.3
  )
  assert float(terms["d_real"]) == pytest.approx((sp(-2.0) + sp(-0.5)) / 2)
  assert float(terms["d_fake"]) == pytest.approx((sp(-2.0) + sp(0.0)) / 2)
  assert float(terms["d_wrong"]) == pytest.approx((sp(1.0) + sp(-0.5)) / 2)
  want = (sp(2.0) + sp(0.0)) / 2
  assert float(losses.generator_adversarial(fake_scores=fake, gan="logistic")) == pytest.approx(
      want
  )
  with pytest.raises(ValueError, match="unknown GAN loss 'wgan'"):
    losses.generator_adversarial(fake_scores=fake, gan="wgan")


def test_lecam_penalises_only_scores_past_the_other_sides_running_mean():
  # real 1.0, 0.2 against ema_fake 0.4: relu -> 0.6, 0 -> mean 0.18;
  # fake 0.0, 0.9 against ema_real 0.5: relu(0.5 - fake) -> 0.5, 0 -> mean 0.125
  value = losses.lecam(
      real_scores=jnp.array([1.0, 0.2]),
      fake_scores=jnp.array([0.0, 0.9]),
      ema_real=jnp.float32(0.5),
      ema_fake=jnp.float32(0.4),
  )
  assert float(value) == pytest.approx(0.18 + 0.125)


def test_feature_matching_compares_batch_means():
  fake = jnp.array([[1.0, 2.0], [3.0, 4.0]])  # batch mean [2, 3]
  real = jnp.array([[0.0, 0.0], [2.0, 0.0]])  # batch mean [1, 0]
  # ((2-1)^2 + (3-0)^2) / 2 = 5
  assert float(losses.feature_matching(fake_features=fake, real_features=real)) == pytest.approx(
      5.0
  )
  # Per-sample differences would give a different number: it really is the batch MEAN.
  per_sample = float(jnp.mean(jnp.square(fake - real)))
  assert per_sample != pytest.approx(5.0)


def test_feature_matching_real_side_gets_no_gradient():
  fake = jnp.array([[1.0, 2.0], [3.0, 4.0]])
  real = jnp.array([[0.0, 0.0], [2.0, 0.0]])
  g_fake, g_real = jax.grad(
      lambda f, r: losses.feature_matching(fake_features=f, real_features=r), argnums=(0, 1)
  )(fake, real)
  np.testing.assert_allclose(g_real, 0.0)
  # d/dfake_ij = 2 (mean_j - real_mean_j) / num_features / batch = (mean - real_mean) / 2
  np.testing.assert_allclose(g_fake, [[0.5, 1.5], [0.5, 1.5]])


def test_l1_hand_values():
  assert float(
      losses.l1(predictions=jnp.array([1.0, -1.0]), targets=jnp.array([0.0, 1.0]))
  ) == pytest.approx(1.5)


def test_low_pass_l1_compares_block_means_only():
  rng = np.random.default_rng(0)
  fake, real = rng.uniform(-1, 1, (2, 2, 8, 8, 3)).astype(np.float32)
  assert float(losses.l1(predictions=fake, targets=real, low_pass=1)) == pytest.approx(
      float(np.abs(fake - real).mean()), rel=1e-6
  )
  blocks = lambda x: x.reshape(2, 4, 2, 4, 2, 3).mean(axis=(2, 4))
  assert float(losses.l1(predictions=fake, targets=real, low_pass=2)) == pytest.approx(
      float(np.abs(blocks(fake) - blocks(real)).mean()), rel=1e-5
  )
  # A checkerboard on top of the real face has the same 2 x 2 block means: no low-pass L1 (its
  # detail is the adversarial term's to judge), a plain L1 of 0.5.
  checker = 0.5 * (-1.0) ** np.add.outer(np.arange(8), np.arange(8))[None, :, :, None]
  textured = real + checker.astype(np.float32)
  assert float(losses.l1(predictions=textured, targets=real, low_pass=2)) < 1e-6
  assert float(losses.l1(predictions=textured, targets=real)) == pytest.approx(0.5)
  grad = jax.grad(lambda f: losses.l1(predictions=f, targets=real, low_pass=4))(fake)
  assert np.isfinite(np.asarray(grad)).all() and float(jnp.abs(grad).max()) > 0
  with pytest.raises(ValueError, match="block size 3 does not divide the images' 8 x 8"):
    losses.l1(predictions=fake, targets=real, low_pass=3)


@pytest.mark.slow
def test_speaker_cross_entropy_hand_values():
  # uniform logits over 4 speakers -> log 4 ; a very confident right answer -> ~0
  ce = losses.speaker_cross_entropy(logits=jnp.zeros((2, 4)), labels=jnp.array([0, 3]))
  assert float(ce) == pytest.approx(math.log(4.0), rel=1e-6)
  confident = losses.speaker_cross_entropy(logits=jnp.array([[0.0, 100.0]]), labels=jnp.array([1]))
  assert float(confident) == pytest.approx(0.0, abs=1e-6)
  acc = losses.speaker_accuracy(
      logits=jnp.array([[0.0, 1.0], [1.0, 0.0]]), labels=jnp.array([1, 1])
  )
  assert float(acc) == pytest.approx(0.5)


def test_feature_matching_under_pmap_equals_one_device():
  """Global batch means: value AND pmean'ed gradient on 2 devices == the single-device ones."""
  n = jax.local_device_count()
  assert n == 2, "conftest fakes 2 CPU devices"
  rng = np.random.default_rng(0)
  # Very different per-device statistics so local means would give a different answer.
  x = jnp.asarray(rng.normal(size=(4, 3)) + np.array([[0.0], [0.0], [5.0], [5.0]]), jnp.float32)
  real = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3)), jnp.float32)

  def loss(w, x, real, axis_name=None):
    return losses.feature_matching(fake_features=x @ w, real_features=real, axis_name=axis_name)

  want_value, want_grad = jax.value_and_grad(loss)(w, x, real)

  @functools.partial(jax.pmap, axis_name="batch", in_axes=(None, 0, 0))
  def per_device(w, x, real):
    value, grad = jax.value_and_grad(functools.partial(loss, axis_name="batch"))(w, x, real)
    return value, jax.lax.pmean(grad, "batch")

  value, grad = per_device(w, x.reshape(2, 2, 3), real.reshape(2, 2, 3))
  np.testing.assert_allclose(value, [want_value] * 2, rtol=1e-5)
  np.testing.assert_allclose(grad[0], want_grad, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grad[1], want_grad, rtol=1e-5, atol=1e-6)
  # And the local-mean version really is different (the test can fail).
  local = jax.pmap(lambda x, r: loss(w, x, r))(x.reshape(2, 2, 3), real.reshape(2, 2, 3))
  assert not np.allclose(local, want_value)
