"""Tests of the human-in-the-loop ranking line search (canonical and official weights)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment import zo


def _f(x):
  return jnp.sum((x - jnp.arange(x.shape[0], dtype=jnp.float32)) ** 2)


def _numpy_pair_weights(ranking, m):
  """Descent weights from the definition: (#times better) - (#times worse) over the DAG."""
  w = np.zeros(m)
  ranking = list(ranking)
  for r, i in enumerate(ranking):
    for j in ranking[r + 1:] + [j for j in range(m) if j not in ranking]:
      w[i] += 1
      w[j] -= 1
  return w


@pytest.mark.parametrize("official", [False, True])
def test_grad_est_round_matches_float64_reference(official):
  m, k, mu, d = 6, 3, 0.2, 4
  make = zo.rank_line_search_official if official else zo.rank_line_search
  ls = make(m=m, mu=mu, step_size=1.0)
  x = jnp.array([0.5, -1.0, 2.0, 0.0])
  state = ls.init(x, jax.random.PRNGKey(3))
  candidates = np.asarray(ls.propose(state), np.float64)  # shown (shuffled) order
  ranking = np.argsort([np.sum((c - np.arange(d)) ** 2) for c in candidates])[:k]
  new = ls.update(state, jnp.asarray(ranking))
  # u = sum_i w_i (mu xi_i) / |S| over the shown candidates (the order is irrelevant here).
  w = _numpy_pair_weights(ranking, m)
  if official:
    w = w + np.isin(np.arange(m), ranking)  # m - 2r on returned, -k on the others
  deltas = candidates - np.asarray(x, np.float64)  # = mu * xi_i
  u = (w[:, None] * deltas).sum(0) / (k * (k - 1) / 2 + k * (m - k))
  np.testing.assert_allclose(new.search_dir, u, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(new.prev_best, candidates[ranking[0]], rtol=1e-6)
  assert int(new.mode) == 1 and int(new.n_accum) == 1
  np.testing.assert_array_equal(new.x, x)


def test_official_minus_canonical_is_the_offset_on_returned_candidates():
  m, mu = 5, 0.1
  key = jax.random.PRNGKey(0)
  x = jnp.zeros(3)
  canon, off = zo.rank_line_search(m=m, mu=mu, step_size=1.0), zo.rank_line_search_official(
      m=m, mu=mu, step_size=1.0)
  s_c, s_o = canon.init(x, key), off.init(x, key)
  ranking = jnp.array([4, 1])
  cands = np.asarray(canon.propose(s_c))
  d_c = canon.update(s_c, ranking).search_dir
  d_o = off.update(s_o, ranking).search_dir
  # official = canonical + (mu/|S|) * sum of returned xi,  |S| = 1 + 2*3 = 7.
  np.testing.assert_allclose(d_o - d_c, (cands[4] + cands[1]) / 7, rtol=1e-5, atol=1e-7)


def test_rounds_never_increase_f_and_reach_the_minimum_region():
  ls = zo.rank_line_search(m=6, mu=0.1, step_size=2.0)
  state = ls.init(jnp.zeros(4), jax.random.PRNGKey(1))
  oracle = zo.exact_oracle(_f, k=3)
  values = [float(_f(state.x))]
  modes = []
  for _ in range(40):
    state, info = ls.round(state, oracle)
    values.append(float(_f(state.x)))
    modes.append(info["mode"])
  assert all(b <= a + 1e-6 for a, b in zip(values, values[1:]))
  assert modes[:4] == ["grad_est", "line_search", "grad_est", "line_search"]
  assert values[-1] < 0.05 * values[0]  # from f = 0+1+4+9 = 14


def test_line_search_candidates_contain_x_and_prev_best_in_random_order_and_pick_oracle():
  m = 5
  ls = zo.rank_line_search(m=m, mu=0.1, step_size=1.0)
  state = ls.init(jnp.array([1.0, 1.0]), jax.random.PRNGKey(2))
  state, _ = ls.round(state, zo.exact_oracle(_f, k=2))
  positions = set()
  for i in range(6):
    s = state._replace(key=jax.random.PRNGKey(10 + i))
    cands = np.asarray(ls.propose(s))
    hits = [j for j in range(m) if np.allclose(cands[j], s.x)]
    assert len(hits) == 1
    assert any(np.allclose(c, s.prev_best) for c in cands)
    positions.add(hits[0])
  assert len(positions) > 1  # x is not always shown at the same place
  picks = []

  def pick(candidates, key):
    picks.append(candidates.shape)
    return jnp.array([0])

  state, info = ls.round(state, zo.exact_oracle(_f, k=2), pick_oracle=pick)
  assert info["mode"] == "line_search" and picks == [(m, 2)]


def test_bad_configuration():
  with pytest.raises(ValueError, match="m=2"):
    zo.rank_line_search(m=2, mu=0.1, step_size=1.0)
  with pytest.raises(ValueError, match="step_size"):
    zo.rank_line_search(m=4, mu=0.1, step_size=0.0)
