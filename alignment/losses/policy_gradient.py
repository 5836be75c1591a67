"""Policy-gradient objectives over K completions per prompt.

PPO's clipped surrogate, the GRPO family, REINFORCE with a leave-one-out baseline (RLOO), CoPG,
Pref-GRPO, TRPA and A-LoL. Layout: `alignment.losses.completions`. Registered objectives put the
per-completion signal in the `labels` slot of the uniform signature: `rewards` (higher is better),
`advantages`, TRPA's preference `levels` (lower is better) or, for `mo_grpo`, `rewards_per_func`
`[..., K, F]`.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from alignment import arrays
from alignment import scores
from alignment.losses import completions
from alignment.losses.advantages import (
    KL_ESTIMATORS, grpo_advantages, kl_estimate, multi_reward_advantages, rloo_advantages)
from alignment.losses.registry import register

Array = jax.Array
_sg = jax.lax.stop_gradient

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")


# ------------------------------------------------------------------------------------------------
# Clipped surrogate with KL and aggregation, and the GRPO family.


def _clipped_surrogate(
    name, logps, advantages, *, mask, old_logps, ref_logps, where, epsilon, epsilon_high, delta,
    beta_kl, kl_estimator, importance_sampling_level, loss_type, max_completion_length,
    reduce_fn,
):
  """The clipped surrogate loss; see `clipped_surrogate_loss`."""
  lp, token_valid, seq_valid = completions.token_inputs(
      name, logps, mask, where, old_logps=old_logps, ref_logps=ref_logps)
  arrays.check_shapes(name, "logps[..., 0] ([..., K])", lp[..., 0], advantages=advantages)
  arrays.check_choice("loss_type", loss_type, LOSS_TYPES, where=name)
  arrays.check_choice("kl_estimator", kl_estimator, KL_ESTIMATORS, where=name)
  arrays.check_choice("importance_sampling_level", importance_sampling_level,
                      IMPORTANCE_SAMPLING_LEVELS, where=name)
  epsilon_high = epsilon if epsilon_high is None else epsilon_high
  arrays.check_range("epsilon", epsilon, low=0.0, high=1.0, high_inclusive=False, where=name)
  arrays.check_range("epsilon_high", epsilon_high, low=0.0, where=name)
  arrays.check_range("beta_kl", beta_kl, low=0.0, where=name)
  if delta is not None:
    arrays.check_range("delta", delta, low=1.0, low_inclusive=False, where=name)
  old = _sg(lp) if old_logps is None else completions.token_values(old_logps, token_valid)
  log_ratio = lp - old
  if importance_sampling_level == "sequence":  # GSPO: one length-normalised ratio per sequence
    log_ratio = arrays.masked_mean(log_ratio, token_valid, axis=-1)[..., None]
  ratio = scores.clipped_exp(log_ratio)
  a = completions.masked_rows(advantages, seq_valid)[..., None]
  unclipped = ratio if delta is None else jnp.minimum(ratio, delta)
  clipped = jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon_high)
  per_token = -jnp.minimum(unclipped * a, clipped * a)
  if completions.need_reference(name, ref_logps, beta_kl, "beta_kl"):
    ref = completions.token_values(ref_logps, token_valid)
    per_token = per_token + beta_kl * kl_estimate(lp, ref, estimator=kl_estimator)
  per_token = jnp.where(token_valid, per_token, 0.0)
  if loss_type in ("bnpo", "dapo"):  # token mean over the whole input
    return arrays.reduce_loss(per_token, token_valid, reduce_fn)
  total = jnp.sum(per_token, axis=-1)
  if loss_type == "grpo":  # per-sequence token mean, then mean over sequences
    per_seq = total / jnp.maximum(jnp.sum(token_valid, axis=-1, dtype=jnp.float32), 1.0)
  else:  # dr_grpo: a constant normaliser L_max
    l_max = lp.shape[-1] if max_completion_length is None else max_completion_length
    arrays.check_positive("max_completion_length", l_max, where=name)
    per_seq = total / l_max
  return arrays.reduce_loss(per_seq, seq_valid, reduce_fn)


def clipped_surrogate_loss(
    logps, advantages, *, mask, old_logps=None, ref_logps=None, where=None,
    epsilon: float = 0.2, epsilon_high: Optional[float] = None, delta: Optional[float] = None,
    beta_kl: float = 0.0, kl_estimator: str = "k3", importance_sampling_level: str = "token",
    loss_type: str = "grpo", max_completion_length: Optional[int] = None, reduce_fn=jnp.mean,
):
  """PPO's clipped surrogate per token with a KL penalty and an explicit aggregation.

  `r_t = exp(lp_t − old_lp_t)` (`importance_sampling_level="token"`) or one ratio per sequence
  `exp(Σ_t m_t(lp_t − old_lp_t)/Σ_t m_t)` ("sequence", GSPO: "Group Sequence Policy
  Optimization"); exponents clipped at 80.
  `ℓ_t = −min(r̂_t·A, clip(r_t, 1 − ε_low, 1 + ε_high)·A) + β_KL·k_t`, with `r̂_t = min(r_t, δ)`
  when `delta` is set (two-sided clipping; unclipped term only) and k_t a `kl_estimate` against
  the reference. Aggregation (`loss_type`, m = valid completion tokens):
  - "grpo": mean over sequences of `Σ_t mℓ/Σ_t m` (length-biased; DeepSeekMath);
  - "bnpo", "dapo": `Σ mℓ/Σ m` over the input. They coincide on one input; they differ in
    accumulation: bnpo averages per micro-batch means, dapo (TRL default) divides global sums by
    the global token count, which `reduce_fn=sum_and_count` returns as `(Σ mℓ, Σ m)`;
  - "dr_grpo": `Σ mℓ/(B·L_max)`, B = valid sequences, L_max = `max_completion_length` (default T).

  With `old_logps=None` (one update per batch) `old_logps = stop_gradient(logps)`: the ratio is 1
  and the gradient is the policy gradient `−A·∇lp_t` (per aggregation weight).
  Defaults: ε = 0.2, ε_high = ε (DAPO recommends 0.28), β_KL = 0 (DeepSeek-R1 used 0.001).

  Args:
    logps: `[..., K, T]` per-token policy log-probs.
    advantages: `[..., K]` per-completion advantages (stop-gradient).
    mask: `[..., K, T]` completion mask. old_logps, ref_logps: `[..., K, T]` (stop-gradient);
      `ref_logps` may be None when `beta_kl == 0`.
    where: `[..., K]` valid completions.
    epsilon, epsilon_high, delta, beta_kl, kl_estimator, importance_sampling_level, loss_type,
      max_completion_length: see above.
    reduce_fn: reduction over sequences (`[..., K]` unreduced) for "grpo"/"dr_grpo", over tokens
      (`[..., K, T]` unreduced) for "bnpo"/"dapo".

  Returns:
    The reduced loss.
  """
  return _clipped_surrogate(
      "clipped_surrogate_loss", logps, advantages, mask=mask, old_logps=old_logps,
      ref_logps=ref_logps, where=where, epsilon=epsilon, epsilon_high=epsilon_high, delta=delta,
      beta_kl=beta_kl, kl_estimator=kl_estimator,
      importance_sampling_level=importance_sampling_level, loss_type=loss_type,
      max_completion_length=max_completion_length, reduce_fn=reduce_fn)


def grpo_loss(
    logps, ref_logps, rewards, *, mask, old_logps=None, where=None,
    scale_rewards: str = "group", advantage_epsilon: float = 1e-4, epsilon: float = 0.2,
    epsilon_high: Optional[float] = None, delta: Optional[float] = None, beta_kl: float = 0.0,
    kl_estimator: str = "k3", importance_sampling_level: str = "token", loss_type: str = "grpo",
    max_completion_length: Optional[int] = None, reduce_fn=jnp.mean,
):
  """GRPO: group-standardised advantages in PPO's clipped surrogate, optional KL penalty.

  `A = grpo_advantages(rewards, scale_rewards, ε_adv = 1e−4)`, then
  `ℓ_t = −min(r_t·A, clip(r_t, 1 − ε, 1 + ε_high)·A) + β_KL·k3_t`, aggregated by `loss_type`
  ("grpo" per-sequence token mean then sequence mean, default; "bnpo"/"dapo" token mean;
  "dr_grpo" `Σ mℓ/(B·L_max)`); see `clipped_surrogate_loss`. TRL's default is `loss_type="dapo"`.
  The reference is needed only when β_KL > 0 (default 0).

  Paper: "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models"
  (Shao et al., 2024); reference semantics TRL `GRPOTrainer`.

  Args:
    logps: `[..., K, T]` per-token policy log-probs; ref_logps, old_logps: the same shape
      (stop-gradient; `old_logps=None` means one update per batch).
    rewards: `[..., K]` (NaN = no reward: advantage 0).
    mask: `[..., K, T]` completion mask. where: `[..., K]` valid completions.
    scale_rewards, advantage_epsilon: as `grpo_advantages`.
    epsilon, epsilon_high, delta, beta_kl, kl_estimator, importance_sampling_level, loss_type,
      max_completion_length, reduce_fn: as `clipped_surrogate_loss`.

  Returns:
    The reduced loss.
  """
  name = "grpo_loss"
  a = grpo_advantages(rewards, where=where, scale_rewards=scale_rewards, epsilon=advantage_epsilon)
  return _clipped_surrogate(
      name, logps, a, mask=mask, old_logps=old_logps, ref_logps=ref_logps, where=where,
      epsilon=epsilon, epsilon_high=epsilon_high, delta=delta, beta_kl=beta_kl,
      kl_estimator=kl_estimator, importance_sampling_level=importance_sampling_level,
      loss_type=loss_type, max_completion_length=max_completion_length, reduce_fn=reduce_fn)


def dr_grpo(
    logps, ref_logps, rewards, *, mask, old_logps=None, where=None, epsilon: float = 0.2,
    epsilon_high: Optional[float] = None, delta: Optional[float] = None, beta_kl: float = 0.0,
    kl_estimator: str = "k3", max_completion_length: Optional[int] = None, reduce_fn=jnp.mean,
):
  """Dr. GRPO: GRPO without the std normalisation and the per-sequence length normalisation.

  `A = r − μ_g` (`scale_rewards="none"`) and `L = Σ mℓ/(B·L_max)` (`loss_type="dr_grpo"`,
  L_max = `max_completion_length`, default T): removes the per-question std bias and the
  per-sequence length bias of GRPO's gradient. Otherwise as `grpo_loss`.

  Paper: "Understanding R1-Zero-Like Training: A Critical Perspective" (Liu et al., 2025).

  Args:
    As `grpo_loss`.

  Returns:
    The reduced loss (`[..., K]` per-sequence values for `reduce_fn=None`).
  """
  return grpo_loss(
      logps, ref_logps, rewards, mask=mask, old_logps=old_logps, where=where,
      scale_rewards="none", epsilon=epsilon, epsilon_high=epsilon_high, delta=delta,
      beta_kl=beta_kl, kl_estimator=kl_estimator, loss_type="dr_grpo",
      max_completion_length=max_completion_length, reduce_fn=reduce_fn)


def mo_grpo(
    logps, ref_logps, rewards_per_func, *, mask, old_logps=None, where=None, reward_weights=None,
    aggregation: str = "normalize_then_sum", scale_rewards: str = "group",
    advantage_epsilon: float = 1e-4, epsilon: float = 0.2, epsilon_high: Optional[float] = None,
    delta: Optional[float] = None, beta_kl: float = 0.0, kl_estimator: str = "k3",
    loss_type: str = "grpo", max_completion_length: Optional[int] = None, reduce_fn=jnp.mean,
):
  """MO-GRPO: GRPO on F reward heads (e.g. politeness, meaningfulness, actionability, safety).

  `A = multi_reward_advantages(rewards_per_func, reward_weights, aggregation)` with equal
  weights and `normalize_then_sum` by default (per-head group z-scores, weighted sum, batch
  z-score: heads differ in scale); the policy step is `grpo_loss`'s clipped surrogate.

  Paper: "Optimizing Safe and Aligned Language Generation: A Multi-Objective GRPO Approach"
  (Li, Li, Kosuga, Bian, 2025); no code released. The reward model's per-head MSE training is
  outside this function.

  Args:
    rewards_per_func: `[..., K, F]` head rewards (NaN = abstains).
    reward_weights: `[F]` (default 1). aggregation: "normalize_then_sum" or "sum_then_normalize".
    Others: as `grpo_loss`.

  Returns:
    The reduced loss.
  """
  a = multi_reward_advantages(
      rewards_per_func, where=where, reward_weights=reward_weights, aggregation=aggregation,
      scale_rewards=scale_rewards, epsilon=advantage_epsilon)
  return _clipped_surrogate(
      "mo_grpo", logps, a, mask=mask, old_logps=old_logps, ref_logps=ref_logps, where=where,
      epsilon=epsilon, epsilon_high=epsilon_high, delta=delta, beta_kl=beta_kl,
      kl_estimator=kl_estimator, importance_sampling_level="token", loss_type=loss_type,
      max_completion_length=max_completion_length, reduce_fn=reduce_fn)


# ------------------------------------------------------------------------------------------------
# REINFORCE with the leave-one-out baseline (RLOO) and CoPG: sequence level.


def reinforce_loss(
    logps, ref_logps, rewards, *, where=None, beta_kl: float = 0.05,
    normalize_advantages: bool = False, reduce_fn=jnp.mean,
):
  """RLOO: REINFORCE with the leave-one-out mean of the other G − 1 rewards as baseline.

  KL in the reward: `r̃_i = r_i − β_KL·(lp_i − lr_i)` (k1 summed over the sequence), then
  `A = rloo_advantages(r̃)` (stop-gradient; optionally whitened over the input) and
  `ℓ_i = −A_i·lp_i` (sequence-level REINFORCE), mean over valid completions. For several updates
  per batch feed the advantages into `clipped_surrogate_loss` instead.

  Paper: "Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human
  Feedback in LLMs" (Ahmadian et al., 2024). β_KL = 0.05 (TRL's RLOO default; unverified for
  current TRL); whitening off.

  Args:
    logps, ref_logps: `[..., K]` summed completion log-probs (K >= 2 per prompt); `ref_logps`
      may be None when `beta_kl == 0`.
    rewards: `[..., K]` sequence rewards. where: `[..., K]` valid completions.
    beta_kl: β_KL >= 0. normalize_advantages: whiten A (mean 0, Bessel std 1, + 1e−8).
    reduce_fn: reduction over completions (see `docs/conventions.md`).

  Returns:
    The reduced loss (`[..., K]` for `reduce_fn=None`).
  """
  name = "reinforce_loss"
  lp, valid = completions.sequence_inputs(name, logps, where, ref_logps=ref_logps, rewards=rewards)
  arrays.check_range("beta_kl", beta_kl, low=0.0, where=name)
  shaped = completions.masked_rows(rewards, valid)
  if completions.need_reference(name, ref_logps, beta_kl, "beta_kl"):
    shaped = shaped - beta_kl * _sg(lp - completions.masked_rows(ref_logps, valid))
  a = rloo_advantages(shaped, where=valid)
  if normalize_advantages:
    mean, std, _ = completions.group_moments(a, valid, axis=None)
    a = jnp.where(valid, (a - mean) / (std + 1e-8), 0.0)
  return arrays.reduce_loss(-a * lp, valid, reduce_fn)


def copg(logps, ref_logps, rewards, *, beta: float, where=None, reduce_fn=jnp.mean):
  """CoPG: contrastive policy gradient on sequence rewards (generalises IPO and RLOO).

  `R_β(y) = R(x, y) − β·(lp(y) − lr(y))`; per prompt with k >= 2 valid samples
  `ℓ = (1/(k−1))·Σ_{i>j} (R_β(y_i) − R_β(y_j))² = (k/(k−1))·Σ_i (R_β(y_i) − mean R_β)²`,
  any sampling distribution, no importance weights; mean over prompts with k >= 2. At the
  optimum `π* ∝ π_ref·exp(R/β)` all `R_β` are equal. Its gradient in lp_i is
  `−2β·(k/(k−1))·(R_β,i − mean R_β)`, i.e. −2β times the RLOO advantage of `R_β`.

  Paper: "Contrastive Policy Gradient: Aligning LLMs on sequence-level scores in a
  supervised-friendly fashion" (Flet-Berliac et al., EMNLP 2024); no code, formula from a
  secondary summary. Scale-sensitive (standardise R); β is required (no published default).

  Args:
    logps, ref_logps, rewards, where: `[..., K]` (rewards stop-gradient).
    beta: β > 0 (required).
    reduce_fn: reduction over prompts (`[...]` unreduced).

  Returns:
    The reduced loss.
  """
  name = "copg"
  arrays.check_positive("beta", beta, where=name)
  lp, valid = completions.sequence_inputs(name, logps, where, ref_logps=ref_logps, rewards=rewards)
  completions.check_group(name, "logps", lp)
  if ref_logps is None:
    raise ValueError(f"{name}: `ref_logps` is required.")
  ref = completions.masked_rows(ref_logps, valid)
  r_beta = completions.masked_rows(rewards, valid) - beta * (lp - ref)
  mean, _, k = completions.group_moments(r_beta, valid)
  spread = jnp.sum(jnp.where(valid, jnp.square(r_beta - mean), 0.0), axis=-1)
  k = k[..., 0]
  return arrays.reduce_loss(k / jnp.maximum(k - 1.0, 1.0) * spread, k >= 2.0, reduce_fn)


# ------------------------------------------------------------------------------------------------
# Pref-GRPO and TRPA.


def bradley_terry_preferences(scores_) -> Array:
  """Soft Bradley–Terry judgements `P[..., i, j] = σ(s_i − s_j)` from `[..., K]` scores."""
  s = arrays.f32(scores_)
  return jax.nn.sigmoid(arrays.pairwise_differences(s))


def pref_grpo_rewards(preferences, *, where=None, decimals: int = 3) -> Array:
  """Pref-GRPO rewards: each completion's win rate against the others of its group.

  `win_i = Σ_{j≠i} P[i, j]` over valid j (hard judgements 1/0/½ give `#wins + ½·#ties`; soft
  judges such as `bradley_terry_preferences` or a GPM give probabilities),
  `r_i = round(win_i / max(n_i, 1), 3)`, `n_i = G − 1` valid opponents. Rounding creates ties;
  all-tie groups give A = 0 (see `zero_std_fraction`). The per-dimension mixing
  (`overall_weight`, `dim_weight`) of the official code is not implemented.

  Paper: "Pref-GRPO: Pairwise Preference Reward-based GRPO for Stable Text-to-Image
  Reinforcement Learning"; code CodeGoat24/Pref-GRPO (`fastvideo/rewards/`).

  Args:
    preferences: `[..., K, K]`, `P[i, j]` = judged probability (or 1/0/½) that i beats j, in
      [0, 1]; the diagonal is ignored.
    where: `[..., K]` valid completions.
    decimals: rounding of the win rate (3).

  Returns:
    `[..., K]` rewards in [0, 1] (0 for padded slots), stop-gradient.

  Example:
    >>> import jax.numpy as jnp
    >>> p = jnp.array([[0.0, 1.0, 0.5], [0.0, 0.0, 1.0], [0.5, 0.0, 0.0]])
    >>> [round(x, 6) for x in pref_grpo_rewards(p).tolist()]  # (1 + ½)/2, 1/2, ½/2
    [0.75, 0.5, 0.25]
  """
  name = "pref_grpo_rewards"
  p = arrays.f32(preferences)
  if p.ndim < 2 or p.shape[-1] != p.shape[-2]:
    raise ValueError(f"{name}: preferences must be [..., K, K], got shape {p.shape}.")
  valid = arrays.valid_mask(p[..., 0], where)
  arrays.check_shapes(name, "preferences[..., 0]", p[..., 0], where=where)
  opponents = valid[..., :, None] & valid[..., None, :] & ~jnp.eye(p.shape[-1], dtype=bool)
  arrays.check_array_range("preferences", p, low=0.0, high=1.0, mask=opponents, where=name)
  wins = jnp.sum(jnp.where(opponents, p, 0.0), axis=-1)
  n = jnp.sum(opponents, axis=-1, dtype=jnp.float32)
  rate = jnp.round(wins / jnp.maximum(n, 1.0), decimals)
  return _sg(jnp.where(valid, rate, 0.0))


def pref_grpo_advantages(rewards, *, where=None, epsilon: float = 1e-8, clip: float = 5.0):
  """Pref-GRPO advantages: `A = clip((r − mean_g)/(std_g + 1e−8), −5, 5)` (Bessel, per group)."""
  arrays.check_positive("clip", clip, where="pref_grpo_advantages")
  a = grpo_advantages(rewards, where=where, scale_rewards="group", epsilon=epsilon)
  return jnp.clip(a, -clip, clip)


def trpa_loss(
    logps, ref_logps, levels, *, mask, old_logps=None, where=None, beta: float = 0.1,
    anisotropy: float = 2.5, trust_region_coef: float = 0.001, reduce_fn=jnp.mean,
):
  """TRPA: rule-based preference levels turned into DPO-style pairs, plus a trust region.

  Score `s_i = masked mean_t (lp_t − lr_t)`. Pairs: every `(i, j)` of a group with
  `level_i < level_j` (lower level = better, e.g. 1 correct, 2 wrong, 3 unparseable, 4 bad
  format); `h_ij = c_i·β·(s_i − s_j)` with `c_i = anisotropy` (2.5) if `level_i = 1` else 1;
  `L_pref = Σ M_ij·softplus(−h_ij) / Σ M_ij` over all pairs of the input. If the input has no
  pair (`Σ M = 0`), `L_pref = mean_i ℓ_i` with `ℓ_i = softplus(−s_i)` for level-1 rollouts and
  `softplus(s_i)` otherwise. Total `L = L_pref + c_tr·mean_tok k3(π_θ ‖ π_old)`, c_tr = 0.001,
  k3 clamped to [−10, 10] (`low_var_kl`); no reference-KL term. The code's optional
  `sqrt(KL + 0.25)` variant is not implemented.

  Paper: "Trust Region Preference Approximation: A simple and stable RL algorithm for LLM
  reasoning"; code XueruiSu/Trust-Region-Preference-Approximation
  (`compute_pairwise_policy_loss`). β = 0.1, anisotropy 2.5, G = 16 rollouts.

  Args:
    logps, ref_logps, old_logps: `[..., K, T]` per-token log-probs (reference and sampling
      policy stop-gradient; `old_logps=None` = one update per batch).
    levels: `[..., K]` preference levels (lower is better).
    mask: `[..., K, T]` completion mask. where: `[..., K]` valid rollouts.
    beta, anisotropy, trust_region_coef: see above.
    reduce_fn: reduction over rollouts; `[..., K]` unreduced values whose mean is L (each pair's
      term is attributed to its better rollout, each term rescaled as a mean,
      `arrays.as_mean_over`).

  Returns:
    The reduced loss.
  """
  name = "trpa_loss"
  arrays.check_positive("beta", beta, where=name)
  arrays.check_range("anisotropy", anisotropy, low=0.0, low_inclusive=False, where=name)
  arrays.check_range("trust_region_coef", trust_region_coef, low=0.0, where=name)
  if ref_logps is None:
    raise ValueError(f"{name}: `ref_logps` is required.")
  lp, token_valid, valid = completions.token_inputs(
      name, logps, mask, where, ref_logps=ref_logps, old_logps=old_logps)
  arrays.check_shapes(name, "logps[..., 0] ([..., K])", lp[..., 0], levels=levels)
  levels = completions.masked_rows(levels, valid)
  ref = completions.token_values(ref_logps, token_valid)
  s = arrays.masked_mean(lp - ref, token_valid, axis=-1)
  pairs = arrays.pair_mask(-levels, valid)  # (i, j): level_i < level_j
  c = jnp.where(levels == 1.0, anisotropy, 1.0)[..., :, None]
  h = c * beta * arrays.pairwise_differences(s)
  pair_sum = jnp.sum(jnp.where(pairs, jax.nn.softplus(-h), 0.0), axis=-1)
  n_pairs = jnp.sum(pairs, dtype=jnp.float32)
  fallback = jax.nn.softplus(jnp.where(levels == 1.0, -s, s))
  pref = jnp.where(n_pairs > 0, arrays.as_mean_over(pair_sum, valid, valid, n_pairs), fallback)
  old = _sg(lp) if old_logps is None else completions.token_values(old_logps, token_valid)
  k3 = jnp.where(token_valid, kl_estimate(lp, old, estimator="low_var_kl"), 0.0)
  n_tokens = jnp.sum(token_valid, dtype=jnp.float32)
  trust = arrays.as_mean_over(jnp.sum(k3, axis=-1), valid, valid, n_tokens)
  return arrays.reduce_loss(pref + trust_region_coef * trust, valid, reduce_fn)


# ------------------------------------------------------------------------------------------------
# A-LoL: offline advantage-weighted policy gradient.


def _alol_ratio(logps, ref_logps, epsilon) -> Array:
  """`sg(clip(exp(lp − lr), 1 − ε, 1 + ε))`, clipping the log-ratio before the exp."""
  rho = arrays.f32(logps) - arrays.f32(ref_logps)
  return _sg(jnp.exp(jnp.clip(rho, jnp.log1p(-epsilon), jnp.log1p(epsilon))))


def _alol_prepare(name, logps, ref_logps, advantages, where, epsilon=None):
  """Checks A-LoL's sequence-level inputs; returns `(lp, advantages, valid, positive)`."""
  lp, valid = completions.sequence_inputs(name, logps, where, ref_logps=ref_logps,
                                          advantages=advantages)
  if epsilon is not None:
    arrays.check_range("epsilon", epsilon, low=0.0, high=1.0, low_inclusive=False,
                       high_inclusive=False, where=name)
  a = completions.masked_rows(advantages, valid)
  return lp, a, valid, valid & (a > 0.0)


