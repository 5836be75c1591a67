"""Lambda weights for pairwise ranking losses (Rax semantics; LiPO-λ).

A lambda weight function has the signature
`fn(scores, labels, *, where=None, weights=None, **options) -> [..., K, K]`: entry `[..., i, j]`
weights the pair "item i is better than item j". Weights are 0 off the valid pairs (both items
valid, `labels_i > labels_j` strictly) and are computed under stop-gradient. Ranks `τ` are the
1-based positions of the items sorted by the current scores, descending; ties go to the earlier
index and invalid items come after all valid ones. Pass options with
`functools.partial(dcg_lambdaweight, topn=4)`.

Metric conventions: gain `g(y) = 2^y − 1`, discount `d(r) = 1/log2(1 + r)`; NDCG divides
by the ideal DCG (items ordered by gain), an ideal DCG of 0 counting as 1.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from alignment import arrays

Array = jax.Array


def _log2_discount(rank: Array) -> Array:
  """`d(r) = 1 / log2(1 + r)` (Rax `default_discount_fn`)."""
  return 1.0 / jnp.log2(1.0 + rank)


def _ln_discount(rank: Array) -> Array:
  """`1 / D(r)` with the LiPO discount `D(r) = ln(1 + r)`."""
  return 1.0 / jnp.log1p(rank)


def _topn_discounts(ranks: Array, discount_fn: Callable[[Array], Array],
                    topn: Optional[int]) -> Array:
  """`d(τ)`, set to 0 beyond the cutoff `topn`."""
  discounts = discount_fn(ranks.astype(jnp.float32))
  return discounts if topn is None else jnp.where(ranks <= topn, discounts, 0.0)


def _ideal_dcg(gains: Array, valid: Array, topn: Optional[int]) -> Array:
  """`[..., 1]` DCG of the valid items ordered by gain, with 0 replaced by 1."""
  ideal_ranks = arrays.descending_ranks(gains, valid)
  dcg = jnp.sum(jnp.where(valid, gains * _topn_discounts(ideal_ranks, _log2_discount, topn), 0.0),
                axis=-1, keepdims=True)
  return jnp.where(dcg == 0.0, 1.0, dcg)


def _gain_weighted_lambdaweight(
    fn_name: str,
    rank_pair_discount_fn: Callable[[Array], Array],
    scores: Array,
    labels: Array,
    *,
    where: Optional[Array],
    weights: Optional[Array],
    normalize: bool,
    topn: Optional[int],
    scale: float,
) -> Array:
  """`scale·|g_i − g_j|·D_ij` on valid pairs, `D = rank_pair_discount_fn(τ)` `[..., K, K]`.

  `g = (2^y − 1)·w`, divided by the ideal DCG when `normalize`. Shared by the DCG-type weights.
  """
  scores, labels, valid, weights = jax.lax.stop_gradient(
      arrays.prepare_list(fn_name, scores, labels, where, weights))
  ranks = arrays.descending_ranks(scores, valid)
  gains = jnp.exp2(labels) - 1.0
  if weights is not None:
    gains = gains * weights
  if normalize:
    gains = gains / _ideal_dcg(gains, valid, topn)
  lambdas = scale * jnp.abs(arrays.pairwise_differences(gains)) * rank_pair_discount_fn(ranks)
  return jax.lax.stop_gradient(jnp.where(arrays.pair_mask(labels, valid), lambdas, 0.0))


def labeldiff_lambdaweight(
    scores: Array,
    labels: Array,
    *,
    where: Optional[Array] = None,
    weights: Optional[Array] = None,
) -> Array:
  """Absolute label difference `λ_ij = |y_i − y_j|` on valid pairs (Rax `labeldiff`).

  Args:
    scores: `[..., K]` (unused: the weight does not depend on the ranking).
    labels: `[..., K]` graded relevance.
    where: optional `[..., K]` bool, valid items.
    weights: optional `[..., K]` (unused, as in Rax).

  Returns:
    `[..., K, K]` weights, 0 off the valid pairs.
  """
  del weights  # Item weights multiply the pair loss itself, not this weight (as in Rax).
  _, labels, valid, _ = jax.lax.stop_gradient(
      arrays.prepare_list("labeldiff_lambdaweight", scores, labels, where, None))
  lambdas = jnp.abs(arrays.pairwise_differences(labels))
  return jnp.where(arrays.pair_mask(labels, valid), lambdas, 0.0)


def dcg_lambdaweight(
    scores: Array,
    labels: Array,
    *,
    where: Optional[Array] = None,
    weights: Optional[Array] = None,
    topn: Optional[int] = None,
    normalize: bool = False,
) -> Array:
  r"""DCG lambda weights (LambdaRank), Rax form including the list-size factor K.

  `λ_ij = K·|g_i − g_j|·|d(τ_i) − d(τ_j)|`, `g = (2^y − 1)·w`, `d(r) = 1/log2(1 + r)`, τ the
  ranks by current scores, `K = scores.shape[-1]` (the padded list size, as in Rax).
  Paper: *Learning to Rank with Nonsmooth Cost Functions* (Burges et al., NeurIPS 2006).
  `topn=n` sets `d(τ) = 0` for `τ > n` before differencing; `normalize=True`
  divides the gains by the ideal DCG (same `topn`; 0 -> 1), giving NDCG lambda weights.
  Relation to LiPO: `dcg_lambdaweight = K·ln 2·lipo_lambdaweight`.

  Args:
    scores: `[..., K]` current scores (ranks only; no gradient flows).
    labels: `[..., K]` graded relevance.
    where: optional `[..., K]` bool, valid items.
    weights: optional `[..., K]` item weights, multiplying the gains.
    topn: optional rank cutoff.
    normalize: NDCG instead of DCG.

  Returns:
    `[..., K, K]` stop-gradient weights, 0 off the valid pairs.
  """
  def pair_discount(ranks: Array) -> Array:
    return jnp.abs(arrays.pairwise_differences(_topn_discounts(ranks, _log2_discount, topn)))

  return _gain_weighted_lambdaweight(
      "dcg_lambdaweight", pair_discount, scores, labels, where=where, weights=weights,
      normalize=normalize, topn=topn, scale=float(jnp.shape(scores)[-1]),
  )


def dcg2_lambdaweight(
    scores: Array,
    labels: Array,
    *,
    where: Optional[Array] = None,
    weights: Optional[Array] = None,
    topn: Optional[int] = None,
    normalize: bool = False,
    light_discount: bool = False,
) -> Array:
  r"""LambdaLoss "NDCG-Loss2" lambda weights (Rax `dcg2_lambdaweight`).

  With `δ_ij = |τ_i − τ_j|`: `λ_ij = K·|g_i − g_j|·|d(δ_ij) − d(δ_ij + 1)|` (0 when `δ_ij = 0`);
  `light_discount=True` uses `|d(δ_ij)|`; with `topn=n` the weight is multiplied by
  `1/(1 − d(max(τ_i, τ_j)))` when `max(τ_i, τ_j) > n` (*On Optimizing Top-K Metrics for Neural
  Ranking Models*, Jagerman et al., 2022). Paper: *The LambdaLoss Framework for Ranking Metric
  Optimization* (Wang et al., CIKM 2018). Gains, `normalize` and K as in `dcg_lambdaweight`.

  Returns:
    `[..., K, K]` stop-gradient weights, 0 off the valid pairs.
  """
  def pair_discount(ranks: Array) -> Array:
    ranks = ranks.astype(jnp.float32)
    gap = jnp.abs(arrays.pairwise_differences(ranks))
    safe_gap = jnp.maximum(gap, 1.0)  # d(0) = 1/log2(1) is infinite; such pairs get 0 below.
    if light_discount:
      discounts = _log2_discount(safe_gap)
    else:
      discounts = jnp.abs(_log2_discount(safe_gap) - _log2_discount(safe_gap + 1.0))
    discounts = jnp.where(gap > 0.0, discounts, 0.0)
    if topn is not None:
      worst = jnp.maximum(ranks[..., :, None], ranks[..., None, :])
      beyond = worst > topn
      safe_worst = jnp.where(beyond, worst, 2.0)  # d(1) = 1 would divide by 0.
      discounts = discounts * jnp.where(beyond, 1.0 / (1.0 - _log2_discount(safe_worst)), 1.0)
    return discounts

  return _gain_weighted_lambdaweight(
      "dcg2_lambdaweight", pair_discount, scores, labels, where=where, weights=weights,
      normalize=normalize, topn=topn, scale=float(jnp.shape(scores)[-1]),
  )


def lipo_lambdaweight(
    scores: Array,
    labels: Array,
    *,
    where: Optional[Array] = None,
    weights: Optional[Array] = None,
    rax_scaled: bool = False,
) -> Array:
  r"""LiPO-λ lambda weights, paper-exact.

  `Δ_ij = |G_i − G_j|·|1/D(τ_i) − 1/D(τ_j)|`, `G_i = 2^{ψ_i}`, `D(τ) = ln(1 + τ)` (natural log),
  τ the 1-based rank of each valid item by the current scores (ties: earlier index first;
  invalid items last). The gains are computed as `2^ψ − 1` (the −1 cancels in the difference),
  multiplied by the item `weights` if given. Paper: *LiPO: Listwise Preference Optimization
  through Learning-to-Rank* (Liu, Qin et al., 2024). `rax_scaled=True` returns Rax's
  `dcg_lambdaweight`, which equals `K·ln 2·Δ` exactly (K = `scores.shape[-1]`, padded slots
  included). With K = 2, labels `[1, 0]` the single pair weighs `|2^1 − 2^0|·|1/ln 2 − 1/ln 3|`
  ≈ 0.532456, whichever item ranks first (`docs/conventions.md`).

  Args:
    scores: `[..., K]` current scores (ranks only; invariant to β > 0).
    labels: `[..., K]` graded labels ψ.
    where: optional `[..., K]` bool, valid items.
    weights: optional `[..., K]` item weights, multiplying the gains.
    rax_scaled: return `K·ln 2·Δ` (Rax's DCG lambda weights) instead of Δ.

  Returns:
    `[..., K, K]` stop-gradient weights, 0 off the valid pairs.
  """
  if rax_scaled:
    return dcg_lambdaweight(scores, labels, where=where, weights=weights)

  def pair_discount(ranks: Array) -> Array:
    return jnp.abs(arrays.pairwise_differences(_ln_discount(ranks.astype(jnp.float32))))

  return _gain_weighted_lambdaweight(
      "lipo_lambdaweight", pair_discount, scores, labels, where=where, weights=weights,
      normalize=False, topn=None, scale=1.0,
  )
