"""Tests of the Bradley–Terry reward-model losses (alignment/rewards/bt.py)."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment.rewards import bt


def _np_softplus(x):
  return np.logaddexp(0.0, x)


def np_bt_pairwise(rewards, labels, where, weights, margin, temperature):
  """Float64 loops: mean over valid pairs of w_i·softplus(−(r_i − r_j − m)/τ)."""
  total, count = 0.0, 0
  for idx in np.ndindex(rewards.shape[:-1]):
    r, y, m, w = rewards[idx], labels[idx], where[idx], weights[idx]
    for i in range(len(r)):
      for j in range(len(r)):
        if m[i] and m[j] and y[i] > y[j]:
          total += w[i] * _np_softplus(-(r[i] - r[j] - margin[idx]) / temperature)
          count += 1
  return total / max(count, 1)


def np_more_ranking_loss(rewards, psi):
  """MORE's ranking_loss, literally: ordered pairs with different labels, label −1 is padding."""
  values = []
  for idx in np.ndindex(rewards.shape[:-1]):
    r, y = rewards[idx], psi[idx]
    for i in range(len(r)):
      for j in range(len(r)):
        if i != j and y[i] != -1 and y[j] != -1 and y[i] != y[j]:
          values.append(_np_softplus(-(r[j] - r[i]) * np.sign(y[j] - y[i])))
  return np.mean(values) if values else 0.0


def test_doctests():
  result = doctest.testmod(bt, optionflags=doctest.ELLIPSIS, extraglobs={"jnp": jnp})
  assert result.attempted >= 3 and result.failed == 0


