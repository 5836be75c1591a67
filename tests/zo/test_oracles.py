"""Tests of the ranking oracles (minimisation convention, top-k order out)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment import zo


def test_rank_oracle_by_hand():
  # values 3, 1, 2, 5: smallest is id 1 (1.0), then id 2 (2.0), then id 0 (3.0).
  np.testing.assert_array_equal(zo.rank_oracle(jnp.array([3.0, 1.0, 2.0, 5.0]), k=2), [1, 2])
  np.testing.assert_array_equal(zo.rank_oracle(jnp.array([3.0, 1.0, 2.0, 5.0]), k=4),
                                [1, 2, 0, 3])
  with pytest.raises(ValueError, match="k=5"):
    zo.rank_oracle(jnp.zeros(4), k=5)


def test_exact_oracle_on_pytree_candidates_under_jit():
  f = lambda c: jnp.sum(c["a"] ** 2) + c["b"]  # noqa: E731
  candidates = {"a": jnp.array([[1.0, 1.0], [0.0, 0.5], [2.0, 0.0]]), "b": jnp.array([0.0, 0.0,
                                                                                      -4.5])}
  # f = 2, 0.25, -0.5 -> order 2, 1, 0.
  oracle = zo.exact_oracle(f, k=3)
  np.testing.assert_array_equal(jax.jit(oracle)(candidates, jax.random.PRNGKey(0)), [2, 1, 0])


def test_plackett_luce_first_place_frequencies_match_softmax():
  values = jnp.array([0.0, 0.5, 1.0, 2.0])
  temperature = 0.7
  keys = jax.random.split(jax.random.PRNGKey(0), 4000)
  firsts = jax.vmap(lambda k: zo.plackett_luce_ranking(values, k, k=2,
                                                       temperature=temperature)[0])(keys)
  freq = np.bincount(np.asarray(firsts), minlength=4) / 4000
  expected = np.exp(-np.asarray(values) / temperature)
  np.testing.assert_allclose(freq, expected / expected.sum(), atol=0.03)
  # Second place: P(j second | i first) = p_j / (1 - p_i) (Plackett–Luce), checked for i = 0.
  seconds = jax.vmap(lambda k: zo.plackett_luce_ranking(values, k, k=2,
                                                        temperature=temperature))(keys)
  seconds = np.asarray(seconds)
  p = expected / expected.sum()
  given0 = seconds[seconds[:, 0] == 0, 1]
  np.testing.assert_allclose(np.bincount(given0, minlength=4)[1:] / len(given0),
                             p[1:] / (1 - p[0]), atol=0.04)
  cold = zo.plackett_luce_ranking(values, jax.random.PRNGKey(1), k=4, temperature=1e-4)
  np.testing.assert_array_equal(cold, [0, 1, 2, 3])


def test_flip_oracle_error_rate_and_noiseless_limit():
  values = jnp.array([0.4, -1.0, 3.0, 0.0, 2.0])
  exact = zo.rank_oracle(values, k=5)
  for key in jax.random.split(jax.random.PRNGKey(0), 5):
    np.testing.assert_array_equal(zo.flip_ranking(values, key, k=5, flip_prob=0.0), exact)
  comparison = zo.comparison_oracle(lambda c: c[0], flip_prob=0.2)
  candidates = jnp.array([[1.0], [0.0]])  # candidate 1 is better
  answers = jax.vmap(lambda k: comparison(candidates, k))(jax.random.split(jax.random.PRNGKey(2),
                                                                           4000))
  np.testing.assert_allclose(np.mean(np.asarray(answers)[:, 0] == 0), 0.2, atol=0.025)
  with pytest.raises(ValueError, match="m=2"):
    comparison(jnp.zeros((3, 1)), jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="flip_prob"):
    zo.flip_oracle(lambda c: c, k=1, flip_prob=0.7)


def test_returns_oracle_orders_by_descending_return_with_one_key_per_candidate():
  seen_keys = []

  def return_fn(theta, key):
    seen_keys.append(key)
    return theta[0] + 0.0 * jax.random.uniform(key)

  oracle = zo.returns_oracle(return_fn, k=2)
  ranking = oracle(jnp.array([[1.0], [5.0], [3.0]]), jax.random.PRNGKey(0))
  np.testing.assert_array_equal(ranking, [1, 2])  # returns 5 > 3 > 1
  values = zo.negated_returns(lambda th, key: th[0])(jnp.array([[1.0], [5.0]]),
                                                    jax.random.PRNGKey(0))
  np.testing.assert_array_equal(values, [-1.0, -5.0])


def test_host_oracle_from_jitted_code_and_bad_host_output():
  calls = []

  def host(candidates):
    calls.append(candidates.shape)
    return np.argsort(candidates[:, 0])[:2]

  oracle = zo.host_oracle(host, k=2)
  ranking = jax.jit(oracle)(jnp.array([[3.0], [1.0], [2.0]]), jax.random.PRNGKey(0))
  np.testing.assert_array_equal(ranking, [1, 2])
  assert calls == [(3, 1)]
  bad = zo.host_oracle(lambda c: np.array([0, 0]), k=2)
  with pytest.raises(Exception, match="distinct integer ids"):
    jax.block_until_ready(jax.jit(bad)(jnp.zeros((3, 1)), jax.random.PRNGKey(0)))
