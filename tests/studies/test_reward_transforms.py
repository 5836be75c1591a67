"""The reward-transforms study: its helpers by hand, its grid wiring with fakes, and quick mode
end to end (slow: an SFT policy, two reward models and two RLHF runs, about two minutes)."""

import dataclasses
import json
import os

import numpy as np
import pytest

from alignment.recipes import rlhf
from experiments.configs import demo
from experiments.studies import common, reward_transforms

ATTRIBUTES = ("correctness", "harmlessness")


def _summary(win, wins, good, ref_good_all, reward, kl):
  """An evaluation summary (`alignment.recipes.evaluation`) with the fields a row reads."""
  return {"win_rate": win, "attribute_win_rate": dict(zip(ATTRIBUTES, wins)),
          "good_fraction": {"policy": good, "reference": {"all": ref_good_all}},
          "mean_reward": {"policy": reward[0], "reference": reward[1]},
          "kl_policy_reference": kl}


def test_cell_row_by_hand():
  summary = _summary(0.7, (0.4, 0.8), {"correctness": 0.3, "harmlessness": 0.9, "all": 0.25},
                     0.1, (2.9, 2.6), 1.5)
  row = reward_transforms.cell_row(summary, ATTRIBUTES)
  assert row == pytest.approx({
      "win_rate": 0.7, "win_rate_correctness": 0.4, "win_rate_harmlessness": 0.8,
      "min_attribute_win_rate": 0.4,  # the worse attribute
      "good_all": 0.25, "good_correctness": 0.3, "good_harmlessness": 0.9,
      "mean_reward": 2.9, "reward_gain": 0.3, "kl": 1.5, "sft_good_all": 0.1})
  assert list(row)[:-1] == list(reward_transforms.metric_names(ATTRIBUTES))


def test_matched_kl_interpolates_the_base_curve_by_hand():
  table = [{"transform": t, "beta_kl": b, "kl_mean": kl, "good_all_mean": g}
           for t, b, kl, g in [("none", 0.1, 4.0, 0.5), ("none", 1.0, 1.0, 0.2),
                               ("lsc", 0.1, 3.0, 0.5), ("lsc", 1.0, 0.5, 0.3),
                               ("lsc", 0.0, 6.0, 0.9)]]
  out = reward_transforms.matched_kl(table, "good_all")
  # The raw-sum curve goes (KL 1, 0.2) -> (KL 4, 0.5): at KL 3 it is 0.2 + 0.3·(2/3) = 0.4, so
  # LSC is +0.1 there; LSC's KL 0.5 and 6 lie outside [1, 4] and are not compared.
  assert [p["beta_kl"] for p in out["points"]] == [0.1]
  (point,) = out["points"]
  assert point["none"] == pytest.approx(0.4) and point["difference"] == pytest.approx(0.1)
  assert out["mean_difference"] == pytest.approx(0.1)
  disjoint = [r for r in table if r["beta_kl"] != 0.1]
  assert reward_transforms.matched_kl(disjoint, "good_all") == {"points": [],
                                                                "mean_difference": None}


def test_configs_of_the_stages():
  config = reward_transforms.study_config(demo.get_config(), quick=False)
  assert config.rlhf.reward_transform == "none" and config.rlhf.num_rounds == 24
  quick = reward_transforms.study_config(demo.get_config(), quick=True)
  assert (quick.rlhf.num_rounds, quick.rlhf.prompts_per_round, quick.sft.num_steps) == (2, 16, 20)
  # Steps = rounds · epochs · prompts_per_round / minibatch_prompts = 2 · 1 · 16 / 8 = 4.
  assert quick.rlhf.optimizer.total_steps == 4
  config.seed, config.model.width = 3, 32
  rm = reward_transforms.reward_model_config(config, attribute="harmlessness", policy="/sft",
                                             quick=False)
  assert (rm.seed, rm.model.width, rm.data.source, rm.data.policy, rm.data.attribute) == (
      3, 32, "policy", "/sft", "harmlessness")
  assert rm.reward_model.heads == "scalar"
  with pytest.raises(ValueError, match="unknown transforms"):
    reward_transforms.run(demo.get_config(), "/nonexistent", transforms=("exp",))
  with pytest.raises(ValueError, match=r"unknown set-ups \['ppo'\]"):
    reward_transforms.run(demo.get_config(), "/nonexistent", beta_kls={"ppo": (0.1,)})


