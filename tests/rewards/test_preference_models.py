"""Tests of PAL and GPM (alignment/rewards/preference_models.py)."""

import doctest
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alignment.rewards import preference_models as pm


def test_doctests():
  result = doctest.testmod(pm, optionflags=doctest.ELLIPSIS, extraglobs={"jnp": jnp})
  assert result.attempted >= 5 and result.failed == 0


def test_pal_ideal_point_and_scores_against_numpy():
  rng = np.random.default_rng(0)
  protos, logits = rng.normal(size=(4, 3, 5)), rng.normal(size=(4, 3))
  w = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  u = np.einsum("bk,bkd->bd", w, protos)
  np.testing.assert_allclose(pm.pal_ideal_point(protos, logits), u, rtol=1e-5, atol=1e-6)
  f = rng.normal(size=(4, 5))
  d = np.linalg.norm(f - u, axis=-1)
  np.testing.assert_allclose(pm.pal_score(f, u), -d, rtol=1e-5)
  np.testing.assert_allclose(pm.pal_score(f, u, squared=True), -d ** 2, rtol=1e-5)
  cos = np.sum(f * u, -1) / np.linalg.norm(f, axis=-1) / np.linalg.norm(u, axis=-1)
  # exp(log(1/0.07)) = 14.285714
  np.testing.assert_allclose(pm.pal_score(f, u, kind="angle"), cos / 0.07, rtol=1e-5)
  # exp(κ) = e^6 = 403 is clamped to 100
  np.testing.assert_allclose(pm.pal_score(f, u, kind="angle", log_scale=6.0), 100 * cos, rtol=1e-5)
  # P(y1 ≻ y2) = σ(d2 − d1): the closer item wins.
  near, far = u + 0.1, u + 2.0
  assert np.all(pm.pal_score(near, u) > pm.pal_score(far, u))


def test_pal_distance_gradient_is_finite_at_the_ideal_point():
  grad = jax.grad(lambda f: pm.pal_score(f, jnp.ones(3)))(jnp.ones(3))
  assert np.all(np.isfinite(grad))
  grad = jax.grad(lambda f: pm.pal_score(f, jnp.zeros(2)))(jnp.array([3.0, 4.0]))
  np.testing.assert_allclose(grad, [-0.6, -0.8], rtol=1e-6)  # −(f − u)/‖f − u‖


def np_smooth_hinge(z, gamma):
  return np.where(z >= 1 - gamma, 0.5 / gamma * np.maximum(1 - z, 0) ** 2, 1 - gamma / 2 - z)


def test_pal_losses():
  z = np.linspace(-8, 3, 23)
  s1, s2 = z, np.zeros_like(z)
  np.testing.assert_allclose(pm.pal_loss(s1, s2, reduce_fn=None), np.logaddexp(0, -z), rtol=1e-5)
  np.testing.assert_allclose(pm.pal_loss(s1, s2, loss="hinge", reduce_fn=None),
                             np.maximum(0, 1 - z), rtol=1e-6)
  np.testing.assert_allclose(pm.pal_loss(s1, s2, loss="smooth_hinge", reduce_fn=None),
                             np_smooth_hinge(z, 5.0), rtol=1e-5, atol=1e-6)
  # Hand: z = 0, γ = 5: 0.1·1² = 0.1; z = −4 = 1 − γ (boundary): 0.1·25 = 2.5 = 1 − 2.5 + 4.
  np.testing.assert_allclose(pm.pal_loss(jnp.array([0.0, -4.0]), jnp.zeros(2),
                                         loss="smooth_hinge", reduce_fn=None), [0.1, 2.5],
                             rtol=1e-6)
  where = z > 0
  np.testing.assert_allclose(pm.pal_loss(s1, s2, where=where), np.logaddexp(0, -z[where]).mean(),
                             rtol=1e-5)
  # Penalty: norms (5, 3) with bound 4 → 1·(1 + 0) = 1
  np.testing.assert_allclose(pm.pal_prototype_penalty(jnp.array([[3.0, 4.0], [0.0, 3.0]])), 1.0,
                             rtol=1e-6)


def _np_gpm(v_i, v_j, lam):
  """Float64 reference building R = blockdiag(λ_l [[0, −1], [1, 0]]) explicitly."""
  k = v_i.shape[-1] // 2
  out = np.zeros(v_i.shape[:-1])
  for idx in np.ndindex(v_i.shape[:-1]):
    r = np.zeros((2 * k, 2 * k))
    for l in range(k):
      r[2 * l:2 * l + 2, 2 * l:2 * l + 2] = lam[idx][l] * np.array([[0, -1], [1, 0]])
    out[idx] = (r @ v_i[idx]) @ v_j[idx]
  return out


