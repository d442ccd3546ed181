"""The training loop: setup() -> Run, train_loop (the steps and their periodic actions),
train_and_evaluate around it. The step itself is training/step.py; the loop's parts
training/loop_parts.py."""

import dataclasses
import json
import os
import time
from typing import Any, Callable, Optional

from absl import logging
from clu import metric_writers
import jax
import ml_collections
import numpy as np

from wav2pix_jax import checkpoints
from wav2pix_jax import config_lib
from wav2pix_jax.evaluation import data as eval_data
from wav2pix_jax.evaluation import evaluator as evaluator_lib
from wav2pix_jax.evaluation import grids
from wav2pix_jax.data import datasets
from wav2pix_jax.data import input_pipeline
from wav2pix_jax.serving import inference
from wav2pix_jax.training import loop_parts
from wav2pix_jax.training import monitor
from wav2pix_jax.training import parallel
from wav2pix_jax.training import step as step_lib

# ------------------------------------------------------------------------------------------
# Host-side helpers.
# ------------------------------------------------------------------------------------------


def check_config(config: ml_collections.ConfigDict) -> int:
  """Fails fast (naming the field) on configs that can't train; returns the per-process batch.

  The one config schema (config_lib.validate) plus what needs the devices: the global batch's
  split over processes and local devices. setup() runs the two halves apart (validate before the
  multi-process start-up, the batch after it)."""
  config_lib.validate(config)
  return parallel.check_batch_size(config.batch_size)


def _hparams(config: ml_collections.ConfigDict) -> dict:
  flat = {}

  def walk(prefix, node):
    for key, value in node.items():
      name = f"{prefix}{key}"
      if isinstance(value, (ml_collections.ConfigDict, dict)):
        walk(name + ".", value)
      elif isinstance(value, (bool, int, float, str)):
        flat[name] = value
      else:
        flat[name] = str(value)

  walk("", config)
  return flat


# ------------------------------------------------------------------------------------------
# The loop.
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
  """What `setup` builds for the loop: everything but the step itself."""

  config: ml_collections.ConfigDict
  workdir: str
  is_chief: bool
  state: step_lib.TrainState  # host copy (restored or fresh)
  start_step: int
  local_batch: int  # examples per step on this process
  train_iter: Any  # grain iterator with get_state/set_state (the position is checkpointed)
  checkpointer: loop_parts.Checkpointer
  writer: metric_writers.MetricWriter
  generator: inference.FaceGenerator  # one compiled G; the current weights are swapped in
  grid_batch: Optional[dict]  # fixed speech/faces for the image grids (None: first train batch)
  evaluator: Optional[evaluator_lib.PeriodicEvaluator]  # process 0, config.eval.every_steps > 0
  quality: Optional[monitor.QualityHistory]  # <workdir>/eval/history.jsonl (with the evaluator)
  clock: loop_parts.TrainClock
  # <workdir>/best (config.eval.best_metric, with the periodic evaluation); on every process.
  best: Optional[loop_parts.BestCheckpoint] = None
  # G's BatchNorm statistics recomputed for the current weights (config.precise_bn_examples > 0)
  precise_bn: Optional[loop_parts.PreciseBatchNorm] = None

  def with_precise_bn(self, state, step: int):
    """`state` (replicated) as checkpoints, evaluation and grids see it: with precise BatchNorm
    statistics when the run recomputes them, else itself."""
    return state if self.precise_bn is None else self.precise_bn(state, step)

  def current_generator(self, state, step: int) -> inference.FaceGenerator:
    host = parallel.unreplicate(self.with_precise_bn(state, step))
    return self.generator.with_variables(inference.generator_variables(host), step=step)


