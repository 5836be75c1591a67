"""Import cost of the pure core, and the generated objectives page staying in sync.

Both checks run in fresh interpreters: `sys.modules` of the test process is polluted by every
other test module, and the registry's content depends on what has been imported.
"""

import json
import os
import pathlib
import pkgutil
import subprocess
import sys

import alignment

REPO = pathlib.Path(__file__).resolve().parents[1]
# Frameworks the pure core must not pull in (`cma` is imported only inside `zo.cma_es`).
HEAVY = ("flax", "orbax", "grain", "tensorflow_datasets", "tensorflow", "tensorboardX", "torch",
         "transformers", "cma")
INFRASTRUCTURE = ("alignment.models", "alignment.data", "alignment.training", "alignment.parallel")
# Everything else directly under `alignment/` (but the recipes, which compose the engine) is the
# pure core, so a new bottom module (e.g. shared array helpers) is probed without editing this.
NOT_CORE = (*INFRASTRUCTURE, "alignment.recipes")
PURE_CORE = tuple(sorted(
    info.name for info in pkgutil.iter_modules(alignment.__path__, "alignment.")
    if info.name not in NOT_CORE
))

# Imports every module of the given packages (submodules too: a heavy import may hide in a file
# that the package's `__init__` does not import) and prints the imported module names.
_PROBE = """
import importlib, json, pkgutil, sys
for root in sys.argv[1:]:
  package = importlib.import_module(root)
  for info in pkgutil.walk_packages(getattr(package, "__path__", []), root + "."):
    importlib.import_module(info.name)
print(json.dumps(sorted(sys.modules)))
"""


def _run(args, **kwargs):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  return subprocess.run(
      [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
      **kwargs,
  )


def _modules_imported_by(*packages):
  result = _run(["-c", _PROBE, *packages])
  assert result.returncode == 0, result.stderr
  return json.loads(result.stdout.strip().splitlines()[-1])


def _under(modules, roots):
  return sorted(m for m in modules if any(m == r or m.startswith(r + ".") for r in roots))


def test_pure_core_is_the_documented_packages():
  assert {"alignment.losses", "alignment.scores", "alignment.metrics", "alignment.rewards",
          "alignment.zo"} <= set(PURE_CORE)


def test_pure_core_imports_no_heavy_or_infrastructure_modules():
  modules = _modules_imported_by(*PURE_CORE)
  for package in PURE_CORE:
    assert package in modules
  assert "alignment.zo.compo" in modules and "alignment.losses.pairwise" in modules
  assert _under(modules, HEAVY) == [], "the pure core must not import heavy frameworks"
  assert _under(modules, INFRASTRUCTURE) == [], "the pure core must not import infrastructure"


def test_the_engine_does_import_what_the_core_must_not():
  # The probe sees heavy imports where they do happen: the training engine runs Flax models,
  # Orbax checkpoints and grain pipelines.
  modules = _modules_imported_by("alignment.training")
  assert {"flax", "orbax.checkpoint", "grain"} <= set(modules)
  assert "alignment.models.transformer" in _under(modules, INFRASTRUCTURE)


def test_objectives_page_is_up_to_date_with_the_registry():
  result = _run(["docs/make_objectives_page.py", "--check"])
  assert result.returncode == 0, (
      "docs/objectives.md differs from the registry; regenerate it with "
      f"`python docs/make_objectives_page.py`.\n{result.stderr}"
  )


def _load_generator():
  import importlib.util  # pylint: disable=import-outside-toplevel

  spec = importlib.util.spec_from_file_location("make_objectives_page",
                                                REPO / "docs" / "make_objectives_page.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_page_lists_every_registered_objective_and_check_detects_drift(tmp_path, monkeypatch):
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  generator = _load_generator()
  text = generator.render()
  from alignment import losses  # pylint: disable=import-outside-toplevel

  for name in losses.names():
    assert f"### `{name}`" in text
    assert losses.spec(name).paper in text
  assert generator._format_default(jnp.mean) == "jnp.mean"
  assert " at 0x" not in generator._format_default(object())

  page = tmp_path / "objectives.md"
  monkeypatch.setattr(generator, "PAGE", page)
  assert generator.main(["--check"]) == 1  # missing page
  page.write_text(text + "edited by hand\n", encoding="utf-8")
  assert generator.main(["--check"]) == 1
  assert generator.main([]) == 0
  assert page.read_text(encoding="utf-8") == text
  assert generator.main(["--check"]) == 0
