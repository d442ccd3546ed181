"""Run configs: ConfigError (a user's error); the one config schema (`validate`, its helpers and
the vocabularies the rooms share); a saved config.json on top of base.py's defaults.

This module sits at the bottom of the import graph: it imports no room. What a rule needs to know
of a room (image sizes, conv implementations, DiffAugment policies...) lives here, and the rooms
import it from here.
"""

import math
import numbers
from typing import Any, Iterable

import ml_collections


class ConfigError(ValueError):
  """A user's error, not a bug: a bad config value or flag, a missing data dir or workdir, a
  config.json that does not describe its checkpoint... The CLIs print it as one line (no
  traceback) and exit non-zero; every other exception keeps its traceback."""


# ---------------------------------------------------------------------------------------------
# Vocabularies (the rooms import these: one list each).

IMAGE_SIZES = (64, 128)  # models/networks.py: face sides the networks build
UPSAMPLE_MODES = ("transposed", "resize_conv")  # model.g_upsample
BEST_METRICS = ("identity",)  # eval.best_metric ("" = off): training/loop_parts.py BestCheckpoint
D_CONDITIONINGS = ("concat", "projection")  # model.d_conditioning (networks.Discriminator)
SN_INITS = ("normal", "torch")  # model.sn_init
CONV_IMPLS = ("xla", "subpixel", "matmul")  # model.*conv_impl (and "auto" for model.conv_impl)
DTYPES = ("float32", "bfloat16", "float16", "float64")  # float64 needs jax_enable_x64
DIFF_AUGMENT_POLICIES = ("color", "translation", "cutout")  # loss.diff_augment, in this order
GAN_LOSSES = ("lsgan", "hinge", "logistic")  # loss.gan (training/losses.py)
# network -> its conv_impl override fields, most specific first (the speech encoder follows
# model.g_conv_impl unless model.encoder_conv_impl is set); model.conv_impl is the fallback.
CONV_IMPL_OVERRIDES = {
    "g": ("g_conv_impl",),
    "encoder": ("encoder_conv_impl", "g_conv_impl"),
    "d": ("d_conv_impl",),
}
SEED_LIMIT = 2**32  # data-order seeds are in [0, 2**32)


# ---------------------------------------------------------------------------------------------
# Helpers: one rule on one field each. `field` is a dotted path from `config` ("log.every_steps");
# the error names it after `prefix` ("config.log.every_steps") and shows the value. Each returns
# the value. `config` may be a ConfigDict or a dict ({"batch_size": n} for a plain argument).


def get(config: Any, field: str) -> Any:
  """The value at a dotted path ("optim.g.learning_rate")."""
  value = config
  for key in field.split("."):
    value = value[key]
  return value


def _fail(prefix: str, field: str, rule: str, value: Any) -> ConfigError:
  return ConfigError(f"{prefix}{field} must be {rule}, got {value!r}")


def _is_int(value: Any) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def positive_int(config: Any, field: str, *, prefix: str = "config.") -> int:
  """An integer >= 1 (bools are not integers here)."""
  value = get(config, field)
  if not _is_int(value) or value < 1:
    raise _fail(prefix, field, "a positive integer", value)
  return value


def at_least(
    config: Any, field: str, minimum: int, *, below: int | None = None, prefix: str = "config."
) -> int:
  """An integer >= `minimum` (and < `below` when given)."""
  value = get(config, field)
  if below is None:
    if not _is_int(value) or value < minimum:
      raise _fail(prefix, field, f"an integer >= {minimum}", value)
  elif not _is_int(value) or not minimum <= value < below:
    raise _fail(prefix, field, f"an integer in [{minimum}, {below})", value)
  return value


def non_negative(config: Any, field: str, *, hint: str = "", prefix: str = "config.") -> float:
  """A number >= 0. A NaN passes: it is how a test provokes a non-finite loss on purpose."""
  value = get(config, field)
  if not _is_number(value) or value < 0:
    raise _fail(prefix, field, f">= 0{hint}", value)
  return value


