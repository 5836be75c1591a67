"""The notebooks of `colabs/` run top to bottom headless, and are what their generator writes.

Each notebook is executed with `nbclient` on a fresh `python3` kernel in FAST mode
(`ALIGNMENT_NOTEBOOK_FAST=1` shrinks every loop), in its own temporary directory (also its
TMPDIR, so workdirs it creates stay there); any cell error fails the test. A notebook must draw
at least one picture. The stored notebooks must have no outputs and equal what
`colabs/make_notebooks.py` generates, so that the reviewed generator is what ships.
"""

import importlib.util
import os

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # deselected by default; CI runs `pytest -m slow`

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLABS = os.path.join(ROOT, "colabs")
CELL_TIMEOUT_S = 300


def _generator():
  spec = importlib.util.spec_from_file_location("make_notebooks", os.path.join(COLABS, "make_notebooks.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


GENERATOR = _generator()
NAMES = sorted(GENERATOR.NOTEBOOKS)


def test_every_notebook_is_generated_and_listed():
  stored = sorted(n for n in os.listdir(COLABS) if n.endswith(".ipynb"))
  assert stored == NAMES, "colabs/*.ipynb and make_notebooks.NOTEBOOKS differ"
  with open(os.path.join(COLABS, "README.md"), encoding="utf-8") as f:
    readme = f.read()
  missing = [n for n in NAMES if f"({n})" not in readme]
  assert not missing, f"colabs/README.md does not link {missing}"


@pytest.mark.parametrize("name", NAMES)
def test_stored_notebook_is_stripped_and_up_to_date(name):
  with open(os.path.join(COLABS, name), encoding="utf-8") as f:
    text = f.read()
  assert text == GENERATOR.build_all()[name], (
      f"colabs/{name} differs from its generator: run `python colabs/make_notebooks.py`.")
  nb = nbformat.reads(text, as_version=4)
  nbformat.validate(nb)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, f"{name}: outputs not stripped"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_headless(name, tmp_path, monkeypatch):
  monkeypatch.setenv("ALIGNMENT_NOTEBOOK_FAST", "1")
  monkeypatch.setenv("TMPDIR", str(tmp_path))
  monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
  nb = nbformat.read(os.path.join(COLABS, name), as_version=4)
  client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                          resources={"metadata": {"path": str(tmp_path)}})
  client.execute()  # raises CellExecutionError, naming the cell, on any error

  outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert images, f"{name} drew no picture"
  # The setup cell found the installed library and did not try to install it.
  assert not any("pip install" in o.get("text", "") for o in nb.cells[1].outputs)
