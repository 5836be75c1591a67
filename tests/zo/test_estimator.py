"""Tests of the pair DAG, the closed-form coefficients and the rank estimator (ComPO:
tests/zo/test_compo.py)."""

import itertools

import chex
from hypothesis import given, settings, strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment import zo


def _pairs_numpy(ranking, m):
  """Independent reference: the pair DAG from the definition (Tang et al., ICLR 2024)."""
  ranking = list(ranking)
  pairs = [(ranking[r], ranking[s]) for r in range(len(ranking)) for s in range(r + 1,
                                                                                len(ranking))]
  pairs += [(i, j) for i in ranking for j in range(m) if j not in ranking]
  return pairs


def test_hand_worked_example_m4_k2_d2():
  # m = 4 candidates, k = 2, d = 2. The oracle returns ranking [2, 0]: candidate 2 is best,
  # candidate 0 second; 1 and 3 are only known to be worse than both.
  # Pair DAG S (better, worse): (2,0) inside the top-k; (2,1), (2,3), (0,1), (0,3) returned vs
  # unreturned. |S| = k(k-1)/2 + k(m-k) = 1 + 4 = 5.
  # Coefficients c_i = (#times worse) - (#times better):
  #   c_2 = 0 - 3 = -3 (= 2*0 - 4 + 1), c_0 = 1 - 2 = -1 (= 2*1 - 4 + 1), c_1 = c_3 = 2 - 0 = k.
  # With xi_0 = (1, 0), xi_1 = (0, 1), xi_2 = (1, 1), xi_3 = (2, -1):
  #   sum over S of (xi_worse - xi_better) = (0,-1) + (-1,0) + (1,-2) + (-1,1) + (1,-1) = (0, -3)
  #   = -1*(1,0) + 2*(0,1) - 3*(1,1) + 2*(2,-1) = (-1+0-3+4, 0+2-3-2) = (0, -3);  g = (0, -0.6).
  ranking = jnp.array([2, 0])
  xi = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]])
  np.testing.assert_array_equal(
      zo.pair_dag(ranking, 4, 2), [[2, 0], [2, 1], [2, 3], [0, 1], [0, 3]])
  assert zo.num_pairs(4, 2) == 5
  np.testing.assert_array_equal(zo.rank_coefficients(ranking, 4), [-1, 2, -3, 2])
  np.testing.assert_allclose(zo.rank_direction(xi, ranking), [0.0, -0.6], atol=1e-7)
  # Official demo weights m - 2r (returned) / -k (unreturned): 2 -> 4, 0 -> 2, others -2.
  np.testing.assert_array_equal(zo.rank_coefficients_official(ranking, 4), [2, -2, 4, -2])


@settings(max_examples=8, deadline=None)
@given(m=st.integers(2, 9), data=st.data())
def test_coefficients_sum_to_zero_and_count_pairs(m, data):
  k = data.draw(st.integers(1, m))
  perm = data.draw(st.permutations(list(range(m))))
  ranking = np.asarray(perm[:k])
  c = np.asarray(zo.rank_coefficients(jnp.asarray(ranking), m))
  assert c.sum() == 0
  pairs = _pairs_numpy(ranking, m)
  assert len(pairs) == zo.num_pairs(m, k) == k * (k - 1) // 2 + k * (m - k)
  expected = np.zeros(m)
  for better, worse in pairs:
    expected[worse] += 1
    expected[better] -= 1
  np.testing.assert_array_equal(c, expected)
  assert sorted(map(tuple, np.asarray(zo.pair_dag(jnp.asarray(ranking), m, k)).tolist())) == (
      sorted(pairs))
  # Official weights: -c plus 1 on every returned candidate; they sum to k.
  w = np.asarray(zo.rank_coefficients_official(jnp.asarray(ranking), m))
  np.testing.assert_array_equal(w, -expected + np.isin(np.arange(m), ranking))


@pytest.mark.parametrize("seed", range(3))
def test_closed_form_matches_pair_average_float64_reference_on_pytrees(seed):
  rng = np.random.default_rng(seed)
  m, k = 7, 3
  ranking = rng.permutation(m)[:k]
  xi = {"a": rng.normal(size=(m, 3, 2)), "b": rng.normal(size=(m, 4))}
  pairs = _pairs_numpy(ranking, m)
  expected = {name: np.mean([v[j] - v[i] for i, j in pairs], axis=0) for name, v in xi.items()}
  got = jax.jit(zo.rank_direction)(jax.tree_util.tree_map(jnp.float32, xi), jnp.asarray(ranking))
  for name in xi:
    np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6)


def test_k_m_minus_1_carries_the_same_information_as_k_m():
  ranking = jnp.array([3, 1, 4, 0, 2])
  np.testing.assert_array_equal(zo.rank_coefficients(ranking[:4], 5),
                                zo.rank_coefficients(ranking, 5))
  # Positions: 3 -> 0, 1 -> 1, 4 -> 2, 0 -> 3, 2 -> 4; c = 2r - 5 + 1 = 2r - 4 and the last
  # returned candidate of k = 4 is unreturned with c = k = 4 = 2*4 - 4.
  np.testing.assert_array_equal(zo.rank_coefficients(ranking, 5), [2, -2, 4, -4, 0])


