"""Tests of `alignment.metrics.calibration`: ECE by hand and against a loop over bins."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment import metrics as M
from tests.metrics.helpers import ATOL, assert_trees_close, run


def _ece_reference(p, y, num_bins):
  """Loop over bins with the edges of `calibration_bins`, float64; also MORE's per-bin errors."""
  p = np.asarray(p, np.float64)
  y = np.asarray(y, np.float64)
  total, per_bin = 0.0, []
  for b in range(num_bins):
    lo, hi = b / num_bins, (b + 1) / num_bins
    inside = (p >= lo) & ((p < hi) if b < num_bins - 1 else (p <= hi))
    gap = abs(p[inside].sum() - y[inside].sum())
    total += gap
    if inside.any():
      per_bin.append(gap / inside.sum())
  return total / len(p), np.mean(per_bin), np.max(per_bin)


def test_ece_hand_worked():
  got = run(M.ece, jnp.array([0.1, 0.9, 0.5, 1.0]), jnp.array([0.0, 1.0, 1.0, 1.0]))
  # 5 bins: 0.1 -> bin 0 (gap 0.1), 0.5 -> bin 2 (gap 0.5), 0.9 and 1.0 -> bin 4 (1.9 vs 2,
  # gap 0.1).  ECE = 0.7/4 = 0.175; per bin 0.1, 0.5, 0.05 -> average 0.216667, max 0.5.
  assert float(got["ece"]) == pytest.approx(0.175, abs=ATOL)
  assert float(got["average_bin_error"]) == pytest.approx(0.65 / 3, abs=ATOL)
  assert float(got["max_bin_error"]) == pytest.approx(0.5, abs=ATOL)


def test_ece_matches_loop_including_bin_edges():
  rng = np.random.default_rng(12)
  p = np.concatenate([rng.random(200), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]]).astype(np.float32)
  y = (rng.random(206) < p).astype(np.float32)
  for num_bins in (5, 10):
    got = run(M.ece, p, y, num_bins=num_bins)
    want = _ece_reference(p, y, num_bins)
    np.testing.assert_allclose(
        [got["ece"], got["average_bin_error"], got["max_bin_error"]], want, atol=1e-5)
  bins = run(M.calibration_bins, p, y)
  np.testing.assert_array_equal(bins.count.sum(), 206)
  assert float(run(M.ece, p[:0], y[:0])["ece"]) == 0.0  # empty set


def test_jit_of_ece():
  rng = np.random.default_rng(24)
  p, y = rng.random(20), (rng.random(20) < 0.5)
  assert_trees_close(jax.jit(M.ece)(p, y), M.ece(p, y))


def test_bad_inputs_raise_clear_errors():
  x = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match="num_bins"):
    M.ece(x, x, num_bins=0)
