"""Wav2Pix in JAX/Flax: generate a speaker's face from one second of raw speech."""

__version__ = "0.1.0"
