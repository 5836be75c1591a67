"""Studies: the shared helpers by hand, and both studies end to end in quick mode.

The end-to-end test shares one workdir (one SFT policy) between the two studies and trims each
quick grid to a few cells, so the module stays around a minute on a 2-core CPU.
"""

import json
import os

import numpy as np
import pytest

from experiments.configs import demo
from experiments.studies import common, lipo, noisy_labels

pytestmark = pytest.mark.slow  # deselected by default; CI runs `pytest -m slow`


def _records(scores, rewards):
  return [{"prompt": f"p{i}", "responses": [f"r{i}{j}" for j in range(len(s))],
           "scores": list(map(float, s)), "rewards": list(map(float, r))}
          for i, (s, r) in enumerate(zip(scores, rewards))]


def test_sub_lists_keeps_the_order_and_renumbers_labels():
  records = _records([[3, 0, 2, 1], [0, 1, 3, 2]], [[4, 1, 3, 2], [1, 2, 4, 3]])
  pairs = common.sub_lists(records, 2)
  # List 0: labels [3, 0] -> ranks [1, 0]; list 1: [0, 1] -> [0, 1].
  assert [r["scores"] for r in pairs] == [[1.0, 0.0], [0.0, 1.0]]
  assert [r["responses"] for r in pairs] == [["r00", "r01"], ["r10", "r11"]]
  assert [r["rewards"] for r in pairs] == [[4.0, 1.0], [1.0, 2.0]]
  # K = 3 of list 0: labels [3, 0, 2] -> [2, 0, 1].
  assert common.sub_lists(records, 3)[0]["scores"] == [2.0, 0.0, 1.0]
  # Ties share a label: [2, 2, 0] -> [1, 1, 0].
  assert common._rank_labels([2.0, 2.0, 0.0]) == [1.0, 1.0, 0.0]
  with pytest.raises(ValueError, match="k = 5"):
    common.sub_lists(records, 5)


def test_sorted_best_first_moves_responses_with_their_labels():
  records = _records([[1, 3, 0, 2]], [[0.1, 0.3, 0.0, 0.2]])
  (out,) = common.sorted_best_first(records)
  assert out["scores"] == [3.0, 2.0, 1.0, 0.0]
  assert out["responses"] == ["r01", "r03", "r00", "r02"]
  assert out["rewards"] == [0.3, 0.2, 0.1, 0.0]


def test_aggregate_means_and_sample_std_against_numpy():
  rng = np.random.default_rng(0)
  rows = [{"objective": o, "k": k, "seed": s, **{m: float(rng.normal()) for m in common.METRICS}}
          for o in ("a", "b") for k in (2, 4) for s in range(3)]
  table = common.aggregate(rows, ("objective", "k"))
  assert [(r["objective"], r["k"], r["n"]) for r in table] == [
      ("a", 2, 3), ("a", 4, 3), ("b", 2, 3), ("b", 4, 3)]
  for entry in table:
    x = np.array([r["win_rate"] for r in rows
                  if (r["objective"], r["k"]) == (entry["objective"], entry["k"])])
    np.testing.assert_allclose(entry["win_rate_mean"], x.sum() / 3, rtol=1e-12)
    np.testing.assert_allclose(
        entry["win_rate_std"], np.sqrt(((x - x.mean()) ** 2).sum() / 2), rtol=1e-12)
  # Hand check: values 0.5, 0.7 -> mean 0.6, std sqrt((0.01 + 0.01) / 1) = 0.141421...
  two = [{"g": 0, **{m: v for m in common.METRICS}} for v in (0.5, 0.7)]
  (entry,) = common.aggregate(two, ("g",))
  assert entry["kl_mean"] == pytest.approx(0.6) and entry["kl_std"] == pytest.approx(0.1414214)
  (single,) = common.aggregate(two[:1], ("g",))
  assert single["kl_std"] == 0.0


def test_label_error_rate_by_hand():
  # Pair 0 agrees, pair 1 is flipped, pair 2 has tied rewards (ignored), pair 3 flipped: 2/3.
  records = _records([[1, 0], [1, 0], [1, 0], [0, 1]], [[2, 1], [1, 2], [1, 1], [3, 1]])
  assert noisy_labels.label_error_rate(records) == pytest.approx(2 / 3)