def alol(logps, ref_logps, advantages, *, where=None, epsilon: float = 0.9, reduce_fn=jnp.mean):
  """A-LoL: advantage-weighted NLL with a clipped sequence importance ratio to π_ref.

  `ℓ = A⁺·r·nll(y)`, `nll = −lp(y)` (summed over tokens, intentionally not averaged),
  `r = sg(clip(exp(lp − lr), 1 − ε, 1 + ε))` (log-ratio clipped before the exp); examples with
  `A <= 0` are dropped (not in the mean), as the official code filters them from the data.
  `A = R − V(x)` comes from the caller: offline reward (e.g. σ(RM score)) minus a value head fit
  by MSE on π_ref's generations (`max_value = 1`); priority sampling ∝ A⁺ is a data-side option.

  Paper: "Improving Language Models with Advantage-based Offline Policy Gradients" (Baheti et
  al., ICLR 2024); code abaheti95/LoL-RL. ε = 0.9 (ratio in [0.1, 1.9]); the paper also uses
  max grad norm 0.3 and a constant learning rate.

  Args:
    logps, ref_logps: `[..., K]` summed log-probs of the offline responses.
    advantages: `[..., K]` A (stop-gradient). where: `[..., K]` valid responses.
    epsilon: ε in (0, 1).
    reduce_fn: reduction over the kept (A > 0) responses.

  Returns:
    The reduced loss.
  """
  name = "alol"
  lp, a, valid, positive = _alol_prepare(name, logps, ref_logps, advantages, where, epsilon)
  if ref_logps is None:
    raise ValueError(f"{name}: `ref_logps` is required.")
  ratio = _alol_ratio(lp, completions.masked_rows(ref_logps, valid), epsilon)
  return arrays.reduce_loss(-a * ratio * lp, positive, reduce_fn)


