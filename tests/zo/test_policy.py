"""Tests of the JAX-native CartPole, the linear policy and policy search from ranked returns."""

import jax
import jax.numpy as jnp
import numpy as np

from alignment import zo
from alignment.zo import policy


def _numpy_step(state, push_right):
  """CartPole-v1 dynamics in float64, written from Gym's equations."""
  x, x_dot, th, th_dot = state
  force = 10.0 if push_right else -10.0
  total, ml, half = 1.1, 0.05, 0.5
  temp = (force + ml * th_dot**2 * np.sin(th)) / total
  th_acc = (9.8 * np.sin(th) - np.cos(th) * temp) / (half * (4 / 3 - 0.1 * np.cos(th)**2 / total))
  x_acc = temp - ml * th_acc * np.cos(th) / total
  new = np.array([x + 0.02 * x_dot, x_dot + 0.02 * x_acc, th + 0.02 * th_dot,
                  th_dot + 0.02 * th_acc])
  return new, abs(new[0]) > 2.4 or abs(new[2]) > 12 * 2 * np.pi / 360


def test_cartpole_step_matches_float64_reference():
  rng = np.random.default_rng(0)
  for _ in range(5):
    s = rng.uniform(-0.2, 0.2, 4)
    for push in (False, True):
      got, done = policy.cartpole_step(jnp.asarray(s, jnp.float32), jnp.bool_(push))
      want, want_done = _numpy_step(s, push)
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
      assert bool(done) == want_done
  # Termination by angle: theta just beyond 12 degrees.
  _, done = policy.cartpole_step(jnp.array([0.0, 0.0, 0.21, 0.0]), jnp.bool_(True))
  assert bool(done)


def test_episode_return_matches_a_python_loop():
  params = {"w": jnp.array([0.1, 0.5, 3.0, 0.4]), "b": jnp.array(0.0)}
  key = jax.random.PRNGKey(7)
  s = np.asarray(policy.cartpole_reset(key), np.float64)
  steps = 0
  for _ in range(200):
    steps += 1
    s, done = _numpy_step(s, float(s @ np.asarray(params["w"])) > 0)
    if done:
      break
  got = policy.cartpole_return(params, key, horizon=200)
  assert abs(float(got) - steps) <= 1  # float32 vs float64 can move the failing step by one
  zero = policy.cartpole_return(policy.init_linear_policy(), key)
  assert 5 <= float(zero) < 20  # always pushing left falls quickly


def test_zo_rank_sgd_improves_a_linear_policy_from_return_rankings_only():
  ret = lambda p, k: policy.cartpole_return(p, k, horizon=200)  # noqa: E731
  opt = zo.zo_rank_sgd(0.1, m=8, mu=0.1)
  oracle = zo.returns_oracle(ret, k=4)

  def run(key):
    def body(carry, _):
      theta, key = carry
      theta, key, _ = opt.step(theta, key, oracle)
      return (theta, key), None

    (theta, _), _ = jax.lax.scan(body, (policy.init_linear_policy(), key), None, length=15)
    return jnp.mean(jax.vmap(ret, in_axes=(None, 0))(theta, jax.random.split(key, 8)))

  final = jax.jit(jax.vmap(run))(jax.random.split(jax.random.PRNGKey(0), 3))
  start = policy.cartpole_return(policy.init_linear_policy(), jax.random.PRNGKey(0))
  assert float(jnp.mean(final)) > 5 * float(start), final
