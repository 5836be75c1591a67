"""Shared private helpers of the objective library: dtypes, masks, pairs, reductions, checks.

Every objective builds its masks and pairs through these functions, so that the conventions of
ALGORITHMS.md §0 (strict pairs, `where` masks, mean over valid entries, empty sets reduce to 0
with finite gradients) are implemented exactly once.
"""

from __future__ import annotations

import numbers
from typing import Callable, Optional

import jax
import jax.numpy as jnp

Array = jax.Array
ReduceFn = Optional[Callable[..., Array]]


def f32(x) -> Array:
  """Casts to float32 (objectives compute in float32 whatever the input dtype)."""
  return jnp.asarray(x, jnp.float32)


def valid_mask(x: Array, where: Optional[Array]) -> Array:
  """Boolean mask `[..., K]` of valid slots: `where` broadcast to `x`, or all True."""
  if where is None:
    return jnp.ones(jnp.shape(x), bool)
  return jnp.broadcast_to(jnp.asarray(where, bool), jnp.shape(x))


def pairwise_differences(x: Array) -> Array:
  """`d[..., i, j] = x[..., i] - x[..., j]`, shape `[..., K, K]`."""
  return x[..., :, None] - x[..., None, :]


def pair_mask(labels: Array, where: Optional[Array] = None) -> Array:
  """Valid ordered pairs `[..., K, K]`: `labels_i > labels_j` strictly, both slots valid.

  Ties form no pair (ALGORITHMS.md §0.1); `(i, j)` means item i is the better one.
  """
  valid = valid_mask(labels, where)
  labels = f32(labels)
  return (
      (labels[..., :, None] > labels[..., None, :])
      & valid[..., :, None]
      & valid[..., None, :]
  )


def masked_mean(x: Array, mask: Array, axis=None) -> Array:
  """`Σ(mask·x) / max(Σ mask, 1)`: 0 with finite gradients when nothing is valid."""
  mask = jnp.broadcast_to(mask, jnp.shape(x))
  total = jnp.sum(jnp.where(mask, x, 0.0), axis=axis)
  count = jnp.sum(mask, axis=axis, dtype=jnp.float32)
  return total / jnp.maximum(count, 1.0)


def sum_and_count(x: Array, *, where: Optional[Array] = None) -> tuple[Array, Array]:
  """A `reduce_fn` that returns `(Σ valid values, number of valid values)`.

  Passing `reduce_fn=sum_and_count` to any objective gives the pair the training layer needs
  for exact accumulation over micro-batches and hosts: the mean is `sum / max(count, 1)`.
  """
  mask = jnp.ones(jnp.shape(x), bool) if where is None else jnp.broadcast_to(where, jnp.shape(x))
  return jnp.sum(jnp.where(mask, x, 0.0)), jnp.sum(mask, dtype=jnp.float32)


def reduce_loss(values: Array, mask: Array, reduce_fn: ReduceFn) -> Array:
  """Reduces per-entry losses over the valid entries (ALGORITHMS.md §0.2).

  - `reduce_fn=None`: the unreduced values with masked entries set to 0, so that
    `sum(loss(reduce_fn=None)) == loss(reduce_fn=jnp.sum)`.
  - `jnp.mean`: the mean over valid entries, 0 (with finite gradients) if there are none.
  - `jnp.sum`: the sum over valid entries.
  - any other callable is called as `reduce_fn(values, where=mask)` (e.g. `sum_and_count`).
  """
  values = f32(values)
  mask = jnp.broadcast_to(mask, jnp.shape(values))
  if reduce_fn is None:
    return jnp.where(mask, values, 0.0)
  if reduce_fn is jnp.mean:
    return masked_mean(values, mask)
  if reduce_fn is jnp.sum:
    return jnp.sum(jnp.where(mask, values, 0.0))
  return reduce_fn(jnp.where(mask, values, 0.0), where=mask)


def _concrete(value) -> Optional[float]:
  """The Python value of a hyper-parameter, or None when it is traced (checks are skipped)."""
  if isinstance(value, numbers.Number):
    return float(value)
  try:
    return float(value)
  except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
    return None


def check_range(
    name: str,
    value,
    *,
    low: Optional[float] = None,
    high: Optional[float] = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    where: str = "",
) -> None:
  """Raises a ValueError naming `name` (and the objective `where`) if `value` is out of range.

  Traced values are not checked (they cannot be inspected inside `jit`); Python numbers and
  concrete arrays are.
  """
  v = _concrete(value)
  if v is None:
    return
  bad = v != v  # NaN
  if low is not None:
    bad |= v < low if low_inclusive else v <= low
  if high is not None:
    bad |= v > high if high_inclusive else v >= high
  if bad:
    lo = "" if low is None else ("[" if low_inclusive else "(") + f"{low}"
    hi = "" if high is None else f"{high}" + ("]" if high_inclusive else ")")
    interval = f"{lo or '(-inf'}, {hi or 'inf)'}"
    prefix = f"{where}: " if where else ""
    raise ValueError(f"{prefix}{name} must lie in {interval}, got {v}.")


def check_positive(name: str, value, *, where: str = "") -> None:
  """Raises unless `value > 0` (e.g. every β)."""
  check_range(name, value, low=0.0, low_inclusive=False, where=where)
