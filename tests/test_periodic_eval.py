"""Periodic evaluation during training (config.eval) and the pixel-space metrics it uses.

On synthetic faces.
"""

import glob
import json
import os
import pathlib

import numpy as np
import pytest

from data_prep.synthetic import synthetic_dataset_builder as syn
from wav2pix_jax.evaluation import report as ev
from wav2pix_jax.evaluation import scoring
from wav2pix_jax.evaluation import face_metrics as fm
from wav2pix_jax.evaluation import pixel_metrics
from wav2pix_jax.training import loop
from wav2pix_jax.training import loop_parts
from wav2pix_jax.training import step as step_lib

import helpers

REPO = helpers.REPO
LAYOUT = {"face_box": syn.FACE_BOX, "mouth_box": syn.MOUTH_BOX}


_tiny = helpers.tiny_config


@pytest.fixture(scope="module")
def clips():
  """Faces and loudness of 5 clips per speaker, drawn by the builder (no TFDS)."""
  speakers = syn.make_speakers()
  records = [syn.make_clip(s, c, speakers=speakers) for s in range(len(speakers)) for c in range(5)]
  return {
      "faces": np.stack([r["face"] for r in records]),
      "speakers": np.array([syn.SPEAKERS.index(r["speaker"]) for r in records]),
      "loudness": np.array([r["loudness"] for r in records], np.float64),
      "loudness_db": fm.loudness_db([r["waveform"] for r in records]),
      "pitch_shift": np.array([r["pitch_shift"] for r in records], np.float64),
  }


def test_mouth_opening_px_follows_loudness_on_every_speaker(clips):
  opening = pixel_metrics.mouth_opening_px(clips["faces"], syn.MOUTH_BOX)
  assert np.corrcoef(opening, clips["loudness"])[0, 1] > 0.97
  for s in range(len(syn.SPEAKERS)):
    mask = clips["speakers"] == s
    assert np.corrcoef(opening[mask], clips["loudness"][mask])[0, 1] > 0.95, syn.SPEAKERS[s]
  # A closed mouth is ~1 px of interior, a wide open one ~7 px (64 px faces).
  assert (
      0.3 < opening[clips["loudness"].argmin()] < 2.0 and opening[clips["loudness"].argmax()] > 5.0
  )
  with pytest.raises(ValueError, match="does not fit"):
    pixel_metrics.mouth_opening_px(clips["faces"], (60, 70, 0, 4))


def test_brow_height_px_follows_pitch_on_every_speaker(clips):
  height = pixel_metrics.brow_height_px(clips["faces"], syn.BROW_BOXES)
  assert np.corrcoef(height, clips["pitch_shift"])[0, 1] > 0.95
  within = np.corrcoef(
      pixel_metrics.within_group(height, clips["speakers"]),
      pixel_metrics.within_group(clips["pitch_shift"], clips["speakers"]),
  )[0, 1]
  assert within > 0.95
  for s in range(len(syn.SPEAKERS)):
    mask = clips["speakers"] == s
    assert np.corrcoef(height[mask], clips["pitch_shift"][mask])[0, 1] > 0.9, syn.SPEAKERS[s]
  # The builder raises the eyebrows 11 canvas px (2.75 px at 64 px) per semitone.
  slope = np.polyfit(clips["pitch_shift"], height, 1)[0]
  assert 2.0 < slope < 3.5, slope
  # Mouth and eyebrows are independent measurements: the mouth does not move the eyebrow metric.
  speaker = syn.make_speakers()[0]
  quiet, loud = (
      pixel_metrics.brow_height_px(syn.draw_face(speaker, l, 0.3)[None], syn.BROW_BOXES)[0]
      for l in (0.0, 1.0)
  )
  assert quiet == pytest.approx(loud, abs=1e-4)


