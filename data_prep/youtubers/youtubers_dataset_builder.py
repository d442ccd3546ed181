"""TFDS builder `youtubers`: the Wav2Pix authors' YouTubers release (speech/face pairs).

Layout read (the authors' own, from the manual dir or their GitHub release):

    <split>/<speaker>/cropped_face_frame_<N>.png   face crop; holds JPEG bytes, channels in BGR
                                                   order
    <split>/<speaker>/preprocessed_frame_<N>.wav   1 s of 16 kHz mono int16 speech

Build, with the shared copy as manual dir:

    PYTHONPATH=. .venv/bin/tfds build data_prep/youtubers \
        --data_dir ~/tensorflow_datasets --manual_dir ../shared/youtubers
"""

import collections
import dataclasses
import io
import logging
import re
from typing import Iterator, Optional

import numpy as np
from etils import epath
from PIL import Image
import tensorflow_datasets as tfds

from data_prep.features import SAMPLE_RATE, record_features

# Each face of the release appears under this many consecutive N (the authors' x5 audio
# augmentation): a validation boundary must fall on a multiple of it.
FRAMES_PER_FACE = 5
# Share of each speaker's faces (the last ones, by N) carved out of train/ as "validation".
VALIDATION_FRACTION = 0.1
JPEG_QUALITY = 95
RELEASE_URL = "https://github.com/miqueltubau/Wav2Pix/archive/refs/heads/master.zip"

_FACE_RE = re.compile(r"^cropped_face_frame_(\d+)\.png$")
_WAV_RE = re.compile(r"^preprocessed_frame_(\d+)\.wav$")

_DESCRIPTION = f"""
The YouTubers dataset of Wav2Pix (Duarte et al., ICASSP 2019): frontal face crops from
YouTube videos of expressive speakers, each paired with 1 s of the speech around that frame.
Only two of the paper's ten speakers were published (`jaimealtozano`, `javiermuniz`).

Each record pairs `cropped_face_frame_N` with `preprocessed_frame_N` (same N). The release's
".png" faces hold JPEG bytes in BGR order; they are stored here in true RGB, re-encoded as
JPEG quality {JPEG_QUALITY}. Waveforms are 16 kHz mono int16 as released (a wav in another
format: 8/24-bit, float, another rate, stereo, is converted: scaled, downmixed, resampled). \
Speaker labels are the
sorted speaker folder names found. `clip_id` is `<speaker>/face<N // {FRAMES_PER_FACE}>`: the
{FRAMES_PER_FACE} consecutive N that share one face (one moment of one video); `frame` is N.

Splits: "train" and "validation" are carved from the release's train/ folder per speaker by
contiguous blocks of N, never at random: the last {VALIDATION_FRACTION:.0%} of each speaker's faces
(sorted by N, rounded, at least one face when the speaker has two or more) form "validation",
and the cut falls between faces, so a face never appears in both. "test" is the release's own
test/ folder, when present. Unpaired and unreadable files are skipped and counted in the log.
"""

_CITATION = """
@inproceedings{duarte2019wav2pix,
  title={Wav2Pix: Speech-conditioned Face Generation using Generative Adversarial Networks},
  author={Duarte, Amanda and Roldan, Francisco and Tubau, Miquel and Escur, Janna and
          Pascual, Santiago and Salvador, Amaia and Mohedano, Eva and McGuinness, Kevin and
          Torres, Jordi and Giro-i-Nieto, Xavier},
  booktitle={IEEE International Conference on Acoustics, Speech and Signal Processing (ICASSP)},
  year={2019}
}
"""


@dataclasses.dataclass(frozen=True)
class Pair:
  """One speech/face pair of the release."""

  speaker: str
  frame: int
  face_path: epath.Path
  wav_path: epath.Path


