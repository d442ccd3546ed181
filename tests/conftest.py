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


@pytest.fixture(scope="session")
def youtubers_dir() -> pathlib.Path:
  """The authors' YouTubers release shared beside the repo; skips the test where it is absent."""
  if not (SHARED_YOUTUBERS / "train").is_dir():
    pytest.skip(
        f"shared YouTubers data not found at {SHARED_YOUTUBERS} (expected ../shared/youtubers)"
    )
  return SHARED_YOUTUBERS
