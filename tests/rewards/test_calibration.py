"""Tests of CHARM's Mismatch Degree and offset calibration (alignment/rewards/calibration.py)."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment.rewards import calibration


def np_win_matrix(scores, offsets, temperature, block_size):
  """CHARM's `calculate_winrate_matrix`, transcribed to float64 numpy loops."""
  m, n = scores.shape
  w = np.zeros((m, m))
  for i in range(m):
    for j in range(m):
      if i == j:
        continue
      si, sj = scores[i] + offsets[i], scores[j] + offsets[j]
      wins = 0.0
      for start in range(0, n, block_size):
        bi, bj = si[start:start + block_size, None], sj[None, start:start + block_size]
        wins += np.mean(1 / (1 + np.exp(-(bi - bj) / temperature))) * bi.shape[0]
      w[i, j] = wins / n
  return w


def test_doctests():
  result = doctest.testmod(calibration, optionflags=doctest.ELLIPSIS, extraglobs={"jnp": jnp})
  assert result.attempted >= 1 and result.failed == 0


def test_mismatch_degree_hand_and_reference():
  # wr = 3/4 (ties lose); wr_elo = 1/(1 + 10^{(1000 − 1400)/400}) = 1/(1 + 0.1) = 0.9090909;
  # MD = (0.75 − 0.9090909)/0.9090909 = −0.175
  md = calibration.mismatch_degree(jnp.array([1.0, 2.0, 0.0, 5.0]), jnp.array([0.0, 1.0, 0.0, 4.0]),
                                   1400.0, 1000.0)
  np.testing.assert_allclose(md, -0.175, rtol=1e-5)
  rng = np.random.default_rng(0)
  so, sr = rng.normal(size=50), rng.normal(size=50)
  wr = np.mean(so > sr)
  we = 1 / (1 + 10 ** ((1050 - 1100) / 400))
  np.testing.assert_allclose(calibration.mismatch_degree(so, sr, 1100.0, 1050.0),
                             (wr - we) / max(we, 1 - we), rtol=1e-5)
  where = np.arange(50) < 20
  wr = np.mean(so[:20] > sr[:20])
  np.testing.assert_allclose(calibration.mismatch_degree(so, sr, 1100.0, 1050.0, where=where),
                             (wr - we) / max(we, 1 - we), rtol=1e-5)


def test_elo_win_matrix():
  w = np.asarray(calibration.elo_win_matrix(jnp.array([1000.0, 1400.0, 1200.0])))
  np.testing.assert_allclose(np.diag(w), 0.0)
  off = ~np.eye(3, dtype=bool)
  np.testing.assert_allclose((w + w.T)[off], 1.0, rtol=1e-6)
  np.testing.assert_allclose(w[1, 0], 1 / 1.1, rtol=1e-6)  # 400 points: 10:1


@pytest.mark.parametrize("n,block_size", [(12, 5), (10, 10), (7, 100)])
def test_win_matrix_matches_charm_reference(n, block_size):
  rng = np.random.default_rng(n)
  scores, offsets = rng.normal(size=(3, n)), rng.normal(size=3) * 0.2
  np.testing.assert_allclose(
      calibration.charm_win_matrix(scores, offsets, block_size=block_size),
      np_win_matrix(scores, offsets, 0.1, block_size), rtol=1e-4, atol=1e-6)


def test_offsets_correct_an_overvalued_model():
  """Model 1 is over-valued by the reward model (+1 on every score) although Arena rates all three
  models equally: the fitted offsets remove most of that bias and most of the mismatch."""
  rng = np.random.default_rng(3)
  scores = rng.normal(size=(3, 60)) * 0.5
  scores[1] += 1.0
  elos = jnp.array([1000.0, 1000.0, 1000.0])
  offsets = calibration.charm_offsets(scores, elos, block_size=20, learning_rate=0.05,
                                      num_epochs=100)
  target = calibration.elo_win_matrix(elos)
  mse = lambda o: float(jnp.mean((calibration.charm_win_matrix(scores, o, block_size=20)
                                  - target) ** 2))
  assert mse(offsets) < 0.1 * mse(jnp.zeros(3))
  relative = np.asarray(offsets) - np.asarray(offsets)[[0, 2]].mean()
  assert -1.3 < relative[1] < -0.7
  md_before = calibration.mismatch_degree(scores[1], scores[0], 1000.0, 1000.0)
  md_after = calibration.mismatch_degree(scores[1] + offsets[1], scores[0] + offsets[0], 1000.0,
                                         1000.0)
  assert abs(float(md_after)) < 0.5 * abs(float(md_before))


def test_pairs_and_gradient_of_the_win_matrix():
  chosen, rejected = calibration.charm_pairs(jnp.array([[0.0, 3.0], [1.0, 2.0], [-1.0, 5.0]]))
  np.testing.assert_array_equal(chosen, [1, 2])
  np.testing.assert_array_equal(rejected, [2, 1])
  scores = jnp.array([[0.0, 0.1], [0.2, -0.1]])
  grad = jax.grad(lambda o: calibration.charm_win_matrix(scores, o)[0, 1])(jnp.zeros(2))
  # Raising o_0 raises W[0, 1] and raising o_1 lowers it by as much.
  assert grad[0] > 0
  np.testing.assert_allclose(grad[0], -grad[1], rtol=1e-5)


def test_bad_input_errors():
  with pytest.raises(ValueError, match="offsets must have shape"):
    calibration.charm_win_matrix(jnp.zeros((3, 4)), jnp.zeros(2))
  with pytest.raises(ValueError, match="block_size"):
    calibration.charm_win_matrix(jnp.zeros((3, 4)), jnp.zeros(3), block_size=0)
  with pytest.raises(ValueError, match="charm_offsets: scores must be"):
    calibration.charm_offsets(jnp.zeros((3, 4)), jnp.zeros(2))
  with pytest.raises(ValueError, match="mismatch_degree: scores_ref"):
    calibration.mismatch_degree(jnp.zeros(4), jnp.zeros(3), 1000.0, 1000.0)
