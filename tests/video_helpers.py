"""Shared helpers of the video builder tests: planted talking videos made with PyAV.

Faces are the real face crops of the shared YouTubers release (dlib's frontal detector finds
them; drawn cartoon faces it does not), pasted on a plain background; the soundtrack is the
same speaker's real speech. Tests import it as `video_helpers` (pytest puts tests/ on sys.path).
"""

import pathlib

import av
import numpy as np
from PIL import Image
import soundfile

SAMPLE_RATE = 16_000


def true_rgb_face(youtubers_dir: pathlib.Path, speaker: str, index: int) -> np.ndarray:
  """The `index`-th face crop of `speaker` in the release, in true RGB (uint8 [H, W, 3])."""
  path = sorted((youtubers_dir / "train" / speaker).glob("cropped_face_frame_*.png"))[index]
  bgr = np.asarray(Image.open(path).convert("RGB"))
  return np.ascontiguousarray(bgr[..., ::-1])  # the release stores BGR


def speech(youtubers_dir: pathlib.Path, speaker: str, start: int, seconds: int) -> np.ndarray:
  """`seconds` s of `speaker`'s real speech (16 kHz int16), one release window per second."""
  paths = sorted((youtubers_dir / "train" / speaker).glob("preprocessed_frame_*.wav"))
  # Every other wav: consecutive wavs are windows around the same face; take one per face.
  return np.concatenate(
      [soundfile.read(p, dtype="int16")[0] for p in paths[start : start + 2 * seconds : 2]]
  )


def canvas(
    face: np.ndarray | None, side: int, left: int, top: int, width: int, height: int
) -> np.ndarray:
  """A plain `width` x `height` frame with `face` resized to `side` pasted at (left, top)."""
  image = np.zeros((height, width, 3), np.uint8)
  image[..., 0], image[..., 1], image[..., 2] = 70, 110, 90
  if face is not None:
    resized = Image.fromarray(face).resize((side, side), Image.BICUBIC)
    image[top : top + side, left : left + side] = np.asarray(resized)
  return image


def write_video(
    path: pathlib.Path,
    image: np.ndarray,
    audio: np.ndarray | None,
    *,
    seconds: int,
    fps: int,
    video_codec: str = "libx264",
    audio_codec: str = "aac",
) -> None:
  """A `seconds`-long video of a still image with `audio` (16 kHz int16) as its soundtrack."""
  with av.open(str(path), "w") as out:
    video = out.add_stream(video_codec, rate=fps)
    video.width, video.height, video.pix_fmt = image.shape[1], image.shape[0], "yuv420p"
    sound = (
        out.add_stream(audio_codec, rate=SAMPLE_RATE, layout="mono") if audio is not None else None
    )
    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
    for i in range(seconds * fps):
      frame.pts = i
      for packet in video.encode(frame):
        out.mux(packet)
    for packet in video.encode():
      out.mux(packet)
    if sound is not None:
      write_audio(out, sound, audio)


def write_audio(out, stream, audio: np.ndarray) -> None:
  """Muxes `audio` (16 kHz int16 mono) into `stream` of the open container `out`."""
  samples = av.AudioFrame.from_ndarray(
      (audio.astype(np.float32) / 32768.0)[None], format="fltp", layout="mono"
  )
  samples.sample_rate, samples.pts = SAMPLE_RATE, 0
  for packet in [*stream.encode(samples), *stream.encode()]:
    out.mux(packet)


def write_talking_videos(
    root: pathlib.Path,
    youtubers_dir: pathlib.Path,
    *,
    speakers: int,
    videos_per_speaker: int,
    seconds: int,
    fps: int = 10,
    frame_size: tuple[int, int] = (320, 240),
    face_side: int = 160,
) -> list:
  """<root>/spk<k>/talk<n>.mp4: still talking videos, a different real face and speech in each.

  Speakers alternate between the release's two speakers, each folder on its own faces and
  speech; returns the paths written.
  """
  width, height = frame_size
  sources = sorted(p.name for p in (youtubers_dir / "train").iterdir() if p.is_dir())
  paths = []
  for k in range(speakers):
    source = sources[k % len(sources)]
    faces = len(list((youtubers_dir / "train" / source).glob("cropped_face_frame_*.png")))
    (root / f"spk{k}").mkdir(parents=True, exist_ok=True)
    for n in range(videos_per_speaker):
      # Folders sharing a source use disjoint, spread-out faces and speech.
      slot = (k // len(sources)) * videos_per_speaker + n
      face = true_rgb_face(youtubers_dir, source, (37 * slot) % faces)
      left = (width - face_side) * (n % 3) // 2
      top = (height - face_side) * (n % 2)
      image = canvas(face, face_side, left, top, width, height)
      audio = speech(
          youtubers_dir, source, (2 * seconds * slot) % max(1, faces - 2 * seconds), seconds
      )
      path = root / f"spk{k}" / f"talk{n}.mp4"
      write_video(path, image, audio, seconds=seconds, fps=fps)
      paths.append(path)
  return paths


if __name__ == "__main__":
  import argparse

  parser = argparse.ArgumentParser(description="Write a folder of talking videos (benchmarks).")
  parser.add_argument("--out", required=True, help="folder to write <speaker>/<video>.mp4 into")
  parser.add_argument(
      "--youtubers",
      default=str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "youtubers"),
  )
  parser.add_argument("--speakers", type=int, default=3)
  parser.add_argument("--videos_per_speaker", type=int, default=2)
  parser.add_argument("--seconds", type=int, default=4)
  parser.add_argument("--fps", type=int, default=10)
  parser.add_argument("--size", type=int, nargs=2, default=(320, 240), metavar=("WIDTH", "HEIGHT"))
  parser.add_argument("--face_side", type=int, default=160)
  args = parser.parse_args()
  written = write_talking_videos(
      pathlib.Path(args.out),
      pathlib.Path(args.youtubers),
      speakers=args.speakers,
      videos_per_speaker=args.videos_per_speaker,
      seconds=args.seconds,
      fps=args.fps,
      frame_size=tuple(args.size),
      face_side=args.face_side,
  )
  print(f"{len(written)} videos in {args.out}")
