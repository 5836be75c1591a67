"""Study 3 (ranking accuracy) and the shared DPO stages: helpers by hand, the study end to end.

The unit tests are fast (numpy and a few jnp metrics); the quick end-to-end run is `slow`.
"""

import json
import os

import jax
import numpy as np
import pytest

from alignment.training import setup
from experiments.configs import demo
from experiments.studies import common, dpo_dynamics, ranking_accuracy


def _softplus(x):
  return np.logaddexp(0.0, x)


def test_eval_steps_by_hand():
  assert dpo_dynamics.eval_steps(300, 50) == [0, 50, 100, 150, 200, 250, 300]
  assert dpo_dynamics.eval_steps(4, 2) == [0, 2, 4]
  assert dpo_dynamics.eval_steps(7, 3) == [0, 3, 6, 7]  # the final policy is always measured
  with pytest.raises(ValueError, match="every"):
    dpo_dynamics.eval_steps(10, 0)


def test_dpo_config_keeps_every_checkpoint():
  config = dpo_dynamics.dpo_config(demo.get_config(), 2, eval_every=50)
  assert (config.seed, config.preferences.k, dict(config.loss)) == (2, 2, {"name": "dpo",
                                                                          "beta": 0.5})
  assert (config.train.checkpoint_every, config.train.keep_checkpoints) == (50, 7)
  assert config.train.optimizer.learning_rate == 1e-3
  slow = dpo_dynamics.dpo_config(demo.get_config(), 2, eval_every=50, lr_factor=0.1)
  assert slow.train.optimizer.learning_rate == pytest.approx(1e-4)
  assert (dpo_dynamics.run_name(1.0), dpo_dynamics.run_name(0.1)) == ("dpo", "dpo_lr0.1x")


def _pair(prompt, responses, scores, rewards):
  return {"prompt": prompt, "responses": list(responses), "scores": list(map(float, scores)),
          "rewards": list(map(float, rewards))}


def test_rater_alpha_orients_pairs_chosen_first():
  records = [_pair("12:", ["12", "21"], [0, 1], [2.5, 2.6]), _pair("31:", ["13", "3"], [1, 0],
                                                                    [3.0, 2.9])]
  pairs = dpo_dynamics.chosen_first(records)
  assert [p["responses"] for p in pairs] == [["21", "12"], ["13", "3"]]
  config = demo.get_config()  # Plackett–Luce, τ = 0.05: both margins are +0.1 -> σ(2)
  np.testing.assert_allclose(dpo_dynamics.rater_alpha(config, pairs), [0.8807971] * 2, atol=1e-6)
  with config.unlocked():
    config.preferences.rater = "true_reward"
  np.testing.assert_array_equal(dpo_dynamics.rater_alpha(config, pairs), [1.0, 1.0])
  with config.unlocked():
    config.preferences.rater = "oracle"
  with pytest.raises(ValueError, match="oracle"):
    dpo_dynamics.rater_alpha(config, pairs)
  with pytest.raises(ValueError, match="record 0"):
    dpo_dynamics.chosen_first([_pair("1:", ["1", "1"], [1, 1], [3, 3])])


def test_trained_mask_drops_empty_and_identical_responses():
  responses = (["1", "2"], ["1", "1"], ["", "1"], ["12", "21"])
  pairs = [_pair("1:", r, [1, 0], [3, 2]) for r in responses]
  np.testing.assert_array_equal(dpo_dynamics.trained_mask(pairs), [True, False, False, True])


def test_step_measures_against_numpy():
  beta = 0.5
  ref = np.array([[-5.0, -3.0], [-2.0, -4.0], [-6.0, -1.0], [-3.0, -3.5], [-1.0, -9.0]])
  logps = np.array([[-4.0, -4.5], [-2.5, -3.0], [-7.0, -2.0], [-3.0, -3.5], [-1.0, -2.0]])
  lengths = np.array([[4, 2], [5, 2], [3, 1], [2, 2], [1, 1]])
  where = np.array([True, True, True, True, False])  # the last pair is not measured
  m = ranking_accuracy.step_measures(logps, lengths, ref, beta=beta, where=where)
  # lp_w ≥ lp_l on pairs 0, 1, 3 of the 4 measured -> 3/4.
  assert m["ranking_accuracy"] == pytest.approx(0.75)
  # Per token: pair 0 -1 vs -2.25 ✓, 1 -0.5 vs -1.5 ✓, 2 -2.33 vs -2 ✗, 3 -1.5 vs -1.75 ✓.
  assert m["ranking_accuracy_ln"] == pytest.approx(0.75)
  h = (logps[:, 0] - ref[:, 0]) - (logps[:, 1] - ref[:, 1])  # [2.5, -1.5, -0.0, 0, 7]
  assert m["dpo_loss"] == pytest.approx(np.mean(_softplus(-beta * h[:4])), rel=1e-6)
  # Implicit-reward accuracy 1[βh > 0] (strict): only pair 0 -> 1/4, not the ranking accuracy.
  assert m["reward_accuracy"] == pytest.approx(0.25)
  # The SFT policy mis-ranks pairs 0 and 2 (lr_w < lr_l); pair 0 is flipped, pair 2 is not.
  assert m["misranked_initially"] == 2 and m["flipped_fraction"] == pytest.approx(0.5)
  # Thm 4.1: flipped iff L_DPO ≤ softplus(β(lr_w − lr_l)) — the same fraction.
  threshold = _softplus(beta * (ref[:, 0] - ref[:, 1]))
  loss = _softplus(-beta * h)
  assert (loss[0] <= threshold[0], loss[2] <= threshold[2]) == (True, False)
  assert m["below_threshold"] == pytest.approx(0.5)


