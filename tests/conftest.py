"""Test setup, BEFORE jax is imported: fake 2 CPU devices, so the pmap path runs on every run;
XLA's backend optimisation level 0 for the tests' programs (and the subprocesses', which inherit
XLA_FLAGS): compiling is most of a test's time and level 0 compiles a train step ~3x faster, while
the programs compute the same functions (tests/test_quality_gate.py's run, a user's, removes the
flag; set --xla_backend_optimization_level in XLA_FLAGS yourself to test at another level); and
one persistent compilation cache for the session, so a program compiled once (the tiny config's
train step, its state's init: the same programs in many tests and in every training subprocess,
which inherit the variable) is read back instead of compiled again."""

import atexit
import os
import pathlib
import shutil
import tempfile

# The flag conftest adds to XLA_FLAGS (unless XLA_FLAGS sets a level already).
OPTIMIZATION_LEVEL_0 = "--xla_backend_optimization_level=0"

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
).strip()
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " " + OPTIMIZATION_LEVEL_0
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  # A fresh cache per session (nothing carried over between runs or versions), removed at exit.
  _CACHE = tempfile.mkdtemp(prefix="wav2pix-jax-cache-")
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# The slowest test files (the slow tier's minutes), first: under scripts/test.sh's `--dist loadfile
# --no-loadscope-reorder` each worker starts on one of them instead of both meeting them last.
SLOWEST_FIRST = (
    "test_quality_gate.py",
    "test_multihost.py",
    "test_train.py",
    "test_crash_safety.py",
)


def pytest_collection_modifyitems(items) -> None:
  """Runs SLOWEST_FIRST's files first, in that order; every other file keeps its place."""
  rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


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


@pytest.fixture(scope="session")
def youtubers_tfds(youtubers_dir, tmp_path_factory) -> pathlib.Path:
  """A TFDS data_dir with the whole shared release built into it (train 4,990 / validation 555
  records), once per session: the whole-release builder test reads it, the quality gate trains
  on it."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from data_prep.youtubers import Youtubers  # pylint: disable=g-import-not-at-top

  data_dir = tmp_path_factory.mktemp("youtubers_tfds")
  Youtubers(data_dir=str(data_dir)).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(youtubers_dir))
  )
  return data_dir
