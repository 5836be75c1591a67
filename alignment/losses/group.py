"""Group / on-policy policy-gradient objectives (ALGORITHMS.md §5).

Layout: the K (= G) completions of one prompt lie on the list axis. Sequence-level inputs are
`[..., K]` (summed completion log-probs, rewards, advantages); token-level inputs are
`[..., K, T]` with a boolean completion `mask` `[..., K, T]`. `where` `[..., K]` masks padded
completions; a token counts iff its completion is valid and `mask` is True, and padded tokens
may hold anything (they are replaced before any arithmetic). Group statistics are taken over
the valid completions of each group, batch statistics over the whole input (the global batch
under `jit`, §0.6). Advantages, `old_logps` and `ref_logps` are stop-gradient (§0.5).

Registered objectives put the per-completion signal in the `labels` slot of the uniform
signature: `rewards` (higher is better), `advantages`, win probabilities, TRPA's preference
`levels` (lower is better) or, for `mo_grpo`, `rewards_per_func` `[..., K, F]`.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from alignment import scores
from alignment.losses import _utils
from alignment.losses import pairwise
from alignment.losses.registry import register

Array = jax.Array
_sg = jax.lax.stop_gradient

SCALE_REWARDS = ("group", "batch", "none")
AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
KL_ESTIMATORS = ("k1", "k2", "k3", "low_var_kl")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")
_LOW_VAR_KL_CLAMP = 10.0


# ------------------------------------------------------------------------------------------------
# Shared private helpers.


def _check_choice(name: str, value, choices, where: str) -> None:
  if value not in choices:
    raise ValueError(f"{where}: {name} must be one of {choices}, got {value!r}.")


def _check_group(fn_name: str, what: str, x: Array) -> None:
  """Requires a list axis of at least 2 completions (group statistics need G >= 2)."""
  shape = jnp.shape(x)
  if len(shape) < 1 or shape[-1] < 2:
    raise ValueError(
        f"{fn_name}: {what} must have a group axis [..., K] with K >= 2 completions per prompt, "
        f"got shape {shape}."
    )


def _moments(x: Array, valid: Array, axis=-1) -> tuple[Array, Array, Array]:
  """Masked `(mean, Bessel std, count)` along `axis` (keepdims; the whole array if None).

  `std = sqrt(Σ valid (x − mean)² / max(count − 1, 1))`: 0 for groups with fewer than 2 valid
  values, whose centred values are 0 anyway.
  """
  count = jnp.sum(valid, axis=axis, keepdims=True, dtype=jnp.float32)
  mean = jnp.sum(jnp.where(valid, x, 0.0), axis=axis, keepdims=True) / jnp.maximum(count, 1.0)
  sq = jnp.where(valid, jnp.square(x - mean), 0.0)
  var = jnp.sum(sq, axis=axis, keepdims=True) / jnp.maximum(count - 1.0, 1.0)
  return mean, jnp.sqrt(var), count


def _token_inputs(name, logps, mask, where, **token_arrays):
  """Checks token-level inputs; returns `(logps [..., K, T], token_valid, seq_valid [..., K])`.

  Invalid tokens of `logps` are replaced by 0 before any arithmetic (first half of the
  double-`where`), so padding cannot reach a value or a gradient.
  """
  logps = _utils.f32(logps)
  if logps.ndim < 2:
    raise ValueError(f"{name}: token-level logps must be [..., K, T], got shape {logps.shape}.")
  if mask is None:
    raise ValueError(f"{name}: the completion `mask` [..., K, T] is required.")
  _utils.check_shapes(name, "logps", logps, mask=mask, **token_arrays)
  _utils.check_shapes(name, "logps[..., 0] ([..., K])", logps[..., 0], where=where)
  seq_valid = _utils.valid_mask(logps[..., 0], where)
  token_valid = jnp.broadcast_to(jnp.asarray(mask, bool), logps.shape) & seq_valid[..., None]
  return jnp.where(token_valid, logps, 0.0), token_valid, seq_valid


def _token_values(x, token_valid) -> Optional[Array]:
  """A stop-gradient float32 token array with invalid tokens set to 0 (None stays None)."""
  if x is None:
    return None
  return _sg(jnp.where(token_valid, _utils.f32(x), 0.0))


def _sequence_inputs(name, logps, where, **arrays) -> tuple[Array, Array]:
  """Checks `[..., K]` inputs; returns `(logps with invalid slots 0, valid)`."""
  logps = _utils.f32(logps)
  if logps.ndim < 1:
    raise ValueError(f"{name}: logps must have a list axis [..., K], got a scalar.")
  _utils.check_shapes(name, "logps", logps, where=where, **arrays)
  valid = _utils.valid_mask(logps, where)
  return jnp.where(valid, logps, 0.0), valid


def _masked_rows(x, valid) -> Array:
  """`x` (broadcast to `valid`) as stop-gradient float32 with invalid entries set to 0."""
  return _sg(jnp.where(valid, jnp.broadcast_to(_utils.f32(x), jnp.shape(valid)), 0.0))


def _need_reference(name, ref_logps, coefficient, what) -> bool:
  """Whether a reference term is computed; raises if it is needed but `ref_logps` is None."""
  if ref_logps is not None:
    return True
  if _utils._concrete(coefficient) == 0.0:  # pylint: disable=protected-access
    return False
  raise ValueError(f"{name}: {what} = {coefficient} needs `ref_logps` (pass 0 to drop the term).")


# ------------------------------------------------------------------------------------------------
# KL estimators and advantages (§5.1, §5.2, §5.3).


def kl_estimate(logps, ref_logps, *, estimator: str = "k3") -> Array:
  """Per-token estimators of KL(π_θ ‖ π_ref) from samples of π_θ (Schulman's k1, k2, k3).

  With `Δ = lr − lp`: `k1 = lp − lr = −Δ`; `k2 = ½Δ²`; `k3 = e^Δ − Δ − 1` (unbiased,
  non-negative, low variance); `low_var_kl` = k3 clamped to `[−10, 10]`. The exponent of k3 is
  clipped at 80 (§0.4). `ref_logps` is stop-gradient. k1 is the usual choice inside a reward
  penalty, k3 inside the loss.

  Args:
    logps, ref_logps: per-token log-probs of the sampled tokens, any (same) shape.
    estimator: "k1", "k2", "k3" (default) or "low_var_kl".

  Returns:
    The estimate per entry, same shape, float32.
  """
  _check_choice("estimator", estimator, KL_ESTIMATORS, "kl_estimate")
  delta = _sg(_utils.f32(ref_logps)) - _utils.f32(logps)
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
  rewards = _utils.f32(rewards)
  _check_group(name, "rewards", rewards)
  _utils.check_shapes(name, "rewards", rewards, where=where)
  _check_choice("scale_rewards", scale_rewards, SCALE_REWARDS, name)
  _utils.check_range("epsilon", epsilon, low=0.0, where=name)
  valid = _utils.valid_mask(rewards, where) & ~jnp.isnan(rewards)
  r = jnp.where(valid, rewards, 0.0)
  mean, std, _ = _moments(r, valid)
  advantages = r - mean
  if scale_rewards == "group":
    advantages = advantages / (std + epsilon)
  elif scale_rewards == "batch":
    advantages = advantages / (_moments(r, valid, axis=None)[1] + epsilon)
  return _sg(jnp.where(valid, advantages, 0.0))


def multi_reward_advantages(
    rewards_per_func, *, where=None, reward_weights=None,
    aggregation: str = "sum_then_normalize", scale_rewards: str = "group",
    epsilon: float = 1e-4,
) -> Array:
  """GRPO advantages from F reward functions (ALGORITHMS.md §5.1, §5.5).

  - `sum_then_normalize` (TRL default): `r = Σ_f w_f·r_f` over the functions that did not abstain
    (NaN); a completion where every function abstains gets NaN, hence advantage 0; then
    `grpo_advantages(r, scale_rewards=...)`.
  - `normalize_then_sum` (GDPO-style; MO-GRPO default): per function
    `z_f = grpo_advantages(r_f, scale_rewards=...)` (group z-score, abstentions 0),
    `s = Σ_f w_f·z_f`, then one batch z-score `A = (s − mean(s))/(std(s) + ε)` over the valid
    completions of the whole input (Bessel std). Safer when reward heads differ in scale.

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
  r = _utils.f32(rewards_per_func)
  if r.ndim < 2:
    raise ValueError(f"{name}: rewards_per_func must be [..., K, F], got shape {r.shape}.")
  _check_choice("aggregation", aggregation, AGGREGATIONS, name)
  w = jnp.ones(r.shape[-1:], jnp.float32) if reward_weights is None else _utils.f32(reward_weights)
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
  valid = _utils.valid_mask(s, where) & ~jnp.all(abstains, axis=-1)
  mean, std, _ = _moments(s, valid, axis=None)
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
  rewards = _utils.f32(rewards)
  _check_group(name, "rewards", rewards)
  _utils.check_shapes(name, "rewards", rewards, where=where)
  valid = _utils.valid_mask(rewards, where)
  r = jnp.where(valid, rewards, 0.0)
  mean, _, n = _moments(r, valid)
  advantages = n / jnp.maximum(n - 1.0, 1.0) * (r - mean)
  return _sg(jnp.where(valid & (n >= 2.0), advantages, 0.0))


def zero_std_fraction(rewards, *, where=None) -> Array:
  """Fraction of groups (with >= 2 valid rewards) whose rewards are all equal (σ_g = 0).

  Such groups carry no GRPO signal (all advantages 0); log this next to the loss (§5.1).
  """
  rewards = _utils.f32(rewards)
  valid = _utils.valid_mask(rewards, where) & ~jnp.isnan(rewards)
  _, std, n = _moments(jnp.where(valid, rewards, 0.0), valid)
  counted = n[..., 0] >= 2.0
  return _utils.masked_mean((std[..., 0] == 0.0).astype(jnp.float32), counted)


# ------------------------------------------------------------------------------------------------
# Clipped surrogate with KL and aggregation (§5.2) and the GRPO family (§5.1, §5.4, §5.5).


def _clipped_surrogate(
    name, logps, advantages, *, mask, old_logps, ref_logps, where, epsilon, epsilon_high, delta,
    beta_kl, kl_estimator, importance_sampling_level, loss_type, max_completion_length,
    reduce_fn,
):
  """The §5.2 loss; see `clipped_surrogate_loss`."""
  lp, token_valid, seq_valid = _token_inputs(
      name, logps, mask, where, old_logps=old_logps, ref_logps=ref_logps)
  _utils.check_shapes(name, "logps[..., 0] ([..., K])", lp[..., 0], advantages=advantages)
  _check_choice("loss_type", loss_type, LOSS_TYPES, name)
  _check_choice("kl_estimator", kl_estimator, KL_ESTIMATORS, name)
  _check_choice("importance_sampling_level", importance_sampling_level,
                IMPORTANCE_SAMPLING_LEVELS, name)
  epsilon_high = epsilon if epsilon_high is None else epsilon_high
  _utils.check_range("epsilon", epsilon, low=0.0, high=1.0, high_inclusive=False, where=name)
  _utils.check_range("epsilon_high", epsilon_high, low=0.0, where=name)
  _utils.check_range("beta_kl", beta_kl, low=0.0, where=name)
  if delta is not None:
    _utils.check_range("delta", delta, low=1.0, low_inclusive=False, where=name)
  old = _sg(lp) if old_logps is None else _token_values(old_logps, token_valid)
  log_ratio = lp - old
  if importance_sampling_level == "sequence":  # GSPO: one length-normalised ratio per sequence
    log_ratio = _utils.masked_mean(log_ratio, token_valid, axis=-1)[..., None]
  ratio = scores.clipped_exp(log_ratio)
  a = _masked_rows(advantages, seq_valid)[..., None]
  unclipped = ratio if delta is None else jnp.minimum(ratio, delta)
  clipped = jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon_high)
  per_token = -jnp.minimum(unclipped * a, clipped * a)
  if _need_reference(name, ref_logps, beta_kl, "beta_kl"):
    ref = _token_values(ref_logps, token_valid)
    per_token = per_token + beta_kl * kl_estimate(lp, ref, estimator=kl_estimator)
  per_token = jnp.where(token_valid, per_token, 0.0)
  if loss_type in ("bnpo", "dapo"):  # token mean over the whole input
    return _utils.reduce_loss(per_token, token_valid, reduce_fn)
  total = jnp.sum(per_token, axis=-1)
  if loss_type == "grpo":  # per-sequence token mean, then mean over sequences
    per_seq = total / jnp.maximum(jnp.sum(token_valid, axis=-1, dtype=jnp.float32), 1.0)
  else:  # dr_grpo: a constant normaliser L_max
    l_max = lp.shape[-1] if max_completion_length is None else max_completion_length
    _utils.check_positive("max_completion_length", l_max, where=name)
    per_seq = total / l_max
  return _utils.reduce_loss(per_seq, seq_valid, reduce_fn)


