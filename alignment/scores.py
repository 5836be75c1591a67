"""Log-probs to scores: log-ratios, length normalisation, f-divergences and stable primitives.

Pure functions of arrays, following the conventions of `docs/conventions.md`. Inputs are summed
sequence log-probs `[..., K]` (last axis = the list of responses) or, for the per-token modifiers,
`[..., K, T]` token log-probs with a boolean completion mask. Everything is computed in at least
float32 (bf16/f16 inputs are promoted; float64 inputs stay float64), reference log-probs are always
wrapped in `stop_gradient`, and every `exp` of a log-ratio has its exponent clipped first
(`max_exponent=80`, TRL's value for fp32/bf16; use 11 for fp16).
"""

from __future__ import annotations

import math
from typing import Callable, Union

import jax
import jax.numpy as jnp

from alignment import arrays

Array = jax.Array

MAX_EXPONENT = 80.0
_LN2 = math.log(2.0)
_PHI_SERIES_CUTOFF = 1e-4
_ALPHA_SINGULAR = 1e-6
_LOG_PROB_CEILING = -1e-7


# ------------------------------------------------------------------------------------------------
# Numerically stable primitives (`docs/conventions.md`).


def clipped_exp(x, *, max_exponent: float = MAX_EXPONENT) -> Array:
  """`exp(min(x, max_exponent))`: an exponential that never overflows to inf.

  Args:
    x: exponents, any shape.
    max_exponent: the clip (80 for fp32/bf16 as in TRL, 11 for fp16).

  Returns:
    `exp(min(x, max_exponent))`, same shape; the gradient is 0 where the clip is active.
  """
  return jnp.exp(jnp.minimum(arrays.as_float(x), max_exponent))


def log1mexp(x) -> Array:
  """`log(1 − eˣ)` for `x < 0`, accurate on both sides of `−ln 2`.

  Uses `log1p(−eˣ)` for `x < −ln 2` and `log(−expm1(x))` otherwise (Mächler, "Accurately
  computing log(1 − exp(−|a|))"). Each branch only ever sees inputs where it is finite (the
  double-`where` trick), so a discarded branch cannot put a NaN into the gradient. The value at
  `x = 0` is −inf; callers that can meet probability-1 sequences clamp `x ≤ −1e−7` first.

  Args:
    x: log-probabilities, any shape, `x ≤ 0`.

  Returns:
    `log(1 − eˣ)`, same shape.
  """
  x = arrays.as_float(x)
  small = x < -_LN2
  far = jnp.where(small, x, -1.0)  # the log1p branch never sees x >= -ln 2
  near = jnp.where(small, -0.5, x)  # the expm1 branch never sees x < -ln 2
  return jnp.where(small, jnp.log1p(-jnp.exp(far)), jnp.log(-jnp.expm1(near)))


def phi(u) -> Array:
  """`φ(u) = u / (eᵘ − 1)` (MaPO's per-sample weight), finite with finite gradients everywhere.

  The 0/0 at `u = 0` (limit 1) uses the series `1 − u/2 + u²/12` for `|u| < 1e−4`; positive `u`
  uses `u·e⁻ᵘ / (−expm1(−u))` so that large `u` gives 0 instead of `inf/inf`; negative `u` uses
  `u / expm1(u)`. Each branch is fed a safe dummy where it is not selected (double `where`).

  Args:
    u: any shape.

  Returns:
    `φ(u)`, same shape.
  """
  u = arrays.as_float(u)
  tiny = jnp.abs(u) < _PHI_SERIES_CUTOFF
  positive = u >= _PHI_SERIES_CUTOFF
  negative = u <= -_PHI_SERIES_CUTOFF
  up = jnp.where(positive, u, 1.0)
  un = jnp.where(negative, u, -1.0)
  series = 1.0 - u / 2.0 + u * u / 12.0
  pos_value = up * jnp.exp(-up) / (-jnp.expm1(-up))
  neg_value = un / jnp.expm1(un)
  return jnp.where(tiny, series, jnp.where(positive, pos_value, neg_value))


# ------------------------------------------------------------------------------------------------
# Sequence scores (`docs/conventions.md`).


def _lengths(lengths, where: str) -> Array:
  if lengths is None:
    raise ValueError(f"{where}: `lengths` (completion token counts, [..., K]) is required.")
  return jnp.maximum(arrays.as_float(lengths), 1.0)


