"""configs/*.py: the DESIGN.md sections, a comment per field, command-line overrides, factory."""

import importlib.util
import pathlib
import re

from absl import flags
import jax.numpy as jnp
from ml_collections import config_flags
import pytest

from wav2pix_jax.models import factory
from wav2pix_jax.models import networks

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ("base", "base_128", "demo", "demo_unseen", "tiny", "authors", "fast")

DESIGN_FIELDS = {
    "": ("seed", "batch_size", "num_train_steps"),
    "model": (
        "image_size",
        "embed_dim",
        "encoder_channels",
        "encoder_kernel_size",
        "encoder_stride",
        "encoder_hidden",
        "classifier_hidden",
        "g_base_channels",
        "d_base_channels",
        "dropout_rate",
        "conv_impl",
        "dtype",
        "param_dtype",
    ),
    "input": (
        "dataset",
        "data_dir",
        "manual_dir",
        "train_split",
        "eval_split",
        "audio_samples",
        "sample_rate",
        "preemphasis",
        "num_workers",
        "shuffle_seed",
    ),
    "optim.g": ("learning_rate", "b1", "b2"),
    "optim.d": ("learning_rate", "b1", "b2"),
    "loss": ("real_label", "adversarial", "feature_matching", "l1", "speaker_ce"),
    "log": ("every_steps", "image_every_steps", "checkpoint_every_steps", "max_checkpoints"),
}


