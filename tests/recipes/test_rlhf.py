"""The RLHF recipe end to end on the one loop: two rounds from a random "SFT" policy with the
held-out evaluation, and the same run killed by SIGKILL after round 1 (through the binary) then
resumed to bitwise identical parameters; config defaults; clear errors."""

import json
import os
import subprocess
import sys

import pytest

from alignment.recipes import config as config_lib
from alignment.recipes import rlhf
from alignment.training import logs, runs, setup
from experiments.configs import rlhf as rlhf_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Two rounds of 4 prompts x G = 4, 2 epochs of 2 minibatches (8 optimizer steps), one layer (the
# compilations dominate); as `--config.<path>=<value>` overrides of experiments/configs/rlhf.py.
TINY = {
    "model.depth": 1, "rlhf.num_prompts": 16, "rlhf.num_rounds": 2, "rlhf.prompts_per_round": 4,
    "rlhf.group_size": 4, "rlhf.minibatch_prompts": 2, "rlhf.optimizer.learning_rate": 1e-3,
    "rlhf.optimizer.total_steps": 8, "rlhf.optimizer.warmup_steps": 0,
    "rlhf.sample_batch_size": 8,  # = evaluate.batch_size: one sampler compilation for all
    "evaluate.num_prompts": 8, "evaluate.heldout_preferences": 4,
    "evaluate.heldout_list_size": 2, "evaluate.batch_size": 8,
}


def _tiny_config(**overrides) -> rlhf.Config:
  """The typed config of the binary's config file with `TINY` and `overrides` applied."""
  c = rlhf_config.get_config()
  c.update_from_flattened_dict({**TINY, **overrides})
  return config_lib.from_dict(rlhf.Config, c.to_dict())


def _params_bytes(workdir):
  with open(os.path.join(workdir, "params.msgpack"), "rb") as f:
    return f.read()


def test_config_file_defaults_are_the_recipe_defaults():
  assert config_lib.from_dict(rlhf.Config, rlhf_config.get_config().to_dict()) == rlhf.Config()


def test_two_rounds_evaluate_and_resume_bitwise_after_a_kill(tmp_path):
  sft_dir = str(tmp_path / "sft")
  config = _tiny_config(**{"rlhf.init": sft_dir})
  _, model_config = config_lib.task_and_model(config.task, config.model)
  setup.save_params(runs.init_model(model_config, 1), sft_dir)  # a random policy as the SFT one

  straight = str(tmp_path / "straight")
  summary = rlhf.run(config, straight).summary
  rows = logs.read_metrics(straight)
  # One row per round, at its last optimizer step (2 epochs x 2 minibatches = 4 steps).
  assert [(r["step"], r["round"]) for r in rows] == [(4, 1.0), (8, 2.0)]
  assert all(r["finite"] == 1.0 and "reward/true" in r and "kl_k3" in r and "kl_sequence" in r
             for r in rows)
  assert summary["rlhf"]["optimizer_steps"] == 2 * 2 * 2  # rounds × epochs × minibatches
  assert 0.0 <= summary["win_rate_ci95"][0] <= summary["win_rate"] <= summary["win_rate_ci95"][1]
  with open(os.path.join(straight, rlhf.EVAL_FILE), encoding="utf-8") as f:
    assert json.load(f)["rlhf"]["num_rounds"] == 2
  assert os.path.getsize(os.path.join(straight, rlhf.PLOT_FILE)) > 0
  assert os.path.exists(os.path.join(straight, "memory.json"))  # the one loop's memory report

  # The binary, killed right after the round-1 checkpoint (step 4); the recipe then resumes
  # from it (params, optimiser, PRNG key, round counter) without the evaluation.
  killed = str(tmp_path / "killed")
  flags = {**TINY, "rlhf.init": sft_dir, "rlhf.kill_after_step": 4}
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.rlhf", "--config=experiments/configs/rlhf.py",
       f"--workdir={killed}", *(f"--config.{k}={v}" for k, v in flags.items())],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == -9, proc.stderr[-3000:]
  assert not os.path.exists(os.path.join(killed, "params.msgpack"))
  rlhf.run(config_lib.replace_in(config, "rlhf", evaluate=False), killed)
  assert _params_bytes(killed) == _params_bytes(straight)
  resumed_rows = logs.read_metrics(killed)
  assert [r["step"] for r in resumed_rows] == [4, 8]  # round 1 before the kill, round 2 after
  assert [r["loss"] for r in resumed_rows] == [r["loss"] for r in rows]
  assert [r["reward/true"] for r in resumed_rows] == [r["reward/true"] for r in rows]
  with open(os.path.join(killed, rlhf.SUMMARY_FILE), encoding="utf-8") as f:
    assert json.load(f)["rlhf"]["optimizer_steps"] == 8


def test_bad_settings_are_reported_before_any_work(tmp_path):
  workdir = str(tmp_path / "rlhf")
  for overrides, message in (
      ({"rlhf.advantage": "ppo"}, "rlhf.advantage must be one of"),
      ({"rlhf.group_size": 1}, "group_size must be >= 2"),
      ({"rlhf.reward_weights": (1.0, 2.0)}, "reward_weights has 2 entries for 1"),
      ({"rlhf.checkpoint_every": 0}, "checkpoint_every must be >= 1 round")):
    with pytest.raises(ValueError, match=message):
      rlhf.run(_tiny_config(**overrides), workdir)
  assert not os.path.exists(workdir)