def clipped_surrogate_loss(
    logps, advantages, *, mask, old_logps=None, ref_logps=None, where=None,
    epsilon: float = 0.2, epsilon_high: Optional[float] = None, delta: Optional[float] = None,
    beta_kl: float = 0.0, kl_estimator: str = "k3", importance_sampling_level: str = "token",
    loss_type: str = "grpo", max_completion_length: Optional[int] = None, reduce_fn=jnp.mean,
):
  """PPO's clipped surrogate per token with a KL penalty and an explicit aggregation (§5.2).

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
# REINFORCE with the leave-one-out baseline (§5.3) and CoPG (§5.8): sequence level.


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
    reduce_fn: reduction over completions (§0.2).

  Returns:
    The reduced loss (`[..., K]` for `reduce_fn=None`).
  """
  name = "reinforce_loss"
  lp, valid = _sequence_inputs(name, logps, where, ref_logps=ref_logps, rewards=rewards)
  _utils.check_range("beta_kl", beta_kl, low=0.0, where=name)
  shaped = _masked_rows(rewards, valid)
  if _need_reference(name, ref_logps, beta_kl, "beta_kl"):
    shaped = shaped - beta_kl * _sg(lp - _masked_rows(ref_logps, valid))
  a = rloo_advantages(shaped, where=valid)
  if normalize_advantages:
    mean, std, _ = _moments(a, valid, axis=None)
    a = jnp.where(valid, (a - mean) / (std + 1e-8), 0.0)
  return _utils.reduce_loss(-a * lp, valid, reduce_fn)


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
  _utils.check_positive("beta", beta, where=name)
  lp, valid = _sequence_inputs(name, logps, where, ref_logps=ref_logps, rewards=rewards)
  _check_group(name, "logps", lp)
  if ref_logps is None:
    raise ValueError(f"{name}: `ref_logps` is required.")
  r_beta = _masked_rows(rewards, valid) - beta * (lp - _masked_rows(ref_logps, valid))
  mean, _, k = _moments(r_beta, valid)
  spread = jnp.sum(jnp.where(valid, jnp.square(r_beta - mean), 0.0), axis=-1)
  k = k[..., 0]
  return _utils.reduce_loss(k / jnp.maximum(k - 1.0, 1.0) * spread, k >= 2.0, reduce_fn)


