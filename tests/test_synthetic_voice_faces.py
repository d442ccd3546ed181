"""The `synthetic_voice_faces` builder: splits, extras, the documented voice -> face mapping."""

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from data_prep.synthetic_voice_faces import SyntheticVoiceFaces
from data_prep.synthetic_voice_faces import synthetic_voice_faces_dataset_builder as svf
from wav2pix_jax import attributes as attributes_cli
from wav2pix_jax import evaluate as evaluate_cli
from wav2pix_jax.evaluation import report as eval_report
from wav2pix_jax.evaluation import attributes
from wav2pix_jax.evaluation import pixel_metrics

NAME = "synthetic_voice_faces"
EXTRAS = ("loudness", "pitch_shift", "f0_hz", "formant_scale") + tuple(attributes.ATTRIBUTES)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("voice_faces")
  builder = SyntheticVoiceFaces(data_dir=str(data_dir))
  builder.download_and_prepare()
  sources = {
      split: tfds.data_source(NAME, split=split, data_dir=str(data_dir))
      for split in builder.info.splits
  }
  return builder, sources


def test_splits_speakers_and_extras(built):
  builder, sources = built
  assert {split: len(s) for split, s in sources.items()} == {
      "train": svf.NUM_SEEN * len(svf.SEEN_SPLITS["train"]),
      "validation": svf.NUM_SEEN * len(svf.SEEN_SPLITS["validation"]),
      "test": svf.NUM_SEEN * len(svf.SEEN_SPLITS["test"]),
      "test_unseen": svf.NUM_UNSEEN * svf.CLIPS_PER_SPEAKER,
  }
  assert builder.info.features["speaker"].names == list(svf.SPEAKERS)
  assert builder.info.features["shirt"].names == list(svf.SHIRTS)
  speakers = {
      split: {int(s[i]["speaker"]) for i in range(0, len(s), 7)} for split, s in sources.items()
  }
  assert not speakers["train"] & speakers["test_unseen"]
  assert {svf.SPEAKERS[i] for i in speakers["test_unseen"]} <= set(svf.UNSEEN_SPEAKERS)
  truth = {s.name: svf.attributes(s) for s in svf.make_speakers()}
  for split in ("train", "test_unseen"):
    for i in range(0, len(sources[split]), 50):
      record = sources[split][i]
      assert record["face"].shape == (64, 64, 3) and record["waveform"].dtype == np.int16
      assert set(EXTRAS) <= set(record)
      want = truth[record["speaker_name"].decode()]
      for name, value in want.items():  # the speaker's attributes, on every record
        assert record[name] == pytest.approx(value)


def test_same_seed_same_speakers_and_clips():
  assert svf.make_speakers() == svf.make_speakers(svf.SEED)
  assert svf.make_speakers(svf.SEED + 1) != svf.make_speakers()
  first, second = svf.make_clip(3, 5), svf.make_clip(3, 5)
  np.testing.assert_array_equal(first["waveform"], second["waveform"])
  np.testing.assert_array_equal(first["face"], second["face"])


def _corr(a, b) -> float:
  return float(np.corrcoef(np.asarray(a, float), np.asarray(b, float))[0, 1])


def test_face_attributes_follow_the_documented_voice_attributes():
  speakers = svf.make_speakers()
  pitch = np.log([s.f0 for s in speakers])
  formants = [s.formant_scale for s in speakers]
  # Masculine / feminine features follow the pitch, noisily.
  assert _corr([s.beard for s in speakers], pitch) < -0.5
  assert _corr([s.jaw for s in speakers], pitch) < -0.7
  assert _corr([s.hair_length for s in speakers], pitch) > 0.7
  # Head size follows the vocal tract (longer: lower formant scale), not the pitch.
  assert _corr([s.head_size for s in speakers], formants) < -0.9
  assert abs(_corr([s.head_size for s in speakers], pitch)) < 0.3
  assert abs(_corr(formants, pitch)) < 0.3
  # No face attribute is a copy of the voice: each mapping is noisy.
  for name in ("jaw", "hair_length", "head_size"):
    values = [getattr(s, name) for s in speakers]
    assert abs(_corr(values, pitch if name != "head_size" else formants)) < 0.99
  # The controls follow nothing: every colour is used by men and women, and by big and small.
  for name, palette in (("shirt", svf.SHIRTS), ("background", svf.BACKGROUNDS)):
    values = np.array([getattr(s, name) for s in speakers])
    assert len(np.unique(values)) == len(palette)
    for trait in ([s.sex for s in speakers], [s.size > 0.5 for s in speakers]):
      trait = np.asarray(trait, bool)
      assert len(np.unique(values[trait])) >= 6 and len(np.unique(values[~trait])) >= 6


