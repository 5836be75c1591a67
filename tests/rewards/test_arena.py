"""Tests of the Chatbot-Arena Bradley–Terry fit and online Elo (alignment/rewards/arena.py)."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment.rewards import arena


def np_bt_newton(a, b, o, num_models, iters=100):
  """Float64 Newton's method on the BT NLL (θ scale, α = ln 10), with θ_0 pinned then centred."""
  alpha = np.log(10.0)
  theta = np.zeros(num_models)
  for _ in range(iters):
    p = 1 / (1 + np.exp(-alpha * (theta[a] - theta[b])))
    g = np.zeros(num_models)
    np.add.at(g, a, -alpha * (o - p))
    np.add.at(g, b, alpha * (o - p))
    h = np.zeros((num_models, num_models))
    c = alpha ** 2 * p * (1 - p)
    np.add.at(h, (a, a), c)
    np.add.at(h, (b, b), c)
    np.add.at(h, (a, b), -c)
    np.add.at(h, (b, a), -c)
    step = np.zeros(num_models)
    step[1:] = np.linalg.solve(h[1:, 1:], g[1:])
    theta -= step
  return 400 * (theta - theta.mean()) + 1000


def _simulate(seed, elos, n, tie_rate=0.0):
  rng = np.random.default_rng(seed)
  m = len(elos)
  a = rng.integers(0, m, size=n)
  b = (a + rng.integers(1, m, size=n)) % m
  p = 1 / (1 + 10 ** ((elos[b] - elos[a]) / 400))
  u = rng.random(n)
  o = np.where(u < p, 1.0, 0.0)
  o[rng.random(n) < tie_rate] = 0.5  # ties shrink the fitted gaps, so only where no truth is used
  return a.astype(np.int32), b.astype(np.int32), o


def test_doctests():
  result = doctest.testmod(arena, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                           extraglobs={"jnp": jnp})
  assert result.attempted >= 3 and result.failed == 0


def test_hand_values():
  # 400 points apart: 1/(1 + 10^{−1}) = 10/11
  np.testing.assert_allclose(arena.elo_win_probability(1400.0, 1000.0), 10 / 11, rtol=1e-6)
  # One tie each way: equal ratings.
  np.testing.assert_allclose(arena.arena_bt_fit([0], [1], [0.5], num_models=2), [1000, 1000],
                             atol=1e-3)
  # 3 wins to 1: 10^{Δθ} = 3, Δθ = log10 3, Elo = 1000 ± 200·log10 3 = 1000 ± 95.424
  r = arena.arena_bt_fit([0, 0, 0, 1], [1, 1, 1, 0], [1.0, 1.0, 1.0, 1.0], num_models=2)
  np.testing.assert_allclose(r, [1095.424, 904.576], atol=0.05)
  anchored = arena.arena_bt_fit([0, 0, 0, 1], [1, 1, 1, 0], [1.0, 1.0, 1.0, 1.0], num_models=2,
                                anchor=(1, 1100.0))
  np.testing.assert_allclose(anchored, [1290.848, 1100.0], atol=0.05)


def test_fit_recovers_simulated_strengths_and_matches_newton():
  elos = np.array([1250.0, 1100.0, 1000.0, 900.0, 750.0])
  a, b, o = _simulate(0, elos, 6000)
  got = np.asarray(arena.arena_bt_fit(a, b, o, num_models=5))
  np.testing.assert_allclose(got.mean(), 1000.0, atol=0.05)  # the gradient sums to zero
  np.testing.assert_allclose(got, np_bt_newton(a, b, o, 5), atol=0.3)
  truth = elos - elos.mean() + 1000
  # ~2400 decisive games per model: standard errors ~10 Elo.
  np.testing.assert_allclose(got, truth, atol=40.0)
  assert list(np.argsort(-got)) == [0, 1, 2, 3, 4]
  ua, ub, uo, counts = arena.aggregate_battles(a, b, o)
  assert counts.sum() == len(a) and len(ua) <= 5 * 4 * 3
  np.testing.assert_allclose(arena.arena_bt_fit(ua, ub, uo, counts=counts, num_models=5), got,
                             atol=0.05)
  a, b, o = _simulate(3, elos, 3000, tie_rate=0.2)
  np.testing.assert_allclose(arena.arena_bt_fit(a, b, o, num_models=5), np_bt_newton(a, b, o, 5),
                             atol=0.3)


