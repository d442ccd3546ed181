"""The parts of the training loop (train.train_and_evaluate), each one job.

due            the one rule for periodic actions (logging, grids, evaluation, checkpoints)
Checkpointer   saves the host state with the data position; a full disk becomes one clear error
BestCheckpoint <workdir>/best: the state of the best periodic evaluation so far (best_metric)
StepMetrics    device metrics fetched one step late (no stall), non-finite checks, per-log means,
               the divergence signal
Progress       steps/s and ETA between log steps, compilation excluded
TrainClock     training wall time (evaluations excluded, summed over resumed runs through the
               minutes saved in each checkpoint)
PreciseBatchNorm  BatchNorm statistics recomputed for the current weights before they are used
               (checkpoints, evaluation, grids; config.precise_bn_examples)
StopRequest    SIGTERM / SIGINT -> finish the step, checkpoint, return
"""

import math
import signal
import threading
import time
from typing import Any, Callable, Mapping, Optional

from absl import logging
import jax
import numpy as np

from wav2pix_jax import checkpoints
from wav2pix_jax import config_lib
from wav2pix_jax.models import factory
from wav2pix_jax.models import networks
from wav2pix_jax.training import monitor
from wav2pix_jax.training import parallel

# Metrics the host checks for NaN/inf after every step (the loss terms and gradient norms).
FINITE_CHECKED = (
    "d_loss",
    "d_real",
    "d_fake",
    "d_wrong",
    "d_grad_norm",
    "g_loss",
    "g_adversarial",
    "g_feature_matching",
    "g_l1",
    "g_speaker_ce",
    "g_grad_norm",
)
# The key of the training minutes in each checkpoint's metadata.
TRAIN_MINUTES = "train_minutes"


def due(step: int, every: int, last_step: int) -> bool:
  """Whether a periodic action runs after `step`: every `every` steps (0 = never), and last."""
  return step == last_step or (every > 0 and step % every == 0)


def nonfinite_terms(metrics: Mapping[str, float]) -> list[str]:
  """Names of the checked loss terms / gradient norms that are NaN or inf."""
  return [k for k in FINITE_CHECKED if k in metrics and not math.isfinite(float(metrics[k]))]


def format_eta(seconds: float) -> str:
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class PreciseBatchNorm:
  """The replicated state with G's BatchNorm statistics recomputed for its current weights
  (networks.precise_batch_stats) on fixed training windows: what checkpoints, the periodic
  evaluation and the image grids use instead of the running averages. Training itself never reads
  them (train mode normalises by batch), so the weights train exactly as without; the result is
  kept for the step it was computed at (grids, evaluation and a checkpoint of one step share it).
  Every process computes the same statistics from the same windows: no communication."""

  def __init__(self, config, num_speakers: int, waveforms: np.ndarray):
    batch = min(int(config.batch_size), len(waveforms))
    count = len(waveforms) // batch
    self.batches = np.asarray(waveforms[: count * batch]).reshape(count, batch, -1)
    g_model = factory.make_generator(config.model, num_speakers, axis_name=None)
    self._stats = jax.jit(lambda variables, w: networks.precise_batch_stats(g_model, variables, w))
    self._cached: tuple[Optional[int], Any] = (None, None)

  def __call__(self, state, step: int):
    """`state` (replicated) with the recomputed statistics; the same object for the same step."""
    if self._cached[0] == step:
      return self._cached[1]
    host = parallel.unreplicate(state)
    variables = {
        "params": host.g_params,
        "batch_stats": host.g_batch_stats,
        "spectral": host.g_spectral,
    }
    stats = parallel.replicate(self._stats(variables, self.batches))
    refreshed = state.replace(g_batch_stats=stats)
    self._cached = (step, refreshed)
    return refreshed


