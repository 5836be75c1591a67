"""Preference, ranking, calibration and KL metrics (ALGORITHMS.md §8 and §2.5).

Pure JAX functions over float32 arrays with boolean `where` masks. Every metric is exactly
reducible across micro-batches, devices and hosts, and each docstring says how:

- most return a `SumCount` (a `(sum, count)` named tuple): add them with `add` and take
  `mean` at the end; the mean of the accumulated pair equals the metric of the whole set;
- per-example scores (`ches`, `ln_ches`, `dpo_flip_threshold`) are reduced by concatenation or
  with `sum_count`;
- `calibration_bins` returns per-bin sums (added with `add`), which `calibration_errors` turns into
  ECE; `win_rate` needs all outcomes at once (its interval is not a sum).

Array conventions follow ALGORITHMS.md §0.1: the last axis is the list of K responses, pairs use
K = 2 with slot 0 the chosen and slot 1 the rejected response, labels are higher-is-better and
ties form no pair, `where[..., i]` marks valid slots.

Example:
  >>> import jax.numpy as jnp
  >>> from alignment import metrics
  >>> logps = jnp.array([[-1.0, -2.0], [-3.0, -1.0]])
  >>> labels = jnp.array([[1.0, 0.0], [1.0, 0.0]])
  >>> acc = metrics.add(metrics.ranking_accuracy(logps[:1], labels[:1]),
  ...                   metrics.ranking_accuracy(logps[1:], labels[1:]))
  >>> float(metrics.mean(acc))
  0.5
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

from alignment.losses._utils import check_positive, check_range, f32, pair_mask, valid_mask

Array = jax.Array

# ---------------------------------------------------------------------------------------------
# (sum, count) accumulation.


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


# ---------------------------------------------------------------------------------------------
# Private helpers: shape checks, scores, ranks.


def _check_same_shape(fn: str, reference_name: str, reference, **others) -> None:
  """Raises a ValueError naming `fn` unless every array in `others` has `reference`'s shape."""
  expected = jnp.shape(reference)
  for name, x in others.items():
    if x is not None and jnp.shape(x) != expected:
      raise ValueError(
          f"{fn}: `{name}` has shape {jnp.shape(x)}, expected {expected} "
          f"(the shape of `{reference_name}`)."
      )


def _check_pair_layout(fn: str, name: str, x) -> None:
  """Pair metrics take `[..., 2]` arrays: slot 0 chosen, slot 1 rejected."""
  shape = jnp.shape(x)
  if len(shape) < 1 or shape[-1] != 2:
    raise ValueError(
        f"{fn}: `{name}` must have shape [..., 2] (slot 0 chosen, slot 1 rejected), got {shape}."
    )


def _length_normalized(x: Array, lengths: Optional[Array]) -> Array:
  """`x / max(lengths, 1)` (length normalisation), or `x` when `lengths` is None."""
  x = f32(x)
  if lengths is None:
    return x
  return x / jnp.maximum(f32(lengths), 1.0)


def _pair_valid(where: Optional[Array], shape) -> Array:
  """Validity `[...]` of a `[..., 2]` pair: both slots valid."""
  if where is None:
    return jnp.ones(shape[:-1], bool)
  return jnp.all(jnp.broadcast_to(jnp.asarray(where, bool), shape), axis=-1)


def _competition_rank(x: Array, valid: Array) -> Array:
  """`ν_i = 1 + #{valid j : x_j > x_i}`, shape `[..., K]` ("1224" ranking).

  Equals `K + 1 − rank_max(x_i)` over the K valid items, with `rank_max` the ascending rank in
  which ties take the maximum rank: tied items share the best position.
  """
  greater = (x[..., None, :] > x[..., :, None]) & valid[..., None, :]
  return 1 + jnp.sum(greater, axis=-1)


