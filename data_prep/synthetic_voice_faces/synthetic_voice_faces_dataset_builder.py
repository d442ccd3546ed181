"""TFDS builder `synthetic_voice_faces`: many synthetic speakers whose faces FOLLOW their voices.

A controlled benchmark for unseen voices (issue 14). In `synthetic_talking_faces` every face
attribute is drawn independently of the voice, so nothing about a never-heard speaker's face can
be predicted from the voice. Here, as in people, some face attributes follow voice attributes
through a documented, noisy mapping, and others are random controls:

Per speaker, two hidden traits: sex g ~ Bernoulli(1/2) and body size z ~ U(0, 1) (independent, a
deliberate simplification: pitch says nothing about size, so head size can only come from the
formants). With femininity f = clip(0.2 + 0.6 g + N(0, 0.1), 0, 1) and masculinity m = 1 - f:

  voice  pitch         f0 = 95 Hz * (230 / 95) ** clip(f + N(0, 0.04), 0, 1)
         tract length  formant_scale = 1.17 - 0.27 z + N(0, 0.015)  (< 1: longer, lower formants)
  face   beard         clip((m - 0.5) / 0.3 + N(0, 0.2), 0, 1), and 0 for 30 % of speakers
         jaw           clip(0.15 + 0.7 m + N(0, 0.12), 0, 1)  0 = oval, 1 = square
         hair_length   clip(0.1 + 0.8 f + N(0, 0.2), 0, 1)    0 = a short crop, 1 = to the shoulders
         head_size     clip(z + N(0, 0.1), 0, 1)              scales the head's height and width
         shirt, background   uniform palette colours, independent of everything: the controls
         (skin, hair and eye colours, eye spacing, nose, mouth width: random, not measured)

So beard, jaw and hair length follow the pitch (through sex), head size the formant spacing
(through size), and shirt and background nothing: a model that gets the controls right on unseen
speakers is lucky, on training speakers it is memorising. Each clip's expression is as in
`synthetic_talking_faces` (loudness -> mouth opening, pitch_shift -> eyebrows) and the voice is
synthesised by the same function (`synthetic_talking_faces.synthesize_voice`).

Record format: the shared one (data_prep/features.py) plus extras: the expression (loudness,
pitch_shift), the voice (f0_hz, formant_scale) and the face attributes' ground truth (beard, jaw,
hair_length, head_size in [0, 1]; shirt, background as palette ClassLabels).
`wav2pix_jax/evaluation/attributes.py` measures the face attributes back from pixels with
ATTRIBUTE_LAYOUT.

Why a sibling builder, not a config of `synthetic_talking_faces`: adding BUILDER_CONFIGS to that
builder moves its prepared data to `synthetic_talking_faces/<config>/<version>` (every existing
data_dir would re-prepare, and reading it without the builder module, as a test does, would have
to find the default config); a new name changes nothing for the demo, its configs or its tests.

Build: `python -m data_prep.synthetic_voice_faces [--data_dir DIR]`.
"""

import dataclasses
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw
import tensorflow_datasets as tfds

from data_prep.features import SAMPLE_RATE, record_features
from data_prep.synthetic import synthetic_dataset_builder as syn

SEED = 20260514
NUM_SEEN = 64  # speakers in train / validation / test
NUM_UNSEEN = 16  # speakers held out of training: all their clips are "test_unseen"
SPEAKERS = tuple(f"spk{i:02d}" for i in range(NUM_SEEN + NUM_UNSEEN))
UNSEEN_SPEAKERS = SPEAKERS[NUM_SEEN:]  # speakers are i.i.d. draws: the last ones are as good as any
CLIPS_PER_SPEAKER = 14
SEEN_SPLITS = {"train": range(0, 10), "validation": range(10, 12), "test": range(12, 14)}
CLIP_SECONDS = syn.CLIP_SECONDS
IMAGE_SIZE = syn.IMAGE_SIZE  # 64
PITCH_SHIFT_RANGE = syn.PITCH_SHIFT_RANGE
_CANVAS = 4 * IMAGE_SIZE  # drawn 4x larger, then downsampled (anti-aliasing)
_K = _CANVAS / IMAGE_SIZE  # canvas px per image px

