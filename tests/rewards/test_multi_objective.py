"""Tests of Panacea, DPA and MORE (alignment/rewards/multi_objective.py)."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alignment.rewards import multi_objective as mo


def test_doctests():
  result = doctest.testmod(mo, optionflags=doctest.ELLIPSIS, extraglobs={"jnp": jnp})
  assert result.attempted >= 7 and result.failed == 0


def test_panacea_values_against_numpy():
  rng = np.random.default_rng(0)
  losses = rng.random((5, 3)) * 4
  pref = rng.dirichlet(np.ones(3), size=5)
  z = rng.random(3) * 0.5
  np.testing.assert_allclose(mo.panacea_ls(losses, pref), np.sum(pref * losses, -1), rtol=1e-6)
  np.testing.assert_allclose(mo.panacea_tche(losses, pref, ideal_point=z),
                             np.max(pref * (losses - z), -1), rtol=1e-6)
  # Hand: λ = (0.5, 0.5), L = (1, 3), z = (0, 1): max(0.5·1, 0.5·2) = 1; linear 0.5 + 1.5 = 2
  np.testing.assert_allclose(mo.panacea_tche(jnp.array([1.0, 3.0]), jnp.array([0.5, 0.5]),
                                             ideal_point=jnp.array([0.0, 1.0])), 1.0)
  np.testing.assert_allclose(mo.panacea_ls(jnp.array([1.0, 3.0]), jnp.array([0.5, 0.5])), 2.0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 10.0, allow_nan=False, width=32), min_size=3, max_size=3),
       st.integers(0, 2 ** 31 - 1))
def test_tchebycheff_focuses_on_the_worst_objective(losses, seed):
  pref = np.random.default_rng(seed).dirichlet(np.ones(3)).astype(np.float32)
  losses = np.asarray(losses, np.float32)
  weighted = pref * losses
  worst = int(np.argmax(weighted))
  if np.sum(weighted == weighted[worst]) > 1:
    return  # a tie: the subgradient is not unique
  grad = np.asarray(jax.grad(lambda l: mo.panacea_tche(l, pref))(jnp.asarray(losses)))
  want = np.zeros(3, np.float32)
  want[worst] = pref[worst]
  np.testing.assert_allclose(grad, want, rtol=1e-6)
  # Linear scalarisation spreads the gradient over every objective.
  np.testing.assert_allclose(jax.grad(lambda l: mo.panacea_ls(l, pref))(jnp.asarray(losses)), pref)


def test_sample_preference_is_on_the_simplex():
  lam = mo.sample_preference(jax.random.key(0), 4, shape=(100,))
  assert lam.shape == (100, 4)
  assert np.all(lam >= 0)
  np.testing.assert_allclose(lam.sum(-1), 1.0, rtol=1e-5)
  # Dirichlet(1): each coordinate has mean 1/4.
  np.testing.assert_allclose(lam.mean(0), 0.25, atol=0.06)


def test_directional_reward_and_best_of_n():
  v = mo.unit_direction(jnp.array([0.0, 90.0, 45.0]))
  np.testing.assert_allclose(v, [[1, 0], [0, 1], [np.sqrt(0.5)] * 2], atol=1e-6)
  np.testing.assert_array_equal(mo.dpa_prompt_weights(v), [[100, 0], [0, 100], [71, 71]])
  rng = np.random.default_rng(1)
  r = rng.normal(size=(3, 6, 2))  # 3 prompts, 6 samples, 2 objectives
  np.testing.assert_allclose(mo.directional_reward(r, v[:, None, :]),
                             np.einsum("bnd,bd->bn", r, np.asarray(v)), rtol=1e-5, atol=1e-6)
  where = np.ones((3, 6), bool)
  where[:, 0] = False
  best = mo.directional_best(r, v, where=where)
  scores = np.where(where, np.einsum("bnd,bd->bn", r, np.asarray(v)), -np.inf)
  np.testing.assert_array_equal(best, np.argmax(scores, -1))
  grad = jax.grad(lambda x: jnp.sum(mo.directional_reward(x, v[0])))(jnp.asarray(r))
  np.testing.assert_allclose(grad, np.broadcast_to(np.asarray(v[0]), r.shape))


def np_min_norm(gram, steps=20000):
  """Float64 projected gradient descent on the simplex (sort-based projection)."""
  t = gram.shape[0]
  lam = np.full(t, 1.0 / t)
  lr = 0.5 / np.linalg.eigvalsh(gram).max()
  for _ in range(steps):
    y = lam - lr * 2 * gram @ lam
    u = np.sort(y)[::-1]
    css = np.cumsum(u) - 1
    k = np.nonzero(u - css / np.arange(1, t + 1) > 0)[0][-1]
    lam = np.maximum(y - css[k] / (k + 1), 0)
  return lam


def test_more_weights_two_tasks_closed_form():
  rng = np.random.default_rng(2)
  for _ in range(5):
    g = rng.normal(size=(2, 6))
    # min_γ ‖γ g1 + (1 − γ) g2‖²: γ = clip((g2·g2 − g1·g2)/‖g1 − g2‖², 0, 1)
    gamma = np.clip((g[1] @ g[1] - g[0] @ g[1]) / np.sum((g[0] - g[1]) ** 2), 0, 1)
    np.testing.assert_allclose(mo.more_weights(g, normalization="none"), [gamma, 1 - gamma],
                               atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_more_weights_match_min_norm_reference_and_kkt(seed):
  rng = np.random.default_rng(seed)
  g = rng.normal(size=(3, 8)) + np.array([1.0, 0.5, 0.0])[:, None]
  losses = rng.random(3) + 0.5
  for normalization, scale in [("none", np.ones(3)), ("l2", np.linalg.norm(g, axis=1)),
                               ("loss", losses), ("loss+", losses * np.linalg.norm(g, axis=1))]:
    gn = g / scale[:, None]
    lam = np.asarray(mo.more_weights(g, task_losses=losses, normalization=normalization,
                                     max_iter=2000, tol=1e-9))
    want = np_min_norm(gn @ gn.T)
    np.testing.assert_allclose(lam.sum(), 1.0, atol=1e-5)
    assert np.all(lam >= -1e-7)
    # Plain Frank–Wolfe (as MGDA's solver) converges sublinearly when the optimum is interior:
    # after 2000 steps the squared norm is within 1e−4 of the minimum, λ within 1e−2.
    gram = gn @ gn.T
    assert lam @ gram @ lam - want @ gram @ want < 1e-4
    np.testing.assert_allclose(lam, want, atol=1e-2)
    # KKT: (Gλ)_t ≥ λᵀGλ for all t, with equality on the support.
    assert np.all(gram @ lam >= lam @ gram @ lam - 1e-3)


def test_more_weights_pytree_default_and_loss():
  rng = np.random.default_rng(4)
  kernel, bias = rng.normal(size=(3, 4, 2)), rng.normal(size=(3, 2))
  flat = np.concatenate([kernel.reshape(3, -1), bias], axis=1)
  np.testing.assert_allclose(mo.more_weights({"kernel": kernel, "bias": bias}),
                             mo.more_weights(flat), atol=1e-6)
  lam = mo.more_weights(flat)
  losses = jnp.array([1.0, 2.0, 3.0])
  # T·Σλ_t L_t with T = 3
  np.testing.assert_allclose(mo.more_loss(losses, lam), 3 * np.sum(np.asarray(lam) * [1, 2, 3]),
                             rtol=1e-6)
  np.testing.assert_allclose(jax.grad(lambda l: mo.more_loss(l, lam))(losses), 3 * lam, rtol=1e-6)
  grad_lam = jax.grad(lambda w: mo.more_loss(losses, w))(lam)
  np.testing.assert_array_equal(grad_lam, 0.0)  # weights are constants
  jitted = jax.jit(lambda x: mo.more_weights(x))(flat)
  np.testing.assert_allclose(jitted, lam, atol=1e-6)


def test_bad_input_errors():
  with pytest.raises(ValueError, match="panacea_ls: preference must lie on the simplex"):
    mo.panacea_ls(jnp.ones(2), jnp.array([0.5, 0.6]))
  with pytest.raises(ValueError, match="panacea_tche: preference must lie on the simplex"):
    mo.panacea_tche(jnp.ones(2), jnp.array([1.5, -0.5]))
  with pytest.raises(ValueError, match="unit L2 norm"):
    mo.directional_reward(jnp.ones(2), jnp.array([1.0, 1.0]))
  with pytest.raises(ValueError, match=r"direction must be \[\.\.\., 3\]"):
    mo.directional_reward(jnp.ones(3), jnp.array([1.0, 0.0]))
  with pytest.raises(ValueError, match="needs task_losses"):
    mo.more_weights(jnp.ones((2, 3)), normalization="loss")
  with pytest.raises(ValueError, match="unknown normalization"):
    mo.more_weights(jnp.ones((2, 3)), normalization="l1")
  with pytest.raises(ValueError, match="leading task axis"):
    mo.more_weights({"a": jnp.ones((2, 3)), "b": jnp.ones((3, 3))})
