"""Tests of the LSC transform, r_ref estimators and reward combination (rewards/transforms.py)."""

import doctest
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alignment.rewards import transforms

_floats = st.floats(-30.0, 30.0, allow_nan=False, width=32)


def np_log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


def test_doctests():
  result = doctest.testmod(transforms, optionflags=doctest.ELLIPSIS, extraglobs={"jnp": jnp})
  assert result.attempted >= 5 and result.failed == 0


def test_lsc_hand_values_and_reference():
  # logσ(0) = −log 2 = −0.6931472; logσ(2) = −log(1 + e^{−2}) = −0.1269280
  np.testing.assert_allclose(transforms.lsc(jnp.array([1.0, 3.0]), 1.0),
                             [-0.6931472, -0.1269280], rtol=1e-6)
  rng = np.random.default_rng(0)
  r, ref = rng.normal(size=(4, 5)) * 5, rng.normal(size=(4, 1))
  np.testing.assert_allclose(transforms.lsc(r, ref), np_log_sigmoid(r - ref), rtol=1e-5, atol=1e-6)


@settings(max_examples=50, deadline=None)
@given(_floats, _floats, _floats)
def test_lsc_is_monotone_concave_and_bounded_above_by_zero(a, b, ref):
  lo, hi = min(a, b), max(a, b)
  u_lo, u_hi = transforms.lsc(lo, ref), transforms.lsc(hi, ref)
  assert u_hi <= 0.0 and u_lo <= 0.0
  assert u_hi >= u_lo
  mid = transforms.lsc((lo + hi) / 2, ref)
  assert mid >= (u_lo + u_hi) / 2 - 1e-5  # concave


def test_lsc_gradient_is_sigmoid_of_shortfall():
  r, ref = jnp.array([-3.0, 0.0, 4.0]), jnp.array(1.0)
  grad = jax.grad(lambda x: jnp.sum(transforms.lsc(x, ref)))(r)
  np.testing.assert_allclose(grad, 1.0 / (1.0 + np.exp(np.array([-3.0, 0.0, 4.0]) - 1.0)),
                             rtol=1e-6)


@pytest.mark.parametrize("q", [0.0, 0.3, 0.85, 1.0])
def test_quantile_matches_numpy_with_masks(q):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(6, 9))
  where = rng.random((6, 9)) > 0.3
  where[0] = True
  where[1, :] = False
  where[1, 4] = True  # a single sample
  got = transforms.r_ref_quantile(np.where(where, x, np.nan), q=q, where=where)
  want = [np.quantile(row[m], q) for row, m in zip(x, where)]
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_quantile_hand_value_and_empty_row():
  # sorted [0, 1, 2, 3, 4], h = 4·0.85 = 3.4 → 3 + 0.4·(4 − 3) = 3.4
  np.testing.assert_allclose(transforms.r_ref_quantile(jnp.array([3.0, 1.0, 2.0, 0.0, 4.0])), 3.4,
                             rtol=1e-6)
  out, grad = jax.value_and_grad(
      lambda x: transforms.r_ref_quantile(x, where=jnp.zeros(3, bool)))(jnp.ones(3))
  assert out == 0.0 and np.all(np.isfinite(grad))


def test_normal_matches_reference():
  # [1, 3]: mean 2, std (n − 1) = √2; Φ⁻¹(0.85) = 1.0364334: 2 + 1.0364334·(1.4142136 + 1e−5)
  np.testing.assert_allclose(transforms.r_ref_normal(jnp.array([1.0, 3.0])), 3.465744, rtol=1e-5)
  rng = np.random.default_rng(2)
  x = rng.normal(size=(5, 8)) * 3 + 1
  where = rng.random((5, 8)) > 0.3
  where[0] = False
  where[0, 2] = True  # one sample: std 0 → mean + z·1e−5
  z = statistics.NormalDist().inv_cdf(0.7)
  want = []
  for row, m in zip(x, where):
    v = row[m]
    std = v.std(ddof=1) if len(v) > 1 else 0.0
    want.append(v.mean() + z * (std + 1e-5))
  np.testing.assert_allclose(transforms.r_ref_normal(x, q=0.7, where=where), want, rtol=1e-5)
  grad = jax.grad(lambda s: transforms.r_ref_normal(s))(jnp.ones(4))  # zero variance
  assert np.all(np.isfinite(grad))


