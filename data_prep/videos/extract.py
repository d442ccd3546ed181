"""Speech/face pairs from one video file: PyAV decoding, dlib face detection, speech windows.

Library code with no TFDS dependency, so a notebook can run it on a single file. The builder
(`videos_dataset_builder.py`) walks a folder of videos and calls `extract_video` on each.
"""

import collections
import dataclasses
import io
import pathlib
from typing import Iterator

import av
import dlib
import numpy as np
from PIL import Image

SAMPLE_RATE = 16_000
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov")

# Why a sampled frame or a whole file gives no record; the keys of the build report.
FRAME_DROP_REASONS = ("no_face", "face_too_small", "too_short_audio", "silent_audio")
FILE_FAIL_REASONS = ("unreadable", "no_audio", "no_video")


@dataclasses.dataclass(frozen=True)
class ExtractOptions:
  """How faces and speech are cut out of a video (the builder's knobs)."""

  # Frames sampled per second of video (the paper: 1).
  frames_per_second: float = 1.0
  # Extra border on each side of the detected face box, as a fraction of the box side.
  face_margin: float = 0.25
  # Smallest accepted detected face box side, in pixels of the original frame.
  min_face_size: int = 64
  # Side of the stored square face in pixels (128 serves both the 64 and 128 models).
  face_size: int = 128
  # Seconds of speech kept around each frame: frame time +- half of it, clipped to the audio.
  speech_seconds: float = 4.0
  # Windows shorter than this (near the ends of short videos) are dropped.
  min_speech_seconds: float = 1.0
  # Windows whose RMS (in [0, 1] full scale) is below this count as silent and are dropped.
  silence_rms: float = 0.003
  # Frames are downscaled so that their longer side is at most this before detection (speed).
  detect_max_side: int = 640
  # dlib: times the image is upsampled before detection (finds smaller faces, slower).
  detector_upsample: int = 0
  # dlib: detection score threshold; higher keeps only confident frontal faces.
  detector_threshold: float = 0.0
  # JPEG quality of the stored face.
  jpeg_quality: int = 95

  def __post_init__(self):
    checks = {  # name: (valid, what is expected)
        "frames_per_second": (self.frames_per_second > 0, "> 0"),
        "face_margin": (self.face_margin >= 0, ">= 0"),
        "min_face_size": (self.min_face_size >= 0, ">= 0"),
        "face_size": (self.face_size > 0, "> 0"),
        "speech_seconds": (self.speech_seconds > 0, "> 0"),
        "min_speech_seconds": (
            0 < self.min_speech_seconds <= self.speech_seconds,
            "in (0, speech_seconds]",
        ),
        "silence_rms": (self.silence_rms >= 0, ">= 0"),
        "detect_max_side": (self.detect_max_side >= 80, ">= 80 (dlib finds faces of 80 px and up)"),
        "detector_upsample": (self.detector_upsample >= 0, ">= 0"),
        "jpeg_quality": (1 <= self.jpeg_quality <= 100, "in [1, 100]"),
    }
    bad = [
        f"{name}={getattr(self, name)!r} (expected {expected})"
        for name, (ok, expected) in checks.items()
        if not ok
    ]
    if bad:
      raise ValueError(f"invalid video extraction options: {'; '.join(bad)}")


@dataclasses.dataclass
class Record:
  """One speech/face pair; `window_ms` is the speech span [start, end) in video time."""

  waveform: np.ndarray  # int16, 16 kHz mono
  face_jpeg: bytes
  face_box: tuple[int, int, int, int]  # the square crop (left, top, right, bottom) in frame pixels
  frame_ms: int
  window_ms: tuple[int, int]


@dataclasses.dataclass
class VideoResult:
  """What one file gave: its records, the frame drop counts, or why the whole file failed."""

  records: list[Record] = dataclasses.field(default_factory=list)
  frames_sampled: int = 0
  dropped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  failure: str | None = None  # one of FILE_FAIL_REASONS
  error: str | None = None  # the message behind the failure, for the report