def positive(config: Any, field: str, *, prefix: str = "config.") -> float:
  """A number > 0."""
  value = get(config, field)
  if not _is_number(value) or not value > 0:
    raise _fail(prefix, field, "> 0", value)
  return value


def fraction(config: Any, field: str, *, closed: bool = False, prefix: str = "config.") -> float:
  """A number in [0, 1) ([0, 1] with `closed`)."""
  value = get(config, field)
  if not _is_number(value) or not (0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0):
    raise _fail(prefix, field, "in [0, 1]" if closed else "in [0, 1)", value)
  return value


def one_of(config: Any, field: str, choices: Iterable[Any], *, prefix: str = "config.") -> Any:
  """One of `choices`, of the same type (True is not 1, 64.0 is not 64)."""
  value = get(config, field)
  choices = tuple(choices)
  if not any(type(value) is type(c) and value == c for c in choices):
    raise ConfigError(f"{prefix}{field}={value!r} is not one of {choices}")
  return value


def boolean(config: Any, field: str, *, prefix: str = "config.") -> bool:
  """True or False."""
  value = get(config, field)
  if not isinstance(value, bool):
    raise _fail(prefix, field, "True or False", value)
  return value


def text(config: Any, field: str, *, empty: bool = True, prefix: str = "config.") -> str:
  """A string (non-empty unless `empty`)."""
  value = get(config, field)
  if not isinstance(value, str) or not (empty or value):
    raise _fail(prefix, field, "a string" if empty else "a non-empty string", value)
  return value


def positive_ints(config: Any, field: str, *, prefix: str = "config.") -> tuple[int, ...]:
  """A non-empty tuple (or list) of positive integers."""
  value = get(config, field)
  if (
      not isinstance(value, (tuple, list))
      or not value
      or not all(_is_int(v) and v >= 1 for v in value)
  ):
    raise _fail(prefix, field, "a non-empty tuple of positive integers", value)
  return tuple(value)


# ---------------------------------------------------------------------------------------------
# Rules that need a room's vocabulary (the rooms call these too).


