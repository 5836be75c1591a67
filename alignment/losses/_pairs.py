"""Pair helpers shared by the pairwise and reference-free objectives (inputs `[..., 2]`).

A pair's slots are ordered by its labels (strict: ties and masked slots form no pair), so every
objective reads `(x_w, x_l)` through `chosen_rejected` and reduces over valid pairs only.
"""

from __future__ import annotations

from typing import NamedTuple, Union

import jax
import jax.numpy as jnp

from alignment import scores
from alignment.losses import _utils

Array = jax.Array


class Pairs(NamedTuple):
  """Each pair's validity, order and weight, from `order_pairs`."""

  valid: Array  # [...] bool: the pair exists (strict labels, both slots valid).
  swap: Array  # [...] bool: slot 1 is the chosen one.
  weight: Union[Array, float]  # [...] weight of the chosen item, or 1.


def order_pairs(name, logps, labels, where, weights, **arrays) -> Pairs:
  """Checks the `[..., 2]` layout and the shapes; orders each pair by its labels."""
  shape = jnp.shape(logps)
  if len(shape) < 1 or shape[-1] != 2:
    raise ValueError(
        f"{name}: pairwise objectives take [..., 2] inputs (slot 0 chosen, slot 1 rejected); "
        f"got logps of shape {shape}. Use pair_to_list(chosen, rejected)."
    )
  _utils.check_shapes(name, "logps", logps, labels=labels, where=where, weights=weights, **arrays)
  if labels is None:
    labels = jnp.asarray([1.0, 0.0], jnp.float32)
  labels = jnp.broadcast_to(scores.as_float(labels), shape)
  pm = _utils.pair_mask(labels, where)  # [..., 2, 2]
  swap = pm[..., 1, 0]
  valid = pm[..., 0, 1] | swap
  weight = 1.0 if weights is None else chosen_rejected(
      jnp.broadcast_to(scores.as_float(weights), shape), swap
  )[0]
  return Pairs(valid, swap, weight)


def chosen_rejected(x, swap) -> tuple[Array, Array]:
  """`(x_w, x_l)`, each `[...]`, from `x [..., 2]` ordered by the labels."""
  return jnp.where(swap, x[..., 1], x[..., 0]), jnp.where(swap, x[..., 0], x[..., 1])


def reduce_pairs(loss, pairs: Pairs, reduce_fn):
  """`reduce_fn` of the weighted per-pair losses over the valid pairs (ALGORITHMS.md §0.2)."""
  return _utils.reduce_loss(loss * pairs.weight, pairs.valid, reduce_fn)


def require(name, value, what):
  """Raises a ValueError naming objective `name` when its input `what` is missing."""
  if value is None:
    raise ValueError(f"{name}: `{what}` is required.")


def smoothed_logistic(z, label_smoothing):
  """`−(1−ε)·logσ(z) − ε·logσ(−z)` (cDPO's smoothed Bradley–Terry likelihood)."""
  return -(1.0 - label_smoothing) * jax.nn.log_sigmoid(z) - label_smoothing * jax.nn.log_sigmoid(-z)


def check_label_smoothing(name, value, high=0.5):
  """`label_smoothing` ε ∈ [0, high) (cDPO and rDPO are undefined at ε = 1/2)."""
  _utils.check_range(
      "label_smoothing", value, low=0.0, high=high, high_inclusive=False, where=name
  )


def chosen_nll(logps, lengths, pairs) -> Array:
  """Token-mean NLL of the chosen responses, `−Σ lp_w / Σ n_w` over valid pairs, as per-pair
  shares (`_utils.as_mean_over`): their mean over valid pairs is that scalar."""
  lp_w, _ = chosen_rejected(scores.as_float(logps), pairs.swap)
  n_w, _ = chosen_rejected(jnp.maximum(scores.as_float(lengths), 1.0), pairs.swap)
  tokens = jnp.sum(jnp.where(pairs.valid, n_w, 0.0))
  return _utils.as_mean_over(-lp_w, pairs.valid, pairs.valid, tokens)
