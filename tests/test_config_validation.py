"""The one config schema (config_lib.validate and its helpers): each message names the field and
the value; every shipped config passes; a bad value in any field of any section is refused."""

import math

import helpers
import ml_collections
import numpy as np
import pytest

from wav2pix_jax import config_lib
from wav2pix_jax.models import factory
from wav2pix_jax.models import layers
from wav2pix_jax.models import networks
from wav2pix_jax.training import augment

SHIPPED = ("base", "base_128", "authors", "demo", "demo_unseen", "fast", "tiny")
# Fields no rule covers without the data: data_dir's and manual_dir's checks need the file system
# (data/input_pipeline.py names them).
UNCHECKED = {"input.data_dir", "input.manual_dir"}


def _leaves(node, prefix=""):
  for key, value in node.items():
    if isinstance(value, dict):
      yield from _leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}"


def _with(config, field, value) -> ml_collections.ConfigDict:
  """A copy of `config` with `field` set to `value` whatever its type (as a config.json can)."""
  raw = config.to_dict()
  *path, last = field.split(".")
  node = raw
  for key in path:
    node = node[key]
  node[last] = value
  return ml_collections.ConfigDict(raw)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_is_valid(name):
  config_lib.validate(helpers.load_config(name))


@pytest.mark.parametrize(
    "helper, args, value, message",
    [
        (config_lib.positive_int, (), 0, r"^config\.log\.every_steps must be a positive integer, "),
        (
            config_lib.positive_int,
            (),
            True,
            r"^config\.log\.every_steps must be a positive integer",
        ),
        (config_lib.positive_int, (), 2.0, r"must be a positive integer, got 2\.0$"),
        (
            config_lib.at_least,
            (0,),
            -1,
            r"^config\.log\.every_steps must be an integer >= 0, got -1$",
        ),
        (config_lib.at_least, (0,), "3", r"must be an integer >= 0, got '3'$"),
        (config_lib.non_negative, (), -0.5, r"^config\.log\.every_steps must be >= 0, got -0\.5$"),
        (config_lib.non_negative, (), "1", r"must be >= 0, got '1'$"),
        (config_lib.positive, (), 0.0, r"^config\.log\.every_steps must be > 0, got 0\.0$"),
        (config_lib.fraction, (), 1.0, r"^config\.log\.every_steps must be in \[0, 1\), got 1\.0$"),
        (config_lib.one_of, (("a", "b"),), "c", r"^config\.log\.every_steps='c' is not one of "),
        (config_lib.one_of, ((64, 128),), 64.0, r"^config\.log\.every_steps=64\.0 is not one of"),
        (config_lib.boolean, (), 1, r"^config\.log\.every_steps must be True or False, got 1$"),
        (config_lib.text, (), None, r"^config\.log\.every_steps must be a string, got None$"),
        (
            config_lib.positive_ints,
            (),
            (4, 0),
            r"non-empty tuple of positive integers, got \(4, 0\)",
        ),
    ],
)
def test_each_helper_names_the_field_and_the_value(helper, args, value, message):
  config = {"log": {"every_steps": value}}
  with pytest.raises(config_lib.ConfigError, match=message):
    helper(config, "log.every_steps", *args)


def test_helpers_return_good_values_and_take_a_prefix():
  config = ml_collections.ConfigDict({"log": {"every_steps": 5}, "n": np.int64(3)})
  assert config_lib.positive_int(config, "log.every_steps") == 5
  assert config_lib.positive_int(config, "n") == 3  # numpy integers are integers
  assert config_lib.at_least(config, "log.every_steps", 0, below=6) == 5
  assert config_lib.one_of({"x": 64}, "x", config_lib.IMAGE_SIZES) == 64
  assert config_lib.text({"x": ""}, "x") == ""
  assert math.isnan(config_lib.non_negative({"x": math.nan}, "x"))  # a NaN is let through
  with pytest.raises(config_lib.ConfigError, match=r"^batch_size must be a positive integer"):
    config_lib.positive_int({"batch_size": -2}, "batch_size", prefix="")
  with pytest.raises(config_lib.ConfigError, match=r"an integer in \[0, 6\), got 6$"):
    config_lib.at_least({"x": 6}, "x", 0, below=6)
  with pytest.raises(config_lib.ConfigError, match=r"must be a non-empty string, got ''"):
    config_lib.text({"x": ""}, "x", empty=False)
  with pytest.raises(config_lib.ConfigError, match=r"must be in \[0, 1\], got 1\.5"):
    config_lib.fraction({"x": 1.5}, "x", closed=True)


@pytest.mark.parametrize(
    "field, value",
    [
        ("batch_size", 0),
        ("max_train_minutes", -1.0),
        ("model.image_size", 96),
        ("model.encoder_channels", ()),
        ("model.d_conv_impl", "fft"),
        ("model.g_conv_impl", "matmul,matmul"),  # a per-layer list of the wrong length
        ("input.audio_samples", 0),
        ("input.shuffle_seed", 2**32),
        ("optim.g.learning_rate", 0.0),
        ("optim.d.b2", 1.0),
        ("optim.g.ema_decay", 1.0),
        ("loss.r1", -1.0),
        ("loss.diff_augment", "blur"),
        ("log.every_steps", 0),
        ("log.divergence_window", 0),
        ("eval.every_steps", -1),
        ("eval.max_examples", 0),
    ],
)
def test_validate_rejects_a_bad_value_in_each_section(field, value):
  with pytest.raises(config_lib.ConfigError, match=field.replace(".", r"\.")):
    config_lib.validate(_with(helpers.tiny_config(), field, value))


def test_validate_covers_every_field():
  """Every leaf of base.py (but the paths checked at run time) refuses a wrong type, naming it."""
  config = helpers.load_config("base")
  fields = sorted(set(_leaves(config.to_dict())) - UNCHECKED)
  assert len(fields) > 60
  for field in fields:
    with pytest.raises(config_lib.ConfigError, match=field.replace(".", r"\.")):
      config_lib.validate(_with(config, field, None))


def test_explicit_launch_fields():
  config = helpers.tiny_config(coordinator_address="h:1", num_processes=2, process_id=1)
  assert config_lib.launch_args(config) == {
      "coordinator_address": "h:1",
      "num_processes": 2,
      "process_id": 1,
  }
  config_lib.validate(config)
  with pytest.raises(config_lib.ConfigError, match=r"missing: --config\.process_id"):
    config_lib.validate(helpers.tiny_config(coordinator_address="h:1", num_processes=2))


def test_the_rooms_share_config_libs_vocabularies():
  assert networks.SUPPORTED_IMAGE_SIZES is config_lib.IMAGE_SIZES
  assert networks.UPSAMPLE_MODES is config_lib.UPSAMPLE_MODES
  assert layers.CONV_IMPLS is config_lib.CONV_IMPLS and layers.SN_INITS is config_lib.SN_INITS
  assert augment.POLICIES is config_lib.DIFF_AUGMENT_POLICIES
  assert all(factory.dtype(name) for name in config_lib.DTYPES)
  assert augment.parse_policy(" color, cutout ") == ("color", "cutout")
  for size in config_lib.IMAGE_SIZES:  # how many values a per-layer conv_impl list gives
    model = helpers.tiny_config(**{"model.image_size": size}).model
    num_up = int(math.log2(size // 4))
    assert config_lib.conv_layers(model, "g") == num_up + 1
    assert config_lib.conv_layers(model, "d") == num_up
    assert config_lib.conv_layers(model, "encoder") == len(model.encoder_channels)
