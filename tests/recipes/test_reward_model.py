"""The reward-model recipe end to end: a tiny reward model learns to rank the sorting task's
responses on held-out prompts, and a run killed by SIGKILL (through the binary) resumes on the one
loop to bitwise identical parameters; config defaults; clear errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from alignment.recipes import reward_model
from alignment.recipes.config import from_dict
from alignment.training import logs
from experiments.configs import reward_model as reward_model_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# K = 2 pairs with Bradley–Terry (the classic pairwise model), shrunk to 60 steps; as
# `--config.<path>=<value>` overrides of experiments/configs/reward_model.py.
TINY = {
    "data.num_prompts": 384, "data.k": 2, "loss.name": "bradley_terry",
    "evaluate.num_prompts": 64, "evaluate.batch_size": 64, "train.num_steps": 60,
    "train.eval_every": 30, "train.log_every": 10, "train.checkpoint_every": 30,
    "train.optimizer.learning_rate": 2e-3, "train.optimizer.total_steps": 60,
    "train.optimizer.warmup_steps": 5,
}


def _tiny_config(**overrides) -> reward_model.Config:
  """The typed config of the binary's config file with `TINY` and `overrides` applied."""
  c = reward_model_config.get_config()
  c.update_from_flattened_dict({**TINY, **overrides})
  return from_dict(reward_model.Config, c.to_dict())


def _params_bytes(workdir):
  with open(os.path.join(workdir, "params.msgpack"), "rb") as f:
    return f.read()


def test_config_file_defaults_are_the_recipe_defaults():
  assert from_dict(reward_model.Config, reward_model_config.get_config().to_dict()) == (
      reward_model.Config())


def test_scalar_reward_model_learns_to_rank_and_resumes_bitwise_after_a_kill(tmp_path):
  straight = str(tmp_path / "straight")
  summary = reward_model.run(_tiny_config(), straight).summary
  history = summary["heldout_history"]
  assert [h["step"] for h in history] == [0, 30, 60]
  # Untrained: about chance; after 60 steps (1920 pairs seen): clearly above it. The true
  # reward orders these held-out lists of 4 perfectly (accuracy 1 by construction).
  assert abs(history[0]["pairwise_accuracy"] - 0.5) < 0.12
  assert summary["heldout"]["pairwise_accuracy"] > 0.7
  assert summary["heldout"]["list_accuracy"] > history[0]["list_accuracy"]
  assert summary["heldout"] == pytest.approx({k: v for k, v in history[-1].items() if k != "step"})
  with open(os.path.join(straight, reward_model.EVAL_FILE), encoding="utf-8") as f:
    assert json.load(f)["heldout"] == summary["heldout"]
  assert os.path.getsize(os.path.join(straight, reward_model.PLOT_FILE)) > 10_000
  assert os.path.exists(os.path.join(straight, "memory.json"))  # the one loop's memory report

  # The binary, killed right after the step-30 checkpoint; the recipe then resumes from it.
  killed = str(tmp_path / "killed")
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.reward_model",
       "--config=experiments/configs/reward_model.py", f"--workdir={killed}",
       *(f"--config.{k}={v}" for k, v in {**TINY, "train.kill_after_step": 30}.items())],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == -9, proc.stderr[-3000:]
  assert not os.path.exists(os.path.join(killed, "params.msgpack"))
  resumed = reward_model.run(_tiny_config(), killed).summary
  assert _params_bytes(killed) == _params_bytes(straight)
  # Held-out rows at 0 and 30 before the kill, 60 after the resume: the straight run's values.
  assert resumed["heldout_history"] == history
  straight_losses = [r["loss"] for r in logs.read_metrics(straight) if "loss" in r]
  assert [r["loss"] for r in logs.read_metrics(killed) if "loss" in r] == straight_losses


def test_multi_head_reward_model_learns_each_attribute(tmp_path):
  config = _tiny_config(**{
      "reward_model.heads": "attributes", "reward_model.labels": "per_attribute",
      "loss.name": "plackett_luce", "data.k": 4, "data.num_prompts": 256,
      "train.batch_size": 16, "train.num_steps": 40, "train.eval_every": 40,
      "train.optimizer.learning_rate": 3e-3, "train.optimizer.total_steps": 40})
  summary = reward_model.run(config, str(tmp_path)).summary
  assert summary["heads"] == ["correctness", "harmlessness"]
  assert summary["head_weights"] == [1.0, 2.0]
  untrained, final = summary["heldout_history"][0], summary["heldout"]
  # Head 1 learns to count the forbidden digit (harmlessness) almost perfectly in 40 steps
  # (measured 0.97); head 0 (sorting correctness) is harder and only starts (measured 0.61).
  assert final["pairwise_accuracy/head_1"] > 0.9
  assert final["pairwise_accuracy/head_0"] > 0.57
  assert final["pairwise_accuracy/head_0"] > untrained["pairwise_accuracy/head_0"] + 0.05
  assert final["pairwise_accuracy"] > 0.58  # the weighted sum ranks the total reward


def test_bad_settings_are_reported_before_any_work(tmp_path):
  workdir = str(tmp_path / "rm")
  for overrides, message in (
      ({"data.attribute": "correctness", "reward_model.heads": "attributes"}, "heads='scalar'"),
      ({"data.source": "policy"}, "needs data.policy"),
      ({"loss.name": "hinge"}, "Unknown reward-model loss 'hinge'"),
      ({"train.eval_every": 0}, "eval_every must be >= 1")):
    with pytest.raises((ValueError, KeyError), match=message):
      reward_model.run(_tiny_config(**overrides), workdir)
  assert not os.path.exists(workdir)


@pytest.mark.slow
def test_attribute_reward_model_is_trained_and_evaluated_on_that_attribute(tmp_path):
  summary = reward_model.run(_tiny_config(**{"data.attribute": "harmlessness"}),
                             str(tmp_path)).summary
  assert summary["attribute"] == "harmlessness" and summary["heads"] == ["harmlessness"]
  assert summary["train_data"]["rated"] == summary["heldout_data"]["rated"] == "harmlessness"
  # Counting the forbidden digit is easy: held-out pairs ordered by harmlessness alone.
  assert summary["heldout"]["pairwise_accuracy"] > 0.9


@pytest.mark.slow
def test_default_reward_model_reaches_0_8_with_a_temperature_1_rater(tmp_path):
  """>= 0.8 held-out pairwise accuracy, rater temperature 1, no flips.

  The default config (K = 8 lists, Plackett–Luce, 4096 prompts, 360 steps); measured 0.869 on
  seed 0 (0.838-0.869 on seeds 0-3), about a minute on a free 2-core CPU.
  """
  config = reward_model_config.get_config()
  config.data.rater_temperature = 1.0
  assert config.data.flip_rate == 0.0
  summary = reward_model.run(from_dict(reward_model.Config, config.to_dict()),
                             str(tmp_path)).summary
  assert summary["heldout"]["pairwise_accuracy"] >= 0.8
  assert summary["heldout_data"]["rater"] == "true_reward"  # held-out order: the true reward
  assert np.isfinite(summary["final_train_loss"])
