"""Tests of the advantages and KL estimators: hand-worked values, float64 numpy references on
seeded random inputs, zero-sum and masking properties, `jit` and `vmap`.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment.losses import advantages as adv
from tests.references import GROUP_SHAPE, group_inputs, np_grpo_advantages, np_rloo

B, K, T = GROUP_SHAPE


def test_grpo_advantages_hand_worked():
  # Group [1, 2, 3, 6]: μ = 3, deviations [−2, −1, 0, 3], Bessel var = (4 + 1 + 0 + 9)/3 = 14/3.
  a = adv.grpo_advantages(jnp.array([1.0, 2.0, 3.0, 6.0]), epsilon=0.0)
  np.testing.assert_allclose(a, np.array([-2, -1, 0, 3]) / math.sqrt(14 / 3), rtol=1e-6)
  # NaN abstains: group [1, NaN, 3] → μ = 2, std = √2, A = [−1/√2, 0, 1/√2].
  a = adv.grpo_advantages(jnp.array([1.0, jnp.nan, 3.0]), epsilon=0.0)
  np.testing.assert_allclose(a, [-1 / math.sqrt(2), 0.0, 1 / math.sqrt(2)], rtol=1e-6)
  # "none": A = r − μ = [−2, −1, 0, 3].
  np.testing.assert_allclose(
      adv.grpo_advantages(jnp.array([1.0, 2.0, 3.0, 6.0]), scale_rewards="none"), [-2, -1, 0, 3])


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_advantages_numpy_reference_and_zero_sum(scale):
  _, _, _, _, where, r = group_inputs(1)
  r = r.copy()
  r[2, 1] = np.nan
  got = adv.grpo_advantages(jnp.asarray(r, jnp.float32), where=where, scale_rewards=scale)
  np.testing.assert_allclose(got, np_grpo_advantages(r, where, scale), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.sum(got, axis=-1), 0.0, atol=1e-5)  # per group


def test_grpo_advantages_rejects_single_completion_and_bad_mode():
  with pytest.raises(ValueError, match="K >= 2"):
    adv.grpo_advantages(jnp.ones((3, 1)))
  with pytest.raises(ValueError, match="scale_rewards"):
    adv.grpo_advantages(jnp.ones((3, 2)), scale_rewards="global")


def test_rloo_advantages_hand_worked_reference_zero_sum():
  # [3, 1, 2]: 3 − (1+2)/2 = 1.5, 1 − 2.5 = −1.5, 2 − 2 = 0.
  np.testing.assert_allclose(adv.rloo_advantages(jnp.array([3.0, 1.0, 2.0])), [1.5, -1.5, 0.0])
  _, _, _, _, where, r = group_inputs(2)
  got = adv.rloo_advantages(jnp.asarray(r, jnp.float32), where=where)
  np.testing.assert_allclose(got, np_rloo(r, where), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.sum(got, axis=-1), 0.0, atol=1e-5)
  assert float(got[1, 3]) == 0.0  # padded slot


def test_multi_reward_advantages():
  rng = np.random.default_rng(3)
  r = rng.normal(size=(B, K, 2)) * np.array([1.0, 100.0])
  r[0, 1, 0] = np.nan
  r[2, 2, :] = np.nan  # every function abstains
  w = np.array([1.0, 0.5])
  where = np.ones((B, K), bool)
  # sum_then_normalize: nansum of weighted rewards, all-NaN rows → NaN, then group z-score.
  s = np.nansum(r * w, axis=-1)
  s[2, 2] = np.nan
  got = adv.multi_reward_advantages(jnp.asarray(r, jnp.float32), reward_weights=jnp.asarray(w))
  np.testing.assert_allclose(got, np_grpo_advantages(s, where), rtol=1e-4, atol=1e-5)
  # normalize_then_sum: per-function group z-scores, weighted sum, batch z-score (Bessel).
  z = sum(w[f] * np_grpo_advantages(r[..., f], where) for f in range(2))
  ok = ~np.all(np.isnan(r), axis=-1)
  want = np.where(ok, (z - z[ok].mean()) / (z[ok].std(ddof=1) + 1e-4), 0.0)
  got = adv.multi_reward_advantages(jnp.asarray(r, jnp.float32), reward_weights=jnp.asarray(w),
                                    aggregation="normalize_then_sum")
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_zero_std_fraction():
  # Groups [1, 1], [0, 2], [5, 5 (padded)]: the last has one valid reward and is not counted.
  r = jnp.array([[1.0, 1.0], [0.0, 2.0], [5.0, 5.0]])
  where = jnp.array([[True, True], [True, True], [True, False]])
  assert float(adv.zero_std_fraction(r, where=where)) == 0.5


def test_kl_estimators_hand_worked_and_k3_nonnegative():
  # lp = −1, lr = −2: Δ = −1; k1 = 1, k2 = 0.5, k3 = e^{−1} + 1 − 1 = 0.36788.
  lp, lr = jnp.array(-1.0), jnp.array(-2.0)
  assert float(adv.kl_estimate(lp, lr, estimator="k1")) == 1.0
  assert float(adv.kl_estimate(lp, lr, estimator="k2")) == 0.5
  np.testing.assert_allclose(adv.kl_estimate(lp, lr), math.exp(-1.0), rtol=1e-6)
  # low_var_kl clamps k3 at 10: Δ = 5 gives e^5 − 6 = 142.4 → 10.
  assert float(adv.kl_estimate(jnp.array(-6.0), jnp.array(-1.0), estimator="low_var_kl")) == 10.0
  x = jnp.asarray(np.random.default_rng(0).normal(0, 5, (1000,)), jnp.float32)
  assert np.all(np.asarray(adv.kl_estimate(x, jnp.zeros_like(x))) >= 0.0)


def test_helpers_under_jit_and_vmap():
  _, _, _, _, where, r = group_inputs(23)
  r_ = jnp.asarray(r, jnp.float32)
  for fn in (adv.grpo_advantages, adv.rloo_advantages):
    eager = fn(r_, where=where)
    np.testing.assert_allclose(jax.jit(lambda x, w: fn(x, where=w))(r_, where), eager, rtol=1e-6)
    # Group statistics only: mapping over the groups one at a time gives the same advantages.
    per_group = jax.vmap(lambda x, w: fn(x[None], where=w[None])[0])(r_, jnp.asarray(where))
    np.testing.assert_allclose(per_group, eager, rtol=1e-6)
