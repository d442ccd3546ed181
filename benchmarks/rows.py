"""Benchmark rows: names, parsing, and the default set.

A row name says what is timed:

    train-<size>-b<batch>[-<conv_impl>][-<dtype>]     one training iteration (D then G update)
    phases-<size>-b<batch>[-<conv_impl>][-<dtype>]    d_update and g_update timed apart
    generate-<size>-b<batch>[-<conv_impl>][-<dtype>]  Wav2PixG apply, train=False
    pipeline-<size>-b<batch>[-w<workers>]             input pipeline batches on real records
    peak                                              2048^3 float32 matmul (practical peak)

conv_impl is "xla" or "subpixel" (default: the config's "auto"); dtype "f32" (default) or "bf16".
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Sequence

KINDS = ("train", "phases", "generate", "pipeline", "peak")
CONV_IMPLS = ("xla", "subpixel", "auto")
DTYPES = {"f32": "float32", "bf16": "bfloat16"}

DEFAULT_ROWS = (
    "peak",
    "train-64-b16-xla",
    "train-64-b16-subpixel",
    "train-64-b64-xla",
    "train-64-b64-subpixel",
    "train-128-b16-xla",
    "train-128-b16-subpixel",
    "train-128-b64-subpixel",
    "generate-64-b1-xla",
    "generate-64-b1-subpixel",
    "generate-64-b64-xla",
    "generate-64-b64-subpixel",
    "generate-128-b1-subpixel",
    "generate-128-b64-subpixel",
    "phases-64-b64-subpixel",
    "pipeline-64-b64",
    "pipeline-64-b64-w2",
    "pipeline-128-b64",
)


@dataclasses.dataclass(frozen=True)
class Row:
  """One thing to time."""

  kind: str
  image_size: int = 0
  batch: int = 0
  conv_impl: str = "auto"
  dtype: str = "f32"
  workers: int | None = None  # pipeline rows: grain worker processes (None: the config's)

  @property
  def name(self) -> str:
    if self.kind == "peak":
      return "peak"
    parts = [self.kind, str(self.image_size), f"b{self.batch}"]
    if self.kind == "pipeline" and self.workers is not None:
      parts.append(f"w{self.workers}")
    if self.kind != "pipeline":
      if self.conv_impl != "auto":
        parts.append(self.conv_impl)
      if self.dtype != "f32":
        parts.append(self.dtype)
    return "-".join(parts)

  @property
  def group(self) -> tuple:
    """Rows that the same PyTorch reference run compares with."""
    return (self.kind, self.image_size, self.batch)

  @property
  def torch_mode(self) -> str | None:
    """The reference's --mode for this row, or None where it has no counterpart."""
    return {"train": "train", "generate": "infer", "peak": "peak"}.get(self.kind)


def parse_row(name: str) -> Row:
  """Parses a row name (see the module docstring); ValueError with the grammar if malformed."""
  parts = name.strip().split("-")
  try:
    kind = parts[0]
    if kind not in KINDS:
      raise ValueError(f"unknown kind {kind!r}")
    if kind == "peak":
      if len(parts) != 1:
        raise ValueError("'peak' takes no fields")
      return Row("peak")
    size = int(parts[1])
    if size not in (64, 128):
      raise ValueError(f"image size must be 64 or 128, got {size}")
    if not parts[2].startswith("b"):
      raise ValueError(f"batch field must look like b64, got {parts[2]!r}")
    batch = int(parts[2][1:])
    if batch < 1:
      raise ValueError("batch must be >= 1")
    conv_impl, dtype, workers = "auto", "f32", None
    for extra in parts[3:]:
      if kind == "pipeline" and extra[:1] == "w" and extra[1:].isdigit():
        workers = int(extra[1:])
      elif extra in CONV_IMPLS and kind != "pipeline":
        conv_impl = extra
      elif extra in DTYPES and kind != "pipeline":
        dtype = extra
      else:
        raise ValueError(f"unknown field {extra!r}")
    return Row(kind, size, batch, conv_impl, dtype, workers)
  except (IndexError, ValueError) as e:
    raise ValueError(
        f"bad row name {name!r} ({e}); expected e.g. train-64-b64-subpixel, "
        f"generate-128-b1-xla-bf16, pipeline-64-b64 or peak"
    ) from None


def select_rows(spec: str | None, defaults: Sequence[str] = DEFAULT_ROWS) -> list[Row]:
  """Rows from a comma-separated spec of names or glob patterns over the defaults.

  "train-64-*" picks default rows by pattern; an exact name not in the defaults is parsed
  (so any valid row can be asked for). No spec: all defaults."""
  if not spec:
    return [parse_row(n) for n in defaults]
  names: list[str] = []
  for item in (s.strip() for s in spec.split(",")):
    if not item:
      continue
    if any(c in item for c in "*?["):
      matched = fnmatch.filter(defaults, item)
      if not matched:
        raise ValueError(f"row pattern {item!r} matches no default row: {list(defaults)}")
      names += matched
    else:
      names.append(item)
  rows: list[Row] = []
  for n in names:
    row = parse_row(n)
    if row not in rows:
      rows.append(row)
  return rows


def schedule(rows: Sequence[Row], torch_variants: Sequence[str]) -> list[tuple[str, object]]:
  """The run order: ("jax", row) and ("torch", (row_group, variant)) items, interleaved.

  Rows are grouped by (kind, size, batch); within a group, JAX rows and the reference's runs
  alternate, so load changes on the shared machine hit both sides alike. A reference run is
  scheduled once per group and variant, however many JAX variants the group has."""
  groups: dict[tuple, list[Row]] = {}
  for row in rows:
    groups.setdefault(row.group, []).append(row)
  order: list[tuple[str, object]] = []
  for i, (group, members) in enumerate(groups.items()):
    jax_items = [("jax", r) for r in members]
    torch_items = (
        [("torch", (members[0], v)) for v in torch_variants] if members[0].torch_mode else []
    )
    if members[0].torch_mode != "train":
      torch_items = torch_items[:1]  # --detach-in-d only changes the training step
    # Alternate which side goes first from group to group.
    first, second = (jax_items, torch_items) if i % 2 == 0 else (torch_items, jax_items)
    for k in range(max(len(first), len(second))):
      if k < len(first):
        order.append(first[k])
      if k < len(second):
        order.append(second[k])
  return order
