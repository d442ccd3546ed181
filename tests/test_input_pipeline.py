"""Tests for wav2pix_jax.input_pipeline on a tiny ArrayRecord dataset built in a temp dir."""

import itertools

import ml_collections
import numpy as np
import pytest
import scipy.signal
import tensorflow_datasets as tfds

from configs import base as base_config
from data_prep import features
from wav2pix_jax.data import audio
from wav2pix_jax.data import datasets
from wav2pix_jax.data import input_pipeline

SPEAKERS = ("anna", "bert", "carl")
RECORDS_PER_SPEAKER = 8
CLIP_SAMPLES = 19_200  # 1.2 s
IMAGE_SIZE = 16


def face_colour(speaker: int, index: int) -> np.ndarray:
  """Speaker s paints channel s at 220; channel s+1 encodes the record index (20 + 8 i)."""
  colour = np.zeros(3, np.uint8)
  colour[speaker] = 220
  colour[(speaker + 1) % 3] = 20 + 8 * index
  return colour


def record_ids(faces: np.ndarray) -> list[tuple[int, int]]:
  """(speaker, index) of each face painted by `face_colour`, read back from [-1, 1] floats."""
  ids = []
  for face in faces:
    colour = (face.reshape(-1, 3).mean(0) + 1.0) * 127.5
    speaker = int(np.argmax(colour))
    ids.append((speaker, int(round((colour[(speaker + 1) % 3] - 20) / 8))))
  return ids