class Checkpointer:
  """Saves the host copy of the (replicated) state with the data iterator's position and the
  run's metadata (with the training minutes so far, `minutes()`: a resumed run counts on from
  them); remembers the last step saved and the last one attempted."""

  def __init__(self, manager, *, meta: dict, latest: Optional[int], minutes: Callable[[], float]):
    self.manager = manager
    self.meta = meta
    self.minutes = minutes
    self.last_saved = latest
    self.last_attempted = latest  # named in the error if the disk fills up during that save

  def save(self, step: int, state, data_state) -> None:
    self.last_attempted = step
    checkpoints.save(
        self.manager,
        step,
        state=parallel.unreplicate_to_host(state),
        data_state=data_state,
        meta={**self.meta, TRAIN_MINUTES: round(self.minutes(), 4)},
    )
    self.last_saved = step

  def disk_full(self, error: BaseException) -> Optional[BaseException]:
    """The clear 'disk full' error for `error`, or None if it is something else."""
    return checkpoints.disk_full_error(error, str(self.manager.directory), self.last_attempted)

  def close(self, *, completed: bool) -> None:
    """Waits for the async save (lost otherwise) and closes the manager.

    When the run is already failing (`completed` False), an error here is logged, not raised:
    the failed async save's error, raised again, must not hide the first one.
    """
    try:
      self.manager.wait_until_finished()
      self.manager.close()
    except Exception:  # pylint: disable=broad-except
      if completed:
        raise
      logging.exception("Closing the checkpoint manager failed too.")


# config.eval.best_metric "identity": the generated row's identity accuracy (dlib's where dlib
# ran, else the pixel one: both exist on their datasets), then the lower dlib FD on a tie.
BEST_METRICS = config_lib.BEST_METRICS
IDENTITY_KEYS = ("eval/generated/identity", "eval/generated/pixel_identity")
FD_KEY = "eval/generated/frechet_distance"
# Identities this close are a tie (accuracy moves in steps of 1/N: equal counts below N = 200).
IDENTITY_TIE = 0.005


def compared_scalars(scalars: Mapping[str, float]) -> Optional[dict[str, float]]:
  """The scalars the "identity" criterion compares ({identity key: ..., FD: ...}), or None when
  the evaluation has no identity."""
  identity = next((k for k in IDENTITY_KEYS if scalars.get(k) is not None), None)
  if identity is None:
    return None
  compared = {identity: float(scalars[identity])}
  if scalars.get(FD_KEY) is not None:
    compared[FD_KEY] = float(scalars[FD_KEY])
  return compared


def is_better(new: Mapping[str, float], best: Optional[Mapping[str, float]]) -> bool:
  """Whether `new` (compared_scalars) beats `best`: a higher identity, or on a tie (within
  IDENTITY_TIE) a lower FD; a tie without FD on both (pixel metrics only) goes to `new`, the
  later step, trained longer."""
  if not best:
    return True
  new_identity, best_identity = _identity(new), _identity(best)
  if abs(new_identity - best_identity) > IDENTITY_TIE:
    return new_identity > best_identity
  if FD_KEY in new and FD_KEY in best:
    return new[FD_KEY] < best[FD_KEY]
  return True


def _identity(compared: Mapping[str, float]) -> float:
  return next(float(compared[k]) for k in IDENTITY_KEYS if k in compared)