def test_gpm_score_against_explicit_matrix():
  rng = np.random.default_rng(1)
  v_i, v_j = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
  logits = rng.normal(size=(3, 3))
  lam = pm.gpm_eigenvalues(logits, hidden_size=16)
  np.testing.assert_allclose(np.sum(lam, -1), 3.0, rtol=1e-5)  # k·softmax sums to k
  want_lam = 3 * np.exp(logits / 4) / np.exp(logits / 4).sum(-1, keepdims=True)
  np.testing.assert_allclose(lam, want_lam, rtol=1e-5)
  np.testing.assert_allclose(pm.gpm_score(v_i, v_j, eigenvalues=lam),
                             _np_gpm(v_i, v_j, np.asarray(lam, np.float64)), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(pm.gpm_score(v_i, v_j), _np_gpm(v_i, v_j, np.ones((3, 3))),
                             rtol=1e-5, atol=1e-6)
  unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
  np.testing.assert_allclose(pm.gpm_score(v_i, v_j, normalize=True),
                             _np_gpm(unit(v_i), unit(v_j), np.ones((3, 3))), rtol=1e-5, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=8, max_size=8))
def test_gpm_score_is_skew_symmetric(values):
  v = jnp.asarray(values, jnp.float32).reshape(2, 4)
  s_ij, s_ji = pm.gpm_score(v[0], v[1]), pm.gpm_score(v[1], v[0])
  np.testing.assert_allclose(s_ij, -s_ji, atol=1e-4)
  assert pm.gpm_score(v[0], v[0]) == 0.0


def test_gpm_represents_a_three_cycle():
  angles = np.deg2rad([0.0, 120.0, 240.0])
  v = jnp.asarray(np.stack([np.cos(angles), np.sin(angles)], -1), jnp.float32)
  # s(i ≻ j) = sin(θ_j − θ_i) = sin 120° = 0.8660254 for 0 ≻ 1, 1 ≻ 2 and 2 ≻ 0.
  cycle = [pm.gpm_score(v[i], v[(i + 1) % 3]) for i in range(3)]
  np.testing.assert_allclose(cycle, [math.sin(math.radians(120))] * 3, rtol=1e-6)


def test_gpm_losses_and_gradients():
  rng = np.random.default_rng(2)
  vw, vl = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
  s = _np_gpm(vw, vl, np.ones((5, 2)))
  np.testing.assert_allclose(pm.gpm_loss(vw, vl, margin=0.3, temperature=0.1),
                             np.logaddexp(0, -(s - 0.3) / 0.1).mean(), rtol=1e-4)
  np.testing.assert_allclose(pm.gpm_regression_loss(vw, vl, temperature=0.5),
                             np.mean(0.5 * (s / 0.5 - 10) ** 2), rtol=1e-5)
  # k = 1: s = a_w·b_l − b_w·a_l, so ∂ℓ/∂a_w = −σ(−s)·b_l.
  vw2, vl2 = jnp.array([0.5, -1.0]), jnp.array([2.0, 1.5])
  s2 = 0.5 * 1.5 - (-1.0) * 2.0
  grad = jax.grad(lambda v: pm.gpm_loss(v, vl2))(vw2)
  sig = 1 / (1 + math.exp(s2))
  np.testing.assert_allclose(grad, [-sig * 1.5, sig * 2.0], rtol=1e-5)
  # Learnable temperature and its floor.
  np.testing.assert_allclose(pm.gpm_temperature(jnp.array([-20.0, 0.0])), [1e-2, math.log(2)],
                             rtol=1e-5)
  # Under jit, through the learnable temperature t = max(softplus(0.3), 1e−2) = ln(1 + e^0.3).
  jitted = jax.jit(lambda t: pm.gpm_loss(vw, vl, temperature=pm.gpm_temperature(t)))(0.3)
  np.testing.assert_allclose(jitted, np.logaddexp(0, -s / math.log1p(math.exp(0.3))).mean(),
                             rtol=1e-5)
  per = jax.vmap(lambda a, b: pm.gpm_loss(a, b))(vw, vl)
  np.testing.assert_allclose(jnp.mean(per), pm.gpm_loss(vw, vl), rtol=1e-5)


def test_bad_input_errors():
  with pytest.raises(ValueError, match="gpm_score: v_i and v_j must be"):
    pm.gpm_score(jnp.ones(3), jnp.ones(3))
  with pytest.raises(ValueError, match="gpm_loss: temperature"):
    pm.gpm_loss(jnp.ones(2), jnp.ones(2), temperature=0.0)
  with pytest.raises(ValueError, match="unknown kind"):
    pm.pal_score(jnp.ones(2), jnp.ones(2), kind="cos")
  with pytest.raises(ValueError, match="unknown loss"):
    pm.pal_loss(jnp.ones(2), jnp.ones(2), loss="mse")
  with pytest.raises(ValueError, match="pal_score: item_embeddings"):
    pm.pal_score(jnp.ones(2), jnp.ones(3))
  with pytest.raises(ValueError, match="gpm_score: eigenvalues"):
    pm.gpm_score(jnp.ones(4), jnp.ones(4), eigenvalues=jnp.ones(3))