def log_ratio(logps, ref_logps) -> Array:
  """Log-ratio `ρ = lp − stop_gradient(lr)`.

  Args:
    logps: `[..., K]` summed policy log-probs.
    ref_logps: `[..., K]` summed reference log-probs (constant).

  Returns:
    `[..., K]` log-ratios.
  """
  if ref_logps is None:
    raise ValueError("log_ratio: `ref_logps` is required (this score needs a reference).")
  return arrays.as_float(logps) - jax.lax.stop_gradient(arrays.as_float(ref_logps))


def length_normalized_log_ratio(logps, ref_logps, lengths) -> Array:
  """Per-token log-ratio `ρ̄ = (lp − lr) / n`, `n = max(lengths, 1)`.

  Args:
    logps, ref_logps, lengths: `[..., K]`.

  Returns:
    `[..., K]`.
  """
  return log_ratio(logps, ref_logps) / _lengths(lengths, "length_normalized_log_ratio")


def average_logprob(logps, lengths) -> Array:
  """Reference-free average log-prob `a = lp / n`, `n = max(lengths, 1)`.

  Args:
    logps, lengths: `[..., K]`.

  Returns:
    `[..., K]`.
  """
  return arrays.as_float(logps) / _lengths(lengths, "average_logprob")


def dpo_gamma_log_ratio(logps, ref_logps, *, gamma: float = 1.0) -> Array:
  """Per-response DPO^γ score `lp − γ·lr` (γ = 1 is the log-ratio, γ = 0 drops the reference).

  Paper: "Preference Learning Algorithms Do Not Learn Preference Rankings" (Chen et al., 2024).

  Args:
    logps, ref_logps: `[..., K]`.
    gamma: weight of the reference (paper sweeps 0 … 2).

  Returns:
    `[..., K]`.
  """
  if ref_logps is None:
    raise ValueError("dpo_gamma_log_ratio: `ref_logps` is required.")
  return arrays.as_float(logps) - gamma * jax.lax.stop_gradient(arrays.as_float(ref_logps))


def dpo_gamma_margin(logps, ref_logps, *, gamma: float = 1.0) -> Array:
  """DPO^γ margin `(lp_w − lp_l) − γ·(lr_w − lr_l)` of a pair.

  Args:
    logps, ref_logps: `[..., 2]`, slot 0 chosen.
    gamma: weight of the reference margin (1 = the DPO logit `h`).

  Returns:
    `[...]`.
  """
  s = dpo_gamma_log_ratio(logps, ref_logps, gamma=gamma)
  return s[..., 0] - s[..., 1]


# ------------------------------------------------------------------------------------------------
# f-divergence score transforms: `s(ρ)`, then `Δ = s_w − s_l` replaces the DPO logit.


def reverse_kl(rho) -> Array:
  """Reverse KL (DPO's own constraint): `s = ρ`."""
  return arrays.as_float(rho)


def forward_kl(rho, *, max_exponent: float = MAX_EXPONENT) -> Array:
  """Forward KL: `s = −exp(−ρ)` (exponent clipped at `max_exponent`).

  Paper: "Beyond Reverse KL: Generalizing Direct Preference Optimization with Diverse Divergence
  Constraints" (Wang et al., 2023).
  """
  return -clipped_exp(-arrays.as_float(rho), max_exponent=max_exponent)


def js_divergence(rho) -> Array:
  """Jensen–Shannon: `s = logσ(ρ)` (Wang et al., 2023)."""
  return jax.nn.log_sigmoid(arrays.as_float(rho))


def alpha_reward(q, *, alpha: float, max_exponent: float = MAX_EXPONENT) -> Array:
  """AlphaPO's reward shape `r_α(q) = (1 − exp(−α·q))/α`; `r_α(q) → q` as α → 0.

  The exponent `−α·q` is clipped at `max_exponent`; for `|α| < 1e−6` the value is `q` (double
  `where`, so α = 0 has finite gradients).

  Paper: "AlphaPO: Reward Shape Matters for LLM Alignment" (2025).

  Args:
    q: log-probs (summed or averaged) or log-ratios, any shape.
    alpha: α.
    max_exponent: clip of `−α·q`.
  """
  q = arrays.as_float(q)
  alpha = arrays.as_float(alpha)
  singular = jnp.abs(alpha) < _ALPHA_SINGULAR
  safe = jnp.where(singular, 1.0, alpha)
  value = -jnp.expm1(jnp.minimum(-safe * q, max_exponent)) / safe
  return jnp.where(singular, q, value)


