"""Study 6 (likelihood displacement): statistics by hand and against scipy, the CHES window
against a brute-force loop over positions, and the study end to end (`slow`)."""

import json
import os

import jax
import numpy as np
import pytest
from scipy import stats

from alignment.losses import pairwise
from alignment.training import setup
from experiments.configs import demo
from experiments.studies import common, dpo_dynamics, likelihood_displacement as ld


def test_average_ranks_by_hand_and_against_scipy():
  np.testing.assert_array_equal(ld.average_ranks([10, 30, 20, 20]), [1, 4, 2.5, 2.5])
  np.testing.assert_array_equal(ld.average_ranks([5, 5, 5]), [2, 2, 2])
  x = np.random.default_rng(0).integers(0, 6, size=40).astype(float)  # many ties
  np.testing.assert_allclose(ld.average_ranks(x), stats.rankdata(x), rtol=0, atol=1e-12)


def test_correlations_by_hand_and_against_scipy():
  # x = [1, 2, 3], y = [2, 4, 7]: dx = [-1, 0, 1], dy = [-7/3, -1/3, 8/3];
  # r = (7/3 + 8/3) / sqrt(2 · (49 + 1 + 64)/9) = 5 / sqrt(228/9) = 0.99339...
  assert ld.pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / np.sqrt(228 / 9))
  assert ld.spearman([1, 2, 3], [2, 4, 7]) == pytest.approx(1.0)  # monotone
  assert ld.spearman([1, 2, 3], [9, 4, 0]) == pytest.approx(-1.0)
  assert np.isnan(ld.pearson([1, 1, 1], [1, 2, 3]))
  rng = np.random.default_rng(1)
  x = rng.normal(size=200)
  y = -0.5 * x + rng.normal(size=200)
  y[:20] = np.round(y[:20])  # a few ties
  assert ld.pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
  assert ld.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
  with pytest.raises(ValueError, match="N >= 2"):
    ld.pearson([1.0], [2.0])


def test_quantile_bins_and_binned_means_by_hand():
  scores = [5.0, 1.0, 4.0, 2.0, 3.0, 0.0]
  # Ascending order: indices 5, 1, 3, 4, 2, 0 -> bins of two: {5, 1}, {3, 4}, {2, 0}.
  np.testing.assert_array_equal(ld.quantile_bins(scores, 3), [2, 0, 2, 1, 1, 0])
  # 4 bins of 6: sizes 2, 2, 1, 1 (np.array_split).
  np.testing.assert_array_equal(ld.quantile_bins(scores, 4), [3, 0, 2, 1, 1, 0])
  values = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
  score_means, value_means = ld.binned_means(scores, values, 3)
  np.testing.assert_allclose(score_means, [0.5, 2.5, 4.5])
  np.testing.assert_allclose(value_means, [(60 + 20) / 2, (40 + 50) / 2, (30 + 10) / 2])
  with pytest.raises(ValueError, match="num_bins"):
    ld.quantile_bins(scores, 7)


def test_score_effects_and_removal_by_hand():
  # 20 pairs: score i, change −i for the top decile (18, 19), +i elsewhere.
  scores = np.arange(20.0)
  change = np.where(scores >= 18, -scores, scores)
  out = ld.score_effects(scores, change, num_bins=5)
  assert out["top_decile_change"] == pytest.approx(-18.5)
  assert out["bottom_decile_change"] == pytest.approx(0.5)
  assert out["decile_difference"] == pytest.approx(-19.0)
  np.testing.assert_allclose(out["bin_change"], [1.5, 5.5, 9.5, 13.5, (16 + 17 - 37) / 4])
  assert out["spearman"] == pytest.approx(stats.spearmanr(scores, change).statistic)
  removed = ld.removal(np.array([0.3, -1.0, 2.0, 0.5, 1.0, 0.0, -0.2, 0.1, 0.4, 0.9]),
                       fraction=0.2, seed=0)
  np.testing.assert_array_equal(removed["without_top_ln_ches"], [2, 4])
  assert len(set(removed["without_random"].tolist())) == 2
  assert all(0 <= i < 10 for i in removed["without_random"])


