"""From extracted videos to records: the validation carve, the record features, the build report.

Shared by the single-process build and the Beam build (`beam_build.py`), so both write the same
records and the same report by construction. No TFDS and no Beam here: Beam workers import this
module by name, and it must not register the builder a second time.
"""

import collections
import dataclasses
from typing import Iterable, Protocol, Sequence, TypeVar

import numpy as np

from data_prep.videos import extract


class _Carvable(Protocol):
  speaker: str
  clip_id: str
  frame_ms: int
  window_ms: tuple[int, int]


_T = TypeVar("_T", bound=_Carvable)


@dataclasses.dataclass(frozen=True)
class RecordMeta:
  """What the validation carve needs to know of a kept record (its data stays elsewhere)."""

  speaker: str
  clip_id: str
  frame_ms: int
  window_ms: tuple[int, int]

  @property
  def key(self) -> str:
    """The record's TFDS key (unique per build: one frame time per video)."""
    return record_key(self.clip_id, self.frame_ms)


def record_key(clip_id: str, frame_ms: int) -> str:
  """TFDS example key of the record of `clip_id` at `frame_ms`."""
  return f"{clip_id}@{frame_ms}"


def carve_speaker(items: Sequence[_T], fraction: float) -> tuple[list[_T], list[_T], int]:
  """(train, validation, dropped) of ONE speaker's records: the last `fraction` in time order.

  Train records of the first validation record's video whose speech window overlaps its window
  are dropped (returned as a count) so the two splits never share speech.
  """
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
  ordered = sorted(items, key=lambda it: (it.clip_id, it.frame_ms))
  num_val = round(fraction * len(ordered))
  if fraction > 0 and len(ordered) >= 2:
    num_val = min(max(num_val, 1), len(ordered) - 1)
  cut = len(ordered) - num_val
  first_val = ordered[cut] if num_val else None
  train, dropped = [], 0
  for item in ordered[:cut]:
    if (
        first_val is not None
        and item.clip_id == first_val.clip_id
        and item.window_ms[1] > first_val.window_ms[0]
    ):
      dropped += 1
    else:
      train.append(item)
  return train, ordered[cut:], dropped


def group_by_speaker(items: Iterable[_T]) -> dict[str, list[_T]]:
  """{speaker: items} with speakers sorted."""
  by_speaker = collections.defaultdict(list)
  for item in items:
    by_speaker[item.speaker].append(item)
  return {speaker: by_speaker[speaker] for speaker in sorted(by_speaker)}


def example(
    speaker: str,
    clip_id: str,
    frame_ms: int,
    face_box: tuple[int, int, int, int],
    waveform: np.ndarray,
    face_jpeg: bytes,
) -> tuple[str, dict]:
  """(key, features) of one record, as the builder's FeaturesDict encodes it."""
  return record_key(clip_id, frame_ms), {
      "waveform": waveform,
      "face": face_jpeg,
      "speaker": speaker,
      "speaker_name": speaker,
      "clip_id": clip_id,
      "frame": frame_ms,
      "face_box": np.asarray(face_box, np.int32),
  }


@dataclasses.dataclass(frozen=True)
class VideoSummary:
  """What one video added to the build report (one per video, whatever happened to it)."""

  # Position in the build's video order (speakers sorted, then paths): orders failed_files.
  number: int
  speaker: str
  clip_id: str
  failure: str | None
  error: str | None
  frames_sampled: int
  dropped: tuple[tuple[str, int], ...]
  records: int

  @classmethod
  def of(
      cls, number: int, speaker: str, clip_id: str, result: extract.VideoResult
  ) -> "VideoSummary":
    """The summary of `extract_video`'s result."""
    return cls(
        number=number,
        speaker=speaker,
        clip_id=clip_id,
        failure=result.failure,
        error=result.error,
        frames_sampled=result.frames_sampled,
        dropped=tuple(sorted(result.dropped.items())),
        records=len(result.records),
    )


@dataclasses.dataclass(frozen=True)
class SpeakerSplit:
  """What the validation carve did with one speaker's records."""

  speaker: str
  train: int
  validation: int
  dropped: int  # train records dropped for sharing speech with validation ("split_gap")


class ReportCounts:
  """The build report's counts, added up from VideoSummary and SpeakerSplit items in any order.

  Mergeable, so a Beam CombineFn can sum partial counts from many workers.
  """

  def __init__(self):
    self.videos_read = 0
    self.videos_failed = 0
    self.failed_by_reason = collections.Counter()
    self.failed_files: dict[int, tuple[str, str]] = {}  # number -> (clip_id, message)
    self.frames_sampled = 0
    self.dropped = collections.Counter()
    self.train = collections.Counter()  # speaker -> records
    self.validation = collections.Counter()  # speaker -> records

  def add(self, item: VideoSummary | SpeakerSplit) -> None:
    """Counts one video's summary or one speaker's carve."""
    if isinstance(item, SpeakerSplit):
      self.train[item.speaker] += item.train
      self.validation[item.speaker] += item.validation
      self.dropped["split_gap"] += item.dropped
    elif item.failure:
      self.videos_failed += 1
      self.failed_by_reason[item.failure] += 1
      self.failed_files[item.number] = (item.clip_id, f"{item.failure}: {item.error}")
    else:
      self.videos_read += 1
      self.frames_sampled += item.frames_sampled
      self.dropped.update(dict(item.dropped))

  def merge(self, other: "ReportCounts") -> "ReportCounts":
    """Adds `other`'s counts into these; returns self."""
    self.videos_read += other.videos_read
    self.videos_failed += other.videos_failed
    self.failed_by_reason.update(other.failed_by_reason)
    self.failed_files.update(other.failed_files)
    self.frames_sampled += other.frames_sampled
    self.dropped.update(other.dropped)
    self.train.update(other.train)
    self.validation.update(other.validation)
    return self

  def report(
      self,
      *,
      videos_dir: str,
      options: extract.ExtractOptions,
      validation_fraction: float,
      videos_per_speaker: dict[str, int],
      seconds: float,
  ) -> dict:
    """The build report (build_report.json): the same keys, order and values from either build."""
    train, validation = sum(self.train.values()), sum(self.validation.values())
    return {
        "videos_dir": videos_dir,
        "options": dataclasses.asdict(options),
        "validation_fraction": validation_fraction,
        "speakers": sorted(videos_per_speaker),
        "videos_found": sum(videos_per_speaker.values()),
        "videos_read": self.videos_read,
        "videos_failed": self.videos_failed,
        "failed_by_reason": {r: self.failed_by_reason[r] for r in extract.FILE_FAIL_REASONS},
        "failed_files": dict(self.failed_files[n] for n in sorted(self.failed_files)),
        "frames_sampled": self.frames_sampled,
        "faces_kept": train + validation,
        "dropped": {r: self.dropped[r] for r in (*extract.FRAME_DROP_REASONS, "split_gap")},
        "records": {"train": train, "validation": validation},
        "per_speaker": {
            s: {
                "videos": videos_per_speaker[s],
                "train": self.train[s],
                "validation": self.validation[s],
            }
            for s in videos_per_speaker
        },
        "seconds": round(seconds, 2),
    }