# The expression layout of synthetic_talking_faces holds here too (eyes, eyebrows, nose and mouth
# are drawn by its draw_expression), so its pixel metrics apply (FACE_LAYOUT below).
FACE_BOX, MOUTH_BOX, BROW_BOXES = syn.FACE_BOX, syn.MOUTH_BOX, syn.BROW_BOXES

F0_RANGE = (95.0, 230.0)  # Hz: f = 0 .. 1

# Geometry in image pixels (IMAGE_SIZE = 64), shared with the measurement
# (wav2pix_jax/evaluation/attributes.py).
CENTRE_X, CENTRE_Y = IMAGE_SIZE / 2, 0.47 * IMAGE_SIZE  # head centre
HALF_HEIGHT = (18.56, 22.4)  # head half-height at head_size 0 .. 1
HALF_WIDTH = (15.36, 17.92)  # head half-width at head_size 0 .. 1
CAP_ABOVE_HEAD = 3.0  # the hair cap's top is this far above the head's top
JAW_EXPONENT = (2.0, 4.5)  # the lower half of the head is a superellipse |x|^n + |y|^n = 1
BEARD_FROM = 0.34  # the beard covers the lower face below CENTRE_Y + BEARD_FROM * half-height
LOCK_X = (19.5, 26.0)  # long hair: two locks at these distances left and right of the centre
LOCK_TOP = 14.0  # the locks' top row; they end at LOCK_TOP + LOCK_MIN + hair_length * LOCK_RANGE
LOCK_MIN, LOCK_RANGE = 2.0, 40.0

# Where each attribute is measured: (top, bottom, left, right) boxes, bottom/right exclusive.
ATTRIBUTE_LAYOUT = {
    "background_boxes": ((0, 4, 0, 4), (0, 4, 60, 64)),  # always background
    "shirt_box": (60, 64, 22, 42),  # always shirt (below the neck)
    "hair_box": (9, 12, 29, 35),  # always inside the hair cap
    "skin_box": (17, 21, 30, 34),  # the forehead's middle: always skin
    "cheek_boxes": ((39, 43, 22, 24), (39, 43, 40, 42)),  # beside the mouth: skin or beard
    "top_columns": (29, 35),  # the head's top is found in these columns, rows 0..16
    "lock_columns": ((7, 11), (53, 57)),  # inside the locks, outside every head and ear
    # The jaw: head widths compared at these fractions of the half-height below the centre (below
    # the ears, inside any beard), counted in jaw_columns (beside the mouth, no hair there; the
    # columns between them are inside every head at both depths), relative to the colour in
    # jaw_inside at the upper depth (always inside the head).
    "jaw_rows": (0.45, 0.85),
    "jaw_columns": ((13, 24), (40, 51)),
    "jaw_inside": ((21, 24), (40, 43)),
}

_SKINS = syn._SKINS  # pylint: disable=protected-access
_HAIRS = [
    (30, 25, 20),
    (70, 45, 25),
    (110, 70, 35),
    (150, 55, 30),
    (85, 85, 90),
    (20, 20, 60),
    (125, 60, 40),
    (60, 55, 50),
]
_EYES = syn._EYES  # pylint: disable=protected-access
BACKGROUNDS = {
    "sky": (200, 220, 240),
    "cream": (235, 232, 195),
    "mint": (205, 240, 205),
    "rose": (245, 205, 205),
    "lavender": (220, 208, 245),
    "silver": (192, 192, 192),
    "sand": (240, 222, 180),
    "aqua": (195, 238, 238),
}
SHIRTS = {
    "navy": (40, 70, 140),
    "red": (170, 40, 40),
    "green": (40, 130, 60),
    "grey": (90, 90, 90),
    "mustard": (205, 160, 40),
    "purple": (110, 50, 130),
    "black": (25, 25, 25),
    "white": (235, 235, 235),
}
_MIN_HAIR_CONTRAST = 90.0  # RGB distance of the hair from the skin and from the background
_MIN_SKIN_CONTRAST = 60.0  # RGB distance of the skin from the background