def conv_layers(model_cfg: Any, network: str) -> int:
  """The conv layers of one network ("g", "encoder", "d"): the length of a per-layer list."""
  one_of({"model": model_cfg}, "model.image_size", IMAGE_SIZES)
  num_up = int(math.log2(model_cfg.image_size // 4))  # stride-2 stages between 4x4 and the face
  return {"g": num_up + 1, "encoder": len(model_cfg.encoder_channels), "d": num_up}[network]


def conv_impl_setting(model_cfg: Any, network: str) -> tuple[str, str]:
  """(value, field) of one network's conv_impl: its override where set ("" = follow), else
  model.conv_impl. ConfigError, naming the field, on an unknown value or a per-layer list of the
  wrong length."""
  if network not in CONV_IMPL_OVERRIDES:
    raise ValueError(f"network must be one of {sorted(CONV_IMPL_OVERRIDES)}, got {network!r}")
  root = {"model": model_cfg}
  impl, field = text(root, "model.conv_impl"), "conv_impl"
  for override in CONV_IMPL_OVERRIDES[network]:
    if override in model_cfg and text(root, f"model.{override}"):
      impl, field = model_cfg[override], override
      break
  parts = [p.strip() for p in impl.split(",")]
  if impl != "auto" and not all(p in CONV_IMPLS for p in parts):
    raise ConfigError(
        f"config.model.{field}={impl!r} is not one of {('auto',) + CONV_IMPLS} "
        f"(or a comma-separated list of {CONV_IMPLS}, one per layer)"
    )
  if len(parts) > 1:
    num_layers = conv_layers(model_cfg, network)
    if len(parts) != num_layers:
      raise ConfigError(
          f"config.model.{field}={impl!r} lists {len(parts)} values but the {network} "
          f"network has {num_layers} conv layers; give one value, or one per layer"
      )
  return impl, field


def diff_augment_policy(policy: Any) -> tuple[str, ...]:
  """loss.diff_augment: "color,translation" -> ("color", "translation"); "" -> ()."""
  text({"loss": {"diff_augment": policy}}, "loss.diff_augment")
  names = tuple(p.strip() for p in policy.split(",") if p.strip())
  unknown = [p for p in names if p not in DIFF_AUGMENT_POLICIES]
  if unknown:
    raise ConfigError(
        f"config.loss.diff_augment: unknown augmentation {unknown} in {policy!r}; "
        f"choose from {DIFF_AUGMENT_POLICIES}"
    )
  return names


def launch_args(config: Any) -> dict:
  """The explicit multi-process launch fields ({} = auto-detect), checked: all three or none,
  coordinator_address HOST:PORT, process_id in [0, num_processes)."""
  address = text(config, "coordinator_address", prefix="--config.")
  num_processes, process_id = config.num_processes, config.process_id
  for name, value in (("num_processes", num_processes), ("process_id", process_id)):
    if not _is_int(value):
      raise _fail("--config.", name, "an integer (-1 = auto-detect)", value)
  given = {
      "coordinator_address": bool(address),
      "num_processes": num_processes != -1,
      "process_id": process_id != -1,
  }
  if not any(given.values()):
    return {}
  if not all(given.values()):
    unset = ", ".join(f"--config.{k}" for k, v in given.items() if not v)
    raise ConfigError(
        "an explicit multi-process launch needs --config.coordinator_address=HOST:PORT, "
        "--config.num_processes=N and --config.process_id=I together; missing: "
        f"{unset} (leave all three unset to auto-detect SLURM / Open MPI / Cloud TPU)"
    )
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit():
    raise _fail("--config.", "coordinator_address", "HOST:PORT", address)
  if num_processes < 1:
    raise ConfigError(f"--config.num_processes must be >= 1, got {num_processes}")
  if not 0 <= process_id < num_processes:
    raise ConfigError(
        f"--config.process_id must be in [0, {num_processes}) "
        f"(--config.num_processes={num_processes}), got {process_id}"
    )
  return {
      "coordinator_address": address,
      "num_processes": int(num_processes),
      "process_id": int(process_id),
  }


# ---------------------------------------------------------------------------------------------
# The schema: every field rule that needs neither a dataset nor devices.


def check_model(model_cfg: Any) -> None:
  """config.model: what the models can build (models/factory.py calls it before building)."""
  root = {"model": model_cfg}
  one_of(root, "model.image_size", IMAGE_SIZES)
  for field in (
      "embed_dim",
      "g_base_channels",
      "d_base_channels",
      "classifier_hidden",
      "encoder_kernel_size",
      "encoder_stride",
  ):
    positive_int(root, f"model.{field}")
  at_least(root, "model.d_joint_channels", 0)
  one_of(root, "model.d_conditioning", D_CONDITIONINGS)
  boolean(root, "model.d_score_sn")
  if model_cfg["d_conditioning"] == "projection" and model_cfg["d_joint_channels"]:
    raise ConfigError(
        "config.model.d_joint_channels > 0 is a layer of the 'concat' conditioning; "
        "config.model.d_conditioning='projection' has none (set d_joint_channels=0)"
    )
  positive_ints(root, "model.encoder_channels")
  positive_ints(root, "model.encoder_hidden")
  fraction(root, "model.dropout_rate")
  at_least(root, "model.noise_dim", 0)
  one_of(root, "model.g_upsample", UPSAMPLE_MODES)
  one_of(root, "model.sn_init", SN_INITS)
  one_of(root, "model.dtype", DTYPES)
  one_of(root, "model.param_dtype", DTYPES)
  for network in CONV_IMPL_OVERRIDES:
    conv_impl_setting(model_cfg, network)


def check_input(config: Any) -> None:
  """config.input, as far as it goes without the dataset (data/input_pipeline.py does the rest:
  data_dir, the dataset's splits and clip lengths)."""
  text(config, "input.dataset", empty=False)
  text(config, "input.train_split", empty=False)
  text(config, "input.eval_split", empty=False)
  positive_int(config, "input.audio_samples")
  positive_int(config, "input.sample_rate")
  fraction(config, "input.preemphasis", closed=True)
  at_least(config, "input.num_workers", 0)
  at_least(config, "input.shuffle_seed", 0, below=SEED_LIMIT)
  boolean(config, "input.floor_division")
  at_least(config, "input.windows_per_face", 0)


def validate(config: Any) -> None:
  """The one config check: every field rule that needs no dataset and no devices, ConfigError
  naming the first bad field and its value. Training's setup calls it first (training/loop.py
  check_config adds the batch's split over the devices); the model section is also checked
  wherever a model is built (models/factory.py)."""
  at_least(config, "seed", 0)
  positive_int(config, "batch_size")
  positive_int(config, "num_train_steps")
  non_negative(config, "max_train_minutes", hint=" (0 = no time limit)")
  at_least(config, "precise_bn_examples", 0)
  boolean(config, "skip_nonfinite")
  boolean(config, "distributed")
  launch_args(config)
  check_model(config.model)
  check_input(config)
  for net in ("g", "d"):
    positive(config, f"optim.{net}.learning_rate")
    fraction(config, f"optim.{net}.b1")
    fraction(config, f"optim.{net}.b2")
  fraction(config, "optim.g.ema_decay")
  fraction(config, "loss.real_label", closed=True)
  for field in (
      "adversarial",
      "feature_matching",
      "l1",
      "speaker_ce",
      "r1",
      "lecam",
      "expression",
      "expression_features",
  ):
    non_negative(config, f"loss.{field}")
  one_of(config, "loss.gan", GAN_LOSSES)
  if config.model.image_size % positive_int(config, "loss.l1_low_pass"):
    raise _fail(
        "config.", "loss.l1_low_pass", "a divisor of model.image_size", config.loss.l1_low_pass
    )
  fraction(config, "loss.lecam_decay")
  boolean(config, "loss.adversarial_into_encoder")
  diff_augment_policy(config.loss.diff_augment)
  for field in (
      "every_steps",
      "image_every_steps",
      "num_images",
      "checkpoint_every_steps",
      "max_checkpoints",
      "divergence_window",
  ):
    positive_int(config, f"log.{field}")
  at_least(config, "eval.every_steps", 0)
  positive_int(config, "eval.max_examples")
  text(config, "eval.split")
  boolean(config, "eval.dlib")
  positive_int(config, "eval.reference_faces_per_speaker")
  boolean(config, "eval.train_mode")
  one_of(config, "eval.best_metric", BEST_METRICS + ("",))


# ---------------------------------------------------------------------------------------------
# Saved configs.


def with_defaults(saved: dict) -> ml_collections.ConfigDict:
  """A run's saved config on top of configs/base.py: a workdir written before a field existed
  gets that field's default (the behaviour it was trained with)."""
  from configs import base  # pylint: disable=g-import-not-at-top

  if not isinstance(saved, dict):
    raise TypeError(f"a config must be a JSON object, got {type(saved).__name__}")
  missing = [section for section in ("model", "input") if not isinstance(saved.get(section), dict)]
  if missing:
    raise TypeError(f"a run's config needs the sections {missing} as objects")
  merged = base.get_config().to_dict()

  def merge(target: dict, values: dict, prefix: str) -> None:
    for key, value in values.items():
      if isinstance(target.get(key), dict):
        if not isinstance(value, dict):
          raise TypeError(
              f"config field {prefix}{key} must be an object, got {type(value).__name__}"
          )
        merge(target[key], value, f"{prefix}{key}.")
      else:
        target[key] = value

  merge(merged, saved, "")
  return ml_collections.ConfigDict(merged)
