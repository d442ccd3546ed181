"""Test setup: fake 2 CPU devices BEFORE jax is imported, so the pmap path runs on every run."""

import os
import pathlib

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_YOUTUBERS = REPO_ROOT.parent / "shared" / "youtubers"


def in_ci() -> bool:
  """CI=true (GitHub Actions, GitLab CI and most others set it)."""
  return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def shared_youtubers(path: pathlib.Path = SHARED_YOUTUBERS) -> pathlib.Path:
  """`path` if it holds the release; else a skip that says why, or under CI a failure: a CI run
  without the data would pass while skipping every real-data test."""
  if not (path / "train").is_dir():
    if in_ci():
      pytest.fail(
          f"../shared/youtubers missing: CI must have it beside the clone (no {path / 'train'})",
          pytrace=False,
      )
    pytest.skip(f"shared YouTubers data not found at {path} (expected ../shared/youtubers)")
  return path


@pytest.fixture(scope="session")
def youtubers_dir() -> pathlib.Path:
  """The authors' YouTubers release shared beside the repo; skips the test where it is absent
  (fails under CI=true)."""
  return shared_youtubers()
