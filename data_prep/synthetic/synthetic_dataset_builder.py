"""TFDS builder `synthetic_talking_faces`: the embedded default dataset, generated from a seed.

Small (about 14 MB), built in seconds, no downloads: a demo trains on it on any laptop CPU.
It is a real learning problem in miniature: each synthetic speaker has a voice of its own
(pitch, formants, spectral tilt, breathiness, speaking rate) and a face of its own (head shape,
skin, hair, eyes, features), and each clip's expression is carried by both voice and face:

- "loudness" in [0, 1] (vocal effort) -> the mouth opening. In the audio it sets the level, the
  phonation (quiet is breathy: weak voicing, much aspiration noise; loud is fully voiced), the
  spectral tilt (louder is brighter) and the level against a fixed noise floor; peak
  normalisation (the model's preprocessing) removes the level, the other three survive it.
- "pitch_shift" in semitones, in [-1, 1] -> the eyebrow height (raised for a higher pitch).

Build: `PYTHONPATH=. .venv/bin/tfds build data_prep/synthetic --data_dir ~/tensorflow_datasets`.
"""

import dataclasses
import io
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw
import tensorflow_datasets as tfds

from data_prep.features import SAMPLE_RATE, record_features

SEED = 20190512
SPEAKERS = tuple(f"spk{i:02d}" for i in range(8))
# Speakers never in train/validation/test: all their clips form "test_unseen".
UNSEEN_SPEAKERS = ("spk06", "spk07")
CLIPS_PER_SPEAKER = 40
# Clip indices of each seen speaker per split (contiguous blocks; clips are independent draws).
SEEN_SPLITS = {"train": range(0, 28), "validation": range(28, 34), "test": range(34, 40)}
# 1.25 s clips: a training window of 16000 samples (1 s) or less can be cropped at random.
CLIP_SECONDS = 1.25
CLIP_SAMPLES = int(CLIP_SECONDS * SAMPLE_RATE)
IMAGE_SIZE = 64
PITCH_SHIFT_RANGE = (-1.0, 1.0)  # semitones around the speaker's own pitch
_CANVAS = 4 * IMAGE_SIZE  # faces are drawn 4x larger, then downsampled (anti-aliasing)
# The face layout at IMAGE_SIZE px, the same for every speaker (see draw_face), for pixel-space
# metrics of generated faces (dlib's detector does not see these cartoon faces):
# (top, bottom, left, right) pixel boxes, bottom/right exclusive.
FACE_BOX = (12, 52, 18, 46)  # inside every head: skin, eyes, nose, mouth; almost no background
MOUTH_BOX = (
    34,
    50,
    29,
    35,
)  # holds every speaker's dark mouth interior at any opening, below the nose
# Two narrow column bands, one over each eyebrow's middle for every speaker's eye spacing, from
# above the highest eyebrow to the top of the eyes: the eyebrow is the darkest thing in each column
# there.
BROW_BOXES = ((15, 26, 19, 22), (15, 26, 42, 45))

# Vowel formants (F1, F2, F3) in Hz for an adult male tract; speakers scale them.
_VOWELS = np.array(
    [[730, 1090, 2440], [530, 1840, 2480], [270, 2290, 3010], [570, 840, 2410], [300, 870, 2240]],
    dtype=np.float64,
)
_BANDWIDTHS = np.array([80.0, 100.0, 130.0])
_MAX_HARMONIC_HZ = 6000.0
_NOISE_FLOOR_RMS = 0.002  # fixed absolute background noise (about -54 dBFS)
_CONTROL_HOP = 80  # samples between updates of the harmonic amplitudes (5 ms)
_EFFORT_BREATH = 0.3  # aspiration noise added at loudness 0 (none at 1), relative to full voicing
_EFFORT_VOICING = 0.5  # voicing removed at loudness 0 (none at 1)