# ------------------------------------------------------------------------------------------------
# Pref-GRPO (§5.6) and TRPA (§5.7).


def bradley_terry_preferences(scores_) -> Array:
  """Soft Bradley–Terry judgements `P[..., i, j] = σ(s_i − s_j)` from `[..., K]` scores."""
  s = _utils.f32(scores_)
  return jax.nn.sigmoid(_utils.pairwise_differences(s))


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
  p = _utils.f32(preferences)
  if p.ndim < 2 or p.shape[-1] != p.shape[-2]:
    raise ValueError(f"{name}: preferences must be [..., K, K], got shape {p.shape}.")
  valid = _utils.valid_mask(p[..., 0], where)
  _utils.check_shapes(name, "preferences[..., 0]", p[..., 0], where=where)
  opponents = valid[..., :, None] & valid[..., None, :] & ~jnp.eye(p.shape[-1], dtype=bool)
  _utils.check_array_range("preferences", p, low=0.0, high=1.0, mask=opponents, where=name)
  wins = jnp.sum(jnp.where(opponents, p, 0.0), axis=-1)
  n = jnp.sum(opponents, axis=-1, dtype=jnp.float32)
  rate = jnp.round(wins / jnp.maximum(n, 1.0), decimals)
  return _sg(jnp.where(valid, rate, 0.0))