def _stable_descending_rank(x: Array, valid: Array) -> Array:
  """1-based rank `[..., K]` by descending `x`, ties broken by index, invalid items ignored.

  `rank_i = 1 + #{valid j : x_j > x_i or (x_j = x_i and j < i)}` (Rax `utils.ranks`).
  """
  k = x.shape[-1]
  idx = jnp.arange(k)
  before = (x[..., None, :] > x[..., :, None]) | (
      (x[..., None, :] == x[..., :, None]) & (idx[None, :] < idx[:, None])
  )
  return 1 + jnp.sum(before & valid[..., None, :], axis=-1)


# ---------------------------------------------------------------------------------------------
# §8.1 DPO-family training metrics.


def reward_metrics(
    logps: Array,
    ref_logps: Optional[Array],
    labels: Array,
    *,
    beta: float = 0.1,
    lengths: Optional[Array] = None,
    where: Optional[Array] = None,
) -> dict[str, SumCount]:
  """Implicit-reward training metrics under TRL's names (ALGORITHMS.md §8.1).

  With implicit rewards `r_i = β·(lp_i − lr_i)` (reference-free: `r_i = β·lp_i`; with `lengths`:
  divided by `n_i = max(lengths_i, 1)`, i.e. `β·a_i` as SimPO logs it):

  - `rewards/accuracies = mean over pairs 1[r_i > r_j]` (strict: ties count as wrong),
  - `rewards/margins    = mean over pairs (r_i − r_j)`,
  - `rewards/chosen`, `rewards/rejected` = mean `r` of the chosen / rejected item,
  - `logps/chosen`, `logps/rejected`     = mean `lp` of the chosen / rejected item.

  For pairs (K = 2, labels `[1, 0]`) these are exactly TRL's DPO metrics. For lists they are
  generalised: accuracies and margins run over every valid pair `(i, j)` with
  `labels_i > labels_j` (ALGORITHMS.md §0.1); "chosen" is the best-labelled valid item and
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
  _check_same_shape(fn, "logps", logps, ref_logps=ref_logps, labels=labels, lengths=lengths)
  check_positive("beta", beta, where=fn)
  logps = f32(logps)
  log_ratio = logps if ref_logps is None else logps - f32(ref_logps)
  rewards = beta * _length_normalized(log_ratio, lengths)
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
# §8.2 Ranking accuracy.


def ranking_accuracy(
    logps: Array,
    labels: Array,
    *,
    lengths: Optional[Array] = None,
    where: Optional[Array] = None,
) -> SumCount:
  """Pairwise ranking accuracy of the policy's likelihoods (ALGORITHMS.md §8.2).

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
  _check_same_shape("ranking_accuracy", "logps", logps, labels=labels, lengths=lengths)
  scores = _length_normalized(logps, lengths)
  correct = scores[..., :, None] >= scores[..., None, :]
  return sum_count(correct, pair_mask(labels, valid_mask(scores, where)))


def ranking_accuracy_lists(
    logps: Array,
    labels: Array,
    *,
    lengths: Optional[Array] = None,
    where: Optional[Array] = None,
) -> SumCount:
  """Exact-match ranking accuracy of whole lists (ALGORITHMS.md §8.2).

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
  _check_same_shape("ranking_accuracy_lists", "logps", logps, labels=labels, lengths=lengths)
  scores = _length_normalized(logps, lengths)
  valid = valid_mask(scores, where)
  same = _competition_rank(scores, valid) == _competition_rank(f32(labels), valid)
  match = jnp.all(same | ~valid, axis=-1)
  return sum_count(match, jnp.any(valid, axis=-1))


# ---------------------------------------------------------------------------------------------
# §8.3 Idealized ranking accuracy.

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
  """Ranking accuracy of the exact RLHF/DPO optimum (ALGORITHMS.md §8.3), per β.

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
  _check_pair_layout(fn, "ref_logps", ref_logps)
  _check_same_shape(fn, "ref_logps", ref_logps, lengths=lengths)
  check_range("epsilon", epsilon, low=0.0, high=0.5, low_inclusive=False, high_inclusive=False,
              where=fn)
  check_range("tie_tolerance", tie_tolerance, low=0.0, high=1.0, high_inclusive=False, where=fn)
  if jnp.ndim(betas) != 1 or len(betas) == 0:
    raise ValueError(f"{fn}: `betas` must be a non-empty 1-D sequence, got {betas!r}.")
  for b in betas:
    check_positive("every beta in betas", b, where=fn)
  betas = f32(jnp.asarray(betas))
  ref = _length_normalized(ref_logps, lengths)
  alpha = jnp.clip(f32(alpha), epsilon, 1.0 - epsilon)
  log_odds = jnp.log(alpha) - jnp.log1p(-alpha)
  log_odds = jnp.broadcast_to(log_odds, ref.shape[:-1])
  z = (ref[..., 0] - ref[..., 1])[..., None] + log_odds[..., None] / betas
  correct = _ratio_class(z, tie_tolerance) == _ratio_class(log_odds, tie_tolerance)[..., None]
  valid = jnp.broadcast_to(_pair_valid(where, ref.shape)[..., None], correct.shape)
  leading = tuple(range(correct.ndim - 1))
  return sum_count(correct, valid, axis=leading)


