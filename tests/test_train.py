"""training/step.py and loop.py: state, the D/G phases, the pmapped step (2 devices == 1), and
train_and_evaluate."""

import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wav2pix_jax.evaluation import grids
from wav2pix_jax.training import loop_parts
from wav2pix_jax.training import parallel
from wav2pix_jax.training import loop
from wav2pix_jax.training import step as step_lib

import helpers

REPO = helpers.REPO
NUM_SPEAKERS = helpers.NUM_SPEAKERS


_load_config = helpers.load_config
_tiny = helpers.tiny_config
_batch = helpers.random_batch


def _equal(a, b) -> bool:
  return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.array_equal(x, y)), a, b)))


# One config for the unit tests: dropout off (so 2 devices can be compared with 1: dropout
# masks differ per device by design) and skip_nonfinite on (which changes nothing on finite
# steps); shared so each function compiles once per module.
@pytest.fixture(scope="module")
def tiny_state():
  config = _tiny(**{"model.dropout_rate": 0.0, "skip_nonfinite": True})
  return config, step_lib.create_train_state(config, NUM_SPEAKERS, jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def single_step(tiny_state):
  config, _ = tiny_state
  return jax.jit(step_lib.make_train_step(config, NUM_SPEAKERS, axis_name=None))


@pytest.mark.slow
def test_create_train_state_matches_eval_shape(tiny_state):
  config, state = tiny_state
  abstract = step_lib.abstract_train_state(config, NUM_SPEAKERS)
  assert jax.tree.structure(abstract) == jax.tree.structure(state)
  assert all(
      jax.tree.leaves(
          jax.tree.map(lambda a, x: a.shape == x.shape and a.dtype == x.dtype, abstract, state)
      )
  )
  assert int(state.step) == 0
  assert state.g_params["classifier"]["fc1"]["kernel"].shape[-1] == NUM_SPEAKERS
  assert jax.tree.leaves(state.g_spectral) and jax.tree.leaves(state.d_spectral)
  assert jax.tree.leaves(state.g_batch_stats)


def _phase_kwargs(config):
  return step_lib.make_train_step(config, NUM_SPEAKERS, axis_name=None).keywords


@pytest.mark.slow
def test_d_update_leaves_g_params_untouched(tiny_state):
  config, state = tiny_state
  kw = _phase_kwargs(config)

  @jax.jit
  def d_update(state, batch):  # as train_step: G's forward (one power iteration), then D's update
    g_out = step_lib.g_forward(
        state, batch, g_model=kw["g_model"], rng=jax.random.PRNGKey(1), update_spectral=True
    )
    return step_lib.d_update(
        state, batch, g_out, d_model=kw["d_model"], d_tx=kw["d_tx"], real_label=0.9
    )

  new, metrics = d_update(state, _batch(config))
  assert _equal(new.g_params, state.g_params)
  assert _equal(new.g_opt_state, state.g_opt_state)
  assert _equal(new.g_batch_stats, state.g_batch_stats)
  assert not _equal(new.d_params, state.d_params)
  assert not _equal(new.d_spectral, state.d_spectral)  # one power iteration for D
  assert not _equal(new.g_spectral, state.g_spectral)  # ... and one for G (its first call)
  for key in ("d_loss", "d_real", "d_fake", "d_wrong", "d_score_real", "d_grad_norm"):
    assert np.isfinite(metrics[key]), key
  np.testing.assert_allclose(
      metrics["d_loss"], metrics["d_real"] + metrics["d_fake"] + metrics["d_wrong"], rtol=1e-5
  )


@pytest.mark.slow
def test_g_update_leaves_d_untouched(tiny_state):
  config, state = tiny_state
  kw = _phase_kwargs(config)

  @jax.jit
  def g_update(state, batch):  # G's forward without a power iteration, then G's update
    g_out = step_lib.g_forward(
        state, batch, g_model=kw["g_model"], rng=jax.random.PRNGKey(1), update_spectral=False
    )
    return step_lib.g_update(
        state, batch, g_out, d_model=kw["d_model"], g_tx=kw["g_tx"], loss_weights=config.loss
    )

  new, metrics = g_update(state, _batch(config))
  assert _equal(new.d_params, state.d_params)
  assert _equal(new.d_opt_state, state.d_opt_state)
  assert _equal(new.d_spectral, state.d_spectral)
  assert _equal(new.g_spectral, state.g_spectral)  # no second power iteration in the step
  assert not _equal(new.g_params, state.g_params)
  assert not _equal(new.g_batch_stats, state.g_batch_stats)
  # Every G-side part learns from the G loss (the encoder included).
  for part in ("encoder", "classifier", "generator"):
    assert not _equal(new.g_params[part], state.g_params[part]), part
  w = config.loss
  want = (
      w.adversarial * metrics["g_adversarial"]
      + w.feature_matching * metrics["g_feature_matching"]
      + w.l1 * metrics["g_l1"]
      + w.speaker_ce * metrics["g_speaker_ce"]
  )
  np.testing.assert_allclose(metrics["g_loss"], want, rtol=1e-5)


def test_d_phase_does_not_differentiate_through_g(tiny_state):
  """The fakes and the embedding are detached in the D phase: d(D loss)/d(G params) == 0."""
  config, state = tiny_state
  kw = _phase_kwargs(config)
  batch = _batch(config)

  def d_loss_of_g(g_params):
    moved = state.replace(g_params=g_params)
    g_out = step_lib.g_forward(
        moved, batch, g_model=kw["g_model"], rng=jax.random.PRNGKey(1), update_spectral=True
    )
    _, metrics = step_lib.d_update(
        moved, batch, g_out, d_model=kw["d_model"], d_tx=kw["d_tx"], real_label=0.9
    )
    return metrics["d_loss"]

  grads = jax.jit(jax.grad(d_loss_of_g))(state.g_params)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))


