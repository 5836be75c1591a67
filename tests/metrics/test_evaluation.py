"""Tests of `alignment.metrics.evaluation`: win rates and their intervals, per-attribute win rates
and good fractions, and the KL estimators, by hand and against formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment import metrics as M
from tests.metrics.helpers import ATOL, assert_trees_close, mean_of, run


def test_win_rate_hand_worked():
  got = run(M.win_rate, jnp.arange(10.0), jnp.full(10, 4.0))
  # Outcomes: 0..3 lose, 4 ties (1/2), 5..9 win: WR = 5.5/10 = 0.55.
  # sd = sqrt(mean(o^2) - WR^2) = sqrt(0.525 - 0.3025) = 0.471699;
  # half width = 1.96 * 0.471699 / sqrt(10) = 0.292367.
  assert float(got.rate) == pytest.approx(0.55)
  assert float(got.low) == pytest.approx(0.55 - 0.292367, abs=ATOL)
  assert float(got.high) == pytest.approx(0.55 + 0.292367, abs=ATOL)
  assert float(got.n) == 10


def test_win_rate_normal_interval_matches_formula():
  rng = np.random.default_rng(9)
  policy = rng.integers(0, 5, 300).astype(np.float32)
  reference = rng.integers(0, 5, 300).astype(np.float32)
  where = rng.random(300) < 0.9
  o = np.where(policy > reference, 1.0, np.where(policy == reference, 0.5, 0.0))[where]
  half = 1.96 * o.std() / math.sqrt(len(o))
  got = run(M.win_rate, policy, reference, where=where)
  np.testing.assert_allclose([got.rate, got.low, got.high, got.n],
                             [o.mean(), o.mean() - half, o.mean() + half, len(o)], atol=1e-5)
  # The interval is clipped to [0, 1].
  clipped = run(M.win_rate, jnp.array([1.0, 1.0, 1.0, 0.0]), jnp.zeros(4))
  assert float(clipped.high) == 1.0 and float(clipped.low) < 0.75


def test_win_rate_bootstrap():
  rng = np.random.default_rng(10)
  policy = rng.normal(0.3, 1.0, 400).astype(np.float32)
  reference = rng.normal(0.0, 1.0, 400).astype(np.float32)
  key = jax.random.key(0)
  boot = run(M.win_rate, policy, reference, ci="bootstrap", key=key)
  normal = run(M.win_rate, policy, reference)
  assert float(boot.rate) == float(normal.rate)
  assert float(boot.low) < float(boot.rate) < float(boot.high)
  # For n = 400 the bootstrap percentiles agree with the normal approximation to ~0.01.
  assert float(boot.low) == pytest.approx(float(normal.low), abs=0.015)
  assert float(boot.high) == pytest.approx(float(normal.high), abs=0.015)
  again = run(M.win_rate, policy, reference, ci="bootstrap", key=key)
  assert float(again.low) == float(boot.low)  # deterministic given the key
  # Masked prompts are never drawn: valid ones all lose, masked ones all win.
  where = np.arange(20) < 12
  masked = run(M.win_rate, np.where(where, -1.0, 1.0), np.zeros(20), where=where, ci="bootstrap",
                      key=key, num_resamples=50)
  assert [float(masked.low), float(masked.high), float(masked.n)] == [0.0, 0.0, 12.0]
  # Eager mode draws the same resamples as `jit`.
  policy, reference = policy[:20], reference[:20]
  jitted = run(M.win_rate, policy, reference, ci="bootstrap", key=key, num_resamples=50)
  eager = M.win_rate(policy, reference, ci="bootstrap", key=key, num_resamples=50)
  assert_trees_close(eager, jitted)
  with pytest.raises(ValueError, match="key"):
    run(M.win_rate, policy, reference, ci="bootstrap")
  with pytest.raises(ValueError, match="ci must be"):
    run(M.win_rate, policy, reference, ci="wilson")


def test_jit_of_win_rate():
  rng = np.random.default_rng(24)
  policy, reference = rng.normal(size=50), rng.normal(size=50)
  assert_trees_close(jax.jit(M.win_rate)(policy, reference), M.win_rate(policy, reference))


def test_attribute_win_rates_by_hand():
  # correctness: 2 > 1 win, 1 = 1 tie, 0 < 3 loss → (1 + ½ + 0)/3 = 0.5;
  # harmlessness: 0 = 0, 1 > 0, 1 > 0 → (½ + 1 + 1)/3 = 5/6.
  policy = {"correctness": np.array([2.0, 1.0, 0.0]), "harmlessness": np.array([0.0, 1.0, 1.0])}
  reference = {"correctness": np.array([1.0, 1.0, 3.0]),
               "harmlessness": np.array([0.0, 0.0, 0.0])}
  assert M.attribute_win_rates(policy, reference) == pytest.approx(
      {"correctness": 0.5, "harmlessness": 5 / 6})
  with pytest.raises(ValueError, match="attribute_win_rates: the policy has attributes"):
    M.attribute_win_rates(policy, {"correctness": reference["correctness"]})


def test_good_fractions_by_hand():
  # c >= optimum on responses 0, 1, 3 (3/4); h on 0, 2, 3 (3/4); both on 0 and 3 (2/4).
  values = {"c": np.array([5.0, 4.0, 1.0, 6.0]), "h": np.array([1.0, 0.0, 1.0, 1.0])}
  optimum = {"c": np.array([5.0, 4.0, 3.0, 6.0]), "h": np.array([1.0, 1.0, 1.0, 1.0])}
  assert M.good_fractions(values, optimum) == {"c": 0.75, "h": 0.75, "all": 0.5}
  # Within atol of the optimum still counts as good.
  assert M.good_fractions({"c": np.array([4.9999])}, {"c": np.array([5.0])}, atol=1e-3) == {
      "c": 1.0, "all": 1.0}
  with pytest.raises(ValueError, match="good_fractions: values have attributes"):
    M.good_fractions(values, {"c": optimum["c"]})


# ---------------------------------------------------------------------------------------------
# KL.


def test_sample_kl_and_k3_hand_worked():
  # k1: ((-1) - (-1.5) + (-2) - (-1)) / 2 = (0.5 - 1) / 2 = -0.25.
  assert mean_of(run(M.sample_kl, jnp.array([-1.0, -2.0]), jnp.array([-1.5, -1.0]))) == -0.25
  # k3 with delta = lr - lp = [-0.5, 1, 0 (masked)]: e^-0.5 + 0.5 - 1 = 0.106531,
  # e^1 - 1 - 1 = 0.718282; mean = 0.412406.
  got = run(M.token_kl_k3, jnp.array([[-1.0, -2.0, -3.0]]), jnp.array([[-1.5, -1.0, -9.0]]),
                      jnp.array([[True, True, False]]))
  assert mean_of(got) == pytest.approx((math.exp(-0.5) - 0.5 + math.e - 2) / 2, abs=ATOL)


def test_kl_estimators_agree_with_exact_kl():
  rng = np.random.default_rng(11)
  logits = rng.normal(size=5)
  ref_logits = rng.normal(size=5)
  log_p = logits - np.log(np.exp(logits).sum())
  log_q = ref_logits - np.log(np.exp(ref_logits).sum())
  exact = float(np.sum(np.exp(log_p) * (log_p - log_q)))
  got = run(M.exact_kl, logits[None].astype(np.float32), ref_logits[None].astype(np.float32))
  assert mean_of(got) == pytest.approx(exact, abs=1e-6)
  assert mean_of(run(M.exact_kl, logits[None], logits[None])) == pytest.approx(0.0, abs=1e-6)
  # Monte Carlo with tokens drawn from pi: k1 and k3 are unbiased for the exact KL.
  tokens = rng.choice(5, size=20000, p=np.exp(log_p))
  lp, lr = log_p[tokens].astype(np.float32), log_q[tokens].astype(np.float32)
  assert mean_of(run(M.sample_kl, lp, lr)) == pytest.approx(exact, abs=0.03)
  assert mean_of(run(M.token_kl_k3, lp[None], lr[None])) == pytest.approx(exact, abs=0.03)
  # A zero-probability token (-inf logit) contributes 0, not NaN.
  zero = run(M.exact_kl, jnp.array([[0.0, -jnp.inf]]), jnp.array([[0.0, 0.0]]))
  assert mean_of(zero) == pytest.approx(math.log(2.0), abs=1e-6)