def test_idealized_against_numpy():
  ref = np.array([[-3.0, -1.0], [-1.0, -2.0], [-8.0, -1.0], [-2.0, -2.5]])
  alpha = np.array([0.9, 0.6, 0.99, 0.3])
  where = np.array([True, True, True, False])
  out = ranking_accuracy.idealized(ref, alpha, beta=0.5, where=where)
  # z = (lr_w − lr_l) + log(α/(1−α))/β; correct iff z > 0 (α > 1/2 on every measured pair).
  def accuracy(beta):
    z = (ref[:3, 0] - ref[:3, 1]) + np.log(alpha[:3] / (1 - alpha[:3])) / beta
    return np.mean(z > 0)
  # β = 0.5: z = [-2 + 4.394, 1 + 0.811, -7 + 9.190] > 0 -> 1.
  assert out["at_beta"] == pytest.approx(accuracy(0.5)) and out["at_beta"] == 1.0
  values = [accuracy(b) for b in (0.01, 0.1, 1.0, 5.0, 10.0)]  # [1, 1, 2/3, 1/3, 1/3]
  assert out["min"] == pytest.approx(min(values)) and out["min"] == pytest.approx(1 / 3)
  assert out["median"] == pytest.approx(np.median(values))
  assert out["max"] == pytest.approx(max(values))


def test_claim_checks_on_a_hand_table():
  table = [{"lr_factor": 1.0, "split": s, "step": t, "ranking_accuracy_mean": r,
            "idealized_ranking_accuracy_mean": 0.9, "alignment_gap_mean": 0.9 - r,
            "reward_accuracy_mean": 0.5 + t / 100, "flipped_fraction_mean": t / 1000,
            "below_threshold_mean": t / 1000 + (s == "heldout") * 0.01}
           for s in ranking_accuracy.SPLITS for t, r in ((0, 0.5), (50, 0.55))]
  checks = ranking_accuracy.claim_checks(table, [0, 50], [1.0])
  assert sorted(checks) == ["lr×1/heldout", "lr×1/train"]
  train, heldout = checks["lr×1/train"], checks["lr×1/heldout"]
  assert (train["ranking_accuracy_start"], train["ranking_accuracy_end"]) == (0.5, 0.55)
  assert train["alignment_gap_end"] == pytest.approx(0.35)
  assert train["reward_accuracy_end"] == 1.0
  assert train["flipped_fraction_end"] == 0.05
  assert train["thm41_max_abs_difference"] == 0.0
  assert heldout["thm41_max_abs_difference"] == pytest.approx(0.01)


@pytest.mark.slow
def test_quick_study_end_to_end_and_cached(tmp_path, monkeypatch):
  workdir = str(tmp_path)
  config = demo.get_config()
  summary = ranking_accuracy.run(config, workdir, quick=True)
  assert summary["steps"] == [0, 2, 4]
  assert [(r["lr_factor"], r["split"], r["step"], r["n"]) for r in summary["table"]] == [
      (1.0, s, t, 1) for s in ("train", "heldout") for t in (0, 2, 4)]
  for row in summary["runs"]:
    for name in ranking_accuracy.METRICS:
      assert np.isfinite(row[name]), (name, row)
    # Thm 4.1 holds at every step: flipped exactly when below the flip threshold.
    assert row["flipped_fraction"] == pytest.approx(row["below_threshold"])
    if row["step"] == 0:  # the policy is the reference: loss log 2, no implicit-reward margin
      assert row["dpo_loss"] == pytest.approx(np.log(2.0), abs=1e-6)
      assert (row["reward_accuracy"], row["flipped_fraction"]) == (0.0, 0.0)
  pairs = summary["per_seed"][0]["pairs"]["train"]
  others = pairs["tied_rewards"] + pairs["against_majority"]
  assert pairs["pairs"] == 32
  assert 32 - others - pairs["not_trained"] <= pairs["measured"] <= 32 - others
  for name in ("ranking_accuracy.json", "ranking_accuracy.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0

  # The last checkpoint restores the parameters the run wrote at its end.
  stages = dpo_dynamics.seed_stages(common.quick_config(config), workdir, eval_every=2)
  restored = dpo_dynamics.checkpoint_params(stages["config"], stages["train_dir"], [0, 2, 4],
                                            initial=stages["sft"])
  final = setup.load_params(dpo_dynamics.param_template(stages["config"]), stages["train_dir"])
  jax.tree.map(np.testing.assert_array_equal, restored[4], final)
  sft = setup.load_params(dpo_dynamics.param_template(stages["config"]), stages["sft"])
  jax.tree.map(np.testing.assert_array_equal, restored[0], sft)

  def differ(a, b):
    return any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

  assert differ(restored[2], sft) and differ(restored[2], final)  # a distinct, intermediate step
  with pytest.raises(FileNotFoundError, match="steps \\[3\\]"):
    dpo_dynamics.checkpoint_params(stages["config"], stages["train_dir"], [3],
                                   initial=stages["sft"])

  def fail(*args, **kwargs):
    raise AssertionError("a cached stage was recomputed")

  for module in (common.preference_training, common.sft, common.preferences, dpo_dynamics.preferences):
    monkeypatch.setattr(module, "run", fail)
  with open(os.path.join(workdir, "seed_0", "dpo", "ranking_accuracy.json"), encoding="utf-8") as f:
    assert json.load(f)["rows"] == summary["runs"]
  again = ranking_accuracy.run(config, workdir, quick=True)
  assert again["table"] == summary["table"]