@pytest.mark.slow
def test_train_step_updates_both_and_skips_nonfinite(tiny_state, single_step):
  _, state = tiny_state
  config = tiny_state[0]
  new, metrics = single_step(state, _batch(config))
  assert int(new.step) == 1
  assert not _equal(new.rng, state.rng)
  assert not _equal(new.g_params, state.g_params) and not _equal(new.d_params, state.d_params)
  for key in loop_parts.FINITE_CHECKED + ("d_score_fake", "d_score_wrong", "speaker_accuracy"):
    assert key in metrics and np.isfinite(metrics[key]), key
  assert float(metrics["d_skipped"]) == 0.0 and float(metrics["g_skipped"]) == 0.0

  # A NaN in the input: with skip_nonfinite both updates are skipped, old params/opt states kept.
  bad = _batch(config)
  bad["waveform"][0, 0] = np.nan
  skipped, bad_metrics = single_step(state, bad)
  assert float(bad_metrics["d_skipped"]) == 1.0 and float(bad_metrics["g_skipped"]) == 1.0
  assert loop_parts.nonfinite_terms(jax.device_get(bad_metrics))  # the host would name them
  assert _equal(skipped.g_params, state.g_params) and _equal(skipped.d_params, state.d_params)
  assert _equal(skipped.g_opt_state, state.g_opt_state) and _equal(
      skipped.d_opt_state, state.d_opt_state
  )
  assert int(skipped.step) == 1  # the iteration still counts


def _leaf_name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def _feeds_batchnorm(name: str) -> bool:
  """A bias that feeds a BatchNorm (encoder convs, classifier denses), or that BatchNorm's
  running mean."""
  bias = name.endswith("bias") and ("encoder/conv" in name or "classifier/fc" in name)
  return bias or (name.startswith("g_batch_stats/") and name.endswith("mean"))


def _two_devices_vs_one(seeds) -> float:
  """Largest difference over its bound, over `seeds`, between 2 steps on 1 and on 2 devices.

  In float64: the runs differ only in summation order (pmean of per-device gradients, BatchNorm
  statistics over devices, global feature-matching means), which float64 resolves to ~1e-15.
  (In float32 the same comparison is dominated by noise: biases that feed a BatchNorm have an
  exactly zero gradient, so their float32 rounding noise becomes +-learning-rate Adam steps whose
  sign depends on the summation order.)
  """
  with jax.enable_x64(True):
    config = _tiny(
        **{"model.dropout_rate": 0.0, "model.dtype": "float64", "model.param_dtype": "float64"}
    )
    single = jax.jit(step_lib.make_train_step(config, NUM_SPEAKERS, axis_name=None))
    p_step = step_lib.make_p_train_step(config, NUM_SPEAKERS)
    # One compiled initialisation for every seed (create_train_state jits a new closure per call).
    init = jax.jit(lambda key: step_lib.create_train_state(config, NUM_SPEAKERS, key))
    worst = 0.0
    for seed in seeds:
      state = init(jax.random.PRNGKey(seed))
      assert state.g_params["generator"]["deconv0"]["sn"]["kernel"].dtype == jnp.float64
      s1, p_state = state, parallel.replicate(state)
      for i in range(2):
        batch = jax.tree.map(
            lambda x: x.astype(np.float64) if x.dtype == np.float32 else x,
            _batch(config, batch_size=4, seed=1000 * seed + i),
        )
        s1, m1 = single(s1, batch)
        p_state, p_metrics = p_step(p_state, parallel.put_sharded(parallel.shard(batch)))
      for key, value in m1.items():
        for device in range(2):
          np.testing.assert_allclose(
              p_metrics[key][device], value, rtol=1e-9, atol=1e-12, err_msg=f"seed {seed}: {key}"
          )
      host = parallel.unreplicate_to_host(p_state)
      for (path, want), got in zip(
          jax.tree_util.tree_leaves_with_path(jax.device_get(s1)), jax.tree.leaves(host)
      ):
        want, got = np.asarray(want), np.asarray(got)
        if not np.issubdtype(want.dtype, np.floating):
          np.testing.assert_array_equal(got, want, err_msg=_leaf_name(path))
          continue
        name = _leaf_name(path)
        # float64 rounding: 1e-7 of the leaf's scale, the scale being at least one Adam step (the
        # learning rate), the size of the difference a real bug (a missing pmean) makes.
        lr = config.optim.g.learning_rate
        bound = 1e-7 * max(float(np.abs(want).max()), lr)
        if _feeds_batchnorm(name):
          # Its gradient is exactly zero (BatchNorm removes any shift), so Adam turns rounding
          # noise g into steps of lr * g / (|g| + 1e-8), up to ~1e-4 lr here: allow 1e-2 lr. The
          # running mean of that BatchNorm inherits it.
          bound += 1e-2 * lr
        difference = float(np.abs(got - want).max())
        assert (
            difference <= bound
        ), f"seed {seed}: {name} differs by {difference:.3g} (bound {bound:.3g})"
        worst = max(worst, difference / bound)
  return worst


