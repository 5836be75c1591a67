"""Tests of `alignment.metrics.preference`: implicit-reward metrics and the undesirable region,
by hand and against float64 loops."""

import jax.numpy as jnp
import numpy as np
import pytest

from alignment import metrics as M
from tests.metrics.helpers import ATOL, random_lists, run


def test_reward_metrics_pairs_hand_worked():
  logps = jnp.array([[-1.0, -3.0], [-2.0, -2.0]])
  ref = jnp.array([[-2.0, -2.0], [-1.0, -4.0]])
  labels = jnp.array([[1.0, 0.0], [1.0, 0.0]])
  out = M.mean(run(M.reward_metrics, logps, ref, labels, beta=0.5))
  # rho = [[1, -1], [-1, 2]]; r = 0.5 rho = [[0.5, -0.5], [-0.5, 1.0]].
  expected = {
      "rewards/chosen": (0.5 - 0.5) / 2,  # 0
      "rewards/rejected": (-0.5 + 1.0) / 2,  # 0.25
      "rewards/accuracies": (1 + 0) / 2,  # 0.5 > -0.5 yes, -0.5 > 1.0 no
      "rewards/margins": (1.0 - 1.5) / 2,  # -0.25
      "logps/chosen": (-1.0 - 2.0) / 2,  # -1.5
      "logps/rejected": (-3.0 - 2.0) / 2,  # -2.5
  }
  assert set(out) == set(expected)
  for k, v in expected.items():
    assert float(out[k]) == pytest.approx(v, abs=ATOL), k


def test_reward_accuracy_is_strict():
  # Equal implicit rewards: r_w = r_l = 0, a tie counts as wrong.
  out = M.mean(run(M.reward_metrics, jnp.array([[-1.0, -2.0]]), jnp.array([[-1.0, -2.0]]),
                                jnp.array([[1.0, 0.0]])))
  assert float(out["rewards/accuracies"]) == 0.0


def _reward_metrics_reference(logps, ref, labels, beta, lengths, where):
  """Direct float64 loops over lists and pairs."""
  sums = {k: [0.0, 0] for k in ("rc", "rr", "acc", "marg", "lc", "lr")}
  for b in range(logps.shape[0]):
    idx = [i for i in range(logps.shape[1]) if where[b, i]]
    rho = logps[b].astype(np.float64) - (0.0 if ref is None else ref[b].astype(np.float64))
    r = beta * rho / (1.0 if lengths is None else np.maximum(lengths[b], 1))
    pairs = [(i, j) for i in idx for j in idx if labels[b, i] > labels[b, j]]
    for i, j in pairs:
      sums["acc"][0] += float(r[i] > r[j]); sums["acc"][1] += 1
      sums["marg"][0] += r[i] - r[j]; sums["marg"][1] += 1
    if pairs:
      best = max(idx, key=lambda i: (labels[b, i], -i))
      worst = min(idx, key=lambda i: (labels[b, i], i))
      for key, value in (("rc", r[best]), ("rr", r[worst]), ("lc", logps[b, best]),
                         ("lr", logps[b, worst])):
        sums[key][0] += value; sums[key][1] += 1
  return {k: s / max(c, 1) for k, (s, c) in sums.items()}


@pytest.mark.parametrize("reference_free, use_lengths", [(False, False), (True, True)])
def test_reward_metrics_lists_match_reference(reference_free, use_lengths):
  logps, ref, labels, lengths, where = random_lists(0)
  ref = None if reference_free else ref
  lengths = lengths if use_lengths else None
  got = M.mean(run(M.reward_metrics, logps, ref, labels, beta=0.3, lengths=lengths, where=where))
  want = _reward_metrics_reference(logps, ref, labels, 0.3, lengths, where)
  names = {"rc": "rewards/chosen", "rr": "rewards/rejected", "acc": "rewards/accuracies",
           "marg": "rewards/margins", "lc": "logps/chosen", "lr": "logps/rejected"}
  for short, name in names.items():
    assert float(got[name]) == pytest.approx(want[short], abs=1e-5), name


# ---------------------------------------------------------------------------------------------
# Undesirable region.


def test_undesirable_region_fraction_hand_worked():
  logps = jnp.array([[-2.0, -3.0], [-3.0, -2.0], [-3.0, -2.0]])
  ref = jnp.array([[-2.0, -2.0], [-5.0, -1.0], [-1.0, -2.0]])
  lengths = jnp.array([[2, 1], [1, 1], [1, 1]])
  # Pair 1: a = [-1, -3], delta_pi = 2 >= 0: outside.
  # Pair 2: delta_pi = -1, delta_ref = -5 + 1 = -4: -4 < -1 < 0 inside.
  # Pair 3: delta_pi = -1, delta_ref = 1: delta_pi < delta_ref, outside.
  got = run(M.undesirable_region_fraction, logps, ref, lengths)
  assert (float(got.sum), float(got.count)) == (1.0, 3.0)
  masked = run(M.undesirable_region_fraction, logps, ref, lengths,
                                         where=jnp.array([[True, True], [True, False],
                                                          [True, True]]))
  assert (float(masked.sum), float(masked.count)) == (0.0, 2.0)


def test_bad_inputs_raise_clear_errors():
  x = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match="reward_metrics: beta"):
    M.reward_metrics(x, x, x, beta=0.0)
