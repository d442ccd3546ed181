"""config.model -> model instances: the only place that reads config.model."""

from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections

from wav2pix_jax import config_lib
from wav2pix_jax.models import networks

# float64 needs jax_enable_x64; tests use it to compare runs that sum in different orders.
_DTYPES = {
    "float32": jnp.float32,
    "bfloat16": jnp.bfloat16,
    "float16": jnp.float16,
    "float64": jnp.float64,
}
assert tuple(_DTYPES) == config_lib.DTYPES, "config_lib.DTYPES lists the names of _DTYPES"


def dtype(name: Any, *, field: str = "model.dtype") -> Any:
  """A dtype string ("float32", "bfloat16", "float16") -> the jnp dtype; error names the field."""
  if not isinstance(name, str):
    return jnp.dtype(name).type
  if name not in _DTYPES:
    raise config_lib.ConfigError(f"config.{field}={name!r} is not one of {sorted(_DTYPES)}")
  return _DTYPES[name]


# Which conv_impl "auto" means, per backend and network, for training (forward + backward).
# From the per-layer table in benchmarks/README.md (benchmarks/conv_layers.py, XLA:CPU, 64 px,
# forward + backward): XLA:CPU's transposed convs, which are also the input gradients of strided
# convs, are slow, so "xla" is the worst choice for the generator (~10-20x) and the encoder.
# "matmul" is fastest on every generator layer and on three of the four discriminator layers (4 %
# behind "xla" on D1: 273 vs 263 ms); "subpixel" on the encoder's first five Conv1d and "matmul"
# on its last (16 x 512 -> 4 x 1024: 39 vs 2258 ms for xla). A callable gets the model config and
# returns the value (per-layer lists allowed).
# Other backends: plain "xla".
_AUTO_TRAIN = {
    ("cpu", "g"): "matmul",
    ("cpu", "encoder"): lambda cfg: ",".join(
        ["subpixel"] * (len(cfg.encoder_channels) - 1) + ["matmul"]
    ),
    ("cpu", "d"): "matmul",
}


def conv_impl(
    model_cfg: ml_collections.ConfigDict, network: str = "g", *, inference: bool = False
) -> str:
  """The conv implementation of one network ("g": generator, "encoder": speech encoder,
  "d": discriminator).

  model.g_conv_impl (generator and, unless model.encoder_conv_impl is set, speech encoder) /
  model.encoder_conv_impl / model.d_conv_impl override model.conv_impl for their network when
  set (""/missing: follow model.conv_impl; config_lib.conv_impl_setting checks the value).
  "auto" resolves by the default backend and the network (see _AUTO_TRAIN); with `inference`
  (forward only) "auto" is always "xla", the faster forward-only choice on CPU too. Every choice
  has the same parameters, so they are interchangeable.
  """
  impl, _ = config_lib.conv_impl_setting(model_cfg, network)
  if impl != "auto":
    return impl
  if inference:
    return "xla"
  auto = _AUTO_TRAIN.get((jax.default_backend(), network), "xla")
  return auto(model_cfg) if callable(auto) else auto


def check_model_config(model_cfg: ml_collections.ConfigDict) -> None:
  """Fails fast, naming the field, on a model config the models can't build (the model section
  of the one config schema, config_lib.check_model)."""
  config_lib.check_model(model_cfg)


def make_generator(
    model_cfg: ml_collections.ConfigDict,
    num_speakers: int,
    *,
    axis_name: Optional[str] = None,
    inference: bool = False,
) -> networks.Wav2PixG:
  """The G side (speech encoder + speaker classifier + generator).

  `axis_name`: the pmap axis over which BatchNorm averages batch statistics (None outside pmap).
  `inference`: the model is only run forward (generation); "auto" then picks the fastest
  forward-only conv_impl. Parameters are the same either way.
  """
  check_model_config(model_cfg)
  if not isinstance(num_speakers, int) or num_speakers < 1:
    raise ValueError(
        f"num_speakers (from the dataset) must be a positive integer, got {num_speakers!r}"
    )
  return networks.Wav2PixG(
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
      noise_dim=model_cfg.noise_dim,
      conv_impl=conv_impl(model_cfg, "g", inference=inference),
      encoder_conv_impl=conv_impl(model_cfg, "encoder", inference=inference),
      upsample=model_cfg.g_upsample,
      sn_init=model_cfg.sn_init,
      axis_name=axis_name,
      dtype=dtype(model_cfg.dtype, field="model.dtype"),
      param_dtype=dtype(model_cfg.param_dtype, field="model.param_dtype"),
  )


def make_discriminator(model_cfg: ml_collections.ConfigDict) -> networks.Discriminator:
  """The matching-aware discriminator (image + speech embedding -> score, features)."""
  check_model_config(model_cfg)
  return networks.Discriminator(
      image_size=model_cfg.image_size,
      base_channels=model_cfg.d_base_channels,
      conv_impl=conv_impl(model_cfg, "d"),
      sn_init=model_cfg.sn_init,
      joint_channels=model_cfg.d_joint_channels,
      conditioning=model_cfg.d_conditioning,
      score_sn=model_cfg.d_score_sn,
      dtype=dtype(model_cfg.dtype, field="model.dtype"),
      param_dtype=dtype(model_cfg.param_dtype, field="model.param_dtype"),
  )
