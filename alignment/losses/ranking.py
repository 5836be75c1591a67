"""Generic learning-to-rank losses on raw scores `[..., K]` (Rax semantics).

The preference objectives of `alignment.losses.listwise` turn log-probs into scores
`s = β·(logps − ref_logps)` and call these functions. Signatures follow `google/rax`
(`rax/_src/losses.py`): `loss(scores, labels, *, where=None, weights=None, lambdaweight_fn=None,
reduce_fn=jnp.mean)`; the last axis is the list, every leading axis is a batch axis.

Conventions (those of `docs/conventions.md`):
- A pair `(i, j)` exists iff `labels_i > labels_j` strictly and both slots are valid.
- Pair losses: `reduce_fn=jnp.mean` is the mean over all valid pairs of the whole input; item
  `weights` (of the better item i) and lambda weights multiply the pair losses but are not in the
  denominator. `reduce_fn=None` returns the `[..., K, K]` pair losses, 0 off the valid pairs.
- List losses (ListMLE, softmax): one value per list, mean over lists with >= 1 valid item;
  `reduce_fn=None` returns `[...]`.
- Pointwise losses: mean over valid items; `reduce_fn=None` returns `[..., K]`.
- Everything masked reduces to 0 with finite gradients; padded slots may hold any value.
- All computation is in float32 whatever the input dtype.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from alignment import arrays

Array = jax.Array
LambdaweightFn = Callable[..., Array]
PairLossFn = Callable[[Array], Array]


def pairwise_loss(
    fn_name: str,
    pair_loss_fn: PairLossFn,
    scores: Array,
    labels: Array,
    *,
    where: Optional[Array],
    weights: Optional[Array],
    lambdaweight_fn: Optional[LambdaweightFn],
    reduce_fn: arrays.ReduceFn,
) -> Array:
  """Applies `pair_loss_fn` to `s_i − s_j` on every valid pair and reduces (`docs/conventions.md`).

  `ℓ_ij = w_i · λ_ij · f(s_i − s_j)` on pairs with `labels_i > labels_j`, both valid. Public so
  that other modules build pair losses with their own `f` (e.g. `rewards.bt.bt_pairwise`);
  `fn_name` names the caller in error messages.
  """
  scores, labels, valid, weights = arrays.prepare_list(fn_name, scores, labels, where, weights)
  mask = arrays.pair_mask(labels, valid)
  losses = pair_loss_fn(arrays.pairwise_differences(scores))
  if weights is not None:
    losses = losses * weights[..., :, None]
  if lambdaweight_fn is not None:
    lambdas = lambdaweight_fn(jax.lax.stop_gradient(scores), labels, where=valid, weights=weights)
    losses = losses * jax.lax.stop_gradient(lambdas)
  return arrays.reduce_loss(losses, mask, reduce_fn)


def _logistic(d: Array) -> Array:
  return jax.nn.softplus(-d)


def _hinge(d: Array) -> Array:
  return jax.nn.relu(1.0 - d)


def _squared(d: Array) -> Array:
  return jnp.square(1.0 - d)


def _soft_zero_one(d: Array) -> Array:
  return jax.nn.sigmoid(-d)


def pairwise_logistic_loss(
    scores: Array,
    labels: Array,
    *,
    where: Optional[Array] = None,
    weights: Optional[Array] = None,
    lambdaweight_fn: Optional[LambdaweightFn] = None,
    reduce_fn: arrays.ReduceFn = jnp.mean,
) -> Array:
  r"""Pairwise logistic (RankNet) loss.

  `ℓ(s, y) = Σ_{y_i > y_j} w_i·λ_ij·log(1 + exp(−(s_i − s_j)))`, reduced as a mean over valid
  pairs. Paper: *Learning to Rank using Gradient Descent* (Burges et al., ICML 2005). With
  K = 2, labels `[1, 0]` and `s = β·ρ` this is DPO (`docs/conventions.md`).

  Args:
    scores: `[..., K]` item scores.
    labels: `[..., K]` graded relevance, higher is better; ties form no pair.
    where: optional `[..., K]` bool, valid items.
    weights: optional `[..., K]` item weights (the better item's weight multiplies the pair).
    lambdaweight_fn: optional `fn(scores, labels, *, where, weights) -> [..., K, K]` (see
      `alignment.losses.lambdaweights`); applied under stop-gradient.
    reduce_fn: `jnp.mean` (over valid pairs), `jnp.sum`, `None` (`[..., K, K]`) or
      `sum_and_count`.

  Returns:
    The reduced loss (a scalar) or the `[..., K, K]` pair losses.

  >>> print(pairwise_logistic_loss(jnp.array([2., 0., 1.]), jnp.array([1., 0., 0.])))
  0.22009...
  """
  return pairwise_loss(
      "pairwise_logistic_loss", _logistic, scores, labels, where=where, weights=weights,
      lambdaweight_fn=lambdaweight_fn, reduce_fn=reduce_fn,
  )


def pairwise_hinge_loss(
    scores: Array,
    labels: Array,
    *,
    where: Optional[Array] = None,
    weights: Optional[Array] = None,
    lambdaweight_fn: Optional[LambdaweightFn] = None,
    reduce_fn: arrays.ReduceFn = jnp.mean,
) -> Array:
  r"""Pairwise hinge (RankSVM) loss.

  `ℓ(s, y) = Σ_{y_i > y_j} w_i·λ_ij·max(0, 1 − (s_i − s_j))`, mean over valid pairs.
  Paper: *Optimizing Search Engines using Clickthrough Data* (Joachims, KDD 2002). With K = 2,
  labels `[1, 0]` and `s = β·ρ` this is the SLiC `hinge` loss `max(0, 1 − β·h)`
  (`docs/conventions.md`).
  Arguments and reductions as in `pairwise_logistic_loss`.

  >>> print(pairwise_hinge_loss(jnp.array([2., 0., 1.]), jnp.array([1., 0., 0.])))
  0.0
  """
  return pairwise_loss(
      "pairwise_hinge_loss", _hinge, scores, labels, where=where, weights=weights,
      lambdaweight_fn=lambdaweight_fn, reduce_fn=reduce_fn,
  )


def pairwise_squared_loss(
    scores: Array,
    labels: Array,
    *,
    where: Optional[Array] = None,
    weights: Optional[Array] = None,
    lambdaweight_fn: Optional[LambdaweightFn] = None,
    reduce_fn: arrays.ReduceFn = jnp.mean,
) -> Array:
  r"""Pairwise squared-margin loss: the hinge without the clip, squared.

  `ℓ(s, y) = Σ_{y_i > y_j} w_i·λ_ij·(1 − (s_i − s_j))²`, mean over valid pairs.
  Rax 0.4 has no function of this name; this is `rax.pairwise_loss` with the pair loss
  `(1 − Δs)²` on pairs `Δy > 0` (Rax pair semantics, unlike `rax.pairwise_mse_loss`, which
  regresses `Δs` onto `Δy` over all pairs). On scores `s = 2β·ρ` with K = 2 it is a rescaled
  IPO: `(1 − 2β·h)² / (4β²) = (h − 1/(2β))²` (*A General Theoretical Paradigm to Understand
  Learning from Human Preferences*, Azar et al., 2023). Arguments as in
  `pairwise_logistic_loss`.

  >>> print(pairwise_squared_loss(jnp.array([2., 0., 1.]), jnp.array([1., 0., 0.])))
  0.5
  """
  return pairwise_loss(
      "pairwise_squared_loss", _squared, scores, labels, where=where, weights=weights,
      lambdaweight_fn=lambdaweight_fn, reduce_fn=reduce_fn,
  )


def pairwise_soft_zero_one_loss(
    scores: Array,
    labels: Array,
    *,
    where: Optional[Array] = None,
    weights: Optional[Array] = None,
    lambdaweight_fn: Optional[LambdaweightFn] = None,
    reduce_fn: arrays.ReduceFn = jnp.mean,
) -> Array:
  r"""Pairwise soft zero-one loss: a sigmoid relaxation of the count of mis-ordered pairs.

  `ℓ(s, y) = Σ_{y_i > y_j} w_i·λ_ij·σ(−(s_i − s_j))`, mean over valid pairs (Rax
  `pairwise_soft_zero_one_loss`; bounded, hence robust to label noise). Arguments as in
  `pairwise_logistic_loss`.

  >>> print(pairwise_soft_zero_one_loss(jnp.array([0., 0.]), jnp.array([1., 0.])))
  0.5
  """
  return pairwise_loss(
      "pairwise_soft_zero_one_loss", _soft_zero_one, scores, labels, where=where,
      weights=weights, lambdaweight_fn=lambdaweight_fn, reduce_fn=reduce_fn,
  )


def listmle_loss(
    scores: Array,
    labels: Array,
    *,
    key: Optional[Array] = None,
    where: Optional[Array] = None,
    weights: Optional[Array] = None,
    reduce_fn: arrays.ReduceFn = jnp.mean,
) -> Array:
  r"""ListMLE: the Plackett–Luce negative log-likelihood of the label order.

  `ℓ(s, y) = −Σ_{r=1..n} w_{π(r)}·[s_{π(r)} − log Σ_{r' ≥ r} exp(s_{π(r')})]`, π sorting the n
  valid items by label, descending. Paper: *Listwise Approach to Learning to Rank: Theory and
  Algorithm* (Xia et al., ICML 2008). The sort is **stable** (tied labels
  keep their input order) unless `key` is given, which breaks ties at random (recommended in
  training; the draw is Rax's, so the same key gives Rax's order); invalid items are excluded
  from every suffix; the last valid term is 0 (one valid item gives loss 0). With K = 2,
  labels `[1, 0]` and `s = β·ρ` this is DPO (`docs/conventions.md`).

  Args:
    scores: `[..., K]` item scores.
    labels: `[..., K]` graded relevance, higher is better.
    key: optional PRNG key for random tie-breaking.
    where: optional `[..., K]` bool, valid items.
    weights: optional `[..., K]` item weights, multiplying each item's term (Rax has none).
    reduce_fn: `jnp.mean` (over lists with a valid item), `jnp.sum`, `None` (`[...]`) or
      `sum_and_count`.

  Returns:
    The reduced loss or the per-list losses `[...]`.

  >>> print(listmle_loss(jnp.array([0., 0.]), jnp.array([1., 0.])))  # −log(1/2)
  0.6931...
  """
  scores, labels, valid, weights = arrays.prepare_list("listmle_loss", scores, labels, where,
                                                       weights)
  tiebreak = None if key is None else jax.random.uniform(key, scores.shape)
  position = arrays.descending_ranks(labels, valid, tiebreak=tiebreak)
  # suffix[..., i, j]: item j is still unplaced when item i is drawn.
  suffix = valid[..., None, :] & (position[..., None, :] >= position[..., :, None])
  neg_log_probs = arrays.masked_logsumexp(scores[..., None, :], suffix) - scores
  if weights is not None:
    neg_log_probs = neg_log_probs * weights
  per_list = jnp.sum(jnp.where(valid, neg_log_probs, 0.0), axis=-1)
  return arrays.reduce_loss(per_list, arrays.list_mask(valid), reduce_fn)


def normalize_probabilities(labels: Array, *, where: Optional[Array] = None) -> Array:
  """Labels `[..., K]` -> probabilities `p_i = y_i / Σ_valid y` (a `label_fn` for softmax).

  A list whose valid labels are all 0 becomes uniform over its valid items; invalid items get 0
  (Rax `utils.normalize_probabilities`). Labels must be >= 0.
  """
  labels = arrays.f32(labels)
  valid = arrays.valid_mask(labels, where)
  labels = jnp.where(valid, labels, 0.0)
  total = jnp.sum(labels, axis=-1, keepdims=True)
  count = jnp.sum(valid, axis=-1, keepdims=True, dtype=jnp.float32)
  nonzero = total != 0.0
  probs = jnp.where(nonzero, labels / jnp.where(nonzero, total, 1.0), 1.0 / jnp.maximum(count, 1.0))
  return jnp.where(valid, probs, 0.0)


def softmax_loss(
    scores: Array,
    labels: Array,
    *,
    where: Optional[Array] = None,
    weights: Optional[Array] = None,
    label_fn: Optional[Callable[..., Array]] = None,
    reduce_fn: arrays.ReduceFn = jnp.mean,
) -> Array:
  r"""Softmax cross-entropy loss (ListNet with `label_fn=normalize_probabilities`).

  `ℓ(s, y) = −Σ_i p_i·log softmax(s)_i` over valid items, `p = label_fn(w·y)`; by default
  `p = w·y` (Rax: raw labels as weights). Papers: *Learning to Rank: From Pairwise Approach to
  Listwise Approach* (Cao et al., ICML 2007); *An Analysis of the Softmax Cross Entropy Loss for
  Learning-to-Rank with Binary Relevance* (Bruch et al., ICTIR 2019). Masked scores are −∞ in
  the softmax and masked labels 0; labels must be >= 0. With K = 2, labels `[1, 0]` and
  `s = β·ρ` this is DPO (`docs/conventions.md`).

  Args:
    scores: `[..., K]` item scores.
    labels: `[..., K]` non-negative relevance.
    where: optional `[..., K]` bool, valid items.
    weights: optional `[..., K]` item weights, multiplying the labels.
    label_fn: optional `fn(labels, *, where) -> [..., K]` mapping labels to target weights,
      e.g. `normalize_probabilities`; None keeps the (weighted) labels.
    reduce_fn: `jnp.mean` (over lists with a valid item), `jnp.sum`, `None` (`[...]`) or
      `sum_and_count`.

  >>> print(softmax_loss(jnp.array([2., 1., 3.]), jnp.array([1., 0., 0.])))
  1.4076...
  """
  scores, labels, valid, weights = arrays.prepare_list("softmax_loss", scores, labels, where,
                                                       weights)
  arrays.check_array_range("labels", labels, low=0.0, mask=valid, where="softmax_loss")
  if weights is not None:
    labels = labels * weights
  if label_fn is not None:
    labels = label_fn(labels, where=valid)
  log_softmax = scores - arrays.masked_logsumexp(scores, valid)[..., None]
  per_list = -jnp.sum(jnp.where(valid, labels * log_softmax, 0.0), axis=-1)
  return arrays.reduce_loss(per_list, arrays.list_mask(valid), reduce_fn)


def pointwise_sigmoid_loss(
    scores: Array,
    labels: Array,
    *,
    where: Optional[Array] = None,
    weights: Optional[Array] = None,
    reduce_fn: arrays.ReduceFn = jnp.mean,
) -> Array:
  r"""Pointwise sigmoid cross-entropy of each score against a label in [0, 1].

  `ℓ_i = −[y_i·logσ(s_i) + (1 − y_i)·logσ(−s_i)] = y_i·softplus(−s_i) + (1 − y_i)·softplus(s_i)`,
  times `w_i`, mean over valid items (Rax `pointwise_sigmoid_loss`). Unlike
  Rax, labels outside [0, 1] raise (no silent clipping; checked when the labels are concrete).

  Args:
    scores: `[..., K]` item scores.
    labels: `[..., K]` targets in [0, 1].
    where: optional `[..., K]` bool, valid items.
    weights: optional `[..., K]` item weights.
    reduce_fn: `jnp.mean` (over valid items), `jnp.sum`, `None` (`[..., K]`) or
      `sum_and_count`.

  >>> print(pointwise_sigmoid_loss(jnp.array([0., 0.]), jnp.array([1., 0.])))  # log 2
  0.6931...
  """
  scores, labels, valid, weights = arrays.prepare_list("pointwise_sigmoid_loss", scores, labels,
                                                       where, weights)
  arrays.check_array_range("labels", labels, low=0.0, high=1.0, mask=valid,
                           where="pointwise_sigmoid_loss")
  losses = labels * jax.nn.softplus(-scores) + (1.0 - labels) * jax.nn.softplus(scores)
  if weights is not None:
    losses = losses * weights
  return arrays.reduce_loss(losses, valid, reduce_fn)