def test_hand_values():
  # softplus(−1) = log(1 + e^{−1}) = 0.3132617
  np.testing.assert_allclose(bt.bt_pairwise(jnp.array([1.0, 0.0])), 0.3132617, rtol=1e-6)
  # m = 0.5, τ = 0.1: softplus(−(1 − 0.5)/0.1) = softplus(−5) = log(1 + e^{−5}) = 0.0067153
  np.testing.assert_allclose(
      bt.bt_pairwise(jnp.array([1.0, 0.0]), margin=0.5, temperature=0.1), 0.0067153, rtol=1e-4)
  # Swapped labels [0, 1]: slot 1 is the chosen one: softplus(−(0 − 1)) = softplus(1) = 1.3132617
  np.testing.assert_allclose(
      bt.bt_pairwise(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])), 1.3132617, rtol=1e-6)
  # Three items, labels [2, 1, 0], rewards 0: three pairs each log 2.
  np.testing.assert_allclose(bt.bt_pairwise(jnp.zeros(3), jnp.array([2.0, 1.0, 0.0]),
                                            reduce_fn=jnp.sum), 3 * np.log(2.0), rtol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_pairwise_matches_numpy_reference(seed):
  rng = np.random.default_rng(seed)
  shape = (3, 5)
  rewards = rng.normal(size=shape) * 2
  labels = rng.integers(0, 3, size=shape).astype(float)
  where = rng.random(shape) > 0.2
  weights = rng.random(shape) + 0.5
  margin = rng.random(shape[:-1])
  temperature = 0.3
  got = bt.bt_pairwise(rewards, labels, margin=margin, temperature=temperature, where=where,
                       weights=weights)
  want = np_bt_pairwise(rewards, labels, where, weights, margin, temperature)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  unreduced = bt.bt_pairwise(rewards, labels, margin=margin, temperature=temperature, where=where,
                             weights=weights, reduce_fn=None)
  assert unreduced.shape == shape + (shape[-1],)
  np.testing.assert_allclose(
      jnp.sum(unreduced),
      bt.bt_pairwise(rewards, labels, margin=margin, temperature=temperature, where=where,
                     weights=weights, reduce_fn=jnp.sum), rtol=1e-5)


def test_scalar_margin_and_temperature_defaults():
  rng = np.random.default_rng(7)
  rewards, labels = rng.normal(size=(4, 3)), rng.integers(0, 3, size=(4, 3)).astype(float)
  ones = np.ones((4, 3), bool)
  want = np_bt_pairwise(rewards, labels, ones, np.ones((4, 3)), np.full(4, 0.2), 1.0)
  np.testing.assert_allclose(bt.bt_pairwise(rewards, labels, margin=0.2), want, rtol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_all_pairs_matches_more_ranking_loss(seed):
  rng = np.random.default_rng(seed)
  rewards = rng.normal(size=(4, 6))
  psi = rng.integers(-1, 4, size=(4, 6)).astype(float)  # −1 marks padding
  np.testing.assert_allclose(bt.bt_all_pairs(rewards, psi), np_more_ranking_loss(rewards, psi),
                             rtol=1e-5)


def test_listwise_is_pairwise_for_k2_and_plackett_luce_for_k3():
  rng = np.random.default_rng(1)
  r = rng.normal(size=(5, 2))
  np.testing.assert_allclose(bt.bt_listwise(r, jnp.array([1.0, 0.0])), bt.bt_pairwise(r),
                             rtol=1e-6)
  # K = 3, order 0 ≻ 1 ≻ 2: −log(e^{r0}/Σ_{0,1,2} e^r) − log(e^{r1}/(e^{r1} + e^{r2})).
  r3 = np.array([0.3, -1.2, 2.0])
  want = (np.logaddexp.reduce(r3) - r3[0]) + (np.logaddexp(r3[1], r3[2]) - r3[1])
  np.testing.assert_allclose(bt.bt_listwise(r3, jnp.array([2.0, 1.0, 0.0])), want, rtol=1e-6)


def test_gradients_jit_vmap():
  r = jnp.array([[0.5, -0.5], [2.0, 1.0]])
  grad = jax.grad(lambda x: bt.bt_pairwise(x, temperature=0.5))(r)
  # d/dr_w softplus(−(r_w − r_l)/τ) = −σ(−(r_w − r_l)/τ)/τ, halved by the mean over 2 pairs.
  d = np.array([1.0, 1.0])
  want_w = -1.0 / (1.0 + np.exp(d / 0.5)) / 0.5 / 2
  np.testing.assert_allclose(grad[:, 0], want_w, rtol=1e-5)
  np.testing.assert_allclose(grad[:, 1], -want_w, rtol=1e-5)
  jitted = jax.jit(lambda x, t: bt.bt_pairwise(x, temperature=t))(r, 0.5)
  np.testing.assert_allclose(jitted, bt.bt_pairwise(r, temperature=0.5), rtol=1e-6)
  per_row = jax.vmap(bt.bt_pairwise)(r)
  np.testing.assert_allclose(jnp.mean(per_row), bt.bt_pairwise(r), rtol=1e-6)


def test_everything_masked_is_zero_with_finite_gradients():
  r = jnp.array([[jnp.nan, jnp.inf]])
  where = jnp.zeros((1, 2), bool)
  for fn in (lambda x: bt.bt_pairwise(x, where=where),
             lambda x: bt.bt_listwise(x, jnp.array([1.0, 0.0]), where=where),
             lambda x: bt.bt_all_pairs(x, jnp.array([[-1.0, -1.0]]))):
    value, grad = jax.value_and_grad(fn)(r)
    assert value == 0.0
    assert np.all(np.isfinite(grad))


def test_bad_input_errors():
  with pytest.raises(ValueError, match="bt_pairwise: labels=None"):
    bt.bt_pairwise(jnp.zeros(3))
  with pytest.raises(ValueError, match="temperature"):
    bt.bt_pairwise(jnp.zeros(2), temperature=0.0)
  with pytest.raises(ValueError, match="margin"):
    bt.bt_pairwise(jnp.zeros((4, 2)), margin=jnp.zeros(3))
  with pytest.raises(ValueError, match="bt_all_pairs: labels"):
    bt.bt_all_pairs(jnp.zeros((2, 3)), jnp.zeros((2, 4)))
