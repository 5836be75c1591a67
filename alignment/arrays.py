"""Shared array helpers: dtypes, checks, masks, pairs, reductions and ranks.

The bottom floor of the library: it imports only `jax` and `numpy`, and every other module
(`losses`, `scores`, `metrics`, `rewards`, `training`, ...) builds its masks, pairs, reductions
and input checks through these functions, so that the shared conventions of
`docs/conventions.md` (the last axis is the list of K responses, labels are higher-is-better and
ties form no pair, `where` masks padded slots, reductions run over valid entries through
`reduce_fn`, empty sets reduce to 0 with finite gradients) are implemented exactly once.

Example:
  >>> import jax.numpy as jnp
  >>> pair_mask(jnp.array([2.0, 0.0, 2.0])).astype(int).tolist()  # ties form no pair
  [[0, 1, 0], [0, 0, 0], [0, 1, 0]]
"""

from __future__ import annotations

import numbers
from typing import Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
ReduceFn = Optional[Callable[..., Array]]

# ------------------------------------------------------------------------------------------------
# Dtypes.


def f32(x) -> Array:
  """Casts to float32 (objectives and metrics compute in float32 whatever the input dtype)."""
  return jnp.asarray(x, jnp.float32)


def as_float(x) -> Array:
  """`x` as an array of at least float32 precision (bf16/f16/int -> f32; f64 stays f64)."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


# ------------------------------------------------------------------------------------------------
# Checks of hyper-parameters and shapes (Python values and concrete arrays; traced values pass).


def concrete_float(value) -> Optional[float]:
  """The Python value of a hyper-parameter, or None when it is traced (checks are skipped)."""
  if isinstance(value, numbers.Number):
    return float(value)
  try:
    return float(value)
  except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
    return None


def concrete_array(x) -> Optional[np.ndarray]:
  """`x` as a numpy array, or None if it is None or traced (values unknown inside `jit`)."""
  if x is None:
    return None
  try:
    return np.asarray(x)
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
  """Raises a ValueError naming `name` (and the function `where`) if `value` is out of range.

  Traced values are not checked (they cannot be inspected inside `jit`); Python numbers and
  concrete arrays are.
  """
  v = concrete_float(value)
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


def check_choice(name: str, value, choices: Sequence, *, where: str = "") -> None:
  """Raises a ValueError naming `name` (and the function `where`) unless `value in choices`."""
  if value not in choices:
    prefix = f"{where}: " if where else ""
    raise ValueError(f"{prefix}{name} must be one of {tuple(choices)}, got {value!r}.")


def require(fn_name: str, value, what: str) -> None:
  """Raises a ValueError naming the function `fn_name` when its input `what` is None."""
  if value is None:
    raise ValueError(f"{fn_name}: `{what}` is required.")


def check_shapes(
    fn_name: str, reference_name: str, reference: Array, *, exact: bool = False, **arrays
) -> None:
  """Raises a ValueError naming `fn_name` and the argument whose shape does not fit.

  Every array in `arrays` (None entries are skipped) must broadcast to the shape of `reference`
  (`[..., K]`), or have exactly that shape when `exact`. Shapes are static, so this check also
  runs under `jit`.
  """
  target = tuple(jnp.shape(reference))
  for name, value in arrays.items():
    if value is None:
      continue
    shape = tuple(jnp.shape(value))
    if exact:
      ok = shape == target
    else:
      try:
        ok = jnp.broadcast_shapes(shape, target) == target
      except ValueError:
        ok = False
    if not ok:
      fits = "equal" if exact else "broadcast to"
      raise ValueError(
          f"{fn_name}: {name} has shape {shape}, which does not {fits} the shape "
          f"{target} of {reference_name}."
      )


def check_pair_layout(fn_name: str, name: str, x) -> None:
  """Raises unless `x` is `[..., 2]`: slot 0 the chosen and slot 1 the rejected response."""
  shape = jnp.shape(x)
  if len(shape) < 1 or shape[-1] != 2:
    raise ValueError(
        f"{fn_name}: `{name}` must have shape [..., 2] (slot 0 chosen, slot 1 rejected), "
        f"got {shape}."
    )


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


# ------------------------------------------------------------------------------------------------
# Masks.


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

  Ties form no pair; `(i, j)` means item i is the better one.
  """
  valid = valid_mask(labels, where)
  labels = f32(labels)
  return (
      (labels[..., :, None] > labels[..., None, :])
      & valid[..., :, None]
      & valid[..., None, :]
  )


def list_mask(valid: Array) -> Array:
  """`[...]` mask of lists with at least one valid item (the denominator of list losses)."""
  return jnp.any(valid, axis=-1)


def length_normalized(x, lengths: Optional[Array] = None) -> Array:
  """`x / max(lengths, 1)` in float32 (a per-token average), or `x` as float32 without lengths."""
  x = f32(x)
  if lengths is None:
    return x
  return x / jnp.maximum(f32(lengths), 1.0)


# ------------------------------------------------------------------------------------------------
# Pairs: `[..., 2]` inputs ordered by their labels.


