"""Similarity rewards against reference answers (RefAlign's token-F1 reconstruction)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def refalign_reward(tokens, reference_tokens, *, mask=None, reference_mask=None) -> Array:
  """RefAlign similarity reward (reconstruction): token-level F1 to one reference answer.

  Bag-of-tokens overlap with multiplicity, `o = Σ_v min(c_y(v), c_ref(v))`;
  `F1 = 2·o/(|y| + |y_ref|)` (= 2PR/(P + R), 0 when both are empty). The paper uses BERTScore
  F1; token F1 is its small-scale stand-in. The reward feeds a REINFORCE-style update
  (`alignment.losses.policy_gradient.reinforce_loss` or `grpo_loss`); the paper's baseline and
  KL details are unknown, so this is a reconstruction, not the paper's method.

  Paper: "Learning from Reference Answers: Versatile Language Model Alignment without Binary
  Human Preference Data".

  Args:
    tokens: `[..., T]` int response ids; reference_tokens: `[..., R]` int reference ids.
    mask, reference_mask: `[..., T]`, `[..., R]` real tokens (default all).

  Returns:
    `[...]` F1 in [0, 1], float32.

  Example:
    >>> import jax.numpy as jnp
    >>> refalign_reward(jnp.array([1, 2, 2, 3]), jnp.array([2, 1, 4]))  # o = 2: 2·2/(4 + 3)
    Array(0.5714286, dtype=float32)
  """
  y, ref = jnp.asarray(tokens), jnp.asarray(reference_tokens)
  m = jnp.ones(y.shape, bool) if mask is None else jnp.asarray(mask, bool)
  mr = jnp.ones(ref.shape, bool) if reference_mask is None else jnp.asarray(reference_mask, bool)
  same_y = (y[..., :, None] == y[..., None, :]) & m[..., None, :]
  same_ref = (y[..., :, None] == ref[..., None, :]) & mr[..., None, :]
  c_y = jnp.sum(same_y, axis=-1, dtype=jnp.float32)  # count of token t's id in y
  c_ref = jnp.sum(same_ref, axis=-1, dtype=jnp.float32)  # ... and in the reference
  # Each id v occurs c_y(v) times in y: adding min(c_y, c_ref)/c_y per occurrence gives o.
  overlap = jnp.sum(jnp.where(m, jnp.minimum(c_y, c_ref) / jnp.maximum(c_y, 1.0), 0.0), axis=-1)
  total = jnp.sum(m, axis=-1, dtype=jnp.float32) + jnp.sum(mr, axis=-1, dtype=jnp.float32)
  return 2.0 * overlap / jnp.maximum(total, 1.0)
