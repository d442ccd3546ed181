"""notebooks/generate.ipynb: every code cell runs, in order.

It runs against a tiny saved run and a test wav.
"""

import pathlib
import sys
import types

import nbformat
import numpy as np
import pytest
import soundfile
from PIL import Image

from test_inference import save_run, tiny_config  # the same tiny workdir as the inference tests

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "generate.ipynb"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  path = tmp_path_factory.mktemp("notebook") / "wd"
  save_run(path, tiny_config(), steps=(2, 4))
  return path


def _code_cells():
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(notebook)
  return [cell.source for cell in notebook.cells if cell.cell_type == "code"]


def _run_notebook(monkeypatch, tmp_path, env):
  """Executes every code cell in one namespace, as a kernel would.

  Returns (namespace, displayed).
  """
  displayed = []
  ipython = types.ModuleType("IPython")
  ipython.display = types.ModuleType("IPython.display")
  ipython.display.display = displayed.append
  monkeypatch.setitem(sys.modules, "IPython", ipython)
  monkeypatch.setitem(sys.modules, "IPython.display", ipython.display)
  for name, value in env.items():
    monkeypatch.setenv(name, str(value))
  monkeypatch.chdir(tmp_path)  # paths must not depend on the working directory
  namespace = {"__name__": "__main__"}
  for index, source in enumerate(_code_cells()):
    # pylint: disable-next=exec-used
    exec(compile(source, f"{NOTEBOOK.name}[code cell {index}]", "exec"), namespace)
  return namespace, displayed


def _cell(image: Image.Image, row: int, col: int, size: int, pad: int = 2) -> np.ndarray:
  left, top = pad + col * (size + pad), pad + row * (size + pad)
  return np.asarray(image.crop((left, top, left + size, top + size)))


def test_committed_without_outputs():
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  code = [cell for cell in notebook.cells if cell.cell_type == "code"]
  assert len(code) >= 5 and any(cell.cell_type == "markdown" for cell in notebook.cells)
  for cell in code:
    assert (
        cell.outputs == [] and cell.execution_count is None
    ), "clear the notebook's outputs before committing"


@pytest.mark.slow
def test_notebook_runs_on_a_wav(workdir, tmp_path, monkeypatch, capsys):
  rate, seconds = 16_000, 2.0
  t = np.arange(int(rate * seconds)) / rate
  speech = 0.3 * np.sin(2 * np.pi * 160 * t) * (1 + np.sin(2 * np.pi * 3 * t))
  wav = tmp_path / "speech.wav"
  soundfile.write(wav, speech.astype(np.float32), rate, subtype="PCM_16")
  output = tmp_path / "grids"

  ns, displayed = _run_notebook(
      monkeypatch,
      tmp_path,
      {"WAV2PIX_WORKDIR": workdir, "WAV2PIX_AUDIO": wav, "WAV2PIX_OUTPUT": output},
  )

  generator = ns["generator"]
  assert generator.step == 4  # the newest checkpoint
  size, window, scale = 64, 1_024, ns["SCALE"]
  assert generator.image_size == size and generator.window == window
  hop = int(round(ns["EVERY"] * rate))
  strip_len = min(ns["MAX_STRIP"], 1 + (speech.size - window) // hop)
  assert strip_len >= 2
  expected_shapes = {
      "face": (1, size, size, 3),
      "strip": (strip_len, size, size, 3),
      "samples": (len(ns["SEEDS"]), size, size, 3),
  }
  for name, shape in expected_shapes.items():
    assert ns[name].dtype == np.uint8 and ns[name].shape == shape, name
  # The faces are the generator's for this recording (loaded through audio.load_audio).
  waveform = soundfile.read(wav, dtype="float32")[0]
  np.testing.assert_array_equal(ns["face"], generator.generate(waveform, rate))
  np.testing.assert_array_equal(
      ns["strip"][1], generator.generate(waveform[hop : hop + window], rate)[0]
  )
  # Dropout sampling gives different faces for different seeds.
  assert len({ns["samples"][i].tobytes() for i in range(len(ns["SEEDS"]))}) == len(ns["SEEDS"])

  cell = size * scale
  for png, rows in (
      (output / "faces.png", [ns["face"], ns["strip"]]),
      (output / "samples.png", [ns["face"], ns["samples"]]),
  ):
    assert png.is_file()
    image = Image.open(png)
    cols = max(len(r) for r in rows)
    assert image.size == (cols * (cell + 2) + 2, 2 * (cell + 2) + 2)
    for row, faces in enumerate(rows):  # every tile is its face, magnified
      for col, face in enumerate(faces):
        np.testing.assert_array_equal(
            _cell(image, row, col, cell), face.repeat(scale, 0).repeat(scale, 1)
        )
  assert [type(x) for x in displayed] == [Image.Image, Image.Image]
  printed = capsys.readouterr().out
  assert "step 4: the latest checkpoint" in printed and "alice, bob" in printed


@pytest.mark.slow
def test_notebook_without_audio_uses_synthetic_speech(workdir, tmp_path, monkeypatch):
  ns, _ = _run_notebook(
      monkeypatch,
      tmp_path,
      {"WAV2PIX_WORKDIR": workdir, "WAV2PIX_AUDIO": "", "WAV2PIX_OUTPUT": tmp_path / "out"},
  )
  assert "not in training" in ns["source"]
  assert ns["waveform"].size == 2 * 20_000  # two 1.25 s synthetic clips at 16 kHz
  strip_len = min(ns["MAX_STRIP"], 1 + (2 * 20_000 - 1_024) // int(ns["EVERY"] * 16_000))
  assert ns["strip"].shape == (strip_len, 64, 64, 3) and ns["strip"].dtype == np.uint8
  assert (tmp_path / "out" / "faces.png").is_file() and (tmp_path / "out" / "samples.png").is_file()
