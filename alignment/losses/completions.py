"""The K completions of one prompt: input layouts, checks and group statistics.

Shared by the group / on-policy objectives (`advantages`, `policy_gradient`, `self_play`). The
K (= G) completions of one prompt lie on the list axis. Sequence-level inputs are `[..., K]`
(summed completion log-probs, rewards, advantages); token-level inputs are `[..., K, T]` with a
boolean completion `mask` `[..., K, T]`. `where` `[..., K]` masks padded completions; a token
counts iff its completion is valid and `mask` is True, and padded tokens may hold anything (they
are replaced before any arithmetic). Group statistics are taken over the valid completions of
each group, batch statistics over the whole input (the global batch under `jit`). Advantages,
`old_logps` and `ref_logps` are stop-gradient.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from alignment import arrays

Array = jax.Array
_sg = jax.lax.stop_gradient


def check_group(fn_name: str, what: str, x: Array) -> None:
  """Raises unless `x` has a group axis of at least 2 completions (statistics need G >= 2)."""
  shape = jnp.shape(x)
  if len(shape) < 1 or shape[-1] < 2:
    raise ValueError(
        f"{fn_name}: {what} must have a group axis [..., K] with K >= 2 completions per prompt, "
        f"got shape {shape}."
    )


def group_moments(x: Array, valid: Array, axis=-1) -> tuple[Array, Array, Array]:
  """Masked `(mean, Bessel std, count)` along `axis` (keepdims; the whole array if None).

  `std = sqrt(Σ valid (x − mean)² / max(count − 1, 1))`: 0 for groups with fewer than 2 valid
  values, whose centred values are 0 anyway.
  """
  count = jnp.sum(valid, axis=axis, keepdims=True, dtype=jnp.float32)
  mean = jnp.sum(jnp.where(valid, x, 0.0), axis=axis, keepdims=True) / jnp.maximum(count, 1.0)
  sq = jnp.where(valid, jnp.square(x - mean), 0.0)
  var = jnp.sum(sq, axis=axis, keepdims=True) / jnp.maximum(count - 1.0, 1.0)
  return mean, jnp.sqrt(var), count


def token_inputs(name, logps, mask, where, **token_arrays):
  """Checks token-level inputs; returns `(logps [..., K, T], token_valid, seq_valid [..., K])`.

  Invalid tokens of `logps` are replaced by 0 before any arithmetic (first half of the
  double-`where`), so padding cannot reach a value or a gradient.
  """
  logps = arrays.f32(logps)
  if logps.ndim < 2:
    raise ValueError(f"{name}: token-level logps must be [..., K, T], got shape {logps.shape}.")
  if mask is None:
    raise ValueError(f"{name}: the completion `mask` [..., K, T] is required.")
  arrays.check_shapes(name, "logps", logps, mask=mask, **token_arrays)
  arrays.check_shapes(name, "logps[..., 0] ([..., K])", logps[..., 0], where=where)
  seq_valid = arrays.valid_mask(logps[..., 0], where)
  token_valid = jnp.broadcast_to(jnp.asarray(mask, bool), logps.shape) & seq_valid[..., None]
  return jnp.where(token_valid, logps, 0.0), token_valid, seq_valid


def token_values(x, token_valid) -> Optional[Array]:
  """A stop-gradient float32 token array with invalid tokens set to 0 (None stays None)."""
  if x is None:
    return None
  return _sg(jnp.where(token_valid, arrays.f32(x), 0.0))


def sequence_inputs(name, logps, where, **others) -> tuple[Array, Array]:
  """Checks `[..., K]` inputs; returns `(logps with invalid slots 0, valid)`."""
  logps = arrays.f32(logps)
  if logps.ndim < 1:
    raise ValueError(f"{name}: logps must have a list axis [..., K], got a scalar.")
  arrays.check_shapes(name, "logps", logps, where=where, **others)
  valid = arrays.valid_mask(logps, where)
  return jnp.where(valid, logps, 0.0), valid


def masked_rows(x, valid) -> Array:
  """`x` (broadcast to `valid`) as stop-gradient float32 with invalid entries set to 0."""
  return _sg(jnp.where(valid, jnp.broadcast_to(arrays.f32(x), jnp.shape(valid)), 0.0))


def need_reference(name, ref_logps, coefficient, what) -> bool:
  """Whether a reference term is computed; raises if it is needed but `ref_logps` is None."""
  if ref_logps is not None:
    return True
  if arrays.concrete_float(coefficient) == 0.0:
    return False
  raise ValueError(f"{name}: {what} = {coefficient} needs `ref_logps` (pass 0 to drop the term).")