def _power_score(rho, exponent_coef, max_exponent) -> Array:
  """`exp(c·ρ)/c` with a clipped exponent; `ρ` (reverse KL) for `|c| < 1e−6` (double `where`)."""
  rho = arrays.as_float(rho)
  c = arrays.as_float(exponent_coef)
  singular = jnp.abs(c) < _ALPHA_SINGULAR
  safe = jnp.where(singular, 1.0, c)
  return jnp.where(singular, rho, clipped_exp(safe * rho, max_exponent=max_exponent) / safe)


def alpha_div(rho, *, alpha: float = 0.5, max_exponent: float = MAX_EXPONENT) -> Array:
  """α-divergence, paper convention (default): `s = −exp(−α·ρ)/α`.

  Falls back to reverse KL (`s = ρ`) for `|α| < 1e−6`; the exponent is clipped at
  `max_exponent` before `exp`.

  Paper: "Beyond Reverse KL: Generalizing Direct Preference Optimization with Diverse Divergence
  Constraints" (Wang et al., 2023).

  Args:
    rho: log-ratios, any shape.
    alpha: α (default 0.5).
    max_exponent: clip of `−α·ρ`.
  """
  return _power_score(rho, -arrays.as_float(alpha), max_exponent)


def alpha_div_trl(rho, *, alpha: float = 0.5, max_exponent: float = MAX_EXPONENT) -> Array:
  """α-divergence as in TRL ≥ v0.29: `s = exp((α−1)·ρ)/(α−1)`.

  The paper form with α replaced by `1 − α` (coincides with `alpha_div` at α = 0.5). Falls back
  to reverse KL for `|α − 1| < 1e−6`.
  """
  return _power_score(rho, arrays.as_float(alpha) - 1.0, max_exponent)


F_DIVERGENCES: dict[str, Callable[[Array], Array]] = {
    "reverse_kl": reverse_kl,
    "forward_kl": forward_kl,
    "js_divergence": js_divergence,
    "alpha_div": alpha_div,
    "alpha_div_trl": alpha_div_trl,
}

FDiv = Union[str, Callable[[Array], Array]]


def fdiv_transform(fdiv: FDiv) -> Callable[[Array], Array]:
  """Resolves an f-divergence option: a name in `F_DIVERGENCES` or a callable `ρ -> s`.

  For a non-default α pass a callable, e.g. `functools.partial(scores.alpha_div, alpha=0.3)`.
  """
  if callable(fdiv):
    return fdiv
  if fdiv not in F_DIVERGENCES:
    raise ValueError(f"Unknown f-divergence {fdiv!r}; known: {sorted(F_DIVERGENCES)}.")
  return F_DIVERGENCES[fdiv]


# ------------------------------------------------------------------------------------------------
# ORPO log-odds.


def log_odds(average_logps) -> Array:
  """Log-odds of a per-token probability: `log(p/(1−p)) = a − log1mexp(a)`, `a ≤ −1e−7`.

  The clamp keeps a probability-1 sequence (`a = 0`) finite.

  Args:
    average_logps: `a = lp/n`, any shape.
  """
  a = jnp.minimum(arrays.as_float(average_logps), _LOG_PROB_CEILING)
  return a - log1mexp(a)


def orpo_log_odds_ratio(logps, lengths) -> Array:
  """ORPO log odds ratio `(a_w − a_l) − (log1mexp(a_w) − log1mexp(a_l))`, `a = lp/max(n, 1)`.

  Paper: "ORPO: Monolithic Preference Optimization without Reference Model" (Hong et al., 2024).

  Args:
    logps, lengths: `[..., 2]`, slot 0 chosen.

  Returns:
    `[...]`.
  """
  odds = log_odds(average_logprob(logps, lengths))
  return odds[..., 0] - odds[..., 1]


# ------------------------------------------------------------------------------------------------
# Per-token modifiers: WPO weights and LD-DPO mixing.


