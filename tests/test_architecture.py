"""The floors of `docs/architecture.md` hold: thin binaries, no imports upwards.

Checked on the source text (`ast`), so the rules hold for every file, run or not:
- every binary in `experiments/` (a top-level module with a `__main__` block) has at most 80
  non-blank lines and imports no other binary;
- nothing in `alignment/` imports `experiments`, `benchmarks` or `ml_collections`/`absl`;
- the pure core (`arrays`, `losses`, `scores`, `metrics`, `rewards`, `zo`) imports none of the
  infrastructure (`models`, `data`, `training`, `parallel`, `recipes`);
- the engine (`models`, `data`, `training`, `parallel`) never imports `recipes`.
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_BINARY_LINES = 80
CORE = ("arrays", "losses", "scores", "metrics", "rewards", "zo")
ENGINE = ("models", "data", "training", "parallel")


def _python_files(folder: str) -> list[str]:
  out = []
  for root, _, files in os.walk(os.path.join(ROOT, folder)):
    out += [os.path.join(root, f) for f in files if f.endswith(".py")]
  return sorted(out)


def _imports(path: str) -> set[str]:
  """Every module named by an import statement of `path` (absolute names)."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names.add(node.module)
      names.update(f"{node.module}.{alias.name}" for alias in node.names)
  return names


def _binaries() -> list[str]:
  folder = os.path.join(ROOT, "experiments")
  out = []
  for name in sorted(os.listdir(folder)):
    path = os.path.join(folder, name)
    if name.endswith(".py") and not name.startswith("_"):
      with open(path, encoding="utf-8") as f:
        if "__main__" in f.read():
          out.append(path)
  return out


BINARIES = _binaries()
BINARY_MODULES = {f"experiments.{os.path.basename(p)[:-3]}" for p in BINARIES}


def test_the_binaries_are_found():
  assert {"experiments.demo", "experiments.train", "experiments.rlhf"} <= BINARY_MODULES


@pytest.mark.parametrize("path", BINARIES, ids=os.path.basename)
def test_binary_is_a_thin_shim(path):
  with open(path, encoding="utf-8") as f:
    lines = [line for line in f if line.strip()]
  assert len(lines) <= MAX_BINARY_LINES, f"{path}: {len(lines)} non-blank lines"
  others = _imports(path) & (BINARY_MODULES - {f"experiments.{os.path.basename(path)[:-3]}"})
  assert not others, f"{path} imports the binaries {sorted(others)}"


def _floor(path: str) -> str:
  rel = os.path.relpath(path, os.path.join(ROOT, "alignment"))
  return rel.split(os.sep)[0].removesuffix(".py")


@pytest.mark.parametrize("path", _python_files("alignment"),
                         ids=lambda p: os.path.relpath(p, ROOT))
def test_library_imports_only_downwards(path):
  imports = _imports(path)
  top = {name.split(".")[0] for name in imports}
  assert not top & {"experiments", "benchmarks", "ml_collections", "absl"}, path
  floors = {name.split(".")[1] for name in imports
            if name.startswith("alignment.") and name.count(".") >= 1}
  floor = _floor(path)
  if floor in CORE:
    assert not floors & set(ENGINE + ("recipes",)), f"{path} imports {floors}"
  if floor in ENGINE:
    assert "recipes" not in floors, f"{path} imports the recipes"