def setup(config: ml_collections.ConfigDict, workdir: str) -> Run:
  """Checks the config, restores or creates the state, opens data, checkpoints, logs, evaluation."""
  config_lib.validate(config)  # every field rule, before anything is started or read
  parallel.maybe_initialize_distributed(config)  # before the first device query
  logging.info(
      "JAX process %d / %d; local devices: %s",
      jax.process_index(),
      jax.process_count(),
      jax.local_devices(),
  )
  workdir = os.path.abspath(os.path.expanduser(workdir))
  local_batch = parallel.check_batch_size(config.batch_size)  # the rest of check_config
  is_chief = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)

  info = datasets.get_dataset_info(config.input)
  num_speakers = info.num_speakers
  meta = checkpoints.make_meta(config, num_speakers=num_speakers, speaker_names=info.speaker_names)
  manager = checkpoints.create_manager(workdir, max_to_keep=config.log.max_checkpoints)
  latest = _compatible_latest_step(manager, config, num_speakers, workdir)
  train_iter = _train_iterator(config, local_batch)
  state = _initial_state(config, num_speakers, manager, latest, train_iter)
  start_step = int(state.step)

  if is_chief:
    _write_run_files(workdir, config, info)
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)
  if start_step == 0:
    writer.write_hparams(_hparams(config))
  # Grids: in inference mode whatever config.eval.train_mode says (the periodic evaluation follows
  # it); the current weights are swapped in (one compiled function for the whole run).
  generator = inference.FaceGenerator.from_state(
      config, num_speakers, state, train_mode=False, speaker_names=tuple(info.speaker_names)
  )
  grid_batch = _grid_batch(config, num_speakers) if is_chief else None
  evaluator, quality, clock, best = _evaluation_and_clock(
      config, workdir, generator.batch_size, start_step, manager, latest, meta, is_chief
  )
  return Run(
      config=config,
      workdir=workdir,
      is_chief=is_chief,
      state=state,
      start_step=start_step,
      local_batch=local_batch,
      train_iter=train_iter,
      checkpointer=loop_parts.Checkpointer(
          manager, meta=meta, latest=latest, minutes=clock.minutes
      ),
      writer=writer,
      generator=generator,
      grid_batch=grid_batch,
      evaluator=evaluator,
      quality=quality,
      clock=clock,
      best=best,
      precise_bn=_precise_bn(config, num_speakers),
  )


def _precise_bn(
    config: ml_collections.ConfigDict, num_speakers: int
) -> Optional[loop_parts.PreciseBatchNorm]:
  """The BatchNorm recomputation on the first config.precise_bn_examples training records (the
  same on every process), or None."""
  count = int(config.get("precise_bn_examples", 0) or 0)
  if count <= 0:
    return None
  waveforms, _, _ = eval_data.read_split(
      config.input,
      split=config.input.train_split,
      image_size=config.model.image_size,
      batch_size=min(count, 64),
      max_examples=count,
  )
  logging.info(
      "BatchNorm statistics recomputed on %d training windows for every checkpoint, evaluation "
      "and grid (config.precise_bn_examples).",
      len(waveforms),
  )
  return loop_parts.PreciseBatchNorm(config, num_speakers, waveforms)


def _evaluation_and_clock(
    config: ml_collections.ConfigDict,
    workdir: str,
    batch_size: int,
    start_step: int,
    manager,
    latest: Optional[int],
    meta: dict,
    is_chief: bool,
) -> tuple[
    Optional[evaluator_lib.PeriodicEvaluator],
    Optional[monitor.QualityHistory],
    loop_parts.TrainClock,
    Optional[loop_parts.BestCheckpoint],
]:
  """setup()'s (evaluator, quality history, clock, best checkpoint): the periodic evaluation and
  its history on process 0 (config.eval.every_steps > 0), the training minutes resumed from the
  latest checkpoint (else the history's), <workdir>/best on every process (eval.best_metric)."""
  evaluator = quality = None
  if is_chief and config.eval.every_steps:  # the eval set is read once, on process 0
    evaluator, quality = _periodic_evaluation(config, workdir, batch_size, start_step)
  minutes_before = loop_parts.minutes_at_checkpoint(
      manager, latest, fallback=quality.minutes_before if quality else 0.0
  )
  clock = loop_parts.TrainClock(minutes_before=minutes_before)
  best = None
  if config.eval.every_steps and config.eval.get("best_metric", ""):
    best = loop_parts.BestCheckpoint(
        workdir, metric=config.eval.best_metric, meta=meta, is_chief=is_chief
    )
  return evaluator, quality, clock, best


