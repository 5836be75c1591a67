"""Study 4 (Curry-DPO): its data builders and helpers by hand, its grid wiring with a fake
pipeline, and the quick mode end to end (slow)."""

import os

import numpy as np
import pytest

from experiments.configs import demo
from experiments.studies import common, curriculum


def _lists(scores, rewards=None):
  return [{"prompt": f"p{i}", "responses": [f"r{i}{j}" for j in range(len(s))],
           "scores": list(map(float, s)),
           "rewards": list(map(float, rewards[i] if rewards else s))}
          for i, s in enumerate(scores)]


def test_curry_pair_records_by_hand():
  # List 0, labels [3, 0, 2, 1]: best r00; pairs by rejected rank: (r00, r01) gap 3 (stage 0),
  # (r00, r03) gap 2 (stage 1), (r00, r02) gap 1 (stage 2). List 1, labels [0, 1, 3, 2]: best
  # r12; (r12, r10) gap 3, (r12, r11) gap 2, (r12, r13) gap 1. Stage after stage, ties by list.
  pairs = curriculum.curry_pair_records(_lists([[3, 0, 2, 1], [0, 1, 3, 2]]))
  assert [p["responses"] for p in pairs] == [
      ["r00", "r01"], ["r12", "r10"], ["r00", "r03"], ["r12", "r11"], ["r00", "r02"],
      ["r12", "r13"]]
  assert all(p["scores"] == [1.0, 0.0] for p in pairs)
  assert [p["prompt"] for p in pairs[:2]] == ["p0", "p1"]


def test_random_pair_records_are_distinct_label_pairs_best_first():
  lists = _lists([[3, 0, 2, 1], [1, 0], [2, 2, 2, 2]])
  out = curriculum.random_pair_records(lists, seed=0)
  assert [p["prompt"] for p in out] == ["p0", "p1"]  # all-equal labels give no pair
  assert out[1]["responses"] == ["r10", "r11"] and out[1]["scores"] == [1.0, 0.0]
  label = {f"r0{j}": s for j, s in enumerate([3, 0, 2, 1])}
  seen = set()
  for seed in range(40):
    (a, b) = curriculum.random_pair_records(lists[:1], seed=seed)[0]["responses"]
    assert label[a] > label[b]
    seen.add((a, b))
  assert len(seen) == 6  # every one of the C(4, 2) = 6 pairs gets drawn
  assert curriculum.random_pair_records(lists, seed=3) == curriculum.random_pair_records(
      lists, seed=3)


def test_stage_optimizer_spans_one_stage():
  optimizer = demo.get_config().train.optimizer  # 300 steps, 20 warm-up
  out = curriculum.stage_optimizer(optimizer, 300, 3)
  # 300 // 3 = 100 steps a stage; warm-up 20 · 100 / 300 = 6.67 -> 7.
  assert (out["total_steps"], out["warmup_steps"], out["schedule"]) == (100, 7, "cosine")
  assert out["learning_rate"] == optimizer.learning_rate
  # Quick mode: 4 steps in 3 stages -> 1 step a stage, no warm-up.
  assert curriculum.stage_optimizer(optimizer, 4, 3)["total_steps"] == 1
  assert curriculum.stage_optimizer(optimizer, 4, 3)["warmup_steps"] == 0


def test_paired_margins_by_hand():
  rows = [{"method": m, "seed": s, "win_rate": w, "mean_reward": 2 * w, "kl": 1.0}
          for m, s, w in [("a", 0, 0.7), ("b", 0, 0.6), ("a", 1, 0.5), ("b", 1, 0.6),
                          ("a", 2, 0.9)]]
  out = common.paired_margins(rows, "method", "a", "b")
  # Seeds 0 and 1 have both: differences 0.1, −0.1 -> mean 0, std sqrt(0.02 / 1) = 0.1414.
  assert out["n"] == 2
  assert out["win_rate_mean"] == pytest.approx(0.0, abs=1e-12)
  assert out["win_rate_std"] == pytest.approx(0.02 ** 0.5)
  assert out["mean_reward_std"] == pytest.approx(2 * 0.02 ** 0.5)
  assert out["kl_mean"] == 0.0
  with pytest.raises(ValueError, match="no seed"):
    common.paired_margins(rows, "method", "a", "c")


