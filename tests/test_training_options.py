"""The recipe options: DiffAugment, R1, EMA, the condition's gradient, SN init, resize-conv
upsampling, the authors' audio, and the divergence / quality monitors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wav2pix_jax.data import audio
from wav2pix_jax.training import augment
from wav2pix_jax import checkpoints
from wav2pix_jax import config_lib
from wav2pix_jax.models import factory
from wav2pix_jax.serving import inference
from wav2pix_jax.models import layers
from wav2pix_jax.models import networks
from wav2pix_jax.training import monitor
from wav2pix_jax.training import loop
from wav2pix_jax.training import losses
from wav2pix_jax.training import step as step_lib

import helpers

NUM_SPEAKERS = helpers.NUM_SPEAKERS
_tiny = helpers.tiny_config
_batch = helpers.random_batch


# ------------------------------------------------------------------------------------------
# DiffAugment.
# ------------------------------------------------------------------------------------------


def _ramp(batch=2, size=16):
  """Images whose pixel values say where they are: value = (row * size + col) / size**2."""
  idx = np.arange(size * size, dtype=np.float32).reshape(size, size) / (size * size)
  return jnp.asarray(np.broadcast_to(idx[None, :, :, None], (batch, size, size, 3)).copy())


def test_empty_policy_is_identity_and_unknown_names_fail():
  x = _ramp()
  np.testing.assert_array_equal(augment.diff_augment(x, jax.random.PRNGKey(0), ""), x)
  with pytest.raises(ValueError, match="rotate"):
    augment.parse_policy("color,rotate")


def test_translation_shifts_whole_image_by_at_most_an_eighth():
  x = _ramp(batch=8, size=16) + 1.0  # strictly positive: the zero padding is visible
  y = np.asarray(augment.diff_augment(x, jax.random.PRNGKey(3), "translation"))
  for image, shifted in zip(np.asarray(x), y):
    found = [
        (dy, dx)
        for dy in range(-2, 3)
        for dx in range(-2, 3)
        if np.array_equal(np.roll(image, (dy, dx), axis=(0, 1))[2:-2, 2:-2], shifted[2:-2, 2:-2])
    ]
    assert len(found) == 1, found  # exactly one integer shift within +-16/8 = 2 pixels explains it
    dy, dx = found[0]
    # The rows/columns shifted in are zeros.
    if dy > 0:
      assert np.all(shifted[:dy] == 0)
    if dx < 0:
      assert np.all(shifted[:, dx:] == 0)


def test_cutout_zeroes_one_square_of_half_the_side():
  x = jnp.ones((16, 16, 16, 3))
  y = np.asarray(augment.diff_augment(x, jax.random.PRNGKey(1), "cutout"))
  for image in y:
    zero = np.all(image == 0, axis=-1)
    rows, cols = np.flatnonzero(zero.any(axis=1)), np.flatnonzero(zero.any(axis=0))
    assert zero.sum() == len(rows) * len(cols)  # a rectangle (the square, clipped at the border)
    assert len(rows) <= 8 and len(cols) <= 8 and zero.sum() >= 4 * 4
    assert np.all(image[~zero] == 1)


def test_color_is_a_per_image_affine_map_and_gradients_flow():
  x = _ramp(batch=4)
  y = augment.diff_augment(x, jax.random.PRNGKey(2), "color")
  assert not np.allclose(y, x)
  # Each image changes by its own brightness/saturation/contrast draw.
  assert len({round(float(v), 5) for v in jnp.mean(y - x, axis=(1, 2, 3))}) == 4
  grads = jax.grad(
      lambda z: jnp.sum(augment.diff_augment(z, jax.random.PRNGKey(2), "color,translation,cutout"))
  )(x)
  assert float(jnp.abs(grads).sum()) > 0


# ------------------------------------------------------------------------------------------
# Training-step options.
# ------------------------------------------------------------------------------------------


def _step(config, state=None, batch=None):
  step = jax.jit(step_lib.make_train_step(config, NUM_SPEAKERS, axis_name=None))
  state = (
      state
      if state is not None
      else step_lib.create_train_state(config, NUM_SPEAKERS, jax.random.PRNGKey(0))
  )
  return state, step(state, batch if batch is not None else _batch(config))


def test_low_pass_l1_is_what_the_step_trains_on():
  """With a block as large as the face, G's L1 compares the faces' mean colours only: the step's
  g_l1 is then below the per-pixel one on the same state and batch (random faces: ~0 block
  difference), and G's loss carries it."""
  size = _tiny().model.image_size
  state, (_, plain) = _step(_tiny())
  _, (_, coarse) = _step(_tiny(**{"loss.l1_low_pass": size}), state)
  assert float(coarse["g_l1"]) < 0.5 * float(plain["g_l1"])
  w = _tiny().loss
  g_loss = sum(
      w[name] * float(coarse[f"g_{name}"])
      for name in ("adversarial", "feature_matching", "l1", "speaker_ce")
  )
  np.testing.assert_allclose(float(coarse["g_loss"]), g_loss, rtol=1e-5)