def _compatible_latest_step(
    manager, config: ml_collections.ConfigDict, num_speakers: int, workdir: str
) -> Optional[int]:
  """The latest checkpoint's step (None: none); an incompatible one is refused before anything is
  built."""
  latest = checkpoints.latest_step(manager)
  if latest is not None:
    checkpoints.check_compatible(
        checkpoints.load_meta(manager, latest), config, num_speakers=num_speakers, where=workdir
    )
  return latest


def _train_iterator(config: ml_collections.ConfigDict, local_batch: int):
  """This process's shard of the training data, `local_batch` examples a step."""
  return input_pipeline.create_train_iterator(
      config.input,
      batch_size=local_batch,
      image_size=config.model.image_size,
      seed=config.input.shuffle_seed,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
  )


def _initial_state(
    config: ml_collections.ConfigDict, num_speakers: int, manager, latest: Optional[int], train_iter
) -> step_lib.TrainState:
  """The host state: restored from step `latest` (with the data position), else a fresh one."""
  abstract = step_lib.abstract_train_state(config, num_speakers)
  logging.info(
      "G parameters: %d, D parameters: %d",
      loop_parts.count_params(abstract.g_params),
      loop_parts.count_params(abstract.d_params),
  )
  if latest is None:
    return step_lib.create_train_state(config, num_speakers, jax.random.PRNGKey(config.seed))
  state = checkpoints.restore(manager, latest, abstract_state=abstract, data_iterator=train_iter)
  logging.info("Resumed from %s at step %d.", manager.directory, int(state.step))
  return state


def _write_run_files(workdir: str, config: ml_collections.ConfigDict, info) -> None:
  """<workdir>/config.json and dataset.json (name, number and names of the speakers)."""
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  with open(os.path.join(workdir, "dataset.json"), "w") as f:
    dataset = {"dataset": info.name, "num_speakers": info.num_speakers}
    json.dump({**dataset, "speaker_names": list(info.speaker_names)}, f, indent=2)


def _periodic_evaluation(
    config: ml_collections.ConfigDict, workdir: str, batch_size: int, start_step: int
) -> tuple[evaluator_lib.PeriodicEvaluator, monitor.QualityHistory]:
  """The evaluator (its eval set read here, once) and the history it appends to."""
  evaluator = evaluator_lib.PeriodicEvaluator(config, batch_size=batch_size)
  logging.info(
      "Evaluating every %d steps on %d examples of split %r.",
      config.eval.every_steps,
      len(evaluator.eval_set.speakers),
      evaluator.split,
  )
  quality = monitor.QualityHistory(
      os.path.join(workdir, "eval", "history.jsonl"), start_step=start_step
  )
  return evaluator, quality


# Records read at most to find every speaker's examples for the grids (the split's record order
# groups the speakers, so the first `num_images` are usually one speaker's).
_GRID_SCAN_RECORDS = 1024


def _grid_batch(config: ml_collections.ConfigDict, num_speakers: int) -> Optional[dict]:
  """A fixed batch for the image grids: validation speech if there is such a split, its examples
  taken from each speaker in turn, so a grid shows whether G tells the speakers apart."""
  n = config.log.num_images
  try:
    batches = input_pipeline.create_eval_iterator(
        config.input,
        batch_size=n,
        image_size=config.model.image_size,
        process_index=0,
        process_count=1,
        max_examples=_GRID_SCAN_RECORDS,
    )
    by_speaker: dict[int, list[int]] = {}  # speaker -> its rows, in record order
    rows = {"waveform": [], "face": [], "speaker": []}
    for batch in batches:
      for i in np.flatnonzero(batch["mask"]):
        mine = by_speaker.setdefault(int(batch["speaker"][i]), [])
        if len(mine) < n:
          mine.append(len(rows["face"]))
          for key, values in rows.items():
            values.append(batch[key][i])
      if len(by_speaker) >= num_speakers and all(len(r) >= n for r in by_speaker.values()):
        break
  except ValueError as e:
    logging.warning("No eval batch for image grids (%s); using the first training batch.", e)
    return None
  if not by_speaker:
    logging.warning("No eval batch for image grids (empty split); using the first training batch.")
    return None
  turns = [r[k] for k in range(n) for r in by_speaker.values() if k < len(r)][:n]
  return {key: np.stack([values[t] for t in turns]) for key, values in rows.items()}