def alol_seq(
    logps, ref_logps, advantages, *, mask, where=None, epsilon: float = 0.9, reduce_fn=jnp.mean,
):
  """A-LoL seq: per-token clipped ratios `r_t` multiplying the per-token NLL, summed over tokens.

  `ℓ = A⁺·Σ_t m_t·r_t·(−lp_t)`, `r_t = sg(clip(exp(lp_t − lr_t), 1 − ε, 1 + ε))`; examples with
  `A <= 0` dropped. Paper and defaults as `alol` (ε = 0.9).

  Args:
    logps, ref_logps: `[..., K, T]` per-token log-probs. mask: `[..., K, T]` completion mask.
    advantages, where: `[..., K]`. epsilon: ε in (0, 1). reduce_fn: over the kept responses.

  Returns:
    The reduced loss.
  """
  name = "alol_seq"
  arrays.check_range("epsilon", epsilon, low=0.0, high=1.0, low_inclusive=False,
                     high_inclusive=False, where=name)
  if ref_logps is None:
    raise ValueError(f"{name}: `ref_logps` is required.")
  lp, token_valid, valid = completions.token_inputs(name, logps, mask, where, ref_logps=ref_logps)
  arrays.check_shapes(name, "logps[..., 0] ([..., K])", lp[..., 0], advantages=advantages)
  a = completions.masked_rows(advantages, valid)
  ratio = _alol_ratio(lp, completions.token_values(ref_logps, token_valid), epsilon)
  nll = -jnp.sum(jnp.where(token_valid, ratio * lp, 0.0), axis=-1)
  return arrays.reduce_loss(a * nll, valid & (a > 0.0), reduce_fn)


