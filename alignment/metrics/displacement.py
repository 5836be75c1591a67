"""Likelihood displacement: log-prob changes of the preferred and dispreferred responses, CHES.

Paper: *Unintentional Unalignment: Likelihood Displacement in Direct Preference Optimization*
(Razin et al., ICLR 2025).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from alignment.arrays import check_shapes, f32
from alignment.metrics.aggregation import SumCount, sum_count

Array = jax.Array


def logprob_change(
    logps: Array, initial_logps: Array, *, where: Optional[Array] = None
) -> SumCount:
  """Mean log-prob change per slot, `mean_i[lp_t(y_k,i) − lp_0(y_k,i)]`.

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
  check_shapes("logprob_change", "logps", logps, exact=True, initial_logps=initial_logps)
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
  """Centered hidden embedding similarity (CHES).

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
  """Length-normalised CHES.

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
