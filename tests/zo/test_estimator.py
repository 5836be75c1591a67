"""Tests of the pair DAG, the closed-form coefficients, the rank estimator and ComPO."""

import itertools

import chex
from hypothesis import given, settings, strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment import zo
from alignment.zo import compo


def _pairs_numpy(ranking, m):
  """Independent reference: the pair DAG from the definition (§7.1)."""
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


# ------------------------------------------------------------------------------------------
# ComPO (§7.6)


def test_noisy_pair_mask_and_votes_by_hand():
  chosen = jnp.array([-10.0, -5.0, -3.0, -7.0])
  rejected = jnp.array([-11.0, -9.0, -2.0, -7.0])
  # margins 1, 4, -1, 0 -> only the first is noisy with threshold 3 (0 < margin < 3).
  np.testing.assert_array_equal(compo.noisy_pair_mask(chosen, rejected, noise_threshold=3.0),
                                [True, False, False, False])
  where = jnp.array([True, True, False, False])
  base = (chosen, rejected)
  # Pair 0: chosen up (-9.9 > -10), rejected down (-11.2 < -11): strict and relaxed win.
  strict, relaxed = compo.comparison_votes(
      base, (chosen.at[0].set(-9.9), rejected.at[0].set(-11.2)), where)
  assert bool(strict) and bool(relaxed)
  # Pair 0: chosen up by 0.1, rejected up by 0.05: margin up -> relaxed only.
  strict, relaxed = compo.comparison_votes(
      base, (chosen.at[0].set(-9.9), rejected.at[0].set(-10.95)), where)
  assert not bool(strict) and bool(relaxed)
  # The same win on a masked pair (2) counts for nothing.
  strict, relaxed = compo.comparison_votes(
      base, (chosen.at[2].set(-2.9), rejected.at[2].set(-2.5)), where)
  assert not bool(strict) and not bool(relaxed)


def _toy_output_layer(seed=0, vocab=6, dim=4, pairs=3):
  """logp(token | h) = log_softmax(h W^T)[token] for one-token completions."""
  rng = np.random.default_rng(seed)
  hidden = jnp.asarray(rng.normal(size=(pairs, dim)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(vocab, dim)) * 0.1, jnp.float32)
  chosen_tok, rejected_tok = jnp.array([0, 1, 2]), jnp.array([3, 4, 5])

  def logp_fn(params):
    logp = jax.nn.log_softmax(hidden @ params["W"].T, axis=-1)
    rows = jnp.arange(pairs)
    return logp[rows, chosen_tok], logp[rows, rejected_tok]

  return {"W": w}, logp_fn


def test_compo_direction_points_against_the_margin_gradient_and_step_is_accepted():
  params, logp_fn = _toy_output_layer()
  where = jnp.ones(3, bool)
  margin = lambda p: jnp.sum(jnp.subtract(*logp_fn(p)))  # noqa: E731
  new, info = compo.compo_step(params, jax.random.PRNGKey(0), logp_fn, where=where,
                               num_perturbations=256, mu=1e-3, sparsity_threshold=0.0,
                               negone_num_threshold=10, chunk_size=64)
  assert int(info["num_strict"]) >= 10 and not bool(info["relaxed"])
  step = float(info["step_size"])
  assert step > 0
  g = (params["W"] - new["W"]) / step  # W' = W - s * g_hat, |g_hat| = 1
  np.testing.assert_allclose(jnp.linalg.norm(g), 1.0, rtol=1e-4)
  grad = jax.grad(margin)(params)["W"]
  cosine = jnp.sum(g * grad) / jnp.linalg.norm(grad)
  assert float(cosine) < -0.2  # -g_hat is an ascent direction of the margin
  strict, _ = compo.comparison_votes(logp_fn(params), logp_fn(new), where)
  assert bool(strict)  # the accepted step passes the test it was selected by


def test_compo_official_keeps_weights_without_enough_votes():
  params, logp_fn = _toy_output_layer()
  new, info = compo.compo_step_official(params, jax.random.PRNGKey(0), logp_fn,
                                        where=jnp.ones(3, bool), num_perturbations=64,
                                        negone_num_threshold=65, chunk_size=16)
  assert not bool(info["applied"])
  np.testing.assert_array_equal(new["W"], params["W"])
  new, info = compo.compo_step_official(params, jax.random.PRNGKey(0), logp_fn,
                                        where=jnp.ones(3, bool), num_perturbations=64,
                                        negone_num_threshold=1, sparsity_threshold=0.0,
                                        mu=1e-3, learning_rate=0.5, chunk_size=16)
  # Applied: W moves by eta * (n_neg / M) along -g_hat (|g_hat| = 1).
  if bool(info["applied"]):
    step = float(jnp.linalg.norm(new["W"] - params["W"]))
    np.testing.assert_allclose(step, 0.5 * int(info["num_strict"]) / 64, rtol=1e-4)
  with pytest.raises(ValueError, match="multiple of"):
    compo.compo_direction(params, jax.random.PRNGKey(0), logp_fn, where=jnp.ones(3, bool),
                          num_perturbations=10, chunk_size=4)


def test_pair_dag_pairs_agree_with_the_true_order():
  values = np.array([0.3, -1.0, 2.0, 0.1, 5.0, -0.4])
  for k in range(1, 7):
    ranking = zo.rank_oracle(jnp.asarray(values), k=k)
    for better, worse in np.asarray(zo.pair_dag(ranking, 6)):
      assert values[better] < values[worse]
    assert len(set(itertools.chain(map(tuple, np.asarray(zo.pair_dag(ranking, 6)))))) == (
        zo.num_pairs(6, k))
