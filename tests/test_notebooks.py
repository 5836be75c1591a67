"""The notebooks of `colabs/`: code in jupytext percent-format `.py` files, `.ipynb` generated.

Quick checks: every `colabs/NAME.py` has its `NAME.ipynb` (and no notebook lacks a `.py`), each
listed in `colabs/README.md`; each stored `.ipynb` is byte for byte what jupytext writes from its
`.py` (cell ids aside: jupytext draws them at random, and `--update` keeps the stored ones) and
has no outputs; every notebook opens with the same setup cell; the `.py` files compile, pass
pyflakes, and their top-level imports resolve (so a moved module fails here, not in a notebook),
none of them from the `experiments/` binaries.

Slow (`-m slow`): each stored notebook is executed with `nbclient` on a fresh `python3` kernel in
FAST mode (`ALIGNMENT_NOTEBOOK_FAST=1` shrinks every loop), in its own temporary directory (also
its TMPDIR, so workdirs it creates stay there); any cell error fails the test, and a notebook
must draw at least one picture.
"""

import ast
import importlib
import io
import os

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient
from pyflakes import api as pyflakes_api
from pyflakes import reporter as pyflakes_reporter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLABS = os.path.join(ROOT, "colabs")
CELL_TIMEOUT_S = 300
NAMES = sorted(n[:-len(".py")] for n in os.listdir(COLABS) if n.endswith(".py"))
REGENERATE = "jupytext --update --to ipynb colabs/*.py"


def _read(name: str, extension: str) -> str:
  with open(os.path.join(COLABS, name + extension), encoding="utf-8") as f:
    return f.read()


def _top_level_imports(source: str):
  """(module, name or None) of every import statement at the top level of `source`.

  Imports inside `if`/`try` blocks (IPython in the setup cell, optional ipywidgets) are left out.
  """
  for node in ast.parse(source).body:
    if isinstance(node, ast.Import):
      yield from ((alias.name, None) for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      yield from ((node.module, alias.name) for alias in node.names)


def test_every_notebook_is_paired_and_listed():
  assert NAMES, "no colabs/*.py notebooks found"
  notebooks = sorted(n[:-len(".ipynb")] for n in os.listdir(COLABS) if n.endswith(".ipynb"))
  assert notebooks == NAMES, "every colabs/NAME.ipynb needs its colabs/NAME.py, and vice versa"
  readme = _read("README", ".md")
  missing = [n for n in NAMES if f"({n}.ipynb)" not in readme or f"({n}.py)" not in readme]
  assert not missing, f"colabs/README.md does not link {missing} (.ipynb and .py)"
  assert REGENERATE in readme, "colabs/README.md must say how to regenerate the notebooks"


@pytest.mark.parametrize("name", NAMES)
def test_stored_notebook_is_what_jupytext_writes(name):
  text = _read(name, ".ipynb")
  stored = nbformat.reads(text, as_version=4)
  nbformat.validate(stored)
  generated = jupytext.reads(_read(name, ".py"), fmt="py:percent")
  stale = f"colabs/{name}.ipynb differs from colabs/{name}.py: run `{REGENERATE}`"
  assert len(generated.cells) == len(stored.cells), stale
  for new, old in zip(generated.cells, stored.cells):
    new.id = old.id
  written = io.StringIO()
  jupytext.write(generated, written, fmt="ipynb")
  assert written.getvalue() == text, stale
  for cell in stored.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, f"{name}: outputs not stripped"


def test_notebooks_share_the_setup_cell():
  first = {}
  for name in NAMES:
    cells = jupytext.reads(_read(name, ".py"), fmt="py:percent").cells
    assert [c.cell_type for c in cells[:2]] == ["markdown", "code"], f"{name}: title, then setup"
    first[name] = cells[1].source
  assert len(set(first.values())) == 1, "the setup cells of the notebooks differ"
  setup = next(iter(first.values()))
  assert 'find_spec("alignment") is None' in setup and "%matplotlib inline" in setup
  assert 'FAST = os.environ.get("ALIGNMENT_NOTEBOOK_FAST") == "1"' in setup


@pytest.mark.parametrize("name", NAMES)
def test_notebook_source_compiles_and_passes_pyflakes(name):
  path = os.path.join(COLABS, name + ".py")
  source = _read(name, ".py")
  compile(source, path, "exec")
  messages = io.StringIO()
  problems = pyflakes_api.check(source, path, pyflakes_reporter.Reporter(messages, messages))
  assert problems == 0, messages.getvalue()


@pytest.mark.parametrize("name", NAMES)
def test_notebook_imports_resolve(name):
  for module_name, attribute in _top_level_imports(_read(name, ".py")):
    assert module_name.split(".")[0] not in ("experiments", "ml_collections"), (
        f"{name} imports {module_name}: notebooks call the library's recipes, not the binaries")
    module = importlib.import_module(module_name)
    if attribute is not None and not hasattr(module, attribute):
      importlib.import_module(f"{module_name}.{attribute}")  # a submodule, or ImportError


@pytest.mark.slow  # deselected by default; CI runs `pytest -m slow`
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_headless(name, tmp_path, monkeypatch):
  monkeypatch.setenv("ALIGNMENT_NOTEBOOK_FAST", "1")
  monkeypatch.setenv("TMPDIR", str(tmp_path))
  monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
  nb = nbformat.read(os.path.join(COLABS, name + ".ipynb"), as_version=4)
  client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                          resources={"metadata": {"path": str(tmp_path)}})
  client.execute()  # raises CellExecutionError, naming the cell, on any error

  outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert images, f"{name} drew no picture"
  # The setup cell found the installed library and did not try to install it.
  assert not any("pip install" in o.get("text", "") for o in nb.cells[1].outputs)
