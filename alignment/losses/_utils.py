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
import numpy as np

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


def as_mean_over(values, subset, valid, denominator) -> Array:
  """Per-entry values whose mean over `valid` equals `Σ_subset values / max(denominator, 1)`.

  Lets objectives made of separately reduced terms (a mean over a subset, a token mean) return
  per-example values that obey the reduction contract of ALGORITHMS.md §0.2: entry i becomes
  `values_i · N / max(denominator, 1)` on the subset (N = number of valid entries) and 0
  elsewhere, so `reduce_fn=jnp.mean` gives the intended scalar, `None` gives values that sum to
  `N` times it, and `sum_and_count` gives `(N·it, N)`.
  """
  subset = subset & valid
  n_valid = jnp.sum(valid, dtype=jnp.float32)
  scale = n_valid / jnp.maximum(f32(denominator), 1.0)
  return jnp.where(subset, values * scale, 0.0)


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


def check_shapes(fn_name: str, reference_name: str, reference: Array, **arrays) -> None:
  """Raises a ValueError naming `fn_name` and the argument whose shape does not fit.

  Every array in `arrays` (None entries are skipped) must broadcast to the shape of
  `reference` (`[..., K]`): shapes are static, so this check also runs under `jit`.
  """
  target = tuple(jnp.shape(reference))
  for name, value in arrays.items():
    if value is None:
      continue
    shape = tuple(jnp.shape(value))
    try:
      ok = jnp.broadcast_shapes(shape, target) == target
    except ValueError:
      ok = False
    if not ok:
      raise ValueError(
          f"{fn_name}: {name} has shape {shape}, which does not broadcast to the shape "
          f"{target} of {reference_name}."
      )


def concrete_array(x) -> Optional[np.ndarray]:
  """`x` as a numpy array, or None if it is None or traced (values unknown inside `jit`)."""
  if x is None:
    return None
  try:
    return np.asarray(x)
  except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
    return None


def check_array_range(
    name: str,
    values,
    *,
    low: Optional[float] = None,
    high: Optional[float] = None,
    mask: Optional[Array] = None,
    where: str = "",
) -> None:
  """Raises a ValueError if a concrete array has (valid) entries outside `[low, high]`.

  Arrays traced by `jit`/`grad`/`vmap` cannot be inspected and are not checked.
  """
  v, m = concrete_array(values), concrete_array(mask)
  if v is None or (mask is not None and m is None):
    return
  v = v.astype(np.float64)
  m = np.ones(v.shape, bool) if mask is None else np.broadcast_to(m.astype(bool), v.shape)
  bad = np.zeros(v.shape, bool)
  if low is not None:
    bad |= v < low
  if high is not None:
    bad |= v > high
  bad &= m
  if bad.any():
    lo = "-inf" if low is None else low
    hi = "inf" if high is None else high
    prefix = f"{where}: " if where else ""
    raise ValueError(
        f"{prefix}{name} must lie in [{lo}, {hi}]; {int(bad.sum())} entries do not, "
        f"e.g. {v[bad][0]} at index {tuple(int(i) for i in np.argwhere(bad)[0])}."
    )


def list_mask(valid: Array) -> Array:
  """`[...]` mask of lists with at least one valid item (the list-loss denominator, §0.2)."""
  return jnp.any(valid, axis=-1)


def masked_logsumexp(x: Array, mask: Array, axis: int = -1) -> Array:
  """`log Σ_{mask} exp(x)` along `axis`; 0 with finite gradients where nothing is valid.

  Masked entries never enter an `exp` (double-`where`), so infinities or NaNs there cannot
  poison the gradient; the shift by the valid maximum keeps every `exp` <= 1.
  """
  shape = jnp.broadcast_shapes(jnp.shape(x), jnp.shape(mask))
  x, mask = jnp.broadcast_to(x, shape), jnp.broadcast_to(mask, shape)
  any_valid = jnp.any(mask, axis=axis, keepdims=True)
  shift = jnp.max(jnp.where(mask, x, -jnp.inf), axis=axis, keepdims=True)
  shift = jax.lax.stop_gradient(jnp.where(any_valid, shift, 0.0))
  x_safe = jnp.where(mask, x, shift)
  total = jnp.sum(jnp.where(mask, jnp.exp(x_safe - shift), 0.0), axis=axis, keepdims=True)
  out = jnp.log(jnp.where(any_valid, total, 1.0)) + shift
  return jnp.squeeze(out, axis=axis)


def descending_ranks(values: Array, valid: Array, *, tiebreak: Optional[Array] = None) -> Array:
  """1-based ranks `[..., K]` (int32) of the items sorted by `values` in descending order.

  Ties go to the smaller `tiebreak` value (if given: e.g. uniform noise for random tie-breaking),
  then to the earlier index; invalid items come after all valid ones, in index order. This is
  the rank of a stable sort, computed from `[..., K, K]` comparisons (no sort, no gather: for
  the list sizes of preference data, K <= a few dozen, it is the faster form on every backend).

  `rank_i = 1 + #{j : j is placed before i}`.
  """
  values = jax.lax.stop_gradient(values)
  valid = jnp.broadcast_to(valid, jnp.shape(values))
  index = jnp.arange(values.shape[-1])
  earlier = index[None, :] < index[:, None]  # [i, j]: j comes before i in input order.
  x_i, x_j = values[..., :, None], values[..., None, :]
  if tiebreak is not None:
    t_i, t_j = tiebreak[..., :, None], tiebreak[..., None, :]
    earlier = (t_j < t_i) | ((t_j == t_i) & earlier)
  ahead = (x_j > x_i) | ((x_j == x_i) & earlier)
  v_i, v_j = valid[..., :, None], valid[..., None, :]
  before = jnp.where(v_i == v_j, jnp.where(v_i, ahead, index[None, :] < index[:, None]), v_j)
  return 1 + jnp.sum(before, axis=-1, dtype=jnp.int32)


def prepare_list(
    fn_name: str,
    scores: Array,
    labels: Array,
    where: Optional[Array],
    weights: Optional[Array],
) -> tuple[Array, Array, Array, Optional[Array]]:
  """Checks and casts the inputs of a list loss: `(scores, labels, valid, weights)`, `[..., K]`.

  Scores and labels are float32 and broadcast to the scores' shape. Invalid slots get score 0
  and weight 0 *before* any loss is computed (the first half of the double-`where`): padding may
  hold anything, even NaN or inf, without reaching a value or a gradient.
  """
  scores = f32(scores)
  if scores.ndim < 1:
    raise ValueError(f"{fn_name}: scores must have a list axis [..., K], got a scalar.")
  check_shapes(fn_name, "scores", scores, labels=labels, where=where, weights=weights)
  valid = valid_mask(scores, where)
  scores = jnp.where(valid, scores, 0.0)
  labels = jnp.where(valid, jnp.broadcast_to(f32(labels), scores.shape), 0.0)
  if weights is not None:
    weights = jnp.where(valid, jnp.broadcast_to(f32(weights), scores.shape), 0.0)
  return scores, labels, valid, weights
