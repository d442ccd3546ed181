"""Multi-host training for real: 2 `python -m wav2pix_jax.main` processes (1, then 2 CPU devices
each) joined by `jax.distributed` on localhost (gloo collectives), against 1 process with all
their devices (2, then 4).

In float64 (`JAX_ENABLE_X64=1`, model.dtype float64), so a tolerance far below what a wrong shard
or a missing cross-process mean makes holds on any CPU. ~3 min per case on 2 CPU cores: marked slow
(scripts/test.sh runs it; `pytest -m "not slow"` skips it).
"""

import json
import os
import pathlib
import re
import socket
import subprocess
import sys

import grain
import jax
import numpy as np
import pytest

from wav2pix_jax import checkpoints
from wav2pix_jax.data import datasets
from wav2pix_jax.training import parallel
from wav2pix_jax.training import step as step_lib

import helpers

REPO = pathlib.Path(__file__).resolve().parents[1]
# The 2 x 2 run stops after FIRST_LEG steps, then a relaunch resumes to NUM_STEPS (a resume across
# processes, checked once); the 2 x 1 run trains straight to NUM_STEPS.
NUM_STEPS = 4
FIRST_LEG = 2
LOCAL_BATCH = 2  # per process: tiny.py's global batch of 4 over 2 processes
TIMEOUT_S = 420  # per launch: a hang fails the test instead of blocking CI
# float64 runs differ only in summation order (~1e-15); a wrong data shard moves G by ~1e-3.
TOLERANCE = 1e-9
# With 2 devices per process the cross-device mean sums 4 values in another order over gloo than
# in one process ((a + b) + (c + d) against ((a + b) + c) + d); BatchNorm over 1 example per device
# and Adam amplify that float64 rounding to ~4e-8 in G after 4 steps (measured), still far below
# what a wrong shard makes (~1e-3).
TOLERANCE_2_DEVICES = 1e-6