def pref_grpo_advantages(rewards, *, where=None, epsilon: float = 1e-8, clip: float = 5.0):
  """Pref-GRPO advantages: `A = clip((r − mean_g)/(std_g + 1e−8), −5, 5)` (Bessel, per group)."""
  _utils.check_positive("clip", clip, where="pref_grpo_advantages")
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
      term is attributed to its better rollout, each term rescaled as a mean, §0.2).

  Returns:
    The reduced loss.
  """
  name = "trpa_loss"
  _utils.check_positive("beta", beta, where=name)
  _utils.check_range("anisotropy", anisotropy, low=0.0, low_inclusive=False, where=name)
  _utils.check_range("trust_region_coef", trust_region_coef, low=0.0, where=name)
  if ref_logps is None:
    raise ValueError(f"{name}: `ref_logps` is required.")
  lp, token_valid, valid = _token_inputs(
      name, logps, mask, where, ref_logps=ref_logps, old_logps=old_logps)
  _utils.check_shapes(name, "logps[..., 0] ([..., K])", lp[..., 0], levels=levels)
  levels = _masked_rows(levels, valid)
  s = _utils.masked_mean(lp - _token_values(ref_logps, token_valid), token_valid, axis=-1)
  pairs = _utils.pair_mask(-levels, valid)  # (i, j): level_i < level_j
  c = jnp.where(levels == 1.0, anisotropy, 1.0)[..., :, None]
  h = c * beta * _utils.pairwise_differences(s)
  pair_sum = jnp.sum(jnp.where(pairs, jax.nn.softplus(-h), 0.0), axis=-1)
  n_pairs = jnp.sum(pairs, dtype=jnp.float32)
  fallback = jax.nn.softplus(jnp.where(levels == 1.0, -s, s))
  pref = jnp.where(n_pairs > 0, _utils.as_mean_over(pair_sum, valid, valid, n_pairs), fallback)
  old = _sg(lp) if old_logps is None else _token_values(old_logps, token_valid)
  k3 = jnp.where(token_valid, kl_estimate(lp, old, estimator="low_var_kl"), 0.0)
  n_tokens = jnp.sum(token_valid, dtype=jnp.float32)
  trust = _utils.as_mean_over(jnp.sum(k3, axis=-1), valid, valid, n_tokens)
  return _utils.reduce_loss(pref + trust_region_coef * trust, valid, reduce_fn)


# ------------------------------------------------------------------------------------------------
# A-LoL (§5.9): offline advantage-weighted policy gradient.


def _alol_ratio(logps, ref_logps, epsilon) -> Array:
  """`sg(clip(exp(lp − lr), 1 − ε, 1 + ε))`, clipping the log-ratio before the exp."""
  rho = _utils.f32(logps) - _utils.f32(ref_logps)
  return _sg(jnp.exp(jnp.clip(rho, jnp.log1p(-epsilon), jnp.log1p(epsilon))))


def _alol_prepare(name, logps, ref_logps, advantages, where, epsilon=None):
  """Checks A-LoL's sequence-level inputs; returns `(lp, advantages, valid, positive)`."""
  lp, valid = _sequence_inputs(name, logps, where, ref_logps=ref_logps, advantages=advantages)
  if epsilon is not None:
    _utils.check_range("epsilon", epsilon, low=0.0, high=1.0, low_inclusive=False,
                       high_inclusive=False, where=name)
  a = _masked_rows(advantages, valid)
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
  ratio = _alol_ratio(lp, _masked_rows(ref_logps, valid), epsilon)
  return _utils.reduce_loss(-a * ratio * lp, positive, reduce_fn)


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
  _utils.check_range("epsilon", epsilon, low=0.0, high=1.0, low_inclusive=False,
                     high_inclusive=False, where=name)
  if ref_logps is None:
    raise ValueError(f"{name}: `ref_logps` is required.")
  lp, token_valid, valid = _token_inputs(name, logps, mask, where, ref_logps=ref_logps)
  _utils.check_shapes(name, "logps[..., 0] ([..., K])", lp[..., 0], advantages=advantages)
  a = _masked_rows(advantages, valid)
  ratio = _alol_ratio(lp, _token_values(ref_logps, token_valid), epsilon)
  nll = -jnp.sum(jnp.where(token_valid, ratio * lp, 0.0), axis=-1)
  return _utils.reduce_loss(a * nll, valid & (a > 0.0), reduce_fn)


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
  return _utils.reduce_loss(-a * lp, valid, reduce_fn)


