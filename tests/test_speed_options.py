"""Speed options: per-network conv_impl, the step's single G forward, bfloat16, state donation."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wav2pix_jax.models import factory
from wav2pix_jax.models import layers
from wav2pix_jax.training import losses
from wav2pix_jax.models import networks
from wav2pix_jax.training import parallel
from wav2pix_jax.training import step as step_lib

import helpers

REPO = helpers.REPO
NUM_SPEAKERS = helpers.NUM_SPEAKERS


_tiny = helpers.tiny_config
_batch = helpers.random_batch


# ------------------------------------------------------------------------------------------
# conv_impl per network.
# ------------------------------------------------------------------------------------------


def test_auto_conv_impl_per_network_and_for_inference(monkeypatch):
  model = _tiny().model
  on_cpu = jax.default_backend() == "cpu"
  assert factory.conv_impl(model, "g") == ("matmul" if on_cpu else "xla")
  # On CPU the encoder is per layer: subpixel, except matmul for its last Conv1d.
  n = len(model.encoder_channels)
  assert factory.conv_impl(model, "encoder") == (
      ",".join(["subpixel"] * (n - 1) + ["matmul"]) if on_cpu else "xla"
  )
  assert factory.conv_impl(model, "d") == ("matmul" if on_cpu else "xla")
  assert factory.conv_impl(model, "g", inference=True) == "xla"  # forward only: xla is faster
  assert factory.conv_impl(model, "encoder", inference=True) == "xla"
  g = factory.make_generator(model, NUM_SPEAKERS)
  assert g.conv_impl == factory.conv_impl(model, "g")
  assert g.encoder_conv_impl == factory.conv_impl(model, "encoder")
  g_inf = factory.make_generator(model, NUM_SPEAKERS, inference=True)
  assert (g_inf.conv_impl, g_inf.encoder_conv_impl) == ("xla", "xla")
  assert factory.make_discriminator(model).conv_impl == factory.conv_impl(model, "d")
  for backend in ("gpu", "tpu"):  # the one place "auto" is decided: plain xla off the CPU
    monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
    assert {factory.conv_impl(model, n) for n in ("g", "encoder", "d")} == {"xla"}


def test_per_layer_conv_impl_lists():
  assert layers.layer_conv_impl("xla", 2, 4) == "xla"
  assert [layers.layer_conv_impl("matmul, xla,subpixel", i, 3) for i in range(3)] == [
      "matmul",
      "xla",
      "subpixel",
  ]
  with pytest.raises(ValueError, match="one per layer"):
    layers.layer_conv_impl("xla,matmul", 0, 4)
  model = _tiny().model
  model.d_conv_impl = "matmul,xla"  # D has 4 conv layers at 64 px
  with pytest.raises(ValueError, match=r"model\.d_conv_impl.*4 conv layers"):
    factory.conv_impl(model, "d")
  model.d_conv_impl = "matmul,xla,fft,xla"
  with pytest.raises(ValueError, match=r"model\.d_conv_impl"):
    factory.conv_impl(model, "d")
  model.d_conv_impl = "matmul,xla,subpixel,xla"
  assert factory.make_discriminator(model).conv_impl == "matmul,xla,subpixel,xla"


@pytest.mark.slow
def test_per_layer_conv_impl_is_the_same_function():
  """A mixed per-layer list == one impl everywhere: same outputs and gradients.

  Checked for the D and the encoder.
  """
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(-1, 1, (2, 64, 64, 3)), jnp.float32)
  emb = jnp.asarray(rng.normal(size=(2, 8)), jnp.float32)
  make = lambda impl: networks.Discriminator(image_size=64, base_channels=4, conv_impl=impl)
  variables = make("xla").init(jax.random.key(0), images, emb, update_spectral=False)

  def run(impl):
    def f(params, x):
      score, feats = make(impl).apply(
          {**variables, "params": params}, x, emb, update_spectral=False
      )
      return jnp.sum(score) + jnp.mean(feats**2)

    return jax.value_and_grad(f, argnums=(0, 1))(variables["params"], images)

  (v_ref, g_ref), (v_mix, g_mix) = run("xla"), run("matmul,xla,subpixel,matmul")
  np.testing.assert_allclose(v_mix, v_ref, rtol=1e-4)
  for a, b in zip(jax.tree.leaves(g_mix), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-4 * float(jnp.max(jnp.abs(b))))

  wave = jnp.asarray(rng.uniform(-1, 1, (2, 4000)), jnp.float32)
  enc = lambda impl: networks.SpeechEncoder(
      channels=(4, 8, 8), hidden=(8,), embed_dim=4, conv_impl=impl
  )
  ev = enc("xla").init(jax.random.key(1), wave, train=False)
  out_ref = enc("xla").apply(ev, wave, train=False)
  out_mix = enc("subpixel,subpixel,matmul").apply(ev, wave, train=False)
  np.testing.assert_allclose(out_mix, out_ref, rtol=1e-4, atol=1e-5)


def test_explicit_conv_impls_override_auto():
  model = _tiny(**{"model.conv_impl": "subpixel"}).model
  assert [factory.conv_impl(model, n) for n in ("g", "d")] == ["subpixel", "subpixel"]
  assert factory.conv_impl(model, "g", inference=True) == "subpixel"  # explicit wins
  model.d_conv_impl = "xla"
  model.g_conv_impl = "auto"
  assert factory.make_discriminator(model).conv_impl == "xla"
  assert factory.conv_impl(model, "g", inference=True) == "xla"
  # The encoder follows g_conv_impl unless encoder_conv_impl is set.
  model.g_conv_impl = "matmul"
  assert factory.conv_impl(model, "encoder") == "matmul"
  model.encoder_conv_impl = "subpixel"
  assert [factory.conv_impl(model, n) for n in ("g", "encoder")] == ["matmul", "subpixel"]
  # A config.json written before the per-network fields existed still resolves.
  old = _tiny().model
  del old["g_conv_impl"], old["d_conv_impl"], old["encoder_conv_impl"]
  assert factory.conv_impl(old, "d") == factory.conv_impl(_tiny().model, "d")
  assert factory.conv_impl(old, "encoder") == factory.conv_impl(_tiny().model, "encoder")


def test_bad_per_network_conv_impl_names_the_field():
  with pytest.raises(ValueError, match=r"model\.d_conv_impl"):
    factory.check_model_config(_tiny(**{"model.d_conv_impl": "fft"}).model)
  with pytest.raises(ValueError, match=r"model\.encoder_conv_impl"):
    factory.check_model_config(_tiny(**{"model.encoder_conv_impl": "fft"}).model)
  with pytest.raises(ValueError, match=r"model\.g_conv_impl"):
    factory.make_generator(_tiny(**{"model.g_conv_impl": "cudnn"}).model, NUM_SPEAKERS)


# ------------------------------------------------------------------------------------------
# One G forward per step (vjp reuse) == a separate forward with the same dropout mask.
# ------------------------------------------------------------------------------------------


def _straightforward_g_loss(g_params, state, batch, *, g_model, d_model, loss_weights, rng):
  """The G loss with its own forward inside (what autodiff of the plain formulation sees)."""
  (fakes, embedding, logits), g_vars = g_model.apply(
      {"params": g_params, "batch_stats": state.g_batch_stats, "spectral": state.g_spectral},
      batch["waveform"],
      train=True,
      update_spectral=False,
      rngs={"dropout": rng},
      mutable=["batch_stats"],
  )
  face = batch["face"]
  condition = (
      embedding if loss_weights.adversarial_into_encoder else jax.lax.stop_gradient(embedding)
  )
  scores, features = d_model.apply(
      {"params": state.d_params, "spectral": state.d_spectral},
      jnp.concatenate([fakes, face]),
      jnp.concatenate([condition, condition]),
      update_spectral=False,
  )
  fake_features, real_features = jnp.split(features, 2)
  loss = (
      loss_weights.adversarial * losses.generator_adversarial(fake_scores=jnp.split(scores, 2)[0])
      + loss_weights.feature_matching
      * losses.feature_matching(fake_features=fake_features, real_features=real_features)
      + loss_weights.l1 * losses.l1(predictions=fakes, targets=face)
      + loss_weights.speaker_ce
      * losses.speaker_cross_entropy(logits=logits, labels=batch["speaker"])
  )
  return loss, g_vars["batch_stats"]


@pytest.mark.slow
@pytest.mark.parametrize("adversarial_into_encoder", [False, True])
def test_shared_g_forward_gives_the_straightforward_gradients(adversarial_into_encoder):
  # dropout 0.5 on: the mask must be the same in both formulations
  config = _tiny(**{"loss.adversarial_into_encoder": adversarial_into_encoder})
  state = step_lib.create_train_state(config, NUM_SPEAKERS, jax.random.PRNGKey(0))
  kw = step_lib.make_train_step(config, NUM_SPEAKERS, axis_name=None).keywords
  g_model, d_model = kw["g_model"], kw["d_model"]
  batch = jax.tree.map(jnp.asarray, _batch(config))
  rng = jax.random.PRNGKey(7)

  @jax.jit
  def fused(state):
    # As train_step: one forward (with the power iteration), D update, then the G gradient
    # against the updated D through the saved vjp.
    g_out = step_lib.g_forward(state, batch, g_model=g_model, rng=rng, update_spectral=True)
    d_state, _ = step_lib.d_update(
        state, batch, g_out, d_model=d_model, d_tx=kw["d_tx"], real_label=0.9
    )
    loss, _, grads = step_lib.g_loss_and_grads(
        d_state, batch, g_out, d_model=d_model, loss_weights=config.loss
    )
    return d_state, loss, grads, g_out.batch_stats

  @jax.jit
  def straightforward(d_state):
    grad_fn = jax.value_and_grad(_straightforward_g_loss, has_aux=True)
    (loss, batch_stats), grads = grad_fn(
        d_state.g_params,
        d_state,
        batch,
        g_model=g_model,
        d_model=d_model,
        loss_weights=config.loss,
        rng=rng,
    )
    return loss, grads, batch_stats

  d_state, loss, grads, batch_stats = fused(state)
  # The D phase changed D; the reference uses that D and G's power-iterated vectors.
  assert any(
      not np.array_equal(a, b)
      for a, b in zip(jax.tree.leaves(d_state.g_spectral), jax.tree.leaves(state.g_spectral))
  )
  want_loss, want_grads, want_stats = straightforward(d_state)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
  for (path, want), got in zip(
      jax.tree_util.tree_leaves_with_path(want_grads), jax.tree.leaves(grads)
  ):
    scale = float(np.abs(want).max()) + 1e-12
    # Float32 summation-order noise only; relative to the leaf's largest gradient.
    np.testing.assert_allclose(
        got, want, rtol=1e-4, atol=1e-5 * scale, err_msg=jax.tree_util.keystr(path)
    )
  # BatchNorm statistics: one update per step, equal to the separate forward's.
  jax.tree.map(
      functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-7), batch_stats, want_stats
  )
  assert any(
      not np.array_equal(a, b)
      for a, b in zip(jax.tree.leaves(batch_stats), jax.tree.leaves(state.g_batch_stats))
  )


# ------------------------------------------------------------------------------------------
# bfloat16 computation with float32 parameters.
# ------------------------------------------------------------------------------------------

BF16_LOSSES = ("d_loss", "g_adversarial", "g_feature_matching", "g_l1", "g_speaker_ce")


@pytest.mark.slow
def test_bfloat16_losses_track_float32():
  """Same init, same batches, 3 steps: bf16 compute stays within a few % of float32.

  bf16 keeps 8 significant bits (relative rounding 2^-9 ~ 0.2 %); each conv/dense layer rounds
  its inputs and weights, and the error grows over the ~10 layers of a G+D path to ~1 %; three
  small Adam steps don't amplify it much. 5 % relative (plus 2e-3 absolute for terms near 0)
  leaves room for that and still fails on a real dtype bug (wrong casts give O(1) differences).
  """
  f32 = _tiny()
  bf16 = _tiny(**{"model.dtype": "bfloat16"})
  state = step_lib.create_train_state(f32, NUM_SPEAKERS, jax.random.PRNGKey(0))
  bf16_abstract = step_lib.abstract_train_state(bf16, NUM_SPEAKERS)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(bf16_abstract.g_params))
  steps = {
      name: jax.jit(step_lib.make_train_step(cfg, NUM_SPEAKERS, axis_name=None))
      for name, cfg in (("f32", f32), ("bf16", bf16))
  }
  states = {"f32": state, "bf16": state}
  for i in range(3):
    batch = _batch(f32, seed=i)
    metrics = {}
    for name, step in steps.items():
      states[name], metrics[name] = step(states[name], batch)
    for key in BF16_LOSSES:
      want, got = float(metrics["f32"][key]), float(metrics["bf16"][key])
      assert np.isfinite(got), (i, key)
      np.testing.assert_allclose(got, want, rtol=0.05, atol=2e-3, err_msg=f"step {i}: {key}")
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(states["bf16"].g_params))


# ------------------------------------------------------------------------------------------
# The pmapped step donates the state.
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_pmapped_step_donates_the_state_without_warnings():
  config = _tiny()
  p_step = step_lib.make_p_train_step(config, NUM_SPEAKERS)
  state = parallel.replicate(
      step_lib.create_train_state(config, NUM_SPEAKERS, jax.random.PRNGKey(0))
  )
  batch = parallel.put_sharded(parallel.shard(_batch(config)))
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    new, metrics = p_step(state, batch)
    jax.block_until_ready((new, metrics))
  messages = [str(w.message) for w in caught]
  assert not [m for m in messages if "donat" in m.lower()], messages
  # The old state's buffers were handed to XLA (reused for the new state), not copied. Only the
  # spectral-norm `v` vectors are not: the power iteration recomputes v from u without reading
  # it, so the step never takes those (tiny) inputs and JAX keeps them alive.
  for path, x in jax.tree_util.tree_leaves_with_path(state):
    name = jax.tree_util.keystr(path)
    assert x.is_deleted() or name.endswith("['v']"), name
  assert not any(x.is_deleted() for x in jax.tree.leaves(new))
