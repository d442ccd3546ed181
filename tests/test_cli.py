"""What the command-line tools share (wav2pix_jax/cli.py): absl flags parsed per call, user errors
as one line while bugs keep their traceback, and a console without the libraries' INFO logs."""

import logging
import os
import pathlib
import subprocess
import sys

from absl import flags
from absl import logging as absl_logging
import pytest

from wav2pix_jax import cli
from wav2pix_jax import evaluate
from wav2pix_jax.evaluation import evaluator
from wav2pix_jax import generate

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_parse_flags_starts_from_the_defaults_every_call():
  fv = flags.FlagValues()
  flags.DEFINE_multi_string("audio", None, "files", flag_values=fv)
  flags.DEFINE_integer("step", None, "step", flag_values=fv)
  assert cli.parse_flags(fv, ["--audio", "a.wav", "b.wav", "--step=3"], "x") == ["b.wav"]
  assert fv.audio == ["a.wav"] and fv.step == 3
  assert cli.parse_flags(fv, ["--audio=c.wav"], "x") == []
  assert fv.audio == ["c.wav"] and fv.step is None  # not left over from the previous call
  with pytest.raises(cli.UsageError, match="step"):
    cli.parse_flags(fv, ["--step=three"], "x")
  with pytest.raises(cli.UsageError, match="bogus"):
    cli.parse_flags(fv, ["--bogus=1"], "x")


def test_parse_with_arguments_checks_the_positional_arguments(capsys):
  fv = flags.FlagValues()
  flags.DEFINE_integer("n", 1, "n", flag_values=fv)
  check = lambda args: None if args else "give the files"
  assert cli.parse_with_arguments(fv, ["a", "--n=2", "b"], "x", "doc", check) == (["a", "b"], None)
  assert fv.n == 2
  assert cli.parse_with_arguments(fv, ["--n=3"], "x", "doc", check) == ([], 2)
  assert capsys.readouterr().err == "x: error: give the files\n"
  assert cli.parse_with_arguments(fv, ["a", "--n=z"], "x", "doc", check) == ([], 2)
  assert capsys.readouterr().err.startswith("x: error:")
  assert cli.parse_with_arguments(fv, ["--help"], "x", "the doc", check) == ([], 0)
  assert capsys.readouterr().out.startswith("the doc")
  # parse_command_line is the same with no positional argument allowed
  assert cli.parse_command_line(fv, ["a"], "x", "doc") == 2
  assert "unexpected arguments ['a']" in capsys.readouterr().err
  assert cli.parse_command_line(fv, ["--n=4"], "x", "doc") is None and fv.n == 4


def test_both_tools_keep_their_flags_and_usage_errors_exit_2(tmp_path, capsys):
  """Both tools import into one process (each has its own FlagValues); bad command lines exit 2."""
  assert evaluate.main(["--split=test"]) == 2  # --workdir is required
  err = capsys.readouterr().err
  assert err.startswith("wav2pix-evaluate: error:") and "workdir" in err and err.count("\n") == 1
  assert generate.main([f"--workdir={tmp_path}", f"--out={tmp_path}", "--fps=x"]) == 2
  assert capsys.readouterr().err.startswith("wav2pix-generate: error:")
  assert evaluate.main(["--help"]) == 0
  printed = capsys.readouterr().out
  for name in ("workdir", "split", "out", "step", "max_examples", "batch_size", "no_dlib"):
    assert f"--{name}:" in printed
  assert generate.main(["--help"]) == 0
  assert "--audio:" in capsys.readouterr().out


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path, capsys, monkeypatch):
  from wav2pix_jax import config_lib

  def raises(error):
    def fail(*args, **kwargs):
      raise error

    return fail

  argv = [f"--workdir={tmp_path}", f"--out={tmp_path / 'out'}"]
  monkeypatch.setattr(evaluator, "evaluate_workdir", raises(config_lib.ConfigError("bad\nvalue")))
  assert evaluate.main(argv) == 1
  assert capsys.readouterr().err == "wav2pix-evaluate: error: bad value\n"
  for bug in (ValueError("a bug"), KeyError("a bug"), RuntimeError("a bug")):
    monkeypatch.setattr(evaluator, "evaluate_workdir", raises(bug))
    with pytest.raises(type(bug), match="a bug"):
      evaluate.main(argv)
  (tmp_path / "a.wav").write_bytes(b"")
  argv = [f"--workdir={tmp_path}", f"--audio={tmp_path / 'a.wav'}", f"--out={tmp_path / 'o'}"]
  from wav2pix_jax.serving import inference

  monkeypatch.setattr(inference, "load", raises(config_lib.ConfigError("no checkpoint")))
  assert generate.main(argv) == 1
  assert capsys.readouterr().err == "wav2pix-generate: error: no checkpoint\n"
  monkeypatch.setattr(inference, "load", raises(ValueError("a bug")))
  with pytest.raises(ValueError, match="a bug"):
    generate.main(argv)


def _record(pathname: str, level: int) -> logging.LogRecord:
  return logging.LogRecord("absl", level, pathname, 1, "message", None, None)


def test_quiet_console_keeps_our_records_and_everyone_s_warnings(monkeypatch):
  import orbax.checkpoint as ocp

  handler = absl_logging.get_absl_handler()
  ours = str(REPO / "wav2pix_jax" / "training" / "loop.py")
  builder = str(REPO / "data_prep" / "synthetic" / "synthetic_dataset_builder.py")
  library = os.path.join(os.path.dirname(ocp.__file__), "checkpoint_manager.py")
  try:
    cli.quiet_library_logs()
    assert handler.filter(_record(ours, logging.INFO))
    assert handler.filter(_record(builder, logging.INFO))
    assert not handler.filter(_record(library, logging.INFO))
    assert handler.filter(_record(library, logging.WARNING))
    cli.quiet_library_logs(show=True)
    assert handler.filter(_record(library, logging.INFO))
  finally:
    cli.quiet_library_logs(show=True)
  monkeypatch.delenv(cli.LIBRARY_LOGS_ENV, raising=False)
  assert not cli.library_logs_wanted() and cli.library_logs_wanted(True)
  for value, wanted in (("1", True), ("true", True), ("0", False), ("", False)):
    monkeypatch.setenv(cli.LIBRARY_LOGS_ENV, value)
    assert cli.library_logs_wanted() is wanted


@pytest.mark.slow
def test_train_cli_config_error_is_one_line(tmp_path):
  """A real `python -m wav2pix_jax.main` with a bad config value: exit 1, one error line, no
  traceback."""
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
  done = subprocess.run(
      [
          sys.executable,
          "-m",
          "wav2pix_jax.main",
          "--config=configs/tiny.py",
          f"--workdir={tmp_path / 'wd'}",
          "--config.batch_size=0",
      ],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert done.returncode == 1, done.stderr[-3000:]
  assert "Traceback" not in done.stderr, done.stderr[-3000:]
  assert done.stderr.strip().splitlines()[-1] == (
      "wav2pix-train: error: config.batch_size must be a positive integer, got 0"
  )