def test_claim_checks_and_degradation_on_a_hand_table():
  table = [{"objective": o, "k": k, "win_rate_mean": w, "mean_reward_mean": w / 10}
           for o, k, w in [("lipo_lambda", 2, 0.6), ("dpo_x", 2, 0.7),
                           ("lipo_lambda", 4, 0.8), ("dpo_x", 4, 0.65)]]
  checks = lipo.claim_checks(table, (2, 4), ("lipo_lambda", "dpo_x"))
  assert checks["k=2"]["lipo_lambda_rank"] == 2
  assert checks["k=2"]["margin_win_rate"] == pytest.approx(-0.1)
  assert checks["k=4"]["lipo_lambda_rank"] == 1
  assert checks["k=4"]["margin_win_rate"] == pytest.approx(0.15)
  noisy = [{"objective": o, "flip_rate": e, "win_rate_mean": w, "mean_reward_mean": 2 * w}
           for o, drop in (("dpo", 0.2), ("cdpo", 0.1), ("rdpo", 0.05))
           for e, w in ((0.0, 0.7), (0.3, 0.7 - drop))]
  out = noisy_labels.degradation(noisy, (0.0, 0.3))
  assert out["dpo"]["win_rate_drop"] == pytest.approx(0.2)
  assert out["rdpo"]["reward_drop"] == pytest.approx(0.1)


def test_with_overrides_copies_and_replaces_the_loss_section():
  config = demo.get_config()
  new = common.with_overrides(config, seed=3, loss={"name": "pro"}, train=dict(num_steps=7))
  assert (new.seed, new.train.num_steps, dict(new.loss)) == (3, 7, {"name": "pro"})
  assert (config.seed, config.train.num_steps, config.loss.beta) == (0, 300, 0.5)


def test_lipo_grid_wiring(tmp_path, fake_pipeline):
  lists = _records([[1, 3, 0, 2]], [[0.1, 0.3, 0.0, 0.2]])
  cells = fake_pipeline(lists)
  summary = lipo.run(demo.get_config(), str(tmp_path), seeds=(0, 1), ks=(2, 4),
                     objectives=("pro", "lipo_lambda"))
  assert [(c["objective"], c["k"], c["policy"]) for c in cells] == [
      ("pro", 2, "sft0"), ("lipo_lambda", 2, "sft0"), ("pro", 4, "sft0"),
      ("lipo_lambda", 4, "sft0"), ("pro", 2, "sft1"), ("lipo_lambda", 2, "sft1"),
      ("pro", 4, "sft1"), ("lipo_lambda", 4, "sft1")]
  assert all(c["preferences_k"] == c["k"] for c in cells)  # held-out lists of the same K
  pro2, lam2, pro4, lam4 = cells[:4]
  # PRO: no β, no reference, lists sorted best first; the others: β = 0.5 on the raw order.
  assert (pro2["loss"], pro2["reference"]) == ({"name": "pro"}, "none")
  assert (lam2["loss"], lam2["reference"]) == ({"name": "lipo_lambda", "beta": 0.5}, "cache")
  # The K = 2 lists are the first two responses (labels 1, 3 -> 0, 1); K = 4 all four.
  assert lam2["records"][0]["responses"] == ["r00", "r01"]
  assert lam2["records"][0]["scores"] == [0.0, 1.0]
  assert pro2["records"][0]["responses"] == ["r01", "r00"]
  assert pro4["records"][0]["responses"] == ["r01", "r03", "r00", "r02"]
  assert lam4["records"][0]["scores"] == [1.0, 3.0, 0.0, 2.0]
  assert [(r["objective"], r["k"], r["n"]) for r in summary["table"]] == [
      ("pro", 2, 2), ("lipo_lambda", 2, 2), ("pro", 4, 2), ("lipo_lambda", 4, 2)]
  # Fake metric = cell index: pro at K=2 gets cells 1 and 5 -> mean 3, std sqrt(8) = 2.828.
  assert summary["table"][0]["win_rate_mean"] == 3.0
  assert summary["table"][0]["win_rate_std"] == pytest.approx(8 ** 0.5)
  with pytest.raises(ValueError, match="lipo_lambda"):
    lipo.run(demo.get_config(), str(tmp_path), objectives=("pro",))


def test_lipo_shares_the_cells_that_are_one_loss_at_k2(tmp_path, fake_pipeline):
  cells = fake_pipeline(_records([[1, 3, 0, 2]], [[0.1, 0.3, 0.0, 0.2]]))
  summary = lipo.run(demo.get_config(), str(tmp_path), seeds=(0,), ks=(2, 4),
                     objectives=("lipo_softmax", "lipo_pair_logistic", "lipo_lambda"))
  # At K = 2 softmax is DPO_BT: its row reads the lipo_pair_logistic cell; at K = 4 it trains.
  assert [(c["run"], c["loss"]["name"]) for c in cells] == [
      ("lipo_pair_logistic_k2", "lipo_pair_logistic"),
      ("lipo_pair_logistic_k2", "lipo_pair_logistic"),
      ("lipo_lambda_k2", "lipo_lambda"),
      ("lipo_softmax_k4", "lipo_softmax"),
      ("lipo_pair_logistic_k4", "lipo_pair_logistic"),
      ("lipo_lambda_k4", "lipo_lambda")]
  assert [(r["objective"], r["k"]) for r in summary["runs"]] == [
      ("lipo_softmax", 2), ("lipo_pair_logistic", 2), ("lipo_lambda", 2),
      ("lipo_softmax", 4), ("lipo_pair_logistic", 4), ("lipo_lambda", 4)]


