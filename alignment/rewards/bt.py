"""Bradley–Terry reward-model losses.

Rewards `r [..., K]` of K responses to one prompt (last axis = the list, leading axes = batch),
graded `labels [..., K]` (higher is better, ties form no pair) and an optional `where` mask,
exactly as the preference objectives of `alignment.losses`. The pair and list logic is that of
`alignment.losses.ranking` (Rax semantics): these functions only fix the reward-model
parametrisation (margin, temperature, MORE's padding label).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from alignment import arrays
from alignment.losses import ranking

Array = jax.Array


def margin_logistic(d: Array, *, margin=0.0, temperature=1.0) -> Array:
  """`−logσ((d − m)/τ) = softplus(−(d − m)/τ)`: the Bradley–Terry NLL of a score difference d."""
  return jax.nn.softplus(-(d - margin) / temperature)


def bt_pairwise(
    rewards: Array,
    labels: Optional[Array] = None,
    *,
    margin=0.0,
    temperature: float = 1.0,
    where: Optional[Array] = None,
    weights: Optional[Array] = None,
    reduce_fn: arrays.ReduceFn = jnp.mean,
) -> Array:
  r"""Bradley–Terry pairwise reward-model loss.

  `ℓ_ij = −logσ((r_i − r_j − m)/τ)` on every valid pair `labels_i > labels_j`; `m = 0`,
  `τ = 1` by default (some reward-model code uses `τ = 0.1`; Llama 2 uses a rating-dependent
  margin m). With K = 2 and `labels=None` (= `[1, 0]`: slot 0 chosen) this is the usual
  `−logσ(r_w − r_l − m)`. Model: *Rank Analysis of Incomplete Block Designs: I. The Method of
  Paired Comparisons* (Bradley & Terry, 1952); reward-model use: *Training language models to
  follow instructions with human feedback* (Ouyang et al., 2022). Reductions as
  `ranking.pairwise_logistic_loss` (mean over valid pairs).

  Args:
    rewards: `[..., K]` scalar rewards.
    labels: `[..., K]` graded preferences, or None for the pair layout `[1, 0]` (K = 2).
    margin: scalar, or `[...]` one margin per list (applied to all its pairs).
    temperature: τ > 0.
    where: optional `[..., K]` bool, valid slots.
    weights: optional `[..., K]` item weights (the better item's weight multiplies the pair).
    reduce_fn: `jnp.mean` (over valid pairs), `jnp.sum`, `None` (`[..., K, K]` pair losses, 0 off
      the valid pairs) or `sum_and_count`.

  >>> print(bt_pairwise(jnp.array([1., 0.])))  # softplus(-1)
  0.3132...
  """
  arrays.check_positive("temperature", temperature, where="bt_pairwise")
  rewards = arrays.f32(rewards)
  if rewards.ndim < 1:
    raise ValueError("bt_pairwise: rewards must have a list axis [..., K], got a scalar.")
  if labels is None:
    if rewards.shape[-1] != 2:
      raise ValueError(
          f"bt_pairwise: labels=None means the pair layout [..., 2] (slot 0 chosen); got rewards "
          f"of shape {rewards.shape}. Pass labels for lists."
      )
    labels = jnp.asarray([1.0, 0.0], jnp.float32)
  margin = arrays.f32(margin)
  if margin.ndim > 0:
    arrays.check_shapes("bt_pairwise", "rewards[..., 0]", rewards[..., 0], margin=margin)
    margin = margin[..., None, None]
  return ranking.pairwise_loss(
      "bt_pairwise",
      lambda d: margin_logistic(d, margin=margin, temperature=temperature),
      rewards, labels, where=where, weights=weights, lambdaweight_fn=None, reduce_fn=reduce_fn,
  )


def bt_listwise(
    rewards: Array,
    labels: Array,
    *,
    key: Optional[Array] = None,
    where: Optional[Array] = None,
    weights: Optional[Array] = None,
    reduce_fn: arrays.ReduceFn = jnp.mean,
) -> Array:
  r"""Plackett–Luce reward-model loss: ListMLE on rewards.

  `ℓ = −Σ_r [r_{π(r)} − log Σ_{r' ≥ r} exp(r_{π(r')})]`, π the label order (stable for ties unless
  `key` breaks them at random, as `losses.ranking.listmle_loss`). Model: *The Analysis of
  Permutations* (Plackett, 1975); loss: *Listwise Approach to Learning to Rank: Theory and
  Algorithm* (Xia et al., ICML 2008). With K = 2 and labels `[1, 0]` it equals `bt_pairwise`. Mean
  over lists with a valid item; `reduce_fn=None` gives `[...]`. Arguments as `ranking.listmle_loss`.

  >>> print(bt_listwise(jnp.array([0., 0., 0.]), jnp.array([2., 1., 0.])))  # log 3 + log 2
  1.7917...
  """
  return ranking.listmle_loss(rewards, labels, key=key, where=where, weights=weights,
                              reduce_fn=reduce_fn)


def bt_all_pairs(
    rewards: Array,
    labels: Array,
    *,
    padding_label: float = -1.0,
    where: Optional[Array] = None,
    reduce_fn: arrays.ReduceFn = jnp.mean,
) -> Array:
  r"""MORE's all-pairs ranking loss (`dunzeng/MORE`, `ranking_loss`).

  `L = mean over ordered pairs (i, j) with ψ_i ≠ ψ_j of −logσ((r_j − r_i)·sign(ψ_j − ψ_i))`,
  slots whose label equals `padding_label` (−1) excluded. Each unordered pair appears twice with
  the same value, so this is the mean over unordered pairs, i.e. `bt_pairwise` with the padding
  slots masked. Paper: *On Diversified Preferences of Large Language Model Alignment* (Zeng et
  al.). Labels are per-slot scores ψ `[..., K]`; `reduce_fn` as `bt_pairwise`.

  >>> print(bt_all_pairs(jnp.array([1., 0., 5.]), jnp.array([1., 0., -1.])))  # softplus(-1)
  0.3132...
  """
  arrays.check_shapes("bt_all_pairs", "rewards", rewards, labels=labels, where=where)
  valid = arrays.valid_mask(rewards, where) & (jnp.broadcast_to(
      arrays.f32(labels), jnp.shape(rewards)) != padding_label)
  return bt_pairwise(rewards, labels, where=valid, reduce_fn=reduce_fn)
