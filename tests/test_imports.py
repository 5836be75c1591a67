"""Import cost of the pure core, and the generated objectives page staying in sync.

Both checks run in fresh interpreters: `sys.modules` of the test process is polluted by every
other test module, and the registry's content depends on what has been imported.
"""

import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
HEAVY = ("flax", "orbax", "grain", "tensorflow_datasets", "tensorflow")
INFRASTRUCTURE = ("alignment.models", "alignment.data", "alignment.training", "alignment.parallel")

_PROBE = """
import json, sys
import alignment.losses, alignment.scores, alignment.metrics, alignment.rewards
print(json.dumps(sorted(sys.modules)))
"""


def _run(args, **kwargs):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  return subprocess.run(
      [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
      **kwargs,
  )


def _imported(modules, roots):
  return sorted(m for m in modules if any(m == r or m.startswith(r + ".") for r in roots))


def test_imported_helper_matches_packages_not_prefixes():
  modules = ["tensorflow_probability", "flaxen", "flax.linen", "grain", "orbax.checkpoint"]
  assert _imported(modules, HEAVY) == ["flax.linen", "grain", "orbax.checkpoint"]


def test_pure_core_imports_no_heavy_or_infrastructure_modules():
  result = _run(["-c", _PROBE])
  assert result.returncode == 0, result.stderr
  modules = json.loads(result.stdout.strip().splitlines()[-1])
  assert "alignment.metrics" in modules and "alignment.rewards" in modules
  assert _imported(modules, HEAVY) == [], "the pure core must not import heavy frameworks"
  assert _imported(modules, INFRASTRUCTURE) == [], "the pure core must not import infrastructure"


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
