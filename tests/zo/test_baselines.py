"""Tests of the baselines: ZO-SGD, comparison ZO, ES, GLD, normalised GD, CMA-ES (cma)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment import zo


def _quadratic(x):
  return jnp.sum((x - 1.0) ** 2)


def test_normalized_gd_by_hand():
  # f = x.x at x = (3, 4): grad = (6, 8), |grad| = 10, step = -eta * (0.6, 0.8).
  x, _, info = zo.normalized_gd(0.5).step(jnp.array([3.0, 4.0]), jax.random.PRNGKey(0),
                                          lambda v: v @ v)
  np.testing.assert_allclose(x, [3.0 - 0.3, 4.0 - 0.4], rtol=1e-6)
  np.testing.assert_allclose(info["direction_norm"], 10.0, rtol=1e-6)


@pytest.mark.parametrize("sign", [False, True])
def test_finite_difference_estimators_match_float64_reference_on_a_linear_function(sign):
  # f(x) = a.x, so (f(x + mu u) - f(x))/mu = a.u exactly: g = sum_q a.u_q u_q (or sign(a.u_q)).
  d, m, mu = 5, 7, 0.1
  a = np.array([1.0, -2.0, 0.5, 3.0, 0.0])
  f = lambda v: jnp.asarray(a, jnp.float32) @ v  # noqa: E731
  make = zo.comparison_zo if sign else zo.zo_sgd
  x = jnp.zeros(d)
  x_new, _, info = make(1.0, m=m, mu=mu).step(x, jax.random.PRNGKey(3), f)
  _, sub = jax.random.split(jax.random.PRNGKey(3))  # the key the step used
  u = np.asarray(zo.sample_perturbations(sub, x, m - 1, perturbation="sphere"), np.float64)
  weights = np.sign(u @ a) if sign else u @ a
  g = (weights[:, None] * u).sum(0)
  np.testing.assert_allclose(x_new, -g / np.linalg.norm(g), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(info["direction_norm"], np.linalg.norm(g), rtol=1e-4)


def test_comparison_zo_is_invariant_to_monotone_transforms_and_zo_sgd_is_not():
  f = _quadratic
  h = lambda v: jnp.exp(f(v) / 4.0)  # noqa: E731
  x, key = jnp.array([0.3, -0.2, 1.5]), jax.random.PRNGKey(5)
  np.testing.assert_array_equal(zo.comparison_zo(1.0, m=6).step(x, key, f)[0],
                                zo.comparison_zo(1.0, m=6).step(x, key, h)[0])
  assert not np.allclose(zo.zo_sgd(1.0, m=6).step(x, key, f)[0],
                         zo.zo_sgd(1.0, m=6).step(x, key, h)[0])


def _run(opt, oracle, x0, iterations):
  def body(carry, _):
    x, key = carry
    x, key, _ = opt.step(x, key, oracle)
    return (x, key), _quadratic(x)

  return jax.jit(lambda x, k: jax.lax.scan(body, (x, k), None, length=iterations)[1])(
      x0, jax.random.PRNGKey(0))


def test_every_baseline_decreases_a_quadratic_and_gld_is_monotone():
  x0 = jnp.zeros(8)  # f(x0) = 8
  values = {
      "zo_sgd": _run(zo.zo_sgd(0.1, m=6), _quadratic, x0, 60),
      "comparison_zo": _run(zo.comparison_zo(0.1, m=6), _quadratic, x0, 60),
      "evolution_strategy": _run(zo.evolution_strategy(0.1, m=6),
                                 lambda c, key: jax.vmap(_quadratic)(c), x0, 60),
      "gld": _run(zo.gld(m=6, max_radius=0.4), _quadratic, x0, 60),
      "normalized_gd": _run(zo.normalized_gd(0.1), _quadratic, x0, 60),
  }
  for name, v in values.items():
    assert float(v[-1]) < 2.0, (name, v[-1])
  gld_values = np.asarray(values["gld"])
  assert np.all(np.diff(np.concatenate([[8.0], gld_values])) <= 1e-6)


def test_cma_es_uses_the_cma_package_and_decreases_a_quadratic():
  out = zo.cma_es(_quadratic, jnp.zeros(6), popsize=8, sigma0=0.3, iterations=40, seed=0)
  assert out["values"].shape == (41,) and out["x"].shape == (6,)
  np.testing.assert_allclose(out["values"][0], 6.0)
  assert out["values"][-1] < 0.5
  again = zo.cma_es(_quadratic, jnp.zeros(6), popsize=8, sigma0=0.3, iterations=40, seed=0)
  np.testing.assert_array_equal(out["values"], again["values"])  # seeded


def test_bad_hyper_parameters():
  with pytest.raises(ValueError, match="zo_sgd: m must be"):
    zo.zo_sgd(1.0, m=1)
  with pytest.raises(ValueError, match="gld: mu must be"):
    zo.gld(m=4, max_radius=0.0)