@pytest.mark.slow
def test_ema_follows_the_weights_with_a_warm_up():
  config = _tiny(**{"optim.g.ema_decay": 0.999})
  state, (new, _) = _step(config)
  # Step 0: decay min(0.999, 1/10) = 0.1 -> ema = 0.1 * init + 0.9 * updated.
  for e0, p1, e1 in zip(
      jax.tree.leaves(state.g_ema_params),
      jax.tree.leaves(new.g_params),
      jax.tree.leaves(new.g_ema_params),
  ):
    np.testing.assert_allclose(e1, 0.1 * e0 + 0.9 * p1, rtol=1e-5, atol=1e-7)
  assert inference.generator_variables(new)["params"] is new.g_ema_params
  off = step_lib.create_train_state(_tiny(), NUM_SPEAKERS, jax.random.PRNGKey(0))
  assert off.g_ema_params is None and inference.generator_variables(off)["params"] is off.g_params


@pytest.mark.slow
def test_r1_adds_half_gamma_times_the_penalty():
  config = _tiny(**{"loss.r1": 10.0})
  _, (_, metrics) = _step(config)
  r1 = float(metrics["d_r1"])
  assert r1 > 0
  want = float(metrics["d_real"] + metrics["d_fake"] + metrics["d_wrong"]) + 0.5 * 10.0 * r1
  np.testing.assert_allclose(float(metrics["d_loss"]), want, rtol=1e-5)


def test_lecam_adds_its_weighted_term_and_moves_its_running_means():
  config = _tiny(**{"loss.lecam": 0.5, "loss.lecam_decay": 0.9})
  state, (new, metrics) = _step(config)
  assert float(state.d_score_ema["real"]) == float(state.d_score_ema["fake"]) == 0.0
  lecam = float(metrics["d_lecam"])
  want = float(metrics["d_real"] + metrics["d_fake"] + metrics["d_wrong"]) + 0.5 * lecam
  np.testing.assert_allclose(float(metrics["d_loss"]), want, rtol=1e-5)
  # From 0, one step of decay 0.9: 0.1 x this batch's mean scores.
  for side in ("real", "fake"):
    np.testing.assert_allclose(
        float(new.d_score_ema[side]), 0.1 * float(metrics[f"d_score_{side}"]), rtol=1e-5
    )
  off = step_lib.create_train_state(_tiny(), NUM_SPEAKERS, jax.random.PRNGKey(0))
  assert off.d_score_ema is None


def test_precise_batch_stats_of_one_batch_make_evaluation_mode_equal_training_mode():
  """Statistics recomputed from exactly one batch: G in evaluation mode on that batch gives what
  training mode (normalising by the batch) gives; the stale running averages do not."""
  config = _tiny(**{"model.dropout_rate": 0.0})  # train mode = batch statistics, nothing else
  state = step_lib.create_train_state(config, NUM_SPEAKERS, jax.random.PRNGKey(0))
  g_model = factory.make_generator(config.model, NUM_SPEAKERS, axis_name=None)
  wave = jnp.asarray(_batch(config, 8)["waveform"])
  variables = {
      "params": state.g_params,
      "batch_stats": state.g_batch_stats,
      "spectral": state.g_spectral,
  }
  train_out, _ = g_model.apply(
      variables, wave, train=True, update_spectral=False, mutable=["batch_stats", "spectral"]
  )
  precise = jax.jit(lambda v, w: networks.precise_batch_stats(g_model, v, w))(variables, wave[None])

  def eval_out(stats):
    return g_model.apply(
        {**variables, "batch_stats": stats}, wave, train=False, update_spectral=False
    )

  for got, want in zip(eval_out(precise), train_out):  # faces, embedding, logits
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)
  stale_embedding = eval_out(state.g_batch_stats)[1]
  assert np.abs(np.asarray(stale_embedding) - np.asarray(train_out[1])).max() > 1e-3
  # Two batches: the mean of their statistics.
  halves = jax.jit(lambda v, w: networks.precise_batch_stats(g_model, v, w))(
      variables, wave.reshape(2, 4, -1)
  )
  one = [
      jax.jit(lambda v, w: networks.precise_batch_stats(g_model, v, w))(variables, w[None])
      for w in wave.reshape(2, 4, -1)
  ]
  jax.tree.map(
      lambda h, a, b: np.testing.assert_allclose(h, (a + b) / 2, rtol=1e-5, atol=1e-6),
      halves,
      *one,
  )