def test_curriculum_grid_wiring(tmp_path, fake_pipeline):
  lists = _lists([[3, 0, 2, 1], [0, 1, 3, 2]])
  # Duplicate responses are dropped as train.py drops them (the first "a" stays): one pair.
  lists.append({"prompt": "p2", "responses": ["a", "a", "b"], "scores": [2.0, 1.0, 0.0],
                "rewards": [1.0, 1.0, 0.0]})
  cells = fake_pipeline(lists)
  summary = curriculum.run(demo.get_config(), str(tmp_path), seeds=(0, 1))
  assert [(c["method"], c["policy"]) for c in cells] == [
      (m, f"sft{s}") for s in (0, 1)
      for m in ("curriculum", "shuffled", "curriculum_fixed_ref", "random_pair")]
  cur, shuf, fixed, rand = cells[:4]
  assert all(c["loss"] == {"name": "dpo", "beta": 0.5} for c in cells)
  assert all(c["preferences_k"] == 4 and c["train"]["num_steps"] == 300 for c in cells)
  # Staged methods: the K = 4 lists, staged by train.py; 3 stages of 100 steps each.
  for c, refresh in ((cur, True), (fixed, False)):
    assert (c["train"]["curriculum"], c["train"]["refresh_reference"]) == ("rank", refresh)
    assert c["records"] == lists
    assert (c["train"]["optimizer"]["total_steps"], c["train"]["optimizer"]["warmup_steps"]) == (
        100, 7)
  # One-stage methods: pairs, the config's schedule over all 300 steps.
  for c in (shuf, rand):
    assert c["train"]["curriculum"] == "" and c["train"]["optimizer"]["total_steps"] == 300
  # Stage 0 (gap 3, 3, then p2's gap 2), stage 1, stage 2 (see test_curry_pair_records_by_hand).
  assert [p["responses"] for p in shuf["records"]] == [
      ["r00", "r01"], ["r12", "r10"], ["a", "b"], ["r00", "r03"], ["r12", "r11"],
      ["r00", "r02"], ["r12", "r13"]]
  assert len(rand["records"]) == 3
  assert summary["data"][0] == {"curry_pairs": 7, "stages": 3, "lists": 3}
  assert [(r["method"], r["n"]) for r in summary["table"]] == [
      ("curriculum", 2), ("shuffled", 2), ("curriculum_fixed_ref", 2), ("random_pair", 2)]
  # Fake metric = cell index: curriculum 1, 5 and shuffled 2, 6 -> paired differences −1, −1.
  claim = summary["claims"]["curriculum_minus_shuffled"]
  assert (claim["n"], claim["win_rate_mean"], claim["win_rate_std"]) == (2, -1.0, 0.0)
  # Random pair: cells 4, 8 -> curriculum − random_pair = −3, shuffled − random_pair = −2.
  assert summary["claims"]["curriculum_minus_random_pair"]["win_rate_mean"] == -3.0
  assert summary["claims"]["shuffled_minus_random_pair"]["win_rate_mean"] == -2.0
  assert sorted(summary["claims"]) == sorted(f"{a}_minus_{b}" for a, b in curriculum.COMPARISONS)
  with pytest.raises(ValueError, match="shuffled"):
    curriculum.run(demo.get_config(), str(tmp_path), methods=("curriculum",))


@pytest.mark.slow
def test_quick_curriculum_end_to_end(tmp_path, monkeypatch):
  workdir = str(tmp_path)
  summary = curriculum.run(demo.get_config(), workdir, quick=True)
  assert [(r["method"], r["n"]) for r in summary["table"]] == [
      ("curriculum", 1), ("shuffled", 1)]
  for row in summary["runs"]:
    assert 0.0 <= row["win_rate"] <= 1.0 and np.isfinite(row["kl"])
  train_dir = os.path.join(workdir, "seed_0", "curriculum", "train")
  assert sorted(d for d in os.listdir(train_dir) if d.startswith("stage_")) == [
      "stage_0", "stage_1", "stage_2"]
  for name in ("curriculum.json", "curriculum.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0

  def fail(*args, **kwargs):
    raise AssertionError("a cached cell was recomputed")

  monkeypatch.setattr(common.preference_training, "run", fail)
  monkeypatch.setattr(common.sft, "run", fail)
  assert curriculum.run(demo.get_config(), workdir, quick=True)["table"] == summary["table"]
