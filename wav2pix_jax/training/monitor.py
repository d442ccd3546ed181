"""Signals that a GAN run is going wrong while every number is still finite.

A least-squares D has unbounded scores: a run can "diverge" with a D loss of 37 and no NaN in
sight (the paper's recipe did, on the YouTubers data, after ~1,300 steps). `DivergenceMonitor`
averages D's loss and its mean scores on real, generated and wrong-speaker pairs over windows of
steps and reports, at each log step:

  divergence/d_loss_vs_best   the window's D loss over the best (lowest) window so far
  divergence/fake_minus_real  mean score of fakes minus that of real pairs (> 0: D ranks fakes
                              above the real faces it should prefer)
  divergence/score_drift      the largest distance of a mean score from its target
                              (real_label, 0, 0)
  divergence/real_minus_wrong mean score of real minus wrong pairs (~0: D ignores the speech)

and one warning line per window while the loss has grown `loss_ratio` times past its best
window, fakes outscore real pairs, or the scores have drifted more than `max_drift` from their
targets.
"""

import collections
import dataclasses
from typing import Mapping, Optional

_KEYS = ("d_loss", "d_score_real", "d_score_fake", "d_score_wrong")


@dataclasses.dataclass
class _Window:
  first_step: int
  last_step: int
  means: dict


class DivergenceMonitor:
  """Windowed D-loss and D-score statistics with a warning when a run is diverging."""

  def __init__(
      self,
      *,
      window: int,
      real_label: float,
      loss_ratio: float = 4.0,
      fake_margin: float = 0.1,
      max_drift: float = 1.5,
      min_loss: float = 1.0,
  ):
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
      raise ValueError(f"config.log.divergence_window must be a positive integer, got {window!r}")
    self.window = window
    self.real_label = real_label
    self.loss_ratio = loss_ratio
    self.fake_margin = fake_margin
    self.max_drift = max_drift
    self.min_loss = min_loss  # a ratio on a tiny loss (0.05 -> 0.3) is not a divergence
    self._steps: collections.deque = collections.deque()  # (step, {key: value}) of recent steps
    self._best: Optional[_Window] = None

  def add(self, step: int, metrics: Mapping[str, float]) -> None:
    """Records one step's host metrics (needs the _KEYS; other keys are ignored)."""
    if not all(k in metrics for k in _KEYS):
      return
    self._steps.append((step, {k: float(metrics[k]) for k in _KEYS}))
    while self._steps and self._steps[0][0] <= step - self.window:
      self._steps.popleft()

  def _current(self) -> Optional[_Window]:
    if not self._steps:
      return None
    means = {k: sum(m[k] for _, m in self._steps) / len(self._steps) for k in _KEYS}
    return _Window(self._steps[0][0], self._steps[-1][0], means)

  def check(self) -> tuple[dict[str, float], Optional[str]]:
    """(scalars, a warning line or None) for the window ending at the last added step."""
    current = self._current()
    if current is None:
      return {}, None
    m = current.means
    full = current.last_step - current.first_step + 1 >= self.window
    if full and (self._best is None or m["d_loss"] < self._best.means["d_loss"]):
      self._best = current
    best_loss = self._best.means["d_loss"] if self._best is not None else m["d_loss"]
    targets = {"real": self.real_label, "fake": 0.0, "wrong": 0.0}
    drift = {name: abs(m[f"d_score_{name}"] - target) for name, target in targets.items()}
    scalars = {
        "divergence/d_loss_vs_best": m["d_loss"] / max(best_loss, 1e-12),
        "divergence/fake_minus_real": m["d_score_fake"] - m["d_score_real"],
        "divergence/score_drift": max(drift.values()),
        "divergence/real_minus_wrong": m["d_score_real"] - m["d_score_wrong"],
    }
    problems = []
    if not full:  # too few steps yet for a verdict (early training is noisy)
      return scalars, None
    if (
        self._best is not None
        and m["d_loss"] > self.min_loss
        and scalars["divergence/d_loss_vs_best"] > self.loss_ratio
    ):
      problems.append(
          f"D loss {m['d_loss']:.3g} is {scalars['divergence/d_loss_vs_best']:.1f}x "
          "its best window "
          f"({best_loss:.3g} at steps {self._best.first_step}-{self._best.last_step})"
      )
    if scalars["divergence/fake_minus_real"] > self.fake_margin:
      problems.append(
          f"D scores generated faces ({m['d_score_fake']:.2f}) above real pairs "
          f"({m['d_score_real']:.2f})"
      )
    if scalars["divergence/score_drift"] > self.max_drift:
      problems.append(
          (
              "D's scores left their targets (real {:.2f} vs {:g}, "
              "fake {:.2f} vs 0, wrong {:.2f} vs 0)"
          ).format(m["d_score_real"], self.real_label, m["d_score_fake"], m["d_score_wrong"])
      )
    if not problems:
      return scalars, None
    return scalars, (
        f"training looks divergent over steps {current.first_step}-{current.last_step}: "
        + "; ".join(problems)
        + ". Lower the learning rates, or see README 'Results' "
        "for what makes the paper's recipe diverge."
    )


class QualityHistory:
  """<workdir>/eval/history.jsonl: one JSON line per periodic evaluation.

  Each line: {"step", "train_minutes", "metrics": {"eval/<row>/<metric>": value}}, where
  train_minutes is the wall time spent training up to that step, compilation included and the
  evaluations themselves excluded, summed over resumed runs. A resumed run first drops the lines
  of steps after its checkpoint (work that was lost), so the file describes one continuous run.
  """

  def __init__(self, path: str, *, start_step: int):
    import json  # pylint: disable=g-import-not-at-top
    import os  # pylint: disable=g-import-not-at-top

    self.path = path
    self._json = json
    rows = []
    if os.path.exists(path):
      with open(path) as f:
        for line in f:
          line = line.strip()
          if not line:
            continue
          try:
            row = json.loads(line)
          except ValueError:
            continue  # a line cut by a crash mid-write
          if isinstance(row, dict) and row.get("step", 0) <= start_step:
            rows.append(row)
    self.rows = rows
    self.minutes_before = float(rows[-1]["train_minutes"]) if rows else 0.0
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:  # rewritten without the lost steps
      for row in rows:
        f.write(json.dumps(row) + "\n")

  def append(self, step: int, train_minutes: float, metrics: Mapping[str, float]) -> dict:
    """Adds one evaluation (`train_minutes`: training wall time so far, resumed runs included)."""
    row = {
        "step": int(step),
        "train_minutes": round(train_minutes, 3),
        "metrics": {k: float(v) for k, v in metrics.items()},
    }
    self.rows.append(row)
    with open(self.path, "a") as f:
      f.write(self._json.dumps(row) + "\n")
    return row
