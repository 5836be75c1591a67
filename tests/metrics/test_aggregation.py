"""Tests of `alignment.metrics.aggregation` and of the exact-accumulation contract of every
`(sum, count)` metric: half batches add up to the whole, masked examples change nothing, `jit`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment import metrics as M
from tests.metrics.helpers import assert_trees_close, mean_of, random_lists


def test_sum_count_mean_and_add():
  sc = M.sum_count(jnp.array([1.0, 2.0, jnp.nan, 4.0]), jnp.array([True, True, False, False]))
  assert (float(sc.sum), float(sc.count)) == (3.0, 2.0)  # the NaN slot is masked away
  assert mean_of(M.sum_count(jnp.zeros(3), jnp.zeros(3, bool))) == 0.0  # empty set -> 0
  tree = {"a": M.SumCount(jnp.array(3.0), jnp.array(2.0)), "b": jnp.array(7.0)}
  total = M.add(tree, tree)
  assert float(total["a"].sum) == 6.0 and float(total["a"].count) == 4.0
  means = M.mean(total)
  assert float(means["a"]) == 1.5 and float(means["b"]) == 14.0  # non-SumCount leaves pass
  per_axis = M.sum_count(jnp.array([[1.0, 2.0], [3.0, 4.0]]), axis=0)
  np.testing.assert_array_equal(per_axis.sum, [4.0, 6.0])
  np.testing.assert_array_equal(per_axis.count, [2.0, 2.0])


# ---------------------------------------------------------------------------------------------
# Accumulation, masks, jit: every (sum, count) metric.


def _sum_count_metrics():
  """name -> fn(arrays dict) returning a pytree of SumCounts, on [B, K] inputs."""
  return {
      "reward_metrics": lambda a: M.reward_metrics(a["logps"], a["ref"], a["labels"],
                                                   where=a["where"]),
      "ranking_accuracy": lambda a: M.ranking_accuracy(a["logps"], a["labels"],
                                                       lengths=a["lengths"], where=a["where"]),
      "ranking_accuracy_lists": lambda a: M.ranking_accuracy_lists(a["logps"], a["labels"],
                                                                   where=a["where"]),
      "idealized": lambda a: M.idealized_ranking_accuracy(a["ref"][:, :2], a["alpha"],
                                                          where=a["where"][:, :2]),
      "logprob_change": lambda a: M.logprob_change(a["logps"], a["ref"], where=a["where"]),
      "ndcg": lambda a: M.ndcg(a["logps"], a["labels"], topn=2, where=a["where"]),
      "kendall_tau": lambda a: M.kendall_tau(a["logps"], a["labels"], where=a["where"]),
      "sample_kl": lambda a: M.sample_kl(a["logps"], a["ref"], where=a["where"]),
      "token_kl_k3": lambda a: M.token_kl_k3(a["logps"], a["ref"], a["where"]),
      "exact_kl": lambda a: M.exact_kl(a["logps"], a["ref"], where=a["where"][:, 0]),
      "calibration_bins": lambda a: M.calibration_bins(a["probs"], a["outcomes"],
                                                       where=a["where"]),
      "undesirable": lambda a: M.undesirable_region_fraction(a["logps"][:, :2], a["ref"][:, :2],
                                                             a["lengths"][:, :2],
                                                             where=a["where"][:, :2]),
      "below_flip_threshold": lambda a: M.below_flip_threshold(
          a["logps"][:, 0], M.dpo_flip_threshold(a["ref"][:, :2]), where=a["where"][:, 0]),
  }


def _arrays(seed, batch=8):
  logps, ref, labels, lengths, where = random_lists(seed, (batch, 4))
  rng = np.random.default_rng(seed + 100)
  return {
      "logps": logps, "ref": ref, "labels": labels, "lengths": lengths, "where": where,
      "alpha": rng.random(batch).astype(np.float32),
      "probs": rng.random((batch, 4)).astype(np.float32),
      "outcomes": (rng.random((batch, 4)) < 0.5).astype(np.float32),
  }


@pytest.mark.parametrize("name", sorted(_sum_count_metrics()))
def test_accumulating_two_half_batches_equals_the_whole_batch(name):
  fn = _sum_count_metrics()[name]
  arrays = _arrays(20)
  first = {k: v[:3] for k, v in arrays.items()}
  second = {k: v[3:] for k, v in arrays.items()}
  fn = jax.jit(fn)
  assert_trees_close(M.add(fn(first), fn(second)), fn(arrays))


@pytest.mark.parametrize("name", sorted(_sum_count_metrics()))
def test_fully_masked_examples_do_not_change_the_metric(name):
  fn = _sum_count_metrics()[name]
  arrays = _arrays(21)
  extra = _arrays(22, batch=3)
  extra["where"][:] = False
  for k in ("logps", "ref", "probs", "alpha"):
    extra[k][:] = np.nan  # garbage in masked slots must not leak into any sum
  together = {k: np.concatenate([arrays[k], extra[k]]) for k in arrays}
  fn = jax.jit(fn)
  assert_trees_close(fn(together), fn(arrays))


@pytest.mark.parametrize("name", sorted(_sum_count_metrics()))
def test_jit_matches_eager(name):
  fn = _sum_count_metrics()[name]
  arrays = _arrays(23)
  assert_trees_close(jax.jit(fn)(arrays), fn(arrays))
