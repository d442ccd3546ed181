"""Evaluating a generator: a trained workdir, or the current weights during training.

`evaluate_workdir` generates faces for a split with a workdir's generator and writes
<out>/report.json and <out>/grid.png (`python -m wav2pix_jax.evaluate` is its CLI);
`PeriodicEvaluator` is the evaluation training runs every config.eval.every_steps. The data comes
from evaluation/data.py, the metrics from evaluation/scoring.py, the report (typed rows,
report.json) from evaluation/report.py; defaults (reference faces per speaker, train mode) from
the run's config (configs/base.py).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Callable, Sequence

import numpy as np
from wav2pix_jax import config_lib
from wav2pix_jax.evaluation import attributes
from wav2pix_jax.evaluation import data as eval_data
from wav2pix_jax.evaluation import report as eval_report
from wav2pix_jax.evaluation import scoring
from wav2pix_jax.evaluation import scoring_inputs
from wav2pix_jax.evaluation import face_metrics
from wav2pix_jax.evaluation import grids
from wav2pix_jax.serving import inference
from wav2pix_jax.data import datasets


def save_grid(
    path: str | os.PathLike,
    *,
    real: np.ndarray,
    generated: np.ndarray,
    speakers: np.ndarray,
    speaker_names: Sequence[str],
    per_speaker: int = 8,
    gap: int = 4,
) -> pathlib.Path:
  """PNG grid: one band per speaker (name on top), each cell a real face and its generated face."""
  generated = face_metrics.check_images(generated, "generated")
  real = scoring_inputs.resize_batch(face_metrics.check_images(real, "real"), generated.shape[1:3])
  speakers = np.asarray(speakers)
  if not (real.shape[0] == generated.shape[0] == speakers.shape[0]):
    raise ValueError("real, generated and speakers must have the same length")
  present = [s for s in range(len(speaker_names)) if np.any(speakers == s)]
  bands = []
  for s in present:
    picks = np.flatnonzero(speakers == s)[:per_speaker]
    # real_0, generated_0, real_1, ...: each real face next to its generated one.
    bands.append(np.stack([real[picks], generated[picks]], axis=1).reshape(-1, *real.shape[1:]))
  image = grids.grid(bands, gap=gap, labels=[speaker_names[s] for s in present])
  return grids.save_png(path, image)


def evaluate_set(
    eval_set: eval_data.EvalSet,
    generated: np.ndarray,
    *,
    dlib_metrics: bool = True,
    cache: dict | None = None,
    fused: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
) -> eval_report.Report:
  """The report for `generated` (uint8 [N, S, S, 3], one face per example of `eval_set`, in order).

  cache: a dict kept between calls on the same eval set (the dlib analyses of its real and
  reference faces are then computed once). fused: `fused_faces`' rows, {k: (faces, speakers)}.
  """
  report = scoring.evaluate(
      generated=generated,
      real=eval_set.real,
      speakers=eval_set.speakers,
      loudness=eval_set.loudness,
      train_real=eval_set.train_real,
      train_speakers=eval_set.train_speakers,
      speaker_names=eval_set.speaker_names,
      dlib_metrics=dlib_metrics,
      layout=eval_set.layout,
      cache=cache,
      pitch=eval_set.pitch,
      fused=fused,
  )
  report.settings["reference_faces_from_eval_split"] = list(eval_set.reference_from_eval_split)
  return report


def fused_faces(
    generator: inference.FaceGenerator, eval_set: eval_data.EvalSet, windows_per_face: Sequence[int]
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
  """{k: (uint8 faces, speakers)}: one face per k examples of a speaker (eval_data.fusion_groups),
  from the mean of their speech embeddings; for each k > 1 (k = 1 is the generated row)."""
  ks = sorted({int(k) for k in windows_per_face if k > 1})
  if not ks:
    return {}
  embeddings = generator.embed_preprocessed(eval_set.waveforms)
  fused = {}
  for k in ks:
    groups = eval_data.fusion_groups(eval_set.speakers, k)
    if not groups:
      raise config_lib.ConfigError(
          f"fusing {k} windows per face: no speaker has {k} examples in split "
          f"{eval_set.split!r} ({len(eval_set.speakers)} examples evaluated)"
      )
    faces = generator.generate_from_embeddings(inference.mean_embeddings(embeddings, groups))
    fused[k] = (faces, eval_set.speakers[[g[0] for g in groups]])
  return fused


def evaluate_workdir(
    workdir: str,
    *,
    split: str = "test",
    out_dir: str | os.PathLike,
    step: int | None = None,
    checkpoint: str = "best",
    max_examples: int | None = None,
    batch_size: int = inference.DEFAULT_BATCH_SIZE,
    train_faces_per_speaker: int | None = None,
    data_dir: str | None = None,
    grid_per_speaker: int = 8,
    dlib_metrics: bool = True,
    fuse: Sequence[int] = (),
    announce: Callable[[str], None] | None = None,
    precise_bn_examples: int = 0,
    with_attributes: bool | None = None,
) -> eval_report.Report:
  """Generates faces for `split` with a workdir's generator (in its config.eval.train_mode),
  evaluates, writes report + grid. train_faces_per_speaker (None: the run's
  config.eval.reference_faces_per_speaker); fuse: extra rows "fused_<k>" (`fused_faces`);
  step / checkpoint: `inference.load`'s choice, said in report.run and to `announce` once loaded;
  precise_bn_examples > 0: BatchNorm statistics recomputed on that many training records;
  with_attributes: the attribute section (None: where the dataset has one, `_attributes_wanted`).
  """
  generator = inference.load(workdir, step, checkpoint=checkpoint, batch_size=batch_size)
  input_cfg = generator.config.input
  if data_dir is not None:
    input_cfg = _with_overrides(input_cfg, data_dir=data_dir)
  with_attributes = _attributes_wanted(input_cfg, workdir, with_attributes)
  if announce is not None:
    announce(generator.source)
  if train_faces_per_speaker is None:
    train_faces_per_speaker = generator.config.eval.reference_faces_per_speaker
  info, eval_set = _workdir_eval_set(
      generator,
      split=split,
      data_dir=data_dir,
      max_examples=max_examples,
      reference_faces_per_speaker=train_faces_per_speaker,
      batch_size=batch_size,
  )
  if precise_bn_examples > 0:
    generator = _with_precise_bn(generator, input_cfg, precise_bn_examples, batch_size)
  generated = generator.generate_preprocessed(eval_set.waveforms)
  report = evaluate_set(
      eval_set, generated, dlib_metrics=dlib_metrics, fused=fused_faces(generator, eval_set, fuse)
  )
  if with_attributes:
    report.attributes = attributes.section(
        input_cfg, split=split, generated=generated, real=eval_set.real, speakers=eval_set.speakers
    )
  report.run = _run_record(
      workdir, generator, dataset=info.name, split=split, train_faces=train_faces_per_speaker
  )
  report.run["precise_bn_examples"] = precise_bn_examples
  _write(out_dir, report, eval_set, generated, grid_per_speaker)
  return report


def _run_record(workdir, generator, *, dataset: str, split: str, train_faces: int) -> dict:
  """report.run: what was evaluated (workdir, step, which checkpoint, dataset, split...)."""
  return {
      "workdir": os.path.abspath(os.path.expanduser(str(workdir))),
      "step": generator.step,
      "checkpoint": generator.which,
      "dataset": dataset,
      "split": split,
      "train_faces_per_speaker": train_faces,
  }


def _write(out_dir, report, eval_set: eval_data.EvalSet, generated, per_speaker: int) -> None:
  """out_dir/report.json and out_dir/grid.png (`per_speaker` faces of each speaker)."""
  report.write(out_dir)
  save_grid(
      pathlib.Path(out_dir) / "grid.png",
      real=eval_set.real,
      generated=generated,
      speakers=eval_set.speakers,
      speaker_names=eval_set.speaker_names,
      per_speaker=per_speaker,
  )


def _attributes_wanted(input_cfg, workdir: str, wanted: bool | None) -> bool:
  """Whether the report gets an attribute section: `wanted`, or (None) where the dataset has
  one; ConfigError when it is wanted on another dataset."""
  if wanted:
    attributes.check_dataset(input_cfg, workdir)
    return True
  if wanted is None:
    return datasets.base_name(str(input_cfg.dataset)) == attributes.DATASET
  return False


def _with_precise_bn(
    generator: inference.FaceGenerator, input_cfg, examples: int, batch_size: int
) -> inference.FaceGenerator:
  """`generator` with BatchNorm statistics recomputed on the first `examples` training records."""
  windows, _, _ = eval_data.read_split(
      input_cfg,
      split=input_cfg.train_split,
      image_size=generator.image_size,
      batch_size=batch_size,
      max_examples=examples,
  )
  if not len(windows):
    raise config_lib.ConfigError(
        f"precise BatchNorm statistics ({examples} examples) need training records; split "
        f"{input_cfg.train_split!r} of {input_cfg.data_dir or 'the default data_dir'} has none"
    )
  return generator.with_precise_batch_stats(windows, batch=int(generator.config.batch_size))


def _workdir_eval_set(
    generator: inference.FaceGenerator, *, split: str, data_dir: str | None, **load_args
) -> tuple[datasets.DatasetInfo, eval_data.EvalSet]:
  """The dataset's info and the eval set of `split`, read with the run's config.input (data_dir
  overridden); ConfigError where the input section or the dataset's speakers don't fit."""
  input_cfg = generator.config.input
  if data_dir is not None:
    input_cfg = _with_overrides(input_cfg, data_dir=data_dir)
  # The run's model section was checked by inference.load; its input section is read here.
  config_lib.check_input({"input": input_cfg})
  info = _matching_dataset_info(generator, input_cfg)
  eval_set = eval_data.load_eval_set(
      input_cfg, split=split, image_size=generator.image_size, **load_args
  )
  return info, eval_set


def _matching_dataset_info(generator: inference.FaceGenerator, input_cfg):
  """The dataset's info; ConfigError unless it has the speakers the generator was trained on."""
  info = datasets.get_dataset_info(input_cfg)
  if info.num_speakers != generator.num_speakers or (
      generator.speaker_names and tuple(generator.speaker_names) != tuple(info.speaker_names)
  ):
    raise config_lib.ConfigError(
        f"the checkpoint was trained on speakers {generator.speaker_names} "
        f"({generator.num_speakers}) but dataset {info.name!r} has {list(info.speaker_names)}"
    )
  return info