def _load(name):
  spec = importlib.util.spec_from_file_location(f"cfg_test_{name}", REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _section(config, dotted):
  for key in filter(None, dotted.split(".")):
    config = config[key]
  return config


@pytest.mark.parametrize("name", CONFIGS)
def test_config_has_design_sections(name):
  config = _load(name)
  for section, fields in DESIGN_FIELDS.items():
    for field in fields:
      assert field in _section(config, section), f"{name}: missing {section}.{field}"


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds_models_and_encoder_fits_the_window(name):
  config = _load(name)
  g = factory.make_generator(config.model, num_speakers=3)
  d = factory.make_discriminator(config.model)
  assert g.image_size == d.image_size == config.model.image_size
  assert g.conv_impl in ("xla", "subpixel", "matmul")  # "auto" resolved
  assert g.dtype == jnp.float32
  steps = networks.encoder_output_length(
      config.input.audio_samples,
      num_blocks=len(config.model.encoder_channels),
      kernel_size=config.model.encoder_kernel_size,
      stride=config.model.encoder_stride,
      padding=(6, 7),
  )
  assert steps >= 1


def test_base_is_the_paper_recipe():
  config = _load("base")
  assert config.input.dataset == "youtubers"
  assert config.batch_size == 64 and config.model.image_size == 64
  assert config.optim.g.learning_rate == 1e-4 and config.optim.d.learning_rate == 4e-4
  assert (
      (config.optim.g.b1, config.optim.g.b2)
      == (0.5, 0.999)
      == (config.optim.d.b1, config.optim.d.b2)
  )
  assert (
      config.loss.real_label,
      config.loss.adversarial,
      config.loss.feature_matching,
      config.loss.l1,
      config.loss.speaker_ce,
  ) == (0.9, 1.0, 100.0, 50.0, 20.0)
  assert config.model.encoder_channels == (16, 32, 128, 256, 512, 1024)
  assert config.input.audio_samples == 16_000
  # resolve() on both sides: ../shared may be a symbolic link
  assert (
      pathlib.Path(config.input.manual_dir).resolve()
      == (REPO.parent / "shared" / "youtubers").resolve()
  )


def test_missing_shared_youtubers_skips_but_fails_under_ci(tmp_path, monkeypatch):
  import conftest  # pylint: disable=g-import-not-at-top

  missing = tmp_path / "youtubers"
  monkeypatch.delenv("CI", raising=False)
  with pytest.raises(pytest.skip.Exception, match="shared YouTubers data not found at "):
    conftest.shared_youtubers(missing)
  monkeypatch.setenv("CI", "true")
  with pytest.raises(
      pytest.fail.Exception,
      match=r"^\.\./shared/youtubers missing: CI must have it beside the clone \(no ",
  ):
    conftest.shared_youtubers(missing)
  (missing / "train").mkdir(parents=True)
  assert conftest.shared_youtubers(missing) == missing


def test_base_128_only_changes_the_image_size():
  base, big = _load("base").to_dict(), _load("base_128").to_dict()
  assert big["model"].pop("image_size") == 128 and base["model"].pop("image_size") == 64
  assert big == base


def test_demo_window_fits_the_synthetic_clips():
  # pylint: disable-next=g-import-not-at-top
  from data_prep.synthetic import synthetic_dataset_builder as synthetic

  config = _load("demo")
  assert config.input.dataset == "synthetic_talking_faces"
  assert config.input.audio_samples <= synthetic.CLIP_SAMPLES
  assert config.model.image_size == synthetic.IMAGE_SIZE


def test_demo_unseen_is_the_demo_on_synthetic_voice_faces():
  # pylint: disable-next=g-import-not-at-top
  from data_prep.synthetic_voice_faces import synthetic_voice_faces_dataset_builder as svf

  demo, unseen = _load("demo").to_dict(), _load("demo_unseen").to_dict()
  assert unseen["input"].pop("dataset") == "synthetic_voice_faces"
  assert demo["input"].pop("dataset") == "synthetic_talking_faces"
  assert unseen.pop("num_train_steps") > demo.pop("num_train_steps")
  assert unseen["log"].pop("checkpoint_every_steps") and demo["log"].pop("checkpoint_every_steps")
  assert unseen["eval"].pop("every_steps") == 0 and demo["eval"].pop("every_steps") > 0
  assert unseen == demo  # same model, optimiser, losses and windows
  assert unseen["input"]["audio_samples"] <= svf.CLIP_SECONDS * svf.SAMPLE_RATE


@pytest.mark.parametrize("name", ("base", "demo", "demo_unseen", "tiny"))
def test_every_field_has_a_comment(name):
  lines = (REPO / "configs" / f"{name}.py").read_text().splitlines()
  assignments = [
      (line, previous)
      for previous, line in zip([""] + lines, lines)
      if re.match(
          r"\s+(config|model|inp|loss|log)(\.\w+)+ = (?!(\w+ = )?ml_collections\.ConfigDict)", line
      )
      and "get_config()" not in line
  ]
  assert assignments
  # The comment ends the line, or (when that would pass 100 columns) is the line above.
  uncommented = [
      line.strip()
      for line, previous in assignments
      if "#" not in line and not previous.lstrip().startswith("#")
  ]
  assert not uncommented, f"fields without a comment in {name}.py: {uncommented}"


def test_every_field_is_overridable_from_the_command_line():
  argv = [
      "prog",
      f"--config={REPO / 'configs' / 'base_128.py'}",
      "--config.optim.d.learning_rate=2e-4",
      "--config.model.encoder_channels=(8,16)",
      "--config.input.dataset=wav2pix_videos",
      "--config.batch_size=32",
      "--config.skip_nonfinite=True",
  ]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  config = flag_values.config
  assert config.optim.d.learning_rate == 2e-4
  assert tuple(config.model.encoder_channels) == (8, 16)
  assert config.input.dataset == "wav2pix_videos"
  assert config.batch_size == 32 and config.skip_nonfinite is True
  assert config.model.image_size == 128


def test_unknown_image_size_names_the_field():
  config = _load("tiny")
  config.model.image_size = 96
  with pytest.raises(ValueError, match=r"model\.image_size"):
    factory.make_generator(config.model, num_speakers=2)
  with pytest.raises(ValueError, match=r"model\.image_size"):
    factory.make_discriminator(config.model)


def test_bad_dtype_and_conv_impl_name_the_field():
  config = _load("tiny")
  config.model.param_dtype = "float64x"
  with pytest.raises(ValueError, match=r"model\.param_dtype"):
    factory.make_discriminator(config.model)
  config = _load("tiny")
  config.model.conv_impl = "cudnn"
  with pytest.raises(ValueError, match=r"model\.conv_impl"):
    factory.make_discriminator(config.model)
  assert factory.dtype("bfloat16") == jnp.bfloat16