def write_images(run: Run, state, step: int, batch: dict) -> None:
  """The generated-vs-real face grid: TensorBoard and <workdir>/samples/step_N.png (process 0)."""
  if not run.is_chief:
    return
  if run.grid_batch is None:  # no eval split: the first training batch seen here, kept
    run.grid_batch = {
        k: np.asarray(v).reshape((-1,) + v.shape[2:])[: run.config.log.num_images]
        for k, v in jax.device_get(batch).items()
    }
  generator = run.current_generator(state, step)
  images = generator.generate_preprocessed(np.asarray(run.grid_batch["waveform"]))
  grid = grids.grid([images, run.grid_batch["face"]])
  run.writer.write_images(step, {"faces/generated_top_real_bottom": grid[None]})
  grids.save_png(os.path.join(run.workdir, "samples", f"step_{step:07d}.png"), grid)


def periodic_evaluation(run: Run, state, step: int) -> None:
  """run_evaluation on process 0, then the best checkpoint (every process joins its save)."""
  scalars = run_evaluation(run, state, step) if run.evaluator is not None else None
  if run.best is not None:
    run.best.consider(step, run.with_precise_bn(state, step), scalars)


def run_evaluation(run: Run, state, step: int) -> dict[str, float]:
  """The periodic evaluation: TensorBoard scalars, eval/history.jsonl, eval/periodic/report.json;
  returns the scalars."""
  start = time.time()
  report, scalars = run.evaluator(run.current_generator(state, step))
  scalars["eval/seconds"] = time.time() - start
  row = run.quality.append(step, run.clock.minutes(at=start), scalars)
  run.clock.eval_seconds += scalars["eval/seconds"]
  scalars["eval/train_minutes"] = row["train_minutes"]
  run.writer.write_scalars(step, scalars)
  report.write(os.path.join(run.workdir, "eval", "periodic"))  # the latest one
  logging.info(
      "eval at step %d (%s, %.1f s):\n%s",
      step,
      run.evaluator.split,
      scalars["eval/seconds"],
      report.summary(),
  )
  return scalars


def log_step(run: Run, step: int, scalars: dict[str, float], speed: str) -> None:
  run.writer.write_scalars(step, scalars)
  logging.info(
      "step %d/%d  d_loss %.4f  g_loss %.4f (adv %.4f fm %.4f l1 %.4f ce %.4f)%s",
      step,
      run.config.num_train_steps,
      scalars["d_loss"],
      scalars["g_loss"],
      scalars["g_adversarial"],
      scalars["g_feature_matching"],
      scalars["g_l1"],
      scalars["g_speaker_ce"],
      speed,
  )


def _evaluation_due(run: Run, step: int) -> bool:
  """Whether the periodic evaluation runs after `step` (process 0, config.eval.every_steps; every
  process with a best checkpoint to keep)."""
  return (run.evaluator is not None or run.best is not None) and loop_parts.due(
      step, run.config.eval.every_steps, run.config.num_train_steps
  )


def _step_metrics(run: Run) -> loop_parts.StepMetrics:
  """The loop's metrics: fetched one step late, checked, watched for divergence."""
  return loop_parts.StepMetrics(
      divergence=monitor.DivergenceMonitor(
          window=run.config.log.divergence_window, real_label=run.config.loss.real_label
      ),
      last_saved=lambda: run.checkpointer.last_saved,
  )


def _time_limit(run: Run, state, step: int) -> Optional[str]:
  """Why to stop after `step` when config.max_train_minutes is reached, else None.

  The run's last model is always evaluated: here, unless this step's periodic evaluation was due.
  """
  max_minutes = float(run.config.max_train_minutes or 0.0)
  if not max_minutes or run.clock.minutes() < max_minutes:
    return None
  minutes = run.clock.minutes()
  stopped_by = f"max_train_minutes={max_minutes:g} (at {minutes:.1f} training minutes)"
  if (run.evaluator is not None or run.best is not None) and not _evaluation_due(run, step):
    periodic_evaluation(run, state, step)
  return stopped_by


