"""Tests of the similarity rewards: RefAlign's token F1, by hand and against a Counter reference."""

import collections

import jax.numpy as jnp
import numpy as np

from alignment.rewards import similarity


def test_refalign_reward_token_f1():
  # y = [1, 2, 2, 3], ref = [2, 1, 4]: overlap {1, 2} = 2 → F1 = 2·2/(4 + 3) = 4/7.
  got = similarity.refalign_reward(jnp.array([1, 2, 2, 3]), jnp.array([2, 1, 4]))
  np.testing.assert_allclose(got, 4 / 7, rtol=1e-6)
  rng = np.random.default_rng(22)
  y, ref = rng.integers(1, 5, (6, 7)), rng.integers(1, 5, (6, 5))
  my, mr = rng.random((6, 7)) < 0.8, rng.random((6, 5)) < 0.8
  want = []
  for b in range(6):
    cy, cr = collections.Counter(y[b][my[b]]), collections.Counter(ref[b][mr[b]])
    o = sum(min(c, cr[v]) for v, c in cy.items())
    want.append(2 * o / max(my[b].sum() + mr[b].sum(), 1))
  got = similarity.refalign_reward(jnp.asarray(y), jnp.asarray(ref), mask=jnp.asarray(my),
                                   reference_mask=jnp.asarray(mr))
  np.testing.assert_allclose(got, want, rtol=1e-6)
