"""Tests of the ZO-RankSGD optimiser (step / init-update); the synthetic study is tested in
`tests/recipes/test_zo_synthetic.py`."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignment import zo


def _quadratic(x):
  return jnp.sum((x - 1.0) ** 2)


def test_optimizer_decreases_a_quadratic():
  # f(x) = |x - 1|^2, d = 10, f(x_0 = 0) = 10. Unit-norm steps of length 0.1 for 150 iterations.
  opt = zo.zo_rank_sgd(0.1, m=10, mu=0.05)
  oracle = zo.exact_oracle(_quadratic, k=5)

  def body(carry, _):
    x, key = carry
    x, key, _ = opt.step(x, key, oracle)
    return (x, key), _quadratic(x)

  (_, _), values = jax.jit(lambda x, k: jax.lax.scan(body, (x, k), None, length=150))(
      jnp.zeros(10), jax.random.PRNGKey(0))
  assert float(values[-1]) < 0.1  # from 10: at least 100x smaller
  assert float(values[49]) < float(_quadratic(jnp.zeros(10))) - 2.0


def test_step_length_direction_and_info():
  x = jnp.linspace(-1.0, 1.0, 6)
  opt = zo.zo_rank_sgd(0.3, m=6, mu=0.1)
  oracle = zo.exact_oracle(_quadratic, k=3)
  x_new, key, info = opt.step(x, jax.random.PRNGKey(4), oracle)
  np.testing.assert_allclose(jnp.linalg.norm(x_new - x), 0.3, rtol=1e-5)
  assert info["ranking"].shape == (3,)
  # The step is -eta * g/|g| with g recomputed from the same sub-key.
  _, sub = jax.random.split(jax.random.PRNGKey(4))
  g, _ = zo.rank_grad_estimate(x, sub, oracle, m=6, mu=0.1)
  np.testing.assert_allclose(x_new - x, -0.3 * g / jnp.linalg.norm(g), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(info["direction_norm"], jnp.linalg.norm(g), rtol=1e-6)
  assert not np.array_equal(key, jax.random.PRNGKey(4))
  # Un-normalised: the step is -eta * g.
  raw = zo.zo_rank_sgd(0.3, m=6, mu=0.1, normalize_direction=False)
  x_raw, _, _ = raw.step(x, jax.random.PRNGKey(4), oracle)
  np.testing.assert_allclose(x_raw - x, -0.3 * g, rtol=1e-5, atol=1e-7)


def test_init_update_with_optax_apply_updates_equals_step_on_pytrees():
  params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(2)}
  f = lambda p: jnp.sum(p["w"] ** 2) + jnp.sum((p["b"] - 2.0) ** 2)  # noqa: E731
  oracle = zo.exact_oracle(f, k=2)
  opt = zo.zo_rank_sgd(0.2, m=5, perturbation="sphere", include_center=True)
  state = opt.init(params, jax.random.PRNGKey(0))
  x, key = params, jax.random.PRNGKey(0)
  update = jax.jit(lambda p, s: opt.update(p, s, oracle))
  for _ in range(3):
    updates, state, _ = update(params, state)
    params = optax.apply_updates(params, updates)
    x, key, _ = opt.step(x, key, oracle)
  for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(x)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # jit vs eager rounding only
  assert int(state.count) == 3
  np.testing.assert_array_equal(state.key, key)


def test_bad_hyper_parameters_are_reported():
  with pytest.raises(ValueError, match="learning_rate"):
    zo.zo_rank_sgd(0.0)
  with pytest.raises(ValueError, match="mu"):
    zo.zo_rank_sgd(1.0, mu=-1.0)
  with pytest.raises(ValueError, match="m must be"):
    zo.zo_rank_sgd(1.0, m=1)
