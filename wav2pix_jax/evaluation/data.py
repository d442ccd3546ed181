"""The data of an evaluation: held-out speech, the paired real faces and the reference faces.

Read through `input_pipeline` (the same centred windows and face decoding as training's eval
iterator); the metrics themselves are `scoring`'s.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from wav2pix_jax import config_lib
from wav2pix_jax.evaluation import face_metrics
from wav2pix_jax.serving import inference
from wav2pix_jax.data import datasets
from wav2pix_jax.data import input_pipeline


@dataclasses.dataclass
class EvalSet:
  """Everything but the generated faces: held-out speech, paired real faces, reference faces."""

  dataset: str
  split: str
  speaker_names: list[str]
  waveforms: np.ndarray  # float32 [N, window]: preprocessed centred windows (the model's input)
  real: np.ndarray  # uint8 [N, S, S, 3]
  speakers: np.ndarray  # int64 [N]
  loudness: np.ndarray  # float32 [N]: RMS dB of the raw (not normalised) window
  train_real: np.ndarray  # uint8 [M, S, S, 3] reference faces
  train_speakers: np.ndarray  # int64 [M]
  reference_from_eval_split: list[str]  # speakers whose reference faces come from `split`
  layout: Mapping | None  # the dataset's known face layout (pixel metrics) or None
  pitch: np.ndarray | None = None  # float64 [N]: each clip's pitch_shift where the dataset has one


def centred(waveform: np.ndarray, window: int) -> np.ndarray:
  """The centred `window` of a clip: the samples the model sees in evaluation (audio.preprocess)."""
  start = max(0, (waveform.shape[0] - window) // 2)
  return waveform[start : start + window]


def fusion_groups(speakers: np.ndarray, windows_per_face: int) -> list[np.ndarray]:
  """Example indices fused into one face each: every `windows_per_face` consecutive examples of
  one speaker (in split order), speaker by speaker; a speaker's last < windows_per_face dropped."""
  if windows_per_face < 1:
    raise ValueError(f"windows_per_face must be >= 1, got {windows_per_face}")
  speakers = np.asarray(speakers)
  groups = []
  for s in np.unique(speakers):
    own = np.flatnonzero(speakers == s)
    usable = own.size // windows_per_face * windows_per_face
    groups.extend(own[:usable].reshape(-1, windows_per_face))
  return groups


def reference_faces(
    input_cfg, *, image_size: int, per_speaker: int, eval_split: str | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """Up to `per_speaker` real faces per speaker, evenly spaced over the train split (uint8 RGB).

  Returns (faces, speakers, names of the speakers whose faces come from `eval_split`): speakers
  with no training face (held out of training, e.g. the synthetic "test_unseen" ones) take their
  reference faces from `eval_split` instead; speakers in neither get none and are left out of
  the identity classes.
  """
  info = datasets.get_dataset_info(input_cfg)
  train_split = input_cfg.train_split
  splits = [train_split] + ([eval_split] if eval_split and eval_split != train_split else [])
  faces, labels, from_eval = [], [], []
  covered: set[int] = set()
  for split in splits:
    source = datasets.data_source(input_cfg, split)
    speakers = np.array([int(source[i]["speaker"]) for i in range(len(source))], np.int64)
    for s in range(info.num_speakers):
      own = np.flatnonzero(speakers == s)
      if s in covered or own.size == 0:
        continue
      covered.add(s)
      if split != train_split:
        from_eval.append(info.speaker_names[s])
      keys = own[
          np.unique(np.linspace(0, own.size - 1, min(per_speaker, own.size)).round().astype(int))
      ]
      faces.extend(
          inference.to_uint8(input_pipeline.decode_face(source[int(k)]["face"], image_size))
          for k in keys
      )
      labels.extend([s] * len(keys))
  if not faces:
    raise config_lib.ConfigError(
        f"no real faces in split {train_split!r} for the identity classifier"
    )
  return np.stack(faces), np.asarray(labels, np.int64), from_eval


def read_split(
    input_cfg, *, split: str, image_size: int, batch_size: int, max_examples: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(float32 [N, window] preprocessed centred windows, uint8 [N, S, S, 3] real faces, int64 [N]
  speakers) of the first `max_examples` records of `split` (all: None), in record order."""
  waveforms, real, speakers = [], [], []
  for batch in input_pipeline.create_eval_iterator(
      input_cfg,
      split=split,
      batch_size=batch_size,
      image_size=image_size,
      max_examples=max_examples,
      process_index=0,
      process_count=1,
  ):
    mask = np.asarray(batch["mask"], bool)
    waveforms.append(np.asarray(batch["waveform"], np.float32)[mask])
    real.append(inference.to_uint8(batch["face"][mask]))
    speakers.append(np.asarray(batch["speaker"], np.int64)[mask])
  return np.concatenate(waveforms), np.concatenate(real), np.concatenate(speakers)


def load_eval_set(
    input_cfg,
    *,
    split: str,
    image_size: int,
    max_examples: int | None,
    reference_faces_per_speaker: int,
    batch_size: int,
) -> EvalSet:
  """Reads `split` (the first `max_examples` records, centred windows) and the reference faces."""
  info = datasets.get_dataset_info(input_cfg)
  waveforms, real, speakers = read_split(
      input_cfg,
      split=split,
      image_size=image_size,
      batch_size=batch_size,
      max_examples=max_examples,
  )
  # Loudness of the raw (not peak-normalised) window the model heard; the eval iterator reads
  # records in order, so record i is example i.
  source = datasets.data_source(input_cfg, split)
  loudness = face_metrics.loudness_db(
      [centred(np.asarray(source[i]["waveform"]), waveforms.shape[1]) for i in range(len(real))]
  )
  pitch = None
  if len(real) and "pitch_shift" in source[0]:  # the synthetic clips' known pitch (eyebrow metric)
    pitch = np.array([float(source[i]["pitch_shift"]) for i in range(len(real))], np.float64)
  train_real, train_speakers, from_eval = reference_faces(
      input_cfg, image_size=image_size, per_speaker=reference_faces_per_speaker, eval_split=split
  )
  return EvalSet(
      dataset=info.name,
      split=split,
      speaker_names=list(info.speaker_names),
      waveforms=waveforms,
      real=real,
      speakers=speakers,
      loudness=loudness,
      train_real=train_real,
      train_speakers=train_speakers,
      reference_from_eval_split=from_eval,
      layout=info.face_layout,
      pitch=pitch,
  )
