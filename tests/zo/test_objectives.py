"""Synthetic objectives of the ZO-RankSGD study: Rosenbrock and a low-rank quadratic.

Paper: *Zeroth-Order Optimization Meets Human Feedback: Provable Learning via Ranking Oracles*
(Tang, Rybin, Chang; ICLR 2024). Values by hand and against numpy.
"""

import jax
import numpy as np
import pytest

from alignment import zo


def _rosenbrock_numpy(x):
  x = np.asarray(x, np.float64)
  return sum(100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(len(x) - 1))


def test_rosenbrock_by_hand_and_against_numpy():
  assert float(zo.rosenbrock(np.ones(7))) == 0.0  # the minimum
  assert float(zo.rosenbrock(np.zeros(2))) == 1.0  # 100·0² + 1²
  # x = (1, 2, 0): 100·(2 − 1)² + 0² + 100·(0 − 4)² + (1 − 2)² = 100 + 1600 + 1 = 1701.
  assert float(zo.rosenbrock(np.array([1.0, 2.0, 0.0]))) == 1701.0
  x = np.random.default_rng(0).normal(size=10)
  assert float(zo.rosenbrock(x)) == pytest.approx(_rosenbrock_numpy(x), rel=1e-5)


def test_low_rank_quadratic_against_numpy():
  rng = np.random.default_rng(1)
  q, b, x = rng.normal(size=(5, 5)), rng.normal(size=5), rng.normal(size=5)
  assert float(zo.low_rank_quadratic(x, q, b)) == pytest.approx(x @ q @ x + b @ x, rel=1e-5)
  # x = (1, 2), Q = [[2, 0], [0, 3]], b = (1, −1): 2 + 12 + 1 − 2 = 13.
  assert float(zo.low_rank_quadratic(np.array([1.0, 2.0]), np.diag([2.0, 3.0]),
                                     np.array([1.0, -1.0]))) == 13.0


@pytest.mark.parametrize("d, rank, want_rank", [(10, None, 5), (6, 2, 2), (4, 4, 4)])
def test_sampled_quadratic_is_positive_semidefinite_of_the_given_rank(d, rank, want_rank):
  q, b = zo.sample_low_rank_quadratic(jax.random.PRNGKey(0), d, rank=rank)
  q = np.asarray(q, np.float64)
  assert q.shape == (d, d) and b.shape == (d,)
  np.testing.assert_allclose(q, q.T, rtol=1e-6)
  eigenvalues = np.linalg.eigvalsh(q)
  assert eigenvalues.min() > -1e-4 * eigenvalues.max()
  assert np.linalg.matrix_rank(q, tol=1e-4 * eigenvalues.max()) == want_rank


def test_rank_deficient_quadratic_is_unbounded_below_along_its_null_space():
  # Q = A·Aᵀ has rank d/2; along a null-space direction u with bᵀu < 0, f(t·u) = t·bᵀu -> −∞.
  q, b = zo.sample_low_rank_quadratic(jax.random.PRNGKey(3), 8)
  _, vectors = np.linalg.eigh(np.asarray(q, np.float64))
  u = vectors[:, 0]  # smallest eigenvalue: 0
  u = -u if b @ u > 0 else u
  values = [float(zo.low_rank_quadratic(t * u, q, b)) for t in (0.0, 10.0, 100.0)]
  assert values[0] == 0.0 and values[2] < values[1] < 0.0
  np.testing.assert_allclose(values[2], 100.0 * float(np.asarray(b) @ u), rtol=1e-2)


def test_rank_out_of_range_is_named():
  with pytest.raises(ValueError, match=r"rank=0 is out of range \[1, d=4\]"):
    zo.sample_low_rank_quadratic(jax.random.PRNGKey(0), 4, rank=0)
  with pytest.raises(ValueError, match="out of range"):
    zo.sample_low_rank_quadratic(jax.random.PRNGKey(0), 4, rank=5)