def summarize_over_betas(accuracy: SumCount) -> dict[str, Array]:
  """`{"min", "median", "max"}` over β of the per-β means of `idealized_ranking_accuracy`.

  Apply after accumulation: min/median/max of means are not themselves sums.
  """
  means = mean(accuracy)
  return {"min": jnp.min(means), "median": jnp.median(means), "max": jnp.max(means)}


# ---------------------------------------------------------------------------------------------
# §8.4 Hardness thresholds.


def dpo_flip_threshold(ref_logps: Array, *, beta: float = 0.1) -> Array:
  """DPO loss below which a pair is correctly ranked (ALGORITHMS.md §8.4, Thm 4.1).

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
  _check_pair_layout(fn, "ref_logps", ref_logps)
  check_positive("beta", beta, where=fn)
  ref = f32(ref_logps)
  return jax.nn.softplus(beta * (ref[..., 0] - ref[..., 1]))


def ipo_flip_threshold(ref_logps: Array, *, beta: float = 0.1) -> Array:
  """IPO (`ipo_sum`) loss below which a pair is guaranteed correctly ranked (ALGORITHMS.md §8.4).

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
  _check_pair_layout(fn, "ref_logps", ref_logps)
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
  _check_same_shape("below_flip_threshold", "losses", losses, thresholds=thresholds)
  return sum_count(f32(losses) <= f32(thresholds), where)


# ---------------------------------------------------------------------------------------------
# §8.5 Likelihood displacement and CHES.


def logprob_change(
    logps: Array, initial_logps: Array, *, where: Optional[Array] = None
) -> SumCount:
  """Mean log-prob change per slot, `mean_i[lp_t(y_k,i) − lp_0(y_k,i)]` (ALGORITHMS.md §8.5).

  For pairs, slot 0 gives the preferred and slot 1 the dispreferred response's change; a
  negative preferred change is likelihood displacement.

  Paper: *Unintentional Unalignment: Likelihood Displacement in Direct Preference Optimization*
  (Razin et al., ICLR 2025).

  Args:
    logps: `[..., K]` current summed log-probs.
    initial_logps: `[..., K]` the same at the start of training.
    where: optional `[..., K]` slot validity.

  Returns:
    `SumCount` with `sum` and `count` of shape `[K]` (summed over the leading axes).
  """
  _check_same_shape("logprob_change", "logps", logps, initial_logps=initial_logps)
  change = f32(logps) - f32(initial_logps)
  return sum_count(change, where, axis=tuple(range(change.ndim - 1)))