class FileFailure(Exception):
  """A file that yields nothing; `reason` is one of FILE_FAIL_REASONS."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


def find_videos(root: pathlib.Path) -> dict[str, list[pathlib.Path]]:
  """{speaker: sorted video paths} for every non-hidden subfolder of `root` holding videos."""
  root = pathlib.Path(root)
  if not root.is_dir():
    raise FileNotFoundError(f"videos folder not found: {root} (expected one subfolder per speaker)")
  speakers = {}
  for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
    # A dangling symlink named like a video is listed too, so the build counts it as unreadable.
    videos = sorted(
        p
        for p in folder.rglob("*")
        if (p.is_file() or (p.is_symlink() and not p.exists()))
        and p.suffix.lower() in VIDEO_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if videos:
      speakers[folder.name] = videos
  if not speakers:
    raise ValueError(
        f"no videos found under {root}: expected <speaker>/<video> with an extension "
        f"in {VIDEO_EXTENSIONS} (case-insensitive)"
    )
  return speakers


def face_detector() -> dlib.fhog_object_detector:
  """dlib's HOG frontal face detector (one per process; it is not cheap to build)."""
  return dlib.get_frontal_face_detector()


def detect_face(
    detector, image: np.ndarray, options: ExtractOptions
) -> tuple[tuple[int, int, int, int], float] | None:
  """Most confident frontal face, or None.

  As ((left, top, right, bottom) in `image` pixels, score).
  """
  height, width = image.shape[:2]
  scale = min(1.0, options.detect_max_side / max(height, width))
  small = image
  if scale < 1.0:
    small = np.asarray(
        Image.fromarray(image).resize(
            (max(1, round(width * scale)), max(1, round(height * scale))), Image.BILINEAR
        )
    )
  rects, scores, _ = detector.run(small, options.detector_upsample, options.detector_threshold)
  if not rects:
    return None
  best = int(np.argmax(scores))
  rect = rects[best]
  box = tuple(int(round(v / scale)) for v in (rect.left(), rect.top(), rect.right(), rect.bottom()))
  return box, float(scores[best])


def square_crop_box(
    box: tuple[int, int, int, int], margin: float, width: int, height: int
) -> tuple[int, int, int, int]:
  """Square (left, top, right, bottom) around `box` plus margin, shifted/shrunk to fit the image."""
  left, top, right, bottom = box
  side = max(right - left, bottom - top) * (1.0 + 2.0 * margin)
  side = int(round(min(side, width, height)))
  centre_x, centre_y = (left + right) / 2.0, (top + bottom) / 2.0
  x0 = int(round(min(max(centre_x - side / 2.0, 0), width - side)))
  y0 = int(round(min(max(centre_y - side / 2.0, 0), height - side)))
  return x0, y0, x0 + side, y0 + side


def encode_face(
    image: np.ndarray, crop: tuple[int, int, int, int], options: ExtractOptions
) -> bytes:
  """JPEG bytes of the crop resized to options.face_size (true RGB)."""
  face = (
      Image.fromarray(image)
      .crop(crop)
      .resize((options.face_size, options.face_size), Image.LANCZOS)
  )
  buffer = io.BytesIO()
  face.save(buffer, format="JPEG", quality=options.jpeg_quality)
  return buffer.getvalue()


def speech_window(
    audio: np.ndarray, audio_start_s: float, frame_s: float, options: ExtractOptions
) -> tuple[np.ndarray, tuple[int, int]]:
  """Samples of `audio` (starting at `audio_start_s`) within frame_s +- speech_seconds / 2."""
  half = options.speech_seconds / 2.0
  first = int(round((frame_s - half - audio_start_s) * SAMPLE_RATE))
  last = int(round((frame_s + half - audio_start_s) * SAMPLE_RATE))
  first, last = max(first, 0), min(last, len(audio))
  start_ms = int(round((audio_start_s + first / SAMPLE_RATE) * 1000))
  end_ms = int(round((audio_start_s + max(last, first) / SAMPLE_RATE) * 1000))
  return audio[first : max(last, first)], (start_ms, end_ms)


def _rotate_for_display(image: np.ndarray, frame: av.VideoFrame) -> np.ndarray:
  """Apply the stream's display rotation (phone videos), so faces are upright for the detector."""
  try:
    quarter_turns = int(round((frame.rotation or 0) / 90.0)) % 4
  except (AttributeError, ValueError):
    quarter_turns = 0
  return np.ascontiguousarray(np.rot90(image, quarter_turns)) if quarter_turns else image


def _open(path: pathlib.Path):
  """av.open, ignoring undecodable metadata where PyAV has the option (< 19; 19 dropped it)."""
  try:
    return av.open(str(path), metadata_errors="ignore")
  except TypeError:  # PyAV >= 19: no metadata_errors argument
    return av.open(str(path))


