"""Training minutes of a run from its console log, across resumes: for runs whose checkpoints do
not carry them (written before `train_minutes` was saved with each checkpoint).

    python scripts/train_minutes.py LOG [--history=W/eval/history.jsonl --out=OUT.jsonl]

LOG: the console output of every `wav2pix_jax.main` start of one workdir, in order (absl lines:
"Training from step S to N", "step K/N ...", "Stopped by ... after step K"). Each start (a piece)
counts from its "Training from step" line up to the step the next piece resumed from (the steps a
piece ran past its last checkpoint were done again and count once, in the piece that kept them),
minus the periodic evaluations' seconds (as the trainer's own clock does). Prints a line per piece
and the total. With --history, writes OUT: the history's rows with `train_minutes` recomputed at
each row's step.
"""

import dataclasses
import datetime
import json
import pathlib
import re
import sys
from typing import Sequence

from absl import flags

from wav2pix_jax import cli

PROG = "train_minutes"
FLAGS = flags.FlagValues()
flags.DEFINE_string("history", None, "A run's eval/history.jsonl to rewrite.", flag_values=FLAGS)
flags.DEFINE_string(
    "out", None, "Where the rewritten history goes (with --history).", flag_values=FLAGS
)

_TIME = r"^[IWEF](\d{4} \d\d:\d\d:\d\d\.\d+) +\d+ (?:train|loop)\.py:\d+\] "
_START = re.compile(_TIME + r"Training from step (\d+) to \d+")
_STEP = re.compile(_TIME + r"step (\d+)/\d+ ")
_STOP = re.compile(_TIME + r"Stopped by \w+ after step (\d+)")


@dataclasses.dataclass
class Piece:
  """One start of the trainer: its first step and (step, seconds since its start) points."""

  start_step: int
  points: list[tuple[int, float]]

  def seconds_at(self, step: int) -> float:
    """Seconds from the piece's start to `step` (linear between logged steps)."""
    if step == self.start_step:
      return 0.0
    pts = [(self.start_step, 0.0), *self.points]
    for (s0, t0), (s1, t1) in zip(pts, pts[1:]):
      if s0 <= step <= s1:
        return t0 if s1 == s0 else t0 + (t1 - t0) * (step - s0) / (s1 - s0)
    raise ValueError(f"step {step} is not within this piece ({pts[0][0]}..{pts[-1][0]})")


def _seconds(stamp: str, year_start: list[datetime.datetime]) -> float:
  """Seconds since the log's first line (absl stamps carry no year: a wrap adds one)."""
  t = datetime.datetime.strptime("2000" + stamp, "%Y%m%d %H:%M:%S.%f")
  if not year_start:
    year_start.append(t)
  seconds = (t - year_start[0]).total_seconds()
  return seconds + 366 * 86400 if seconds < 0 else seconds


def read_pieces(text: str) -> list[Piece]:
  """The trainer starts in a console log, with their logged steps."""
  pieces, origin, start = [], [], 0.0
  for line in text.splitlines():
    for pattern in (_START, _STEP, _STOP):
      m = pattern.match(line)
      if not m:
        continue
      t, step = _seconds(m.group(1), origin), int(m.group(2))
      if pattern is _START:
        pieces.append(Piece(step, []))
        start = t
      elif pieces:
        pieces[-1].points.append((step, t - start))
  if not pieces:
    raise ValueError("no 'Training from step' line: is this a wav2pix_jax.main console log?")
  return pieces


def kept_ranges(pieces: list[Piece]) -> list[tuple[Piece, int]]:
  """Each piece with the last step of it that the run kept (the step the next piece resumed from;
  its own last logged step for the last piece)."""
  ends = [p.start_step for p in pieces[1:]]
  ends.append(pieces[-1].points[-1][0] if pieces[-1].points else pieces[-1].start_step)
  return list(zip(pieces, ends))


def minutes_at(ranges: list[tuple[Piece, int]], step: int, eval_seconds: dict[int, float]) -> float:
  """Training minutes at `step`: the kept part of every piece before it, less evaluations."""
  seconds = 0.0
  for piece, end in ranges:
    if piece.start_step > step:
      break
    seconds += piece.seconds_at(min(step, end))
  seconds -= sum(s for at, s in eval_seconds.items() if at < step)
  return seconds / 60.0


def main(argv: Sequence[str] | None = None) -> int:
  """CLI entry (the argument: the console log); returns the exit status."""
  args, status = cli.parse_with_arguments(
      FLAGS, argv, PROG, __doc__, lambda a: None if len(a) == 1 else "give one console log"
  )
  if status is not None:
    return status
  if (FLAGS.history is None) != (FLAGS.out is None):
    print(cli.error_line(PROG, "--history and --out go together"), file=sys.stderr)
    return 2
  try:
    ranges = kept_ranges(read_pieces(pathlib.Path(args[0]).read_text()))
    rows = []
    if FLAGS.history:
      rows = [json.loads(l) for l in pathlib.Path(FLAGS.history).read_text().splitlines() if l]
  except (OSError, ValueError) as e:
    print(cli.error_line(PROG, str(e)), file=sys.stderr)
    return 1
  evals = {r["step"]: r["metrics"].get("eval/seconds", 0.0) for r in rows}
  for piece, end in ranges:
    print(
        f"steps {piece.start_step}-{end}: {piece.seconds_at(end) / 60:.1f} min kept "
        f"(process ran to step {piece.points[-1][0] if piece.points else piece.start_step})"
    )
  last = ranges[-1][1]
  print(f"total to step {last}: {minutes_at(ranges, last, evals):.1f} training minutes")
  if FLAGS.history:
    fixed = [{**r, "train_minutes": round(minutes_at(ranges, r["step"], evals), 3)} for r in rows]
    pathlib.Path(FLAGS.out).write_text("".join(json.dumps(r) + "\n" for r in fixed))
  return 0


if __name__ == "__main__":
  sys.exit(main())