def test_pixel_brows_row(clips):
  layout = dict(LAYOUT, brow_boxes=syn.BROW_BOXES)
  typed = scoring.evaluate(
      generated=clips["faces"][::-1].copy(),
      real=clips["faces"],
      speakers=clips["speakers"],
      loudness=clips["loudness_db"],
      pitch=clips["pitch_shift"],
      train_real=clips["faces"],
      train_speakers=clips["speakers"],
      speaker_names=list(syn.SPEAKERS),
      dlib_metrics=False,
      layout=layout,
  )
  report = typed.to_json()
  assert set(report["definitions"]) == {
      "pixel_identity",
      "pixel_mouth",
      "pixel_brows",
      "clip_metrics",
  }
  rows = report["rows"]
  assert rows["real"]["pixel"]["brows"]["pitch_correlation"] > 0.95
  assert rows["real"]["pixel"]["brows"]["pitch_correlation_within_speaker"] > 0.95
  assert (
      rows["mean_face"]["pixel"]["brows"]["pitch_correlation_within_speaker"] is None
  )  # no variation
  assert (
      abs(rows["generated"]["pixel"]["brows"]["pitch_correlation_within_speaker"]) < 0.6
  )  # other clips
  flat = typed.scalars()
  assert flat["eval/real/pixel_brow_pitch_r_within_speaker"] > 0.95
  assert "eyebrows~pitch r +" in typed.summary()
  assert report["settings"]["pixel_layout"]["brow_boxes"] == [list(b) for b in syn.BROW_BOXES]
  with pytest.raises(ValueError, match="pitch"):
    scoring.evaluate(
        generated=clips["faces"],
        real=clips["faces"],
        speakers=clips["speakers"],
        loudness=None,
        pitch=clips["pitch_shift"][:-1],
        train_real=clips["faces"],
        train_speakers=clips["speakers"],
        speaker_names=list(syn.SPEAKERS),
        dlib_metrics=False,
        layout=layout,
    )
  # Without pitch (or without brow boxes) there is no eyebrow entry.
  typed = scoring.evaluate(
      generated=clips["faces"],
      real=clips["faces"],
      speakers=clips["speakers"],
      loudness=None,
      train_real=clips["faces"],
      train_speakers=clips["speakers"],
      speaker_names=list(syn.SPEAKERS),
      dlib_metrics=False,
      layout=layout,
  )
  report = typed.to_json()
  assert report["rows"]["real"]["pixel"]["mouth"] is None  # a mouth box but no loudness
  assert json.dumps(ev.Report.from_json(report).to_json()) == json.dumps(report)
  assert (
      "brows" not in report["rows"]["real"]["pixel"] and "pixel_brows" not in report["definitions"]
  )


def test_pixel_rows_real_mean_face_and_a_speaker_without_training_faces(clips):
  """Reference faces: clips 0-2; evaluated: clips 3-4.

  The last speaker has no reference face at all.
  """
  c = np.tile(np.arange(5), len(syn.SPEAKERS))
  ref = (c < 3) & (clips["speakers"] < len(syn.SPEAKERS) - 1)
  held = (c >= 3) & (clips["speakers"] < len(syn.SPEAKERS) - 1)
  kwargs = dict(
      real=clips["faces"][held],
      speakers=clips["speakers"][held],
      loudness=clips["loudness_db"][held],
      train_real=clips["faces"][ref],
      train_speakers=clips["speakers"][ref],
      speaker_names=list(syn.SPEAKERS),
      dlib_metrics=False,
      layout=LAYOUT,
  )
  blank = np.full_like(clips["faces"][held], 128)
  typed = scoring.evaluate(generated=blank, **kwargs)
  report = typed.to_json()
  assert json.dumps(ev.Report.from_json(report).to_json()) == json.dumps(report)
  rows = report["rows"]
  assert (
      set(rows) == {"generated", "real", "mean_face"} and "face_detection_rate" not in rows["real"]
  )
  assert set(report["definitions"]) == {"pixel_identity", "pixel_mouth", "clip_metrics"}
  assert report["settings"]["reference_speakers"] == list(syn.SPEAKERS[:-1])
  assert rows["real"]["pixel"]["identity"]["accuracy"] == 1.0
  assert rows["real"]["pixel"]["identity"]["chance"] == pytest.approx(1 / (len(syn.SPEAKERS) - 1))
  assert rows["mean_face"]["pixel"]["identity"]["accuracy"] == 1.0
  assert rows["real"]["pixel"]["mouth"]["loudness_correlation"] > 0.8
  assert rows["real"]["pixel"]["mouth"]["loudness_correlation_within_speaker"] > 0.8
  assert (
      rows["mean_face"]["pixel"]["mouth"]["loudness_correlation_within_speaker"] is None
  )  # no variation
  assert rows["generated"]["pixel"]["mouth"]["loudness_correlation"] is None  # constant: undefined
  assert rows["generated"]["pixel"]["identity"]["accuracy"] <= 2 / (len(syn.SPEAKERS) - 1)
  flat = typed.scalars()
  assert flat["eval/real/pixel_identity"] == 1.0 and "eval/generated/pixel_identity" in flat
  assert "pixel: identity 100.0%" in typed.summary()
  # Clip metrics: a blank face for every clip is chance and has no variety; the real and mean-face
  # rows are the references (no dlib: its columns are null).
  clip = {name: row["clip"] for name, row in rows.items()}
  assert clip["real"] == dict(
      matching_pixels=1.0,
      diversity_pixels=1.0,
      sharpness=1.0,
      matching_dlib=None,
      diversity_dlib=None,
      matching_chance=0.5,
  )
  for name in ("generated", "mean_face"):
    assert clip[name]["matching_pixels"] == 0.5 and clip[name]["diversity_pixels"] == 0.0, name
  assert clip["generated"]["sharpness"] == 0.0 < clip["mean_face"]["sharpness"] < 1.0
  assert flat["eval/mean_face/clip_matching_pixels"] == 0.5 and flat["eval/real/sharpness"] == 1.0
  assert "eval/real/clip_matching_dlib" not in flat
  assert "clips: matching dlib n/a pixels 50.0% (chance 50%)  diversity dlib n/a" in typed.summary()
  # An evaluated speaker without reference faces is an error naming it.
  with pytest.raises(ValueError, match=syn.SPEAKERS[-1]):
    scoring.evaluate(
        **dict(
            kwargs,
            generated=clips["faces"],
            real=clips["faces"],
            speakers=clips["speakers"],
            loudness=clips["loudness_db"],
        )
    )
  with pytest.raises(ValueError, match="nothing to compute"):
    scoring.evaluate(generated=blank, **dict(kwargs, layout=None))


