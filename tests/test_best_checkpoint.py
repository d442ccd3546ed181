"""The best checkpoint by periodic validation (<workdir>/best, config.eval.best_metric): the
criterion, training keeping it beside the latest (and over a resume), load() choosing it."""

import json
import pathlib

import numpy as np
import pytest

from wav2pix_jax import checkpoints
from wav2pix_jax import config_lib
from wav2pix_jax.serving import inference
from wav2pix_jax.serving import restore
from wav2pix_jax.training import loop
from wav2pix_jax.training import loop_parts

import helpers

ID, PIXEL_ID, FD = "eval/generated/identity", "eval/generated/pixel_identity", loop_parts.FD_KEY


def test_criterion_identity_first_then_fd():
  better = loop_parts.is_better
  assert better({ID: 0.5}, None)
  assert better({ID: 1.0, FD: 0.9}, {ID: 0.5, FD: 0.1})  # identity first
  assert not better({ID: 0.5, FD: 0.01}, {ID: 1.0, FD: 0.9})
  assert better({ID: 0.998, FD: 0.1}, {ID: 1.0, FD: 0.2})  # a tie (within 0.5 points): lower FD
  assert not better({ID: 1.0, FD: 0.3}, {ID: 1.0, FD: 0.2})
  assert better({PIXEL_ID: 0.75}, {PIXEL_ID: 0.75})  # pixel only, a tie: the later step
  assert not better({PIXEL_ID: 0.5}, {PIXEL_ID: 0.75})
  scalars = {ID: 1.0, FD: 0.1, PIXEL_ID: 0.2, "eval/real/identity": 1.0}
  assert loop_parts.compared_scalars(scalars) == {ID: 1.0, FD: 0.1}  # dlib's identity first
  assert loop_parts.compared_scalars({PIXEL_ID: 0.2}) == {PIXEL_ID: 0.2}
  assert loop_parts.compared_scalars({"eval/seconds": 3.0}) is None


def test_unknown_best_metric_is_refused(tmp_path):
  with pytest.raises(config_lib.ConfigError, match="config.eval.best_metric must be one of"):
    loop_parts.BestCheckpoint(str(tmp_path), metric="fd", meta={}, is_chief=True)


# Process 0's evaluation, faked: (identity, FD) by step. Best: step 2 (step 3 ties on identity with
# a higher FD); the last step, 4, has fallen to one face for everyone.
FIRST_RUN = {1: (0.5, 0.3), 2: (1.0, 0.2), 3: (1.0, 0.25), 4: (0.5, 0.4)}
# The resumed run: step 5 ties with a higher FD than the best so far (kept only if the record of
# the first run was read back), step 6 ties with a lower FD: the new best.
RESUMED_RUN = {5: (1.0, 0.21), 6: (1.0, 0.1)}


def _fake_evaluation(monkeypatch, values, evaluated):
  monkeypatch.setattr(loop, "_periodic_evaluation", lambda *args: (object(), None))

  def run_evaluation(run, state, step):
    evaluated.append(step)
    identity, fd = values[step]
    return {ID: identity, FD: fd, "eval/train_minutes": 0.5 * step, "eval/seconds": 0.0}

  monkeypatch.setattr(loop, "run_evaluation", run_evaluation)


def _config(tmp_path, num_train_steps):
  return helpers.tiny_config(
      **{
          "input.data_dir": str(tmp_path / "tfds"),
          "eval.every_steps": 1,
          "num_train_steps": num_train_steps,
          "log.checkpoint_every_steps": 2,
          "log.max_checkpoints": 1,  # the best step is gone from checkpoints/: only best/ has it
      }
  )


