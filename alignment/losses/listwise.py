"""Listwise preference objectives: learning-to-rank on implicit rewards.

Each objective takes `(logps, ref_logps, labels)` `[..., K]` (the last axis is the list of K
responses to one prompt, every leading axis a batch axis), turns them into scores and calls a
generic ranking loss of `alignment.losses.ranking`. The LiPO family uses the implicit reward
`s_i = β·(lp_i − lr_i)`; PRO and KnowPAT are reference-free (average log-probs); TPO scores
responses from per-step token log-ratios.

The K = 2 reduction (`docs/conventions.md`): for K = 2, labels `[1, 0]` and `s = β·ρ`,
`lipo_pair_logistic`, `lipo_listmle` and `lipo_softmax` equal DPO `−logσ(β·h)` exactly,
`lipo_lambda` equals `|2^1 − 2^0|·|1/ln 2 − 1/ln 3|` (≈ 0.532456) × DPO and `lipo_pair_hinge` equals
the SLiC `hinge` `max(0, 1 − β·h)`; with the mean over valid pairs the batch means agree too.

Reductions follow `docs/conventions.md`: pair-based objectives average over all valid pairs of the
input, list-based ones over lists with at least one valid item; `reduce_fn=None` returns the
unreduced values (`[..., K, K]` pair losses or `[...]` list losses), `losses.sum_and_count` the
exact `(sum, count)` pair.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from alignment import scores as scores_lib
from alignment import arrays
from alignment.losses import lambdaweights
from alignment.losses import ranking
from alignment.losses.registry import register

Array = jax.Array
_sg = jax.lax.stop_gradient

_LIPO_PAPER = (
    "LiPO: Listwise Preference Optimization through Learning-to-Rank (Liu, Qin et al., 2024)")
_TPO_PAPER = (
    "TPO: Aligning Large Language Models with Multi-branch & Multi-step Preference Trees "
    "(Liao, Chu, Wang; ICLR 2025); code MrBlankness/TPO"
)
_TPO_INPUTS = ("token_logps", "token_ref_logps", "step_ids", "hidden_states")
_RANKLIST_PAPER = "RankList (Naini, Diaz, Busso, 2025); loss reconstructed"


# ------------------------------------------------------------------------------------------------
# Shared helpers.


def _implicit_rewards(fn_name: str, logps, ref_logps, beta, **others) -> Array:
  """`s = β·(lp − stop_gradient(lr))` `[..., K]`, after checking β > 0 and every shape."""
  arrays.check_positive("beta", beta, where=fn_name)
  arrays.check_shapes(fn_name, "logps", logps, ref_logps=ref_logps, **others)
  return beta * scores_lib.log_ratio(logps, ref_logps)


def _first_valid_mask(labels: Array, valid: Array) -> Array:
  """One-hot `[..., K]` of the best valid item (largest label; first index on ties)."""
  return valid & (arrays.descending_ranks(labels, valid) == 1)


def _check_sorted(fn_name: str, labels, where) -> None:
  """Raises if concrete `labels` are not non-increasing over the valid slots of each list."""
  y, m = arrays.concrete_array(labels), arrays.concrete_array(where)
  if y is None or (where is not None and m is None):
    return
  y = y.astype(np.float64)
  m = np.ones(y.shape, bool) if m is None else np.broadcast_to(m.astype(bool), y.shape)
  earlier_smaller = (y[..., :, None] < y[..., None, :]) & m[..., :, None] & m[..., None, :]
  earlier_smaller &= np.triu(np.ones((y.shape[-1],) * 2, bool), k=1)
  if earlier_smaller.any():
    where_bad = tuple(int(i) for i in np.argwhere(earlier_smaller)[0])
    raise ValueError(
        f"{fn_name}: labels must be sorted best to worst (non-increasing over valid slots); "
        f"list {where_bad[:-2]} has labels[{where_bad[-2]}] < labels[{where_bad[-1]}]."
    )


# ------------------------------------------------------------------------------------------------
# LiPO.


def lipo_pair_logistic(
    logps, ref_logps, labels, *, lengths=None, where=None, weights=None, beta: float = 0.1,
    lambdaweight_fn=None, reduce_fn=jnp.mean,
):
  r"""LiPO pair-logistic (DPO_BT): `Σ_{ψi>ψj} softplus(−(s_i − s_j))`, `s = β·ρ`.

  Paper: *LiPO: Listwise Preference Optimization through Learning-to-Rank* (2024); Rax
  `pairwise_logistic_loss`. Mean over all valid pairs (`docs/conventions.md`). K = 2, labels
  `[1, 0]`: DPO.

  Args:
    logps, ref_logps: `[..., K]` summed policy / reference log-probs.
    labels: `[..., K]` graded preferences ψ (higher is better; ties form no pair).
    lengths: unused (LiPO scores are summed log-ratios); accepted for the common interface.
    where: optional `[..., K]` bool, valid responses.
    weights: optional `[..., K]` item weights (of the better item of each pair).
    beta: β > 0 (default 0.1; LiPO uses 0.05–0.1).
    lambdaweight_fn: optional lambda weights (`alignment.losses.lambdaweights`).
    reduce_fn: `jnp.mean`, `jnp.sum`, `None` (`[..., K, K]`) or `sum_and_count`.
  """
  del lengths  # Unused: LiPO ranks summed log-ratios.
  s = _implicit_rewards("lipo_pair_logistic", logps, ref_logps, beta, labels=labels, where=where,
                        weights=weights)
  return ranking.pairwise_logistic_loss(s, labels, where=where, weights=weights,
                                        lambdaweight_fn=lambdaweight_fn, reduce_fn=reduce_fn)


def lipo_pair_hinge(
    logps, ref_logps, labels, *, lengths=None, where=None, weights=None, beta: float = 0.1,
    lambdaweight_fn=None, reduce_fn=jnp.mean,
):
  r"""LiPO pair-hinge (SLiC): `Σ_{ψi>ψj} max(0, 1 − (s_i − s_j))`, `s = β·ρ`.

  Paper: LiPO (2024); Rax `pairwise_hinge_loss`. Mean over valid pairs. K = 2, labels `[1, 0]`:
  the SLiC `hinge` loss `max(0, 1 − β·h)`. Arguments as in `lipo_pair_logistic`.
  """
  del lengths  # Unused: LiPO ranks summed log-ratios.
  s = _implicit_rewards("lipo_pair_hinge", logps, ref_logps, beta, labels=labels, where=where,
                        weights=weights)
  return ranking.pairwise_hinge_loss(s, labels, where=where, weights=weights,
                                     lambdaweight_fn=lambdaweight_fn, reduce_fn=reduce_fn)


def lipo_listmle(
    logps, ref_logps, labels, *, lengths=None, where=None, weights=None, beta: float = 0.1,
    key=None, reduce_fn=jnp.mean,
):
  r"""LiPO ListMLE (DPO_PL): `−Σ_r [s_{π(r)} − log Σ_{r'≥r} e^{s_{π(r')}}]`, `s = β·ρ`.

  π sorts the valid responses by ψ descending, stably (ties keep input order) unless a PRNG
  `key` breaks ties at random. Paper: LiPO (2024); Rax `listmle_loss`. Mean over lists
  with a valid response. K = 2, labels `[1, 0]`: `−[s_w − log(e^{s_w} + e^{s_l})] − 0` = DPO.
  Other arguments as in `lipo_pair_logistic`; `reduce_fn=None` gives `[...]`.
  """
  del lengths  # Unused: LiPO ranks summed log-ratios.
  s = _implicit_rewards("lipo_listmle", logps, ref_logps, beta, labels=labels, where=where,
                        weights=weights)
  return ranking.listmle_loss(s, labels, key=key, where=where, weights=weights,
                              reduce_fn=reduce_fn)


def lipo_softmax(
    logps, ref_logps, labels, *, lengths=None, where=None, weights=None, beta: float = 0.1,
    reduce_fn=jnp.mean,
):
  r"""LiPO softmax / ListNet: `−Σ_i p_i·log softmax(s)_i`, `p = ψ/Σ_valid ψ`, `s = β·ρ`.

  Labels must be >= 0; an all-zero list gets the uniform target over its valid responses.
  Paper: LiPO (2024); Rax `softmax_loss(label_fn=normalize_probabilities)`. Mean over
  lists with a valid response. K = 2, labels `[1, 0]`: `−log softmax(s)_w` = DPO. Other
  arguments as in `lipo_pair_logistic`; `reduce_fn=None` gives `[...]`.
  """
  del lengths  # Unused: LiPO ranks summed log-ratios.
  s = _implicit_rewards("lipo_softmax", logps, ref_logps, beta, labels=labels, where=where,
                        weights=weights)
  return ranking.softmax_loss(s, labels, where=where, weights=weights,
                              label_fn=ranking.normalize_probabilities, reduce_fn=reduce_fn)


def lipo_lambda(
    logps, ref_logps, labels, *, lengths=None, where=None, weights=None, beta: float = 0.1,
    rax_scaled: bool = False, reduce_fn=jnp.mean,
):
  r"""LiPO-λ: `Σ_{ψi>ψj} Δ_ij·softplus(−(s_i − s_j))`, `s = β·ρ`.

  `Δ_ij = |2^{ψ_i} − 2^{ψ_j}|·|1/ln(1 + τ_i) − 1/ln(1 + τ_j)|` with τ the ranks of the current
  scores (stop-gradient; `lambdaweights.lipo_lambdaweight`). `rax_scaled=True` uses Rax's
  `dcg_lambdaweight` = `K·ln 2·Δ` instead. Paper: LiPO (2024). Mean over valid pairs (the
  weights are not in the denominator). K = 2, labels `[1, 0]`: `0.532456…·DPO` (paper Δ) or
  `2·ln 2·0.532456…·DPO` (`rax_scaled`). Other arguments as in `lipo_pair_logistic`.
  """
  del lengths  # Unused: LiPO ranks summed log-ratios.
  s = _implicit_rewards("lipo_lambda", logps, ref_logps, beta, labels=labels, where=where,
                        weights=weights)
  lambdaweight_fn = functools.partial(lambdaweights.lipo_lambdaweight, rax_scaled=rax_scaled)
  return ranking.pairwise_logistic_loss(s, labels, where=where, weights=weights,
                                        lambdaweight_fn=lambdaweight_fn, reduce_fn=reduce_fn)


def lipo_pointwise(
    logps, ref_logps, labels, *, lengths=None, where=None, weights=None, beta: float = 0.1,
    reduce_fn=jnp.mean,
):
  r"""LiPO pointwise: `−[ψ_i·logσ(s_i) + (1 − ψ_i)·logσ(−s_i)]` per response, `s = β·ρ`.

  Labels must lie in [0, 1]. Paper: LiPO (2024); Rax `pointwise_sigmoid_loss`. Mean over
  valid responses; `reduce_fn=None` gives `[..., K]`. Arguments as in `lipo_pair_logistic`.
  """
  del lengths  # Unused: LiPO ranks summed log-ratios.
  s = _implicit_rewards("lipo_pointwise", logps, ref_logps, beta, labels=labels, where=where,
                        weights=weights)
  return ranking.pointwise_sigmoid_loss(s, labels, where=where, weights=weights,
                                        reduce_fn=reduce_fn)


def labels_from_pairwise_probs(probs, *, where=None) -> Array:
  """LiPO labels `ψ_i = mean_{j ≠ i, valid} P(y_i ≻ y_j)`.

  Args:
    probs: `[..., K, K]`, `probs[..., i, j] = P(y_i ≻ y_j)` from a pairwise reward-ranking
      model (the diagonal is ignored).
    where: optional `[..., K]` bool, valid responses.

  Returns:
    `[..., K]` labels in [0, 1]; 0 for invalid responses and for lists of one valid response.
  """
  probs = arrays.f32(probs)
  if probs.ndim < 2 or probs.shape[-1] != probs.shape[-2]:
    raise ValueError(f"labels_from_pairwise_probs: probs must be [..., K, K], got {probs.shape}.")
  valid = arrays.valid_mask(probs[..., 0], where)
  k = probs.shape[-1]
  others = valid[..., :, None] & valid[..., None, :] & ~jnp.eye(k, dtype=bool)
  return _sg(arrays.masked_mean(probs, others, axis=-1) * valid)


# ------------------------------------------------------------------------------------------------
# PRO.


def pro(
    logps, ref_logps, labels, *, lengths=None, where=None, weights=None, sft_index: int = 0,
    sft_weight: float = 0.05, epsilon: float = 1e-10, reduce_fn=jnp.mean,
):
  r"""PRO: Plackett–Luce over suffixes with reward gaps as inverse temperatures, plus SFT.

  Responses are sorted best to worst by reward `r_1 ≥ … ≥ r_n` (`labels`; checked when
  concrete), scored by their average log-prob `s_k = lp_k / n_k` (reference-free). For each
  stage `t = 1..n−1`, with `T_tj = r_t − r_j` (j > t) and `T_tt = max_{j>t} T_tj`:
  `ℓ_t = log(ε + exp(s_t·T_tt) + Σ_{j>t} exp(s_j·T_tj)) − s_t·T_tt` (a masked logsumexp over
  `[log ε, s_t·T_tt, s_j·T_tj…]`; ε = 0 drops that term). Per list:
  `ℓ = Σ_t w_t·ℓ_t + sft_weight·(n − 1)²·(−lp_{sft_index})` (summed log-prob of the SFT target;
  `n` = valid responses). Reduction: mean over lists, which equals the released
  `Σ_t mean_batch(ℓ_t) + L_sft` when every list has the same n.
  Paper: *Preference Ranking Optimization for Human Alignment* (Song et al., AAAI 2024); code
  `AlibabaResearch/DAMO-ConvAI` (`PRO/train/utils/process_manager.py`). For K = 2 and ε = 0:
  `softplus(−(r_1 − r_2)·(a_1 − a_2))` + the SFT term.

  Args:
    logps: `[..., K]` summed log-probs, sorted best to worst.
    ref_logps: unused (reference-free; pass None).
    labels: `[..., K]` reward-model scores, non-increasing over valid slots.
    lengths: `[..., K]` completion token counts (required).
    where: optional `[..., K]` bool; padded slots are excluded from every stage.
    weights: optional `[..., K]` weights of each response's stage term.
    sft_index: position of the SFT target (default 0, the best; must be < K).
    sft_weight: SFT coefficient (default 0.05, their HH-RLHF script; argparse default 2).
    epsilon: ε >= 0 inside the log (default 1e−10).
    reduce_fn: `jnp.mean` (over lists), `jnp.sum`, `None` (`[...]`) or `sum_and_count`.
  """
  name = "pro"
  del ref_logps  # Reference-free.
  arrays.check_shapes(name, "logps", logps, lengths=lengths)
  k = jnp.shape(logps)[-1]
  arrays.check_range("sft_index", sft_index, low=0, high=k - 1, where=name)
  arrays.check_range("sft_weight", sft_weight, low=0.0, where=name)
  arrays.check_range("epsilon", epsilon, low=0.0, where=name)
  if lengths is None:
    raise ValueError(f"{name}: `lengths` (completion token counts, [..., K]) is required.")
  _check_sorted(name, labels, where)
  s = scores_lib.average_logprob(logps, lengths)
  s, rewards, valid, weights = arrays.prepare_list(name, s, labels, where, weights)
  lp = jnp.where(valid, arrays.f32(logps), 0.0)

  index = jnp.arange(k)
  later = valid[..., :, None] & valid[..., None, :] & (index[None, :] > index[:, None])  # [t, j]
  has_stage = jnp.any(later, axis=-1)
  gaps = arrays.pairwise_differences(rewards)  # T_tj = r_t − r_j
  top_gap = jnp.max(jnp.where(later, gaps, -jnp.inf), axis=-1)
  top_gap = _sg(jnp.where(has_stage, top_gap, 0.0))  # T_tt
  own = s * top_gap  # s_t·T_tt
  logits = jnp.where(later, s[..., None, :] * gaps, 0.0)
  logits = jnp.where(jnp.eye(k, dtype=bool), own[..., :, None], logits)
  terms_mask = later | (jnp.eye(k, dtype=bool) & has_stage[..., :, None])
  log_eps = jnp.log(jnp.maximum(epsilon, jnp.finfo(jnp.float32).tiny))
  logits = jnp.concatenate([logits, jnp.broadcast_to(log_eps, logits.shape[:-1] + (1,))], -1)
  terms_mask = jnp.concatenate(
      [terms_mask, jnp.broadcast_to(epsilon > 0, terms_mask.shape[:-1] + (1,))], -1)
  stage_losses = arrays.masked_logsumexp(logits, terms_mask) - own
  if weights is not None:
    stage_losses = stage_losses * weights
  rank_loss = jnp.sum(jnp.where(has_stage, stage_losses, 0.0), axis=-1)

  n = jnp.sum(valid, axis=-1, dtype=jnp.float32)
  sft = -jnp.where(valid[..., sft_index], lp[..., sft_index], 0.0)
  per_list = rank_loss + sft_weight * jnp.square(jnp.maximum(n - 1.0, 0.0)) * sft
  return arrays.reduce_loss(per_list, arrays.list_mask(valid), reduce_fn)


# ------------------------------------------------------------------------------------------------
# TPO.


def tpo_response_scores(
    token_logps, token_ref_logps, step_ids, hidden_states, *, where=None, max_steps=None,
) -> Array:
  r"""TPO adaptive step reward `S_n = Σ_k w_{n,k}·ρ̄_{n,k} / Σ_k w_{n,k}` `[..., K]`.

  `ρ̄_{n,k}` = mean over the tokens of step k of `lp_t − lr_t`; `w_{n,k} = 1 + cos(h̄_{n,k},
  h̄_{0,k})` (stop-gradient), `h̄_{n,k}` the mean hidden state of step k of response n and
  response 0 the best one. Steps are used up to the minimum step count over the valid
  responses of the list.

  Args:
    token_logps, token_ref_logps: `[..., K, T]` per-token log-probs of policy / reference.
    step_ids: `[..., K, T]` int step index of each token, 1..S; 0 on prompt and padding.
    hidden_states: `[..., K, T, D]` last-layer policy hidden states.
    where: optional `[..., K]` bool, valid responses.
    max_steps: static bound S on the step ids (default T); larger ids raise when concrete.

  Returns:
    `[..., K]` response scores (0 for invalid responses).
  """
  name = "tpo"
  token_logps = arrays.f32(token_logps)
  if token_logps.ndim < 2:
    raise ValueError(f"{name}: token_logps must be [..., K, T], got {token_logps.shape}.")
  arrays.check_shapes(name, "token_logps", token_logps, token_ref_logps=token_ref_logps,
                      step_ids=step_ids)
  if jnp.shape(hidden_states)[:-1] != token_logps.shape:
    raise ValueError(f"{name}: hidden_states must be {token_logps.shape + ('D',)}, got "
                     f"{jnp.shape(hidden_states)}.")
  num_steps = token_logps.shape[-1] if max_steps is None else int(max_steps)
  arrays.check_array_range("step_ids", step_ids, low=0, high=num_steps, where=name)
  valid = arrays.valid_mask(token_logps[..., 0], where)
  step_ids = jnp.asarray(step_ids)
  in_step = step_ids > 0
  rho = jnp.where(in_step, token_logps - _sg(arrays.f32(token_ref_logps)), 0.0)
  hidden = _sg(jnp.where(in_step[..., None], arrays.f32(hidden_states), 0.0))

  one_hot = (step_ids[..., None] == jnp.arange(1, num_steps + 1)).astype(jnp.float32)  # [.,K,T,S]
  counts = jnp.sum(one_hot, axis=-2)  # [..., K, S]
  present = (counts > 0) & valid[..., None]
  step_rho = jnp.einsum("...ts,...t->...s", one_hot, rho) / jnp.maximum(counts, 1.0)
  step_hidden = jnp.einsum("...ts,...td->...sd", one_hot, hidden) / jnp.maximum(counts, 1.0)[
      ..., None]

  n_steps = jnp.sum(present, axis=-1)  # [..., K]
  cap = jnp.min(jnp.where(valid, n_steps, num_steps), axis=-1, keepdims=True)  # [..., 1]
  used = present & present[..., :1, :] & (jnp.arange(1, num_steps + 1) <= cap[..., None])
  best = step_hidden[..., :1, :, :]
  dots = jnp.sum(step_hidden * best, axis=-1)
  norms = jnp.linalg.norm(step_hidden, axis=-1) * jnp.linalg.norm(best, axis=-1)
  cosine = dots / jnp.maximum(norms, 1e-12)
  step_weights = _sg(jnp.where(used, 1.0 + cosine, 0.0))
  total = jnp.sum(step_weights, axis=-1)
  weighted = jnp.sum(step_weights * step_rho, axis=-1)
  return jnp.where(valid & (total > 0), weighted / jnp.where(total > 0, total, 1.0), 0.0)


def _tpo_scores(name, labels, where, token_logps, token_ref_logps, step_ids, hidden_states,
                max_steps):
  for input_name, value in zip(_TPO_INPUTS, (token_logps, token_ref_logps, step_ids,
                                             hidden_states)):
    if value is None:
      raise ValueError(f"{name}: `{input_name}` is required (TPO scores per-step log-ratios).")
  y, m = arrays.concrete_array(labels), arrays.concrete_array(where)
  if y is not None and (where is None or m is not None):
    m = np.ones(y.shape, bool) if m is None else np.broadcast_to(m, y.shape)
    nonempty = m.any(-1)
    best_first = m[..., 0] & (np.where(m, y, -np.inf).max(-1) <= y[..., 0])
    if not (best_first | ~nonempty).all():
      raise ValueError(f"{name}: response 0 must be valid and the best (labels[..., 0] maximal).")
  return tpo_response_scores(token_logps, token_ref_logps, step_ids, hidden_states,
                             where=where, max_steps=max_steps)


def tpo(
    logps, ref_logps, labels, *, token_logps=None, token_ref_logps=None, step_ids=None,
    hidden_states=None, lengths=None, where=None, weights=None, beta: float = 0.5,
    max_steps: Optional[int] = None, reduce_fn=jnp.mean,
):
  r"""TPO (preference trees), library form: LiPO-λ on adaptive step rewards.

  `L = lipo_lambda(scores = β·S, labels = ψ)` with `S` from `tpo_response_scores` (per-step mean
  log-ratios weighted by `1 + cos` similarity of step hidden states to the best response's).
  Paper: *TPO: Aligning Large Language Models with Multi-branch & Multi-step Preference Trees*
  (Liao, Chu, Wang; ICLR 2025), code `MrBlankness/TPO`; this is the paper's intent, not
  the released loss (`tpo_released`). Mean over valid pairs. K = 2, one step per response:
  `0.532456…·DPO` on per-token mean log-ratios.

  Args:
    logps, ref_logps: unused: TPO scores responses from the per-token inputs below (accepted so
      that the common interface holds; may be None).
    labels: `[..., K]` graded scores ψ, response 0 the best.
    token_logps, token_ref_logps: `[..., K, T]` per-token log-probs (required).
    step_ids: `[..., K, T]` int step of each completion token, 1..S; 0 elsewhere (required).
    hidden_states: `[..., K, T, D]` last-layer policy hidden states (required).
    lengths: unused.
    where: optional `[..., K]` bool, valid responses.
    weights: optional `[..., K]` item weights.
    beta: β > 0 (default 0.5, their run).
    max_steps: static bound on step ids (default T).
    reduce_fn: `jnp.mean` (over pairs), `jnp.sum`, `None` or `sum_and_count`.
  """
  name = "tpo"
  del logps, ref_logps, lengths  # TPO scores from the per-token inputs.
  arrays.check_positive("beta", beta, where=name)
  s = _tpo_scores(name, labels, where, token_logps, token_ref_logps, step_ids, hidden_states,
                  max_steps)
  return ranking.pairwise_logistic_loss(beta * s, labels, where=where, weights=weights,
                                        lambdaweight_fn=lambdaweights.lipo_lambdaweight,
                                        reduce_fn=reduce_fn)


def tpo_released(
    logps, ref_logps, labels, *, token_logps=None, token_ref_logps=None, step_ids=None,
    hidden_states=None, lengths=None, where=None, weights=None, beta: float = 0.5,
    max_steps: Optional[int] = None, reduce_fn=jnp.mean,
):
  r"""TPO as released (`MrBlankness/TPO` `loss.py`), for comparison only; not the default.

  `R = Σ_{i,j} −logσ((S_i − S_j)·sign(ψ_i − ψ_j)) / (N(N − 1))` over all ordered pairs of the N
  valid responses, `i = j` and ties included (`log 2` each, no gradient), no lambda weights;
  per list `L = −logσ(β·R)`; mean over lists. `S` as in `tpo`. Known bugs, kept: `−logσ(β·R)`
  decreases in R, so minimising it *increases* the ranking loss; the released log-prob gather
  (every label read from position 0's distribution) is not reproduced: `token_logps` are taken as
  given. `weights` multiply each ordered pair's term by the weight of its first item.
  Arguments as in `tpo`.
  """
  name = "tpo_released"
  del logps, ref_logps, lengths  # TPO scores from the per-token inputs.
  arrays.check_positive("beta", beta, where=name)
  s = _tpo_scores(name, labels, where, token_logps, token_ref_logps, step_ids, hidden_states,
                  max_steps)
  s, labels, valid, weights = arrays.prepare_list(name, s, labels, where, weights)
  both = valid[..., :, None] & valid[..., None, :]
  sign = jnp.sign(arrays.pairwise_differences(labels))
  terms = jax.nn.softplus(-arrays.pairwise_differences(s) * sign)
  if weights is not None:
    terms = terms * weights[..., :, None]
  n = jnp.sum(valid, axis=-1, dtype=jnp.float32)
  ranking_value = jnp.sum(jnp.where(both, terms, 0.0), axis=(-2, -1)) / jnp.maximum(
      n * (n - 1.0), 1.0)
  per_list = jax.nn.softplus(-beta * ranking_value)
  return arrays.reduce_loss(per_list, arrays.list_mask(valid), reduce_fn)


# ------------------------------------------------------------------------------------------------
# KnowPAT.


def knowpat(
    logps, ref_logps, labels, *, lengths=None, where=None, weights=None,
    length_penalty: float = 1.0, align_scale: float = 1.0 / 3.0, rrhf_weight: float = 100.0,
    sft_padded_mean: bool = False, padded_length=None, reduce_fn=jnp.mean,
):
  r"""KnowPAT listwise alignment loss: score-weighted RRHF-style ranking plus SFT on the best.

  Candidates are in positional order best → worst (as in the released code); `s_i = lp_i /
  n_i^{length_penalty}`; `w_i = (s_i − min s)/(max s − min s)` over the valid candidates
  (stop-gradient; 0 when max = min). Per list, over valid candidates i with at least one valid
  candidate after them (`m_i` of them):
  `align = align_scale·Σ_i w_i·[softplus(−s_i) + (1/m_i)·Σ_{j>i} softplus(s_j)]`;
  `sft = −(lp_b / n_b)` for the best-rewarded candidate b = argmax `labels` (first on ties), a
  mean over its valid tokens, or `−lp_b / padded_length` with `sft_padded_mean=True` (the released
  code: a mean over the padded sequence, pad positions contributing 0);
  `ℓ = rrhf_weight·align + sft`; mean over lists. Paper: *Knowledgeable Preference Alignment for
  LLMs in Domain-specific Question Answering* (Zhang et al., 2023); code `zjukg/KnowPAT`
  (`train.py`, `AlignmentTrainer`). For K = 2 (w_0 = 1 if s_0 > s_1):
  `rrhf_weight·align_scale·[softplus(−s_0) + softplus(s_1)] − lp_b/n_b`.

  Args:
    logps: `[..., K]` summed log-probs, candidates best → worst.
    ref_logps: unused (reference-free; pass None).
    labels: `[..., K]` reward scores (choose the SFT target).
    lengths: `[..., K]` completion token counts (required).
    where: optional `[..., K]` bool, valid candidates.
    weights: optional `[..., K]` multiplying each candidate's align term.
    length_penalty: exponent of the length normalisation (1.0).
    align_scale: the released constant 1/3.
    rrhf_weight: weight of the align term (100).
    sft_padded_mean: reproduce the released SFT mean over the padded length.
    padded_length: scalar or `[...]` padded sequence length (required with `sft_padded_mean`).
    reduce_fn: `jnp.mean` (over lists), `jnp.sum`, `None` (`[...]`) or `sum_and_count`.
  """
  name = "knowpat"
  del ref_logps  # Reference-free.
  arrays.check_shapes(name, "logps", logps, lengths=lengths)
  for hp, value in (("length_penalty", length_penalty), ("align_scale", align_scale),
                    ("rrhf_weight", rrhf_weight)):
    arrays.check_range(hp, value, low=0.0, where=name)
  if lengths is None:
    raise ValueError(f"{name}: `lengths` (completion token counts, [..., K]) is required.")
  if sft_padded_mean and padded_length is None:
    raise ValueError(f"{name}: sft_padded_mean=True needs `padded_length`.")
  n_tokens = jnp.maximum(arrays.f32(lengths), 1.0)
  s = arrays.f32(logps) / n_tokens ** length_penalty
  s, labels, valid, weights = arrays.prepare_list(name, s, labels, where, weights)
  lp = jnp.where(valid, arrays.f32(logps), 0.0)

  s_const = _sg(s)
  s_max = jnp.max(jnp.where(valid, s_const, -jnp.inf), axis=-1, keepdims=True)
  s_min = jnp.min(jnp.where(valid, s_const, jnp.inf), axis=-1, keepdims=True)
  spread = jnp.where(jnp.isfinite(s_max - s_min), s_max - s_min, 0.0)
  w = jnp.where((spread > 0) & valid, (s_const - jnp.where(valid, s_min, 0.0)) /
                jnp.where(spread > 0, spread, 1.0), 0.0)
  k = s.shape[-1]
  index = jnp.arange(k)
  after = valid[..., None, :] & (index[None, :] > index[:, None])  # [i, j]: valid j after i.
  n_after = jnp.sum(after, axis=-1, dtype=jnp.float32)
  neg_terms = jnp.sum(jnp.where(after, jax.nn.softplus(s)[..., None, :], 0.0), axis=-1)
  terms = jax.nn.softplus(-s) + neg_terms / jnp.maximum(n_after, 1.0)
  if weights is not None:
    terms = terms * weights
  has_after = valid & (n_after > 0)
  align = align_scale * jnp.sum(jnp.where(has_after, w * terms, 0.0), axis=-1)

  best = _first_valid_mask(labels, valid)
  denominator = (jnp.broadcast_to(arrays.f32(padded_length), best.shape[:-1])[..., None]
                 if sft_padded_mean else n_tokens)
  sft = -jnp.sum(jnp.where(best, lp / denominator, 0.0), axis=-1)
  per_list = rrhf_weight * align + sft
  return arrays.reduce_loss(per_list, arrays.list_mask(valid), reduce_fn)


# ------------------------------------------------------------------------------------------------
# RankList (reconstruction).


def _skip_pairs(labels: Array, valid: Array, max_skip, min_gap) -> Array:
  """`[..., K, K]` pairs `(π(r), π(r + k))`, `1 <= k <= max_skip`, label gap >= `min_gap`."""
  position = arrays.descending_ranks(labels, valid)
  skip = -arrays.pairwise_differences(position)  # position_j − position_i
  gap = arrays.pairwise_differences(labels)
  k = labels.shape[-1]
  max_skip = k - 1 if max_skip is None else max_skip
  return arrays.pair_mask(labels, valid) & (skip <= max_skip) & (gap >= min_gap)


def _ranklist_inputs(name, logps, ref_logps, labels, where, weights, beta, max_skip, min_gap):
  arrays.check_range("max_skip", max_skip, low=1.0, where=name)
  arrays.check_range("min_gap", min_gap, low=0.0, where=name)
  s = _implicit_rewards(name, logps, ref_logps, beta, labels=labels, where=where,
                        weights=weights)
  s, labels, valid, weights = arrays.prepare_list(name, s, labels, where, weights)
  return s, valid, weights, _skip_pairs(labels, valid, max_skip, min_gap)


def ranklist_pairs(
    logps, ref_logps, labels, *, lengths=None, where=None, weights=None, beta: float = 0.1,
    max_skip=None, min_gap: float = 0.0, reduce_fn=jnp.mean,
):
  r"""RankList, pairwise form (default; a **reconstruction**, the paper's exact loss is unknown).

  Valid responses sorted by ψ descending (π, stable); skip-k pairs `P_k = {(π(r), π(r + k))}`
  for `k <= max_skip` (the curriculum `k_max(t)`, see `ranklist_max_skip`; None = K − 1, all
  strict pairs) with label gap `ψ_i − ψ_j >= min_gap` (the minimum margin W, default 0) and
  `ψ_i > ψ_j`; loss = mean over those pairs of `w_i·softplus(−(s_i − s_j))` (RankNet),
  `s = β·ρ`. Paper: RankList (Naini, Diaz, Busso, 2025); the loss is a reconstruction. With
  `max_skip=None` it equals `lipo_pair_logistic`; K = 2, labels `[1, 0]`: DPO.

  Args:
    logps, ref_logps, labels, where, weights, beta: as in `lipo_pair_logistic`.
    lengths: unused.
    max_skip: largest skip k (int >= 1, may be traced); None = all.
    min_gap: minimum label gap W >= 0.
    reduce_fn: `jnp.mean` (over the selected pairs), `jnp.sum`, `None` (`[..., K, K]`) or
      `sum_and_count`.
  """
  name = "ranklist_pairs"
  del lengths  # Unused: scores are summed log-ratios.
  s, _, weights, pairs = _ranklist_inputs(name, logps, ref_logps, labels, where, weights, beta,
                                          max_skip, min_gap)
  losses = jax.nn.softplus(-arrays.pairwise_differences(s))
  if weights is not None:
    losses = losses * weights[..., :, None]
  return arrays.reduce_loss(losses, pairs, reduce_fn)


def ranklist_lse(
    logps, ref_logps, labels, *, lengths=None, where=None, weights=None, beta: float = 0.1,
    max_skip=None, min_gap: float = 0.0, reduce_fn=jnp.mean,
):
  r"""RankList, log-sum-exp form (option; a **reconstruction**, see `ranklist_pairs`).

  Per list, `ℓ = log(1 + Σ_{(i,j)} w_i·exp(−(s_i − s_j)))` over the skip pairs of
  `ranklist_pairs` (a smooth maximum of the pair violations); mean over lists with a valid
  response (`reduce_fn=None` gives `[...]`). K = 2, labels `[1, 0]`: `softplus(−(s_w − s_l))`
  = DPO. Arguments as in `ranklist_pairs`.
  """
  name = "ranklist_lse"
  del lengths  # Unused: scores are summed log-ratios.
  s, valid, weights, pairs = _ranklist_inputs(name, logps, ref_logps, labels, where, weights,
                                              beta, max_skip, min_gap)
  logits = -arrays.pairwise_differences(s)
  if weights is not None:
    pairs = pairs & (weights[..., :, None] > 0)
    logits = logits + jnp.log(jnp.where(pairs, weights[..., :, None], 1.0))
  flat_shape = s.shape[:-1] + (-1,)
  logits = jnp.concatenate([jnp.zeros(s.shape[:-1] + (1,)), logits.reshape(flat_shape)], -1)
  mask = jnp.concatenate([jnp.ones(s.shape[:-1] + (1,), bool), pairs.reshape(flat_shape)], -1)
  per_list = arrays.masked_logsumexp(logits, mask)
  return arrays.reduce_loss(per_list, arrays.list_mask(valid), reduce_fn)


def ranklist_max_skip(step, *, total_steps: int, list_size: int):
  """RankList curriculum (reconstruction): the largest skip grows linearly from 1 to K − 1.

  `k_max(t) = 1 + floor((K − 2)·min(t / total_steps, 1))`; pass it as `max_skip` (it may be a
  traced step counter).
  """
  arrays.check_range("total_steps", total_steps, low=1.0, where="ranklist_max_skip")
  arrays.check_range("list_size", list_size, low=2.0, where="ranklist_max_skip")
  progress = jnp.minimum(jnp.asarray(step, jnp.float32) / total_steps, 1.0)
  return 1 + jnp.floor((list_size - 2) * progress).astype(jnp.int32)


# ------------------------------------------------------------------------------------------------
# Registry.

for _name, _fn in (
    ("lipo_pair_logistic", lipo_pair_logistic),
    ("lipo_pair_hinge", lipo_pair_hinge),
    ("lipo_listmle", lipo_listmle),
    ("lipo_softmax", lipo_softmax),
    ("lipo_lambda", lipo_lambda),
    ("lipo_pointwise", lipo_pointwise),
):
  register(_name, fn=_fn, family="listwise", paper=_LIPO_PAPER)
register(
    "pro", fn=pro, family="listwise", needs_reference=False, needs_lengths=True,
    paper="Preference Ranking Optimization for Human Alignment (Song et al., AAAI 2024); "
    "code AlibabaResearch/DAMO-ConvAI",
)
register("tpo", fn=tpo, family="listwise", extra_inputs=_TPO_INPUTS, paper=_TPO_PAPER)
register("tpo_released", fn=tpo_released, family="listwise", extra_inputs=_TPO_INPUTS,
         paper=_TPO_PAPER)
register(
    "knowpat", fn=knowpat, family="listwise", needs_reference=False, needs_lengths=True,
    paper="Knowledgeable Preference Alignment for LLMs in Domain-specific Question Answering; "
    "code zjukg/KnowPAT",
)
register("ranklist_pairs", fn=ranklist_pairs, family="listwise", aliases=("ranklist",),
         paper=_RANKLIST_PAPER)
register("ranklist_lse", fn=ranklist_lse, family="listwise", paper=_RANKLIST_PAPER)
