"""The package's rooms and what each may import (DESIGN.md, "Layout: rooms by role")."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "wav2pix_jax"
ENTRY_POINTS = {"main", "evaluate", "generate", "demo", "attributes"}
SHARED = {"config_lib", "cli", "checkpoints"}
# Each room's allowed imports from the package (arrows point down, never back up).
ALLOWED = {
    "models": {"models", "config_lib"},
    "data": {"data", "config_lib"},
    "serving": {"serving", "models", "data", "checkpoints", "config_lib"},
    "evaluation": {"evaluation", "serving", "models", "data", "checkpoints", "config_lib"},
    "training": {"training", "evaluation", "serving", "models", "data"} | SHARED,
}


def _project_imports(path: pathlib.Path) -> set[str]:
  """The first component under wav2pix_jax of everything `path` imports from the package."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      parts = node.module.split(".")
      if parts[0] != "wav2pix_jax":
        continue
      if len(parts) > 1:
        found.add(parts[1])
      else:
        found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.Import):
      for alias in node.names:
        parts = alias.name.split(".")
        if parts[0] == "wav2pix_jax" and len(parts) > 1:
          found.add(parts[1])
  return found


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_rooms_import_only_down(room):
  modules = sorted((PACKAGE / room).glob("*.py"))
  assert modules, f"wav2pix_jax/{room}/ has no modules"
  for path in modules:
    imported = _project_imports(path)
    wrong = imported - ALLOWED[room]
    assert not wrong, f"wav2pix_jax/{room}/{path.name} imports {sorted(wrong)}"


def test_every_module_lives_in_a_room_or_is_an_entry_point():
  top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
  assert top == ENTRY_POINTS | SHARED, f"top-level modules: {sorted(top)}"
  rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
  assert rooms == set(ALLOWED), f"rooms: {sorted(rooms)}"


def test_the_import_check_sees_a_violation(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text("from wav2pix_jax.training import step\nfrom wav2pix_jax import evaluate\n")
  assert _project_imports(bad) == {"training", "evaluate"}