def alol_ref_free(logps, ref_logps, advantages, *, where=None, reduce_fn=jnp.mean):
  """A-LoL reference-free: `ℓ = A·nll(y) = −A·lp(y)` over every valid response (no ratio, no A⁺).

  Paper as `alol`. `ref_logps` is ignored (pass None).

  Args:
    logps, advantages, where: `[..., K]`. ref_logps: unused. reduce_fn: over valid responses.

  Returns:
    The reduced loss.
  """
  del ref_logps
  lp, a, valid, _ = _alol_prepare("alol_ref_free", logps, None, advantages, where)
  return arrays.reduce_loss(-a * lp, valid, reduce_fn)


def alol_kl(
    logps, ref_logps, advantages, *, where=None, beta_kl: float = 0.0, reduce_fn=jnp.mean,
):
  """A-LoL KL: `L = mean_{A>0}(A·nll(y)) + β_KL·mean(lp − lr)` (two separately reduced terms).

  The NLL term averages the kept (A > 0) responses, the KL term all valid ones. β_KL = 0 is the
  paper's default (then the reference may be None). Paper as `alol`.

  Args:
    logps, ref_logps, advantages, where: `[..., K]`. beta_kl: β_KL >= 0.
    reduce_fn: `[..., K]` unreduced values whose mean over valid responses is L
      (`arrays.as_mean_over`).

  Returns:
    The reduced loss.
  """
  name = "alol_kl"
  lp, a, valid, positive = _alol_prepare(name, logps, ref_logps, advantages, where)
  arrays.check_range("beta_kl", beta_kl, low=0.0, where=name)
  values = arrays.as_mean_over(-a * lp, positive, valid, jnp.sum(positive, dtype=jnp.float32))
  if completions.need_reference(name, ref_logps, beta_kl, "beta_kl"):
    values = values + beta_kl * (lp - completions.masked_rows(ref_logps, valid))
  return arrays.reduce_loss(values, valid, reduce_fn)


