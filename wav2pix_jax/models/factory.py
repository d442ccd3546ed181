"""config.model -> model instances: the only place that reads config.model."""

from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections

from wav2pix_jax import config_lib
from wav2pix_jax.models import layers
from wav2pix_jax.models import networks

# float64 needs jax_enable_x64; tests use it to compare runs that sum in different orders.
_DTYPES = {
    "float32": jnp.float32,
    "bfloat16": jnp.bfloat16,
    "float16": jnp.float16,
    "float64": jnp.float64,
}
_CONV_IMPLS = ("auto",) + tuple(layers.CONV_IMPLS)


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
# network -> its override fields, most specific first (the encoder follows g_conv_impl unless
# model.encoder_conv_impl is set).
_NETWORKS = {
    "g": ("g_conv_impl",),
    "encoder": ("encoder_conv_impl", "g_conv_impl"),
    "d": ("d_conv_impl",),
}


def conv_impl(
    model_cfg: ml_collections.ConfigDict, network: str = "g", *, inference: bool = False
) -> str:
  """The conv implementation of one network ("g": generator, "encoder": speech encoder,
  "d": discriminator).

  model.g_conv_impl (generator and, unless model.encoder_conv_impl is set, speech encoder) /
  model.encoder_conv_impl / model.d_conv_impl override model.conv_impl for their network when
  set (""/missing: follow model.conv_impl). "auto" resolves by the default backend and the network
  (see _AUTO_TRAIN); with `inference` (forward only) "auto" is always "xla", the faster
  forward-only choice on CPU too. Every choice has the same parameters, so they are interchangeable.
  """
  if network not in _NETWORKS:
    raise ValueError(f"network must be one of {sorted(_NETWORKS)}, got {network!r}")
  impl, field = model_cfg.conv_impl, "conv_impl"
  for override in _NETWORKS[network]:
    if model_cfg.get(override):
      impl, field = model_cfg[override], override
      break
  parts = [p.strip() for p in str(impl).split(",")]
  if impl != "auto" and not all(p in layers.CONV_IMPLS for p in parts):
    raise config_lib.ConfigError(
        f"config.model.{field}={impl!r} is not one of {_CONV_IMPLS} "
        f"(or a comma-separated list of {layers.CONV_IMPLS}, one per layer)"
    )
  if len(parts) > 1:
    num_up = networks._check_image_size(model_cfg.image_size)
    num_layers = {"g": num_up + 1, "encoder": len(model_cfg.encoder_channels), "d": num_up}[network]
    if len(parts) != num_layers:
      raise config_lib.ConfigError(
          f"config.model.{field}={impl!r} lists {len(parts)} values but the {network} "
          f"network has {num_layers} conv layers; give one value, or one per layer"
      )
  if impl != "auto":
    return impl
  if inference:
    return "xla"
  auto = _AUTO_TRAIN.get((jax.default_backend(), network), "xla")
  return auto(model_cfg) if callable(auto) else auto


def check_model_config(model_cfg: ml_collections.ConfigDict) -> None:
  """Fails fast, naming the field, on a model config the models can't build."""
  if model_cfg.image_size not in networks.SUPPORTED_IMAGE_SIZES:
    raise config_lib.ConfigError(
        f"config.model.image_size={model_cfg.image_size!r} is not supported; "
        f"choose one of {networks.SUPPORTED_IMAGE_SIZES}"
    )
  for field in (
      "embed_dim",
      "g_base_channels",
      "d_base_channels",
      "classifier_hidden",
      "encoder_kernel_size",
      "encoder_stride",
  ):
    value = model_cfg[field]
    if not isinstance(value, int) or value < 1:
      raise config_lib.ConfigError(
          f"config.model.{field} must be a positive integer, got {value!r}"
      )
  value = model_cfg.d_joint_channels
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise config_lib.ConfigError(
        f"config.model.d_joint_channels must be an integer >= 0, got {value!r}"
    )
  if model_cfg.d_conditioning not in networks.D_CONDITIONINGS:
    raise config_lib.ConfigError(
        f"config.model.d_conditioning must be one of {networks.D_CONDITIONINGS}, "
        f"got {model_cfg.d_conditioning!r}"
    )
  if model_cfg.d_conditioning == "projection" and model_cfg.d_joint_channels:
    raise config_lib.ConfigError(
        "config.model.d_joint_channels > 0 is a layer of the 'concat' conditioning; "
        "config.model.d_conditioning='projection' has none (set d_joint_channels=0)"
    )
  if not isinstance(model_cfg.d_score_sn, bool):
    raise config_lib.ConfigError(
        f"config.model.d_score_sn must be True or False, got {model_cfg.d_score_sn!r}"
    )
  for field in ("encoder_channels", "encoder_hidden"):
    value = tuple(model_cfg[field])
    if not value or any(not isinstance(v, int) or v < 1 for v in value):
      raise config_lib.ConfigError(
          f"config.model.{field} must be a non-empty tuple of positive integers, " f"got {value!r}"
      )
  if not 0.0 <= model_cfg.dropout_rate < 1.0:
    raise config_lib.ConfigError(
        f"config.model.dropout_rate must be in [0, 1), got {model_cfg.dropout_rate!r}"
    )
  if model_cfg.g_upsample not in networks.UPSAMPLE_MODES:
    raise config_lib.ConfigError(
        f"config.model.g_upsample={model_cfg.g_upsample!r} is not one of "
        f"{networks.UPSAMPLE_MODES}"
    )
  if model_cfg.sn_init not in layers.SN_INITS:
    raise config_lib.ConfigError(
        f"config.model.sn_init={model_cfg.sn_init!r} is not one of {layers.SN_INITS}"
    )
  dtype(model_cfg.dtype, field="model.dtype")
  dtype(model_cfg.param_dtype, field="model.param_dtype")
  for network in _NETWORKS:
    conv_impl(model_cfg, network)


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
      score_sn=bool(model_cfg.d_score_sn),
      dtype=dtype(model_cfg.dtype, field="model.dtype"),
      param_dtype=dtype(model_cfg.param_dtype, field="model.param_dtype"),
  )