def test_estimator_invariant_to_monotone_transforms():
  x = jnp.linspace(-1.0, 1.0, 12)
  f = lambda v: jnp.sum((v - 0.3) ** 2) + jnp.sum(v[:3])  # noqa: E731
  transforms = [lambda y: jnp.exp(y / 3.0), lambda y: y**3 + 5 * y, lambda y: -1.0 / (1.0 + y)]
  for key in jax.random.split(jax.random.PRNGKey(0), 5):
    g, info = zo.rank_grad_estimate(x, key, zo.exact_oracle(f, k=4), m=8)
    for h in transforms:
      g_h, info_h = zo.rank_grad_estimate(x, key, zo.exact_oracle(lambda v, h=h: h(f(v)), k=4),
                                          m=8)
      np.testing.assert_array_equal(info["ranking"], info_h["ranking"])
      np.testing.assert_array_equal(g, g_h)


def _mean_cosine(m, k, *, d=10, draws=2000):
  a = jnp.arange(1.0, d + 1.0)
  f = lambda v: a @ v  # noqa: E731  (linear: the true gradient is a everywhere)
  oracle = zo.exact_oracle(f, k=k)

  def cos(key):
    g, _ = zo.rank_grad_estimate(jnp.zeros(d), key, oracle, m=m, mu=0.1)
    return g @ a / (jnp.linalg.norm(g) * jnp.linalg.norm(a))

  # Common random numbers: the same keys (hence the same perturbations) for every (m, k).
  return float(jnp.mean(jax.jit(jax.vmap(cos))(jax.random.split(jax.random.PRNGKey(0), draws))))


def test_monte_carlo_cosine_positive_and_growing_with_m_and_k():
  by_m = [_mean_cosine(m, 1) for m in (2, 5, 10)]
  by_k = [by_m[-1]] + [_mean_cosine(10, k) for k in (3, 9)]  # k = 1, 3, 9 at m = 10
  assert by_m[0] > 0.1
  assert all(b > a + 0.02 for a, b in zip(by_m, by_m[1:])), by_m
  assert all(b > a + 0.02 for a, b in zip(by_k, by_k[1:])), by_k


def test_perturbations_sphere_and_center():
  params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(4)}
  xi = zo.sample_perturbations(jax.random.PRNGKey(1), params, 5, perturbation="sphere")
  chex.assert_shape([xi["w"], xi["b"]], [(5, 3, 2), (5, 4)])
  norms = jnp.sqrt(jnp.sum(xi["w"] ** 2, axis=(1, 2)) + jnp.sum(xi["b"] ** 2, axis=1))
  np.testing.assert_allclose(norms, 1.0, rtol=1e-6)

  seen = []

  def spy(candidates, key):
    seen.append(candidates)
    return jnp.array([0, 1])

  zo.rank_grad_estimate(jnp.ones(3), jax.random.PRNGKey(2), spy, m=4, include_center=True)
  np.testing.assert_array_equal(seen[0][0], jnp.ones(3))  # x itself is query 0
  assert not np.allclose(seen[0][1], jnp.ones(3))


def test_estimator_under_jit_and_vmap_matches_eager():
  f = lambda v: jnp.sum(v**2)  # noqa: E731
  est = lambda x, key: zo.rank_grad_estimate(x, key, zo.exact_oracle(f, k=2), m=5)[0]  # noqa
  xs = jax.random.normal(jax.random.PRNGKey(0), (3, 4))
  keys = jax.random.split(jax.random.PRNGKey(1), 3)
  batched = jax.jit(jax.vmap(est))(xs, keys)
  for i in range(3):
    np.testing.assert_allclose(batched[i], est(xs[i], keys[i]), rtol=1e-6, atol=1e-7)


def test_bad_rankings_and_sizes_are_reported():
  with pytest.raises(ValueError, match="distinct ids"):
    zo.pair_dag(jnp.array([1, 1]), 4)
  with pytest.raises(ValueError, match="distinct ids"):
    zo.rank_coefficients(jnp.array([0, 5]), 4)
  with pytest.raises(ValueError, match="k=3"):
    zo.pair_dag(jnp.array([0, 1]), 4, 3)
  with pytest.raises(ValueError, match="out of range"):
    zo.rank_coefficients(jnp.arange(5), 4)
  with pytest.raises(ValueError, match="m must be"):
    zo.rank_grad_estimate(jnp.zeros(2), jax.random.PRNGKey(0), None, m=1)
  with pytest.raises(ValueError, match="perturbation"):
    zo.sample_perturbations(jax.random.PRNGKey(0), jnp.zeros(2), 3, perturbation="cube")


def test_pair_dag_pairs_agree_with_the_true_order():
  values = np.array([0.3, -1.0, 2.0, 0.1, 5.0, -0.4])
  for k in range(1, 7):
    ranking = zo.rank_oracle(jnp.asarray(values), k=k)
    for better, worse in np.asarray(zo.pair_dag(ranking, 6)):
      assert values[better] < values[worse]
    assert len(set(itertools.chain(map(tuple, np.asarray(zo.pair_dag(ranking, 6)))))) == (
        zo.num_pairs(6, k))