@pytest.mark.parametrize("gan", ["hinge", "logistic"])
def test_train_step_runs_with_each_gan_loss(gan):
  _, (new, metrics) = _step(_tiny(**{"loss.gan": gan}))
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert int(new.step) == 1


def test_noise_input_is_sampled_in_train_mode_and_zero_otherwise():
  gen = networks.Generator(image_size=64, base_channels=4, dropout_rate=0.0, noise_dim=3)
  emb = jnp.ones((2, 8))
  variables = gen.init(
      {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)},
      emb,
      train=False,
      update_spectral=False,
  )
  # The first layer reads the embedding and the noise: 8 + 3 input channels.
  assert variables["params"]["deconv0"]["sn"]["kernel"].shape[2] == 11
  apply = lambda train, key: gen.apply(
      variables, emb, train=train, update_spectral=False, rngs={"dropout": jax.random.PRNGKey(key)}
  )
  deterministic = apply(False, 0)
  np.testing.assert_array_equal(deterministic, apply(False, 1))  # no noise outside train mode
  a, b = apply(True, 0), apply(True, 1)
  assert float(jnp.abs(a - b).max()) > 1e-3  # each key its own draw
  np.testing.assert_array_equal(a, apply(True, 0))
  assert float(jnp.abs(a[0] - a[1]).max()) > 1e-3  # and each example its own, same speech


def test_train_step_runs_with_a_noise_input():
  _, (new, metrics) = _step(_tiny(**{"model.noise_dim": 4}))
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert int(new.step) == 1


@pytest.mark.slow
def test_r1_differentiates_the_discriminator_that_scored_even_at_step_0():
  """R1 uses the spectral vectors of the call's own power iteration: at initialisation the stored
  u and v are random and unrelated (sigma = u^T W v near 0), and the penalty was 2e8 here (4e13
  for configs/fast.py), freezing D's Adam for thousands of steps."""
  config = _tiny()
  state = step_lib.create_train_state(config, NUM_SPEAKERS, jax.random.PRNGKey(0))
  d_model = factory.make_discriminator(config.model)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(-1, 1, (12, 64, 64, 3)), jnp.float32)
  embedding = jnp.asarray(rng.normal(size=(4, config.model.embed_dim)), jnp.float32)
  _, (terms, _, spectral) = step_lib.d_loss(
      state.d_params,
      state.d_spectral,
      images,
      embedding,
      d_model=d_model,
      real_label=1.0,
      r1_weight=1.0,
  )
  want = losses.r1_penalty(state.d_params, spectral, images[:4], embedding, d_model=d_model)
  np.testing.assert_allclose(float(terms["d_r1"]), float(want), rtol=1e-6)
  stale = losses.r1_penalty(
      state.d_params, state.d_spectral, images[:4], embedding, d_model=d_model
  )
  assert float(terms["d_r1"]) < 1.0 < 1e3 * float(terms["d_r1"]) < float(stale)


@pytest.mark.slow
def test_the_condition_carries_the_adversarial_gradient_only_when_asked():
  """With adversarial weight only: the encoder's gradient changes when D's condition input is
  differentiated (the authors' code), and not otherwise."""

  def encoder_grads(into_encoder):
    config = _tiny(
        **{
            "model.dropout_rate": 0.0,
            "loss.l1": 0.0,
            "loss.speaker_ce": 0.0,
            "loss.feature_matching": 0.0,
            "loss.adversarial_into_encoder": into_encoder,
        }
    )
    state = step_lib.create_train_state(config, NUM_SPEAKERS, jax.random.PRNGKey(0))
    kw = step_lib.make_train_step(config, NUM_SPEAKERS, axis_name=None).keywords
    batch = jax.tree.map(jnp.asarray, _batch(config))
    g_out = step_lib.g_forward(
        state, batch, g_model=kw["g_model"], rng=jax.random.PRNGKey(1), update_spectral=True
    )
    _, _, grads = step_lib.g_loss_and_grads(
        state, batch, g_out, d_model=kw["d_model"], loss_weights=config.loss
    )
    return grads["encoder"]["embed"]["kernel"], grads["generator"]

  stop_enc, stop_gen = encoder_grads(False)
  flow_enc, flow_gen = encoder_grads(True)
  assert float(jnp.abs(stop_enc).max()) > 0  # the face path still trains the encoder
  assert float(jnp.abs(flow_enc - stop_enc).max()) > 1e-3 * float(jnp.abs(flow_enc).max())
  for a, b in zip(jax.tree.leaves(stop_gen), jax.tree.leaves(flow_gen)):  # G itself: unchanged
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * float(jnp.abs(a).max()))