def alol_kl(
    logps, ref_logps, advantages, *, where=None, beta_kl: float = 0.0, reduce_fn=jnp.mean,
):
  """A-LoL KL: `L = mean_{A>0}(A·nll(y)) + β_KL·mean(lp − lr)` (two separately reduced terms).

  The NLL term averages the kept (A > 0) responses, the KL term all valid ones. β_KL = 0 is the
  paper's default (then the reference may be None). Paper as `alol`.

  Args:
    logps, ref_logps, advantages, where: `[..., K]`. beta_kl: β_KL >= 0.
    reduce_fn: `[..., K]` unreduced values whose mean over valid responses is L (§0.2).

  Returns:
    The reduced loss.
  """
  name = "alol_kl"
  lp, a, valid, positive = _alol_prepare(name, logps, ref_logps, advantages, where)
  _utils.check_range("beta_kl", beta_kl, low=0.0, where=name)
  values = _utils.as_mean_over(-a * lp, positive, valid, jnp.sum(positive, dtype=jnp.float32))
  if _need_reference(name, ref_logps, beta_kl, "beta_kl"):
    values = values + beta_kl * (lp - _masked_rows(ref_logps, valid))
  return _utils.reduce_loss(values, valid, reduce_fn)


# ------------------------------------------------------------------------------------------------
# DR-PO dataset resets (§5.10): a data-side transform.