def wpo_log_weights(token_logps, token_log_sum_sq_probs, mask) -> Array:
  """Per-sequence WPO log-weight `(1/n) Σ_t [lp_t − log Σ_v p_v²]`, stop-gradient.

  Args:
    token_logps: `[..., T]` log-probs of the sampled tokens.
    token_log_sum_sq_probs: `[..., T]` `log Σ_v p_v² = logsumexp(2·logits) − 2·logsumexp(logits)`
      per position (computed chunked by the model engine, never from full f32 logits here).
    mask: `[..., T]` completion mask; `n = max(Σ mask, 1)`.

  Returns:
    `[...]` log-weights.
  """
  mask = jnp.asarray(mask, bool)
  diff = arrays.as_float(token_logps) - arrays.as_float(token_log_sum_sq_probs)
  return jax.lax.stop_gradient(arrays.masked_mean(diff, mask, axis=-1))


def wpo_weights(token_logps, token_log_sum_sq_probs, mask, *, clamp: bool = False) -> Array:
  """WPO pair weight `w(y_w)·w(y_l)`, `w(y) = exp((1/n) Σ_t [lp_t − log Σ_v p_v²])`.

  Paper: "WPO: Enhancing RLHF with Weighted Preference Optimization" (Zhou et al., 2024).
  Stop-gradient. `clamp=True` caps the product at 1 (TRL ≤ v0.28); the default does not (TRL ≥
  v0.29). The pair weight is returned in both slots, so it can be passed as `weights=` to any
  pairwise objective whichever slot the labels make the chosen one.

  Args:
    token_logps, token_log_sum_sq_probs, mask: `[..., 2, T]` (slot 0 and 1 of each pair).
    clamp: cap the product at 1.

  Returns:
    `[..., 2]`, both slots holding the pair weight.
  """
  log_w = wpo_log_weights(token_logps, token_log_sum_sq_probs, mask)
  log_pair = jnp.sum(log_w, axis=-1, keepdims=True)
  if clamp:
    log_pair = jnp.minimum(log_pair, 0.0)
  return jnp.broadcast_to(clipped_exp(log_pair), log_w.shape)


def _ld_mix(token_logps, mask, alpha) -> Array:
  mask = jnp.asarray(mask, bool)
  counts = jnp.sum(mask, axis=-1)  # [..., 2]
  n_min = jnp.min(counts, axis=-1, keepdims=True)[..., None]  # [..., 1, 1]
  position = jnp.cumsum(mask, axis=-1)  # 1-based index among completion tokens
  token_weight = jnp.where(position <= n_min, 1.0, alpha)
  return jnp.sum(jnp.where(mask, token_weight * arrays.as_float(token_logps), 0.0), axis=-1)


def ld_dpo_logps(
    token_logps, ref_token_logps, mask, *, alpha: float, ld_reference: bool = True
) -> tuple[Array, Array]:
  """LD-DPO length-desensitised sequence log-probs of a pair.

  `n_min = min(n_w, n_l)`; `lp^LD = Σ_{t ≤ n_min} lp_t + α·Σ_{t > n_min} lp_t` (t counts
  completion tokens). Applied to the policy and, by default, the reference (TRL ≥ v0.29);
  `ld_reference=False` transforms the policy only (TRL ≤ v0.28). Feed the result to any
  pairwise objective.

  Paper: "Length Desensitization in Direct Preference Optimization" (Liu et al., 2024).

  Args:
    token_logps: `[..., 2, T]` policy token log-probs (slot 0 chosen).
    ref_token_logps: `[..., 2, T]` reference token log-probs (constant).
    mask: `[..., 2, T]` completion mask.
    alpha: weight of the excess tokens, in [0, 1] (1 = plain sums).
    ld_reference: also transform the reference.

  Returns:
    `(logps, ref_logps)`, each `[..., 2]`.
  """
  arrays.check_range("alpha", alpha, low=0.0, high=1.0, where="ld_dpo_logps")
  if jnp.shape(token_logps)[-2:-1] != (2,):
    raise ValueError(
        f"ld_dpo_logps: token inputs must be [..., 2, T], got {jnp.shape(token_logps)}."
    )
  ref_token_logps = jax.lax.stop_gradient(arrays.as_float(ref_token_logps))
  logps = _ld_mix(token_logps, mask, alpha)
  ref_logps = _ld_mix(ref_token_logps, mask, alpha if ld_reference else 1.0)
  return logps, ref_logps