def predicting_window_mask(completion_mask: Array) -> Array:
  """Positions whose hidden state predicts a completion token: `m[t] = completion_mask[t + 1]`.

  From the last prompt position to the second-to-last response position (the window CHES sums
  over); the last position of a row predicts nothing. `[..., T]` bool -> `[..., T]` bool.
  """
  completion_mask = jnp.asarray(completion_mask, bool)
  pad = jnp.zeros(completion_mask.shape[:-1] + (1,), bool)
  return jnp.concatenate([completion_mask[..., 1:], pad], axis=-1)


def _window_sum(fn: str, name: str, hidden: Array, mask: Array) -> tuple[Array, Array]:
  """`(H = Σ_t mask_t·h_t [..., D], n = Σ_t mask_t [...])` in float32."""
  if jnp.ndim(hidden) < 2 or jnp.shape(mask) != jnp.shape(hidden)[:-1]:
    raise ValueError(
        f"{fn}: `{name}` hidden states must be [..., T, D] with a [..., T] mask; got "
        f"{jnp.shape(hidden)} and {jnp.shape(mask)}."
    )
  mask = jnp.asarray(mask, bool)
  total = jnp.einsum("...td,...t->...d", f32(hidden), mask.astype(jnp.float32))
  return total, jnp.sum(mask, axis=-1, dtype=jnp.float32)


def _ches_terms(fn, chosen_hidden, chosen_mask, rejected_hidden, rejected_mask, normalize):
  h_pos, n_pos = _window_sum(fn, "chosen", chosen_hidden, chosen_mask)
  h_neg, n_neg = _window_sum(fn, "rejected", rejected_hidden, rejected_mask)
  if h_pos.shape != h_neg.shape:
    raise ValueError(
        f"{fn}: chosen and rejected hidden states must share batch axes and D; got "
        f"{jnp.shape(chosen_hidden)} and {jnp.shape(rejected_hidden)}."
    )
  if normalize:
    h_pos = h_pos / jnp.maximum(n_pos, 1.0)[..., None]
    h_neg = h_neg / jnp.maximum(n_neg, 1.0)[..., None]
  return jnp.sum(h_pos * h_neg, axis=-1) - jnp.sum(h_pos * h_pos, axis=-1)


def ches(
    chosen_hidden: Array, chosen_mask: Array, rejected_hidden: Array, rejected_mask: Array
) -> Array:
  """Centered hidden embedding similarity (ALGORITHMS.md §8.5).

  `H± = Σ_{t ∈ window±} h_t(x, y±)` over last-layer hidden states that predict response tokens
  (`predicting_window_mask` of the completion mask), and `CHES = ⟨H+, H−⟩ − ‖H+‖²`. Higher means
  more likelihood displacement of `y+` when training on the pair. The masks are explicit, so right
  padding inside the window (which the reference code assumes away) is handled.

  Paper: *Unintentional Unalignment: Likelihood Displacement in Direct Preference Optimization*
  (Razin et al., ICLR 2025). Code: `princeton-nlp/unintentional-unalignment` (`ches/ches.py`).

  Args:
    chosen_hidden: `[..., T+, D]` hidden states of (x, y+).
    chosen_mask: `[..., T+]` bool predicting window of y+.
    rejected_hidden: `[..., T−, D]` hidden states of (x, y−).
    rejected_mask: `[..., T−]` bool predicting window of y−.

  Returns:
    `[...]` per-example scores (reduce by concatenation or `sum_count`).
  """
  return _ches_terms("ches", chosen_hidden, chosen_mask, rejected_hidden, rejected_mask, False)


def ln_ches(
    chosen_hidden: Array, chosen_mask: Array, rejected_hidden: Array, rejected_mask: Array
) -> Array:
  """Length-normalised CHES (ALGORITHMS.md §8.5).

  `LN-CHES = ⟨H+, H−⟩/(n+·n−) − ‖H+‖²/n+²` with `n± = max(|window±|, 1)` and `H±` as in `ches`;
  filter out the pairs with the highest LN-CHES.

  Paper: *Unintentional Unalignment: Likelihood Displacement in Direct Preference Optimization*
  (Razin et al., ICLR 2025). Code: `princeton-nlp/unintentional-unalignment` (`ches/ches.py`).

  Args:
    chosen_hidden: `[..., T+, D]`; chosen_mask: `[..., T+]`; rejected_hidden: `[..., T−, D]`;
    rejected_mask: `[..., T−]` (as in `ches`).

  Returns:
    `[...]` per-example scores (reduce by concatenation or `sum_count`).
  """
  return _ches_terms("ln_ches", chosen_hidden, chosen_mask, rejected_hidden, rejected_mask, True)