def test_bootstrap_interval():
  elos = np.array([1100.0, 1000.0, 900.0])
  a, b, o = _simulate(1, elos, 600)
  result = arena.arena_bt_bootstrap(a, b, o, jax.random.key(0), num_models=3, num_rounds=32)
  assert result.samples.shape == (32, 3)
  np.testing.assert_allclose(result.ratings, arena.arena_bt_fit(a, b, o, num_models=3), atol=0.05)
  assert np.all(result.lower < result.ratings) and np.all(result.ratings < result.upper)
  width = np.asarray(result.upper - result.lower)
  # ~400 games per model: a 95 % interval of roughly ±2·25 Elo.
  assert np.all(width > 20) and np.all(width < 200)


def np_online_elo(a, b, o, m, k=4.0):
  r = np.full(m, 1000.0)
  for i, j, s in zip(a, b, o):
    e = 1 / (1 + 10 ** ((r[j] - r[i]) / 400))
    r[i] += k * (s - e)
    r[j] -= k * (s - e)
  return r


def test_online_elo_matches_reference_conserves_total_and_depends_on_order():
  elos = np.array([1200.0, 1000.0, 900.0, 800.0])
  a, b, o = _simulate(2, elos, 500, tie_rate=0.1)
  got = arena.online_elo(a, b, o, num_models=4)
  np.testing.assert_allclose(got, np_online_elo(a, b, o, 4), atol=1e-2)
  np.testing.assert_allclose(jnp.sum(got), 4000.0, atol=1e-2)
  reversed_ = arena.online_elo(a[::-1], b[::-1], o[::-1], num_models=4)
  np.testing.assert_allclose(jnp.sum(reversed_), 4000.0, atol=1e-2)
  assert not np.allclose(got, reversed_)
  jitted = jax.jit(lambda x, y, z: arena.online_elo(x, y, z, num_models=4, k=32.0))(a, b, o)
  np.testing.assert_allclose(jitted, np_online_elo(a, b, o, 4, k=32.0), atol=1e-2)
  # Hand: two equal players, a wins: 1000 ± 4·(1 − 0.5); then a wins again with E = σ(ln10·4/400)
  two = arena.online_elo([0, 0], [1, 1], [1.0, 1.0], num_models=2)
  e = 1 / (1 + 10 ** (-4 / 400))
  np.testing.assert_allclose(two, [1002 + 4 * (1 - e), 998 - 4 * (1 - e)], rtol=1e-6)


def test_infinite_ratings_and_bad_battles_raise():
  with pytest.raises(ValueError, match=r"infinite.*never lost: \[0\]"):
    arena.arena_bt_fit([0, 0, 1], [1, 2, 2], [1.0, 1.0, 0.5], num_models=3)
  with pytest.raises(ValueError, match=r"models \[2\] have no battles"):
    arena.arena_bt_fit([0, 1], [1, 0], [1.0, 1.0], num_models=3)
  with pytest.raises(ValueError, match="outcomes must be 1"):
    arena.arena_bt_fit([0, 1], [1, 0], [1.0, 0.7], num_models=2)
  with pytest.raises(ValueError, match="against itself"):
    arena.arena_bt_fit([0, 1], [0, 0], [1.0, 1.0], num_models=2)
  with pytest.raises(ValueError, match=r"model indices must lie in \[0, 2\)"):
    arena.arena_bt_fit([0, 2], [1, 0], [1.0, 1.0], num_models=2)
  with pytest.raises(ValueError, match="one length"):
    arena.online_elo([0, 1], [1], [1.0], num_models=2)
  with pytest.raises(ValueError, match="online_elo: outcomes"):
    arena.online_elo([0], [1], [2.0], num_models=2)
