"""Calibration of predicted preference probabilities: uniform-bin sums and ECE."""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from alignment.arrays import check_shapes, f32, valid_mask

Array = jax.Array


class CalibrationBins(NamedTuple):
  """Per-bin sums `[num_bins]`: predicted probabilities, outcomes and counts (add with `add`)."""

  prob_sum: Array
  outcome_sum: Array
  count: Array


def calibration_bins(
    probs: Array, outcomes: Array, *, num_bins: int = 5, where: Optional[Array] = None
) -> CalibrationBins:
  """Uniform-bin sums for calibration error .

  Bin `b` holds `p ∈ [b/B, (b+1)/B)`, the last bin is closed (`p = 1` falls in it); values outside
  `[0, 1]` fall in the end bins.

  Args:
    probs: `[...]` predicted probabilities that the first item is preferred.
    outcomes: `[...]` observed outcomes in {0, 1}.
    num_bins: B, default 5.
    where: optional `[...]` validity.

  Returns:
    `CalibrationBins` of `[num_bins]` arrays, exactly additive across batches.
  """
  fn = "calibration_bins"
  check_shapes(fn, "probs", probs, exact=True, outcomes=outcomes)
  if not isinstance(num_bins, int) or num_bins < 1:
    raise ValueError(f"{fn}: num_bins must be a positive int, got {num_bins!r}.")
  probs = f32(probs)
  valid = valid_mask(probs, where)
  bins = jnp.clip(jnp.floor(probs * num_bins), 0, num_bins - 1).astype(jnp.int32)
  one_hot = (bins[..., None] == jnp.arange(num_bins)) & valid[..., None]
  axes = tuple(range(probs.ndim))

  def per_bin(x):
    return jnp.sum(jnp.where(one_hot, f32(x)[..., None], 0.0), axis=axes)

  return CalibrationBins(per_bin(probs), per_bin(outcomes), jnp.sum(one_hot, axis=axes,
                                                                     dtype=jnp.float32))


def calibration_errors(bins: CalibrationBins) -> dict[str, Array]:
  """ECE, average and maximum per-bin error from (accumulated) `CalibrationBins`.

  `ECE = Σ_b |Σ_{i∈b} p_i − Σ_{i∈b} y_i| / N`; the per-bin error is
  `|Σ_{i∈b} p_i − Σ_{i∈b} y_i| / n_b`, averaged / maximised over non-empty bins (as
  `dunzeng/MORE`'s `calibration_error`). Everything is 0 for an empty set.
  """
  gap = jnp.abs(bins.prob_sum - bins.outcome_sum)
  nonempty = bins.count > 0
  per_bin = jnp.where(nonempty, gap / jnp.maximum(bins.count, 1.0), 0.0)
  num_nonempty = jnp.sum(nonempty, dtype=jnp.float32)
  return {
      "ece": jnp.sum(gap) / jnp.maximum(jnp.sum(bins.count), 1.0),
      "average_bin_error": jnp.sum(per_bin) / jnp.maximum(num_nonempty, 1.0),
      "max_bin_error": jnp.max(per_bin),
  }


def ece(
    probs: Array, outcomes: Array, *, num_bins: int = 5, where: Optional[Array] = None
) -> dict[str, Array]:
  """Expected calibration error with uniform bins.

  `ECE = Σ_b |Σ_{i∈b} p_i − Σ_{i∈b} y_i| / N` over B uniform bins (default 5; bin b is
  `[b/B, (b+1)/B)`, the last bin closed), plus the average and maximum per-bin error. Evaluate
  both orders of each pair (or randomise the order) so that `p` is not always above 1/2.
  For exact accumulation use `calibration_bins`, `add`, then `calibration_errors`.

  Args:
    probs: `[...]` predicted probabilities that the first item is preferred.
    outcomes: `[...]` outcomes in {0, 1}.
    num_bins: B.
    where: optional `[...]` validity.

  Returns:
    `{"ece", "average_bin_error", "max_bin_error"}` float32 scalars.
  """
  return calibration_errors(calibration_bins(probs, outcomes, num_bins=num_bins, where=where))
