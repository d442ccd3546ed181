"""JAX measurements of one benchmark row each: training iteration, its phases, generation,
input pipeline. Synthetic inputs of the real shapes, except the pipeline (real records).

Every function returns a JSON-able dict; a row that cannot run says why under "skipped".
"""

from __future__ import annotations

import functools
import importlib
import os
import pathlib
import time
from typing import Any

import numpy as np

from benchmarks import timing, xla_cost
from benchmarks.rows import DTYPES, Row

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# The reference hard-codes 10 speakers; the classifier size barely matters for speed.
NUM_SPEAKERS = 10


class Skip(Exception):
  """A row that cannot run here, with the reason."""


def _import(name: str):
  try:
    return importlib.import_module(name)
  except ImportError as e:
    raise Skip(f"{name} is not available ({e})") from None


def load_config(row: Row, config_path: str | None = None):
  """configs/base.py (64) or configs/base_128.py (128) with the row's batch, conv_impl, dtype."""
  from ml_collections import config_flags  # noqa: F401  (ensures ml_collections is there)
  import importlib.util

  path = (
      pathlib.Path(config_path)
      if config_path
      else (REPO_ROOT / "configs" / ("base_128.py" if row.image_size == 128 else "base.py"))
  )
  if not path.is_file():
    raise Skip(f"config {path} not found")
  spec = importlib.util.spec_from_file_location(f"bench_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.model.image_size = row.image_size
  config.batch_size = row.batch
  config.model.conv_impl = row.conv_impl
  config.model.dtype = DTYPES[row.dtype]
  return config


def synthetic_batch(
    batch: int, image_size: int, audio_samples: int = 16_000, num_label_ids: int = 2, seed: int = 0
) -> dict[str, np.ndarray]:
  """A host batch as input_pipeline yields it (DESIGN.md "Batches"), from random numbers."""
  rng = np.random.default_rng(seed)
  return {
      "waveform": rng.uniform(-1, 1, (batch, audio_samples)).astype(np.float32),
      "face": rng.uniform(-1, 1, (batch, image_size, image_size, 3)).astype(np.float32),
      "wrong_face": rng.uniform(-1, 1, (batch, image_size, image_size, 3)).astype(np.float32),
      "speaker": rng.integers(0, num_label_ids, (batch,)).astype(np.int32),
  }


def _device_info() -> dict:
  import jax

  return {
      "backend": jax.default_backend(),
      "local_devices": jax.local_device_count(),
      "jax": jax.__version__,
  }


def _finish(res: dict, samples: timing.Samples, *, batch: int, flops: float | None) -> dict:
  res.update(timing.summarize(samples, batch=batch, flops=flops))
  res["loadavg_after"] = timing.loadavg()
  return res


# ------------------------------------------------------------------------------------------
# Generation: jitted Wav2PixG apply, train=False
# ------------------------------------------------------------------------------------------


def bench_generate(
    row: Row,
    *,
    steps: int,
    warmup: int,
    inner: int = 1,
    max_steps: int | None = None,
    config_path: str | None = None,
) -> dict:
  """Latency / throughput of faces from waveforms (the inference path), one device."""
  import jax

  factory = _import("wav2pix_jax.models.factory")

  config = load_config(row, config_path)
  model = factory.make_generator(config.model, NUM_SPEAKERS)
  batch = synthetic_batch(row.batch, row.image_size, config.input.audio_samples)
  waveform = jax.device_put(batch["waveform"])
  variables = jax.jit(functools.partial(model.init, train=False, update_spectral=False))(
      {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, waveform[:1]
  )

  generator = _import("wav2pix_jax.serving.inference").FaceGenerator(  # the project's own inference
      config=config,
      num_speakers=NUM_SPEAKERS,
      speaker_names=None,
      step=0,
      variables=variables,
      train_mode=False,
  )
  key = jax.random.PRNGKey(0)
  generate = jax.jit(lambda variables, waveform: generator.forward(variables, waveform, key, False))

  res = _row_info(row, config, inference=True)
  compiled, info = xla_cost.compile_aot(generate, variables, waveform)
  res.update(info)
  res["flops_per_iter"] = info["flops_per_device"]
  out = compiled(variables, waveform)
  res["out_shape"] = list(out.shape)
  res["finite"] = bool(np.isfinite(np.asarray(out)).all())
  samples = timing.time_calls(
      lambda: compiled(variables, waveform).block_until_ready(),
      steps=steps,
      warmup=warmup,
      inner=inner,
      max_steps=max_steps,
  )
  return _finish(res, samples, batch=row.batch, flops=res["flops_per_iter"])


# ------------------------------------------------------------------------------------------
# Training: the real step.train_step through parallel's pmapped step
# ------------------------------------------------------------------------------------------


def _train_setup(row: Row, config_path: str | None):
  """(config, train module, parallel module, replicated state, device batch)."""
  import jax

  step_lib = _import("wav2pix_jax.training.step")
  parallel = _import("wav2pix_jax.training.parallel")
  config = load_config(row, config_path)
  parallel.check_batch_size(config.batch_size)
  state = step_lib.create_train_state(config, NUM_SPEAKERS, jax.random.PRNGKey(config.seed))
  state = parallel.replicate(state)
  host = synthetic_batch(row.batch, row.image_size, config.input.audio_samples)
  device_batch = parallel.put_sharded(parallel.shard(host))
  return config, step_lib, parallel, state, device_batch


def _row_info(row: Row, config, *, inference: bool = False) -> dict:
  """The row's description; `conv_impl` is the generator's, as built for training or (with
  `inference`) for forward-only generation, which resolve "auto" differently."""
  factory = _import("wav2pix_jax.models.factory")
  return {
      "impl": "jax",
      "name": row.name,
      "kind": row.kind,
      "image_size": row.image_size,
      "batch": row.batch,
      "conv_impl": factory.conv_impl(config.model, inference=inference),
      "dtype": config.model.dtype,
      **_device_info(),
      "loadavg_before": timing.loadavg(),
  }


def bench_train(
    row: Row,
    *,
    steps: int,
    warmup: int,
    max_steps: int | None = None,
    config_path: str | None = None,
) -> dict:
  """One training iteration (D update then G update): step_lib.make_p_train_step, as trained."""
  import jax

  config, step_lib, parallel, state, batch = _train_setup(row, config_path)
  p_train_step = step_lib.make_p_train_step(config, NUM_SPEAKERS)
  res = _row_info(row, config)
  compiled, info = xla_cost.compile_aot(p_train_step, state, batch)
  res.update(info)
  ndev = jax.local_device_count()
  res["flops_per_iter"] = info["flops_per_device"] * ndev if info["flops_per_device"] else None

  holder = {"state": state}

  def step():
    holder["state"], metrics = compiled(holder["state"], batch)
    jax.block_until_ready((holder["state"], metrics))
    holder["metrics"] = metrics

  samples = timing.time_calls(step, steps=steps, warmup=warmup, max_steps=max_steps)
  metrics = jax.device_get(holder["metrics"])
  scalars = {
      k: float(np.mean(v))
      for k, v in metrics.items()
      if np.issubdtype(np.asarray(v).dtype, np.floating)
  }
  res["metrics"] = {k: round(v, 5) for k, v in sorted(scalars.items())}
  res["finite"] = bool(all(np.isfinite(v) for v in scalars.values()))
  return _finish(res, samples, batch=row.batch, flops=res["flops_per_iter"])


def _phase_fns(config, step_lib, parallel) -> dict:
  """d_update and g_update bound as train_step binds them, each to be pmapped alone."""
  import jax

  factory = _import("wav2pix_jax.models.factory")
  g_model = factory.make_generator(config.model, NUM_SPEAKERS, axis_name=parallel.AXIS_NAME)
  d_model = factory.make_discriminator(config.model)
  g_tx, d_tx = step_lib.make_optimizers(config)

  def g_out(state, batch, index, update_spectral):  # each phase runs G's forward itself
    rng = jax.random.fold_in(state.rng, index)
    return step_lib.g_forward(
        state, batch, g_model=g_model, rng=rng, update_spectral=update_spectral
    )

  def d_phase(state, batch):
    return step_lib.d_update(
        state,
        batch,
        g_out(state, batch, 1, True),
        d_model=d_model,
        d_tx=d_tx,
        real_label=config.loss.real_label,
        axis_name=parallel.AXIS_NAME,
    )

  def g_phase(state, batch):
    return step_lib.g_update(
        state,
        batch,
        g_out(state, batch, 2, False),
        d_model=d_model,
        g_tx=g_tx,
        loss_weights=config.loss,
        axis_name=parallel.AXIS_NAME,
    )

  return {"d_update": d_phase, "g_update": g_phase}


def bench_phases(
    row: Row,
    *,
    steps: int,
    warmup: int,
    max_steps: int | None = None,
    config_path: str | None = None,
) -> dict:
  """d_update and g_update pmapped and timed apart (where the training iteration's time goes)."""
  import jax

  config, step_lib, parallel, state, batch = _train_setup(row, config_path)
  res = dict(_row_info(row, config), phases={})
  ndev = jax.local_device_count()
  try:
    fns = _phase_fns(config, step_lib, parallel)
  except (AttributeError, TypeError) as e:
    raise Skip(f"step_lib.d_update / g_update are not callable as this harness expects ({e})")
  for phase, fn in fns.items():
    # Not donated: every call starts from the same state (same work each time).
    compiled, info = xla_cost.compile_aot(parallel.pmap(fn, donate_state=False), state, batch)
    flops = info["flops_per_device"] * ndev if info["flops_per_device"] else None
    call = lambda: jax.block_until_ready(compiled(state, batch))  # noqa: E731
    samples = timing.time_calls(call, steps=steps, warmup=warmup, max_steps=max_steps)
    ph = dict(info, flops_per_iter=flops)
    ph.update(timing.summarize(samples, batch=row.batch, flops=flops))
    res["phases"][phase] = ph
  d, g = (timing.headline(res["phases"][p]) for p in ("d_update", "g_update"))
  res["phases_sum_ms_median"] = round(d["ms_median"] + g["ms_median"], 3)
  res["d_share"] = round(d["ms_median"] / res["phases_sum_ms_median"], 3)
  res["loadavg_after"] = timing.loadavg()
  return res


# ------------------------------------------------------------------------------------------
# Input pipeline: samples/s on the real YouTubers records
# ------------------------------------------------------------------------------------------


def _has_prepared(data_dir: str, name: str) -> bool:
  root = pathlib.Path(os.path.expanduser(data_dir)) / name
  return root.is_dir() and any(root.rglob("dataset_info.json"))


def bench_pipeline(
    row: Row,
    *,
    steps: int,
    warmup: int,
    data_dir: str | None,
    prepare: bool = False,
    config_path: str | None = None,
) -> dict:
  """Host batches per second of input_pipeline.create_train_iterator on real records."""
  input_pipeline = _import("wav2pix_jax.data.input_pipeline")
  config = load_config(row, config_path)
  if row.workers is not None:
    config.input.num_workers = row.workers
  config.input.data_dir = data_dir = data_dir or config.input.data_dir
  dataset = config.input.dataset
  prepare_s = None
  if not _has_prepared(data_dir, dataset):
    if not prepare:
      raise Skip(
          f"{dataset} is not prepared in {data_dir} (pass --prepare-data to build it "
          f"from {config.input.manual_dir})"
      )
    manual_dir = config.input.manual_dir  # "" for datasets generated without raw data
    if manual_dir and not pathlib.Path(os.path.expanduser(manual_dir)).is_dir():
      raise Skip(
          f"{dataset} is not prepared in {data_dir} and its raw data is not at "
          f"{config.input.manual_dir}"
      )
    t0 = time.perf_counter()
    _import("wav2pix_jax.data.datasets").get_dataset_info(config.input)  # prepares it
    prepare_s = round(time.perf_counter() - t0, 1)

  res = {
      "impl": "jax",
      "name": row.name,
      "kind": row.kind,
      "image_size": row.image_size,
      "batch": row.batch,
      "dataset": dataset,
      "data_dir": data_dir,
      "num_workers": config.input.num_workers,
      "prepare_s": prepare_s,
      "loadavg_before": timing.loadavg(),
  }
  t0 = time.perf_counter()
  iterator = input_pipeline.create_train_iterator(
      config.input, batch_size=row.batch, image_size=row.image_size, seed=0
  )
  first = next(iterator)
  res["setup_s"] = round(time.perf_counter() - t0, 3)  # includes the first batch
  res["batch_shapes"] = {k: [list(np.shape(v)), str(np.asarray(v).dtype)] for k, v in first.items()}
  samples = timing.time_calls(lambda: next(iterator), steps=steps, warmup=warmup)
  return _finish(res, samples, batch=row.batch, flops=None)
