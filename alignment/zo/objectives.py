"""Synthetic objectives of the ZO-RankSGD benchmark.

Paper: *Zeroth-Order Optimization Meets Human Feedback: Provable Learning via Ranking Oracles*
(Tang, Rybin, Chang; ICLR 2024); the same functions as the authors' notebooks (TZW1998/rank_opt).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def rosenbrock(x: jax.Array) -> jax.Array:
  """`f(x) = Σ_{i=1}^{d−1} [100(x_{i+1} − x_i²)² + (1 − x_i)²]` for x `[d]`; min 0 at x = 1."""
  x = jnp.asarray(x, jnp.float32)
  return jnp.sum(100.0 * jnp.square(x[1:] - jnp.square(x[:-1])) + jnp.square(1.0 - x[:-1]))


def sample_low_rank_quadratic(
    key: jax.Array, d: int = 100, *, rank: int | None = None
) -> tuple[jax.Array, jax.Array]:
  """`(Q, b)` with `Q = A·Aᵀ`, `A ∈ R^{d×rank}` (default rank d/2), entries and b ~ N(0, 1).

  Q has rank d/2, so b is almost surely not in its range and `xᵀQx + bᵀx` is unbounded below
  along the null space of Q (the objective keeps decreasing linearly there).
  """
  rank = d // 2 if rank is None else rank
  if not 1 <= rank <= d:
    raise ValueError(f"sample_low_rank_quadratic: rank={rank} is out of range [1, d={d}].")
  a_key, b_key = jax.random.split(key)
  a = jax.random.normal(a_key, (d, rank), jnp.float32)
  return a @ a.T, jax.random.normal(b_key, (d,), jnp.float32)


def low_rank_quadratic(x: jax.Array, q: jax.Array, b: jax.Array) -> jax.Array:
  """`f(x) = xᵀQx + bᵀx` for x `[d]`, Q `[d, d]`, b `[d]`."""
  x = jnp.asarray(x, jnp.float32)
  return x @ (q @ x) + b @ x