def _decode(path: pathlib.Path, options: ExtractOptions, detector) -> Iterator[tuple[str, object]]:
  """One pass over the file: yields ("face", (frame_s, (jpeg, box) | drop reason)) and finally
  ("audio", (int16 16 kHz mono samples, start time in s))."""
  try:
    container = _open(path)
  except (av.FFmpegError, OSError, UnicodeError) as e:
    raise FileFailure("unreadable", f"{type(e).__name__}: {e}") from e
  with container:
    if not container.streams.video:
      raise FileFailure("no_video", "no video stream")
    if not container.streams.audio:
      raise FileFailure("no_audio", "no audio stream")
    video, audio = container.streams.video[0], container.streams.audio[0]
    video.thread_type = "AUTO"
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    chunks, audio_start_s = [], None
    video_start_s, next_sample_s = None, 0.0
    try:
      for packet in container.demux(video, audio):
        for frame in packet.decode():
          if frame.time is None:
            continue
          if packet.stream.type == "audio":
            if audio_start_s is None:
              audio_start_s = float(frame.time)
            for out in resampler.resample(frame):
              chunks.append(out.to_ndarray().reshape(-1))
            continue
          if video_start_s is None:
            video_start_s = float(frame.time)
          if float(frame.time) - video_start_s + 1e-6 < next_sample_s:
            continue
          # Sample the first frame at or after each multiple of 1 / fps.
          next_sample_s = (
              np.floor((float(frame.time) - video_start_s) * options.frames_per_second + 1e-6) + 1
          ) / options.frames_per_second
          image = _rotate_for_display(frame.to_ndarray(format="rgb24"), frame)
          yield "face", (float(frame.time), _face_or_reason(detector, image, options))
      for out in resampler.resample(None):
        chunks.append(out.to_ndarray().reshape(-1))
    except av.FFmpegError as e:
      raise FileFailure("unreadable", f"{type(e).__name__}: {e}") from e
    if video_start_s is None:
      raise FileFailure("unreadable", "no decodable video frame")
    samples = np.concatenate(chunks).astype(np.int16) if chunks else np.zeros((0,), np.int16)
    if not len(samples):
      raise FileFailure("no_audio", "audio stream holds no decodable samples")
    yield "audio", (samples, audio_start_s)


def _face_or_reason(
    detector, image: np.ndarray, options: ExtractOptions
) -> tuple[bytes, tuple] | str:
  found = detect_face(detector, image, options)
  if found is None:
    return "no_face"
  box, _ = found
  if min(box[2] - box[0], box[3] - box[1]) < options.min_face_size:
    return "face_too_small"
  height, width = image.shape[:2]
  crop = square_crop_box(box, options.face_margin, width, height)
  return encode_face(image, crop, options), crop


def extract_video(path: pathlib.Path, options: ExtractOptions, detector=None) -> VideoResult:
  """All speech/face records of one video; never raises for a bad file (see `failure`)."""
  detector = detector or face_detector()
  result = VideoResult()
  faces = []
  try:
    for kind, payload in _decode(pathlib.Path(path), options, detector):
      if kind == "face":
        faces.append(payload)
      else:
        audio, audio_start_s = payload
  except FileFailure as e:
    return VideoResult(failure=e.reason, error=str(e))
  except Exception as e:  # noqa: BLE001 - one bad file must never abort a build
    return VideoResult(failure="unreadable", error=f"{type(e).__name__}: {e}")
  result.frames_sampled = len(faces)
  min_samples = int(round(options.min_speech_seconds * SAMPLE_RATE))
  for frame_s, face in faces:
    if isinstance(face, str):
      result.dropped[face] += 1
      continue
    waveform, window_ms = speech_window(audio, audio_start_s, frame_s, options)
    if len(waveform) < min_samples:
      result.dropped["too_short_audio"] += 1
      continue
    rms = float(np.sqrt(np.mean(np.square(waveform.astype(np.float64) / 32768.0))))
    if rms < options.silence_rms:
      result.dropped["silent_audio"] += 1
      continue
    result.records.append(
        Record(
            waveform=waveform,
            face_jpeg=face[0],
            face_box=face[1],
            frame_ms=int(round(frame_s * 1000)),
            window_ms=window_ms,
        )
    )
  return result
