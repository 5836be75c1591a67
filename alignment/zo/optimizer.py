"""ZO-RankSGD as a pure, optax-style zeroth-order optimiser.

Paper: *Zeroth-Order Optimization Meets Human Feedback: Provable Learning via Ranking Oracles*
(Tang, Rybin, Chang; ICLR 2024).

    x ← x − η · d,     d = g / ‖g‖ (normalize_direction) or g,

with g the rank-based estimate of `alignment.zo.estimator.rank_grad_estimate` (m queries per
iteration). Two equivalent interfaces:

- `opt.step(x, key, oracle) -> (x', key', info)`: one pure iteration; `key'` is the key to use
  next time.
- `opt.init(params, key) -> state` and `opt.update(params, state, oracle) ->
  (updates, state', info)`, with `params' = optax.apply_updates(params, updates)`; the PRNG key
  lives in the state, so a `lax.scan` over iterations needs nothing else.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from alignment.zo.estimator import check_m_mu, global_norm, rank_grad_estimate, safe_normalize
from alignment.zo.oracles import Oracle

PyTree = Any


class ZeroOrderState(NamedTuple):
  """State of a zeroth-order optimiser: the PRNG key for the next iteration and a counter."""

  key: jax.Array
  count: jax.Array  # int32 scalar: iterations done


class ZeroOrderOptimizer(NamedTuple):
  """`init(params, key)`, `update(params, state, oracle)` and the pure `step(x, key, oracle)`."""

  init: Callable[[PyTree, jax.Array], ZeroOrderState]
  update: Callable[[PyTree, ZeroOrderState, Any], tuple[PyTree, ZeroOrderState, dict]]
  step: Callable[[PyTree, jax.Array, Any], tuple[PyTree, jax.Array, dict]]


DirectionFn = Callable[[PyTree, jax.Array, Any], tuple[PyTree, dict]]
UpdatesFn = Callable[[PyTree, jax.Array, Any], tuple[PyTree, dict]]


def optimizer_from_updates(updates_fn: UpdatesFn) -> ZeroOrderOptimizer:
  """Wraps `updates_fn(params, key, oracle) -> (updates, info)` as a `ZeroOrderOptimizer`.

  `step` splits the key (`key, sub = split(key)`, `sub` for this iteration) and applies the
  updates; `update` does the same with the key kept in the state.
  """

  def step(x, key, oracle):
    key, sub = jax.random.split(key)
    updates, info = updates_fn(x, sub, oracle)
    return jax.tree_util.tree_map(jnp.add, x, updates), key, info

  def init(params, key):
    del params
    return ZeroOrderState(key=key, count=jnp.zeros((), jnp.int32))

  def update(params, state, oracle):
    key, sub = jax.random.split(state.key)
    updates, info = updates_fn(params, sub, oracle)
    return updates, ZeroOrderState(key=key, count=state.count + 1), info

  return ZeroOrderOptimizer(init=init, update=update, step=step)


def descent_optimizer(
    direction_fn: DirectionFn, *, learning_rate: float, normalize_direction: bool
) -> ZeroOrderOptimizer:
  """Builds `x ← x − η·d` from `direction_fn(x, key, oracle) -> (g, info)`.

  Shared by ZO-RankSGD and the value-based baselines; `d = g/‖g‖` when `normalize_direction`
  (every step then has length η; a zero g gives a zero step). `info["direction_norm"]` is ‖g‖.
  """
  if not learning_rate > 0:
    raise ValueError(f"learning_rate must be > 0, got {learning_rate}.")

  def updates_fn(params, key, oracle):
    g, info = direction_fn(params, key, oracle)
    info = dict(info, direction_norm=global_norm(g))
    d = safe_normalize(g) if normalize_direction else g
    return jax.tree_util.tree_map(lambda a: -learning_rate * a, d), info

  return optimizer_from_updates(updates_fn)


def zo_rank_sgd(
    learning_rate: float = 1.0,
    *,
    m: int = 10,
    mu: float = 0.1,
    normalize_direction: bool = True,
    perturbation: str = "gaussian",
    include_center: bool = False,
) -> ZeroOrderOptimizer:
  """ZO-RankSGD: `x ← x − η·g/‖g‖` with the rank-based estimate g (one (m, k)-oracle call).

  Paper: *Zeroth-Order Optimization Meets Human Feedback: Provable Learning via Ranking Oracles*
  (Tang, Rybin, Chang; ICLR 2024). k is whatever the oracle returns.

  Args:
    learning_rate: η (the step length when `normalize_direction`).
    m: queries per iteration.
    mu: smoothing radius μ of the perturbations `x + μ·ξ_i`.
    normalize_direction: unit-norm direction (default, the paper's synthetic protocol).
    perturbation: "gaussian" (default) or "sphere".
    include_center: x itself is one of the m queries.

  Returns:
    A `ZeroOrderOptimizer`; `oracle(candidates, key) -> ranking [k]` is passed to `update` and
    `step`. Example::

      opt = zo_rank_sgd(1.0, m=10)
      x, key, info = opt.step(x, key, exact_oracle(f, k=5))
  """
  def direction(params, key, oracle: Oracle):
    return rank_grad_estimate(
        params, key, oracle, m=m, mu=mu, perturbation=perturbation,
        include_center=include_center,
    )

  check_m_mu(m, mu, "zo_rank_sgd")
  return descent_optimizer(
      direction, learning_rate=learning_rate, normalize_direction=normalize_direction
  )