def drpo_reset(
    key, prompt_tokens, prompt_lengths, preferred_tokens, preferred_lengths, *,
    p_reset: float = 1.0,
) -> tuple[Array, Array, Array]:
  """DR-PO dataset reset: roll in on a prefix of the offline preferred response.

  With probability `p_reset` per sample the prefix length is uniform on `1..len − 1` (no reset
  when `len < 2`); the prefix is appended to the prompt (teacher-forced), the policy continues
  from there, and the prefix is masked out of the policy loss (`rollin_mask`). The rest is
  PPO-RLHF (per-token reward `−0.05·(lp_t − lr_t)` + score at EOS, GAE γ = 1, λ = 0.95, clip 0.2,
  temperature 0.7), not part of this transform.

  Paper: "Dataset Reset Policy Optimization for RLHF" (Chang et al., 2024); code Cornell-RL/drpo
  (`src/tldr/drpo.py`).

  Args:
    key: PRNG key.
    prompt_tokens: `[B, P]` right-padded prompts; prompt_lengths: `[B]`.
    preferred_tokens: `[B, R]` right-padded preferred responses; preferred_lengths: `[B]`.
    p_reset: reset probability in [0, 1] (1.0).

  Returns:
    `(tokens [B, P + R], lengths [B], prefix_lengths [B])`: the right-padded (pad 0) new prompts
    = prompt followed by the prefix, their lengths, and the prefix lengths (0 = no reset).
  """
  name = "drpo_reset"
  _utils.check_range("p_reset", p_reset, low=0.0, high=1.0, where=name)
  prompt_tokens, preferred_tokens = jnp.asarray(prompt_tokens), jnp.asarray(preferred_tokens)
  if prompt_tokens.ndim != 2 or preferred_tokens.ndim != 2:
    raise ValueError(f"{name}: prompt_tokens and preferred_tokens must be [B, P] and [B, R], "
                     f"got {prompt_tokens.shape} and {preferred_tokens.shape}.")
  prompt_lengths = jnp.asarray(prompt_lengths, jnp.int32)
  lengths = jnp.asarray(preferred_lengths, jnp.int32)
  reset_key, length_key = jax.random.split(key)
  reset = (jax.random.uniform(reset_key, lengths.shape) < p_reset) & (lengths >= 2)
  prefix = jax.random.randint(length_key, lengths.shape, 1, jnp.maximum(lengths, 2))
  prefix = jnp.where(reset, prefix, 0)
  total = prompt_tokens.shape[1] + preferred_tokens.shape[1]
  pos = jnp.arange(total)[None, :]
  start = prompt_lengths[:, None]
  from_prompt = jnp.take_along_axis(
      prompt_tokens, jnp.clip(pos, 0, prompt_tokens.shape[1] - 1), axis=1)
  from_response = jnp.take_along_axis(
      preferred_tokens, jnp.clip(pos - start, 0, preferred_tokens.shape[1] - 1), axis=1)
  tokens = jnp.where(pos < start, from_prompt,
                     jnp.where(pos < start + prefix[:, None], from_response, 0))
  return tokens.astype(prompt_tokens.dtype), prompt_lengths + prefix, prefix


def rollin_mask(completion_mask, prefix_lengths) -> Array:
  """The policy-loss mask of a response that starts with a teacher-forced roll-in prefix.

  Drops the first `prefix_lengths` completion tokens of each row: `mask_t & (rank_t > prefix)`,
  rank_t = 1-based index of token t among the completion tokens.

  Args:
    completion_mask: `[..., T]` bool. prefix_lengths: `[...]` int (0 = nothing dropped).

  Returns:
    `[..., T]` bool.
  """
  mask = jnp.asarray(completion_mask, bool)
  rank = jnp.cumsum(mask, axis=-1)
  return mask & (rank > jnp.asarray(prefix_lengths)[..., None])


