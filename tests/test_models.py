"""Tests for wav2pix_jax.models: shapes, the paper's parameter counts, impl equivalence, errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wav2pix_jax.models import networks

KEY = jax.random.key(0)
# Tests compile many small graphs; XLA:CPU's backend optimisations cost ~3x compile time here
# and buy nothing at these sizes.
fast_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
# Small widths keep compiled tests to seconds; the architecture (depth, strides) is the paper's.
SMALL_ENCODER = dict(channels=(4, 4, 8, 8, 8, 8), hidden=(16, 8), embed_dim=8)
SMALL_T = 4096  # 4096 -> 1024 -> 256 -> 64 -> 16 -> 4 -> 1


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def fake_variables(module, *args, seed: int = 0, **kwargs):
  """Variables with init's structure, filled by numpy: avoids compiling the initialisers
  (threefry per parameter) in every test; the initialisers themselves are tested separately."""
  shapes = jax.eval_shape(lambda: module.init({"params": KEY, "dropout": KEY}, *args, **kwargs))
  rng = np.random.default_rng(seed)

  def fill(path, x):
    names = [getattr(p, "key", "") for p in path]
    if names[0] == "spectral":
      vec = rng.standard_normal(x.shape)
      return jnp.asarray(vec / np.linalg.norm(vec), x.dtype)
    if names[-1] == "var":
      return jnp.ones(x.shape, x.dtype)
    if names[-1] == "scale":
      return jnp.asarray(1 + 0.02 * rng.standard_normal(x.shape), x.dtype)
    if names[-1] in ("bias", "mean"):
      return jnp.zeros(x.shape, x.dtype)
    return jnp.asarray(0.2 * rng.standard_normal(x.shape), x.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


# ---- paper-sized architecture, via eval_shape (no allocation, no compile) -------------------


def test_param_counts_match_paper_64():
  enc = jax.eval_shape(
      lambda: networks.SpeechEncoder().init(KEY, jnp.zeros((2, 16000)), train=False)
  )
  assert _count(enc["params"]) == 11_495_424  # convs + biases, BN scale/bias, FC layers
  gen = jax.eval_shape(
      lambda: networks.Generator(image_size=64).init(
          KEY, jnp.zeros((2, 128)), train=False, update_spectral=False
      )
  )
  assert _count(gen["params"]) == 3_804_160
  disc = jax.eval_shape(
      lambda: networks.Discriminator(image_size=64).init(
          KEY, jnp.zeros((2, 64, 64, 3)), jnp.zeros((2, 128)), update_spectral=False
      )
  )
  assert _count(disc["params"]) == 2_765_824


def test_param_count_discriminator_128():
  disc = jax.eval_shape(
      lambda: networks.Discriminator(image_size=128).init(
          KEY, jnp.zeros((2, 128, 128, 3)), jnp.zeros((2, 128)), update_spectral=False
      )
  )
  assert _count(disc["params"]) == 11_162_624


@pytest.mark.parametrize("image_size,first,feat", [(64, 512, 512), (128, 1024, 1024)])
def test_paper_shapes(image_size, first, feat):
  model = networks.Wav2PixG(num_speakers=10, image_size=image_size)
  wave = jnp.zeros((2, 16000))
  variables = jax.eval_shape(
      lambda: model.init({"params": KEY, "dropout": KEY}, wave, train=True, update_spectral=True)
  )
  assert set(variables) == {"params", "batch_stats", "spectral"}
  assert variables["params"]["generator"]["deconv0"]["sn"]["kernel"].shape == (4, 4, 128, first)
  (images, emb, logits), updates = jax.eval_shape(
      lambda v: model.apply(
          v,
          wave,
          train=True,
          update_spectral=True,
          rngs={"dropout": KEY},
          mutable=["batch_stats", "spectral"],
      ),
      variables,
  )
  assert images.shape == (2, image_size, image_size, 3)
  assert emb.shape == (2, 128) and logits.shape == (2, 10)
  assert set(updates) == {"batch_stats", "spectral"}

  disc = networks.Discriminator(image_size=image_size)
  imgs = jnp.zeros((2, image_size, image_size, 3))
  dvars = jax.eval_shape(lambda: disc.init(KEY, imgs, jnp.zeros((2, 128)), update_spectral=False))
  scores, features = jax.eval_shape(
      lambda v: disc.apply(v, imgs, jnp.zeros((2, 128)), update_spectral=False), dvars
  )
  assert scores.shape == (2,) and features.shape == (2, 4, 4, feat)


def test_flatten_size_follows_waveform_length():
  # 8000 samples -> time 2 after six blocks -> flatten 2 * 1024.
  enc = jax.eval_shape(
      lambda: networks.SpeechEncoder().init(KEY, jnp.zeros((1, 8000)), train=False)
  )
  assert enc["params"]["fc0"]["kernel"].shape == (2 * 1024, 256)


# ---- real runs at small widths -------------------------------------------------------------


def _small_g(image_size, **kwargs):
  return networks.Wav2PixG(
      num_speakers=3,
      encoder_channels=SMALL_ENCODER["channels"],
      encoder_hidden=SMALL_ENCODER["hidden"],
      embed_dim=8,
      classifier_hidden=6,
      image_size=image_size,
      base_channels=4,
      conv_impl="subpixel",
      **kwargs,
  )


@pytest.mark.slow
@pytest.mark.parametrize("image_size", [64, 128])
def test_wav2pix_g_and_discriminator_run(image_size):
  model = _small_g(image_size)
  disc = networks.Discriminator(image_size=image_size, base_channels=4, conv_impl="subpixel")
  wave = jax.random.normal(jax.random.key(1), (2, SMALL_T))
  g_vars = fake_variables(model, wave, train=False, update_spectral=False)
  d_vars = fake_variables(
      disc, jnp.zeros((2, image_size, image_size, 3)), jnp.zeros((2, 8)), update_spectral=False
  )

  @fast_jit
  def run(g_vars, d_vars, wave):
    (images, emb, logits), g_upd = model.apply(
        g_vars,
        wave,
        train=True,
        update_spectral=True,
        rngs={"dropout": jax.random.key(2)},
        mutable=["batch_stats", "spectral"],
    )
    (scores, features), d_upd = disc.apply(
        d_vars, images, emb, update_spectral=True, mutable=["spectral"]
    )
    return images, emb, logits, scores, features, g_upd, d_upd

  images, emb, logits, scores, features, g_upd, d_upd = run(g_vars, d_vars, wave)
  assert images.shape == (2, image_size, image_size, 3)
  assert emb.shape == (2, 8) and logits.shape == (2, 3)
  assert float(jnp.max(jnp.abs(images))) <= 1.0
  assert bool(jnp.all(jnp.isfinite(images))) and bool(jnp.all(jnp.isfinite(scores)))
  assert scores.shape == (2,)
  assert features.shape == (2, 4, 4, 4 * 2 ** (int(np.log2(image_size)) - 3))
  # Training mode moves the BatchNorm running statistics and the power-iteration vectors.
  for before, after in (
      (g_vars["batch_stats"], g_upd["batch_stats"]),
      (g_vars["spectral"], g_upd["spectral"]),
      (d_vars["spectral"], d_upd["spectral"]),
  ):
    pairs = zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(after))
    assert all(not np.allclose(a, b) for a, b in pairs)


def test_generator_dropout_only_in_training():
  gen = networks.Generator(image_size=64, base_channels=4)
  emb = jax.random.normal(jax.random.key(3), (2, 8))
  variables = fake_variables(gen, emb, train=False, update_spectral=False)

  @functools.partial(fast_jit, static_argnames="train")
  def run(key, train):
    return gen.apply(variables, emb, train=train, update_spectral=False, rngs={"dropout": key})

  eval_a, eval_b = run(jax.random.key(4), False), run(jax.random.key(5), False)
  np.testing.assert_array_equal(eval_a, eval_b)
  train_a, train_b = run(jax.random.key(4), True), run(jax.random.key(5), True)
  assert not np.allclose(train_a, train_b)
  assert not np.allclose(train_a, eval_a)


def test_discriminator_score_depends_on_embedding():
  disc = networks.Discriminator(image_size=64, base_channels=4)
  imgs = jax.random.uniform(jax.random.key(6), (2, 64, 64, 3), minval=-1, maxval=1)
  emb = jax.random.normal(jax.random.key(7), (2, 8))
  variables = fake_variables(disc, imgs, emb, update_spectral=False)
  run = fast_jit(lambda e: disc.apply(variables, imgs, e, update_spectral=False))
  (s1, f1), (s2, f2) = run(emb), run(-emb)
  np.testing.assert_array_equal(f1, f2)  # features are taken before the concat
  assert not np.allclose(s1, s2)


# ---- xla == subpixel for whole models ------------------------------------------------------


def _assert_trees_close(a, b, rtol, atol):
  leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def _both_impls(make, variables, mutable, *inputs, **kwargs):
  """(outputs, updates, grads wrt params and inputs) for conv_impl "xla" and "subpixel"."""

  def run(impl, params, *xs):
    out, upd = make(conv_impl=impl).apply(
        {**variables, "params": params}, *xs, mutable=mutable, **kwargs
    )
    # A loss touching every output, so all gradient paths are compared.
    loss = sum(jnp.sum(jnp.sin(o)) for o in jax.tree_util.tree_leaves(out))
    return loss, (out, upd)

  argnums = tuple(range(len(inputs) + 1))
  return [
      fast_jit(jax.value_and_grad(functools.partial(run, impl), argnums=argnums, has_aux=True))(
          variables["params"], *inputs
      )
      for impl in ("xla", "subpixel")
  ]


def _check_equivalent(results):
  ((_, (out_x, upd_x)), grads_x), ((_, (out_s, upd_s)), grads_s) = results
  _assert_trees_close(out_s, out_x, 1e-4, 1e-4)
  _assert_trees_close(upd_s, upd_x, 1e-4, 1e-5)
  _assert_trees_close(grads_s, grads_x, 1e-3, 1e-3)


def test_generator_subpixel_equals_xla():
  emb = jax.random.normal(jax.random.key(8), (2, 8))
  make = functools.partial(networks.Generator, image_size=64, base_channels=4)
  variables = fake_variables(make(), emb, seed=9, train=False, update_spectral=False)
  _check_equivalent(
      _both_impls(
          make,
          variables,
          ["spectral"],
          emb,
          train=True,
          update_spectral=True,
          rngs={"dropout": jax.random.key(10)},
      )
  )


def test_discriminator_subpixel_equals_xla():
  imgs = jax.random.uniform(jax.random.key(11), (2, 64, 64, 3), minval=-1, maxval=1)
  emb = jax.random.normal(jax.random.key(12), (2, 8))
  make = functools.partial(networks.Discriminator, image_size=64, base_channels=4)
  variables = fake_variables(make(), imgs, emb, seed=13, update_spectral=False)
  # Includes d/d images: the G update back-propagates through D into the fake images.
  _check_equivalent(_both_impls(make, variables, ["spectral"], imgs, emb, update_spectral=True))


def test_encoder_subpixel_equals_xla():
  wave = jax.random.normal(jax.random.key(14), (2, SMALL_T))
  make = functools.partial(networks.SpeechEncoder, **SMALL_ENCODER)
  variables = fake_variables(make(), wave, seed=15, train=False)
  _check_equivalent(_both_impls(make, variables, ["batch_stats"], wave, train=True))


# ---- BatchNorm, errors, dtypes -------------------------------------------------------------


def test_batchnorm_config_and_init():
  x = jnp.full((4, 8), 3.0) + jnp.arange(4.0)[:, None]
  clf = networks.SpeakerClassifier(num_speakers=5)
  variables = clf.init(KEY, x, train=False)
  bn_scale = variables["params"]["bn0"]["scale"]
  assert abs(float(bn_scale.mean()) - 1.0) < 0.01 and 0.01 < float(bn_scale.std()) < 0.03
  np.testing.assert_array_equal(variables["params"]["bn0"]["bias"], 0.0)
  fc_kernel = variables["params"]["fc0"]["kernel"]
  assert 0.01 < float(fc_kernel.std()) < 0.03
  # torch momentum 0.1: one training step moves running mean 10% of the way to the batch mean.
  _, updates = fast_jit(lambda v: clf.apply(v, x, train=True, mutable=["batch_stats"]))(variables)
  h = x @ fc_kernel + variables["params"]["fc0"]["bias"]
  np.testing.assert_allclose(
      updates["batch_stats"]["bn0"]["mean"], 0.1 * h.mean(0), rtol=1e-5, atol=1e-6
  )


def test_batchnorm_axis_name_averages_across_devices():
  if jax.local_device_count() < 2:
    pytest.skip("needs 2 devices (tests/conftest.py fakes them on CPU)")
  n = 2
  wave = jax.random.normal(jax.random.key(16), (n * 2, SMALL_T))
  variables = fake_variables(networks.SpeechEncoder(**SMALL_ENCODER), wave, train=False)
  pmapped = networks.SpeechEncoder(**SMALL_ENCODER, axis_name="batch")

  def step(v, w):
    return pmapped.apply(v, w, train=True, mutable=["batch_stats"])

  replicated = jax.tree_util.tree_map(lambda a: jnp.stack([a] * n), variables)
  emb_p, upd_p = jax.pmap(step, axis_name="batch")(replicated, wave.reshape(n, 2, SMALL_T))
  emb_g, upd_g = fast_jit(
      lambda v, w: networks.SpeechEncoder(**SMALL_ENCODER).apply(
          v, w, train=True, mutable=["batch_stats"]
      )
  )(variables, wave)
  np.testing.assert_allclose(emb_p.reshape(n * 2, -1), emb_g, rtol=1e-4, atol=1e-5)
  for per_device, whole in zip(jax.tree_util.tree_leaves(upd_p), jax.tree_util.tree_leaves(upd_g)):
    for d in range(n):
      np.testing.assert_allclose(per_device[d], whole, rtol=1e-4, atol=1e-6)


def test_unknown_image_size_raises():
  with pytest.raises(ValueError, match="image_size"):
    networks.Generator(image_size=96).init(
        KEY, jnp.zeros((1, 8)), train=False, update_spectral=False
    )
  with pytest.raises(ValueError, match="image_size"):
    networks.Discriminator(image_size=32).init(
        KEY, jnp.zeros((1, 32, 32, 3)), jnp.zeros((1, 8)), update_spectral=False
    )
  with pytest.raises(ValueError, match="images must be"):
    networks.Discriminator(image_size=64).init(
        KEY, jnp.zeros((1, 128, 128, 3)), jnp.zeros((1, 8)), update_spectral=False
    )


def test_too_short_waveform_raises():
  with pytest.raises(ValueError, match="waveform length 4 "):
    networks.SpeechEncoder().init(KEY, jnp.zeros((1, 4)), train=False)
  with pytest.raises(ValueError, match="waveform"):
    networks.SpeechEncoder().init(KEY, jnp.zeros((16000,)), train=False)
  # Each block maps L -> (L - 2) // 4 + 1; six blocks need L >= 1366 to keep one time step.
  ok = networks.encoder_output_length(1366, num_blocks=6, kernel_size=15, stride=4, padding=(6, 7))
  assert ok == 1
  with pytest.raises(ValueError, match="waveform length 1365"):
    networks.encoder_output_length(1365, num_blocks=6, kernel_size=15, stride=4, padding=(6, 7))


def test_bad_num_speakers_raises():
  with pytest.raises(ValueError, match="num_speakers"):
    networks.SpeakerClassifier(num_speakers=0).init(KEY, jnp.zeros((2, 8)), train=False)


@pytest.mark.slow
def test_bfloat16_models():
  dt = dict(dtype=jnp.bfloat16, param_dtype=jnp.float32)
  model = _small_g(64, **dt)
  disc = networks.Discriminator(image_size=64, base_channels=4, conv_impl="subpixel", **dt)
  wave = jax.random.normal(jax.random.key(17), (2, SMALL_T))
  g_vars = fake_variables(model, wave, train=False, update_spectral=False)
  d_vars = fake_variables(disc, jnp.zeros((2, 64, 64, 3)), jnp.zeros((2, 8)), update_spectral=False)
  # Params and mutable collections stay float32 (the power iteration runs in float32).
  shapes = jax.eval_shape(
      lambda: model.init({"params": KEY, "dropout": KEY}, wave, train=False, update_spectral=False)
  )
  assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(shapes))

  @fast_jit
  def run(g_vars, d_vars):
    (images, emb, logits), g_upd = model.apply(
        g_vars,
        wave,
        train=True,
        update_spectral=True,
        rngs={"dropout": KEY},
        mutable=["batch_stats", "spectral"],
    )
    (scores, features), d_upd = disc.apply(
        d_vars, images, emb, update_spectral=True, mutable=["spectral"]
    )
    return images, emb, logits, scores, features, g_upd, d_upd

  images, emb, logits, scores, features, g_upd, d_upd = run(g_vars, d_vars)
  assert images.dtype == emb.dtype == logits.dtype == jnp.bfloat16
  assert scores.dtype == features.dtype == jnp.bfloat16
  assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves((g_upd, d_upd)))
  assert bool(jnp.all(jnp.isfinite(scores.astype(jnp.float32))))
