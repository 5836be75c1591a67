"""Self-play preference objectives: SPPO's square loss, GPO, ONPO and HyPO.

SPPO, GPO and ONPO regress each log-ratio against the previous-iteration policy (passed as
`ref_logps`) onto a win-probability target; HyPO adds a reverse-KL penalty on the policy's own
samples to DPO. Layout: `alignment.losses.completions`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from alignment import arrays
from alignment.losses import advantages
from alignment.losses import completions
from alignment.losses import pairwise
from alignment.losses.registry import register

Array = jax.Array
_sg = jax.lax.stop_gradient


# ------------------------------------------------------------------------------------------------
# SPPO square loss, GPO and ONPO.


def _square_regression(name, logps, ref_logps, probs, where, beta, reduce_fn, *, counted=None):
  """`Σ_i (ρ_i − (p_i − ½)/β)²` per list over valid items; mean over lists with any valid."""
  arrays.check_positive("beta", beta, where=name)
  if ref_logps is None:
    raise ValueError(f"{name}: `ref_logps` (the previous-iteration policy) is required.")
  lp, valid = completions.sequence_inputs(name, logps, where, ref_logps=ref_logps, probs=probs)
  if counted is not None:
    valid = valid & counted
  rho = lp - completions.masked_rows(ref_logps, valid)
  target = (completions.masked_rows(probs, valid) - 0.5) / beta
  per_list = jnp.sum(jnp.where(valid, jnp.square(rho - target), 0.0), axis=-1)
  return arrays.reduce_loss(per_list, arrays.list_mask(valid), reduce_fn)


def sppo_square(logps, ref_logps, win_probs, *, where=None, beta: float = 0.001,
                reduce_fn=jnp.mean):
  """SPPO square loss: regress each log-ratio onto its estimated win probability.

  `ℓ = Σ_i (ρ_i − (p_i − ½)/β)²`; for a pair `(ρ_w − (p_w − ½)/β)² + (ρ_l − (p_l − ½)/β)²`.
  ρ is relative to the **previous-iteration policy** π_t (pass its log-probs as `ref_logps`),
  `p_i` the estimated win probability of response i against π_t. `sppo_hard` is `p = [1, 0]`.
  β = 0.001 (SPPO's η = 1e3) gives targets of hundreds of nats: keep float32 and a small LR.

  Paper: "Self-Play Preference Optimization for Language Model Alignment" (Wu et al., 2024);
  code uclaml/SPPO.

  Args:
    logps, ref_logps: `[..., K]`. win_probs: `[..., K]` in [0, 1]. where: `[..., K]`.
    beta: β > 0. reduce_fn: reduction over lists (`[...]` unreduced).

  Returns:
    The reduced loss.
  """
  name = "sppo_square"
  arrays.check_array_range("win_probs", win_probs, low=0.0, high=1.0, mask=where, where=name)
  return _square_regression(name, logps, ref_logps, win_probs, where, beta, reduce_fn)


def gpo_targets(preference_scores, rm_scores, *, where=None) -> tuple[Array, Array, Array]:
  """GPO's chosen/rejected responses and their win-probability targets from a GPM score table.

  `P̂[i, j] = S[i, j] − S[j, i]` (raw, not squashed); chosen `w` = argmax of the RM score,
  rejected `l` = argmin (first index on ties; valid responses only); `p_i = Σ_j P̂[i, j]/K` over
  the K valid responses.

  Args:
    preference_scores: `[..., K, K]` GPM scores `S[i, j] = s(y_i ≻ y_j)`.
    rm_scores: `[..., K]` reward-model scores. where: `[..., K]`.

  Returns:
    `(chosen one-hot [..., K], rejected one-hot [..., K], p [..., K])`, stop-gradient; a list
    whose chosen and rejected coincide (fewer than 2 valid responses, or all scores tied) has
    no chosen/rejected.
  """
  name = "gpo_targets"
  s = arrays.f32(preference_scores)
  if s.ndim < 2 or s.shape[-1] != s.shape[-2]:
    raise ValueError(f"{name}: preference_scores must be [..., K, K], got shape {s.shape}.")
  rm = arrays.f32(rm_scores)
  arrays.check_shapes(name, "rm_scores", rm, where=where)
  arrays.check_shapes(name, "preference_scores[..., 0]", s[..., 0], rm_scores=rm)
  valid = arrays.valid_mask(rm, where)
  both = valid[..., :, None] & valid[..., None, :]
  p_hat = jnp.where(both, s - jnp.swapaxes(s, -1, -2), 0.0)
  n = jnp.sum(valid, axis=-1, keepdims=True, dtype=jnp.float32)
  p = jnp.sum(p_hat, axis=-1) / jnp.maximum(n, 1.0)
  k = rm.shape[-1]
  chosen = jax.nn.one_hot(jnp.argmax(jnp.where(valid, rm, -jnp.inf), axis=-1), k, dtype=bool)
  rejected = jax.nn.one_hot(jnp.argmin(jnp.where(valid, rm, jnp.inf), axis=-1), k, dtype=bool)
  distinct = jnp.any(chosen != rejected, axis=-1, keepdims=True) & (n >= 2.0)
  return chosen & distinct & valid, rejected & distinct & valid, _sg(p)


def gpo(logps, ref_logps, rm_scores, *, preference_scores, where=None, beta: float = 0.001,
        reduce_fn=jnp.mean):
  """GPO: `sppo_square` on the RM-best and RM-worst of K self-play samples with GPM targets.

  Per prompt (K = 5 samples of the current policy): `S[i, j] = s(y_i ≻ y_j)` (a GPM,
  `alignment.rewards.gpm_score`), `P̂ = S − Sᵀ`, chosen = argmax RM score, rejected = argmin,
  `p_w = Σ_j P̂[w, j]/K`, `p_l = Σ_j P̂[l, j]/K` (`gpo_targets`);
  `ℓ = (ρ_w − (p_w − ½)/β)² + (ρ_l − (p_l − ½)/β)²`, ρ relative to the previous-iteration policy.
  β = 0.001, lr 5e−7. The exact GPO loss and its clamp threshold are unverified; this is the
  SPPO-square form.

  Paper: "General Preference Modeling with Preference Representations for Aligning Language
  Models"; code general-preference/general-preference-model.

  Args:
    logps, ref_logps, rm_scores, where: `[..., K]`. preference_scores: `[..., K, K]`.
    beta: β > 0. reduce_fn: reduction over prompts (`[...]` unreduced).

  Returns:
    The reduced loss.
  """
  chosen, rejected, p = gpo_targets(preference_scores, rm_scores, where=where)
  return _square_regression("gpo", logps, ref_logps, p, where, beta, reduce_fn,
                            counted=chosen | rejected)


def onpo(logps, ref_logps, win_probs, *, prev_win_probs, where=None, beta: float = 0.001,
         reduce_fn=jnp.mean):
  """ONPO (paper level): `sppo_square` with the optimistic target `p̃ = 2·p_t − p_{t−1}`.

  Optimistic online mirror descent on the preference game,
  `π_{t+1} ∝ π_t·exp(η·(2·P(· ≻ π_t) − P(· ≻ π_{t−1})))`, in SPPO's practical square-loss form:
  `ℓ = Σ_i (ρ_i − (p̃_i − ½)/β)²`, ρ relative to π_t, p_t / p_{t−1} the win probabilities against
  the current / previous policy. The paper's exact loss is not pinned: this is its paper-level
  form.

  Paper: "Improving LLM General Preference Alignment via Optimistic Online Mirror Descent".

  Args:
    logps, ref_logps, where: `[..., K]`. win_probs, prev_win_probs: `[..., K]` in [0, 1].
    beta: β > 0. reduce_fn: reduction over lists (`[...]` unreduced).

  Returns:
    The reduced loss.
  """
  name = "onpo"
  for arg, value in (("win_probs", win_probs), ("prev_win_probs", prev_win_probs)):
    arrays.check_array_range(arg, value, low=0.0, high=1.0, mask=where, where=name)
  target = 2.0 * arrays.f32(win_probs) - arrays.f32(prev_win_probs)
  return _square_regression(name, logps, ref_logps, target, where, beta, reduce_fn)


# ------------------------------------------------------------------------------------------------
# HyPO.


def hypo(
    logps, ref_logps, labels=None, *, online_logps, online_ref_logps, online_where=None,
    beta: float, kl_weight: float, where=None, reduce_fn=jnp.mean,
):
  """HyPO: DPO on offline pairs plus a reverse-KL penalty on the policy's own samples.

  `L = mean_pairs ℓ_DPO + λ·E_{x, y∼π_θ}[lp(y) − lr(y)]`. The KL term's gradient is the score
  function estimate with a leave-one-out baseline over the k online samples of a prompt, through
  the surrogate `(1/k)·Σ_i sg(ρ_i − mean_{j≠i} ρ_j)·lp(y_i)` (reconstruction of the estimator;
  its value is not the KL). Each prompt's online samples count only if its offline slots are
  valid. β, λ and k have no recovered defaults (required).

  Paper: "The Importance of Online Data: Understanding Preference Fine-tuning via Coverage"
  (Song et al., NeurIPS 2024).

  Args:
    logps, ref_logps, labels, where: `[..., 2]` offline pairs (slot 0 chosen, as `dpo`).
    online_logps, online_ref_logps: `[..., k]` summed log-probs of k samples of π_θ per prompt.
    online_where: `[..., k]` valid online samples.
    beta: DPO β > 0. kl_weight: λ >= 0.
    reduce_fn: `[...]` unreduced per-prompt values whose mean is L (`arrays.as_mean_over`).

  Returns:
    The reduced loss.
  """
  name = "hypo"
  arrays.check_range("kl_weight", kl_weight, low=0.0, where=name)
  dpo_values = pairwise.dpo(logps, ref_logps, labels, where=where, beta=beta, reduce_fn=None)
  labels = jnp.asarray([1.0, 0.0]) if labels is None else labels
  pair_valid = jnp.any(arrays.pair_mask(jnp.broadcast_to(arrays.f32(labels), jnp.shape(logps)),
                                        where), axis=(-2, -1))
  prompt_valid = jnp.any(arrays.valid_mask(logps, where), axis=-1)
  lp, online_valid = completions.sequence_inputs(name, online_logps, online_where,
                                      online_ref_logps=online_ref_logps)
  if lp.shape[:-1] != prompt_valid.shape:
    raise ValueError(f"{name}: online_logps {lp.shape} must share the leading axes of logps "
                     f"{jnp.shape(logps)}.")
  online_valid = online_valid & prompt_valid[..., None]
  rho = lp - completions.masked_rows(online_ref_logps, online_valid)
  a = advantages.rloo_advantages(jnp.where(online_valid, rho, 0.0), where=online_valid)
  k = jnp.sum(online_valid, axis=-1, dtype=jnp.float32)
  surrogate = jnp.sum(jnp.where(online_valid, a * lp, 0.0), axis=-1) / jnp.maximum(k, 1.0)
  has_online = k > 0
  valid = pair_valid | has_online
  values = (
      arrays.as_mean_over(dpo_values, pair_valid, valid, jnp.sum(pair_valid, dtype=jnp.float32))
      + kl_weight * arrays.as_mean_over(surrogate, has_online, valid,
                                  jnp.sum(has_online, dtype=jnp.float32)))
  return arrays.reduce_loss(values, valid, reduce_fn)


# ------------------------------------------------------------------------------------------------
# Registry.

for _name, _fn, _paper, _extra in (
    ("sppo_square", sppo_square,
     "Self-Play Preference Optimization for Language Model Alignment; code uclaml/SPPO", {}),
    ("gpo", gpo,
     "General Preference Modeling with Preference Representations for Aligning Language Models; "
     "code general-preference/general-preference-model",
     dict(extra_inputs=("preference_scores",))),
    ("onpo", onpo,
     "Improving LLM General Preference Alignment via Optimistic Online Mirror Descent (paper "
     "level)", dict(extra_inputs=("prev_win_probs",))),
    ("hypo", hypo,
     "The Importance of Online Data: Understanding Preference Fine-tuning via Coverage (Song et "
     "al., NeurIPS 2024)", dict(extra_inputs=("online_logps", "online_ref_logps"))),
):
  register(_name, fn=_fn, family="group", paper=_paper, **_extra)
