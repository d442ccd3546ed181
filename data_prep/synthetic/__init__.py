"""TFDS builder `synthetic_talking_faces` (the embedded default).

Importing registers it with TFDS.
"""

from data_prep.synthetic.synthetic_dataset_builder import SyntheticTalkingFaces

__all__ = ["SyntheticTalkingFaces"]