def _pitch_hz(waveform: np.ndarray) -> float:
  """The first autocorrelation peak within 90% of the best, 70-400 Hz."""
  x = waveform.astype(np.float64) - waveform.mean()
  acf = np.fft.irfft(np.abs(np.fft.rfft(x, 2 * len(x))) ** 2)[: len(x)]
  lo, hi = 16000 // 400, 16000 // 70
  window = acf[lo:hi]
  peaks = [i for i in range(1, len(window) - 1) if window[i - 1] < window[i] >= window[i + 1]]
  best = max(window[i] for i in peaks)
  return 16000 / (lo + next(i for i in peaks if window[i] >= 0.9 * best))


def test_the_voice_carries_the_speakers_pitch():
  speakers = svf.make_speakers()
  picks = range(0, len(speakers), 5)
  heard = [np.log(_pitch_hz(svf.make_clip(i, 0, speakers=speakers)["waveform"])) for i in picks]
  assert _corr(heard, [np.log(speakers[i].f0) for i in picks]) > 0.9


def test_expression_layout_of_synthetic_talking_faces_still_holds():
  """The mouth and eyebrow boxes of evaluate.py's pixel metrics measure these faces' expression,
  within speakers (a dark beard darkens the mouth box of its speaker at every loudness)."""
  rng = np.random.default_rng(0)
  speakers = svf.make_speakers()[:24]
  loudness, shift = rng.uniform(0, 1, len(speakers)), rng.uniform(-1, 1, len(speakers))
  faces = np.stack([svf.draw_face(s, l, p) for s, l, p in zip(speakers, loudness, shift)])
  flat = np.stack([svf.draw_face(s, 0.5, 0.0) for s in speakers])  # each speaker's own baseline
  for metric, box, expression in (
      (pixel_metrics.mouth_opening_px, svf.MOUTH_BOX, loudness),
      (pixel_metrics.brow_height_px, svf.BROW_BOXES, shift),
  ):
    assert _corr(metric(faces, box) - metric(flat, box), expression) > 0.8


def test_attribute_cli_reports_a_workdir_on_the_unseen_split(built, tmp_path, capsys):
  import json

  from helpers import tiny_config
  from test_inference import save_run  # a workdir as training leaves it (random weights)

  builder, _ = built
  config = tiny_config()
  config.input.dataset = NAME
  config.input.data_dir = str(builder.data_dir_root)
  workdir = tmp_path / "wd"
  save_run(workdir, config, steps=(4,), names=svf.SPEAKERS, num_speakers=len(svf.SPEAKERS))
  out = tmp_path / "out"
  assert attributes_cli.main([f"--workdir={workdir}", f"--out={out}"]) == 0
  # One report: evaluate's rows (pixel metrics) with the attribute section.
  report = eval_report.Report.read(out / eval_report.REPORT_FILENAME)
  assert report.run["split"] == "test_unseen" and report.run["step"] == 4
  assert set(report.rows) >= {"generated", "real", "mean_face"}
  section = json.loads((out / eval_report.REPORT_FILENAME).read_text())["attributes"]
  assert section == report.attributes
  assert section["num_examples"] == len(svf.UNSEEN_SPEAKERS) * svf.CLIPS_PER_SPEAKER
  assert section["num_speakers"] == len(svf.UNSEEN_SPEAKERS)
  for name, entry in section["attributes"].items():  # the dataset's own faces: the ceiling
    assert entry["real"]["skill"] > 0.8 and entry["real"]["error"] < 0.05, name
  printed = capsys.readouterr().out
  assert all(name in printed for name in attributes.ATTRIBUTES) and "report:" in printed
  assert Image.open(out / "grid.png").size[1] > 64
  # evaluate.py writes the same section for this dataset without being asked.
  assert (
      evaluate_cli.main(
          [f"--workdir={workdir}", f"--out={tmp_path / 'ev'}", "--no_dlib", "--split=test_unseen"]
      )
      == 0
  )
  again = eval_report.Report.read(tmp_path / "ev" / eval_report.REPORT_FILENAME)
  assert again.attributes["attributes"].keys() == section["attributes"].keys()

  assert (
      attributes_cli.main([f"--workdir={workdir}", "--split=nope", f"--out={tmp_path / 'x'}"]) == 1
  )
  err = capsys.readouterr().err.strip()
  assert err.startswith("attributes: error:") and "nope" in err and "\n" not in err
  other = tmp_path / "other"
  config.input.dataset = "synthetic_talking_faces"
  save_run(other, config, steps=(1,))
  assert attributes_cli.main([f"--workdir={other}", f"--out={tmp_path / 'y'}"]) == 1
  assert NAME in capsys.readouterr().err
