"""Tests of alignment.scores: hand-worked values, float64 numpy references, stability, gradients."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment import scores

X64 = functools.partial(jax.enable_x64, True)


def _rng(seed=0):
  return np.random.default_rng(seed)


# ------------------------------------------------------------------------------------------------
# Primitives.


def test_log1mexp_hand_values():
  # log(1 - e^{ln 0.5}) = log 0.5; log(1 - e^{ln 0.25}) = log 0.75; log(1 - e^{-1e-7}) ≈ log 1e-7.
  x = jnp.array([math.log(0.5), math.log(0.25), -1e-7, -50.0])
  expected = [math.log(0.5), math.log(0.75), math.log(1e-7), -math.exp(-50.0)]
  np.testing.assert_allclose(scores.log1mexp(x), expected, rtol=1e-5)


def test_log1mexp_matches_float64_numpy_on_both_branches():
  x = -np.exp(_rng().uniform(-12, 5, size=200))  # from -148 to -6e-6, both sides of -ln 2
  # float64 reference: log(1 - e^x) = log(-expm1(x)) near 0, log1p(-e^x) in the tail.
  want = np.where(x > -0.5, np.log(-np.expm1(x)), np.log1p(-np.exp(np.minimum(x, -0.5))))
  with X64():
    got = np.asarray(scores.log1mexp(jnp.asarray(x)))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  x32 = np.asarray(jnp.asarray(x, jnp.float32), np.float64)
  want32 = np.where(x32 > -0.5, np.log(-np.expm1(x32)), np.log1p(-np.exp(np.minimum(x32, -0.5))))
  got32 = np.asarray(scores.log1mexp(jnp.asarray(x32, jnp.float32)))
  np.testing.assert_allclose(got32, want32, rtol=1e-5, atol=1e-30)


def test_log1mexp_gradient_finite_everywhere_used():
  # d/dx log(1 - e^x) = -e^x / (1 - e^x); at x = ln 0.5 this is -1.
  g = jax.grad(lambda x: scores.log1mexp(x))(math.log(0.5))
  np.testing.assert_allclose(g, -1.0, rtol=1e-5)
  grads = jax.vmap(jax.grad(scores.log1mexp))(jnp.array([-1e-7, -0.5, -0.7, -1e3]))
  assert np.all(np.isfinite(grads))


def test_phi_hand_values_and_limit():
  # φ(ln 2) = ln 2 / (2 - 1) = ln 2; φ(0) = 1 (limit); φ(-ln 2) = -ln 2 / (0.5 - 1) = 2 ln 2.
  u = jnp.array([math.log(2.0), 0.0, -math.log(2.0), 1e-5, 1000.0, -1000.0])
  expected = [math.log(2.0), 1.0, 2 * math.log(2.0), 1 - 0.5e-5, 0.0, 1000.0]
  np.testing.assert_allclose(scores.phi(u), expected, rtol=1e-6, atol=1e-30)


def test_phi_matches_float64_numpy_and_has_finite_gradients():
  u = _rng(1).normal(size=200) * np.exp(_rng(2).uniform(-12, 4, size=200))
  with X64():
    got = np.asarray(scores.phi(jnp.asarray(u)))
  np.testing.assert_allclose(got, u / np.expm1(u), rtol=1e-6)
  grads = jax.vmap(jax.grad(scores.phi))(jnp.array([0.0, 1e-6, -1e-6, 1e-4, 50.0, 200.0, -200.0]))
  assert np.all(np.isfinite(grads))
  # φ'(0) = -1/2 from the series 1 - u/2 + u²/12.
  np.testing.assert_allclose(grads[0], -0.5, rtol=1e-6)
  # Away from 0: φ'(u) = (expm1(u) - u e^u) / expm1(u)²; at u = 1: (e-1-e)/(e-1)² = -1/(e-1)².
  np.testing.assert_allclose(jax.grad(scores.phi)(1.0), -1 / (math.e - 1) ** 2, rtol=1e-5)


def test_clipped_exp_never_overflows():
  np.testing.assert_allclose(scores.clipped_exp(jnp.array([0.0, 1.0])), [1.0, math.e], rtol=1e-6)
  assert float(scores.clipped_exp(1e4)) == pytest.approx(math.exp(80.0), rel=1e-5)
  assert float(scores.clipped_exp(20.0, max_exponent=11.0)) == pytest.approx(math.exp(11.0),
                                                                             rel=1e-5)
  assert float(jax.grad(scores.clipped_exp)(100.0)) == 0.0


# ------------------------------------------------------------------------------------------------
# Sequence scores.


def test_log_ratio_and_normalisations_hand_values():
  lp = jnp.array([-6.0, -9.0])
  lr = jnp.array([-8.0, -3.0])
  lengths = jnp.array([4, 0])  # n = max(lengths, 1) = [4, 1]
  np.testing.assert_allclose(scores.log_ratio(lp, lr), [2.0, -6.0])
  np.testing.assert_allclose(scores.length_normalized_log_ratio(lp, lr, lengths), [0.5, -6.0])
  np.testing.assert_allclose(scores.average_logprob(lp, lengths), [-1.5, -9.0])


def test_reference_is_stop_gradient():
  g = jax.grad(lambda r: jnp.sum(scores.log_ratio(jnp.array([-1.0, -2.0]), r)))(jnp.zeros(2))
  np.testing.assert_array_equal(g, [0.0, 0.0])
  g = jax.grad(lambda r: scores.dpo_gamma_margin(jnp.array([-1.0, -2.0]), r, gamma=0.5))(
      jnp.zeros(2))
  np.testing.assert_array_equal(g, [0.0, 0.0])


def test_missing_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match="ref_logps"):
    scores.log_ratio(jnp.zeros(2), None)
  with pytest.raises(ValueError, match="lengths"):
    scores.average_logprob(jnp.zeros(2), None)


def test_dpo_gamma_margin_hand_value():
  # (lp_w - lp_l) - γ (lr_w - lr_l) = (-3 - -7) - 0.5·(-4 - -2) = 4 + 1 = 5.
  m = scores.dpo_gamma_margin(jnp.array([-3.0, -7.0]), jnp.array([-4.0, -2.0]), gamma=0.5)
  assert float(m) == pytest.approx(5.0)
  # γ = 1 is the DPO logit h = (-3 + 4) - (-7 + 2) = 6.
  assert float(scores.dpo_gamma_margin(jnp.array([-3.0, -7.0]), jnp.array([-4.0, -2.0]))) == 6.0


# ------------------------------------------------------------------------------------------------
# f-divergences.


def _np_fdiv(name, rho, alpha=0.5):
  if name == "reverse_kl":
    return rho
  if name == "forward_kl":
    return -np.exp(-rho)
  if name == "js_divergence":
    return -np.logaddexp(0.0, -rho)
  if name == "alpha_div":
    return -np.exp(-alpha * rho) / alpha
  if name == "alpha_div_trl":
    return np.exp((alpha - 1.0) * rho) / (alpha - 1.0)
  raise AssertionError(name)


@pytest.mark.parametrize("name", sorted(scores.F_DIVERGENCES))
@pytest.mark.parametrize("alpha", [0.5, 0.3])
def test_fdiv_scores_match_float64_numpy(name, alpha):
  rng = _rng(3)
  rho = rng.normal(size=(50, 2)) * 3
  kw = {"alpha": alpha} if name.startswith("alpha") else {}
  fn = functools.partial(scores.F_DIVERGENCES[name], **kw)
  want_s = _np_fdiv(name, rho, alpha)
  want = want_s[:, 0] - want_s[:, 1]
  with X64():
    s = np.asarray(fn(jnp.asarray(rho)))
  np.testing.assert_allclose(s, want_s, rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(s[:, 0] - s[:, 1], want, rtol=1e-6, atol=1e-9)
  s32 = np.asarray(fn(jnp.asarray(rho, jnp.float32)))
  np.testing.assert_allclose(s32, want_s, rtol=1e-5, atol=1e-5)


def test_fdiv_hand_values():
  # forward_kl(ln 2) = -1/2; js(0) = log 1/2; alpha_div margin at α = 0.5 between ρ = 0 and
  # ρ = 2 ln 2: -e^0/0.5 - (-e^{-ln 2}/0.5) = -2 + 1 = -1.
  assert float(scores.forward_kl(math.log(2.0))) == pytest.approx(-0.5)
  assert float(scores.js_divergence(0.0)) == pytest.approx(math.log(0.5))
  s = scores.alpha_div(jnp.array([0.0, 2 * math.log(2.0)]))
  assert float(s[0] - s[1]) == pytest.approx(-1.0, rel=1e-6)
  # alpha_div_trl(α) equals alpha_div(1 - α): at α = 0.2, margin between ρ = 0 and 1 is
  # e^{-0.8·0}/(-0.8) - e^{-0.8}/(-0.8) = (e^{-0.8} - 1)/0.8.
  s = scores.alpha_div_trl(jnp.array([0.0, 1.0]), alpha=0.2)
  assert float(s[0] - s[1]) == pytest.approx((math.exp(-0.8) - 1) / 0.8, rel=1e-6)


def test_fdiv_singular_alpha_falls_back_to_reverse_kl_with_finite_gradients():
  rho = jnp.array([-3.0, 0.5, 2.0])
  np.testing.assert_allclose(scores.alpha_div(rho, alpha=0.0), rho)
  np.testing.assert_allclose(scores.alpha_div(rho, alpha=1e-7), rho)
  np.testing.assert_allclose(scores.alpha_div_trl(rho, alpha=1.0), rho)
  g = jax.grad(lambda a: jnp.sum(scores.alpha_div(rho, alpha=a)))(0.0)
  assert np.isfinite(g)
  # Paper form per slot (not only margins): α = 0.5, ρ = 0 → −e⁰/0.5 = −2.
  assert float(scores.alpha_div(0.0)) == pytest.approx(-2.0)


@pytest.mark.parametrize("name", sorted(scores.F_DIVERGENCES))
def test_fdiv_overflow_stays_finite(name):
  rho = jnp.array([-1e4, -100.0, 0.0, 100.0, 1e4])
  s, g = jax.vmap(jax.value_and_grad(scores.F_DIVERGENCES[name]))(rho)
  assert np.all(np.isfinite(s)) and np.all(np.isfinite(g))


def test_fdiv_transform_resolves_names_and_callables():
  assert scores.fdiv_transform("js_divergence") is scores.js_divergence
  fn = functools.partial(scores.alpha_div, alpha=0.3)
  assert scores.fdiv_transform(fn) is fn
  with pytest.raises(ValueError, match="Unknown f-divergence"):
    scores.fdiv_transform("chi2")


def test_alpha_reward_hand_value_and_limit():
  # r_α(q) = (1 - e^{-α q})/α; α = 1, q = -ln 2: (1 - 2)/1 = -1.
  assert float(scores.alpha_reward(-math.log(2.0), alpha=1.0)) == pytest.approx(-1.0)
  assert float(scores.alpha_reward(-3.0, alpha=0.0)) == -3.0
  # Clipped exponent: -α q = 1e4 is clipped at 80.
  assert np.isfinite(float(scores.alpha_reward(-1e4, alpha=1.0)))


# ------------------------------------------------------------------------------------------------
# ORPO log-odds.


def test_log_odds_hand_values_and_clamp():
  # p = 1/2: log(1/2 / 1/2) = 0; p = 1/4: log(1/4 / 3/4) = -ln 3.
  np.testing.assert_allclose(
      scores.log_odds(jnp.array([math.log(0.5), math.log(0.25)])), [0.0, -math.log(3.0)],
      atol=1e-6)
  # a = 0 (probability-1 sequence) is clamped to -1e-7: log odds ≈ -1e-7 - log(1e-7) ≈ 16.118.
  assert float(scores.log_odds(0.0)) == pytest.approx(-math.log(1e-7), rel=1e-4)
  assert np.isfinite(float(jax.grad(scores.log_odds)(0.0)))


def test_orpo_log_odds_ratio_matches_float64_numpy():
  rng = _rng(4)
  lengths = rng.integers(0, 20, size=(30, 2))
  logps = -rng.uniform(0.01, 3.0, size=(30, 2)) * np.maximum(lengths, 1)
  a = logps / np.maximum(lengths, 1)
  odds = a - np.log(-np.expm1(a))
  with X64():
    got = np.asarray(scores.orpo_log_odds_ratio(jnp.asarray(logps), jnp.asarray(lengths)))
  np.testing.assert_allclose(got, odds[:, 0] - odds[:, 1], rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------------------------------------
# WPO weights and LD-DPO.


def test_wpo_weights_hand_value():
  # Chosen: 2 tokens, (lp - lss) = (-1 - -2), (-3 - -2) → mean(1, -1) = 0 → w = 1.
  # Rejected: 1 token (second masked), (-2 - -1) = -1 → w = e^{-1}. Pair weight e^{-1}.
  lp = jnp.array([[-1.0, -3.0], [-2.0, -50.0]])
  lss = jnp.array([[-2.0, -2.0], [-1.0, 0.0]])
  mask = jnp.array([[True, True], [True, False]])
  w = scores.wpo_weights(lp, lss, mask)
  np.testing.assert_allclose(w, [math.exp(-1.0)] * 2, rtol=1e-6)
  # Clamp caps the product at 1: make both log-weights positive (+1 each → e² → 1).
  w = scores.wpo_weights(lss + 1.0, lss, mask, clamp=True)
  np.testing.assert_allclose(w, [1.0, 1.0])
  np.testing.assert_allclose(scores.wpo_weights(lss + 1.0, lss, mask), [math.e**2] * 2, rtol=1e-6)


def test_wpo_weights_match_numpy_and_stop_gradient():
  rng = _rng(5)
  lp = -rng.uniform(0, 3, size=(4, 2, 7))
  lss = -rng.uniform(0, 2, size=(4, 2, 7))
  mask = rng.uniform(size=(4, 2, 7)) < 0.7
  n = np.maximum(mask.sum(-1), 1)
  log_w = np.where(mask, lp - lss, 0).sum(-1) / n
  want = np.exp(log_w.sum(-1))
  with X64():
    got = np.asarray(scores.wpo_weights(jnp.asarray(lp), jnp.asarray(lss), jnp.asarray(mask)))
  np.testing.assert_allclose(got, np.stack([want, want], -1), rtol=1e-6)
  g = jax.grad(lambda x: jnp.sum(scores.wpo_weights(x, lss, mask)))(jnp.asarray(lp, jnp.float32))
  assert np.all(g == 0.0)


def test_ld_dpo_logps_hand_value():
  # n_w = 3, n_l = 1 → n_min = 1. Chosen: -1 + α(-2 - 3) = -1 - 0.5·5 = -3.5; rejected: -4.
  # Reference: -1 + 0.5·(-1 - 1) = -2; rejected -2. Policy-only: reference sums -3 and -2.
  tok = jnp.array([[-1.0, -2.0, -3.0], [-4.0, -9.0, -9.0]])
  ref = jnp.array([[-1.0, -1.0, -1.0], [-2.0, -9.0, -9.0]])
  mask = jnp.array([[True, True, True], [True, False, False]])
  lp, lr = scores.ld_dpo_logps(tok, ref, mask, alpha=0.5)
  np.testing.assert_allclose(lp, [-3.5, -4.0])
  np.testing.assert_allclose(lr, [-2.0, -2.0])
  _, lr = scores.ld_dpo_logps(tok, ref, mask, alpha=0.5, ld_reference=False)
  np.testing.assert_allclose(lr, [-3.0, -2.0])


def test_ld_dpo_logps_match_numpy_with_left_padding_and_batch():
  rng = _rng(6)
  tok = -rng.uniform(0, 2, size=(3, 2, 6))
  ref = -rng.uniform(0, 2, size=(3, 2, 6))
  mask = rng.uniform(size=(3, 2, 6)) < 0.6  # completion tokens anywhere (prompt before them)
  alpha = 0.3

  def np_ld(x, a):
    pos = np.cumsum(mask, -1)
    n_min = mask.sum(-1).min(-1)[:, None, None]
    return np.where(mask, np.where(pos <= n_min, 1.0, a) * x, 0).sum(-1)

  with X64():
    lp, lr = scores.ld_dpo_logps(jnp.asarray(tok), jnp.asarray(ref), jnp.asarray(mask), alpha=alpha)
  np.testing.assert_allclose(lp, np_ld(tok, alpha), rtol=1e-6)
  np.testing.assert_allclose(lr, np_ld(ref, alpha), rtol=1e-6)
  with pytest.raises(ValueError, match="alpha"):
    scores.ld_dpo_logps(tok, ref, mask, alpha=1.5)
  with pytest.raises(ValueError, match=r"\[\.\.\., 2, T\]"):
    scores.ld_dpo_logps(tok[:, :1], ref[:, :1], mask[:, :1], alpha=0.5)