# ------------------------------------------------------------------------------------------------
# SPPO square loss, GPO, ONPO (§5.11, §5.13) and HyPO (§5.12).


def _square_regression(name, logps, ref_logps, probs, where, beta, reduce_fn, *, counted=None):
  """`Σ_i (ρ_i − (p_i − ½)/β)²` per list over valid items; mean over lists with any valid."""
  _utils.check_positive("beta", beta, where=name)
  if ref_logps is None:
    raise ValueError(f"{name}: `ref_logps` (the previous-iteration policy) is required.")
  lp, valid = _sequence_inputs(name, logps, where, ref_logps=ref_logps, probs=probs)
  if counted is not None:
    valid = valid & counted
  rho = lp - _masked_rows(ref_logps, valid)
  target = (_masked_rows(probs, valid) - 0.5) / beta
  per_list = jnp.sum(jnp.where(valid, jnp.square(rho - target), 0.0), axis=-1)
  return _utils.reduce_loss(per_list, _utils.list_mask(valid), reduce_fn)


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
  _utils.check_array_range("win_probs", win_probs, low=0.0, high=1.0, mask=where, where=name)
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
  s = _utils.f32(preference_scores)
  if s.ndim < 2 or s.shape[-1] != s.shape[-2]:
    raise ValueError(f"{name}: preference_scores must be [..., K, K], got shape {s.shape}.")
  rm = _utils.f32(rm_scores)
  _utils.check_shapes(name, "rm_scores", rm, where=where)
  _utils.check_shapes(name, "preference_scores[..., 0]", s[..., 0], rm_scores=rm)
  valid = _utils.valid_mask(rm, where)
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

  Per prompt (K = 5 samples of the current policy): `S[i, j] = s(y_i ≻ y_j)` (GPM, §6.8),
  `P̂ = S − Sᵀ`, chosen = argmax RM score, rejected = argmin, `p_w = Σ_j P̂[w, j]/K`,
  `p_l = Σ_j P̂[l, j]/K` (`gpo_targets`); `ℓ = (ρ_w − (p_w − ½)/β)² + (ρ_l − (p_l − ½)/β)²`,
  ρ relative to the previous-iteration policy. β = 0.001, lr 5e−7. The exact GPO loss and its
  clamp threshold are unverified (ALGORITHMS.md §10); this is the SPPO-square form.

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
  the current / previous policy. The paper's exact loss is not pinned: this is the paper-level
  form of ALGORITHMS.md §5.13.

  Paper: "Improving LLM General Preference Alignment via Optimistic Online Mirror Descent".

  Args:
    logps, ref_logps, where: `[..., K]`. win_probs, prev_win_probs: `[..., K]` in [0, 1].
    beta: β > 0. reduce_fn: reduction over lists (`[...]` unreduced).

  Returns:
    The reduced loss.
  """
  name = "onpo"
  for arg, value in (("win_probs", win_probs), ("prev_win_probs", prev_win_probs)):
    _utils.check_array_range(arg, value, low=0.0, high=1.0, mask=where, where=name)
  target = 2.0 * _utils.f32(win_probs) - _utils.f32(prev_win_probs)
  return _square_regression(name, logps, ref_logps, target, where, beta, reduce_fn)


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
    reduce_fn: `[...]` unreduced per-prompt values whose mean is L (§0.2).

  Returns:
    The reduced loss.
  """
  name = "hypo"
  _utils.check_range("kl_weight", kl_weight, low=0.0, where=name)
  dpo_values = pairwise.dpo(logps, ref_logps, labels, where=where, beta=beta, reduce_fn=None)
  labels = jnp.asarray([1.0, 0.0]) if labels is None else labels
  pair_valid = jnp.any(_utils.pair_mask(jnp.broadcast_to(_utils.f32(labels), jnp.shape(logps)),
                                        where), axis=(-2, -1))
  prompt_valid = jnp.any(_utils.valid_mask(logps, where), axis=-1)
  lp, online_valid = _sequence_inputs(name, online_logps, online_where,
                                      online_ref_logps=online_ref_logps)
  if lp.shape[:-1] != prompt_valid.shape:
    raise ValueError(f"{name}: online_logps {lp.shape} must share the leading axes of logps "
                     f"{jnp.shape(logps)}.")
  online_valid = online_valid & prompt_valid[..., None]
  rho = lp - _masked_rows(online_ref_logps, online_valid)
  a = rloo_advantages(jnp.where(online_valid, rho, 0.0), where=online_valid)
  k = jnp.sum(online_valid, axis=-1, dtype=jnp.float32)
  surrogate = jnp.sum(jnp.where(online_valid, a * lp, 0.0), axis=-1) / jnp.maximum(k, 1.0)
  has_online = k > 0
  valid = pair_valid | has_online
  values = (
      _utils.as_mean_over(dpo_values, pair_valid, valid, jnp.sum(pair_valid, dtype=jnp.float32))
      + kl_weight * _utils.as_mean_over(surrogate, has_online, valid,
                                  jnp.sum(has_online, dtype=jnp.float32)))
  return _utils.reduce_loss(values, valid, reduce_fn)


