"""config.model -> model instances: the only place that reads config.model."""

from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections

from wav2pix_jax import models

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
_CONV_IMPLS = ("auto", "xla", "subpixel")


def dtype(name: Any, *, field: str = "model.dtype") -> Any:
  """A dtype string ("float32", "bfloat16", "float16") -> the jnp dtype; error names the field."""
  if not isinstance(name, str):
    return jnp.dtype(name).type
  if name not in _DTYPES:
    raise ValueError(f"config.{field}={name!r} is not one of {sorted(_DTYPES)}")
  return _DTYPES[name]


def conv_impl(model_cfg: ml_collections.ConfigDict) -> str:
  """config.model.conv_impl with "auto" resolved for the default JAX backend."""
  impl = model_cfg.conv_impl
  if impl not in _CONV_IMPLS:
    raise ValueError(f"config.model.conv_impl={impl!r} is not one of {_CONV_IMPLS}")
  if impl == "auto":
    return models.conv_impl_for_backend(jax.default_backend())
  return impl


def check_model_config(model_cfg: ml_collections.ConfigDict) -> None:
  """Fails fast, naming the field, on a model config the models can't build."""
  if model_cfg.image_size not in models.SUPPORTED_IMAGE_SIZES:
    raise ValueError(f"config.model.image_size={model_cfg.image_size!r} is not supported; "
                     f"choose one of {models.SUPPORTED_IMAGE_SIZES}")
  for field in ("embed_dim", "g_base_channels", "d_base_channels", "classifier_hidden",
                "encoder_kernel_size", "encoder_stride"):
    value = model_cfg[field]
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"config.model.{field} must be a positive integer, got {value!r}")
  for field in ("encoder_channels", "encoder_hidden"):
    value = tuple(model_cfg[field])
    if not value or any(not isinstance(v, int) or v < 1 for v in value):
      raise ValueError(f"config.model.{field} must be a non-empty tuple of positive integers, "
                       f"got {value!r}")
  if not 0.0 <= model_cfg.dropout_rate < 1.0:
    raise ValueError(f"config.model.dropout_rate must be in [0, 1), got {model_cfg.dropout_rate!r}")
  dtype(model_cfg.dtype, field="model.dtype")
  dtype(model_cfg.param_dtype, field="model.param_dtype")
  conv_impl(model_cfg)


def make_generator(model_cfg: ml_collections.ConfigDict, num_speakers: int, *,
                   axis_name: Optional[str] = None) -> models.Wav2PixG:
  """The G side (speech encoder + speaker classifier + generator).

  `axis_name`: the pmap axis over which BatchNorm averages batch statistics (None outside pmap).
  """
  check_model_config(model_cfg)
  if not isinstance(num_speakers, int) or num_speakers < 1:
    raise ValueError(f"num_speakers (from the dataset) must be a positive integer, got {num_speakers!r}")
  return models.Wav2PixG(
      num_speakers=num_speakers,
      encoder_channels=tuple(model_cfg.encoder_channels),
      encoder_kernel_size=model_cfg.encoder_kernel_size,
      encoder_stride=model_cfg.encoder_stride,
      encoder_hidden=tuple(model_cfg.encoder_hidden),
      embed_dim=model_cfg.embed_dim,
      classifier_hidden=model_cfg.classifier_hidden,
      image_size=model_cfg.image_size,
      base_channels=model_cfg.g_base_channels,
      dropout_rate=model_cfg.dropout_rate,
      conv_impl=conv_impl(model_cfg),
      axis_name=axis_name,
      dtype=dtype(model_cfg.dtype, field="model.dtype"),
      param_dtype=dtype(model_cfg.param_dtype, field="model.param_dtype"),
  )


def make_discriminator(model_cfg: ml_collections.ConfigDict) -> models.Discriminator:
  """The matching-aware discriminator (image + speech embedding -> score, features)."""
  check_model_config(model_cfg)
  return models.Discriminator(
      image_size=model_cfg.image_size,
      base_channels=model_cfg.d_base_channels,
      conv_impl=conv_impl(model_cfg),
      dtype=dtype(model_cfg.dtype, field="model.dtype"),
      param_dtype=dtype(model_cfg.param_dtype, field="model.param_dtype"),
  )