@pytest.mark.slow
def test_training_keeps_the_best_beside_the_latest_and_load_picks_it(tmp_path, monkeypatch, capsys):
  workdir = tmp_path / "workdir"
  evaluated = []
  _fake_evaluation(monkeypatch, FIRST_RUN, evaluated)
  loop.train_and_evaluate(_config(tmp_path, 4), str(workdir))
  assert evaluated == [1, 2, 3, 4]
  assert checkpoints.list_steps(workdir / "checkpoints") == [4]
  assert checkpoints.list_steps(workdir / "best") == [2]
  record = json.loads((workdir / "best" / "best.json").read_text())
  assert record == {
      "step": 2,
      "metric": "identity",
      "value": 1.0,
      "scalars": {ID: 1.0, FD: 0.2},
      "train_minutes": 1.0,
  }
  assert checkpoints.read_best(workdir) == record

  best = inference.load(workdir)
  assert (best.step, best.which) == (2, "best")
  assert best.source == (
      "step 2: the best by periodic validation (identity 100.0%, FD 0.200); latest is 4"
  )
  latest = inference.load(workdir, checkpoint="latest")
  assert (latest.step, latest.which) == (4, "latest")
  assert latest.source.startswith("step 4: the latest checkpoint, as asked; the best by")
  asked = inference.load(workdir, step=2)  # from best/: checkpoints/ kept only step 4
  assert (asked.step, asked.which) == (2, "step")
  assert asked.source == "step 2: as asked; latest is 4, best 2"
  assert restore.checkpoint_steps(workdir) == [2, 4]
  window = np.zeros((1, best.window), np.float32)
  window[0, ::7] = 1.0
  faces = best.generate_preprocessed(window)
  np.testing.assert_array_equal(asked.generate_preprocessed(window), faces)
  assert not np.array_equal(latest.generate_preprocessed(window), faces)
  with pytest.raises(config_lib.ConfigError, match=r"available steps: \[2, 4\]"):
    inference.load(workdir, step=3)

  # The tools say which step they use and why; --checkpoint=latest picks the latest.
  from scipy.io import wavfile  # pylint: disable=g-import-not-at-top

  from wav2pix_jax import generate  # pylint: disable=g-import-not-at-top

  wav = tmp_path / "a.wav"
  wavfile.write(wav, 16_000, (np.sin(np.arange(16_000) * 0.05) * 8_000).astype(np.int16))
  capsys.readouterr()
  assert generate.main([f"--workdir={workdir}", f"--audio={wav}", f"--out={tmp_path / 'o'}"]) == 0
  assert capsys.readouterr().out.startswith(best.source + "\n")
  argv = [f"--workdir={workdir}", f"--audio={wav}", f"--out={tmp_path / 'o'}"]
  assert generate.main(argv + ["--checkpoint=latest"]) == 0
  assert capsys.readouterr().out.startswith(latest.source + "\n")

  # A resumed run knows the best so far: step 5 does not replace it, step 6 does.
  evaluated.clear()
  _fake_evaluation(monkeypatch, RESUMED_RUN, evaluated)
  loop.train_and_evaluate(_config(tmp_path, 5), str(workdir))
  assert evaluated == [5] and checkpoints.read_best(workdir)["step"] == 2
  loop.train_and_evaluate(_config(tmp_path, 6), str(workdir))
  assert evaluated == [5, 6]
  assert checkpoints.list_steps(workdir / "best") == [6]
  assert checkpoints.read_best(workdir)["scalars"] == {ID: 1.0, FD: 0.1}
  assert inference.load(workdir).source.endswith("; it is also the latest")


def test_read_best_without_best_json_uses_the_saved_record(tmp_path):
  """A crash between the Orbax save and best.json: the record saved with the step is used."""
  config = helpers.tiny_config()
  manager = checkpoints.create_best_manager(str(tmp_path))
  record = {"step": 7, "metric": "identity", "value": 0.5, "scalars": {PIXEL_ID: 0.5}}
  meta = {**checkpoints.make_meta(config, num_speakers=2), checkpoints.BEST: record}
  checkpoints.save(manager, 7, state={"x": np.zeros(2, np.float32)}, data_state=None, meta=meta)
  manager.wait_until_finished()
  manager.close()
  assert checkpoints.read_best(tmp_path) == record
  (pathlib.Path(checkpoints.best_dir(tmp_path)) / "best.json").write_text('{"step": 3}')
  assert checkpoints.read_best(tmp_path) == record  # best.json names a step that is gone
  assert checkpoints.read_best(tmp_path / "nothing") is None