def test_noisy_grid_wiring(tmp_path, fake_pipeline):
  # Each sampled record carries the flip rate it was rated with.
  cells = fake_pipeline(_records([[1, 0]], [[2.0, 1.0]]), records_for=lambda config, lists: [
      {**r, "flip_rate": config.preferences.flip_rate} for r in lists])
  summary = noisy_labels.run(demo.get_config(), str(tmp_path), seeds=(0,),
                             flip_rates=(0.2, 0.0))
  # At ε = 0 cDPO and rDPO are DPO: one cell trained there and shared by all three rows.
  assert [(c["run"], c["loss"]) for c in cells] == [
      ("dpo_flip0", {"name": "dpo", "beta": 0.5}),
      ("dpo_flip0", {"name": "dpo", "beta": 0.5}),
      ("dpo_flip0", {"name": "dpo", "beta": 0.5}),
      ("dpo_flip0.2", {"name": "dpo", "beta": 0.5}),
      ("cdpo_flip0.2", {"name": "cdpo", "beta": 0.5, "label_smoothing": 0.2}),
      ("rdpo_flip0.2", {"name": "rdpo", "beta": 0.5, "label_smoothing": 0.2})]
  assert all(c["preferences_k"] == 2 for c in cells)
  assert [c["records"][0]["flip_rate"] for c in cells] == [0.0] * 3 + [0.2] * 3
  assert [(r["objective"], r["flip_rate"]) for r in summary["table"]] == [
      ("dpo", 0.0), ("cdpo", 0.0), ("rdpo", 0.0), ("dpo", 0.2), ("cdpo", 0.2), ("rdpo", 0.2)]


def test_quick_studies_end_to_end(tmp_path, monkeypatch):
  workdir = str(tmp_path)
  config = demo.get_config()
  sft_calls = []
  real_sft = common.sft.run
  monkeypatch.setattr(common.sft, "run", lambda *a, **k: sft_calls.append(1) or real_sft(*a, **k))
  summary = lipo.run(config, workdir, quick=True, ks=(2,), objectives=("pro", "lipo_lambda"))
  assert [(r["objective"], r["k"], r["n"]) for r in summary["table"]] == [
      ("pro", 2, 1), ("lipo_lambda", 2, 1)]
  for row in summary["runs"]:
    assert 0.0 <= row["win_rate"] <= 1.0 and np.isfinite(row["kl"])
  assert summary["claims"]["k=2"]["best_other"] == "pro"
  seed = os.path.join(workdir, "seed_0")
  with open(os.path.join(seed, "lists_k2_sorted.jsonl"), encoding="utf-8") as f:
    assert all(r["scores"] == [1.0, 0.0] for r in map(json.loads, f))

  noisy = noisy_labels.run(config, workdir, quick=True, flip_rates=(0.3,))
  assert [(r["objective"], r["flip_rate"]) for r in noisy["table"]] == [
      ("dpo", 0.3), ("cdpo", 0.3), ("rdpo", 0.3)]
  assert sft_calls == [1]  # one SFT policy per seed, shared by both studies
  # Flip rate 0.3 on 32 pairs: some labels disagree with the true reward, most agree.
  assert 0.0 < noisy["observed_label_error"]["0.3"] < 0.7
  for name in ("lipo.json", "lipo.png", "noisy_labels.json", "noisy_labels.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0

  # A second call reads every cell back from the workdir: nothing is trained again.
  def fail(*args, **kwargs):
    raise AssertionError("a cached cell was recomputed")

  monkeypatch.setattr(common.preference_training, "run", fail)
  monkeypatch.setattr(common.sft, "run", fail)
  again = noisy_labels.run(config, workdir, quick=True, flip_rates=(0.3,))
  assert again["table"] == noisy["table"]


def test_markdown_table_by_hand():
  table = [{"objective": "dpo", "k": 2, "n": 3, "win_rate_mean": 0.61234, "win_rate_std": 0.0456}]
  assert common.markdown_table(table, ("objective", "k"), ("win_rate",)).splitlines() == [
      "| objective | k | win_rate |", "|---|---|---|", "| dpo | 2 | 0.612 ± 0.046 (3) |"]
