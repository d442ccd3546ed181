"""checkpoints.py: state + grain iterator state round trip, half-written dirs, shape refusal."""

import os
from typing import Any

import flax
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from wav2pix_jax import checkpoints


def _state(value: float):
  return {
      "step": np.asarray(3, np.int32),
      "w": np.full((2, 3), value, np.float32),
      "rng": np.asarray([1, 2], np.uint32),
  }


def _config(**model):
  config = ml_collections.ConfigDict(
      {
          "model": {
              "image_size": 64,
              "embed_dim": 8,
              "encoder_channels": (4, 8),
              "encoder_kernel_size": 15,
              "encoder_stride": 4,
              "encoder_hidden": (16,),
              "classifier_hidden": 8,
              "g_base_channels": 4,
              "d_base_channels": 4,
              "param_dtype": "float32",
          },
          "input": {"audio_samples": 1024},
          "optim": {"g": {"learning_rate": 1e-4}},
      }
  )
  config.model.update(model)
  return config


def _grain_iterator():
  return grain.MapDataset.range(100).to_iter_dataset()


def test_round_trip_state_and_recorded_iterator_state(tmp_path):
  manager = checkpoints.create_manager(str(tmp_path), max_to_keep=2)
  it = iter(_grain_iterator())
  for _ in range(3):
    next(it)
  recorded = it.get_state()  # state after the 3rd (last trained-on) element
  for _ in range(2):
    next(it)  # prefetched but never trained on
  meta = checkpoints.make_meta(_config(), num_speakers=5, speaker_names=list("abcde"))
  checkpoints.save(manager, 3, state=_state(1.5), data_state=recorded, meta=meta)
  manager.wait_until_finished()

  manager = checkpoints.create_manager(str(tmp_path), max_to_keep=2)
  assert checkpoints.latest_step(manager) == 3
  fresh = iter(_grain_iterator())
  restored = checkpoints.restore(
      manager, 3, abstract_state=jax.eval_shape(lambda: _state(0.0)), data_iterator=fresh
  )
  np.testing.assert_array_equal(restored["w"], np.full((2, 3), 1.5))
  assert int(restored["step"]) == 3
  assert restored["rng"].dtype == np.uint32
  assert next(fresh) == 3  # resumes right after the last trained-on element
  assert checkpoints.load_meta(manager, 3)["speaker_names"] == list("abcde")
  assert checkpoints.load_meta(manager, 3)["config"]["model"]["encoder_channels"] == [4, 8]


@flax.struct.dataclass
class _OldState:
  step: jax.Array
  w: jax.Array


@flax.struct.dataclass
class _NewState:
  step: jax.Array
  w: jax.Array
  extra: Any = None  # a field added since: None in runs that do not use it


def test_a_checkpoint_from_before_a_new_none_field_restores_and_missing_arrays_fail(tmp_path):
  manager = checkpoints.create_manager(str(tmp_path), max_to_keep=2)
  old = _OldState(step=np.asarray(7, np.int32), w=np.full((2, 3), 2.5, np.float32))
  meta = checkpoints.make_meta(_config(), num_speakers=5)
  checkpoints.save(manager, 7, state=old, data_state=None, meta=meta)
  manager.wait_until_finished()
  abstract = jax.eval_shape(lambda: _NewState(step=jnp.int32(0), w=jnp.zeros((2, 3))))
  restored = checkpoints.restore(manager, 7, abstract_state=abstract)
  assert isinstance(restored, _NewState) and restored.extra is None
  np.testing.assert_array_equal(restored.w, np.full((2, 3), 2.5))
  needs_more = jax.eval_shape(
      lambda: _NewState(step=jnp.int32(0), w=jnp.zeros((2, 3)), extra=jnp.zeros(()))
  )
  with pytest.raises(ValueError, match="step 7 lacks arrays this run's state needs"):
    checkpoints.restore(manager, 7, abstract_state=needs_more)


def test_max_to_keep_and_latest(tmp_path):
  manager = checkpoints.create_manager(str(tmp_path), max_to_keep=2)
  meta = checkpoints.make_meta(_config(), num_speakers=2)
  for step in (1, 2, 3):
    checkpoints.save(manager, step, state=_state(step), data_state=None, meta=meta)
  manager.wait_until_finished()
  assert manager.all_steps() == [2, 3]
  assert checkpoints.latest_step(manager) == 3


def test_half_written_checkpoint_is_never_picked_up(tmp_path):
  manager = checkpoints.create_manager(str(tmp_path), max_to_keep=3)
  checkpoints.save(
      manager,
      2,
      state=_state(2.0),
      data_state=None,
      meta=checkpoints.make_meta(_config(), num_speakers=2),
  )
  manager.wait_until_finished()
  # A crash in the middle of saving step 5 leaves orbax's temporary directory behind.
  tmp = os.path.join(checkpoints.checkpoint_dir(str(tmp_path)), "5.orbax-checkpoint-tmp-1234567")
  os.makedirs(os.path.join(tmp, "state"))
  with open(os.path.join(tmp, "state", "garbage"), "w") as f:
    f.write("half written")
  manager = checkpoints.create_manager(str(tmp_path), max_to_keep=3)
  assert checkpoints.latest_step(manager) == 2
  restored = checkpoints.restore(
      manager, checkpoints.latest_step(manager), abstract_state=jax.eval_shape(lambda: _state(0.0))
  )
  np.testing.assert_array_equal(restored["w"], 2.0)


def test_check_compatible_accepts_non_shape_changes():
  meta = checkpoints.make_meta(_config(), num_speakers=3)
  other = _config()
  other.optim.g.learning_rate = 1.0
  checkpoints.check_compatible(meta, other, num_speakers=3)


def test_check_compatible_names_every_mismatching_field():
  meta = checkpoints.make_meta(_config(), num_speakers=3)
  other = _config(image_size=128, encoder_channels=(4, 16))
  other.input.audio_samples = 2048
  with pytest.raises(ValueError) as info:
    checkpoints.check_compatible(meta, other, num_speakers=4)
  message = str(info.value)
  for field in (
      "model.image_size",
      "model.encoder_channels",
      "input.audio_samples",
      "num_speakers",
  ):
    assert field in message
  assert "model.embed_dim" not in message


def test_bad_max_to_keep_names_the_field(tmp_path):
  with pytest.raises(ValueError, match="max_checkpoints"):
    checkpoints.create_manager(str(tmp_path), max_to_keep=0)
