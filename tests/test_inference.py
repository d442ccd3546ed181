"""inference: load a generator from a saved TrainState and generate uint8 faces from speech."""

import importlib.util
import json
import pathlib

import jax
import numpy as np
import pytest

from wav2pix_jax.data import audio
from wav2pix_jax import checkpoints
from wav2pix_jax.serving import inference
from wav2pix_jax.training import step as step_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
NAMES = ("alice", "bob")


def tiny_config():
  spec = importlib.util.spec_from_file_location(
      "tiny_config_for_inference", REPO / "configs" / "tiny.py"
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def save_run(workdir: pathlib.Path, config, *, steps=(3,), seed=0, names=NAMES, num_speakers=2):
  """A workdir as training leaves it: config.json, dataset.json and Orbax checkpoints of a real
  TrainState (of `num_speakers` speakers)."""
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  (workdir / "dataset.json").write_text(
      json.dumps({"dataset": "x", "num_speakers": num_speakers, "speaker_names": list(names)})
  )
  manager = checkpoints.create_manager(str(workdir), max_to_keep=5)
  meta = checkpoints.make_meta(config, num_speakers=num_speakers, speaker_names=names)
  # The real TrainState structure (eval_shape: nothing compiled), filled with seeded random values.
  abstract = step_lib.abstract_train_state(config, num_speakers)
  states = {}
  for i, step in enumerate(steps):
    rng = np.random.default_rng(seed + i)
    state = jax.tree_util.tree_map_with_path(
        lambda p, x, rng=rng: _random_leaf(p, x, rng), abstract
    )
    checkpoints.save(manager, step, state=state, data_state=None, meta=meta)
    states[step] = state
  manager.wait_until_finished()
  manager.close()
  return states


def _random_leaf(path, x, rng):
  if np.issubdtype(x.dtype, np.integer):
    return np.zeros(x.shape, x.dtype)
  if "var" in jax.tree_util.keystr(path):  # BatchNorm running variances must be positive
    return (1.0 + rng.uniform(size=x.shape)).astype(x.dtype)
  return rng.normal(0.0, 0.2, size=x.shape).astype(x.dtype)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  config = tiny_config()
  workdir = tmp_path_factory.mktemp("inference") / "wd"
  states = save_run(workdir, config, steps=(2, 5))
  return workdir, config, states


def _speech(seconds: float, rate: int = 16_000, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * rate)) / rate
  return (
      0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))
      + 0.01 * rng.normal(size=t.size)
  ).astype(np.float32)


def test_load_matches_training_generator(run):
  workdir, config, states = run
  generator = inference.load(workdir)
  assert generator.step == 5 and generator.num_speakers == 2 and generator.speaker_names == NAMES
  windows = np.stack(
      [audio.preprocess(_speech(0.2, seed=s), window=config.input.audio_samples) for s in range(3)]
  )
  expected = inference.FaceGenerator.from_state(config, 2, states[5]).generate_preprocessed(windows)
  got = generator.generate_preprocessed(windows)
  assert got.dtype == np.uint8 and got.shape == (3, 64, 64, 3)
  np.testing.assert_allclose(got.astype(int), expected.astype(int), atol=1)


def test_step_and_path_forms(run):
  workdir, config, states = run
  window = np.zeros((1, config.input.audio_samples), np.float32)
  window[0, ::7] = 1.0
  older = inference.load(workdir, step=2)
  assert older.step == 2
  assert inference.load(workdir / "checkpoints").step == 5
  assert inference.load(workdir / "checkpoints" / "2").step == 2
  training_generator = inference.FaceGenerator.from_state(config, 2, states[2])
  expected = training_generator.generate_preprocessed(window)
  newest = training_generator.with_variables(
      inference.generator_variables(states[5])
  ).generate_preprocessed(window)
  assert not np.array_equal(expected, newest)  # the steps differ, so picking the step matters
  np.testing.assert_allclose(
      older.generate_preprocessed(window).astype(int), expected.astype(int), atol=1
  )
  with pytest.raises(ValueError, match=r"no checkpoint for step 4; available steps: \[2, 5\]"):
    inference.load(workdir, step=4)
  with pytest.raises(FileNotFoundError, match="no such workdir"):
    inference.load(workdir / "missing")