def train_loop(
    run: Run, p_train_step: Callable, state, prefetcher, metrics: loop_parts.StepMetrics, stop
) -> tuple[Any, int, Optional[str]]:
  """Steps run.start_step + 1 .. num_train_steps and their periodic actions.

  Returns (replicated state, the last step completed, why it stopped early: a signal's name, the
  time limit, or None when it finished or the data ran out).
  """
  log, num_steps, start_step = run.config.log, run.config.num_train_steps, run.start_step
  progress = loop_parts.Progress(
      start_step=start_step,
      num_steps=num_steps,
      clock=run.clock,
      max_minutes=float(run.config.max_train_minutes or 0.0),
  )
  step = start_step
  for step in range(start_step + 1, num_steps + 1):  # `step` = iterations completed after it
    try:
      batch = next(prefetcher)
    except StopIteration:
      logging.warning("The training data ran out at step %d.", step - 1)
      return state, step - 1, None
    state, device_metrics = p_train_step(state, batch)
    if step == start_step + 1:
      progress.compiled(step, device_metrics)  # steps/s excludes compilation
    metrics.add(step, device_metrics)  # checks the previous step's
    if loop_parts.due(step, log.checkpoint_every_steps, num_steps) or stop.signal_name:
      metrics.flush()  # nothing unchecked goes into a checkpoint
    if loop_parts.due(step, log.every_steps, num_steps):
      scalars = metrics.means(step)
      speed_scalars, speed = progress.report(step)
      log_step(run, step, {**scalars, **speed_scalars}, speed)
    if loop_parts.due(step, log.image_every_steps, num_steps):
      write_images(run, state, step, batch)
    if _evaluation_due(run, step):
      periodic_evaluation(run, state, step)
    if loop_parts.due(step, log.checkpoint_every_steps, num_steps):
      # The checkpoint's statistics become the live state's: a resumed run continues from them.
      state = run.with_precise_bn(state, step)
      run.checkpointer.save(step, state, prefetcher.last_state)
    if stop.signal_name is not None:
      return state, step, stop.signal_name
    stopped_by = _time_limit(run, state, step)
    if stopped_by:
      return state, step, stopped_by
  return state, step, None


def _log_end(run: Run, step: int, stopped_by: Optional[str]) -> None:
  where = run.checkpointer.manager.directory
  if stopped_by:
    logging.warning("Stopped by %s after step %d; checkpoint saved in %s.", stopped_by, step, where)
  else:
    logging.info("Finished at step %d; checkpoint in %s.", step, where)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> step_lib.TrainState:
  """Trains (resuming from the workdir's latest checkpoint); returns the final host state."""
  run = setup(config, workdir)
  p_train_step = step_lib.make_p_train_step(config, run.generator.num_speakers)
  state = parallel.replicate(run.state)
  prefetcher = parallel.prefetch_to_device(
      run.train_iter, size=2, get_state=run.train_iter.get_state
  )
  checkpointer, metrics = run.checkpointer, _step_metrics(run)
  logging.info(
      "Training from step %d to %d, %d examples per step (%d per process, %d local devices).",
      run.start_step,
      config.num_train_steps,
      config.batch_size,
      run.local_batch,
      jax.local_device_count(),
  )
  completed = False
  try:
    with loop_parts.StopRequest() as stop:
      state, step, stopped_by = train_loop(run, p_train_step, state, prefetcher, metrics, stop)
      metrics.flush()
      if checkpointer.last_saved != step:
        state = run.with_precise_bn(state, step)
        checkpointer.save(step, state, prefetcher.last_state)
      checkpointer.manager.wait_until_finished()
    metrics.log_skipped(step - run.start_step)
    _log_end(run, step, stopped_by)
    completed = True
  except Exception as e:  # pylint: disable=broad-except
    full = checkpointer.disk_full(e)
    if full is not None:
      raise full from e
    raise
  finally:
    prefetcher.close()
    checkpointer.close(completed=completed)
    if run.best is not None:
      run.best.close()
    run.writer.flush()
  return parallel.unreplicate_to_host(state)
