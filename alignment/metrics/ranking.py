"""Ranking metrics: the policy's ranking accuracy, its idealized optimum and flip thresholds, NDCG
and Kendall τ.

The ranking-accuracy metrics follow *Preference Learning Algorithms Do Not Learn Preference
Rankings* (Chen et al., 2024); NDCG follows Rax's `ndcg_metric`.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from alignment.arrays import (
    check_pair_layout, check_positive, check_range, check_shapes, competition_ranks,
    descending_ranks, f32, length_normalized, pair_mask, pair_valid, valid_mask)
from alignment.metrics.aggregation import SumCount, mean, sum_count

Array = jax.Array


def ranking_accuracy(
    logps: Array,
    labels: Array,
    *,
    lengths: Optional[Array] = None,
    where: Optional[Array] = None,
) -> SumCount:
  """Pairwise ranking accuracy of the policy's likelihoods.

  `R = mean over valid pairs 1[lp_i ≥ lp_j]` for every pair with `labels_i > labels_j`; with
  `lengths` the length-normalised `R̃` uses `a_i = lp_i / max(lengths_i, 1)`. No reference model
  is involved (unlike `rewards/accuracies`); a tie in likelihood counts as correct.

  Paper: *Preference Learning Algorithms Do Not Learn Preference Rankings* (Chen et al., 2024).

  Args:
    logps: `[..., K]` summed completion log-probs (K = 2 for a chosen/rejected pair).
    labels: `[..., K]` graded preferences, higher is better.
    lengths: optional `[..., K]` completion token counts (the length-normalised variant).
    where: optional `[..., K]` boolean validity of slots.

  Returns:
    `SumCount` over valid pairs.
  """
  check_shapes("ranking_accuracy", "logps", logps, exact=True, labels=labels, lengths=lengths)
  scores = length_normalized(logps, lengths)
  correct = scores[..., :, None] >= scores[..., None, :]
  return sum_count(correct, pair_mask(labels, valid_mask(scores, where)))


def ranking_accuracy_lists(
    logps: Array,
    labels: Array,
    *,
    lengths: Optional[Array] = None,
    where: Optional[Array] = None,
) -> SumCount:
  """Exact-match ranking accuracy of whole lists.

  The model's ranking is `ν_i = K + 1 − rank_max(score_i)`, where `rank_max` is the ascending
  rank with ties given the maximum rank (tied items share the best position, e.g. scores
  `[3, 1, 3]` give `ν = [1, 3, 1]`); the human ranking is the same function of the labels. A list
  is correct iff `ν = ν_human` on all its valid items; score = `lp`, or `a = lp / n` with
  `lengths`. K counts the valid items only.

  Paper: *Preference Learning Algorithms Do Not Learn Preference Rankings* (Chen et al., 2024).

  Args:
    logps: `[..., K]` summed completion log-probs.
    labels: `[..., K]` graded preferences, higher is better.
    lengths: optional `[..., K]` completion token counts (length-normalised scores).
    where: optional `[..., K]` boolean validity of slots.

  Returns:
    `SumCount` over lists with at least one valid item.
  """
  check_shapes("ranking_accuracy_lists", "logps", logps, exact=True, labels=labels, lengths=lengths)
  scores = length_normalized(logps, lengths)
  valid = valid_mask(scores, where)
  same = competition_ranks(scores, valid) == competition_ranks(f32(labels), valid)
  match = jnp.all(same | ~valid, axis=-1)
  return sum_count(match, jnp.any(valid, axis=-1))


# ---------------------------------------------------------------------------------------------
# Idealized ranking accuracy.


IDEALIZED_BETAS = (0.01, 0.1, 1.0, 5.0, 10.0)


def _ratio_class(log_ratio: Array, tie_tolerance: float) -> Array:
  """+1 / 0 / −1 for "first ranked higher / tied / second ranked higher".

  A pair is tied when `|ratio − 1| < tie_tolerance`, evaluated in log space as
  `|expm1(log_ratio)| < tie_tolerance`; with tolerance 0 only an exact tie is tied.
  """
  tied = jnp.abs(jnp.expm1(log_ratio)) < tie_tolerance
  return jnp.where(tied, 0.0, jnp.sign(log_ratio))


def idealized_ranking_accuracy(
    ref_logps: Array,
    alpha: Array,
    *,
    betas: Sequence[float] = IDEALIZED_BETAS,
    lengths: Optional[Array] = None,
    where: Optional[Array] = None,
    epsilon: float = 1e-3,
    tie_tolerance: float = 0.0,
) -> SumCount:
  """Ranking accuracy of the exact RLHF/DPO optimum per β.

  Under Bradley–Terry with a fraction `α` of raters preferring `y_w`, the optimum satisfies
  `π*(y_w)/π*(y_l) = [π_ref(y_w)/π_ref(y_l)]·(α/(1−α))^{1/β}`, computed in log space:

    `z = (lr_w − lr_l) + (1/β)·(log α − log(1 − α))`,  α clipped to `[ε, 1 − ε]`,

  and `R* = mean 1[class(z) = class(log α − log(1 − α))]`, where `class` is +1 / 0 / −1 for
  "y_w first / tie / y_l first" and a ratio `e^x` is a tie iff `|e^x − 1| < tie_tolerance` (the
  reference code uses 0.05). With the default tolerance 0 and `α > 1/2` this is exactly
  `R* = mean 1[z > 0]`. With `lengths`, the length-normalised variant uses `lr / max(n, 1)` (the
  reference code's per-token perplexity ratio). Report `summarize_over_betas` of the result.

  Paper: *Preference Learning Algorithms Do Not Learn Preference Rankings* (Chen et al., 2024).
  Code: `angie-chen55/pref-learning-ranking-acc` (whose unnormalised branch divides
  log-probabilities; this uses the log-space formula instead).

  Args:
    ref_logps: `[..., 2]` reference log-probs, slot 0 `y_w`, slot 1 `y_l`.
    alpha: `[...]` (or broadcastable) fraction of raters preferring `y_w`.
    betas: the β values; default `(0.01, 0.1, 1, 5, 10)`.
    lengths: optional `[..., 2]` completion token counts.
    where: optional `[..., 2]` slot validity (a pair is valid iff both slots are).
    epsilon: α clipping, default 1e−3.
    tie_tolerance: in `[0, 1)`, default 0 (no tolerance).

  Returns:
    `SumCount` over valid pairs with `sum` and `count` of shape `[len(betas)]`.
  """
  fn = "idealized_ranking_accuracy"
  check_pair_layout(fn, "ref_logps", ref_logps)
  check_shapes(fn, "ref_logps", ref_logps, exact=True, lengths=lengths)
  check_range("epsilon", epsilon, low=0.0, high=0.5, low_inclusive=False, high_inclusive=False,
              where=fn)
  check_range("tie_tolerance", tie_tolerance, low=0.0, high=1.0, high_inclusive=False, where=fn)
  if jnp.ndim(betas) != 1 or len(betas) == 0:
    raise ValueError(f"{fn}: `betas` must be a non-empty 1-D sequence, got {betas!r}.")
  for b in betas:
    check_positive("every beta in betas", b, where=fn)
  betas = f32(jnp.asarray(betas))
  ref = length_normalized(ref_logps, lengths)
  alpha = jnp.clip(f32(alpha), epsilon, 1.0 - epsilon)
  log_odds = jnp.log(alpha) - jnp.log1p(-alpha)
  log_odds = jnp.broadcast_to(log_odds, ref.shape[:-1])
  z = (ref[..., 0] - ref[..., 1])[..., None] + log_odds[..., None] / betas
  correct = _ratio_class(z, tie_tolerance) == _ratio_class(log_odds, tie_tolerance)[..., None]
  valid = jnp.broadcast_to(pair_valid(where, ref.shape)[..., None], correct.shape)
  leading = tuple(range(correct.ndim - 1))
  return sum_count(correct, valid, axis=leading)


def summarize_over_betas(accuracy: SumCount) -> dict[str, Array]:
  """`{"min", "median", "max"}` over β of the per-β means of `idealized_ranking_accuracy`.

  Apply after accumulation: min/median/max of means are not themselves sums.
  """
  means = mean(accuracy)
  return {"min": jnp.min(means), "median": jnp.median(means), "max": jnp.max(means)}


# ---------------------------------------------------------------------------------------------
# Hardness thresholds.


def dpo_flip_threshold(ref_logps: Array, *, beta: float = 0.1) -> Array:
  """DPO loss below which a pair is correctly ranked (Chen et al., 2024, Thm 4.1).

  With `c = lr_l − lr_w`: `lp_w ≥ lp_l` **iff** `L_DPO ≤ −logσ(β·c) = softplus(β·(lr_w − lr_l))`.
  Pairs whose reference already prefers `y_l` by a wide margin need a very small loss before the
  policy ranks them correctly.

  Paper: *Preference Learning Algorithms Do Not Learn Preference Rankings* (Chen et al., 2024).

  Args:
    ref_logps: `[..., 2]` reference log-probs, slot 0 chosen.
    beta: DPO's β (default 0.1).

  Returns:
    `[...]` per-pair thresholds (reduce by concatenation; see `below_flip_threshold`).
  """
  fn = "dpo_flip_threshold"
  check_pair_layout(fn, "ref_logps", ref_logps)
  check_positive("beta", beta, where=fn)
  ref = f32(ref_logps)
  return jax.nn.softplus(beta * (ref[..., 0] - ref[..., 1]))


def ipo_flip_threshold(ref_logps: Array, *, beta: float = 0.1) -> Array:
  """IPO (`ipo_sum`) loss below which a pair is guaranteed correctly ranked.

  With `c' = lr_w − lr_l` and `L_IPO = (h − 1/(2β))²`: if `c' ≥ −1/(2β)`, then
  `L_IPO ≤ (c' + 1/(2β))²` guarantees `lp_w ≥ lp_l`; if `c' < −1/(2β)`, even zero loss implies a
  wrong ranking, and the threshold is −∞ (no loss value guarantees a correct ranking).

  Paper: *Preference Learning Algorithms Do Not Learn Preference Rankings* (Chen et al., 2024).

  Args:
    ref_logps: `[..., 2]` reference log-probs, slot 0 chosen.
    beta: IPO's β (τ of the IPO paper, default 0.1).

  Returns:
    `[...]` per-pair thresholds (−∞ where none exists).
  """
  fn = "ipo_flip_threshold"
  check_pair_layout(fn, "ref_logps", ref_logps)
  check_positive("beta", beta, where=fn)
  ref = f32(ref_logps)
  shifted = ref[..., 0] - ref[..., 1] + 1.0 / (2.0 * beta)
  return jnp.where(shifted >= 0.0, jnp.square(shifted), -jnp.inf)


def below_flip_threshold(
    losses: Array, thresholds: Array, *, where: Optional[Array] = None
) -> SumCount:
  """Fraction of pairs whose loss is at most their flip threshold: `mean 1[ℓ ≤ threshold]`.

  Args:
    losses: `[...]` unreduced per-pair losses (`reduce_fn=None`).
    thresholds: `[...]` from `dpo_flip_threshold` or `ipo_flip_threshold`.
    where: optional `[...]` validity of pairs.

  Returns:
    `SumCount` over valid pairs.
  """
  check_shapes("below_flip_threshold", "losses", losses, exact=True, thresholds=thresholds)
  return sum_count(f32(losses) <= f32(thresholds), where)


# ---------------------------------------------------------------------------------------------
# NDCG and Kendall τ.


def ndcg(
    scores: Array,
    labels: Array,
    *,
    topn: Optional[int] = None,
    where: Optional[Array] = None,
) -> SumCount:
  """NDCG@k with Rax `ndcg_metric` semantics.

  `DCG = Σ_{i valid, τ_i ≤ k} g_i·d(τ_i)` with gain `g = 2^label − 1`, discount
  `d(r) = 1/log2(1 + r)` and 1-based ranks `τ` by descending score (ties broken by list index,
  invalid items ranked last); NDCG = DCG / ideal DCG, the ideal ranking sorting by gain, and an
  ideal DCG of 0 is replaced by 1 (such a list scores 0). Rax further treats −∞ scores as not
  retrieved; here exclude items with `where` instead.

  Args:
    scores: `[..., K]` model scores.
    labels: `[..., K]` graded relevance labels.
    topn: the cutoff k (None: no cutoff).
    where: optional `[..., K]` slot validity.

  Returns:
    `SumCount` over lists with at least one valid item (Rax's mean).
  """
  fn = "ndcg"
  check_shapes(fn, "scores", scores, exact=True, labels=labels)
  if topn is not None and (not isinstance(topn, int) or topn < 1):
    raise ValueError(f"{fn}: topn must be a positive int or None, got {topn!r}.")
  scores = f32(scores)
  valid = valid_mask(scores, where)
  gains = jnp.exp2(f32(labels)) - 1.0

  def dcg(ranking_scores):
    ranks = descending_ranks(ranking_scores, valid)
    keep = valid if topn is None else valid & (ranks <= topn)
    return jnp.sum(jnp.where(keep, gains / jnp.log2(1.0 + ranks), 0.0), axis=-1)

  ideal = dcg(gains)
  return sum_count(dcg(scores) / jnp.where(ideal == 0.0, 1.0, ideal), jnp.any(valid, axis=-1))


def kendall_tau(
    scores: Array, labels: Array, *, where: Optional[Array] = None
) -> dict[str, SumCount]:
  """Kendall τ-b per list between model scores and labels.

  Over the valid items of a list, with `n_c`/`n_d` the concordant/discordant pairs and
  `t_s`/`t_l` the pairs *not* tied in scores/labels:
  `τ_b = (n_c − n_d) / sqrt(t_s · t_l)`. A list where τ_b is undefined (fewer than two valid
  items, or all scores tied, or all labels tied: no comparable pair) gets τ = 0 and is still
  counted in the mean; the number of such lists is reported under `"undefined"`.

  Args:
    scores: `[..., K]` model scores.
    labels: `[..., K]` labels.
    where: optional `[..., K]` slot validity.

  Returns:
    `{"tau": SumCount, "undefined": SumCount}`, both over lists with at least one valid item
    (`mean(...)["undefined"]` is the fraction of lists with τ undefined).
  """
  check_shapes("kendall_tau", "scores", scores, exact=True, labels=labels)
  scores = f32(scores)
  valid = valid_mask(scores, where)
  both = valid[..., :, None] & valid[..., None, :]
  # Each unordered pair appears twice in the [K, K] matrices; the factors 2 cancel.
  sign_s = jnp.where(both, jnp.sign(scores[..., :, None] - scores[..., None, :]), 0.0)
  labels = f32(labels)
  sign_l = jnp.where(both, jnp.sign(labels[..., :, None] - labels[..., None, :]), 0.0)
  concordance = jnp.sum(sign_s * sign_l, axis=(-2, -1))
  denominator = jnp.sqrt(
      jnp.sum(jnp.abs(sign_s), axis=(-2, -1)) * jnp.sum(jnp.abs(sign_l), axis=(-2, -1))
  )
  defined = denominator > 0.0
  tau = jnp.where(defined, concordance / jnp.where(defined, denominator, 1.0), 0.0)
  lists = jnp.any(valid, axis=-1)
  return {"tau": sum_count(tau, lists), "undefined": sum_count(~defined, lists)}