@pytest.mark.slow
def test_augmented_step_trains():
  config = _tiny(**{"loss.diff_augment": "color,translation,cutout"})
  state, (new, metrics) = _step(config)
  assert np.isfinite(float(metrics["d_loss"])) and np.isfinite(float(metrics["g_loss"]))
  assert not np.array_equal(
      new.d_params["conv0"]["sn"]["kernel"], state.d_params["conv0"]["sn"]["kernel"]
  )


def test_bad_option_values_name_the_field():
  for overrides, field in (
      ({"loss.diff_augment": "blur"}, "loss.diff_augment"),
      ({"optim.g.ema_decay": 1.0}, "optim.g.ema_decay"),
      ({"loss.r1": -1.0}, "loss.r1"),
      ({"loss.gan": "wgan"}, "loss.gan"),
      ({"loss.lecam": -0.1}, "loss.lecam"),
      ({"loss.lecam_decay": 1.0}, "loss.lecam_decay"),
      ({"log.divergence_window": 0}, "log.divergence_window"),
      ({"model.g_upsample": "bilinear"}, "model.g_upsample"),
      ({"model.sn_init": "xavier"}, "model.sn_init"),
      ({"model.noise_dim": -1}, "model.noise_dim"),
  ):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
      loop.check_config(_tiny(**overrides))


# ------------------------------------------------------------------------------------------
# Model options.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transposed,fan_in", [(False, 3 * 16), (True, 8 * 16)])
def test_torch_sn_init_is_pytorchs_default(transposed, fan_in):
  shape = (4, 4, 3, 8)  # (kh, kw, in, out): torch's fan_in is in*16 (Conv2d), out*16 (transposed)
  w = np.asarray(
      layers.sn_kernel_init("torch", transposed=transposed)(jax.random.PRNGKey(0), shape)
  )
  bound = 1 / np.sqrt(fan_in)
  assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
  np.testing.assert_allclose(w.std(), bound / np.sqrt(3), rtol=0.15)  # uniform's std
  normal = np.asarray(
      layers.sn_kernel_init("normal", transposed=transposed)(jax.random.PRNGKey(0), shape)
  )
  np.testing.assert_allclose(normal.std(), 0.02, rtol=0.15)


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["xla", "subpixel", "matmul"])
def test_resize_conv_generator_has_no_transposed_doublings(impl):
  gen = networks.Generator(
      image_size=64, base_channels=4, dropout_rate=0.0, conv_impl=impl, upsample="resize_conv"
  )
  variables = gen.init(jax.random.PRNGKey(0), jnp.ones((2, 8)), train=False, update_spectral=False)
  names = sorted(variables["params"])
  assert names == ["deconv0", "upconv1", "upconv2", "upconv3", "upconv4"]
  assert variables["params"]["upconv1"]["sn"]["kernel"].shape == (3, 3, 32, 16)
  out = gen.apply(variables, jnp.ones((2, 8)), train=False, update_spectral=False)
  assert out.shape == (2, 64, 64, 3)
  reference = networks.Generator(
      image_size=64, base_channels=4, dropout_rate=0.0, conv_impl="xla", upsample="resize_conv"
  )
  np.testing.assert_allclose(
      out,
      reference.apply(variables, jnp.ones((2, 8)), train=False, update_spectral=False),
      rtol=1e-4,
      atol=1e-5,
  )


# ------------------------------------------------------------------------------------------
# The authors' audio, configs read over base.py, and compatibility of resumes.
# ------------------------------------------------------------------------------------------


