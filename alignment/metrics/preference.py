"""Training metrics of preference objectives: implicit rewards and the undesirable region.

Pairs and lists follow `docs/conventions.md`: the last axis is the list of K responses, pairs
use K = 2 with slot 0 the chosen response, labels are higher-is-better and ties form no pair.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from alignment.arrays import (
    check_pair_layout, check_positive, check_shapes, f32, length_normalized, pair_mask,
    pair_valid, valid_mask)
from alignment.metrics.aggregation import SumCount, sum_count

Array = jax.Array


def reward_metrics(
    logps: Array,
    ref_logps: Optional[Array],
    labels: Array,
    *,
    beta: float = 0.1,
    lengths: Optional[Array] = None,
    where: Optional[Array] = None,
) -> dict[str, SumCount]:
  """Implicit-reward training metrics under TRL's names.

  With implicit rewards `r_i = β·(lp_i − lr_i)` (reference-free: `r_i = β·lp_i`; with `lengths`:
  divided by `n_i = max(lengths_i, 1)`, i.e. `β·a_i` as SimPO logs it):

  - `rewards/accuracies = mean over pairs 1[r_i > r_j]` (strict: ties count as wrong),
  - `rewards/margins    = mean over pairs (r_i − r_j)`,
  - `rewards/chosen`, `rewards/rejected` = mean `r` of the chosen / rejected item,
  - `logps/chosen`, `logps/rejected`     = mean `lp` of the chosen / rejected item.

  For pairs (K = 2, labels `[1, 0]`) these are exactly TRL's DPO metrics. For lists they are
  generalised: accuracies and margins run over every valid pair `(i, j)` with
  `labels_i > labels_j` (`docs/conventions.md`); "chosen" is the best-labelled valid item and
  "rejected" the worst-labelled one (the first in list order among equal labels), counted only
  for lists that contain at least one valid pair. These are implicit-reward accuracies, not
  ranking accuracy (`ranking_accuracy`). TRL logs raw log-ratios even when a method uses
  length-normalised or f-divergence scores: pass `lengths` only for reference-free methods.

  Args:
    logps: `[..., K]` summed completion log-probs under the policy.
    ref_logps: `[..., K]` the same under the reference, or None (reference-free).
    labels: `[..., K]` graded preferences, higher is better.
    beta: the objective's β (TRL logs `β·ρ`).
    lengths: optional `[..., K]` completion token counts (length-normalised rewards).
    where: optional `[..., K]` boolean validity of slots.

  Returns:
    A dict of `SumCount`s (reducible by `add`; `mean` gives the metrics): accuracies and margins
    count pairs, the chosen/rejected entries count lists.
  """
  fn = "reward_metrics"
  check_shapes(fn, "logps", logps, exact=True, ref_logps=ref_logps, labels=labels, lengths=lengths)
  check_positive("beta", beta, where=fn)
  logps = f32(logps)
  log_ratio = logps if ref_logps is None else logps - f32(ref_logps)
  rewards = beta * length_normalized(log_ratio, lengths)
  valid = valid_mask(logps, where)
  pairs = pair_mask(labels, valid)
  margins = rewards[..., :, None] - rewards[..., None, :]

  labels = f32(labels)
  best = jnp.argmax(jnp.where(valid, labels, -jnp.inf), axis=-1, keepdims=True)
  worst = jnp.argmin(jnp.where(valid, labels, jnp.inf), axis=-1, keepdims=True)
  has_pair = jnp.any(pairs, axis=(-2, -1))

  def at(x, index):
    return jnp.take_along_axis(x, index, axis=-1)[..., 0]

  return {
      "rewards/chosen": sum_count(at(rewards, best), has_pair),
      "rewards/rejected": sum_count(at(rewards, worst), has_pair),
      "rewards/accuracies": sum_count(margins > 0, pairs),
      "rewards/margins": sum_count(margins, pairs),
      "logps/chosen": sum_count(at(logps, best), has_pair),
      "logps/rejected": sum_count(at(logps, worst), has_pair),
  }


# ---------------------------------------------------------------------------------------------
# Undesirable region.


def undesirable_region_fraction(
    logps: Array,
    ref_logps: Array,
    lengths: Optional[Array] = None,
    *,
    where: Optional[Array] = None,
) -> SumCount:
  """Fraction of pairs in the undesirable region (paper Def. 3.3).

  With length-normalised margins `δ_π = a_w − a_l` and `δ_ref = a^ref_w − a^ref_l`
  (`a = lp / max(n, 1)`): `mean 1[δ_π < 0 ∧ δ_π > δ_ref]`, pairs that improved on the reference
  yet still prefer the rejected response. Cheap; log it for every pairwise method. Without
  `lengths` the raw summed log-probs are used.

  Paper: *Conditional Equivalence of DPO and RLHF* (constrained preference optimisation).
  Code: `visitworld123/CPO`.

  Args:
    logps: `[..., 2]` policy log-probs, slot 0 chosen.
    ref_logps: `[..., 2]` reference log-probs.
    lengths: optional `[..., 2]` completion token counts.
    where: optional `[..., 2]` slot validity (a pair is valid iff both slots are).

  Returns:
    `SumCount` over valid pairs.
  """
  fn = "undesirable_region_fraction"
  check_pair_layout(fn, "logps", logps)
  check_shapes(fn, "logps", logps, exact=True, ref_logps=ref_logps, lengths=lengths)
  policy = length_normalized(logps, lengths)
  ref = length_normalized(ref_logps, lengths)
  delta_policy = policy[..., 0] - policy[..., 1]
  delta_ref = ref[..., 0] - ref[..., 1]
  inside = (delta_policy < 0.0) & (delta_policy > delta_ref)
  return sum_count(inside, pair_valid(where, policy.shape))