# ---------------------------------------------------------------------------------------------
# §8.6 NDCG and Kendall τ.


def ndcg(
    scores: Array,
    labels: Array,
    *,
    topn: Optional[int] = None,
    where: Optional[Array] = None,
) -> SumCount:
  """NDCG@k with Rax `ndcg_metric` semantics (ALGORITHMS.md §8.6).

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
  _check_same_shape(fn, "scores", scores, labels=labels)
  if topn is not None and (not isinstance(topn, int) or topn < 1):
    raise ValueError(f"{fn}: topn must be a positive int or None, got {topn!r}.")
  scores = f32(scores)
  valid = valid_mask(scores, where)
  gains = jnp.exp2(f32(labels)) - 1.0

  def dcg(ranking_scores):
    ranks = _stable_descending_rank(ranking_scores, valid)
    keep = valid if topn is None else valid & (ranks <= topn)
    return jnp.sum(jnp.where(keep, gains / jnp.log2(1.0 + ranks), 0.0), axis=-1)

  ideal = dcg(gains)
  return sum_count(dcg(scores) / jnp.where(ideal == 0.0, 1.0, ideal), jnp.any(valid, axis=-1))


def kendall_tau(
    scores: Array, labels: Array, *, where: Optional[Array] = None
) -> dict[str, SumCount]:
  """Kendall τ-b per list between model scores and labels (ALGORITHMS.md §8.6).

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
  _check_same_shape("kendall_tau", "scores", scores, labels=labels)
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


# ---------------------------------------------------------------------------------------------
# §8.7 Win rate.


class WinRate(NamedTuple):
  """Win rate with a confidence interval: `rate`, `low`, `high` and the number of prompts `n`."""

  rate: Array
  low: Array
  high: Array
  n: Array


def win_outcomes(policy_rewards: Array, reference_rewards: Array) -> Array:
  """`o_i = 1[r*(x, y_π) > r*(x, y_ref)] + ½·1[r*(x, y_π) = r*(x, y_ref)]`, shape `[...]`."""
  _check_same_shape(
      "win_outcomes", "policy_rewards", policy_rewards, reference_rewards=reference_rewards
  )
  policy_rewards, reference_rewards = f32(policy_rewards), f32(reference_rewards)
  return jnp.where(
      policy_rewards > reference_rewards,
      1.0,
      jnp.where(policy_rewards == reference_rewards, 0.5, 0.0),
  )


