"""Tests of the self-play objectives (SPPO square, GPO, ONPO, HyPO): hand-worked values, float64
numpy references on seeded random inputs, the SPPO-hard reduction, gradients.
"""

import jax
import jax.numpy as jnp
import numpy as np

from alignment import losses
from alignment.losses import self_play as sp
from tests.references import GROUP_SHAPE, as_float32, np_rloo

B, K, _ = GROUP_SHAPE


def np_softplus(x):
  return np.logaddexp(0.0, x)


def np_square(lp, ref, p, where, beta):
  per = np.sum(np.where(where, (lp - ref - (p - 0.5) / beta) ** 2, 0.0), -1)
  return per[where.any(-1)].mean()


def test_sppo_square_hand_worked_reference_and_hard_reduction():
  # ρ = [1, −1], p = [0.75, 0.25], β = 0.5: targets ±0.5 → (0.5)² + (−0.5)² = 0.5.
  got = sp.sppo_square(jnp.array([0.0, -2.0]), jnp.array([-1.0, -1.0]), jnp.array([0.75, 0.25]),
                       beta=0.5)
  np.testing.assert_allclose(got, 0.5, rtol=1e-6)
  rng = np.random.default_rng(19)
  lp, ref, p = -rng.uniform(1, 5, (B, K)), -rng.uniform(1, 5, (B, K)), rng.random((B, K))
  where = np.ones((B, K), bool)
  where[1] = False
  np.testing.assert_allclose(sp.sppo_square(*as_float32(lp, ref, p), where=where, beta=0.1),
                             np_square(lp, ref, p, where, 0.1), rtol=1e-5)
  # p = [1, 0] on pairs is SPPO-hard.
  pair_lp, pair_ref = as_float32(lp[:, :2], ref[:, :2])
  np.testing.assert_allclose(
      sp.sppo_square(pair_lp, pair_ref, jnp.array([1.0, 0.0]), beta=0.1),
      losses.get("sppo_hard")(pair_lp, pair_ref, jnp.array([1.0, 0.0]), beta=0.1), rtol=1e-5)


def test_gpo_targets_and_loss():
  # S = [[0, 2, 1], [1, 0, 0], [3, 1, 0]]: P̂ = S − Sᵀ = [[0, 1, −2], [−1, 0, −1], [2, 1, 0]],
  # p = row sums / 3 = [−1/3, −2/3, 1]; RM scores [0.2, 0.9, −1]: chosen 1, rejected 2.
  s = jnp.array([[0.0, 2.0, 1.0], [1.0, 0.0, 0.0], [3.0, 1.0, 0.0]])
  rm = jnp.array([0.2, 0.9, -1.0])
  chosen, rejected, p = sp.gpo_targets(s, rm)
  np.testing.assert_allclose(p, [-1 / 3, -2 / 3, 1.0], rtol=1e-6)
  assert chosen.tolist() == [False, True, False] and rejected.tolist() == [False, False, True]
  lp, ref = jnp.array([-1.0, -2.0, -3.0]), jnp.array([-1.5, -1.0, -3.0])
  # ρ_w = −1, target (−2/3 − ½)/0.1 = −11.667; ρ_l = 0, target (1 − ½)/0.1 = 5.
  want = (-1 + 35 / 3) ** 2 + 5.0**2
  np.testing.assert_allclose(sp.gpo(lp, ref, rm, preference_scores=s, beta=0.1), want, rtol=1e-5)
  # All RM scores tied: no chosen/rejected pair, the list contributes nothing.
  assert float(sp.gpo(lp, ref, jnp.zeros(3), preference_scores=s)) == 0.0


def test_onpo_optimistic_target():
  rng = np.random.default_rng(20)
  lp, ref = -rng.uniform(1, 5, (B, K)), -rng.uniform(1, 5, (B, K))
  p, p_prev = rng.random((B, K)), rng.random((B, K))
  where = np.ones((B, K), bool)
  got = sp.onpo(*as_float32(lp, ref, p), prev_win_probs=jnp.asarray(p_prev, jnp.float32), beta=0.2)
  np.testing.assert_allclose(got, np_square(lp, ref, 2 * p - p_prev, where, 0.2), rtol=1e-5)
  # p_prev = p: plain SPPO square.
  same = sp.onpo(*as_float32(lp, ref, p), prev_win_probs=jnp.asarray(p, jnp.float32), beta=0.2)
  np.testing.assert_allclose(same, sp.sppo_square(*as_float32(lp, ref, p), beta=0.2), rtol=1e-5)


def test_hypo_value_and_gradient():
  rng = np.random.default_rng(21)
  lp, ref = -rng.uniform(1, 5, (B, 2)), -rng.uniform(1, 5, (B, 2))
  olp, oref = -rng.uniform(1, 5, (B, K)), -rng.uniform(1, 5, (B, K))
  beta, lam = 0.1, 0.5
  h = (lp[:, 0] - ref[:, 0]) - (lp[:, 1] - ref[:, 1])
  a = np_rloo(olp - oref, np.ones((B, K), bool))
  want = np.mean(np_softplus(-beta * h)) + lam * np.mean(np.mean(a * olp, -1))
  f = lambda x: sp.hypo(*as_float32(lp, ref), jnp.array([1.0, 0.0]), online_logps=x,
                        online_ref_logps=jnp.asarray(oref, jnp.float32), beta=beta,
                        kl_weight=lam)
  value, g = jax.value_and_grad(f)(jnp.asarray(olp, jnp.float32))
  np.testing.assert_allclose(value, want, rtol=1e-5)
  # Score-function gradient: λ·(1/k)·(ρ_i − mean_{j≠i} ρ_j)/B.
  np.testing.assert_allclose(g, lam * a / K / B, rtol=1e-4, atol=1e-7)


def test_registry_entries():
  names = losses.names(family="group")
  for name in ("sppo_square", "gpo", "onpo", "hypo"):
    assert name in names
  assert losses.get("sppo_square") is sp.sppo_square
