"""Talking-face videos: one model input per video frame, and the MP4 writer (with the sound).

`generate --video` and the web demo (serving/web_demo.py) make their videos with these two
functions.
"""

from __future__ import annotations

import os
import pathlib
import tempfile

import numpy as np

from wav2pix_jax.data import audio


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    waveform: np.ndarray,
    *,
    sample_rate: int,
    fps: float,
) -> None:
  """H.264 MP4 of uint8 frames [N, S, S, 3] with `waveform` (float mono) as AAC sound; atomic."""
  import fractions  # pylint: disable=g-import-not-at-top

  import av  # pylint: disable=g-import-not-at-top

  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  # Even dimensions for yuv420p; 64x64 / 128x128 already are.
  frames = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]
  fd, tmp = tempfile.mkstemp(suffix=".mp4", dir=path.parent, prefix=f".{path.stem}.")
  os.close(fd)
  try:
    with av.open(tmp, mode="w", format="mp4") as container:
      rate = fractions.Fraction(fps).limit_denominator(1001)
      video = container.add_stream("libx264", rate=rate)
      video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
      sound = container.add_stream("aac", rate=sample_rate, layout="mono")
      for frame in frames:
        for packet in video.encode(
            av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        ):
          container.mux(packet)
      for packet in video.encode():
        container.mux(packet)
      samples = np.clip(np.asarray(waveform, np.float32), -1.0, 1.0)[None, :]
      audio_frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
      audio_frame.sample_rate = sample_rate
      audio_frame.pts = 0
      for packet in sound.encode(audio_frame):
        container.mux(packet)
      for packet in sound.encode():
        container.mux(packet)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def video_windows(generator, waveform: np.ndarray, *, fps: float) -> np.ndarray:
  """The model inputs of a talking-face video, float32 [frames, window]: one per 1/fps s.

  Frame i is generated from the window CENTRED on time i / fps (the recording padded with half a
  window of silence at both ends); silent windows are all zeros. `waveform` is at the generator's
  sample rate.
  """
  half = generator.window // 2
  padded = np.concatenate(
      [np.zeros(half, np.float32), waveform, np.zeros(generator.window - half, np.float32)]
  )
  num_frames = max(1, int(np.floor(waveform.shape[0] / generator.sample_rate * fps)))
  # Frame i at time i / fps; window i starts at i / fps in the padded signal, i.e. centred.
  starts = np.round(np.arange(num_frames) * generator.sample_rate / fps).astype(int)
  return np.stack(
      [
          audio.windows(
              padded[s : s + generator.window],
              window=generator.window,
              hop=generator.window,
              silent="zeros",
              **generator.preprocess_options,
          )[0]
          for s in starts
      ]
  )