class BestCheckpoint:
  """<workdir>/best: the state of the best periodic evaluation so far (config.eval.best_metric),
  beside the latest checkpoints; <workdir>/best/best.json says which step and why.

  Process 0 evaluates and decides; every process joins the save (Orbax's saves are collective,
  as in Checkpointer). Orbax writes the step atomically; best.json is written once the save is
  complete, and the previous best is deleted only after that: a crash at any moment leaves one
  complete best checkpoint. A resumed run starts from the record in best.json.
  """

  def __init__(self, workdir: str, *, metric: str, meta: dict, is_chief: bool):
    if metric not in BEST_METRICS:
      raise config_lib.ConfigError(
          f"config.eval.best_metric must be one of {list(BEST_METRICS)} or '' (off), "
          f"got {metric!r}"
      )
    self.workdir, self.metric, self.meta, self.is_chief = workdir, metric, meta, is_chief
    self.manager = checkpoints.create_best_manager(workdir)
    self.record = checkpoints.read_best(workdir)  # the best of the runs this one resumes
    if self.record is not None and (
        self.record.get("metric") != metric or not self.record.get("scalars")
    ):
      logging.warning(
          "%s: the best checkpoint (step %s) was chosen by %r, not %r: the next evaluation "
          "replaces it.",
          self.manager.directory,
          self.record.get("step"),
          self.record.get("metric"),
          metric,
      )
      self.record = None

  def consider(self, step: int, state, scalars: Optional[Mapping[str, float]]) -> bool:
    """Saves `state` (replicated) as the best when process 0's `scalars` (None on the other
    processes) beat the best so far; every process calls it after each periodic evaluation."""
    compared = compared_scalars(scalars) if scalars is not None else None
    best = self.record["scalars"] if self.record else None
    better = parallel.chief_decides(compared is not None and is_better(compared, best))
    if not better:
      return False
    scalars = scalars or {}
    identity = next((v for k, v in (compared or {}).items() if k in IDENTITY_KEYS), None)
    record = {
        "step": int(step),
        "metric": self.metric,
        "value": identity,
        "scalars": compared,
        "train_minutes": scalars.get("eval/train_minutes"),
    }
    if step in checkpoints.list_steps(self.manager.directory):
      # A resume that went back before the best's step: its replay of that step is better.
      self.manager.delete(step)
    checkpoints.save(
        self.manager,
        step,
        state=parallel.unreplicate_to_host(state),
        data_state=None,
        meta={**self.meta, TRAIN_MINUTES: record["train_minutes"], checkpoints.BEST: record},
    )
    self.manager.wait_until_finished()
    if self.is_chief:
      checkpoints.write_best_record(self.workdir, record)
    checkpoints.keep_only(self.manager, step)
    self.record = record
    logging.info(
        "step %d: the best by periodic validation so far (%s); saved in %s",
        step,
        ", ".join(f"{k} {v:.4g}" for k, v in (compared or {}).items()),
        self.manager.directory,
    )
    return True

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


class StepMetrics:
  """Host side of the step metrics.

  `add` keeps the step's device metrics and fetches the PREVIOUS step's (so the host never waits
  for the step it just dispatched); `flush` fetches the pending one. Every fetched step is checked
  for non-finite terms (stop, or count the skipped update with config.skip_nonfinite), kept for
  the next log step's means, and fed to the divergence monitor.
  """

  def __init__(self, *, divergence: monitor.DivergenceMonitor, last_saved: Callable[[], Any]):
    self.divergence = divergence
    self._last_saved = last_saved  # named in the non-finite error
    self._pending = None  # (step, device metrics)
    self._history: list[dict] = []
    self._last_warning = -divergence.window
    self.skipped = {"steps": 0, "G": 0, "D": 0}

  def add(self, step: int, device_metrics) -> None:
    self.flush()
    self._pending = (step, device_metrics)

  def flush(self) -> None:
    if self._pending is None:
      return
    step, device_metrics = self._pending
    self._pending = None
    host = {k: float(v[0]) for k, v in jax.device_get(device_metrics).items()}
    bad = nonfinite_terms(host)
    phases = [p for p, key in (("D", "d_skipped"), ("G", "g_skipped")) if host.get(key, 0.0) > 0]
    if bad and phases:  # config.skip_nonfinite: the step kept the old params of those phases
      self.skipped["steps"] += 1
      for phase in phases:
        self.skipped[phase] += 1
      logging.warning(
          "Skipped the non-finite %s update at step %d (%s); %d step(s) skipped so far.",
          " and ".join(phases),
          step,
          ", ".join(f"{k}={host[k]}" for k in bad),
          self.skipped["steps"],
      )
    elif bad:
      raise FloatingPointError(
          f"non-finite {', '.join(bad)} at step {step} "
          f"({', '.join(f'{k}={host[k]}' for k in bad)}); training stopped, the last good "
          f"checkpoint (step {self._last_saved()}) stays the latest. Lower the learning rates "
          f"(config.optim.*.learning_rate) or set config.skip_nonfinite=True."
      )
    self._history.append(host)
    self.divergence.add(step, host)

  def means(self, step: int) -> dict[str, float]:
    """Means since the last call, with the divergence scalars (one warning line per window)."""
    self.flush()
    scalars = {k: float(np.mean([h[k] for h in self._history])) for k in self._history[-1]}
    self._history.clear()
    divergence_scalars, warning = self.divergence.check()
    scalars.update(divergence_scalars)
    if warning and step - self._last_warning >= self.divergence.window:
      logging.warning("step %d: %s", step, warning)
      self._last_warning = step
    return scalars

  def log_skipped(self, num_steps: int) -> None:
    if self.skipped["steps"]:
      logging.warning(
          "%d of %d steps had a skipped update (G: %d, D: %d): non-finite losses or "
          "gradients (config.skip_nonfinite).",
          self.skipped["steps"],
          num_steps,
          self.skipped["G"],
          self.skipped["D"],
      )


