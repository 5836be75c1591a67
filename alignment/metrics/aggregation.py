"""Exact accumulation of metrics: `(sum, count)` pairs added across batches, devices and hosts.

Most metrics of this package return a `SumCount`; add them with `add` and take `mean` at the end:
the mean of the accumulated pair equals the metric of the whole set.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from alignment.arrays import f32, valid_mask

Array = jax.Array


class SumCount(NamedTuple):
  """A metric as `(sum, count)`: exact under accumulation; the mean is `sum / max(count, 1)`."""

  sum: Array
  count: Array


def sum_count(values: Array, where: Optional[Array] = None, *, axis=None) -> SumCount:
  """`SumCount(Σ valid values, number of valid values)` over `axis` (default: all axes).

  Masked entries are selected away with `where` (a NaN in a masked slot does not propagate).
  """
  values = f32(values)
  mask = valid_mask(values, where)
  return SumCount(
      jnp.sum(jnp.where(mask, values, 0.0), axis=axis),
      jnp.sum(mask, axis=axis, dtype=jnp.float32),
  )


def add(a: Any, b: Any) -> Any:
  """Adds two pytrees of `SumCount`s (or of any arrays) leaf by leaf: exact accumulation."""
  return jax.tree.map(jnp.add, a, b)


def _is_sum_count(x) -> bool:
  return isinstance(x, SumCount)


def mean(metrics: Any) -> Any:
  """Replaces every `SumCount` leaf of a pytree by its mean `sum / max(count, 1)`.

  An empty set has mean 0. Other leaves pass through unchanged. A bare `(sum, count)` tuple (for
  example from `losses.sum_and_count`) is converted with `mean(SumCount(*pair))`.
  """

  def leaf_mean(x):
    if _is_sum_count(x):
      return f32(x.sum) / jnp.maximum(f32(x.count), 1.0)
    return x

  return jax.tree.map(leaf_mean, metrics, is_leaf=_is_sum_count)
