"""The ZO-RankSGD synthetic study (`alignment/recipes/zo_synthetic.py`) and its binary."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from alignment.recipes import zo_synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_an_unknown_function_is_reported(tmp_path):
  with pytest.raises(ValueError, match="unknown function 'sphere'"):
    zo_synthetic.run(zo_synthetic.Config(functions=("sphere",)), str(tmp_path))


@pytest.mark.slow  # an experiment end to end (CI: pytest -m slow)
def test_fast_run_writes_json_and_png(tmp_path):
  config = dataclasses.replace(zo_synthetic.fast_config(), d=10, functions=("rosenbrock",),
                               ks=(9,), ablation_ms=(2,), iterations=3)
  summary = zo_synthetic.run(config, str(tmp_path))
  for name in ("summary.json", "objective_vs_queries.png", "ablation.png"):
    assert os.path.getsize(tmp_path / name) > 0
  loaded = json.loads((tmp_path / "summary.json").read_text())
  methods = loaded["functions"]["rosenbrock"]
  assert set(methods) == {"zo_rank_sgd_k9", "zo_sgd", "comparison_zo", "gld", "normalized_gd",
                          "cma_es"}
  assert all(np.isfinite(v["final_mean"]) for v in methods.values())
  assert {(r["m"], r["k"]) for r in loaded["ablation"]} == {(2, 1), (2, 2)}
  assert "ZO-RankSGD" in loaded["sentence"] and summary["sentence"] == loaded["sentence"]
  assert loaded["config"] == json.loads(json.dumps(dataclasses.asdict(config)))


@pytest.mark.slow  # the binary in a subprocess (CI: pytest -m slow)
def test_binary_runs_the_recipe_from_its_flags(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.zo_synthetic", f"--workdir={tmp_path}", "--fast",
       "--seeds=1", "--iterations=2"],
      cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  loaded = json.loads((tmp_path / "summary.json").read_text())
  assert (loaded["config"]["seeds"], loaded["config"]["iterations"]) == (1, 2)
  assert loaded["config"]["ks"] == list(zo_synthetic.fast_config().ks)
  assert len(loaded["functions"]["rosenbrock"]["cma_es"]["final_per_seed"]) == 1