# Distinct palettes, dealt out to the speakers by a seeded permutation.
_SKINS = [
    (255, 224, 196),
    (241, 194, 160),
    (224, 172, 130),
    (198, 134, 96),
    (160, 100, 70),
    (120, 80, 56),
    (250, 205, 180),
    (214, 160, 120),
]
_HAIRS = [
    (30, 25, 20),
    (95, 60, 30),
    (200, 160, 80),
    (160, 50, 30),
    (120, 120, 125),
    (60, 40, 30),
    (230, 210, 150),
    (20, 20, 60),
]
_EYES = [
    (60, 90, 160),
    (90, 60, 30),
    (60, 130, 70),
    (120, 120, 120),
    (40, 40, 40),
    (50, 140, 160),
    (140, 90, 40),
    (100, 70, 140),
]
_BACKGROUNDS = [
    (200, 220, 240),
    (230, 230, 200),
    (210, 240, 210),
    (240, 210, 210),
    (220, 210, 240),
    (190, 190, 190),
    (240, 225, 190),
    (200, 235, 235),
]
_SHIRTS = [
    (40, 70, 140),
    (150, 40, 40),
    (40, 120, 60),
    (80, 80, 80),
    (200, 150, 40),
    (110, 50, 120),
    (30, 30, 30),
    (230, 230, 230),
]
_HAIR_STYLES = ["short", "long", "bald", "short", "long", "curly", "short", "long"]

_DESCRIPTION = f"""
Synthetic talking faces: {len(SPEAKERS)} synthetic speakers, {CLIPS_PER_SPEAKER} clips each of
{CLIP_SECONDS} s of 16 kHz int16 speech-like sound (harmonics of a glottal source with the
speaker's pitch and spectral tilt, shaped by formant resonances of random vowels, syllable
envelopes at the speaker's speaking rate, breath and background noise; quiet clips are breathy,
loud ones fully voiced), each paired with a
{IMAGE_SIZE}x{IMAGE_SIZE} PNG face of that speaker. The clip's expression is in both: "loudness"
(vocal effort, 0..1) opens the mouth; "pitch_shift" (semitones, {PITCH_SHIFT_RANGE}) raises the
eyebrows. Generated from seed {SEED}: the same seed gives identical records.

Splits: per speaker of {[s for s in SPEAKERS if s not in UNSEEN_SPEAKERS]}, clips
{SEEN_SPLITS['train'].start}-{SEEN_SPLITS['train'].stop - 1} are "train",
{SEEN_SPLITS['validation'].start}-{SEEN_SPLITS['validation'].stop - 1} "validation" and
{SEEN_SPLITS['test'].start}-{SEEN_SPLITS['test'].stop - 1} "test" (held-out clips of training
speakers); every clip of {list(UNSEEN_SPEAKERS)} is "test_unseen" (speakers never heard in
training). The speaker ClassLabel lists all {len(SPEAKERS)} names. `frame` is the face's time
in ms (the clip centre).
"""


# Generated data: no paper of its own; it stands in for the data of the paper it was made for.
_CITATION = """
@inproceedings{duarte2019wav2pix,
  title={Wav2Pix: Speech-conditioned Face Generation using Generative Adversarial Networks},
  author={Duarte, Amanda and Roldan, Francisco and Tubau, Miquel and others},
  booktitle={IEEE International Conference on Acoustics, Speech and Signal Processing (ICASSP)},
  year={2019}
}
"""


@dataclasses.dataclass(frozen=True)
class Speaker:
  """Everything that makes one synthetic speaker: voice and face."""

  name: str
  f0: float  # Hz
  formant_scale: float  # vocal tract: >1 is shorter (higher formants)
  tilt: float  # harmonic k has amplitude k**-tilt
  breathiness: float
  syllable_rate: float  # syllables per second
  skin: tuple
  hair: tuple
  hair_style: str
  eye: tuple
  background: tuple
  shirt: tuple
  head_width: float  # fraction of the canvas
  head_height: float
  eye_spacing: float
  mouth_width: float
  nose_length: float
  glasses: bool
  beard: bool