class TinyPipelineTestFaces(tfds.core.GeneratorBasedBuilder):
  """3 speakers with single-colour faces of varied sizes; extra splits for the error cases."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, features=features.record_features(list(SPEAKERS), face_format="png")
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {
        "train": self._generate_examples(range(3), RECORDS_PER_SPEAKER, CLIP_SAMPLES, seed=0),
        "test": self._generate_examples(range(3), 3, CLIP_SAMPLES, seed=1),
        "solo": self._generate_examples([1], 4, CLIP_SAMPLES, seed=2),
        "short": self._generate_examples(range(2), 2, 8_000, seed=3),
    }

  def _generate_examples(self, speakers, per_speaker, samples, seed):
    rng = np.random.default_rng(seed)
    for speaker in speakers:
      for index in range(per_speaker):
        height, width = rng.integers(12, 70, size=2)
        face = np.broadcast_to(face_colour(speaker, index), (height, width, 3)).copy()
        waveform = (rng.standard_normal(samples) * 3000).astype(np.int16)
        yield f"{speaker}_{index}", {
            "waveform": waveform,
            "face": face,
            "speaker": speaker,
            "speaker_name": SPEAKERS[speaker],
            "clip_id": f"{SPEAKERS[speaker]}/{index // 4}",
            "frame": index,
        }


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tfds")
  tfds.builder(
      "tiny_pipeline_test_faces", data_dir=str(path), file_format="array_record"
  ).download_and_prepare()
  return str(path)


def make_cfg(data_dir, **overrides) -> ml_collections.ConfigDict:
  cfg = base_config.get_config().input  # every field's default lives in configs/base.py
  cfg.update(
      dict(
          dataset="tiny_pipeline_test_faces",
          data_dir=data_dir,
          manual_dir="",
          train_split="train",
          eval_split="test",
          audio_samples=16_000,
          sample_rate=16_000,
          preemphasis=0.95,
          num_workers=0,
          shuffle_seed=0,
      )
  )
  cfg.update(overrides)
  return cfg


def take(iterator, n):
  return list(itertools.islice(iterator, n))


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def test_dataset_info(data_dir):
  info = datasets.get_dataset_info(make_cfg(data_dir))
  assert info.num_speakers == 3 and info.speaker_names == SPEAKERS
  assert info.split_sizes == {"train": 24, "test": 9, "solo": 4, "short": 4}


def test_train_batches_shapes_values_and_wrong_faces(data_dir):
  batches = take(
      input_pipeline.create_train_iterator(
          make_cfg(data_dir),
          batch_size=4,
          image_size=IMAGE_SIZE,
          seed=0,
          process_index=0,
          process_count=1,
      ),
      12,
  )
  for batch in batches:
    assert batch["waveform"].shape == (4, 16_000) and batch["waveform"].dtype == np.float32
    assert batch["face"].shape == batch["wrong_face"].shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert batch["face"].dtype == batch["wrong_face"].dtype == np.float32
    assert batch["speaker"].shape == (4,) and batch["speaker"].dtype == np.int32
    for key in ("waveform", "face", "wrong_face"):
      assert np.all(np.isfinite(batch[key]))
    assert batch["face"].min() >= -1.0 and batch["face"].max() <= 1.0
    assert batch["wrong_face"].min() >= -1.0 and batch["wrong_face"].max() <= 1.0
    assert np.abs(batch["waveform"]).max() <= 1.95
    faces, wrong = record_ids(batch["face"]), record_ids(batch["wrong_face"])
    assert [s for s, _ in faces] == batch["speaker"].tolist()
    assert all(w[0] != s for w, s in zip(wrong, batch["speaker"]))
  # 6 batches = one epoch: every record once; the next epoch is reshuffled.
  epochs = [
      [i for b in batches[e * 6 : (e + 1) * 6] for i in record_ids(b["face"])] for e in (0, 1)
  ]
  for epoch in epochs:
    assert sorted(epoch) == [(s, i) for s in range(3) for i in range(RECORDS_PER_SPEAKER)]
  assert epochs[0] != epochs[1]


def test_train_windows_are_random_crops_of_the_record(data_dir):
  source = tfds.data_source("tiny_pipeline_test_faces", split="train", data_dir=data_dir)
  waveforms = {
      (int(r["speaker"]), int(r["frame"])): r["waveform"]
      for r in (source[k] for k in range(len(source)))
  }
  batch = next(
      input_pipeline.create_train_iterator(
          make_cfg(data_dir),
          batch_size=8,
          image_size=IMAGE_SIZE,
          seed=3,
          process_index=0,
          process_count=1,
      )
  )
  starts = set()
  for row, key in zip(batch["waveform"], record_ids(batch["face"])):
    # Undo the pre-emphasis, then find the crop whose samples are proportional to the result.
    head = scipy.signal.lfilter([1.0], [1.0, -0.95], row[:64].astype(np.float64))
    crops = np.lib.stride_tricks.sliding_window_view(waveforms[key].astype(np.float64), 64)[
        : CLIP_SAMPLES - 16_000 + 1
    ]
    cosine = crops @ head / (np.linalg.norm(crops, axis=1) * np.linalg.norm(head))
    start = int(np.argmax(cosine))
    np.testing.assert_allclose(
        row, audio.preprocess(waveforms[key][start : start + 16_000], window=16_000), atol=1e-6
    )
    starts.add(start)
  assert len(starts) > 1  # random, not centred


def test_same_seed_same_batches_and_seed_matters(data_dir):
  cfg = make_cfg(data_dir)
  make = lambda seed: take(
      input_pipeline.create_train_iterator(
          cfg, batch_size=4, image_size=IMAGE_SIZE, seed=seed, process_index=0, process_count=1
      ),
      3,
  )
  first = make(7)
  assert_batches_equal(first, make(7))
  assert not np.array_equal(first[0]["waveform"], make(8)[0]["waveform"])
  # seed=None falls back to input.shuffle_seed.
  assert_batches_equal(
      take(
          input_pipeline.create_train_iterator(
              make_cfg(data_dir, shuffle_seed=7),
              batch_size=4,
              image_size=IMAGE_SIZE,
              process_index=0,
              process_count=1,
          ),
          3,
      ),
      first,
  )


def test_state_restores_the_same_sequence(data_dir):
  cfg = make_cfg(data_dir)
  kwargs = dict(batch_size=4, image_size=IMAGE_SIZE, seed=1, process_index=0, process_count=1)
  iterator = input_pipeline.create_train_iterator(cfg, **kwargs)
  take(iterator, 4)
  state = iterator.get_state()
  expected = take(iterator, 5)  # crosses the epoch boundary
  fresh = input_pipeline.create_train_iterator(cfg, **kwargs)
  fresh.set_state(state)
  assert_batches_equal(take(fresh, 5), expected)


def test_orbax_checkpoint_manager_round_trip(data_dir, tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  import grain  # pylint: disable=g-import-not-at-top

  kwargs = dict(batch_size=4, image_size=IMAGE_SIZE, seed=2, process_index=0, process_count=1)
  iterator = input_pipeline.create_train_iterator(make_cfg(data_dir), **kwargs)
  take(iterator, 2)
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    manager.save(2, args=ocp.args.Composite(input=grain.checkpoint.CheckpointSave(iterator)))
    manager.wait_until_finished()
  expected = take(iterator, 3)
  fresh = input_pipeline.create_train_iterator(make_cfg(data_dir), **kwargs)
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    restored = manager.restore(
        manager.latest_step(),
        args=ocp.args.Composite(input=grain.checkpoint.CheckpointRestore(fresh)),
    )
  assert restored["input"] is fresh
  assert_batches_equal(take(fresh, 3), expected)


def test_process_shards_are_disjoint_and_cover(data_dir):
  cfg = make_cfg(data_dir)
  seen = []
  for index in (0, 1):
    batches = list(
        input_pipeline.create_train_iterator(
            cfg,
            batch_size=4,
            image_size=IMAGE_SIZE,
            seed=0,
            process_index=index,
            process_count=2,
            num_epochs=1,
        )
    )
    assert len(batches) == 3
    seen.append({i for b in batches for i in record_ids(b["face"])})
  assert len(seen[0]) == len(seen[1]) == 12 and not seen[0] & seen[1]
  assert seen[0] | seen[1] == {(s, i) for s in range(3) for i in range(RECORDS_PER_SPEAKER)}


def test_eval_iterator_centred_padded_and_sharded(data_dir):
  cfg = make_cfg(data_dir)
  source = tfds.data_source("tiny_pipeline_test_faces", split="test", data_dir=data_dir)
  batches = list(
      input_pipeline.create_eval_iterator(
          cfg, batch_size=4, image_size=IMAGE_SIZE, process_index=0, process_count=1
      )
  )
  assert len(batches) == 3 and all(b["waveform"].shape == (4, 16_000) for b in batches)
  assert batches[-1]["mask"].tolist() == [True, False, False, False]
  rows = [
      (b["waveform"][r], b["face"][r], b["wrong_face"][r], b["speaker"][r])
      for b in batches
      for r in range(4)
      if b["mask"][r]
  ]
  assert len(rows) == 9
  for key, (waveform, face, wrong, speaker) in enumerate(rows):  # record order, centred windows
    record = source[key]
    np.testing.assert_allclose(
        waveform, audio.preprocess(record["waveform"], window=16_000), atol=1e-6
    )
    assert (
        record_ids(face[None]) == [(int(record["speaker"]), int(record["frame"]))]
        and speaker == record["speaker"]
    )
    assert record_ids(wrong[None])[0][0] != speaker
  # Two processes: same number of batches each, disjoint real rows covering the split.
  shards = [
      list(
          input_pipeline.create_eval_iterator(
              cfg, batch_size=2, image_size=IMAGE_SIZE, process_index=i, process_count=2
          )
      )
      for i in (0, 1)
  ]
  assert len(shards[0]) == len(shards[1]) == 3
  ids = [
      [i for b in shard for i, m in zip(record_ids(b["face"]), b["mask"]) if m] for shard in shards
  ]
  assert len(ids[0]) + len(ids[1]) == 9 and set(ids[0]) | set(ids[1]) == {
      (s, i) for s in range(3) for i in range(3)
  }
  limited = list(
      input_pipeline.create_eval_iterator(
          cfg, batch_size=4, image_size=IMAGE_SIZE, process_index=0, process_count=1, max_examples=5
      )
  )
  assert [b["mask"].sum() for b in limited] == [4, 1]


@pytest.mark.slow
def test_workers_path(data_dir):
  batches = take(
      input_pipeline.create_train_iterator(
          make_cfg(data_dir, num_workers=2),
          batch_size=4,
          image_size=IMAGE_SIZE,
          seed=0,
          process_index=0,
          process_count=1,
      ),
      7,
  )
  for batch in batches:
    assert batch["face"].shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3) and batch["waveform"].shape == (
        4,
        16_000,
    )
    assert [s for s, _ in record_ids(batch["face"])] == batch["speaker"].tolist()
    assert all(w[0] != s for w, s in zip(record_ids(batch["wrong_face"]), batch["speaker"]))
  first_epoch = [i for b in batches[:6] for i in record_ids(b["face"])]
  assert sorted(first_epoch) == [(s, i) for s in range(3) for i in range(RECORDS_PER_SPEAKER)]


def test_errors(data_dir, tmp_path):
  kwargs = dict(batch_size=2, image_size=IMAGE_SIZE, process_index=0, process_count=1)
  with pytest.raises(ValueError, match="unknown dataset 'no_such_faces'.*youtubers"):
    datasets.get_dataset_info(make_cfg(data_dir, dataset="no_such_faces"))
  with pytest.raises(ValueError, match="data_dir is not set.*--config.input.data_dir"):
    datasets.get_dataset_info(make_cfg(""))
  # A missing manual dir falls back to the download; offline (as here, and patched so that a machine
  # with internet does not fetch the release) that is an error naming the URL and the manual dir.
  import requests  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  def offline(self, url):
    raise requests.exceptions.ConnectionError(f"Failed to resolve {url}")

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(tfds.download.DownloadManager, "download_and_extract", offline)
    datasets._prepared_builder.cache_clear()
    with pytest.raises(
        ValueError, match="download from https://github.com.*failed.*--config.input.manual_dir"
    ):
      datasets.get_dataset_info(
          make_cfg(str(tmp_path), dataset="youtubers", manual_dir=str(tmp_path / "nope"))
      )
    datasets._prepared_builder.cache_clear()
  with pytest.raises(ValueError, match="1 speaker.*at least 2"):
    input_pipeline.create_train_iterator(make_cfg(data_dir, train_split="solo"), **kwargs)
  with pytest.raises(ValueError, match="8000 samples, shorter than input.audio_samples=16000"):
    input_pipeline.create_eval_iterator(make_cfg(data_dir), split="short", **kwargs)
  with pytest.raises(ValueError, match="no split 'dev'"):
    input_pipeline.create_train_iterator(make_cfg(data_dir, train_split="dev"), **kwargs)
  with pytest.raises(ValueError, match="fewer than the per-process batch_size=32"):
    input_pipeline.create_train_iterator(make_cfg(data_dir), **{**kwargs, "batch_size": 32})
  with pytest.raises(ValueError, match="batch_size"):
    input_pipeline.create_train_iterator(make_cfg(data_dir), **{**kwargs, "batch_size": 0})
  with pytest.raises(ValueError, match="process_index"):
    input_pipeline.create_train_iterator(make_cfg(data_dir), **{**kwargs, "process_index": 2})
  with pytest.raises(ValueError, match="num_workers"):
    input_pipeline.create_train_iterator(make_cfg(data_dir, num_workers=-1), **kwargs)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_decode_face_resizes_to_minus_one_one(fmt):
  import io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top

  buffer = io.BytesIO()
  Image.fromarray(np.broadcast_to(np.uint8([200, 40, 90]), (221, 203, 3)).copy()).save(
      buffer, format=fmt
  )
  face = input_pipeline.decode_face(buffer.getvalue(), 64)
  assert face.shape == (64, 64, 3) and face.dtype == np.float32
  np.testing.assert_allclose(
      face.reshape(-1, 3).mean(0), np.array([200, 40, 90]) / 127.5 - 1, atol=0.03
  )
  grey = input_pipeline.decode_face(
      np.zeros((10, 30, 3), np.uint8), 8
  )  # arrays too; upsampling works
  assert grey.shape == (8, 8, 3) and np.all(grey == -1.0)
