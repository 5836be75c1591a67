"""LSC reward transform, reference-reward estimators and reward combination.

Paper: *Transforming and Combining Rewards for Aligning Large Language Models* (Wang, Nagpal,
Berant, Eisenstein, D'Amour, Koyejo, Veitch; ICML 2024). No official code; `r_ref_normal`
follows the third-party implementation `PorUna-byte/PAR` (`trainers/reward_shaper.py`).

Under Bradley–Terry, `p(y beats the reference | x) = σ(r(x, y) − r_ref(x))`, and KL-regularised
RL on `u = log p` targets `π ∝ π_0·p^{1/γ}`. Summing the transformed rewards of several
properties is the log-probability of being good on *all* of them (a logical AND).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from alignment import arrays

Array = jax.Array
_MODES = ("lsc_sum", "raw_sum")


def lsc(rewards: Array, reference_rewards: Array) -> Array:
  r"""Log-sigmoid centring: `u(x, y) = logσ(r(x, y) − r_ref(x))`.

  Bounded above by 0, increasing and concave: about `r − r_ref` (linear) for `r ≪ r_ref`,
  saturating towards 0 for `r ≫ r_ref`, so reward hacking far above the reference pays little.
  `r` and `r_ref` must come from the same reward model and normalisation.

  Args:
    rewards: `[...]` rewards r(x, y).
    reference_rewards: r_ref(x), broadcastable to `rewards` (e.g. `[B, 1]` against `[B, N]`).

  Returns:
    `[...]` transformed rewards, `≤ 0`.

  >>> print(lsc(jnp.array(0.), jnp.array(0.)))  # log(1/2)
  -0.6931...
  """
  rewards = arrays.f32(rewards)
  arrays.check_shapes("lsc", "rewards", rewards, reference_rewards=reference_rewards)
  return jax.nn.log_sigmoid(rewards - arrays.f32(reference_rewards))


def _samples(fn_name: str, sample_rewards, where, q):
  arrays.check_range("q", q, low=0.0, high=1.0, where=fn_name)
  x = arrays.f32(sample_rewards)
  if x.ndim < 1:
    raise ValueError(f"{fn_name}: sample_rewards must be [..., n] (n samples per prompt), got a "
                     "scalar.")
  arrays.check_shapes(fn_name, "sample_rewards", x, where=where)
  valid = arrays.valid_mask(x, where)
  return jnp.where(valid, x, 0.0), valid, jnp.sum(valid, axis=-1, dtype=jnp.int32)


def r_ref_quantile(sample_rewards: Array, *, q: float = 0.85,
                   where: Optional[Array] = None) -> Array:
  r"""Reference reward as the empirical q-quantile of n reference-policy sample rewards.

  The paper's estimator (its exact quantile is unverified; 0.85 is the third-party default):
  sort the n valid rewards `x_(0) ≤ … ≤ x_(n−1)`, `h = (n − 1)·q`,
  `r_ref = x_(⌊h⌋) + (h − ⌊h⌋)·(x_(⌊h⌋+1) − x_(⌊h⌋))` (linear interpolation, numpy's default).
  Use n ≥ 8 samples per prompt; fewer make r_ref noisy (prefer `r_ref_normal` then).

  Args:
    sample_rewards: `[..., n]` rewards of n samples of the base/SFT policy per prompt.
    q: quantile in [0, 1].
    where: optional `[..., n]` bool, valid samples. A prompt without samples gets 0.

  Returns:
    `[...]` reference rewards.

  >>> print(r_ref_quantile(jnp.array([3., 1., 2., 0., 4.]), q=0.85))  # 3 + 0.4·(4 − 3)
  3.4...
  """
  x, valid, n = _samples("r_ref_quantile", sample_rewards, where, q)
  x = jnp.sort(jnp.where(valid, x, jnp.inf), axis=-1)  # invalid samples last
  h = (jnp.maximum(n, 1) - 1).astype(jnp.float32) * q
  lo = jnp.floor(h).astype(jnp.int32)
  hi = jnp.minimum(lo + 1, jnp.maximum(n, 1) - 1)
  x = jnp.where(jnp.isfinite(x), x, 0.0)  # double-where: the +inf padding never reaches a value
  x_lo = jnp.take_along_axis(x, lo[..., None], axis=-1)[..., 0]
  x_hi = jnp.take_along_axis(x, hi[..., None], axis=-1)[..., 0]
  return jnp.where(n > 0, x_lo + (h - lo) * (x_hi - x_lo), 0.0)


def r_ref_normal(sample_rewards: Array, *, q: float = 0.85, eps: float = 1e-5,
                 where: Optional[Array] = None) -> Array:
  r"""Reference reward as the q-quantile of a normal fitted to the sample rewards.

  `r_ref = mean + Φ⁻¹(q)·(std + eps)`, std with Bessel's correction (n − 1) when n > 1 and 0
  for a single sample; q = 0.85, eps = 1e−5 (`PorUna-byte/PAR`, `trainers/reward_shaper.py`).

  Args:
    sample_rewards: `[..., n]` rewards of n samples of the base/SFT policy per prompt.
    q: quantile in (0, 1).
    eps: added to the standard deviation.
    where: optional `[..., n]` bool, valid samples. A prompt without samples gets 0.

  Returns:
    `[...]` reference rewards.

  >>> print(r_ref_normal(jnp.array([1., 3.]), q=0.5))  # the mean
  2.0
  """
  arrays.check_range("q", q, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False,
                     where="r_ref_normal")
  x, valid, n = _samples("r_ref_normal", sample_rewards, where, q)
  count = n.astype(jnp.float32)
  mean = jnp.sum(x, axis=-1) / jnp.maximum(count, 1.0)
  sq = jnp.sum(jnp.where(valid, jnp.square(x - mean[..., None]), 0.0), axis=-1)
  var = sq / jnp.maximum(count - 1.0, 1.0)
  positive = var > 0.0
  std = jnp.where(positive, jnp.sqrt(jnp.where(positive, var, 1.0)), 0.0)
  z = jax.scipy.special.ndtri(jnp.float32(q))
  return jnp.where(n > 0, mean + z * (std + eps), 0.0)


def combine_rewards(
    rewards: Array,
    reference_rewards: Optional[Array] = None,
    *,
    mode: str = "lsc_sum",
    weights: Optional[Array] = None,
) -> Array:
  r"""Combines M rewards of each response into one.

  - `mode="lsc_sum"` (default; the paper's logical AND): `u_∧ = Σ_i w_i·logσ(r_i − r_ref,i(x))`,
    the log-probability of beating the reference on every property when they are conditionally
    independent (w = 1 in the paper). A shortfall in any one reward costs more than it does in
    the raw sum: the marginal value `σ(r_ref,i − r_i)` of reward i is largest where it is worst.
  - `mode="raw_sum"` (baseline): `Σ_i w_i·r_i`; `reference_rewards` is not used.

  Args:
    rewards: `[..., M]` rewards of M properties (reward models) per response.
    reference_rewards: `[..., M]` (broadcastable, e.g. `[B, 1, M]` per prompt) per-property
      reference rewards, required for `lsc_sum`.
    mode: `"lsc_sum"` or `"raw_sum"`.
    weights: optional `[M]` (or `[..., M]`) weights, default 1.

  Returns:
    `[...]` combined rewards.

  >>> r, ref = jnp.array([0., 2.]), jnp.array([0., 0.])
  >>> print(combine_rewards(r, ref), combine_rewards(r, mode="raw_sum"))  # log½ + logσ(2), 2
  -0.8200... 2.0
  """
  if mode not in _MODES:
    raise ValueError(f"combine_rewards: unknown mode {mode!r}; known modes: {_MODES}.")
  rewards = arrays.f32(rewards)
  if rewards.ndim < 1:
    raise ValueError("combine_rewards: rewards must be [..., M] (M properties), got a scalar.")
  arrays.check_shapes("combine_rewards", "rewards", rewards, weights=weights)
  if mode == "lsc_sum":
    if reference_rewards is None:
      raise ValueError("combine_rewards: mode='lsc_sum' needs reference_rewards [..., M].")
    rewards = lsc(rewards, reference_rewards)
  if weights is not None:
    rewards = rewards * arrays.f32(weights)
  return jnp.sum(rewards, axis=-1)