def make_speakers(seed: int = SEED) -> list[Speaker]:
  """The speakers of the dataset, all drawn from `seed`."""
  rng = np.random.default_rng([seed, 0])
  n = len(SPEAKERS)
  deal = lambda palette: [palette[i] for i in rng.permutation(len(palette))[:n]]
  f0s = np.geomspace(90.0, 235.0, n)[rng.permutation(n)]  # distinct pitches, 14% apart
  skins, hairs, eyes, backgrounds, shirts, styles = (
      deal(_SKINS),
      deal(_HAIRS),
      deal(_EYES),
      deal(_BACKGROUNDS),
      deal(_SHIRTS),
      deal(_HAIR_STYLES),
  )
  glasses = set(rng.choice(n, size=2, replace=False).tolist())
  speakers = []
  for i, name in enumerate(SPEAKERS):
    high = (np.log(f0s[i]) - np.log(90.0)) / (np.log(235.0) - np.log(90.0))  # 0..1
    speakers.append(
        Speaker(
            name=name,
            f0=float(f0s[i]),
            formant_scale=float(0.9 + 0.25 * high + rng.uniform(-0.05, 0.05)),
            tilt=float(rng.uniform(0.9, 1.8)),
            breathiness=float(rng.uniform(0.01, 0.08)),
            syllable_rate=float(rng.uniform(2.5, 6.0)),
            skin=skins[i],
            hair=hairs[i],
            hair_style=styles[i],
            eye=eyes[i],
            background=backgrounds[i],
            shirt=shirts[i],
            head_width=float(rng.uniform(0.46, 0.58)),
            head_height=float(rng.uniform(0.60, 0.70)),
            eye_spacing=float(rng.uniform(0.15, 0.21)),
            mouth_width=float(rng.uniform(0.14, 0.22)),
            nose_length=float(rng.uniform(0.06, 0.11)),
            glasses=i in glasses,
            beard=bool(high < 0.4 and rng.uniform() < 0.6),
        )
    )
  return speakers


def _resonance_gain(freqs: np.ndarray, formants: np.ndarray, bandwidths: np.ndarray) -> np.ndarray:
  """Magnitude response of cascaded 2-pole resonators (unit gain at 0 Hz) at `freqs`."""
  f = freqs[..., None]
  ratio = f / formants
  return np.prod(
      1.0 / np.sqrt((1.0 - ratio**2) ** 2 + (f * bandwidths / formants**2) ** 2), axis=-1
  )