@pytest.fixture(scope="module")
def synthetic_config(tmp_path_factory):
  """configs/tiny.py on the synthetic dataset, prepared in a temporary data_dir."""
  return _tiny(**{"input.data_dir": str(tmp_path_factory.mktemp("tfds")), "eval.split": "test"})


def test_face_layout_comes_from_the_dataset(synthetic_config):
  from wav2pix_jax.evaluation import data as eval_data
  from wav2pix_jax.data import datasets

  info = datasets.get_dataset_info(synthetic_config.input)
  assert info.face_layout == {
      "face_box": syn.FACE_BOX,
      "mouth_box": syn.MOUTH_BOX,
      "brow_boxes": syn.BROW_BOXES,
  }
  eval_set = eval_data.load_eval_set(
      synthetic_config.input,
      split="test",
      image_size=64,
      max_examples=3,
      reference_faces_per_speaker=1,
      batch_size=2,
  )
  assert eval_set.layout == info.face_layout and len(eval_set.real) == 3
  assert eval_set.pitch.shape == (3,) and len(eval_set.train_real) == len(syn.SPEAKERS) - len(
      syn.UNSEEN_SPEAKERS
  )


@pytest.mark.slow
def test_periodic_evaluator_follows_config_eval(synthetic_config):
  """Reference faces per speaker and train_mode come from config.eval, as in the evaluate CLI."""
  import dataclasses

  import jax

  from wav2pix_jax.evaluation import evaluator as evaluator_lib
  from wav2pix_jax.serving import inference

  seen = len(syn.SPEAKERS) - len(syn.UNSEEN_SPEAKERS)
  state = step_lib.create_train_state(synthetic_config, len(syn.SPEAKERS), jax.random.PRNGKey(0))
  # As training builds it: inference mode, whatever config.eval.train_mode says.
  generator = inference.FaceGenerator.from_state(
      synthetic_config, len(syn.SPEAKERS), state, train_mode=False
  )
  results = {}
  for train_mode in (False, True):
    config = synthetic_config.copy_and_resolve_references()
    config.eval.train_mode = train_mode
    evaluator = evaluator_lib.PeriodicEvaluator(config, batch_size=4)
    per_speaker = config.eval.reference_faces_per_speaker
    assert len(evaluator.eval_set.train_speakers) == per_speaker * seen
    report, scalars = evaluator(generator)
    assert scalars == report.scalars() and report.run["split"] == "test"
    expected = evaluator_lib.evaluate_set(
        evaluator.eval_set,
        dataclasses.replace(generator, train_mode=train_mode).generate_preprocessed(
            evaluator.eval_set.waveforms
        ),
        dlib_metrics=False,
    )
    assert scalars == expected.scalars(), train_mode
    results[train_mode] = scalars
  key = "eval/generated/pixel_mouth_opening_std"
  assert results[False][key] != results[True][key]