# ------------------------------------------------------------------------------------------------
# RefAlign (§5.14): similarity reward, reconstruction.


def refalign_reward(tokens, reference_tokens, *, mask=None, reference_mask=None) -> Array:
  """RefAlign similarity reward (reconstruction): token-level F1 to one reference answer.

  Bag-of-tokens overlap with multiplicity, `o = Σ_v min(c_y(v), c_ref(v))`;
  `F1 = 2·o/(|y| + |y_ref|)` (= 2PR/(P + R), 0 when both are empty). The paper uses BERTScore
  F1; token F1 is the small-scale stand-in of ALGORITHMS.md §5.14. The reward feeds a
  REINFORCE-style update (`reinforce_loss`, `grpo_loss`); the paper's baseline and KL details
  are unknown, so this is a reconstruction, not the paper's method.

  Paper: "Learning from Reference Answers: Versatile Language Model Alignment without Binary
  Human Preference Data".

  Args:
    tokens: `[..., T]` int response ids; reference_tokens: `[..., R]` int reference ids.
    mask, reference_mask: `[..., T]`, `[..., R]` real tokens (default all).

  Returns:
    `[...]` F1 in [0, 1], float32.

  Example:
    >>> import jax.numpy as jnp
    >>> refalign_reward(jnp.array([1, 2, 2, 3]), jnp.array([2, 1, 4]))  # o = 2: 2·2/(4 + 3)
    Array(0.5714286, dtype=float32)
  """
  y, ref = jnp.asarray(tokens), jnp.asarray(reference_tokens)
  m = jnp.ones(y.shape, bool) if mask is None else jnp.asarray(mask, bool)
  mr = jnp.ones(ref.shape, bool) if reference_mask is None else jnp.asarray(reference_mask, bool)
  same_y = (y[..., :, None] == y[..., None, :]) & m[..., None, :]
  same_ref = (y[..., :, None] == ref[..., None, :]) & mr[..., None, :]
  c_y = jnp.sum(same_y, axis=-1, dtype=jnp.float32)  # count of token t's id in y
  c_ref = jnp.sum(same_ref, axis=-1, dtype=jnp.float32)  # ... and in the reference
  # Each id v occurs c_y(v) times in y: adding min(c_y, c_ref)/c_y per occurrence gives o.
  overlap = jnp.sum(jnp.where(m, jnp.minimum(c_y, c_ref) / jnp.maximum(c_y, 1.0), 0.0), axis=-1)
  total = jnp.sum(m, axis=-1, dtype=jnp.float32) + jnp.sum(mr, axis=-1, dtype=jnp.float32)
  return 2.0 * overlap / jnp.maximum(total, 1.0)


# ------------------------------------------------------------------------------------------------
# Registry.

_TOKENS = ("mask", "old_logps")
_GRPO_PAPER = ("DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language "
               "Models (Shao et al., 2024); TRL GRPOTrainer")
_ALOL_PAPER = ("Improving Language Models with Advantage-based Offline Policy Gradients "
               "(Baheti et al., ICLR 2024); code abaheti95/LoL-RL")
_SPPO_PAPER = "Self-Play Preference Optimization for Language Model Alignment; code uclaml/SPPO"

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
    ("sppo_square", sppo_square, _SPPO_PAPER, {}),
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