def test_ches_window_against_a_brute_force_loop():
  config = dpo_dynamics.dpo_config(demo.get_config(), 0, eval_every=1)
  with config.unlocked():
    config.evaluate.batch_size = 4  # two batches, the last one padded by repetition
  scorer = dpo_dynamics.PairScorer(config)
  # Random parameters of the decoder's shapes (cheaper than its initialiser).
  shapes = jax.eval_shape(lambda: dpo_dynamics.param_template(config))
  keys = iter(jax.random.split(jax.random.key(0), len(jax.tree.leaves(shapes))))
  params = jax.tree.map(lambda s: 0.5 * jax.random.normal(next(keys), s.shape, s.dtype), shapes)
  pairs = [
      {"prompt": "5281:", "responses": ["1258", "125"], "scores": [1.0, 0.0]},
      {"prompt": "90:", "responses": ["0", "09"], "scores": [1.0, 0.0]},
      {"prompt": "12345678:", "responses": ["1234568", "12345678"], "scores": [1.0, 0.0]},
      {"prompt": "33:", "responses": ["", "33"], "scores": [1.0, 0.0]},  # EOS alone
      {"prompt": "4412:", "responses": ["1244", "1244"], "scores": [1.0, 0.0]},  # identical
  ]
  ches, ln_ches = scorer.ches(params, pairs)
  expected, expected_ln = [], []
  for i, batch in enumerate(scorer.batches(pairs)):
    start = i * scorer.batch_size
    hidden = np.asarray(scorer.hidden(params, batch), np.float64)
    for b in range(min(scorer.batch_size, len(pairs) - start)):
      sums, counts = [], []
      for slot in range(2):
        p, r = int(batch["prompt_lengths"][b]), int(batch["response_lengths"][b, slot])
        # Response tokens (EOS included) sit at p .. p + r − 1; they are predicted from the
        # positions p − 1 .. p + r − 2 (last prompt position to second-to-last response one).
        window = list(range(p - 1, p + r - 1))
        assert len(window) == r >= 1
        sums.append(sum(hidden[b, slot, t] for t in window))
        counts.append(len(window))
      h_pos, h_neg = sums
      expected.append(h_pos @ h_neg - h_pos @ h_pos)
      h_pos, h_neg = h_pos / counts[0], h_neg / counts[1]
      expected_ln.append(h_pos @ h_neg - h_pos @ h_pos)
  np.testing.assert_allclose(ches, expected, rtol=2e-4, atol=1e-3)
  np.testing.assert_allclose(ln_ches, expected_ln, rtol=2e-4, atol=1e-5)
  assert ches[4] == pytest.approx(0.0, abs=1e-3)  # identical responses: ⟨H, H⟩ − ‖H‖² = 0
  assert np.ptp(ches[:4]) > 1.0  # the pairs are not all alike


