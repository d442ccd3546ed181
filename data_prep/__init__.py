"""Wav2Pix dataset builders (TFDS). Importing this package is light: builders load on first use.

`data_prep.Youtubers`, `data_prep.SyntheticTalkingFaces` and `data_prep.Wav2PixVideos` import
(and so register with TFDS) only their own module, when first accessed.
"""

import importlib

# TFDS dataset name -> the module whose import registers its builder.
BUILDER_MODULES = {
    "youtubers": "data_prep.youtubers",
    "synthetic_talking_faces": "data_prep.synthetic",
    "wav2pix_videos": "data_prep.videos",
}
_LAZY_CLASSES = {
    "Youtubers": "data_prep.youtubers",
    "SyntheticTalkingFaces": "data_prep.synthetic",
    "Wav2PixVideos": "data_prep.videos",
}


def __getattr__(name: str):
  if name in _LAZY_CLASSES:
    return getattr(importlib.import_module(_LAZY_CLASSES[name]), name)
  raise AttributeError(f"module 'data_prep' has no attribute {name!r}")
