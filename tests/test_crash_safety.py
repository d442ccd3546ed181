"""Training survives interruption and faults.

Kill -9 (also mid-save), SIGINT/SIGTERM, non-finite losses, a full disk, and an incompatible
resume. Every run here is a REAL `python -m wav2pix_jax.main` process.

All processes share one persistent XLA compilation cache, so only the first one compiles (~1 min on
2 busy CPU cores); the others take ~15 s each.
"""

import errno  # noqa: F401  (used by the injected faults, kept here for readers)
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from wav2pix_jax import checkpoints
from wav2pix_jax.training import step as step_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_STEPS = 30
EVERY = 3  # checkpoint_every_steps

# Faults injected into the real CLI process (selected by W2P_FAULT), then `main.run()`.
_RUNNER = r"""
import asyncio, errno, os, sys
fault = os.environ.get("W2P_FAULT", "")
if fault == "slow_finalize":
  # Every step directory after this process's first one waits a minute before orbax renames it
  # into place: the test kills the process while a complete-looking temporary directory exists.
  from orbax.checkpoint._src.path import atomicity
  original = atomicity.AtomicRenameTemporaryPath.finalize
  finalized = []

  async def finalize(self, *args, **kwargs):
    if self._final_path.name.isdigit():
      if finalized:
        await asyncio.sleep(60)
      finalized.append(self._final_path.name)
    return await original(self, *args, **kwargs)

  atomicity.AtomicRenameTemporaryPath.finalize = finalize
elif fault.startswith("enospc:"):
  # The disk fills up while step N is written: every file write into its temporary dir fails.
  from etils import epath
  step = fault.split(":")[1]
  cls = type(epath.Path("/"))
  original_write = cls.write_text

  def write_text(self, *args, **kwargs):
    if any(p.startswith(step + ".orbax-checkpoint-tmp") for p in self.parts):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
    return original_write(self, *args, **kwargs)

  cls.write_text = write_text
elif fault.startswith("hold_after_first_save:"):
  # After the first checkpoint is complete on disk, write a marker file and hold: the test kills
  # a run that is still training, whatever the speed of the machine (no race with the last step).
  import time
  from wav2pix_jax import checkpoints
  marker = fault.split(":", 1)[1]
  original_save = checkpoints.save

  def save(manager, step, **kwargs):
    original_save(manager, step, **kwargs)
    manager.wait_until_finished()
    with open(marker, "w") as f:
      f.write(str(step))
    time.sleep(3600)

  checkpoints.save = save
elif fault == "nan_l1":
  # The L1 term (only) becomes NaN.
  import jax.numpy as jnp
  from wav2pix_jax.training import losses
  original_l1 = losses.l1
  losses.l1 = lambda **kw: original_l1(**kw) * jnp.nan
elif fault.startswith("speakers:"):
  # The dataset now has a different number of speakers (e.g. speakers were added to the data).
  import dataclasses
  from wav2pix_jax.data import datasets
  from wav2pix_jax.data import input_pipeline
  original_info = datasets.get_dataset_info
  n = int(fault.split(":")[1])

  def get_dataset_info(input_cfg):
    info = original_info(input_cfg)
    return dataclasses.replace(info, num_speakers=n, speaker_names=tuple(f"s{i}" for i in range(n)))

  datasets.get_dataset_info = get_dataset_info
sys.argv = ["wav2pix_jax.main"] + sys.argv[1:]
from wav2pix_jax import main
main.run()
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  cache = tmp_path_factory.mktemp("xla_cache")
  runner = tmp_path_factory.mktemp("runner") / "run_main.py"
  runner.write_text(_RUNNER)
  e = dict(os.environ)  # conftest's XLA_FLAGS: 2 CPU devices in the child too
  e.update(
      {
          "JAX_PLATFORMS": "cpu",
          "JAX_COMPILATION_CACHE_DIR": str(cache),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
          "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
          "PYTHONPATH": str(REPO) + os.pathsep + e.get("PYTHONPATH", ""),
          "W2P_RUNNER": str(runner),
          "W2P_DATA": str(tmp_path_factory.mktemp("tfds")),
      }
  )
  e.pop("W2P_FAULT", None)
  assert "xla_force_host_platform_device_count=2" in e["XLA_FLAGS"]
  return e


def _start(env, workdir, log, *flags, fault=None, steps=NUM_STEPS, every=EVERY):
  """Starts the CLI (stderr+stdout -> `log`); returns the Popen."""
  cmd = [
      sys.executable,
      env["W2P_RUNNER"] if fault else "-m",
      *([] if fault else ["wav2pix_jax.main"]),
      "--config=configs/tiny.py",
      f"--workdir={workdir}",
      f"--config.input.data_dir={env['W2P_DATA']}",
      f"--config.num_train_steps={steps}",
      f"--config.log.checkpoint_every_steps={every}",
      "--config.log.image_every_steps=1000",
      *flags,
  ]
  child_env = dict(env, W2P_FAULT=fault or "")
  out = open(log, "ab")
  return subprocess.Popen(cmd, cwd=REPO, env=child_env, stdout=out, stderr=subprocess.STDOUT)


def _run(env, workdir, log, *flags, timeout=600, **kwargs):
  proc = _start(env, workdir, log, *flags, **kwargs)
  proc.wait(timeout=timeout)
  return proc.returncode, pathlib.Path(log).read_text()


def _ckpt_dir(workdir) -> pathlib.Path:
  return pathlib.Path(checkpoints.checkpoint_dir(str(workdir)))


def _complete_steps(workdir) -> list[int]:
  d = _ckpt_dir(workdir)
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def _tmp_dirs(workdir) -> list[str]:
  d = _ckpt_dir(workdir)
  return sorted(p.name for p in d.iterdir() if "tmp" in p.name) if d.is_dir() else []


def _items(step_dir: pathlib.Path) -> set[str]:
  try:
    return {p.name.split(".")[0] for p in step_dir.iterdir()}
  except FileNotFoundError:
    return set()


def _poll(predicate, proc, timeout=600, interval=0.05):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return True
    if proc.poll() is not None:
      return predicate()
    time.sleep(interval)
  return False


def _restore(workdir, step):
  config = _tiny_config()
  num_speakers = json.loads((pathlib.Path(workdir) / "dataset.json").read_text())["num_speakers"]
  manager = checkpoints.create_manager(str(workdir), max_to_keep=2, create=False)
  try:
    return checkpoints.restore(
        manager, step, abstract_state=step_lib.abstract_train_state(config, num_speakers)
    )
  finally:
    manager.close()


def _tiny_config():
  import importlib.util

  spec = importlib.util.spec_from_file_location("cfg_tiny_crash", REPO / "configs" / "tiny.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _max_abs_diff(a, b) -> dict:
  """Max |a - b| per top-level TrainState field."""
  out = {}
  for field in (
      "g_params",
      "d_params",
      "g_opt_state",
      "d_opt_state",
      "g_batch_stats",
      "g_spectral",
      "d_spectral",
      "rng",
      "step",
  ):
    la, lb = jax.tree.leaves(getattr(a, field)), jax.tree.leaves(getattr(b, field))
    assert len(la) == len(lb), field
    out[field] = max(
        (
            float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
            for x, y in zip(la, lb)
            if np.size(x)
        ),
        default=0.0,
    )
  return out


@pytest.fixture(scope="module")
def reference(env, tmp_path_factory):
  """An uninterrupted run of NUM_STEPS steps (also builds the dataset and fills the XLA cache)."""
  workdir = tmp_path_factory.mktemp("reference") / "workdir"
  rc, log = _run(env, workdir, workdir.parent / "log.txt")
  assert rc == 0, log[-3000:]
  assert _complete_steps(workdir)[-1] == NUM_STEPS
  return workdir


# ------------------------------------------------------------------------------------------
# 1. kill -9 after the first checkpoint, then kill -9 in the middle of a save: the run resumes
#    from the last COMPLETE checkpoint and ends with exactly the uninterrupted run's state.
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_kill9_anywhere_then_resume_equals_uninterrupted_run(env, reference, tmp_path, capsys):
  workdir = tmp_path / "workdir"
  log = tmp_path / "log.txt"

  # a) SIGKILL once the first checkpoint is complete; the run holds there (a marker file says
  #    when), so it is killed mid-training on any machine.
  marker = tmp_path / "first_save_done"
  proc = _start(env, workdir, log, fault=f"hold_after_first_save:{marker}")
  assert _poll(marker.exists, proc), log.read_text()[-3000:]
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  after_a = _complete_steps(workdir)
  assert after_a == [int(marker.read_text())] and after_a[-1] < NUM_STEPS, after_a

  # b) Resume; SIGKILL while a LATER checkpoint sits complete-looking in orbax's temporary dir.
  proc = _start(env, workdir, log, fault="slow_finalize")

  def mid_save():  # a complete checkpoint beyond a), and a later one with all items but unrenamed
    steps = _complete_steps(workdir)
    return steps[-1] > after_a[-1] and any(
        int(t.split(".")[0]) > steps[-1]
        and _items(_ckpt_dir(workdir) / t) >= {"state", "data", "meta"}
        for t in _tmp_dirs(workdir)
    )

  assert _poll(mid_save, proc), log.read_text()[-3000:]
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  after_b = _complete_steps(workdir)
  half_written = _tmp_dirs(workdir)
  assert half_written and int(half_written[0].split(".")[0]) > after_b[-1], (after_b, half_written)
  assert "Resumed from" in log.read_text() and f"at step {after_a[-1]}." in log.read_text()

  # c) Resume to the end: from the last complete checkpoint, never the half-written one.
  log_c = tmp_path / "log_c.txt"
  rc, text = _run(env, workdir, log_c)
  assert rc == 0, text[-3000:]
  assert f"Resumed from {_ckpt_dir(workdir)} at step {after_b[-1]}." in text
  assert _complete_steps(workdir)[-1] == NUM_STEPS and not _tmp_dirs(workdir)

  diffs = _max_abs_diff(_restore(workdir, NUM_STEPS), _restore(reference, NUM_STEPS))
  with capsys.disabled():
    print(
        f"\nkill -9 at {after_a[-1]} and mid-save of {half_written[0]} (complete: {after_b[-1]}); "
        f"max |resumed - uninterrupted| per field: {diffs}"
    )
  assert max(diffs.values()) <= 1e-6, diffs


# ------------------------------------------------------------------------------------------
# 2. SIGINT (Ctrl-C) and SIGTERM: finish the step, checkpoint (waited for), exit 0, say so.
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_finishes_step_checkpoints_and_exits_0(env, reference, tmp_path, sig):
  del reference  # only for the data and the warm XLA cache
  workdir = tmp_path / "workdir"
  log = tmp_path / "log.txt"
  proc = _start(env, workdir, log, steps=100_000, every=100_000)
  assert _poll(lambda: "step 1/100000" in log.read_text(), proc, interval=0.05), log.read_text()[
      -3000:
  ]
  proc.send_signal(sig)
  proc.wait(timeout=120)
  text = log.read_text()
  assert proc.returncode == 0, text[-3000:]
  stopped = [line for line in text.splitlines() if "Stopped by" in line]
  assert len(stopped) == 1 and f"Stopped by {sig.name} after step" in stopped[0], text[-3000:]
  step = int(stopped[0].split("after step ")[1].split(";")[0])
  assert 1 <= step < 100_000
  assert f"checkpoint saved in {_ckpt_dir(workdir)}" in stopped[0]
  assert _complete_steps(workdir) == [step] and not _tmp_dirs(workdir)  # written AND finalized
  assert int(_restore(workdir, step).step) == step


def _copy(workdir, dest) -> pathlib.Path:
  import shutil

  shutil.copytree(workdir, dest)
  return pathlib.Path(dest)


def _error_line(text: str, kind: str) -> str:
  lines = [line for line in text.splitlines() if line.startswith(kind + ":")]
  assert lines, text[-3000:]
  return lines[-1]


# ------------------------------------------------------------------------------------------
# 3. A non-finite loss: the error names the step and the term; the last good checkpoint stays the
#    latest. With skip_nonfinite=True the bad updates are skipped, counted and logged.
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_nonfinite_loss_stops_naming_step_and_term_or_is_skipped(env, reference, tmp_path):
  workdir = _copy(reference, tmp_path / "workdir")
  before = _complete_steps(workdir)
  assert before[-1] == NUM_STEPS
  rc, text = _run(env, workdir, tmp_path / "log.txt", fault="nan_l1", steps=NUM_STEPS + 6)
  assert rc != 0
  error = _error_line(text, "FloatingPointError")
  assert f"at step {NUM_STEPS + 1} " in error and "g_l1" in error and "g_loss" in error, error
  assert "d_loss" not in error  # D's step was fine: only the culprits are named
  assert f"the last good checkpoint (step {NUM_STEPS}) stays the latest" in error
  assert _complete_steps(workdir) == before and not _tmp_dirs(workdir)

  # skip_nonfinite: every G update is skipped (G unchanged), D trains on; counted and logged.
  rc, text = _run(
      env,
      workdir,
      tmp_path / "log_skip.txt",
      "--config.skip_nonfinite=True",
      fault="nan_l1",
      steps=NUM_STEPS + 6,
  )
  assert rc == 0, text[-3000:]
  skipped = [line for line in text.splitlines() if "Skipped the non-finite" in line]
  assert len(skipped) == 6, text[-3000:]
  assert f"step {NUM_STEPS + 1}" in skipped[0] and "g_l1" in skipped[0] and "G update" in skipped[0]
  assert "D update" not in skipped[0]
  assert "6 of 6 steps had a skipped update (G: 6, D: 0)" in text, text[-3000:]
  assert _complete_steps(workdir)[-1] == NUM_STEPS + 6
  old, new = _restore(reference, NUM_STEPS), _restore(workdir, NUM_STEPS + 6)
  diffs = _max_abs_diff(new, old)
  assert diffs["g_params"] == 0.0 and diffs["g_opt_state"] == 0.0 and diffs["d_params"] > 0.0, diffs


# ------------------------------------------------------------------------------------------
# 4. The disk fills up while a checkpoint is written.
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_disk_full_during_save_is_a_clear_error_and_earlier_checkpoints_survive(
    env, reference, tmp_path
):
  workdir = _copy(reference, tmp_path / "workdir")
  fail_step = NUM_STEPS + EVERY
  rc, text = _run(
      env, workdir, tmp_path / "log.txt", fault=f"enospc:{fail_step}", steps=NUM_STEPS + 2 * EVERY
  )
  assert rc != 0
  error = _error_line(text, "OSError")
  assert "disk full" in error.lower() and f"checkpoint of step {fail_step}" in error, error
  assert str(_ckpt_dir(workdir)) in error, error
  assert _complete_steps(workdir)[-1] == NUM_STEPS  # nothing newer was finalized
  assert int(_restore(workdir, NUM_STEPS).step) == NUM_STEPS  # ... and the latest is intact

  # The next start ignores (and removes) what the failed save left behind, resumes, finishes.
  rc, text = _run(env, workdir, tmp_path / "log_2.txt", steps=NUM_STEPS + 2 * EVERY)
  assert rc == 0, text[-3000:]
  assert f"at step {NUM_STEPS}." in text
  assert _complete_steps(workdir)[-1] == NUM_STEPS + 2 * EVERY and not _tmp_dirs(workdir)


# ------------------------------------------------------------------------------------------
# 5. A resume whose shapes differ is refused before anything in the workdir is touched.
# ------------------------------------------------------------------------------------------


def _snapshot(workdir) -> dict:
  out = {}
  for root, dirs, files in os.walk(workdir):
    for name in dirs + files:
      path = os.path.join(root, name)
      st = os.stat(path)
      data = open(path, "rb").read() if os.path.isfile(path) else None
      out[os.path.relpath(path, workdir)] = (st.st_mtime_ns, st.st_size, data)
  return out


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags,fault,fields",
    [
        (["--config.model.image_size=128"], None, ["model.image_size"]),
        (["--config.input.audio_samples=2048"], None, ["input.audio_samples"]),
        ([], "speakers:5", ["num_speakers"]),
        (
            ["--config.model.image_size=128", "--config.input.audio_samples=2048"],
            "speakers:9",
            ["model.image_size", "input.audio_samples", "num_speakers"],
        ),
    ],
    ids=["image_size", "audio_samples", "num_speakers", "all_three"],
)
def test_incompatible_resume_refused_before_touching_the_workdir(
    env, reference, tmp_path, flags, fault, fields
):
  workdir = _copy(reference, tmp_path / "workdir")
  before = _snapshot(workdir)
  rc, text = _run(env, workdir, tmp_path / "log.txt", *flags, fault=fault, steps=NUM_STEPS + 3)
  assert rc != 0
  error = _error_line(text, "wav2pix-train: error")  # a ConfigError: one line, no traceback
  assert "Traceback" not in text, text[-3000:]
  assert "refusing to resume" in error, error
  for field in fields:
    assert field in error, error
  assert _snapshot(workdir) == before
