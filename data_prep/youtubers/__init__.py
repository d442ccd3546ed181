"""TFDS builder `youtubers` (the Wav2Pix authors' release); importing registers it with TFDS."""

from data_prep.youtubers.youtubers_dataset_builder import Youtubers

__all__ = ["Youtubers"]
