"""Policy search from ranked episode returns: a JAX-native CartPole and a linear policy.

As in the policy-optimisation setting of *Zeroth-Order Optimization Meets Human Feedback:
Provable Learning via Ranking Oracles* (Tang, Rybin, Chang; ICLR 2024): x = policy parameters
θ, a query is one episode of the perturbed policy `θ + μξ_i`, and the oracle only reveals the
order of the returns (`returns_oracle`).

CartPole is the cart-pole balancing task of *Neuronlike Adaptive Elements That Can Solve
Difficult Learning Control Problems* (Barto, Sutton, Anderson; 1983) with the constants and
Euler integration of Gym's `CartPole-v1`: gravity 9.8, cart mass 1.0, pole mass 0.1, pole
half-length 0.5, force ±10 N, τ = 0.02 s; the episode ends when |cart position| > 2.4 or
|pole angle| > 12°; reward +1 per step survived, at most `horizon` (500) steps; initial state
uniform in [−0.05, 0.05]⁴. Written here (≈30 lines) rather than importing gymnax, whose
environments import flax, which the pure core must not.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class CartPoleParams(NamedTuple):
  """Physical constants of CartPole-v1."""

  gravity: float = 9.8
  mass_cart: float = 1.0
  mass_pole: float = 0.1
  half_length: float = 0.5
  force_mag: float = 10.0
  tau: float = 0.02
  x_threshold: float = 2.4
  theta_threshold: float = 12 * 2 * jnp.pi / 360


def cartpole_reset(key: jax.Array) -> jax.Array:
  """Initial state `[x, ẋ, θ, θ̇]`, uniform in [−0.05, 0.05]⁴."""
  return jax.random.uniform(key, (4,), jnp.float32, -0.05, 0.05)


def cartpole_step(
    state: jax.Array, push_right: jax.Array, env: CartPoleParams = CartPoleParams()
) -> tuple[jax.Array, jax.Array]:
  """One Euler step of the cart-pole; returns `(next_state [4], done bool)`.

  With `F = ±force_mag`, `M = m_c + m_p`, `l` the half-length:
  `a = (F + m_p l θ̇² sin θ)/M`,
  `θ̈ = (g sin θ − cos θ · a) / (l (4/3 − m_p cos²θ / M))`,
  `ẍ = a − m_p l θ̈ cos θ / M`; then `x += τẋ, ẋ += τẍ, θ += τθ̇, θ̇ += τθ̈`.
  """
  x, x_dot, theta, theta_dot = state
  force = jnp.where(push_right, env.force_mag, -env.force_mag)
  total_mass = env.mass_cart + env.mass_pole
  pole_ml = env.mass_pole * env.half_length
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  temp = (force + pole_ml * theta_dot**2 * sin) / total_mass
  theta_acc = (env.gravity * sin - cos * temp) / (
      env.half_length * (4.0 / 3.0 - env.mass_pole * cos**2 / total_mass))
  x_acc = temp - pole_ml * theta_acc * cos / total_mass
  next_state = jnp.stack([
      x + env.tau * x_dot, x_dot + env.tau * x_acc,
      theta + env.tau * theta_dot, theta_dot + env.tau * theta_acc,
  ])
  done = (jnp.abs(next_state[0]) > env.x_threshold) | (
      jnp.abs(next_state[2]) > env.theta_threshold)
  return next_state, done


def init_linear_policy() -> dict[str, jax.Array]:
  """Zero linear policy `{"w": [4], "b": []}` (always pushes left: a short first episode)."""
  return {"w": jnp.zeros((4,), jnp.float32), "b": jnp.zeros((), jnp.float32)}


def linear_policy(params: dict[str, jax.Array], state: jax.Array) -> jax.Array:
  """Push right iff `w·s + b > 0` (bool)."""
  return state @ params["w"] + params["b"] > 0


def cartpole_return(
    params: dict[str, jax.Array],
    key: jax.Array,
    *,
    horizon: int = 500,
    env: CartPoleParams = CartPoleParams(),
) -> jax.Array:
  """Return of one episode of `linear_policy(params)` (steps survived, ≤ horizon), float32.

  A fixed-length `lax.scan` with an `alive` flag, so it `jit`s and `vmap`s over parameters.
  """

  def body(carry, _):
    state, alive = carry
    next_state, done = cartpole_step(state, linear_policy(params, state), env)
    return (next_state, alive & ~done), alive.astype(jnp.float32)

  (_, _), rewards = jax.lax.scan(body, (cartpole_reset(key), jnp.bool_(True)), None,
                                 length=horizon)
  return jnp.sum(rewards)
