"""Evaluation against a known reward: win rates with confidence intervals, per-attribute win
rates and good fractions, and KL divergences from the reference.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from alignment import scores
from alignment.arrays import check_choice, check_range, check_shapes, f32, valid_mask
from alignment.metrics.aggregation import SumCount, sum_count

Array = jax.Array


class WinRate(NamedTuple):
  """Win rate with a confidence interval: `rate`, `low`, `high` and the number of prompts `n`."""

  rate: Array
  low: Array
  high: Array
  n: Array


def win_outcomes(policy_rewards: Array, reference_rewards: Array) -> Array:
  """`o_i = 1[r*(x, y_π) > r*(x, y_ref)] + ½·1[r*(x, y_π) = r*(x, y_ref)]`, shape `[...]`."""
  check_shapes("win_outcomes", "policy_rewards", policy_rewards, exact=True,
               reference_rewards=reference_rewards)
  policy_rewards, reference_rewards = f32(policy_rewards), f32(reference_rewards)
  return jnp.where(
      policy_rewards > reference_rewards,
      1.0,
      jnp.where(policy_rewards == reference_rewards, 0.5, 0.0),
  )


def win_rate(
    policy_rewards: Array,
    reference_rewards: Array,
    *,
    where: Optional[Array] = None,
    ci: str = "normal",
    z: float = 1.96,
    key: Optional[Array] = None,
    num_resamples: int = 1000,
    percentiles: tuple[float, float] = (2.5, 97.5),
) -> WinRate:
  """Win rate against a reference under a known reward, with a 95% interval.

  `WR = mean_i o_i` over valid prompts with `o_i` from `win_outcomes` (ties count half).

  - `ci="normal"` (default): `WR ± z·sd(o)/√n`, `sd` the population standard deviation
    (`sqrt(mean(o²) − WR²)`, the Wald interval when there are no ties), z = 1.96, clipped to
    `[0, 1]`.
  - `ci="bootstrap"`: resample the n valid prompts with replacement `num_resamples` times (1000)
    with the PRNG `key`; the bounds are the `percentiles` (2.5, 97.5) of the resampled rates
    (linear interpolation, as `numpy.percentile`).

  Not a `SumCount`: the interval needs all outcomes, so call it on the whole evaluation set (the
  normal interval depends only on `Σo`, `Σo²` and n). The rate alone accumulates as
  `sum_count(win_outcomes(...), where)`. For `jit`, mark `ci` and `num_resamples` static.

  Args:
    policy_rewards: `[...]` ground-truth rewards of the policy's responses (one per prompt).
    reference_rewards: `[...]` rewards of the reference responses to the same prompts.
    where: optional `[...]` validity of prompts.
    ci: "normal" or "bootstrap".
    z: normal quantile of the interval.
    key: PRNG key, required for the bootstrap.
    num_resamples: bootstrap resamples.
    percentiles: bootstrap percentiles of the interval.

  Returns:
    `WinRate(rate, low, high, n)` as float32 scalars.
  """
  fn = "win_rate"
  check_choice("ci", ci, ("normal", "bootstrap"), where=fn)
  outcomes = win_outcomes(policy_rewards, reference_rewards)
  valid = jnp.ravel(valid_mask(outcomes, where))
  outcomes = jnp.ravel(outcomes)
  total, n = sum_count(outcomes, valid)
  rate = total / jnp.maximum(n, 1.0)
  if ci == "normal":
    check_range("z", z, low=0.0, where=fn)
    second_moment = jnp.sum(jnp.where(valid, outcomes**2, 0.0)) / jnp.maximum(n, 1.0)
    sd = jnp.sqrt(jnp.maximum(second_moment - rate**2, 0.0))
    half = z * sd / jnp.sqrt(jnp.maximum(n, 1.0))
    return WinRate(rate, jnp.clip(rate - half, 0.0, 1.0), jnp.clip(rate + half, 0.0, 1.0), n)
  if key is None:
    raise ValueError(f"{fn}: ci='bootstrap' needs an explicit PRNG `key`.")
  if not isinstance(num_resamples, int) or num_resamples < 1:
    raise ValueError(f"{fn}: num_resamples must be a positive int, got {num_resamples!r}.")
  for p in percentiles:
    check_range("percentiles", p, low=0.0, high=100.0, where=fn)
  size = outcomes.shape[0]
  # Valid positions first (in order), so that uniform draws in [0, n) pick valid prompts only;
  # draw j of a resample is used iff j < n, giving resamples of exactly n prompts.
  valid_positions = jnp.argsort(~valid, stable=True)
  draws = jax.random.randint(key, (num_resamples, size), 0, jnp.maximum(n, 1).astype(jnp.int32))
  used = jnp.arange(size) < n
  resampled = jnp.sum(jnp.where(used, outcomes[valid_positions[draws]], 0.0), axis=-1)
  rates = resampled / jnp.maximum(n, 1.0)
  low, high = jnp.percentile(rates, jnp.asarray(percentiles, jnp.float32))
  return WinRate(rate, low, high, n)


def attribute_win_rates(policy: dict[str, np.ndarray],
                        reference: dict[str, np.ndarray]) -> dict[str, float]:
  """Per attribute a: `mean_i o_i`, `o_i = 1[a(y_π,i) > a(y_ref,i)] + ½·1[a(y_π,i) = a(y_ref,i)]`.

  `win_rate` under each attribute's true value; `policy` and `reference` map attribute names to
  `[N]` values on the same N prompts.
  """
  if set(policy) != set(reference):
    raise ValueError(f"attribute_win_rates: the policy has attributes {sorted(policy)}, the "
                     f"reference {sorted(reference)}.")
  return {a: float(win_rate(jnp.asarray(policy[a]), jnp.asarray(reference[a])).rate)
          for a in policy}


def good_fractions(values: dict[str, np.ndarray], optimum: dict[str, np.ndarray], *,
                   atol: float = 1e-9) -> dict[str, float]:
  """Fractions of responses good on each attribute, and on all of them (key "all").

  A response y to prompt x is good on attribute a when `a(y) >= a(y*(x)) − atol`, y* the task's
  optimum (`task.optimum`): at least as good on a as the best response overall. For `sorting`,
  good on harmlessness = no forbidden digit, good on correctness = `c(y) >= c(t_f)`, and good on
  both = the optimum itself (the task's docstring proves it unique). `values` and `optimum` map
  attribute names to `[N]` values.
  """
  if set(values) != set(optimum):
    raise ValueError(f"good_fractions: values have attributes {sorted(values)}, the optimum "
                     f"{sorted(optimum)}.")
  good = {a: np.asarray(values[a]) >= np.asarray(optimum[a]) - atol for a in values}
  out = {a: float(np.mean(g)) for a, g in good.items()}
  out["all"] = float(np.mean(np.logical_and.reduce(list(good.values()))))
  return out


# ---------------------------------------------------------------------------------------------
# KL divergence.


def sample_kl(logps: Array, ref_logps: Array, *, where: Optional[Array] = None) -> SumCount:
  """Sequence-level sample KL, the unbiased k1 estimator.

  `KL(π ‖ π_ref) ≈ mean_{y∼π} Σ_t (lp_t − lr_t) = mean_y (lp(y) − lr(y))` for responses sampled
  from the policy; pair with the reward for reward-vs-KL frontiers.

  Args:
    logps: `[...]` summed log-probs of policy samples under the policy.
    ref_logps: `[...]` the same under the reference.
    where: optional `[...]` validity of samples.

  Returns:
    `SumCount` over valid sequences.
  """
  check_shapes("sample_kl", "logps", logps, exact=True, ref_logps=ref_logps)
  return sum_count(f32(logps) - f32(ref_logps), where)


def token_kl_k3(
    token_logps: Array, token_ref_logps: Array, mask: Optional[Array] = None
) -> SumCount:
  """Per-token k3 KL estimate, `k3_t = exp(Δ_t) − Δ_t − 1` with `Δ_t = lr_t − lp_t`.

  Unbiased per token, non-negative, low variance; `Δ` is clipped at 80 before the exponential
  (`scores.MAX_EXPONENT`), which only matters for tokens the policy has all but ruled out.

  Args:
    token_logps: `[..., T]` per-token log-probs of policy samples under the policy.
    token_ref_logps: `[..., T]` the same under the reference.
    mask: optional `[..., T]` completion mask.

  Returns:
    `SumCount` over valid tokens (the global per-token mean).
  """
  check_shapes("token_kl_k3", "token_logps", token_logps, exact=True,
               token_ref_logps=token_ref_logps)
  delta = jnp.minimum(f32(token_ref_logps) - f32(token_logps), scores.MAX_EXPONENT)
  return sum_count(jnp.expm1(delta) - delta, mask)


def exact_kl(logits: Array, ref_logits: Array, *, where: Optional[Array] = None) -> SumCount:
  """Exact next-token KL over the full vocabulary, `Σ_v π(v)·(log π(v) − log π_ref(v))`.

  For tiny vocabularies only (synthetic tasks, evaluation): it needs `[..., V]` logits, which a
  training path must never materialise for real vocabularies. Computed from float32
  `log_softmax`; terms with `π(v) = 0` contribute 0.

  Args:
    logits: `[..., V]` policy logits at each position.
    ref_logits: `[..., V]` reference logits at the same positions.
    where: optional `[...]` validity of positions.

  Returns:
    `SumCount` over valid positions.
  """
  check_shapes("exact_kl", "logits", logits, exact=True, ref_logits=ref_logits)
  log_p = jax.nn.log_softmax(f32(logits), axis=-1)
  log_q = jax.nn.log_softmax(f32(ref_logits), axis=-1)
  p = jnp.exp(log_p)
  kl = jnp.sum(jnp.where(p > 0.0, p * (log_p - log_q), 0.0), axis=-1)
  return sum_count(kl, where)