# The 1-process reference: its global batch is the concatenation of what process 0 and process 1
# read (their shards, in process order, which is the global device order), so both runs train on
# the same global batches.
_REFERENCE_RUNNER = r"""
import sys
import numpy as np
from wav2pix_jax.data import datasets
from wav2pix_jax.data import input_pipeline

SHARDS = 2
create = input_pipeline.create_train_iterator


class Concatenated:
  def __init__(self, iterators):
    self.iterators = iterators

  def __iter__(self):
    return self

  def __next__(self):
    parts = [next(it) for it in self.iterators]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def get_state(self):
    return self.iterators[0].get_state()

  def set_state(self, state):
    raise NotImplementedError("the reference run is never resumed")


def create_concatenated(input_cfg, *, batch_size, process_index, process_count, **kwargs):
  assert process_count == 1 and batch_size % SHARDS == 0, (process_count, batch_size)
  return Concatenated([create(input_cfg, batch_size=batch_size // SHARDS, process_index=i,
                              process_count=SHARDS, **kwargs) for i in range(SHARDS)])


input_pipeline.create_train_iterator = create_concatenated
sys.argv = ["wav2pix_jax.main"] + sys.argv[1:]
from wav2pix_jax import main
main.run()
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  env = dict(os.environ)
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", ""))
  env.update(
      {
          "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={devices}".strip(),
          "JAX_PLATFORMS": "cpu",
          "JAX_ENABLE_X64": "1",
          "TF_CPP_MIN_LOG_LEVEL": "2",
          "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
      }
  )
  env.pop("JAX_COORDINATOR_ADDRESS", None)
  return env


def _flags(workdir, data_dir, steps: int) -> list[str]:
  return [
      "--config=configs/tiny.py",
      f"--workdir={workdir}",
      f"--config.input.data_dir={data_dir}",
      f"--config.num_train_steps={steps}",
      "--config.model.dtype=float64",
      "--config.model.param_dtype=float64",
      "--config.log.checkpoint_every_steps=2",
      "--config.log.image_every_steps=2",
  ]


def _launch(commands: list[list[str]], env: dict, logs: list[pathlib.Path]) -> list[str]:
  """Runs the commands side by side; returns their logs. Every child is killed on a failure."""
  procs = []
  try:
    for command, log in zip(commands, logs):
      with open(log, "ab") as out:
        procs.append(
            subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        )
    for proc in procs:
      proc.wait(timeout=TIMEOUT_S)
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  texts = [log.read_text() for log in logs]
  for i, (proc, text) in enumerate(zip(procs, texts)):
    assert proc.returncode == 0, f"process {i} exited {proc.returncode}:\n{text[-4000:]}"
  return texts


def _two_processes(
    workdir, data_dir, steps: int, logs: list[pathlib.Path], devices_per_process: int = 1
) -> list[str]:
  address = f"127.0.0.1:{_free_port()}"
  commands = [
      [
          sys.executable,
          "-m",
          "wav2pix_jax.main",
          *_flags(workdir, data_dir, steps),
          "--config.distributed=True",
          f"--config.coordinator_address={address}",
          "--config.num_processes=2",
          f"--config.process_id={i}",
      ]
      for i in range(2)
  ]
  return _launch(commands, _env(devices=devices_per_process), logs)


def _restore(workdir, step: int):
  config = helpers.tiny_config(**{"model.dtype": "float64", "model.param_dtype": "float64"})
  num_speakers = json.loads((pathlib.Path(workdir) / "dataset.json").read_text())["num_speakers"]
  manager = checkpoints.create_manager(str(workdir), max_to_keep=2, create=False)
  try:
    return checkpoints.restore(
        manager, step, abstract_state=step_lib.abstract_train_state(config, num_speakers)
    )
  finally:
    manager.close()


def _max_abs_diff(a, b) -> float:
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  return max(
      float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
      for x, y in zip(la, lb)
  )


def _records_seen(data_state: dict, process: int, num_records: int) -> list[int]:
  """The record indices a process trained on, from the iterator state it checkpointed itself."""
  assert f"shard_index={process}, shard_count=2" in data_state["sampler"], data_state["sampler"]
  sampler = grain.samplers.IndexSampler(
      num_records=num_records,
      shuffle=True,
      num_epochs=None,
      seed=0,
      shard_options=grain.sharding.ShardOptions(
          shard_index=process, shard_count=2, drop_remainder=True
      ),
  )
  last = data_state["last_seen_indices"]["0"]  # sampler positions process, process + 2, ...
  return [int(sampler[j].record_key) for j in range(process, last + 1, 2)]


@pytest.mark.slow
@pytest.mark.parametrize("devices_per_process", [1, 2])
def test_two_processes_train_like_one_process_with_all_their_devices(
    tmp_path, capsys, devices_per_process
):
  data_dir = tmp_path / "tfds"

  # 1 process with all the devices of both, the same global batches (also builds the dataset).
  reference = tmp_path / "reference"
  runner = tmp_path / "reference_runner.py"
  runner.write_text(_REFERENCE_RUNNER)
  _launch(
      [[sys.executable, str(runner), *_flags(reference, data_dir, NUM_STEPS)]],
      _env(devices=2 * devices_per_process),
      [tmp_path / "reference.log"],
  )

  # 2 processes x devices_per_process; with 2 devices each: stop after FIRST_LEG steps, relaunch,
  # resume to NUM_STEPS.
  workdir = tmp_path / "two"
  logs = [tmp_path / f"process{i}.log" for i in range(2)]
  resume = devices_per_process == 2
  first_steps = FIRST_LEG if resume else NUM_STEPS
  first = _two_processes(workdir, data_dir, first_steps, logs, devices_per_process)
  for i, text in enumerate(first):
    assert f"JAX process {i} / 2; local devices:" in text
    assert "jax.distributed.initialize(coordinator_address='127.0.0.1:" in text
    assert f"Finished at step {first_steps}" in text, text[-4000:]
  if resume:
    marks = [len(text) for text in first]
    second = [
        text[mark:]
        for text, mark in zip(
            _two_processes(workdir, data_dir, NUM_STEPS, logs, devices_per_process), marks
        )
    ]
    for text in second:
      assert f"at step {FIRST_LEG}." in text and "Resumed from" in text, text[-4000:]
      assert f"Finished at step {NUM_STEPS}" in text, text[-4000:]

  _check_one_set_of_outputs(workdir, reference, launches=2 if resume else 1)
  clips = _check_disjoint_shards(workdir, data_dir)
  g_diff, d_diff = _compare(workdir, reference)
  tolerance = TOLERANCE if devices_per_process == 1 else TOLERANCE_2_DEVICES
  with capsys.disabled():
    print(f"\nclips seen: process 0 {clips[0]}, process 1 {clips[1]}")
    print(
        f"2 processes x {devices_per_process} device(s) vs 1 process x {2 * devices_per_process} "
        f"devices after {NUM_STEPS} steps (float64): max |G diff| "
        f"{g_diff:.3g}, max |D diff| {d_diff:.3g} (tolerance {tolerance:g})"
    )
  assert g_diff <= tolerance and d_diff <= tolerance


def _check_one_set_of_outputs(
    workdir: pathlib.Path, reference: pathlib.Path, *, launches: int
) -> None:
  """Process 0's outputs only: one TensorBoard file per launch, one image grid per image step,
  the state written once; and each process's own data-iterator position."""
  ckpt = pathlib.Path(checkpoints.checkpoint_dir(str(workdir)))
  assert sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) == [FIRST_LEG, NUM_STEPS]
  assert len(list(workdir.glob("events.out.tfevents.*"))) == launches  # one per launch
  assert sorted(p.name for p in (workdir / "samples").iterdir()) == [
      "step_0000002.png",
      "step_0000004.png",
  ]
  names = lambda d: sorted(p.name for p in d.iterdir() if not p.name.startswith("events."))
  assert names(workdir) == names(reference)
  state_dir = ckpt / str(NUM_STEPS) / "state"
  assert not [p for p in state_dir.iterdir() if "process_1" in p.name]
  data_files = sorted(p.name for p in (ckpt / str(NUM_STEPS) / "data").glob("process_*.json"))
  assert data_files == ["process_0-of-2.json", "process_1-of-2.json"]