def _with_overrides(cfg, **overrides):
  """A copy of a ConfigDict section with some fields replaced."""
  cfg = cfg.copy_and_resolve_references()
  for key, value in overrides.items():
    cfg[key] = value
  return cfg


class PeriodicEvaluator:
  """The evaluation during training (config.eval): a fixed eval set, faces from the current G.

  Built once (reads config.eval.split, default config.input.eval_split, capped at
  config.eval.max_examples, and config.eval.reference_faces_per_speaker reference faces); each
  call generates with an `inference.FaceGenerator` (the current weights, in
  config.eval.train_mode as the evaluate CLI does) and returns (report, scalars). dlib metrics
  only where config.eval.dlib is set (slow, and blind to the synthetic cartoon faces); pixel
  metrics wherever the dataset declares a face layout.
  """

  def __init__(self, config, *, batch_size: int = inference.DEFAULT_BATCH_SIZE):
    eval_cfg = config.eval
    self.split = eval_cfg.split or config.input.eval_split
    self.train_mode = bool(eval_cfg.train_mode)
    self.eval_set = eval_data.load_eval_set(
        config.input,
        split=self.split,
        image_size=config.model.image_size,
        max_examples=eval_cfg.max_examples,
        reference_faces_per_speaker=eval_cfg.reference_faces_per_speaker,
        batch_size=batch_size,
    )
    self.dlib_metrics = bool(eval_cfg.dlib)
    if not self.dlib_metrics and self.eval_set.layout is None:
      raise config_lib.ConfigError(
          f"config.eval.dlib=False but dataset {self.eval_set.dataset!r} has no known face "
          "layout for pixel-space metrics: nothing to evaluate"
      )
    self._cache: dict = {}  # dlib analyses of the fixed real / reference faces
    self._generator: inference.FaceGenerator | None = None  # in self.train_mode

  def __call__(
      self, generator: inference.FaceGenerator
  ) -> tuple[eval_report.Report, dict[str, float]]:
    """(report, scalars) of `generator`'s weights on the eval set."""
    if generator.train_mode != self.train_mode:
      # The same weights in config.eval.train_mode; built (and compiled) once, then reused.
      if self._generator is None:
        self._generator = dataclasses.replace(generator, train_mode=self.train_mode)
      generator = self._generator.with_variables(generator.variables, step=generator.step)
    generated = generator.generate_preprocessed(self.eval_set.waveforms)
    report = evaluate_set(
        self.eval_set, generated, dlib_metrics=self.dlib_metrics, cache=self._cache
    )
    report.run = {"dataset": self.eval_set.dataset, "split": self.split}
    return report, report.scalars()