def test_grid_wiring(tmp_path, monkeypatch):
  cells = []

  def fake_rlhf(config, workdir):
    assert isinstance(config, rlhf.Config)  # the recipe's typed config
    cells.append(dataclasses.asdict(config.rlhf))
    good = {"correctness": 0.5, "harmlessness": 0.5, "all": 0.25 + config.rlhf.beta_kl}
    summary = {**_summary(0.6, (0.5, 0.7), good, 0.1, (2.8, 2.6), 1.0 / (1 + config.rlhf.beta_kl)),
               "rlhf": {"seconds": {"total": 1.0}}}
    return rlhf.Result(None, summary, "", "")

  def fake_reward_models(config, workdir, attributes, *, policy, quick):
    return {a: {"dir": f"{policy}/rm_{a}", "heldout": {"pairwise_accuracy": 0.9}}
            for a in attributes}

  monkeypatch.setattr(common, "sft_policy", lambda config, workdir: f"sft{config.seed}")
  monkeypatch.setattr(reward_transforms, "reward_models", fake_reward_models)
  monkeypatch.setattr(reward_transforms.rlhf, "run", fake_rlhf)
  grid = {"grpo_kl_loss": (1.0, 0.1), "rloo_kl_reward": (0.3,)}
  summary = reward_transforms.run(demo.get_config(), str(tmp_path), seeds=(0, 1), beta_kls=grid)
  per_seed = [("grpo", "loss", "none", 0.1), ("grpo", "loss", "none", 1.0),
              ("grpo", "loss", "lsc", 0.1), ("grpo", "loss", "lsc", 1.0),
              ("rloo", "reward", "none", 0.3), ("rloo", "reward", "lsc", 0.3)]
  assert [(c["advantage"], c["kl_in"], c["reward_transform"], c["beta_kl"], c["init"])
          for c in cells] == [(*cell, f"sft{s}") for s in (0, 1) for cell in per_seed]
  for c in cells:  # both reward models, weighted by the task's weights
    assert c["rewards"] == (f"{c['init']}/rm_correctness", f"{c['init']}/rm_harmlessness")
    assert c["reward_weights"] == (1.0, 2.0)
  assert [(r["setup"], r["transform"], r["beta_kl"], r["n"]) for r in summary["table"]] == [
      ("grpo_kl_loss", "none", 0.1, 2), ("grpo_kl_loss", "none", 1.0, 2),
      ("grpo_kl_loss", "lsc", 0.1, 2), ("grpo_kl_loss", "lsc", 1.0, 2),
      ("rloo_kl_reward", "none", 0.3, 2), ("rloo_kl_reward", "lsc", 0.3, 2)]
  assert summary["table"][0]["good_all_mean"] == pytest.approx(0.35)
  assert summary["reward_model_heldout_accuracy"]["1"] == {a: 0.9 for a in ATTRIBUTES}
  # Same KL and metrics for both transforms here: every matched difference is 0.
  assert summary["claims"]["grpo_kl_loss"]["good_all"]["mean_difference"] == pytest.approx(0.0)
  assert set(summary["claims"]) == set(grid)
  # Rows are cached: a second call runs nothing.
  monkeypatch.setattr(reward_transforms.rlhf, "run", None)
  again = reward_transforms.run(demo.get_config(), str(tmp_path), seeds=(0, 1), beta_kls=grid)
  assert again["table"] == summary["table"]


@pytest.mark.slow
def test_quick_study_end_to_end(tmp_path, monkeypatch):
  workdir = str(tmp_path)
  grid = {"rloo_kl_reward": (0.3,)}  # one set-up of the quick grid: both transforms
  summary = reward_transforms.run(demo.get_config(), workdir, quick=True, beta_kls=grid)
  assert [(r["setup"], r["transform"], r["beta_kl"], r["n"]) for r in summary["table"]] == [
      ("rloo_kl_reward", "none", 0.3, 1), ("rloo_kl_reward", "lsc", 0.3, 1)]
  for row in summary["runs"]:
    for name in reward_transforms.metric_names(ATTRIBUTES):
      assert np.isfinite(row[name]), name
    for name in ("win_rate", "win_rate_correctness", "win_rate_harmlessness", "good_all"):
      assert 0.0 <= row[name] <= 1.0, name
    assert row["good_all"] <= min(row["good_correctness"], row["good_harmlessness"])
    assert 0.0 < row["mean_reward"] <= 3.0
  accuracy = summary["reward_model_heldout_accuracy"]["0"]
  assert set(accuracy) == set(ATTRIBUTES) and all(0.0 <= a <= 1.0 for a in accuracy.values())
  for name in ("reward_transforms.json", "reward_transforms.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  with open(os.path.join(workdir, "reward_transforms.json"), encoding="utf-8") as f:
    assert json.load(f)["table"] == summary["table"]
  with open(os.path.join(workdir, "seed_0", "rm_harmlessness", "eval.json"),
            encoding="utf-8") as f:
    assert json.load(f)["attribute"] == "harmlessness"

  def fail(*args, **kwargs):
    raise AssertionError("a cached stage was recomputed")

  monkeypatch.setattr(common.sft, "run", fail)
  monkeypatch.setattr(reward_transforms.reward_model, "run", fail)
  monkeypatch.setattr(reward_transforms.rlhf, "run", fail)
  again = reward_transforms.run(demo.get_config(), workdir, quick=True, beta_kls=grid)
  assert again["table"] == summary["table"]