def win_rate(
    policy_rewards: Array,
    reference_rewards: Array,
    *,
    where: Optional[Array] = None,
    ci: str = "normal",
    z: float = 1.96,
    key: Optional[Array] = None,
    num_resamples: int = 1000,
    percentiles: tuple[float, float] = (2.5, 97.5),
) -> WinRate:
  """Win rate against a reference under a known reward, with a 95% interval (ALGORITHMS.md §8.7).

  `WR = mean_i o_i` over valid prompts with `o_i` from `win_outcomes` (ties count half).

  - `ci="normal"` (default): `WR ± z·sd(o)/√n`, `sd` the population standard deviation
    (`sqrt(mean(o²) − WR²)`, the Wald interval when there are no ties), z = 1.96, clipped to
    `[0, 1]`.
  - `ci="bootstrap"`: resample the n valid prompts with replacement `num_resamples` times (1000)
    with the PRNG `key`; the bounds are the `percentiles` (2.5, 97.5) of the resampled rates
    (linear interpolation, as `numpy.percentile`).

  Not a `SumCount`: the interval needs all outcomes, so call it on the whole evaluation set (the
  normal interval depends only on `Σo`, `Σo²` and n). The rate alone accumulates as
  `sum_count(win_outcomes(...), where)`. For `jit`, mark `ci` and `num_resamples` static.

  Args:
    policy_rewards: `[...]` ground-truth rewards of the policy's responses (one per prompt).
    reference_rewards: `[...]` rewards of the reference responses to the same prompts.
    where: optional `[...]` validity of prompts.
    ci: "normal" or "bootstrap".
    z: normal quantile of the interval.
    key: PRNG key, required for the bootstrap.
    num_resamples: bootstrap resamples.
    percentiles: bootstrap percentiles of the interval.

  Returns:
    `WinRate(rate, low, high, n)` as float32 scalars.
  """
  fn = "win_rate"
  if ci not in ("normal", "bootstrap"):
    raise ValueError(f"{fn}: ci must be 'normal' or 'bootstrap', got {ci!r}.")
  outcomes = win_outcomes(policy_rewards, reference_rewards)
  valid = jnp.ravel(valid_mask(outcomes, where))
  outcomes = jnp.ravel(outcomes)
  total, n = sum_count(outcomes, valid)
  rate = total / jnp.maximum(n, 1.0)
  if ci == "normal":
    check_range("z", z, low=0.0, where=fn)
    second_moment = jnp.sum(jnp.where(valid, outcomes**2, 0.0)) / jnp.maximum(n, 1.0)
    sd = jnp.sqrt(jnp.maximum(second_moment - rate**2, 0.0))
    half = z * sd / jnp.sqrt(jnp.maximum(n, 1.0))
    return WinRate(rate, jnp.clip(rate - half, 0.0, 1.0), jnp.clip(rate + half, 0.0, 1.0), n)
  if key is None:
    raise ValueError(f"{fn}: ci='bootstrap' needs an explicit PRNG `key`.")
  if not isinstance(num_resamples, int) or num_resamples < 1:
    raise ValueError(f"{fn}: num_resamples must be a positive int, got {num_resamples!r}.")
  for p in percentiles:
    check_range("percentiles", p, low=0.0, high=100.0, where=fn)
  size = outcomes.shape[0]
  # Valid positions first (in order), so that uniform draws in [0, n) pick valid prompts only;
  # draw j of a resample is used iff j < n, giving resamples of exactly n prompts.
  valid_positions = jnp.argsort(~valid, stable=True)
  draws = jax.random.randint(key, (num_resamples, size), 0, jnp.maximum(n, 1).astype(jnp.int32))
  used = jnp.arange(size) < n
  resampled = jnp.sum(jnp.where(used, outcomes[valid_positions[draws]], 0.0), axis=-1)
  rates = resampled / jnp.maximum(n, 1.0)
  low, high = jnp.percentile(rates, jnp.asarray(percentiles, jnp.float32))
  return WinRate(rate, low, high, n)


# ---------------------------------------------------------------------------------------------
# §8.8 KL divergence.

_MAX_EXPONENT = 80.0  # §0.4: clip exponents of log-ratios (TRL's float32/bf16 value).


def sample_kl(logps: Array, ref_logps: Array, *, where: Optional[Array] = None) -> SumCount:
  """Sequence-level sample KL, the unbiased k1 estimator (ALGORITHMS.md §8.8).

  `KL(π ‖ π_ref) ≈ mean_{y∼π} Σ_t (lp_t − lr_t) = mean_y (lp(y) − lr(y))` for responses sampled
  from the policy; pair with the reward for reward-vs-KL frontiers.

  Args:
    logps: `[...]` summed log-probs of policy samples under the policy.
    ref_logps: `[...]` the same under the reference.
    where: optional `[...]` validity of samples.

  Returns:
    `SumCount` over valid sequences.
  """
  _check_same_shape("sample_kl", "logps", logps, ref_logps=ref_logps)
  return sum_count(f32(logps) - f32(ref_logps), where)