def find_pairs(split_dir: epath.Path) -> tuple[list[Pair], collections.Counter]:
  """Pairs `cropped_face_frame_N.png` with `preprocessed_frame_N.wav` per speaker folder.

  Returns the pairs sorted by (speaker, N) and a Counter of the files left out.
  """
  pairs, skipped = [], collections.Counter()
  for speaker_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
    faces, wavs = {}, {}
    for path in speaker_dir.iterdir():
      if m := _FACE_RE.match(path.name):
        faces[int(m.group(1))] = path
      elif m := _WAV_RE.match(path.name):
        wavs[int(m.group(1))] = path
      else:
        skipped["unrecognised_file"] += 1
    skipped["face_without_wav"] += len(faces.keys() - wavs.keys())
    skipped["wav_without_face"] += len(wavs.keys() - faces.keys())
    for n in sorted(faces.keys() & wavs.keys()):
      pairs.append(Pair(speaker_dir.name, n, faces[n], wavs[n]))
  return pairs, skipped


def carve_validation(
    pairs: list[Pair], fraction: float = VALIDATION_FRACTION
) -> tuple[list[Pair], list[Pair]]:
  """Splits pairs into (train, validation): per speaker, the last `fraction` of faces by N."""
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
  by_speaker = collections.defaultdict(list)
  for pair in pairs:
    by_speaker[pair.speaker].append(pair)
  train, validation = [], []
  for speaker_pairs in by_speaker.values():
    faces = sorted({p.frame // FRAMES_PER_FACE for p in speaker_pairs})
    num_val = round(fraction * len(faces))
    if fraction > 0 and len(faces) >= 2:
      num_val = min(max(num_val, 1), len(faces) - 1)
    first_val_face = faces[len(faces) - num_val] if num_val else None
    for pair in speaker_pairs:
      is_val = first_val_face is not None and pair.frame // FRAMES_PER_FACE >= first_val_face
      (validation if is_val else train).append(pair)
  return train, validation


def load_face_rgb_jpeg(path: epath.Path) -> bytes:
  """Decodes a release face (JPEG bytes, BGR order), swaps to true RGB, re-encodes as JPEG."""
  with Image.open(io.BytesIO(path.read_bytes())) as image:
    bgr = np.asarray(image.convert("RGB"))
  if bgr.ndim != 3 or min(bgr.shape[:2]) < 1:
    raise ValueError(f"{path}: not a colour image, shape {bgr.shape}")
  buffer = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(bgr[..., ::-1])).save(
      buffer, format="JPEG", quality=JPEG_QUALITY
  )
  return buffer.getvalue()


def load_waveform_int16(path: epath.Path) -> np.ndarray:
  """Reads a release wav as 16 kHz mono int16.

  Converts, downmixes and resamples if a file differs.
  """
  import soundfile  # pylint: disable=g-import-not-at-top

  with path.open("rb") as f:
    # Read as float, then scale: libsndfile reads a float WAV as int16 WITHOUT scaling (all ~0).
    samples, rate = soundfile.read(f, dtype="float64", always_2d=True)
  if samples.size == 0:
    raise ValueError(f"{path}: empty audio")
  mono = samples.mean(axis=1) * 32768.0
  if rate != SAMPLE_RATE:
    import math  # pylint: disable=g-import-not-at-top
    from scipy import signal  # pylint: disable=g-import-not-at-top

    g = math.gcd(SAMPLE_RATE, rate)
    mono = signal.resample_poly(mono, SAMPLE_RATE // g, rate // g)
  return np.clip(np.round(mono), -32768, 32767).astype(np.int16)


class Youtubers(tfds.core.GeneratorBasedBuilder):
  """The authors' YouTubers release as speech/face records (see DESIGN.md, record format)."""

  RELEASE_URL = RELEASE_URL  # where the release is downloaded from without a manual dir
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release: true-RGB JPEG faces, per-speaker block validation split.",
      "1.1.0": "A split with no pairs (e.g. validation when every speaker has a single face) is "
      "left out instead of failing the build; rebuild for the authors' full release "
      "(all 5 speech windows of every face).",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Put the authors' release (GitHub miqueltubau/Wav2Pix, folder dataset/) in the manual dir,
  keeping its layout: `<manual_dir>/train/<speaker>/cropped_face_frame_<N>.png` and
  `preprocessed_frame_<N>.wav`, and optionally `<manual_dir>/test/<speaker>/...`.
  In this project a copy of train/ lives in ../shared/youtubers: pass
  `--manual_dir ../shared/youtubers` to `tfds build` (or
  `download_config=tfds.download.DownloadConfig(manual_dir=...)`). Without a manual dir the
  builder downloads the release from GitHub instead.
  """

  def __init__(self, *, file_format=None, **kwargs):
    # ArrayRecord by default: random access through tfds.data_source, no TensorFlow to read.
    super().__init__(file_format=file_format or "array_record", **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        # Speaker names come from the folders found, set in _split_generators.
        features=record_features(None, face_format="jpeg"),
        supervised_keys=("waveform", "face"),
        homepage="https://imatge-upc.github.io/wav2pix/",
        citation=_CITATION,
        license="GPL-3.0 (the authors' release)",
    )

  def _release_root(self, dl_manager: tfds.download.DownloadManager) -> epath.Path:
    """The folder holding train/ (and maybe test/): the manual dir, else the GitHub release."""
    manual = getattr(dl_manager, "_manual_dir", None)
    if manual is not None and (epath.Path(manual) / "train").is_dir():
      return epath.Path(dl_manager.manual_dir)
    if manual is not None and epath.Path(manual).exists() and any(epath.Path(manual).iterdir()):
      raise FileNotFoundError(
          f"manual dir {manual} has no train/ folder.\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
      )
    # Never used in tests: needs internet.
    extracted = epath.Path(dl_manager.download_and_extract(RELEASE_URL))
    candidates = sorted(extracted.glob("*/dataset")) + sorted(extracted.glob("dataset"))
    if not candidates:
      raise FileNotFoundError(f"no dataset/ folder in the downloaded release at {extracted}")
    return candidates[0]

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = self._release_root(dl_manager)
    train_pairs, train_skipped = find_pairs(root / "train")
    test_pairs, test_skipped = ([], collections.Counter())
    if (root / "test").is_dir():
      test_pairs, test_skipped = find_pairs(root / "test")
    speakers = sorted({p.speaker for p in train_pairs + test_pairs})
    if not speakers:
      raise FileNotFoundError(
          f"no speech/face pairs under {root}/train.\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
      )
    self.info.features["speaker"].names = speakers
    train, validation = carve_validation(train_pairs)
    logging.info(
        "youtubers: %d speakers %s; pairs: train %d, validation %d, test %d; files left out: "
        "train/ %s, test/ %s",
        len(speakers),
        speakers,
        len(train),
        len(validation),
        len(test_pairs),
        dict(train_skipped),
        dict(test_skipped),
    )
    splits = {}
    for split, split_pairs in (("train", train), ("validation", validation), ("test", test_pairs)):
      if split_pairs:  # TFDS refuses a split with no examples
        splits[split] = self._generate_examples(split_pairs, split)
      elif split != "test":
        logging.warning(
            "youtubers: no pairs for split %r (each speaker needs 2+ faces for a "
            "validation block); the split is left out",
            split,
        )
    return splits

  def _generate_examples(self, pairs: list[Pair], split: str) -> Iterator[tuple[str, dict]]:
    unreadable = 0
    for pair in pairs:
      example = _load_example(pair)
      if example is None:
        unreadable += 1
        continue
      yield f"{pair.speaker}/{pair.frame}", example
    logging.info(
        "youtubers %s: %d records, %d unreadable pairs skipped",
        split,
        len(pairs) - unreadable,
        unreadable,
    )


def _load_example(pair: Pair) -> Optional[dict]:
  """The record of one pair, or None (logged) when either file cannot be read."""
  try:
    face = load_face_rgb_jpeg(pair.face_path)
    waveform = load_waveform_int16(pair.wav_path)
  except Exception as e:  # pylint: disable=broad-except
    # One bad file of a hand-made release must not abort a build: skip and count it.
    logging.warning("youtubers: skipping %s/%d: %s", pair.speaker, pair.frame, e)
    return None
  return {
      "waveform": waveform,
      "face": face,
      "speaker": pair.speaker,
      "speaker_name": pair.speaker,
      "clip_id": f"{pair.speaker}/face{pair.frame // FRAMES_PER_FACE}",
      "frame": pair.frame,
  }