class Progress:
  """steps/s and ETA between log steps; the clock starts after the first (compiling) step.

  The ETA is the earlier end: the steps left at this speed, or the training minutes left on
  `clock` before `max_minutes` (config.max_train_minutes; 0 = no time limit).
  """

  def __init__(
      self,
      *,
      start_step: int,
      num_steps: int,
      clock: Optional["TrainClock"] = None,
      max_minutes: float = 0.0,
  ):
    self.num_steps = num_steps
    self.clock = clock
    self.max_minutes = max_minutes
    self._time, self._step = time.time(), start_step

  def compiled(self, step: int, device_metrics) -> None:
    """Call after the first step of this run: restarts the clock once it has finished."""
    jax.block_until_ready(device_metrics)
    self._time, self._step = time.time(), step

  def report(self, step: int) -> tuple[dict[str, float], str]:
    """({"steps_per_sec": ...} or {}, "  0.40 steps/s  ETA 1:02:03" or "")."""
    now = time.time()
    scalars, text = {}, ""
    if step > self._step:
      steps_per_sec = (step - self._step) / max(now - self._time, 1e-9)
      scalars["steps_per_sec"] = steps_per_sec
      seconds_left = (self.num_steps - step) / max(steps_per_sec, 1e-9)
      if self.max_minutes and self.clock is not None:
        time_left = (self.max_minutes - self.clock.minutes(now)) * 60.0
        seconds_left = max(min(seconds_left, time_left), 0.0)
      eta = format_eta(seconds_left)
      text = f"  {steps_per_sec:.2f} steps/s  ETA {eta}"
    self._time, self._step = now, step
    return scalars, text


class TrainClock:
  """Training wall time: elapsed time minus the evaluations, plus `minutes_before` (the minutes
  of the runs this one resumes: `minutes_at_checkpoint`)."""

  def __init__(self, *, minutes_before: float = 0.0):
    self.minutes_before = minutes_before
    self.start = time.time()
    self.eval_seconds = 0.0

  def seconds_this_run(self, at: Optional[float] = None) -> float:
    return (time.time() if at is None else at) - self.start - self.eval_seconds

  def minutes(self, at: Optional[float] = None) -> float:
    return self.minutes_before + self.seconds_this_run(at) / 60.0


def minutes_at_checkpoint(manager, step: Optional[int], fallback: float) -> float:
  """The training minutes saved with checkpoint `step` (0 without one); `fallback` for a
  checkpoint written before they were saved (the quality history's last row, if any)."""
  if step is None:
    return 0.0
  saved = checkpoints.load_meta(manager, step).get(TRAIN_MINUTES)
  return fallback if saved is None else float(saved)


class StopRequest:
  """SIGTERM / SIGINT -> finish the step, checkpoint, return (installed on the main thread)."""

  def __init__(self):
    self.signal_name: Optional[str] = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signal_name is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C: stop now
    self.signal_name = signal.Signals(signum).name
    logging.warning(
        "%s received: finishing the current step, then saving a checkpoint.", self.signal_name
    )

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False


def count_params(tree) -> int:
  """The number of scalars in a pytree of arrays (or of their shapes)."""
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
