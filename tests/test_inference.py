"""inference: load a generator from a saved TrainState and generate uint8 faces from speech."""

import importlib.util
import json
import pathlib

import jax
import numpy as np
import pytest

from wav2pix_jax import audio
from wav2pix_jax import checkpoints
from wav2pix_jax import inference
from wav2pix_jax import train

REPO = pathlib.Path(__file__).resolve().parents[1]
NAMES = ("alice", "bob")


def tiny_config():
  spec = importlib.util.spec_from_file_location(
      "tiny_config_for_inference", REPO / "configs" / "tiny.py"
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def save_run(workdir: pathlib.Path, config, *, steps=(3,), seed=0, names=NAMES):
  """A workdir as train.py leaves it: config.json, dataset.json and Orbax checkpoints of a real TrainState."""
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  (workdir / "dataset.json").write_text(
      json.dumps({"dataset": "x", "num_speakers": 2, "speaker_names": list(names)})
  )
  manager = checkpoints.create_manager(str(workdir), max_to_keep=5)
  meta = checkpoints.make_meta(config, num_speakers=2, speaker_names=names)
  # The real TrainState structure (eval_shape: nothing compiled), filled with seeded random values.
  abstract = train.abstract_train_state(config, 2)
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
