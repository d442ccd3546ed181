"""parallel.py: batch-size checks, shard/replicate round trips, prefetch with state tracking."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wav2pix_jax.training import parallel


def test_two_fake_devices():
  assert jax.local_device_count() == 2


def test_check_batch_size_ok():
  assert parallel.check_batch_size(8, process_count=1, local_device_count=2) == 8
  assert parallel.check_batch_size(8, process_count=2, local_device_count=2) == 4


@pytest.mark.parametrize("batch,processes,devices", [(7, 1, 2), (6, 2, 2), (4, 3, 1), (0, 1, 1)])
def test_check_batch_size_names_the_field(batch, processes, devices):
  with pytest.raises(ValueError, match="batch_size"):
    parallel.check_batch_size(batch, process_count=processes, local_device_count=devices)


def test_shard_unshard_round_trip():
  batch = {"waveform": np.arange(24, dtype=np.float32).reshape(4, 6), "speaker": np.arange(4)}
  sharded = parallel.shard(batch)
  assert sharded["waveform"].shape == (2, 2, 6)
  assert sharded["speaker"].shape == (2, 2)
  np.testing.assert_array_equal(sharded["speaker"][1], [2, 3])
  # Back to the host batch (the inverse of shard: merge the [devices, per_device] axes).
  on_devices = jax.device_get(parallel.put_sharded(sharded))
  back = jax.tree.map(lambda x: np.asarray(x).reshape((-1,) + x.shape[2:]), on_devices)
  np.testing.assert_array_equal(back["waveform"], batch["waveform"])


def test_shard_rejects_uneven_batch():
  with pytest.raises(ValueError, match="batch_size"):
    parallel.shard({"x": np.zeros((3, 2))})


def test_put_sharded_places_one_slice_per_device():
  x = parallel.put_sharded(parallel.shard({"x": np.arange(4.0)}))["x"]
  assert {s.device for s in x.addressable_shards} == set(jax.local_devices())
  np.testing.assert_array_equal(x.addressable_shards[1].data.reshape(-1), [2.0, 3.0])


def test_replicate_unreplicate_round_trip_and_pmap():
  tree = {"w": jnp.arange(3.0), "step": jnp.asarray(5, jnp.int32)}
  rep = parallel.replicate(tree)
  assert rep["w"].shape == (2, 3)
  out = parallel.pmap(
      lambda t, x: jax.tree.map(lambda a: a + parallel.pmean(x, parallel.AXIS_NAME), t),
      donate_state=False,
  )(rep, jnp.array([1.0, 3.0]))
  host = parallel.unreplicate_to_host(out)
  np.testing.assert_allclose(host["w"], [2.0, 3.0, 4.0])  # + mean(1, 3)
  assert int(host["step"]) == 7
  assert isinstance(host["w"], np.ndarray)


def test_device_rng_differs_per_device():
  same_key = parallel.replicate(jax.random.key_data(jax.random.key(0)))
  keys = jax.pmap(
      lambda k: jax.random.key_data(
          parallel.device_rng(jax.random.wrap_key_data(k), parallel.AXIS_NAME)
      ),
      axis_name=parallel.AXIS_NAME,
  )(same_key)
  assert not np.array_equal(keys[0], keys[1])


class _CountingIterator:
  """A tiny stand-in for a checkpointable grain iterator."""

  def __init__(self, n):
    self.i, self.n = 0, n

  def __iter__(self):
    return self

  def __next__(self):
    if self.i >= self.n:
      raise StopIteration
    self.i += 1
    return {"x": np.full((4, 2), self.i, np.float32)}

  def get_state(self):
    return {"next_index": self.i}


def test_prefetcher_tracks_state_of_consumed_batch_not_queued_ones():
  source = _CountingIterator(5)
  it = parallel.prefetch_to_device(source, size=3, get_state=source.get_state)
  assert it.last_state == {"next_index": 0}
  first = next(it)
  assert first["x"].shape == (2, 2, 2)
  assert float(first["x"][0, 0, 0]) == 1.0
  deadline = time.monotonic() + 60  # the thread runs ahead (waited for, not assumed after a sleep)
  while source.i <= 1 and time.monotonic() < deadline:
    time.sleep(0.005)
  assert source.i > 1  # it did prefetch ahead...
  assert it.last_state == {"next_index": 1}  # ...but the state is the consumed batch's
  rest = list(it)
  assert [float(b["x"][0, 0, 0]) for b in rest] == [2.0, 3.0, 4.0, 5.0]
  assert it.last_state == {"next_index": 5}
  with pytest.raises(StopIteration):
    next(it)
  it.close()


def test_prefetcher_surfaces_pipeline_errors():
  def bad():
    yield {"x": np.zeros((2, 1))}
    raise OSError("disk gone")

  it = parallel.prefetch_to_device(bad(), size=2)
  next(it)
  with pytest.raises(RuntimeError, match="input pipeline") as info:
    next(it)
  assert isinstance(info.value.__cause__, OSError)
  it.close()