def _check_disjoint_shards(workdir: pathlib.Path, data_dir: pathlib.Path) -> list[list[str]]:
  """Each process read its own shard: disjoint records, each from its half of the split.

  Returns the clip ids each process trained on.
  """
  ckpt = pathlib.Path(checkpoints.checkpoint_dir(str(workdir)))
  config = helpers.tiny_config(**{"input.data_dir": str(data_dir)})
  source = datasets.data_source(config.input, "train")
  seen = []
  for i in range(2):
    state = json.loads((ckpt / str(NUM_STEPS) / "data" / f"process_{i}-of-2.json").read_text())
    records = _records_seen(state, i, len(source))
    assert len(records) == NUM_STEPS * LOCAL_BATCH
    half = len(source) // 2
    assert all(i * half <= r < (i + 1) * half for r in records), (i, records)
    seen.append(records)
  assert not set(seen[0]) & set(seen[1])
  return [sorted({source[r]["clip_id"].decode() for r in records}) for records in seen]


def _compare(workdir: pathlib.Path, reference: pathlib.Path) -> tuple[float, float]:
  """Max |difference| of the final G and D params of the two runs."""
  with jax.enable_x64(True):
    got, want = _restore(workdir, NUM_STEPS), _restore(reference, NUM_STEPS)
    assert int(got.step) == int(want.step) == NUM_STEPS
    return _max_abs_diff(got.g_params, want.g_params), _max_abs_diff(got.d_params, want.d_params)


# ------------------------------------------------------------------------------------------
# The launch fields (fast: no process is started).
# ------------------------------------------------------------------------------------------


def test_distributed_args_auto_detect_when_unset():
  assert parallel.distributed_args(helpers.tiny_config()) == {}


def test_distributed_args_pass_all_three():
  config = helpers.tiny_config(coordinator_address="10.0.0.1:1234", num_processes=4, process_id=3)
  assert parallel.distributed_args(config) == {
      "coordinator_address": "10.0.0.1:1234",
      "num_processes": 4,
      "process_id": 3,
  }


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"coordinator_address": "h:1"}, "missing: --config.num_processes, --config.process_id"),
        ({"num_processes": 2, "process_id": 0}, "missing: --config.coordinator_address"),
        (
            {"coordinator_address": "h:1", "num_processes": 2, "process_id": 2},
            r"--config.process_id must be in \[0, 2\)",
        ),
        (
            {"coordinator_address": "h:1", "num_processes": 0, "process_id": 0},
            "--config.num_processes must be >= 1",
        ),
        (
            {"coordinator_address": "nohost", "num_processes": 2, "process_id": 0},
            "--config.coordinator_address must be HOST:PORT",
        ),
    ],
)
def test_distributed_args_refuse_partial_or_out_of_range(overrides, message):
  with pytest.raises(ValueError, match=message):
    parallel.distributed_args(helpers.tiny_config(**overrides))


def test_launch_fields_without_distributed_are_refused(monkeypatch):
  monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
  config = helpers.tiny_config(coordinator_address="h:1", num_processes=2, process_id=0)
  with pytest.raises(ValueError, match="--config.distributed=True"):
    parallel.maybe_initialize_distributed(config)