def test_floor_division_is_the_authors_python2_division():
  x = np.array([-300, -100, 0, 100, 299, 300, -20], np.int16)
  # int division by the peak 300 under Python 2: floor -> [-1, -1, 0, 0, 0, 1, -1].
  y = audio.preprocess(x, window=7, preemphasis=0.5, floor_division=True)
  q = np.array([-1, -1, 0, 0, 0, 1, -1], np.float32)
  np.testing.assert_allclose(y, np.concatenate([[q[0]], q[1:] - 0.5 * q[:-1]]))
  plain = audio.preprocess(x, window=7, preemphasis=0.0)
  np.testing.assert_allclose(plain, x / 300, rtol=1e-6)


def test_old_config_json_takes_base_defaults_and_bad_ones_fail():
  saved = {"model": {"image_size": 64, "g_base_channels": 8}, "input": {"audio_samples": 1024}}
  config = config_lib.with_defaults(saved)
  assert config.model.g_upsample == "transposed" and config.optim.g.ema_decay == 0.0
  assert config.model.g_base_channels == 8 and config.input.floor_division is False
  for bad, message in (
      ([], "a config must be a JSON object, got list"),
      ({}, r"a run's config needs the sections \['model', 'input'\] as objects"),
      ({"model": 3, "input": {}}, r"a run's config needs the sections \['model'\] as objects"),
      ({"model": {}, "input": {}, "optim": 1}, "config field optim must be an object, got int"),
  ):
    with pytest.raises(TypeError, match=message):
      config_lib.with_defaults(bad)


def test_resume_refuses_to_switch_ema_or_upsampling():
  meta = checkpoints.make_meta(_tiny(), num_speakers=3)
  checkpoints.check_compatible(meta, _tiny(**{"loss.r1": 5.0}), num_speakers=3)
  for overrides, field in (
      ({"optim.g.ema_decay": 0.99}, "optim.g.ema_decay"),
      ({"loss.lecam": 0.01}, "loss.lecam"),
      ({"model.g_upsample": "resize_conv"}, "model.g_upsample"),
  ):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
      checkpoints.check_compatible(meta, _tiny(**overrides), num_speakers=3)
  # A checkpoint written before these fields existed: their defaults.
  old = json.loads(json.dumps(meta))
  del old["config"]["model"]["g_upsample"], old["config"]["optim"]["g"]["ema_decay"]
  del old["config"]["loss"]["lecam"]
  checkpoints.check_compatible(old, _tiny(), num_speakers=3)


# ------------------------------------------------------------------------------------------
# Monitors.
# ------------------------------------------------------------------------------------------


def _feed(mon, steps, d_loss, real, fake, wrong, start=1):
  for step in range(start, start + steps):
    mon.add(
        step, {"d_loss": d_loss, "d_score_real": real, "d_score_fake": fake, "d_score_wrong": wrong}
    )
  return start + steps


def test_divergence_monitor_is_quiet_on_a_healthy_run():
  mon = monitor.DivergenceMonitor(window=10, real_label=0.9)
  step = _feed(mon, 30, d_loss=0.6, real=0.6, fake=0.3, wrong=0.3)
  scalars, warning = mon.check()
  assert warning is None
  np.testing.assert_allclose(scalars["divergence/d_loss_vs_best"], 1.0)
  np.testing.assert_allclose(scalars["divergence/fake_minus_real"], -0.3)
  np.testing.assert_allclose(scalars["divergence/real_minus_wrong"], 0.3)
  np.testing.assert_allclose(scalars["divergence/score_drift"], 0.3)
  # Too few steps for a verdict: no warning even on bad numbers.
  early = monitor.DivergenceMonitor(window=10, real_label=0.9)
  _feed(early, 5, d_loss=40.0, real=3.0, fake=5.0, wrong=3.0)
  assert early.check()[1] is None
  del step


def test_divergence_monitor_names_what_went_wrong():
  mon = monitor.DivergenceMonitor(window=10, real_label=0.9)
  step = _feed(mon, 20, d_loss=1.0, real=0.6, fake=0.3, wrong=0.3)
  assert mon.check()[1] is None  # the loop checks at every log step; this window is the best
  step = _feed(mon, 10, d_loss=10.8, real=1.3, fake=2.1, wrong=1.2, start=step)
  scalars, warning = mon.check()
  assert scalars["divergence/d_loss_vs_best"] == pytest.approx(10.8)
  assert "10.8x its best window" in warning and "steps 21-30" in warning
  assert "generated faces (2.10) above real pairs (1.30)" in warning
  assert "left their targets" in warning
  with pytest.raises(ValueError, match="divergence_window"):
    monitor.DivergenceMonitor(window=0, real_label=0.9)