# Pieces of the description, to keep its lines short.
_SIZE = f"{IMAGE_SIZE}x{IMAGE_SIZE}"
_CLIPS = {split: f"{clips.start}-{clips.stop - 1}" for split, clips in SEEN_SPLITS.items()}
_DESCRIPTION = f"""
Synthetic voice faces: {len(SPEAKERS)} synthetic speakers ({NUM_SEEN} for training,
{NUM_UNSEEN} held out), {CLIPS_PER_SPEAKER} clips each of {CLIP_SECONDS} s of 16 kHz int16
speech-like sound (the synthesiser of synthetic_talking_faces) paired with a {_SIZE}
PNG face. Unlike synthetic_talking_faces, face attributes FOLLOW voice attributes by a documented
noisy mapping: beard, jaw and hair length follow the pitch (through a hidden sex), head size the
formant spacing (through a hidden body size); shirt and background colours are random controls.
Ground truth of every attribute is in the records. Expression as in synthetic_talking_faces:
loudness opens the mouth, pitch_shift raises the eyebrows. Generated from seed {SEED}.

Splits: per speaker of the first {NUM_SEEN}, clips {_CLIPS['train']}
are "train", {_CLIPS['validation']} "validation",
{_CLIPS['test']} "test"; every clip of the last {NUM_UNSEEN}
speakers is "test_unseen" (speakers never heard in training).
"""


@dataclasses.dataclass(frozen=True)
class Speaker:
  """One synthetic speaker: hidden traits, voice (the fields synthesize_voice reads), face."""

  name: str
  sex: int  # hidden: 1 = female
  size: float  # hidden: body size 0..1
  # Voice.
  f0: float  # Hz
  formant_scale: float  # vocal tract: >1 is shorter (higher formants)
  tilt: float
  breathiness: float
  syllable_rate: float
  # Face attributes that follow the voice (ground truth, 0..1).
  beard: float
  jaw: float
  hair_length: float
  head_size: float
  # Controls (palette indices into SHIRTS / BACKGROUNDS) and other random looks.
  shirt: int
  background: int
  skin: tuple
  hair: tuple
  eye: tuple
  eye_spacing: float  # fraction of the image
  mouth_width: float
  nose_length: float


def _distance(a, b) -> float:
  return float(np.linalg.norm(np.subtract(a, b, dtype=float)))


def make_speakers(seed: int = SEED) -> list[Speaker]:
  """The speakers of the dataset, all drawn from `seed` (the mapping in the module docstring)."""
  rng = np.random.default_rng([seed, 0])
  backgrounds, shirts = list(BACKGROUNDS.values()), list(SHIRTS.values())
  speakers = []
  for name in SPEAKERS:
    sex = int(rng.uniform() < 0.5)
    size = float(rng.uniform())
    f = float(np.clip(0.2 + 0.6 * sex + rng.normal(0, 0.1), 0, 1))
    m = 1.0 - f
    pitch = float(np.clip(f + rng.normal(0, 0.04), 0, 1))
    beard = float(np.clip((m - 0.5) / 0.3 + rng.normal(0, 0.2), 0, 1))
    if rng.uniform() < 0.3:
      beard = 0.0  # clean-shaven
    background = int(rng.integers(len(backgrounds)))
    # Skin and hair are redrawn until they stand out from the background and each other (the
    # measurement needs the head's silhouette and the beard): still independent of the voice.
    skin = _SKINS[rng.integers(len(_SKINS))]
    while _distance(skin, backgrounds[background]) < _MIN_SKIN_CONTRAST:
      skin = _SKINS[rng.integers(len(_SKINS))]
    hair = _HAIRS[rng.integers(len(_HAIRS))]
    while min(_distance(hair, skin), _distance(hair, backgrounds[background])) < _MIN_HAIR_CONTRAST:
      hair = _HAIRS[rng.integers(len(_HAIRS))]
    speakers.append(
        Speaker(
            name=name,
            sex=sex,
            size=size,
            f0=float(F0_RANGE[0] * (F0_RANGE[1] / F0_RANGE[0]) ** pitch),
            formant_scale=float(1.17 - 0.27 * size + rng.normal(0, 0.015)),
            tilt=float(rng.uniform(0.9, 1.8)),
            breathiness=float(rng.uniform(0.01, 0.08)),
            syllable_rate=float(rng.uniform(2.5, 6.0)),
            beard=beard,
            jaw=float(np.clip(0.15 + 0.7 * m + rng.normal(0, 0.12), 0, 1)),
            hair_length=float(np.clip(0.1 + 0.8 * f + rng.normal(0, 0.2), 0, 1)),
            head_size=float(np.clip(size + rng.normal(0, 0.1), 0, 1)),
            shirt=int(rng.integers(len(shirts))),
            background=background,
            skin=skin,
            hair=hair,
            eye=_EYES[rng.integers(len(_EYES))],
            eye_spacing=float(rng.uniform(0.15, 0.19)),
            mouth_width=float(rng.uniform(0.14, 0.22)),
            nose_length=float(rng.uniform(0.06, 0.11)),
        )
    )
  return speakers