# ------------------------------------------------------------------------------------------------
# Registry.

_TOKENS = ("mask", "old_logps")
_GRPO_PAPER = ("DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language "
               "Models (Shao et al., 2024); TRL GRPOTrainer")
_ALOL_PAPER = ("Improving Language Models with Advantage-based Offline Policy Gradients "
               "(Baheti et al., ICLR 2024); code abaheti95/LoL-RL")

for _name, _fn, _paper, _extra in (
    ("grpo_loss", grpo_loss, _GRPO_PAPER,
     dict(aliases=("grpo",), extra_inputs=_TOKENS, needs_reference=False)),
    ("dr_grpo", dr_grpo,
     "Understanding R1-Zero-Like Training: A Critical Perspective (Liu et al., 2025)",
     dict(extra_inputs=_TOKENS, needs_reference=False)),
    ("mo_grpo", mo_grpo,
     "Optimizing Safe and Aligned Language Generation: A Multi-Objective GRPO Approach "
     "(Li, Li, Kosuga, Bian, 2025)", dict(extra_inputs=_TOKENS, needs_reference=False)),
    ("reinforce_loss", reinforce_loss,
     "Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human Feedback "
     "in LLMs (Ahmadian et al., 2024)", dict(aliases=("rloo",))),
    ("trpa_loss", trpa_loss,
     "Trust Region Preference Approximation: A simple and stable RL algorithm for LLM reasoning; "
     "code XueruiSu/Trust-Region-Preference-Approximation",
     dict(aliases=("trpa",), extra_inputs=_TOKENS)),
    ("copg", copg,
     "Contrastive Policy Gradient: Aligning LLMs on sequence-level scores in a supervised-"
     "friendly fashion (Flet-Berliac et al., EMNLP 2024)", {}),
    ("alol", alol, _ALOL_PAPER, {}),
    ("alol_seq", alol_seq, _ALOL_PAPER, dict(extra_inputs=("mask",))),
    ("alol_ref_free", alol_ref_free, _ALOL_PAPER, dict(needs_reference=False)),
    ("alol_kl", alol_kl, _ALOL_PAPER, {}),
):
  register(_name, fn=_fn, family="group", paper=_paper, **_extra)