def test_quality_history_continues_over_a_resume(tmp_path):
  path = str(tmp_path / "eval" / "history.jsonl")
  history = monitor.QualityHistory(path, start_step=0)
  history.append(100, 1.0, {"eval/generated/identity": 0.5})
  history.append(200, 2.0, {"eval/generated/identity": 0.7})
  history.append(300, 3.0, {"eval/generated/identity": 0.8})
  with open(path, "a") as f:
    f.write('{"step": 400, "train_min')  # a line cut by a crash
  # Resumed from the checkpoint of step 200: the lines of steps 300+ were lost work.
  resumed = monitor.QualityHistory(path, start_step=200)
  assert resumed.minutes_before == 2.0  # the fallback for checkpoints without their minutes
  row = resumed.append(300, 2.5, {"eval/generated/identity": 0.9})
  assert row["train_minutes"] == pytest.approx(2.5)
  lines = [json.loads(line) for line in open(path)]
  assert [r["step"] for r in lines] == [100, 200, 300]
  assert lines[-1]["metrics"]["eval/generated/identity"] == 0.9


def test_paper_discriminator_is_additive_and_the_joint_and_projection_ones_are_not():
  """Paper D: score(x, e) = f(x) + g(e), so score(real, e) - score(wrong, e) does not depend on e
  (it cannot judge whether a face matches the speech). With a joint layer, or the projection
  conditioning (with or without a spectrally normalised score layer), it does."""
  rng = np.random.default_rng(0)
  faces = jnp.asarray(rng.uniform(-1, 1, (2, 64, 64, 3)), jnp.float32)
  e1, e2 = (jnp.asarray(rng.normal(size=(1, 8)) * 3, jnp.float32) for _ in range(2))

  def gap(d, variables, e):
    scores, _ = d.apply(variables, faces, jnp.concatenate([e, e]), update_spectral=False)
    return float(scores[0] - scores[1])

  with jax.enable_x64(True):  # exact enough that "does not depend" means ~1e-12
    faces = faces.astype(jnp.float64)
    e1, e2 = e1.astype(jnp.float64), e2.astype(jnp.float64)
    arms = ((0, "concat", False, True), (16, "concat", False, False))
    arms += ((0, "projection", False, False), (0, "projection", True, False))
    for joint, conditioning, score_sn, additive in arms:
      d = networks.Discriminator(
          image_size=64,
          base_channels=4,
          joint_channels=joint,
          conditioning=conditioning,
          score_sn=score_sn,
          dtype=jnp.float64,
          param_dtype=jnp.float64,
      )
      variables = d.init(
          jax.random.PRNGKey(0), faces, jnp.concatenate([e1, e1]), update_spectral=False
      )
      if joint:
        assert variables["params"]["joint"]["sn"]["kernel"].shape == (1, 1, 32 + 8, 16)
      if conditioning == "projection":  # V: embedding -> D's 32 feature channels
        v = variables["params"]["projection"]
        assert (v["sn"]["kernel"] if score_sn else v["kernel"]).shape == (1, 1, 8, 32)
      score = variables["params"]["score"]
      assert ("sn" in score) == score_sn and "spectral" in variables
      g1, g2 = gap(d, variables, e1), gap(d, variables, e2)
      assert abs(g1) > 1e-6  # the two faces do get different scores
      if additive:
        assert abs(g1 - g2) < 1e-9 * abs(g1)
      else:
        assert abs(g1 - g2) > 1e-3 * abs(g1)  # (additive: < 1e-9)


def test_projection_with_a_joint_layer_is_refused_naming_both_fields():
  config = helpers.tiny_config(
      **{"model.d_conditioning": "projection", "model.d_joint_channels": 8}
  )
  with pytest.raises(config_lib.ConfigError, match=r"d_joint_channels.*d_conditioning"):
    factory.make_discriminator(config.model)


@pytest.mark.parametrize("conditioning,score_sn", [("projection", False), ("projection", True)])
def test_train_step_runs_with_each_discriminator(conditioning, score_sn):
  config = helpers.tiny_config(
      **{"model.d_conditioning": conditioning, "model.d_score_sn": score_sn}
  )
  config.batch_size = 4
  state = step_lib.create_train_state(config, 3, jax.random.PRNGKey(0))
  new_state, metrics = jax.jit(step_lib.make_train_step(config, 3, axis_name=None))(
      state, helpers.random_batch(config, 4)
  )
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert int(new_state.step) == 1
