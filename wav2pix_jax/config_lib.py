"""Run configs: ConfigError (a user's error); a saved config.json on top of base.py's defaults."""

import ml_collections


class ConfigError(ValueError):
  """A user's error, not a bug: a bad config value or flag, a missing data dir or workdir, a
  config.json that does not describe its checkpoint... The CLIs print it as one line (no
  traceback) and exit non-zero; every other exception keeps its traceback."""


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