def test_bad_eval_config_fails_fast():
  for field, value in (("every_steps", -1), ("max_examples", 0)):
    with pytest.raises(ValueError, match=f"config.eval.{field}"):
      loop.check_config(_tiny(**{f"eval.{field}": value}))


@pytest.mark.slow
def test_training_evaluates_periodically_into_tensorboard(tmp_path, caplog):
  workdir = str(tmp_path / "workdir")
  config = _tiny(
      **{
          "input.data_dir": str(tmp_path / "tfds"),
          "eval.every_steps": 2,
          "eval.split": "test",
          "num_train_steps": 3,
      }
  )
  caplog.set_level("INFO")
  loop.train_and_evaluate(config, workdir)
  assert caplog.text.count("eval at step") == 2  # step 2 (schedule) and 3 (the end)
  report = json.loads((pathlib.Path(workdir) / "eval" / "periodic" / "report.json").read_text())
  assert report["num_examples"] == 6 and report["run"]["split"] == "test"
  assert report["rows"]["real"]["pixel"]["identity"]["accuracy"] == 1.0

  from tensorboard.backend.event_processing import event_accumulator

  steps = {}
  for f in glob.glob(os.path.join(workdir, "events.out.tfevents.*")):
    acc = event_accumulator.EventAccumulator(f, size_guidance={"tensors": 0})
    acc.Reload()
    for tag in acc.Tags().get("tensors", []):
      if tag.startswith("eval/"):
        steps[tag] = sorted(e.step for e in acc.Tensors(tag))
  for tag in (
      "eval/generated/pixel_identity",
      "eval/real/pixel_identity",
      "eval/mean_face/pixel_identity",
      "eval/real/pixel_mouth_loudness_r",
      "eval/seconds",
  ):
    assert steps.get(tag) == [2, 3], (tag, sorted(steps))


def _each_step_takes_30_s(monkeypatch):
  """A fake wall clock that advances 30 s with each training step (and only then)."""
  clock = [1000.0]
  real_make = step_lib.make_p_train_step

  def make_with_a_30_s_step(*args, **kwargs):
    p_step = real_make(*args, **kwargs)

    def step(state, batch):
      clock[0] += 30.0
      return p_step(state, batch)

    return step

  monkeypatch.setattr(step_lib, "make_p_train_step", make_with_a_30_s_step)
  monkeypatch.setattr(loop.time, "time", lambda: clock[0])


def test_eta_is_the_time_limit_when_it_ends_the_run_first(monkeypatch):
  """A 60-minute run of a 20,000-step config showed the ETA of all 20,000 steps (4:45:38)."""
  now = [1000.0]
  monkeypatch.setattr(loop.time, "time", lambda: now[0])
  clock = loop_parts.TrainClock(minutes_before=50.0)  # resumed after 50 training minutes
  limited = loop_parts.Progress(start_step=0, num_steps=20_000, clock=clock, max_minutes=60.0)
  unlimited = loop_parts.Progress(start_step=0, num_steps=20_000, clock=clock, max_minutes=0.0)
  for progress in (limited, unlimited):
    progress.compiled(1, {})
  now[0] += 60.0  # 1 step/s; 51 training minutes so far
  assert limited.report(61)[1] == "  1.00 steps/s  ETA 9:00"  # 9 minutes left
  assert unlimited.report(61)[1] == "  1.00 steps/s  ETA 5:32:19"  # 19,939 steps at 1 step/s
  limited.max_minutes = 600.0  # the steps end first: their ETA
  now[0] += 60.0
  assert limited.report(121)[1] == "  1.00 steps/s  ETA 5:31:19"
  limited.max_minutes = 51.5  # already past the limit (the run stops after this step): 0
  now[0] += 60.0
  assert limited.report(181)[1] == "  1.00 steps/s  ETA 0:00"