def test_combine_hand_values_and_reference():
  r, ref = jnp.array([0.0, 2.0]), jnp.array([0.0, 0.0])
  # logσ(0) + logσ(2) = −0.6931472 − 0.1269280 = −0.8200752; raw sum 0 + 2 = 2
  np.testing.assert_allclose(transforms.combine_rewards(r, ref), -0.8200752, rtol=1e-6)
  np.testing.assert_allclose(transforms.combine_rewards(r, mode="raw_sum"), 2.0)
  rng = np.random.default_rng(3)
  r, ref, w = rng.normal(size=(4, 3, 2)), rng.normal(size=(4, 1, 2)), np.array([0.3, 1.7])
  np.testing.assert_allclose(transforms.combine_rewards(r, ref, weights=w),
                             np.sum(w * np_log_sigmoid(r - ref), -1), rtol=1e-5)
  np.testing.assert_allclose(transforms.combine_rewards(r, mode="raw_sum", weights=w),
                             np.sum(w * r, -1), rtol=1e-5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-6.0, 6.0, allow_nan=False, width=32), min_size=2, max_size=4),
       st.floats(0.0625, 3.0, allow_nan=False, width=32), st.data())
def test_lsc_sum_penalises_a_shortfall_more_than_the_raw_sum(advantages, delta, data):
  """The paper's claim: moving reward δ from a weaker property to a stronger one leaves the raw
  sum unchanged but lowers the LSC sum, i.e. a shortfall in any one reward costs more."""
  a = np.asarray(advantages, np.float64)  # r_i − r_ref,i
  i = data.draw(st.integers(0, len(a) - 1))
  j = data.draw(st.integers(0, len(a) - 1).filter(lambda k: k != i))
  if a[i] > a[j]:
    i, j = j, i  # i is the weaker (or equal) property
  moved = a.copy()
  moved[i] -= delta
  moved[j] += delta
  ref = np.zeros_like(a)
  raw = [transforms.combine_rewards(x, mode="raw_sum") for x in (a, moved)]
  lsc = [transforms.combine_rewards(x, ref) for x in (a, moved)]
  np.testing.assert_allclose(raw[0], raw[1], atol=1e-5)
  assert float(lsc[1]) < float(lsc[0]) + 1e-6
  # Strictly, as computed in float64: logσ is strictly concave.
  assert np_log_sigmoid(moved).sum() < np_log_sigmoid(a).sum()


def test_combine_under_jit_and_vmap():
  r, ref = jnp.array([[0.0, 2.0], [1.0, -1.0]]), jnp.zeros((2, 2))
  jitted = jax.jit(transforms.combine_rewards)(r, ref)
  np.testing.assert_allclose(jax.vmap(transforms.combine_rewards)(r, ref), jitted, rtol=1e-6)


def test_bad_input_errors():
  with pytest.raises(ValueError, match="unknown mode"):
    transforms.combine_rewards(jnp.zeros(2), jnp.zeros(2), mode="max")
  with pytest.raises(ValueError, match="needs reference_rewards"):
    transforms.combine_rewards(jnp.zeros(2))
  with pytest.raises(ValueError, match="r_ref_quantile: q"):
    transforms.r_ref_quantile(jnp.zeros(3), q=1.5)
  with pytest.raises(ValueError, match="r_ref_normal: q"):
    transforms.r_ref_normal(jnp.zeros(3), q=1.0)
  with pytest.raises(ValueError, match="lsc: reference_rewards"):
    transforms.lsc(jnp.zeros((2, 3)), jnp.zeros(2))