def token_kl_k3(
    token_logps: Array, token_ref_logps: Array, mask: Optional[Array] = None
) -> SumCount:
  """Per-token k3 KL estimate, `k3_t = exp(Δ_t) − Δ_t − 1` with `Δ_t = lr_t − lp_t` (§5.2, §8.8).

  Unbiased per token, non-negative, low variance; `Δ` is clipped at 80 before the exponential
  (ALGORITHMS.md §0.4), which only matters for tokens the policy has all but ruled out.

  Args:
    token_logps: `[..., T]` per-token log-probs of policy samples under the policy.
    token_ref_logps: `[..., T]` the same under the reference.
    mask: optional `[..., T]` completion mask.

  Returns:
    `SumCount` over valid tokens (the global per-token mean).
  """
  _check_same_shape("token_kl_k3", "token_logps", token_logps, token_ref_logps=token_ref_logps)
  delta = jnp.minimum(f32(token_ref_logps) - f32(token_logps), _MAX_EXPONENT)
  return sum_count(jnp.expm1(delta) - delta, mask)


def exact_kl(logits: Array, ref_logits: Array, *, where: Optional[Array] = None) -> SumCount:
  """Exact next-token KL over the full vocabulary, `Σ_v π(v)·(log π(v) − log π_ref(v))` (§8.8).

  For tiny vocabularies only (synthetic tasks, evaluation): it needs `[..., V]` logits, which a
  training path must never materialise for real vocabularies. Computed from float32
  `log_softmax`; terms with `π(v) = 0` contribute 0.

  Args:
    logits: `[..., V]` policy logits at each position.
    ref_logits: `[..., V]` reference logits at the same positions.
    where: optional `[...]` validity of positions.

  Returns:
    `SumCount` over valid positions.
  """
  _check_same_shape("exact_kl", "logits", logits, ref_logits=ref_logits)
  log_p = jax.nn.log_softmax(f32(logits), axis=-1)
  log_q = jax.nn.log_softmax(f32(ref_logits), axis=-1)
  p = jnp.exp(log_p)
  kl = jnp.sum(jnp.where(p > 0.0, p * (log_p - log_q), 0.0), axis=-1)
  return sum_count(kl, where)


# ---------------------------------------------------------------------------------------------
# §8.9 Calibration.


class CalibrationBins(NamedTuple):
  """Per-bin sums `[num_bins]`: predicted probabilities, outcomes and counts (add with `add`)."""

  prob_sum: Array
  outcome_sum: Array
  count: Array


def calibration_bins(
    probs: Array, outcomes: Array, *, num_bins: int = 5, where: Optional[Array] = None
) -> CalibrationBins:
  """Uniform-bin sums for calibration error (ALGORITHMS.md §8.9).

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
  _check_same_shape(fn, "probs", probs, outcomes=outcomes)
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
  """ECE, average and maximum per-bin error from (accumulated) `CalibrationBins` (§8.9).

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
  """Expected calibration error with uniform bins (ALGORITHMS.md §8.9).

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


# ---------------------------------------------------------------------------------------------
# §2.5 Undesirable region.


def undesirable_region_fraction(
    logps: Array,
    ref_logps: Array,
    lengths: Optional[Array] = None,
    *,
    where: Optional[Array] = None,
) -> SumCount:
  """Fraction of pairs in the undesirable region (ALGORITHMS.md §2.5, paper Def. 3.3).

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
  _check_pair_layout(fn, "logps", logps)
  _check_same_shape(fn, "logps", logps, ref_logps=ref_logps, lengths=lengths)
  policy = _length_normalized(logps, lengths)
  ref = _length_normalized(ref_logps, lengths)
  delta_policy = policy[..., 0] - policy[..., 1]
  delta_ref = ref[..., 0] - ref[..., 1]
  inside = (delta_policy < 0.0) & (delta_policy > delta_ref)
  return sum_count(inside, _pair_valid(where, policy.shape))