@pytest.mark.slow  # compiles per-pair Jacobians of the decoder (~20 s on a loaded 2-core CPU)
def test_first_order_change_against_per_pair_gradients_and_a_step():
  config = dpo_dynamics.dpo_config(demo.get_config(), 0, eval_every=1)
  with config.unlocked():
    config.evaluate.batch_size = 2
  scorer = dpo_dynamics.PairScorer(config)
  params = dpo_dynamics.param_template(config)
  pairs = [{"prompt": "5281:", "responses": ["1258", "125"], "scores": [1.0, 0.0]},
           {"prompt": "90:", "responses": ["0", "09"], "scores": [1.0, 0.0]},
           {"prompt": "33:", "responses": ["33", "3"], "scores": [1.0, 0.0]}]
  out = scorer.first_order_change(params, pairs)
  logp_fn = setup.logp_fn(scorer.model_config, chunk_size=config.model.logprob_chunk)
  beta, lr = 0.5, 1e-4
  # Independent of `first_order_change`: one plain gradient per response, and a real SGD step
  # on the pair's DPO loss (reference = params, so h = 0 and σ(−βh) = 1/2), which raises
  # lp(y_w) by lr·β/2·⟨g_w, g_w − g_l⟩ to first order.
  grad = jax.jit(jax.grad(lambda p, row, slot: logp_fn(p, row)[0][0, slot]), static_argnums=2)

  @jax.jit
  def stepped_change(p, row):
    ref = logp_fn(p, row)[0]
    loss = lambda q: pairwise.dpo(logp_fn(q, row)[0], ref, beta=beta)
    new = jax.tree.map(lambda q, g: q - lr * g, p, jax.grad(loss)(p))
    return logp_fn(new, row)[0][0, 0] - ref[0, 0]

  def dot(a, b):
    return sum(float(np.sum(np.asarray(x, np.float64) * np.asarray(y, np.float64)))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

  for i, pair in enumerate(pairs):
    batch = scorer.batches([pair])[0]  # row 0 is the pair (padded by repetition)
    row = {k: batch[k][:1] for k in ("tokens", "positions", "segment_ids", "completion_mask")}
    g_w, g_l = grad(params, row, 0), grad(params, row, 1)
    expected = dot(g_w, g_w) - dot(g_w, g_l)
    assert out[i] == pytest.approx(expected, rel=1e-3)
    assert float(stepped_change(params, row)) == pytest.approx(lr * beta / 2 * expected, rel=0.05)


@pytest.mark.slow
def test_quick_study_end_to_end_and_cached(tmp_path, monkeypatch):
  workdir = str(tmp_path)
  config = demo.get_config()
  trained = []
  real_train = common.preference_training.run
  monkeypatch.setattr(common.preference_training, "run",
                      lambda c, out, **k: trained.append(out) or real_train(c, out, **k))
  summary = ld.run(config, workdir, quick=True)
  seed = os.path.join(workdir, "seed_0")
  # The shared DPO cell, then one cell per intervention.
  assert trained == [os.path.join(seed, run, "train") for run in (
      "dpo", "dpo_without_top_ln_ches", "dpo_without_random")]
  (per_seed,) = summary["per_seed"]
  kept = per_seed["trained_pairs"]
  assert 0 < kept <= per_seed["pairs"] == 32
  removed = int(round(0.1 * kept))
  assert [per_seed["interventions"][v]["removed"] for v in ld.DATA_VARIANTS] == [0, removed,
                                                                                  removed]
  for variant in ld.DATA_VARIANTS[1:]:
    with open(os.path.join(seed, f"data_k2_{variant}.jsonl"), encoding="utf-8") as f:
      assert sum(1 for _ in f) == 32 - removed
  assert [(r["score"], r["target"]) for r in summary["tables"]["correlations"]] == list(
      ld.EFFECTS)
  assert len(summary["tables"]["bins"]) == len(ld.EFFECTS) * ld.NUM_BINS
  with open(os.path.join(workdir, "seed_0", "dpo", "likelihood_displacement.json"),
            encoding="utf-8") as f:
    per_pair = json.load(f)["per_pair"]
  np.testing.assert_allclose(per_pair["gradient_ches"], -np.array(per_pair["first_order_change"]))
  assert len(per_pair["ches"]) == kept
  for row in summary["tables"]["correlations"]:
    assert -1.0 <= row["spearman_mean"] <= 1.0 and -1.0 <= row["pearson_mean"] <= 1.0
  for row in summary["tables"]["interventions"]:
    assert 0.0 <= row["win_rate_mean"] <= 1.0 and np.isfinite(row["chosen_change_mean"])
  (gain,) = summary["tables"]["filter_gain"]  # paired by seed: one seed here
  interventions = per_seed["interventions"]
  assert gain["win_rate_mean"] == pytest.approx(interventions["without_top_ln_ches"]["win_rate"]
                                                - interventions["without_random"]["win_rate"])
  for name in ("likelihood_displacement.json", "likelihood_displacement.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0

  def fail(*args, **kwargs):
    raise AssertionError("a cached stage was recomputed")

  for module in (common.preference_training, common.sft, common.preferences, dpo_dynamics.preferences):
    monkeypatch.setattr(module, "run", fail)
  again = ld.run(config, workdir, quick=True)
  assert again["tables"] == summary["tables"]
