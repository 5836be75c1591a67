"""The `>>>` examples in the library's docstrings run and print what they show.

Modules are found with `pkgutil.walk_packages` over `alignment/` (a new, moved or split module is
picked up without editing this file), and each module's examples run with `doctest`, output
compared with `ELLIPSIS` and `NORMALIZE_WHITESPACE` (examples print rounded numbers). A wrong
example fails its module's test with doctest's report.
"""

import doctest
import importlib
import io
import pathlib
import pkgutil

import pytest

import alignment

ROOT = pathlib.Path(alignment.__file__).resolve().parent
MODULES = sorted(["alignment", *(info.name for info in pkgutil.walk_packages(alignment.__path__,
                                                                            "alignment."))])
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _run_examples(tests):
  """`(failed, attempted, report)` of running doctest `tests` with `OPTIONS`."""
  runner, report = doctest.DocTestRunner(optionflags=OPTIONS), io.StringIO()
  for test in tests:
    runner.run(test, out=report.write)
  return runner.failures, runner.tries, report.getvalue()


def _module_names_of_files():
  names = []
  for path in ROOT.rglob("*.py"):
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
  return sorted(names)


def test_every_file_under_alignment_is_a_discovered_module():
  assert MODULES == _module_names_of_files()


def test_a_wrong_example_fails_and_ellipsis_matches_rounded_output():
  parser = doctest.DocTestParser()
  wrong = parser.get_doctest(">>> 1 + 1\n3\n", {}, "wrong", None, 0)
  right = parser.get_doctest(">>> print(round(2 / 3, 4), [1,\n...    2])\n0.6667   [1, 2]\n"
                             ">>> 1 / 3\n0.333...\n", {}, "right", None, 0)
  assert _run_examples([wrong])[:2] == (1, 1)
  assert _run_examples([right])[:2] == (0, 2)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
  module = importlib.import_module(name)
  # The finder keeps objects defined in `module` (not re-exports), so each example runs once.
  failed, _, report = _run_examples(doctest.DocTestFinder().find(module, name))
  assert failed == 0, f"docstring examples of {name} fail:\n{report}"
