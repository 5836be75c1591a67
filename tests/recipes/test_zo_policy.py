"""The CartPole policy-search recipe (`alignment/recipes/zo_policy.py`) and its binary."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from alignment.recipes import zo_policy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_episodes_to_solve_scales_the_threshold_to_the_horizon():
  config = zo_policy.Config(m=10, horizon=100)  # solved at 100 · 475/500 = 95
  values = np.array([[10.0, 94.0, 95.0, 100.0], [10.0, 20.0, 30.0, 40.0]])
  assert zo_policy._episodes_to_solve(values, config) == [20, None]  # iteration 2 = 20 episodes


@pytest.mark.slow  # an experiment end to end (CI: pytest -m slow)
def test_fast_run_writes_json_and_png(tmp_path):
  summary = zo_policy.run(zo_policy.fast_config(), str(tmp_path))
  for name in ("summary.json", "return_vs_episodes.png"):
    assert os.path.getsize(tmp_path / name) > 0
  loaded = json.loads((tmp_path / "summary.json").read_text())
  assert set(loaded["methods"]) == {"zo_rank_sgd_k5", "evolution_strategy"}
  assert loaded["sentence"] == summary["sentence"]
  assert loaded["config"] == json.loads(json.dumps(dataclasses.asdict(zo_policy.fast_config())))


@pytest.mark.slow  # the binary in a subprocess (CI: pytest -m slow)
def test_binary_runs_the_recipe_from_its_flags(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.zo_policy", f"--workdir={tmp_path}", "--fast",
       "--seeds=1", "--iterations=2"],
      cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  loaded = json.loads((tmp_path / "summary.json").read_text())
  assert (loaded["config"]["seeds"], loaded["config"]["iterations"]) == (1, 2)
  assert loaded["config"]["horizon"] == zo_policy.fast_config().horizon
  assert "ZO-RankSGD" in proc.stdout
