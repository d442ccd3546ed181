"""TFDS builder `synthetic_voice_faces` (faces that follow voices).

Importing registers it with TFDS.
"""

from data_prep.synthetic_voice_faces.synthetic_voice_faces_dataset_builder import (
    SyntheticVoiceFaces,
)

__all__ = ["SyntheticVoiceFaces"]