class Pairs(NamedTuple):
  """Each pair's validity, order and weight, from `order_pairs`."""

  valid: Array  # [...] bool: the pair exists (strict labels, both slots valid).
  swap: Array  # [...] bool: slot 1 is the chosen one.
  weight: Union[Array, float]  # [...] weight of the chosen item, or 1.


def order_pairs(fn_name: str, logps, labels, where, weights, **others) -> Pairs:
  """Checks the `[..., 2]` layout and the shapes; orders each pair by its labels.

  A pair exists iff its labels are strictly ordered and both slots are valid; the slot with the
  higher label is the chosen one; `labels=None` means `[1, 0]`; `weights` attach to the chosen
  item. Every array in `others` must broadcast to the shape of `logps`.
  """
  shape = jnp.shape(logps)
  if len(shape) < 1 or shape[-1] != 2:
    raise ValueError(
        f"{fn_name}: pairwise objectives take [..., 2] inputs (slot 0 chosen, slot 1 rejected); "
        f"got logps of shape {shape}. Use pair_to_list(chosen, rejected)."
    )
  check_shapes(fn_name, "logps", logps, labels=labels, where=where, weights=weights, **others)
  if labels is None:
    labels = jnp.asarray([1.0, 0.0], jnp.float32)
  labels = jnp.broadcast_to(as_float(labels), shape)
  pm = pair_mask(labels, where)  # [..., 2, 2]
  swap = pm[..., 1, 0]
  valid = pm[..., 0, 1] | swap
  weight = 1.0 if weights is None else chosen_rejected(
      jnp.broadcast_to(as_float(weights), shape), swap
  )[0]
  return Pairs(valid, swap, weight)


def chosen_rejected(x, swap) -> tuple[Array, Array]:
  """`(x_w, x_l)`, each `[...]`, from `x [..., 2]` ordered by the labels."""
  return jnp.where(swap, x[..., 1], x[..., 0]), jnp.where(swap, x[..., 0], x[..., 1])


def pair_valid(where: Optional[Array], shape) -> Array:
  """Validity `[...]` of `[..., 2]` pairs of shape `shape`: both slots valid under `where`."""
  if where is None:
    return jnp.ones(shape[:-1], bool)
  return jnp.all(jnp.broadcast_to(jnp.asarray(where, bool), shape), axis=-1)


# ------------------------------------------------------------------------------------------------
# Reductions.


def masked_mean(x: Array, mask: Array, axis=None) -> Array:
  """`Σ(mask·x) / max(Σ mask, 1)`: 0 with finite gradients when nothing is valid."""
  mask = jnp.broadcast_to(mask, jnp.shape(x))
  total = jnp.sum(jnp.where(mask, x, 0.0), axis=axis)
  count = jnp.sum(mask, axis=axis, dtype=jnp.float32)
  return total / jnp.maximum(count, 1.0)


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
  per-example values that obey the reduction contract of `reduce_loss`: entry i becomes
  `values_i · N / max(denominator, 1)` on the subset (N = number of valid entries) and 0
  elsewhere, so `reduce_fn=jnp.mean` gives the intended scalar, `None` gives values that sum to
  `N` times it, and `sum_and_count` gives `(N·it, N)`.
  """
  subset = subset & valid
  n_valid = jnp.sum(valid, dtype=jnp.float32)
  scale = n_valid / jnp.maximum(f32(denominator), 1.0)
  return jnp.where(subset, values * scale, 0.0)


def reduce_loss(values: Array, mask: Array, reduce_fn: ReduceFn) -> Array:
  """Reduces per-entry losses over the valid entries.

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


def reduce_pairs(loss, pairs: Pairs, reduce_fn: ReduceFn) -> Array:
  """`reduce_fn` of the weighted per-pair losses over the valid pairs (see `reduce_loss`)."""
  return reduce_loss(loss * pairs.weight, pairs.valid, reduce_fn)


# ------------------------------------------------------------------------------------------------
# Lists and ranks.


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


def descending_ranks(values: Array, valid: Array, *, tiebreak: Optional[Array] = None) -> Array:
  """1-based ranks `[..., K]` (int32) of the items sorted by `values` in descending order.

  Ties go to the smaller `tiebreak` value (if given: e.g. uniform noise for random tie-breaking),
  then to the earlier index; invalid items come after all valid ones, in index order. This is
  the rank of a stable sort (Rax `utils.ranks`), computed from `[..., K, K]` comparisons (no
  sort, no gather: for the list sizes of preference data, K <= a few dozen, it is the faster form
  on every backend).

  `rank_i = 1 + #{j : j is placed before i}`.

  Example:
    >>> import jax.numpy as jnp
    >>> descending_ranks(jnp.array([1.0, 3.0, 1.0]), jnp.array([True, True, True])).tolist()
    [2, 1, 3]
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


def competition_ranks(x: Array, valid: Array) -> Array:
  """`ν_i = 1 + #{valid j : x_j > x_i}`, shape `[..., K]` ("1224" ranking).

  Tied items share the best position: scores `[3, 1, 3]` give `[1, 3, 1]`. Equals
  `K + 1 − rank_max(x_i)` over the K valid items, with `rank_max` the ascending rank in which
  ties take the maximum rank.
  """
  greater = (x[..., None, :] > x[..., :, None]) & valid[..., None, :]
  return 1 + jnp.sum(greater, axis=-1)