@pytest.mark.slow
def test_max_train_minutes_stops_saves_and_evaluates_the_last_model(tmp_path, caplog, monkeypatch):
  workdir = str(tmp_path / "workdir")
  config = _tiny(
      **{
          "input.data_dir": str(tmp_path / "tfds"),
          "eval.every_steps": 10,
          "eval.split": "test",
          "num_train_steps": 50,
          "max_train_minutes": 1.0,
      }
  )
  _each_step_takes_30_s(monkeypatch)
  caplog.set_level("INFO")
  state = loop.train_and_evaluate(config, workdir)
  assert int(state.step) == 2  # 2 x 30 s reach the 1-minute limit
  assert "Stopped by max_train_minutes=1 (at 1.0 training minutes) after step 2" in caplog.text
  assert caplog.text.count("eval at step") == 1  # off the schedule, but the last model is evaluated
  rows = [json.loads(line) for line in open(os.path.join(workdir, "eval", "history.jsonl"))]
  assert [(r["step"], r["train_minutes"]) for r in rows] == [(2, 1.0)]
  from wav2pix_jax import checkpoints  # pylint: disable=g-import-not-at-top

  manager = checkpoints.create_manager(workdir, max_to_keep=2, create=False)
  assert checkpoints.latest_step(manager) == 2


@pytest.mark.slow
def test_training_minutes_continue_over_a_resume_without_evaluations(tmp_path, caplog, monkeypatch):
  """The minutes are saved in each checkpoint: a resumed run counts on from them (before, only
  the periodic evaluation's history carried them, so a run without one started again from 0)."""
  workdir = str(tmp_path / "workdir")
  overrides = {"input.data_dir": str(tmp_path / "tfds"), "eval.every_steps": 0}
  _each_step_takes_30_s(monkeypatch)
  caplog.set_level("INFO")
  config = _tiny(**overrides, num_train_steps=50, max_train_minutes=1.0)
  assert int(loop.train_and_evaluate(config, workdir).step) == 2  # 2 x 30 s
  caplog.clear()
  config = _tiny(**overrides, num_train_steps=50, max_train_minutes=1.5)
  assert int(loop.train_and_evaluate(config, workdir).step) == 3  # 1 minute before + 30 s
  assert "Stopped by max_train_minutes=1.5 (at 1.5 training minutes) after step 3" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("precise_bn", [0, 8])
def test_evaluations_and_image_grids_leave_training_unchanged(tmp_path, precise_bn):
  """The periodic evaluation, the image grids and the best checkpoint only read the state: the
  state trained beside them equals, to the bit, the state trained without them. With precise
  BatchNorm statistics (recomputed at each checkpoint, evaluation and grid) the same holds, and the
  final state carries the statistics recomputed from its own weights."""
  import jax  # pylint: disable=g-import-not-at-top

  data_dir = str(tmp_path / "tfds")
  states = {}
  for name, every in (("plain", 0), ("watched", 1)):
    config = _tiny(
        **{
            "input.data_dir": data_dir,
            "eval.split": "test",
            "num_train_steps": 3,
            "eval.every_steps": every,
            "eval.best_metric": "identity" if every else "",
            "log.image_every_steps": every or 1000,
            "precise_bn_examples": precise_bn,
        }
    )
    states[name] = jax.device_get(loop.train_and_evaluate(config, str(tmp_path / name)))
  assert (tmp_path / "watched" / "best").is_dir() and not (tmp_path / "plain" / "best").exists()
  plain, watched = (jax.tree_util.tree_leaves_with_path(states[k]) for k in ("plain", "watched"))
  assert len(plain) == len(watched)
  for (path, a), (_, b) in zip(plain, watched):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))
  if precise_bn:
    final = states["plain"]
    num_speakers = final.g_params["classifier"]["fc1"]["kernel"].shape[-1]
    recompute = loop._precise_bn(config, num_speakers)  # pylint: disable=protected-access
    assert recompute.batches.shape[:2] == (2, 4)  # 8 windows in batches of config.batch_size
    want = jax.device_get(
        recompute._stats(  # pylint: disable=protected-access
            {
                "params": final.g_params,
                "batch_stats": final.g_batch_stats,
                "spectral": final.g_spectral,
            },
            recompute.batches,
        )
    )
    jax.tree.map(np.testing.assert_array_equal, final.g_batch_stats, want)
