"""ComPO: an output-layer direction from comparison oracles.

Paper: *ComPO: Preference Alignment via Comparison Oracles* (Chen, Chen, Yin, Lin; NeurIPS
2025). Code: PeterLauLukChen/ComparisonPO (`compute_gradients.py`).

For preference pairs that DPO cannot separate ("noisy" pairs: `0 < lp(y_w) − lp(y_l) < τ`),
perturb only the output layer, `W + μ·Z_i` with `Z_i ~ N(0, I)`, and ask a 1-bit oracle whether
the perturbed model is better:

    y_i = −1 if, for any noisy pair, lp(y_w) goes up and lp(y_l) goes down     (strict test)
    y_i = −1 if, for any noisy pair, lp(y_w) goes up and the margin goes up    (relaxed test)
    y_i = +1 otherwise;
    u = Σ_i y_i Z_i,   ĝ = u/‖u‖₂,   ĝ ← ĝ · 1[|ĝ| ≥ thr],   W ← W − s·ĝ.

The relaxed test replaces the strict one when fewer than `negone_num_threshold` perturbations
voted −1. The model is never seen here: `logp_fn(W) -> (chosen_logps [P], rejected_logps [P])`
maps the output-layer pytree W to the summed completion log-probs of the P pairs (e.g. a closure
over cached final hidden states). Oracle outputs carry no gradient
(docs/conventions.md#stop-gradient).

Two selection rules after the estimate:

- `compo_step` (the paper's line search): evaluate every step size s of `step_sizes` with the
  same test and take the largest accepted one (`argmax`); none accepted (or s = 0) leaves W
  unchanged. The paper does not state its selection rule exactly; this is our reading.
- `compo_step_official` (what `compute_gradients.py` does): `W ← W − η·(n₋/M)·ĝ` with
  η = `learning_rate`, n₋ the number of strict −1 votes, applied only if `n₋ ≥
  negone_num_threshold` and the strict test passes at the probe step `s = 5`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from alignment.zo.estimator import global_norm, safe_normalize

PyTree = Any
LogpFn = Callable[[PyTree], tuple[jax.Array, jax.Array]]

STEP_SIZES = (0.0, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0)


def noisy_pair_mask(
    chosen_logps: jax.Array, rejected_logps: jax.Array, *, noise_threshold: float = 3.0
) -> jax.Array:
  """Pairs DPO cannot separate: `0 < lp(y_w) − lp(y_l) < noise_threshold`, bool `[P]`.

  (The official default `noise_threshold` is 3.0.) Clean pairs go to DPO.
  """
  margin = chosen_logps - rejected_logps
  return (margin > 0) & (margin < noise_threshold)


def comparison_votes(
    base: tuple[jax.Array, jax.Array],
    perturbed: tuple[jax.Array, jax.Array],
    where: jax.Array,
) -> tuple[jax.Array, jax.Array]:
  """`(strict, relaxed)` bool scalars: does the perturbed model win on any valid pair?

  strict: `lp'(y_w) > lp(y_w)` and `lp'(y_l) < lp(y_l)`; relaxed: `lp'(y_w) > lp(y_w)` and
  `lp'(y_w) − lp'(y_l) > lp(y_w) − lp(y_l)`. `base`, `perturbed`: `(chosen [P], rejected [P])`.
  """
  (w0, l0), (w1, l1) = base, perturbed
  chosen_up = w1 > w0
  strict = jnp.any(where & chosen_up & (l1 < l0))
  relaxed = jnp.any(where & chosen_up & (w1 - l1 > w0 - l0))
  return strict, relaxed


def _tree_normal(key: jax.Array, tree: PyTree) -> PyTree:
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  keys = jax.random.split(key, len(leaves))
  return treedef.unflatten(
      [jax.random.normal(k, jnp.shape(a), jnp.result_type(a)) for k, a in zip(keys, leaves)]
  )


def _axpy(alpha, x: PyTree, y: PyTree) -> PyTree:
  return jax.tree_util.tree_map(lambda a, b: alpha * a + b, x, y)


def compo_direction(
    params: PyTree,
    key: jax.Array,
    logp_fn: LogpFn,
    *,
    where: jax.Array,
    num_perturbations: int = 1600,
    mu: float = 5e-4,
    sparsity_threshold: float = 8e-5,
    negone_num_threshold: int = 370,
    chunk_size: int = 16,
) -> tuple[PyTree, dict[str, jax.Array]]:
  """The sparsified unit direction ĝ of ComPO and its vote counts.

  Perturbations are drawn in chunks of `chunk_size` (`vmap` inside a `scan`), so memory is
  `chunk_size` copies of W, never M. Defaults: M = 1600, thr = 8e-5, 370 votes (the paper's
  Llama / Gemma settings; Mistral: 1400, 2.2e-4, 330), μ = 5e-4.

  Args:
    params: W, the output-layer pytree.
    key: PRNG key of the perturbations.
    logp_fn: `W -> (chosen_logps [P], rejected_logps [P])`.
    where: bool `[P]`, the noisy pairs (`noisy_pair_mask`).

  Returns:
    `(ĝ, info)`: ĝ shaped like W; info: `num_strict`, `num_relaxed` (−1 votes under each
    test), `relaxed` (whether the relaxed test was used), `direction_norm` ‖u‖.
  """
  if num_perturbations % chunk_size:
    raise ValueError(
        f"compo_direction: num_perturbations={num_perturbations} must be a multiple of "
        f"chunk_size={chunk_size}."
    )
  base = jax.lax.stop_gradient(logp_fn(params))
  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)

  def vote(z):
    return comparison_votes(base, logp_fn(_axpy(mu, z, params)), where)

  def chunk(carry, keys):
    u_strict, u_relaxed, n_strict, n_relaxed = carry
    z = jax.vmap(_tree_normal, in_axes=(0, None))(keys, params)
    strict, relaxed = jax.vmap(vote)(z)
    y_strict = jnp.where(strict, -1.0, 1.0)
    y_relaxed = jnp.where(relaxed, -1.0, 1.0)

    def add(u, y):
      return jax.tree_util.tree_map(
          lambda a, b: a + jnp.tensordot(y.astype(b.dtype), b, axes=1), u, z)

    return (add(u_strict, y_strict), add(u_relaxed, y_relaxed),
            n_strict + jnp.sum(strict), n_relaxed + jnp.sum(relaxed)), None

  keys = jax.random.split(key, num_perturbations)
  keys = keys.reshape((num_perturbations // chunk_size, chunk_size) + keys.shape[1:])
  init = (zeros, zeros, jnp.int32(0), jnp.int32(0))
  (u_strict, u_relaxed, n_strict, n_relaxed), _ = jax.lax.scan(chunk, init, keys)
  use_relaxed = n_strict < negone_num_threshold
  u = jax.tree_util.tree_map(lambda a, b: jnp.where(use_relaxed, b, a), u_strict, u_relaxed)
  g = safe_normalize(u)
  g = jax.tree_util.tree_map(lambda a: a * (jnp.abs(a) >= sparsity_threshold), g)
  info = {"num_strict": n_strict, "num_relaxed": n_relaxed, "relaxed": use_relaxed,
          "direction_norm": global_norm(u)}
  return jax.lax.stop_gradient(g), info


def compo_step(
    params: PyTree,
    key: jax.Array,
    logp_fn: LogpFn,
    *,
    where: jax.Array,
    num_perturbations: int = 1600,
    mu: float = 5e-4,
    sparsity_threshold: float = 8e-5,
    negone_num_threshold: int = 370,
    step_sizes: Sequence[float] = STEP_SIZES,
    chunk_size: int = 16,
) -> tuple[PyTree, dict[str, jax.Array]]:
  """One ComPO update of the output layer W (the paper's line search over step sizes).

  `W ← W − s*·ĝ`, `s* = max{s ∈ step_sizes : W − s·ĝ passes the comparison test against W}`
  (the test — strict, or relaxed when fewer than `negone_num_threshold` strict −1 votes — is
  the one used for the votes); W is unchanged if no step passes. All step sizes are evaluated
  with `vmap` and chosen with `argmax`. See `compo_direction` for the other arguments.

  Returns:
    `(W', info)`; info adds `step_size` (s*, 0 if none accepted) to `compo_direction`'s.
  """
  g, info = compo_direction(
      params, key, logp_fn, where=where, num_perturbations=num_perturbations, mu=mu,
      sparsity_threshold=sparsity_threshold, negone_num_threshold=negone_num_threshold,
      chunk_size=chunk_size,
  )
  base = logp_fn(params)
  steps = jnp.asarray(step_sizes, jnp.float32)

  def accepted(s):
    strict, relaxed = comparison_votes(base, logp_fn(_axpy(-s, g, params)), where)
    return jnp.where(info["relaxed"], relaxed, strict) & (s > 0)

  ok = jax.vmap(accepted)(steps)
  s_best = jnp.max(jnp.where(ok, steps, 0.0))
  return _axpy(-s_best, g, params), dict(info, step_size=s_best)


def compo_step_official(
    params: PyTree,
    key: jax.Array,
    logp_fn: LogpFn,
    *,
    where: jax.Array,
    learning_rate: float = 0.035,
    num_perturbations: int = 1600,
    mu: float = 5e-4,
    sparsity_threshold: float = 8e-5,
    negone_num_threshold: int = 370,
    probe_step: float = 5.0,
    chunk_size: int = 16,
) -> tuple[PyTree, dict[str, jax.Array]]:
  """ComPO update as in the official `compute_gradients.py` (reproduction).

  `W ← W − η·(n₋/M)·ĝ` (η = `learning_rate`, default 0.035; n₋ strict −1 votes of M), applied
  only if `n₋ ≥ negone_num_threshold` and the strict test passes for `W − probe_step·ĝ`;
  otherwise W is kept. (The official voting uses the strict test only, so ĝ here is always the
  strict one.)
  """
  g, info = compo_direction(
      params, key, logp_fn, where=where, num_perturbations=num_perturbations, mu=mu,
      sparsity_threshold=sparsity_threshold, negone_num_threshold=0,  # strict votes only
      chunk_size=chunk_size,
  )
  strict, _ = comparison_votes(logp_fn(params), logp_fn(_axpy(-probe_step, g, params)), where)
  n_neg = info["num_strict"]
  apply = (n_neg >= negone_num_threshold) & strict
  scale = jnp.where(apply, learning_rate * n_neg / num_perturbations, 0.0)
  return _axpy(-scale, g, params), dict(info, relaxed=jnp.asarray(False), applied=apply,
                                        step_size=scale)