@pytest.mark.slow
def test_pmapped_step_on_two_devices_equals_one_device_for_20_seeds():
  """Same global batch: 2 devices (pmean'ed grads, cross-device BatchNorm, global feature-matching
  means) == 1 device, for two steps, every leaf of the state, from 20 initialisations. Dropout is
  off (masks differ per device by design)."""
  print(
      f"\nlargest 2-vs-1-device difference over 20 seeds: {_two_devices_vs_one(range(20)):.3g} "
      "of its bound"
  )


def test_nonfinite_terms_names_them():
  assert loop_parts.nonfinite_terms(
      {
          "d_loss": 1.0,
          "g_l1": float("nan"),
          "g_grad_norm": float("inf"),
          "steps_per_sec": float("nan"),
      }
  ) == ["g_l1", "g_grad_norm"]


def test_image_grid_layout():
  generated = np.full((3, 4, 4, 3), 1.0, np.float32)
  real = np.full((3, 4, 4, 3), -1.0, np.float32)
  grid = grids.grid([generated, real])  # training's samples: generated top, real bottom
  assert grid.shape == (8, 12, 3) and grid.dtype == np.uint8
  assert (grid[:4] == 255).all() and (grid[4:] == 0).all()


@pytest.mark.parametrize(
    "key,value,field",
    [
        ("batch_size", 3, "batch_size"),
        ("model.image_size", 96, "model.image_size"),
        ("model.conv_impl", "fft", "model.conv_impl"),
        ("model.dtype", "float8", "model.dtype"),
        ("optim.d.learning_rate", 0.0, "optim.d.learning_rate"),
        ("log.every_steps", 0, "log.every_steps"),
        ("max_train_minutes", -1.0, "max_train_minutes"),
        ("model.d_conditioning", "film", "model.d_conditioning"),
        ("loss.l1_low_pass", 3, "loss.l1_low_pass"),
    ],
)
def test_bad_configs_fail_fast_naming_the_field(tmp_path, key, value, field):
  config = _tiny(**{key: value, "input.data_dir": str(tmp_path / "never_created")})
  with pytest.raises(ValueError, match=field.replace(".", r"\.")):
    loop.train_and_evaluate(config, str(tmp_path / "workdir"))
  assert not (tmp_path / "never_created").exists()  # failed before touching the data


# ------------------------------------------------------------------------------------------
# train_and_evaluate end to end on the synthetic dataset (generated into a temp data_dir).
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def _latest(workdir):
  from wav2pix_jax import checkpoints

  return checkpoints.latest_step(checkpoints.create_manager(workdir, max_to_keep=2, create=False))