def head_half_size(head_size: float) -> tuple[float, float]:
  """(half-width, half-height) of the head in image px."""
  lerp = lambda r: r[0] + (r[1] - r[0]) * head_size
  return lerp(HALF_WIDTH), lerp(HALF_HEIGHT)


def jaw_exponent(jaw: float) -> float:
  """The superellipse exponent of the lower head: 2 (oval) .. 4.5 (square)."""
  return JAW_EXPONENT[0] + (JAW_EXPONENT[1] - JAW_EXPONENT[0]) * jaw


def head_outline(head_size: float, jaw: float, points: int = 90) -> np.ndarray:
  """[2 * points, 2] polygon (x, y) of the head in image px: elliptic top, superelliptic jaw."""
  hw, hh = head_half_size(head_size)
  n = jaw_exponent(jaw)
  theta = np.linspace(0.0, np.pi, points)
  c, s = np.cos(theta), np.sin(theta)
  lower = np.stack(
      [CENTRE_X + hw * np.sign(c) * np.abs(c) ** (2 / n), CENTRE_Y + hh * np.abs(s) ** (2 / n)], 1
  )
  upper = np.stack([CENTRE_X - hw * c, CENTRE_Y - hh * s], 1)  # right to left over the top
  return np.concatenate([lower, upper])


def draw_face(speaker: Speaker, loudness: float, pitch_shift: float) -> np.ndarray:
  """The speaker's face with this clip's expression, uint8 [IMAGE_SIZE, IMAGE_SIZE, 3]."""
  k, s = _K, _CANVAS
  background = list(BACKGROUNDS.values())[speaker.background]
  image = Image.new("RGB", (s, s), background)
  draw = ImageDraw.Draw(image)
  cx, cy = CENTRE_X * k, CENTRE_Y * k
  hw, hh = (v * k for v in head_half_size(speaker.head_size))
  blend = lambda a, b, t: tuple(int(round((1 - t) * u + t * v)) for u, v in zip(a, b))

  # Long hair: two locks beside the head (never over the jaw's silhouette), joined over the top.
  lock_bottom = (LOCK_TOP + LOCK_MIN + LOCK_RANGE * speaker.hair_length) * k
  for side in (-1, 1):
    x0, x1 = sorted((cx + side * LOCK_X[0] * k, cx + side * LOCK_X[1] * k))
    draw.rounded_rectangle([x0, LOCK_TOP * k, x1, lock_bottom], radius=3 * k, fill=speaker.hair)
  draw.ellipse(
      [cx - LOCK_X[1] * k, cy - hh - 1 * k, cx + LOCK_X[1] * k, (LOCK_TOP + LOCK_MIN) * k],
      fill=speaker.hair,
  )

  shirt = list(SHIRTS.values())[speaker.shirt]
  syn.draw_shoulders(draw, speaker.skin, shirt, cx, cy, hw, hh)
  outline = [tuple(p) for p in head_outline(speaker.head_size, speaker.jaw) * k]
  draw.polygon(outline, fill=speaker.skin)
  if speaker.beard > 0:
    beard = Image.new("L", (s, s), 0)
    beard_draw = ImageDraw.Draw(beard)
    beard_draw.polygon(outline, fill=255)
    beard_draw.rectangle([0, 0, s, cy + BEARD_FROM * hh], fill=0)
    image.paste(blend(speaker.skin, speaker.hair, speaker.beard), mask=beard)

  # Hair on top: an ellipse a little larger than the head, cut at a curved hairline.
  cap = Image.new("L", (s, s), 0)
  cap_draw = ImageDraw.Draw(cap)
  cap_draw.ellipse(
      [cx - hw - 8, cy - hh - CAP_ABOVE_HEAD * k, cx + hw + 8, cy + hh * 0.3], fill=255
  )
  cap_draw.ellipse([cx - hw * 0.9, cy - hh * 0.78, cx + hw * 0.9, cy + hh * 1.2], fill=0)
  image.paste(speaker.hair, mask=cap)

  # Eyes, eyebrows, nose and mouth: the rules of synthetic_talking_faces (its expression layout).
  syn.draw_expression(draw, speaker, cx, cy, hh, loudness, pitch_shift)
  return np.asarray(image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS))