def _syllables(
    syllable_rate: float, t: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
  """Syllables: raised-cosine humps at `syllable_rate`, each with its own vowel and stress.

  Returns the amplitude envelope [T] and the vowel formants (F1, F2, F3) gliding between
  syllables [T, 3], at the sample times `t`.
  """
  envelope = np.zeros(CLIP_SAMPLES)
  start = rng.uniform(0.0, 0.12)
  vowel = _VOWELS[rng.integers(len(_VOWELS))]
  vowel_track = np.tile(vowel, (CLIP_SAMPLES, 1))
  while start < CLIP_SECONDS:
    duration = rng.uniform(0.7, 1.3) / syllable_rate
    voiced = 0.75 * duration
    in_syllable = (t >= start) & (t < start + voiced)
    phase = (t[in_syllable] - start) / voiced
    envelope[in_syllable] = rng.uniform(0.6, 1.0) * np.sin(np.pi * phase) ** 1.5
    next_vowel = _VOWELS[rng.integers(len(_VOWELS))]
    in_span = (t >= start) & (t < start + duration)
    glide = np.clip((t[in_span] - start) / duration, 0, 1)[:, None]
    vowel_track[in_span] = (1 - glide) * vowel + glide * next_vowel
    vowel, start = next_vowel, start + duration
  vowel_track[t >= start] = vowel
  return envelope, vowel_track


def synthesize_voice(
    speaker: Speaker, loudness: float, pitch_shift: float, rng: np.random.Generator
) -> np.ndarray:
  """One clip of speech-like sound, float64 in (-1, 1), CLIP_SAMPLES long."""
  t = np.arange(CLIP_SAMPLES) / SAMPLE_RATE
  envelope, vowel_track = _syllables(speaker.syllable_rate, t, rng)
  formants = vowel_track * speaker.formant_scale

  # Pitch: the speaker's own, shifted for this clip, with a gentle intonation contour.
  contour = 1.0 + 0.025 * np.sin(
      2 * np.pi * t / CLIP_SECONDS * rng.uniform(0.5, 1.0) + rng.uniform(0, 2 * np.pi)
  )
  f0 = speaker.f0 * 2.0 ** (pitch_shift / 12.0) * contour
  phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
  # Louder speech has a flatter spectrum (vocal effort); harmonic amplitudes at a 5 ms rate.
  tilt = speaker.tilt - 0.6 * loudness
  num_harmonics = int(_MAX_HARMONIC_HZ // (speaker.f0 * 2 ** (PITCH_SHIFT_RANGE[0] / 12) * 0.97))
  k = np.arange(1, num_harmonics + 1)
  control = np.arange(0, CLIP_SAMPLES, _CONTROL_HOP)
  harmonic_freqs = f0[control][:, None] * k  # [frames, K]
  amplitudes = k**-tilt * _resonance_gain(
      harmonic_freqs, formants[control][:, None, :], _BANDWIDTHS * speaker.formant_scale
  )
  amplitudes *= harmonic_freqs < _MAX_HARMONIC_HZ
  amplitudes = np.repeat(amplitudes.T, _CONTROL_HOP, axis=1)[:, :CLIP_SAMPLES]  # [K, T]
  # sum_k a_k sin(k phase) by the Chebyshev recurrence
  # sin(k x) = 2 cos x sin((k-1) x) - sin((k-2) x): all harmonics in sine phase (a pulse-like
  # glottal source), no per-harmonic sin() calls.
  two_cos, sin_prev, sin_k = 2.0 * np.cos(phase), np.zeros(CLIP_SAMPLES), np.sin(phase)
  voiced = amplitudes[0] * sin_k
  for a_k in amplitudes[1:]:
    sin_prev, sin_k = sin_k, two_cos * sin_k - sin_prev
    voiced += a_k * sin_k
  voiced /= np.max(np.abs(voiced)) + 1e-9
  # Vocal effort also sets the phonation: quiet speech is breathy (weak voicing, much aspiration
  # noise), loud speech fully voiced. Within a speaker this is the strongest acoustic change from
  # clip to clip; with tilt and level alone (version 1.0.0), trained models did not learn the mouth.
  breath = (speaker.breathiness + _EFFORT_BREATH * (1.0 - loudness)) * rng.standard_normal(
      CLIP_SAMPLES
  )
  speech = ((1.0 - _EFFORT_VOICING * (1.0 - loudness)) * voiced + breath) * envelope
  gain = 10.0 ** ((-28.0 + 22.0 * loudness) / 20.0)  # -28 .. -6 dBFS peak
  noise_floor = _NOISE_FLOOR_RMS * rng.standard_normal(CLIP_SAMPLES)
  return gain * speech / (np.max(np.abs(speech)) + 1e-9) + noise_floor


def shade(colour: tuple, factor: float) -> tuple:
  """`colour` with every channel times `factor`, clipped to 0..255."""
  return tuple(int(np.clip(v * factor, 0, 255)) for v in colour)


def draw_shoulders(
    draw: ImageDraw.ImageDraw, skin: tuple, shirt: tuple, cx: float, cy: float, hw: float, hh: float
) -> None:
  """The shirt, the neck and the ears under a head centred at (cx, cy), half-size (hw, hh)."""
  s = _CANVAS
  draw.ellipse([cx - s * 0.45, s * 0.86, cx + s * 0.45, s * 1.35], fill=shirt)
  draw.rectangle([cx - hw * 0.35, cy + hh * 0.6, cx + hw * 0.35, s * 0.92], fill=shade(skin, 0.85))
  for side in (-1, 1):  # ears
    draw.ellipse(
        [cx + side * hw - 11, cy - 14, cx + side * hw + 11, cy + 20], fill=shade(skin, 0.92)
    )


def draw_expression(
    draw: ImageDraw.ImageDraw,
    speaker,
    cx: float,
    cy: float,
    hh: float,
    loudness: float,
    pitch_shift: float,
    glasses: bool = False,
) -> None:
  """Eyes, eyebrows (raised by `pitch_shift`), nose and mouth (opened by `loudness`).

  The expression layout (FACE_BOX, MOUTH_BOX, BROW_BOXES) of every synthetic builder: `speaker`
  is any speaker with eye_spacing, eye, hair, skin, nose_length and mouth_width; the head is
  centred at (cx, cy) with half-height hh (canvas px).
  """
  s = _CANVAS
  eye_y = cy - hh * 0.12
  dx = speaker.eye_spacing * s
  brow_y = eye_y - 22 - 11.0 * pitch_shift  # higher voice, raised eyebrows (4x canvas px)
  for side in (-1, 1):
    ex = cx + side * dx
    draw.ellipse([ex - 15, eye_y - 9, ex + 15, eye_y + 9], fill=(250, 250, 250))
    draw.ellipse([ex - 8, eye_y - 8, ex + 8, eye_y + 8], fill=speaker.eye)
    draw.ellipse([ex - 3.5, eye_y - 3.5, ex + 3.5, eye_y + 3.5], fill=(10, 10, 10))
    inner, outer = ex - side * 16, ex + side * 18
    draw.line(
        [(inner, brow_y + 2 * pitch_shift), (ex, brow_y - 4), (outer, brow_y + 3)],
        fill=shade(speaker.hair, 0.45),
        width=9,
        joint="curve",
    )
    if glasses:
      draw.ellipse([ex - 22, eye_y - 17, ex + 22, eye_y + 17], outline=(30, 30, 30), width=4)
  if glasses:
    draw.line([(cx - dx + 22, eye_y), (cx + dx - 22, eye_y)], fill=(30, 30, 30), width=4)

  nose_top, nose_bottom = eye_y + 8, eye_y + 8 + speaker.nose_length * s
  draw.polygon(
      [(cx, nose_top), (cx - 9, nose_bottom), (cx + 9, nose_bottom)], fill=shade(speaker.skin, 0.8)
  )

  mouth_y = nose_bottom + (cy + hh - nose_bottom) * 0.42
  mw = speaker.mouth_width * s / 2
  opening = 3.0 + 30.0 * loudness  # louder voice, wider open mouth (4x canvas px)
  draw.ellipse(
      [cx - mw, mouth_y - opening / 2 - 3, cx + mw, mouth_y + opening / 2 + 3], fill=(170, 60, 70)
  )
  draw.ellipse(
      [cx - mw + 5, mouth_y - opening / 2, cx + mw - 5, mouth_y + opening / 2], fill=(60, 15, 20)
  )


def draw_face(speaker: Speaker, loudness: float, pitch_shift: float) -> np.ndarray:
  """The speaker's face with this clip's expression, uint8 [IMAGE_SIZE, IMAGE_SIZE, 3]."""
  s = _CANVAS
  image = Image.new("RGB", (s, s), speaker.background)
  draw = ImageDraw.Draw(image)
  cx, cy = s / 2, s * 0.47
  hw, hh = speaker.head_width * s / 2, speaker.head_height * s / 2

  if speaker.hair_style == "long":  # hair behind the head, down to the shoulders
    draw.rounded_rectangle(
        [cx - hw - 14, cy - hh - 8, cx + hw + 14, cy + hh * 0.75], radius=hw, fill=speaker.hair
    )
  draw_shoulders(draw, speaker.skin, speaker.shirt, cx, cy, hw, hh)
  draw.ellipse([cx - hw, cy - hh, cx + hw, cy + hh], fill=speaker.skin)
  if speaker.beard:
    beard = Image.new("L", (s, s), 0)
    ImageDraw.Draw(beard).chord([cx - hw, cy - hh, cx + hw, cy + hh], 20, 160, fill=255)
    image.paste(shade(speaker.hair, 1.1), mask=beard)

  # Hair on top: an ellipse a little larger than the head, cut at a curved hairline.
  if speaker.hair_style != "bald":
    cap = Image.new("L", (s, s), 0)
    cap_draw = ImageDraw.Draw(cap)
    grow = 16 if speaker.hair_style == "curly" else 8
    cap_draw.ellipse([cx - hw - grow, cy - hh - grow - 4, cx + hw + grow, cy + hh * 0.3], fill=255)
    cap_draw.ellipse([cx - hw * 0.9, cy - hh * 0.78, cx + hw * 0.9, cy + hh * 1.2], fill=0)
    image.paste(speaker.hair, mask=cap)
    if speaker.hair_style == "curly":
      for a in np.linspace(0.15 * np.pi, 0.85 * np.pi, 9):
        x, y = cx + (hw + 10) * np.cos(a), cy - hh * 0.55 - (hh * 0.5) * np.sin(a)
        draw.ellipse([x - 14, y - 14, x + 14, y + 14], fill=speaker.hair)
  else:  # a fringe of hair at the sides only
    for side in (-1, 1):
      draw.chord(
          [cx + side * hw - 16, cy - hh * 0.5, cx + side * hw + 16, cy + hh * 0.1],
          0,
          360,
          fill=speaker.hair,
      )
    draw.ellipse([cx - hw, cy - hh, cx + hw, cy + hh * 0.2], fill=speaker.skin)

  draw_expression(draw, speaker, cx, cy, hh, loudness, pitch_shift, glasses=speaker.glasses)
  return np.asarray(image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS))


def make_clip(
    speaker_index: int,
    clip_index: int,
    seed: int = SEED,
    speakers: list[Speaker] | None = None,
    face=None,
) -> dict:
  """The record of one clip (waveform as int16, face as uint8 array).

  `face(speaker, loudness, pitch_shift)` draws it (default: `draw_face`; synthetic_voice_faces
  passes its own, with its own speakers and seed).
  """
  speakers = speakers or make_speakers(seed)
  speaker = speakers[speaker_index]
  rng = np.random.default_rng([seed, 1 + speaker_index, clip_index])
  loudness = float(rng.uniform(0.0, 1.0))
  pitch_shift = float(rng.uniform(*PITCH_SHIFT_RANGE))
  wave = synthesize_voice(speaker, loudness, pitch_shift, rng)
  return {
      "waveform": np.clip(np.round(wave * 32767.0), -32768, 32767).astype(np.int16),
      "face": (face or draw_face)(speaker, loudness, pitch_shift),
      "speaker": speaker.name,
      "speaker_name": speaker.name,
      "clip_id": f"{speaker.name}/clip{clip_index:03d}",
      "frame": int(1000 * CLIP_SECONDS / 2),
      "loudness": np.float32(loudness),
      "pitch_shift": np.float32(pitch_shift),
  }


def encode_png(face: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(face).save(buffer, format="PNG", optimize=False)
  return buffer.getvalue()


class SyntheticTalkingFaces(tfds.core.GeneratorBasedBuilder):
  """Synthetic speakers whose voices and faces share identity and expression (see module doc)."""

  VERSION = tfds.core.Version("1.1.0")
  # Every face is drawn on one layout (see draw_face): pixel-space metrics read it from here
  # (datasets.DatasetInfo.face_layout).
  FACE_LAYOUT = {"face_box": FACE_BOX, "mouth_box": MOUTH_BOX, "brow_boxes": BROW_BOXES}
  RELEASE_NOTES = {
      "1.0.0": "Initial release.",
      "1.1.0": "Vocal effort also sets the phonation (breathy when quiet): the mouth is learnable.",
  }

  def __init__(self, *, file_format=None, **kwargs):
    # ArrayRecord by default: random access through tfds.data_source, no TensorFlow to read.
    super().__init__(file_format=file_format or "array_record", **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=record_features(
            SPEAKERS,
            face_format="png",
            loudness=tfds.features.Scalar(dtype=np.float32, doc="vocal effort 0..1: mouth opening"),
            pitch_shift=tfds.features.Scalar(dtype=np.float32, doc="semitones: eyebrow height"),
        ),
        supervised_keys=("waveform", "face"),
        homepage="https://github.com/imatge-upc/wav2pix",
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # generated, nothing to download
    seen = [i for i, name in enumerate(SPEAKERS) if name not in UNSEEN_SPEAKERS]
    unseen = [i for i, name in enumerate(SPEAKERS) if name in UNSEEN_SPEAKERS]
    splits = {split: [(i, c) for i in seen for c in clips] for split, clips in SEEN_SPLITS.items()}
    splits["test_unseen"] = [(i, c) for i in unseen for c in range(CLIPS_PER_SPEAKER)]
    return {split: self._generate_examples(clips) for split, clips in splits.items()}

  def _generate_examples(self, clips: list[tuple[int, int]]) -> Iterator[tuple[str, dict]]:
    speakers = make_speakers(SEED)
    for speaker_index, clip_index in clips:
      record = make_clip(speaker_index, clip_index, SEED, speakers)
      record["face"] = encode_png(record["face"])
      yield record["clip_id"], record