@pytest.mark.slow
def test_train_checkpoint_resume_and_refusals(tmp_path, synthetic_data_dir, caplog, monkeypatch):
  workdir = str(tmp_path / "workdir")
  config = _tiny(**{"input.data_dir": synthetic_data_dir})

  # 1. Three steps from scratch: checkpoints on step 2 (schedule) and 3 (end).
  state = loop.train_and_evaluate(config, workdir)
  assert int(state.step) == 3
  assert _latest(workdir) == 3
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "3"]
  assert glob.glob(os.path.join(workdir, "events.out.tfevents.*")), "no TensorBoard event file"
  grids = sorted(glob.glob(os.path.join(workdir, "samples", "*.png")))
  assert [os.path.basename(g) for g in grids] == ["step_0000002.png", "step_0000003.png"]
  from PIL import Image

  grid = np.asarray(Image.open(grids[-1]))
  s = config.model.image_size
  assert grid.shape == (2 * s, config.log.num_images * s, 3)  # generated row over real row
  saved = json.loads(open(os.path.join(workdir, "config.json")).read())
  assert saved["model"]["encoder_channels"] == list(config.model.encoder_channels)
  dataset = json.loads(open(os.path.join(workdir, "dataset.json")).read())
  assert dataset["num_speakers"] == len(dataset["speaker_names"]) == 8
  _assert_event_tags(
      workdir,
      {
          "d_loss",
          "g_loss",
          "g_l1",
          "d_score_real",
          "d_grad_norm",
          "g_grad_norm",
          "steps_per_sec",
          "faces/generated_top_real_bottom",
      },
  )

  # 2. Restart with more steps: resumes at 3 (restored, not re-initialised), ends at 5.
  config.num_train_steps = 5
  caplog.set_level("INFO")
  state = loop.train_and_evaluate(config, workdir)
  assert int(state.step) == 5
  assert "Resumed from" in caplog.text and "at step 3" in caplog.text
  assert _latest(workdir) == 5

  # 3. A resume with different shapes is refused before anything is touched, naming the fields.
  bad = _tiny(
      **{
          "input.data_dir": synthetic_data_dir,
          "model.g_base_channels": 8,
          "input.audio_samples": 2048,
          "num_train_steps": 7,
      }
  )
  with pytest.raises(
      ValueError,
      match=r"model\.g_base_channels.*input\.audio_samples|"
      r"input\.audio_samples.*model\.g_base_channels",
  ) as info:
    loop.train_and_evaluate(bad, workdir)
  assert "refusing to resume" in str(info.value)
  assert _latest(workdir) == 5

  # 4. A non-finite loss stops training with the step and the terms; step 5 stays the latest.
  nan_config = _tiny(**{"input.data_dir": synthetic_data_dir, "num_train_steps": 7})
  nan_config.loss.l1 = float("nan")
  with pytest.raises(FloatingPointError, match=r"g_loss.*at step 6.*step 5\) stays the latest"):
    loop.train_and_evaluate(nan_config, workdir)
  assert _latest(workdir) == 5


def _assert_event_tags(workdir, want):
  from tensorboard.backend.event_processing import event_accumulator

  files = glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
  tags = set()
  for f in files:
    acc = event_accumulator.EventAccumulator(f, size_guidance={"tensors": 0, "images": 0})
    acc.Reload()
    for kind in ("tensors", "images", "scalars"):
      tags.update(acc.Tags().get(kind, []))
  missing = want - tags
  assert not missing, f"missing TensorBoard tags {missing}; found {sorted(tags)}"


@pytest.mark.slow
def test_sigterm_finishes_the_step_saves_and_returns(
    tmp_path, synthetic_data_dir, caplog, monkeypatch
):
  import signal

  workdir = str(tmp_path / "workdir")
  config = _tiny(
      **{
          "input.data_dir": synthetic_data_dir,
          "num_train_steps": 50,
          "log.checkpoint_every_steps": 100,
          "log.image_every_steps": 100,
      }
  )
  real_make = step_lib.make_p_train_step

  def make_with_sigterm_on_step_2(*args, **kwargs):
    p_step = real_make(*args, **kwargs)
    calls = []

    def step(state, batch):
      out = p_step(state, batch)
      calls.append(1)
      if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-run, like a preemption notice
      return out

    return step

  monkeypatch.setattr(step_lib, "make_p_train_step", make_with_sigterm_on_step_2)
  before = signal.getsignal(signal.SIGTERM)
  caplog.set_level("INFO")
  state = loop.train_and_evaluate(config, workdir)
  assert int(state.step) == 2
  assert _latest(workdir) == 2
  assert "Stopped by SIGTERM after step 2" in caplog.text
  assert signal.getsignal(signal.SIGTERM) == before  # handlers restored


def test_grid_batch_takes_each_speaker_in_turn(synthetic_data_dir):
  # The split's records come grouped by speaker: the first num_images would be one speaker's.
  config = _tiny(**{"input.data_dir": synthetic_data_dir, "log.num_images": 6})
  from wav2pix_jax.data import datasets

  info = datasets.get_dataset_info(config.input)
  index = datasets.scan_split(
      info.name, info.data_dir, config.input.eval_split, config.input.audio_samples
  )
  batch = loop._grid_batch(config, info.num_speakers)
  assert batch["waveform"].shape == (6, config.input.audio_samples)
  assert batch["face"].shape[0] == 6
  order = list(dict.fromkeys(index.speakers.tolist()))  # the speakers in record order
  expected = [s for _ in range(6) for s in order][:6]
  assert batch["speaker"].tolist() == expected
  assert len(set(batch["speaker"].tolist())) == min(6, info.num_speakers) > 1