def attributes(speaker: Speaker) -> dict:
  """The ground-truth extras of a speaker's records (voice and face attributes)."""
  return {
      "f0_hz": np.float32(speaker.f0),
      "formant_scale": np.float32(speaker.formant_scale),
      "beard": np.float32(speaker.beard),
      "jaw": np.float32(speaker.jaw),
      "hair_length": np.float32(speaker.hair_length),
      "head_size": np.float32(speaker.head_size),
      "shirt": speaker.shirt,
      "background": speaker.background,
  }


def make_clip(
    speaker_index: int, clip_index: int, seed: int = SEED, speakers: list[Speaker] | None = None
) -> dict:
  """The record of one clip (the synthetic builder's, with this one's faces and extras)."""
  speakers = speakers or make_speakers(seed)
  record = syn.make_clip(speaker_index, clip_index, seed, speakers, face=draw_face)
  return {**record, **attributes(speakers[speaker_index])}


def _split_clips() -> dict[str, list[tuple[int, int]]]:
  seen, unseen = range(NUM_SEEN), range(NUM_SEEN, len(SPEAKERS))
  splits = {split: [(i, c) for i in seen for c in clips] for split, clips in SEEN_SPLITS.items()}
  splits["test_unseen"] = [(i, c) for i in unseen for c in range(CLIPS_PER_SPEAKER)]
  return splits


class SyntheticVoiceFaces(tfds.core.GeneratorBasedBuilder):
  """Synthetic speakers whose face attributes follow their voices (see module doc)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  # synthetic_talking_faces' layout (datasets.DatasetInfo.face_layout): pixel identity, mouth
  # and eyebrow metrics apply. A beard darkens the mouth box of its speaker at every loudness, so
  # only the within-speaker mouth correlation means anything here.
  FACE_LAYOUT = syn.SyntheticTalkingFaces.FACE_LAYOUT

  def __init__(self, *, file_format=None, **kwargs):
    super().__init__(file_format=file_format or "array_record", **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    scalar = lambda doc: tfds.features.Scalar(dtype=np.float32, doc=doc)
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=record_features(
            SPEAKERS,
            face_format="png",
            loudness=scalar("vocal effort 0..1: mouth opening"),
            pitch_shift=scalar("semitones: eyebrow height"),
            f0_hz=scalar("the speaker's pitch (Hz)"),
            formant_scale=scalar("the speaker's formant scale (<1: longer vocal tract)"),
            beard=scalar("beard density 0..1 (follows pitch)"),
            jaw=scalar("jaw 0 = oval .. 1 = square (follows pitch)"),
            hair_length=scalar("hair length 0 = crop .. 1 = shoulders (follows pitch)"),
            head_size=scalar("head size 0..1 (follows formant spacing)"),
            shirt=tfds.features.ClassLabel(names=list(SHIRTS)),
            background=tfds.features.ClassLabel(names=list(BACKGROUNDS)),
        ),
        supervised_keys=("waveform", "face"),
        homepage="https://github.com/imatge-upc/wav2pix",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # generated, nothing to download
    return {split: self._generate_examples(clips) for split, clips in _split_clips().items()}

  def _generate_examples(self, clips: list[tuple[int, int]]) -> Iterator[tuple[str, dict]]:
    speakers = make_speakers(SEED)
    for speaker_index, clip_index in clips:
      record = make_clip(speaker_index, clip_index, SEED, speakers)
      record["face"] = syn.encode_png(record["face"])
      yield record["clip_id"], record
