"""What the command-line tools share: flags, errors and the console.

The tools: main, evaluate, generate, demo, attributes and the data_prep builders' __main__.

- `parse_flags`: absl flags into a tool's OWN `flags.FlagValues`, so that `main(argv)` can be
  called repeatedly (tests, notebooks) and two tools imported in one process (both define
  --workdir, --step, --out) don't collide in absl's global FLAGS. `parse_command_line`: the
  same plus --help and a bad command line's one line and exit status 2, for tools with no
  checks of their own.
- `error_line`: a user's error (`config_lib.ConfigError`, a bad path) as the one line a tool
  prints before exiting non-zero; any other exception is a bug and keeps its traceback.
- `quiet_library_logs`: the console shows our own progress lines and every library's warnings,
  not the INFO chatter of Orbax, TFDS, grain, clu or JAX (`--library_logs` or
  WAV2PIX_LIBRARY_LOGS=1 brings it back).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable, Sequence

from absl import flags

LIBRARY_LOGS_ENV = "WAV2PIX_LIBRARY_LOGS"
LIBRARY_LOGS_HELP = (
    "Show the INFO logs of libraries (Orbax, TFDS, grain, clu, JAX) on the console; default: "
    f"only their warnings and errors (or set {LIBRARY_LOGS_ENV}=1)."
)
HELP_ARGS = ("-h", "-help", "--help", "--helpshort", "--helpfull")


class UsageError(Exception):
  """A bad command line (unknown flag, bad flag value, missing required flag): exit status 2."""


def define_checkpoint_flags(flag_values: flags.FlagValues) -> None:
  """--step and --checkpoint, as every tool that loads a trained generator reads them."""
  flags.DEFINE_integer(
      "step",
      None,
      "Checkpoint step (default: the one --checkpoint picks).",
      flag_values=flag_values,
  )
  flags.DEFINE_enum(
      "checkpoint",
      "best",
      ["best", "latest"],
      "best: the best checkpoint by periodic validation where the run kept one (<workdir>/best), "
      "else the latest; latest: the newest checkpoint.",
      flag_values=flag_values,
  )


def parse_flags(flag_values: flags.FlagValues, argv: Sequence[str] | None, prog: str) -> list[str]:
  """Parses `argv` (no program name; None: sys.argv[1:]) into `flag_values`, from the defaults.

  Returns the positional arguments; raises UsageError on a bad command line.
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  flag_values.unparse_flags()  # every call starts from the defaults
  try:
    return flag_values([prog, *argv])[1:]
  except flags.Error as e:
    raise UsageError(str(e)) from None


def wants_help(argv: Sequence[str] | None) -> bool:
  """Whether the command line asks for the flags' help."""
  return any(arg in HELP_ARGS for arg in (sys.argv[1:] if argv is None else argv))


def help_text(flag_values: flags.FlagValues, prog: str, doc: str | None) -> str:
  """`prog`'s usage: its module docstring, then its own flags (not absl's built-in ones)."""
  module_flags = [
      f for m, fs in flag_values.flags_by_module_dict().items() for f in fs if m != "absl.flags"
  ]
  lines = [doc.strip() if doc else prog, "", "flags:"]
  for flag in sorted(module_flags, key=lambda f: f.name):
    default = "" if "default" in flag.help else f" (default: {flag.default!r})"
    lines.append(f"  --{flag.name}: {flag.help}{default}")
  return "\n".join(lines)


def parse_command_line(
    flag_values: flags.FlagValues, argv: Sequence[str] | None, prog: str, doc: str | None
) -> int | None:
  """Parses a tool's whole command line (flags only) into `flag_values`.

  Returns None to go on, else the exit status: 0 after printing the help, 2 after printing a bad
  command line (unknown flag, bad value, missing required flag, positional argument) as one line.
  """
  _, status = parse_with_arguments(
      flag_values, argv, prog, doc, lambda args: f"unexpected arguments {args}" if args else None
  )
  return status


def parse_with_arguments(
    flag_values: flags.FlagValues,
    argv: Sequence[str] | None,
    prog: str,
    doc: str | None,
    check: Callable[[list[str]], str | None],
) -> tuple[list[str], int | None]:
  """`parse_command_line` for tools that take positional arguments.

  `check(arguments)` returns what is wrong with them (one line) or None. Returns (the arguments,
  None) to go on, else ([], the exit status): 0 after the help, 2 after a bad command line.
  """
  if wants_help(argv):
    print(help_text(flag_values, prog, doc))
    return [], 0
  try:
    arguments = parse_flags(flag_values, argv, prog)
    problem = check(arguments)
    if problem:
      raise UsageError(problem)
  except UsageError as e:
    print(error_line(prog, e), file=sys.stderr)
    return [], 2
  return arguments, None


def error_line(prog: str, error: BaseException | str) -> str:
  """`<prog>: error: <message on one line>`."""
  return f"{prog}: error: {' '.join(str(error).split())}"


def library_logs_wanted(flag: bool = False) -> bool:
  """The --library_logs flag, or WAV2PIX_LIBRARY_LOGS set to anything but "", "0" or "false"."""
  return flag or os.environ.get(LIBRARY_LOGS_ENV, "").strip().lower() not in ("", "0", "false")


# Directories whose log records are ours (the package, the dataset builders).
_OUR_DIRS = tuple(
    {
        os.path.join(path, "")
        for package in ("wav2pix_jax", "data_prep")
        for path in (
            os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), package),
            os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), package),
        )
    }
)


class _OursOrWarnings(logging.Filter):
  """Passes our own records at every level and everyone's warnings and errors."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or record.pathname.startswith(_OUR_DIRS)


_FILTER = _OursOrWarnings()


def quiet_library_logs(show: bool = False) -> None:
  """Keeps libraries' INFO / DEBUG records off the console (ours stay); `show`: let them through.

  Orbax, TFDS, grain and clu log through absl (the "absl" logger, one handler for everyone), so
  the records are told apart by the file that logged them. Idempotent.
  """
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top

  handlers = set(logging.getLogger().handlers) | {absl_logging.get_absl_handler()}
  for handler in handlers:
    if show:
      handler.removeFilter(_FILTER)
    elif _FILTER not in handler.filters:
      handler.addFilter(_FILTER)
