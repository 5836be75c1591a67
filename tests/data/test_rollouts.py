"""Tests of the DR-PO dataset resets: roll-in prompts, the prefix distribution, the loss mask."""

import jax
import jax.numpy as jnp
import numpy as np

from alignment.data import rollouts


def test_drpo_reset_and_rollin_mask():
  prompts = jnp.array([[7, 8, 0], [9, 0, 0], [5, 6, 4]])
  plen = jnp.array([2, 1, 3])
  resp = jnp.array([[1, 2, 3, 0], [4, 0, 0, 0], [1, 1, 2, 3]])
  rlen = jnp.array([3, 1, 4])
  reset = jax.jit(rollouts.drpo_reset, static_argnames="p_reset")
  tokens, lengths, prefix = jax.device_get(reset(jax.random.PRNGKey(0), prompts, plen, resp, rlen))
  assert prefix[1] == 0  # len < 2: no reset
  assert 1 <= prefix[0] <= 2 and 1 <= prefix[2] <= 3
  for b in range(3):
    want = np.asarray(prompts)[b, :plen[b]].tolist() + np.asarray(resp)[b, :prefix[b]].tolist()
    assert tokens[b].tolist() == want + [0] * (7 - len(want))
  np.testing.assert_array_equal(lengths, np.asarray(plen) + prefix)
  # p_reset = 0: no resets; prefix lengths are uniform on 1..len−1 over many keys.
  assert np.all(np.asarray(reset(jax.random.PRNGKey(1), prompts, plen, resp, rlen,
                                 p_reset=0.0)[2]) == 0)
  draws = jax.jit(jax.vmap(lambda k: rollouts.drpo_reset(k, prompts, plen, resp, rlen)[2]))(
      jax.random.split(jax.random.PRNGKey(2), 3000))
  counts = np.bincount(np.asarray(draws[:, 2]), minlength=4)
  assert counts[0] == 0 and counts[4:].sum() == 0
  np.testing.assert_allclose(counts[1:4] / 3000, 1 / 3, atol=0.04)
  # Rollin mask drops the first `prefix` completion tokens.
  cm = jnp.array([[0, 0, 1, 1, 1, 0]], bool)
  assert rollouts.rollin_mask(cm, jnp.array([2])).tolist() == [[False] * 4 + [True, False]]