def test_with_variables_swaps_the_weights_without_recompiling(run):
  """Training swaps its current weights into one FaceGenerator every few hundred steps."""
  _, config, states = run
  window = np.zeros((1, config.input.audio_samples), np.float32)
  window[0, ::5] = 1.0
  generator = inference.FaceGenerator.from_state(config, 2, states[2])
  assert generator.step == int(states[2].step) and not generator.train_mode
  older = generator.generate_preprocessed(window)
  newer_generator = generator.with_variables(inference.generator_variables(states[5]), step=5)
  newer = newer_generator.generate_preprocessed(window)
  assert newer_generator.step == 5 and generator.step == int(states[2].step)
  assert newer_generator.forward is generator.forward and generator.forward._cache_size() == 1
  assert not np.array_equal(older, newer)
  np.testing.assert_array_equal(generator.generate_preprocessed(window), older)


def test_generate_every_and_batching(run):
  workdir, config, _ = run
  generator = inference.load(workdir, batch_size=4)
  speech = _speech(0.5)
  window = config.input.audio_samples
  hop = int(round(0.01 * 16_000))
  faces = generator.generate(speech, 16_000, every=0.01)
  assert faces.shape == (audio.num_windows(speech.size, window=window, hop=hop), 64, 64, 3)
  # Chunking (4 per call, last one padded) gives the same faces as one window at a time.
  np.testing.assert_array_equal(
      faces[5], generator.generate(speech[5 * hop : 5 * hop + window], 16_000)[0]
  )
  single = generator.generate(speech, 16_000)
  assert single.shape == (1, 64, 64, 3)


def test_generate_resamples_and_accepts_int16(run):
  workdir, _, _ = run
  generator = inference.load(workdir)
  speech = _speech(0.3)
  as_int16 = np.round(speech * 32767).astype(np.int16)
  np.testing.assert_allclose(
      generator.generate(as_int16, 16_000).astype(int),
      generator.generate(speech, 16_000).astype(int),
      atol=2,
  )
  at_8k = speech[::2]
  assert generator.generate(at_8k, 8_000).shape == (1, 64, 64, 3)


@pytest.mark.slow
def test_sample_uses_dropout_deterministically_by_seed(run):
  workdir, _, _ = run
  generator = inference.load(workdir)
  speech = _speech(0.3)
  a = generator.generate(speech, 16_000, sample=True, seed=1)
  assert np.array_equal(a, generator.generate(speech, 16_000, sample=True, seed=1))
  assert not np.array_equal(a, generator.generate(speech, 16_000, sample=True, seed=2))
  assert not np.array_equal(a, generator.generate(speech, 16_000))


def test_clear_errors_for_bad_inputs(run, tmp_path):
  workdir, _, _ = run
  generator = inference.load(workdir)
  with pytest.raises(audio.AudioError, match="needs at least window"):
    generator.generate(np.ones(100, np.float32), 16_000)
  with pytest.raises(ValueError, match="mono"):
    generator.generate(np.ones((2, 4000), np.float32), 16_000)
  with pytest.raises(ValueError, match="every must be a positive"):
    generator.generate(_speech(0.3), 16_000, every=0)
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="neither a workdir"):
    inference.load(tmp_path / "empty")


def test_config_json_that_does_not_match_its_checkpoint_names_the_field(run, tmp_path):
  """A hand-edited shape field in config.json: one clear ConfigError, not a restore traceback."""
  import shutil

  from wav2pix_jax import config_lib

  workdir, config, _ = run
  edited = tmp_path / "wd"
  shutil.copytree(workdir, edited)
  saved = json.loads((edited / "config.json").read_text())
  saved["model"]["embed_dim"] = config.model.embed_dim * 2
  (edited / "config.json").write_text(json.dumps(saved))
  with pytest.raises(config_lib.ConfigError) as info:
    inference.load(edited)
  message = str(info.value)
  assert "config.json does not match checkpoint step 5" in message, message
  assert f"model.embed_dim: checkpoint {config.model.embed_dim} vs config.json" in message, message
  assert "\n" not in message and "g_params" not in message  # names the field, not Flax paths


# ----------------------------------------------------------------------------- fusing windows


