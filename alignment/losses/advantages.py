"""Advantages of K completions per prompt, and KL estimators from policy samples.

GRPO's group-standardised advantages (and their multi-reward forms), RLOO's leave-one-out
advantages, the fraction of groups without signal, and Schulman's k1/k2/k3 estimators of
KL(π_θ ‖ π_ref). Layout: `alignment.losses.completions`; every advantage is stop-gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from alignment import arrays
from alignment import scores
from alignment.losses import completions

Array = jax.Array
_sg = jax.lax.stop_gradient

SCALE_REWARDS = ("group", "batch", "none")
AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")
KL_ESTIMATORS = ("k1", "k2", "k3", "low_var_kl")
_LOW_VAR_KL_CLAMP = 10.0


def kl_estimate(logps, ref_logps, *, estimator: str = "k3") -> Array:
  """Per-token estimators of KL(π_θ ‖ π_ref) from samples of π_θ (Schulman's k1, k2, k3).

  With `Δ = lr − lp`: `k1 = lp − lr = −Δ`; `k2 = ½Δ²`; `k3 = e^Δ − Δ − 1` (unbiased, non-negative,
  low variance); `low_var_kl` = k3 clamped to `[−10, 10]`. The exponent of k3 is clipped at 80 (see
  `docs/conventions.md`). `ref_logps` is stop-gradient. k1 is the usual choice inside a reward
  penalty, k3 inside the loss.

  Args:
    logps, ref_logps: per-token log-probs of the sampled tokens, any (same) shape.
    estimator: "k1", "k2", "k3" (default) or "low_var_kl".

  Returns:
    The estimate per entry, same shape, float32.
  """
  arrays.check_choice("estimator", estimator, KL_ESTIMATORS, where="kl_estimate")
  delta = _sg(arrays.f32(ref_logps)) - arrays.f32(logps)
  if estimator == "k1":
    return -delta
  if estimator == "k2":
    return 0.5 * jnp.square(delta)
  k3 = scores.clipped_exp(delta) - delta - 1.0
  if estimator == "low_var_kl":
    return jnp.clip(k3, -_LOW_VAR_KL_CLAMP, _LOW_VAR_KL_CLAMP)
  return k3


def grpo_advantages(
    rewards, *, where=None, scale_rewards: str = "group", epsilon: float = 1e-4
) -> Array:
  """GRPO group advantages: rewards standardised within each prompt's group.

  `μ_g` = mean and `σ_g` = std **with Bessel correction** over the valid completions of the
  group; `"group"` (default): `A = (r − μ_g)/(σ_g + ε)`; `"batch"`: the divisor is the Bessel std
  of all valid rewards of the input (the mean stays per group); `"none"` (Dr. GRPO):
  `A = r − μ_g`. NaN rewards abstain (excluded from the statistics); their advantage, like that
  of padded slots, is 0 (`nan_to_num`). Stop-gradient.

  Paper: "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models"
  (Shao et al., 2024); reference semantics TRL `GRPOTrainer`. ε = 1e−4.

  Args:
    rewards: `[..., K]`, K >= 2 completions per prompt on the last axis.
    where: `[..., K]` valid completions.
    scale_rewards: "group", "batch" or "none".
    epsilon: ε added to the std.

  Returns:
    `[..., K]` advantages.

  Example:
    >>> import jax.numpy as jnp
    >>> grpo_advantages(jnp.array([1.0, 0.0]), epsilon=0.0)  # (±0.5)/std, std = √0.5
    Array([ 0.70710677, -0.70710677], dtype=float32)
  """
  name = "grpo_advantages"
  rewards = arrays.f32(rewards)
  completions.check_group(name, "rewards", rewards)
  arrays.check_shapes(name, "rewards", rewards, where=where)
  arrays.check_choice("scale_rewards", scale_rewards, SCALE_REWARDS, where=name)
  arrays.check_range("epsilon", epsilon, low=0.0, where=name)
  valid = arrays.valid_mask(rewards, where) & ~jnp.isnan(rewards)
  r = jnp.where(valid, rewards, 0.0)
  mean, std, _ = completions.group_moments(r, valid)
  advantages = r - mean
  if scale_rewards == "group":
    advantages = advantages / (std + epsilon)
  elif scale_rewards == "batch":
    advantages = advantages / (completions.group_moments(r, valid, axis=None)[1] + epsilon)
  return _sg(jnp.where(valid, advantages, 0.0))


def multi_reward_advantages(
    rewards_per_func, *, where=None, reward_weights=None,
    aggregation: str = "sum_then_normalize", scale_rewards: str = "group",
    epsilon: float = 1e-4,
) -> Array:
  """GRPO advantages from F reward functions.

  - `sum_then_normalize` (TRL default): `r = Σ_f w_f·r_f` over the functions that did not abstain
    (NaN); a completion where every function abstains gets NaN, hence advantage 0; then
    `grpo_advantages(r, scale_rewards=...)`.
  - `normalize_then_sum` (GDPO-style; MO-GRPO default): per function
    `z_f = grpo_advantages(r_f, scale_rewards=...)` (group z-score, abstentions 0),
    `s = Σ_f w_f·z_f`, then one batch z-score `A = (s − mean(s))/(std(s) + ε)` over the valid
    completions of the whole input (Bessel std). Safer when reward heads differ in scale.

  Papers: TRL `GRPOTrainer` (`sum_then_normalize`); "Optimizing Safe and Aligned Language
  Generation: A Multi-Objective GRPO Approach" (Li, Li, Kosuga, Bian, 2025).

  Args:
    rewards_per_func: `[..., K, F]` rewards (NaN = the function abstains).
    where: `[..., K]` valid completions.
    reward_weights: `[F]` weights w_f (default 1).
    aggregation: "sum_then_normalize" or "normalize_then_sum".
    scale_rewards: the std used by the group standardisation (see `grpo_advantages`).
    epsilon: ε added to every std.

  Returns:
    `[..., K]` stop-gradient advantages.
  """
  name = "multi_reward_advantages"
  r = arrays.f32(rewards_per_func)
  if r.ndim < 2:
    raise ValueError(f"{name}: rewards_per_func must be [..., K, F], got shape {r.shape}.")
  arrays.check_choice("aggregation", aggregation, AGGREGATIONS, where=name)
  w = (jnp.ones(r.shape[-1:], jnp.float32) if reward_weights is None
       else arrays.f32(reward_weights))
  if w.shape != r.shape[-1:]:
    raise ValueError(f"{name}: reward_weights has shape {w.shape}, expected {r.shape[-1:]} (F).")
  abstains = jnp.isnan(r)
  if aggregation == "sum_then_normalize":
    total = jnp.sum(jnp.where(abstains, 0.0, w * r), axis=-1)
    total = jnp.where(jnp.all(abstains, axis=-1), jnp.nan, total)
    return grpo_advantages(total, where=where, scale_rewards=scale_rewards, epsilon=epsilon)
  per_func_where = None if where is None else jnp.asarray(where, bool)[..., None, :]
  z = grpo_advantages(jnp.swapaxes(r, -1, -2), where=per_func_where,
                      scale_rewards=scale_rewards, epsilon=epsilon)  # [..., F, K]
  s = jnp.sum(w[:, None] * z, axis=-2)
  valid = arrays.valid_mask(s, where) & ~jnp.all(abstains, axis=-1)
  mean, std, _ = completions.group_moments(s, valid, axis=None)
  return _sg(jnp.where(valid, (s - mean) / (std + epsilon), 0.0))


def rloo_advantages(rewards, *, where=None) -> Array:
  """RLOO advantages: each reward minus the mean of the other valid rewards of its group.

  `A_i = r_i − (1/(n−1))·Σ_{j≠i} r_j = (n/(n−1))·(r_i − mean_g r)` with n the number of valid
  completions of the group; groups with n < 2 (and padded slots) get 0. Stop-gradient.

  Paper: "Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human
  Feedback in LLMs" (Ahmadian et al., 2024).

  Args:
    rewards: `[..., K]`, K >= 2 (put the KL penalty into the rewards first, see
      `reinforce_loss`).
    where: `[..., K]` valid completions.

  Returns:
    `[..., K]` advantages.

  Example:
    >>> import jax.numpy as jnp
    >>> rloo_advantages(jnp.array([3.0, 1.0, 2.0]))  # 3 − 1.5, 1 − 2.5, 2 − 2
    Array([ 1.5, -1.5,  0. ], dtype=float32)
  """
  name = "rloo_advantages"
  rewards = arrays.f32(rewards)
  completions.check_group(name, "rewards", rewards)
  arrays.check_shapes(name, "rewards", rewards, where=where)
  valid = arrays.valid_mask(rewards, where)
  r = jnp.where(valid, rewards, 0.0)
  mean, _, n = completions.group_moments(r, valid)
  advantages = n / jnp.maximum(n - 1.0, 1.0) * (r - mean)
  return _sg(jnp.where(valid & (n >= 2.0), advantages, 0.0))


def zero_std_fraction(rewards, *, where=None) -> Array:
  """Fraction of groups (with >= 2 valid rewards) whose rewards are all equal (σ_g = 0).

  Such groups carry no GRPO signal (all advantages 0); log this next to the loss.
  """
  rewards = arrays.f32(rewards)
  valid = arrays.valid_mask(rewards, where) & ~jnp.isnan(rewards)
  _, std, n = completions.group_moments(jnp.where(valid, rewards, 0.0), valid)
  counted = n[..., 0] >= 2.0
  return arrays.masked_mean((std[..., 0] == 0.0).astype(jnp.float32), counted)
