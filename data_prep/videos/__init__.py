"""TFDS builder `wav2pix_videos` (speech/face pairs from your own videos).

Importing registers it.
"""

from data_prep.videos.extract import ExtractOptions, extract_video, find_videos
from data_prep.videos.videos_dataset_builder import Wav2PixVideos

__all__ = ["ExtractOptions", "Wav2PixVideos", "extract_video", "find_videos"]