@pytest.fixture(scope="module")
def varied(run):
  """The run's generator with its encoder's convolutions scaled up: random BatchNorm statistics
  otherwise swamp the input, and every window gets nearly the same embedding."""
  workdir, _, _ = run
  generator = inference.load(workdir, batch_size=4)
  variables = generator.variables
  encoder = {
      k: jax.tree.map(lambda x: 10 * x, v) if k.startswith("conv") else v
      for k, v in variables["params"]["encoder"].items()
  }
  return generator.with_variables(
      {**variables, "params": {**variables["params"], "encoder": encoder}}
  )


def _noise(seconds: float, seed: int) -> np.ndarray:
  """Speech-like enough for a random encoder: noise with a per-window loudness and colour."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=int(seconds * 16_000))
  return (np.cumsum(x) * 0.01 + x * rng.uniform(0.1, 1.0)).astype(np.float32)


def test_fusing_copies_of_one_window_is_the_single_window_face(varied):
  window = varied.windows(_noise(0.3, 0), 16_000)  # [1, window]
  single = varied.generate_preprocessed(window)
  for copies in (1, 3, 10):  # 10 copies span 3 encoder chunks of 4
    fused = varied.generate_fused_preprocessed(np.repeat(window, copies, axis=0))
    assert fused.shape == (1, 64, 64, 3)
    np.testing.assert_array_equal(fused, single)
  # The same with the generator's dropout on, seeded.
  np.testing.assert_array_equal(
      varied.generate_fused_preprocessed(np.repeat(window, 5, axis=0), sample=True, seed=3),
      varied.generate_preprocessed(window, sample=True, seed=3),
  )


def test_fusing_is_order_invariant_and_uses_every_window(varied, run):
  _, config, _ = run
  windows = varied.fusion_windows(_noise(0.5, 1), 16_000)
  hop = config.input.audio_samples  # no overlap by default
  assert windows.shape == (audio.num_windows(8_000, window=hop, hop=hop), hop)
  embeddings = varied.embed_preprocessed(windows)
  assert np.abs(embeddings - embeddings.mean(0)).max() > 0.1  # the windows do differ
  fused = varied.generate_fused_preprocessed(windows)
  for seed in range(3):
    shuffled = windows[np.random.default_rng(seed).permutation(len(windows))]
    np.testing.assert_array_equal(varied.generate_fused_preprocessed(shuffled), fused)
  # The face of the mean embedding.
  np.testing.assert_allclose(
      varied.generate_from_embeddings(embeddings.mean(0, keepdims=True)).astype(int),
      fused.astype(int),
      atol=1,  # the float32 mean rounds differently from the float64 one
  )
  assert not np.array_equal(varied.generate_fused_preprocessed(windows[:2]), fused)
  # Silent windows (pauses) are left out; a silent recording is refused.
  with_pause = np.concatenate([windows[:2], np.zeros_like(windows[:3]), windows[2:]])
  np.testing.assert_array_equal(varied.generate_fused_preprocessed(with_pause), fused)
  with pytest.raises(audio.AudioError, match="silent"):
    varied.generate_fused_preprocessed(np.zeros_like(windows))


def test_generate_fused_over_several_recordings(varied):
  a, b = _noise(0.3, 2), _noise(0.4, 3)
  both = varied.generate_fused([a, b], 16_000)
  windows = np.concatenate([varied.fusion_windows(x, 16_000) for x in (a, b)])
  np.testing.assert_array_equal(both, varied.generate_fused_preprocessed(windows))
  np.testing.assert_array_equal(varied.generate_fused([b, a], 16_000), both)
  assert not np.array_equal(varied.generate_fused(a, 16_000), both)
  # Another rate is resampled first; `every` sets the hop between windows.
  assert varied.generate_fused(a[::2], 8_000).shape == (1, 64, 64, 3)
  overlapping = varied.fusion_windows(a, 16_000, every=0.01)
  assert len(overlapping) > len(varied.fusion_windows(a, 16_000))
  # A file shorter than one window is an error naming the shortfall.
  with pytest.raises(audio.AudioError, match="needs at least window"):
    varied.generate_fused([a, a[:100]], 16_000)


def test_mean_embeddings_of_identical_rows_is_exact():
  row = np.random.default_rng(0).normal(size=(1, 7)).astype(np.float32)
  for n in (1, 3, 10, 33):
    np.testing.assert_array_equal(
        inference.mean_embeddings(np.repeat(row, n, 0), [np.arange(n)]), row
    )
  with pytest.raises(ValueError, match="at least one"):
    inference.mean_embeddings(row, [np.arange(0)])
