"""Tests of the reference-free objectives: closed forms, float64 numpy
references, gradient signs, masking, reductions and edge cases."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment import losses
from alignment.losses import reference_free as rf

X64 = functools.partial(jax.enable_x64, True)
NAMES = losses.names(family="reference_free")


def np_logsig(x):
  return -np.logaddexp(0.0, -x)


def np_smoothed(z, eps):
  return -(1 - eps) * np_logsig(z) - eps * np_logsig(-z)


def np_phi(u):
  return np.where(u == 0, 1.0, u / np.where(u == 0, 1.0, np.expm1(u)))


def np_ref_free(name, lp, lr, n, r, **hp):
  """Batch-mean loss in float64 (inputs [B, 2], slot 0 chosen; r = rationale log-probs [B])."""
  nn = np.maximum(n, 1)
  a = lp / nn
  aw, al = a[:, 0], a[:, 1]
  nll = -lp[:, 0].sum() / nn[:, 0].sum()
  eps = hp.get("label_smoothing", 0.0)
  if name in ("orpo", "rorpo_sigmoid", "rorpo_linear"):
    lo = (aw - al) - (np.log(-np.expm1(aw)) - np.log(-np.expm1(al)))
  if name == "simpo":
    return np.mean(np_smoothed(hp.get("beta", 2.5) * (aw - al) - hp.get("gamma", 1.375), eps))
  if name == "cpo_contrastive":
    b, margin = hp.get("beta", 0.1), hp.get("margin", "sigmoid")
    m = lp[:, 0] - lp[:, 1]
    per = {"sigmoid": lambda: np_smoothed(b * m, eps),
           "hinge": lambda: np.maximum(0, 1 - b * m),
           "ipo": lambda: (aw - al - 1 / (2 * b)) ** 2,
           "simpo": lambda: np_smoothed(b * (aw - al) - hp.get("simpo_gamma", 0.5), eps)}[margin]()
    return np.mean(per) + hp.get("cpo_alpha", 1.0) * nll
  if name == "alphapo":
    al_ = hp.get("alpha", 0.0)
    rfn = (lambda q: q) if al_ == 0 else (lambda q: (1 - np.exp(-al_ * q)) / al_)
    z = hp.get("beta", 2.5) * (rfn(aw) - rfn(al)) - hp.get("gamma", 1.375)
    return np.mean(np_smoothed(z, eps))
  if name == "orpo":
    return nll - hp.get("beta", 0.1) * np.mean(np_logsig(lo))
  if name in ("rorpo_sigmoid", "rorpo_linear"):
    g = hp.get("gamma", 1.0)
    extra = np_logsig(g * r) if name == "rorpo_sigmoid" else g * r
    return nll - np.mean(hp.get("beta", 0.1) * np_logsig(lo) + extra)
  if name == "rdpo_rationale":
    h = (lp[:, 0] - lr[:, 0]) - (lp[:, 1] - lr[:, 1])
    return np.mean(-np_logsig(hp.get("beta", 0.1) * h) - np_logsig(hp.get("gamma", 0.1) * r))
  if name in ("mapo_diffusion", "mapo_llm_literal"):
    m = lp if name == "mapo_diffusion" else -a
    c = hp.get("snr_value", 0.5)
    t = hp.get("num_train_timesteps", 1000) if name == "mapo_diffusion" else hp.get("scale", 1.0)
    odds = np_phi(c * m[:, 0]) - np_phi(c * m[:, 1])
    return np.mean(m[:, 0]) - hp.get("beta", 0.1) * np.mean(np_logsig(t * odds))
  ar = lr / nn
  d_pi, d_ref = aw - al, ar[:, 0] - ar[:, 1]
  if name == "cpo_cond":
    b, g, tau, alpha = (hp.get(k, d) for k, d in
                        (("beta", 0.1), ("gamma", 0.5), ("tau", 2.0), ("alpha", 1.0)))
    m = np.logaddexp(0, tau * (g - d_ref)) / tau
    return np.mean(-np_logsig(b * d_pi - b * d_ref - (b / alpha) * m))
  if name == "cpo_cond_easy":
    b, g = hp.get("beta", 2.5), hp.get("gamma", 0.05)
    m = g * (1 / np.minimum(ar[:, 0], -1e-6) + 1 / np.minimum(ar[:, 1], -1e-6))
    return np.mean(-np_logsig(b * d_pi - b * d_ref - m))
  if name == "cpo_cond_clip":
    return np.mean(-np_logsig(hp.get("beta", 0.1) * (d_pi - np.maximum(d_ref, 0))))
  raise AssertionError(name)


CASES = [
    ("simpo", {}), ("simpo", {"beta": 1.0, "gamma": 0.3, "label_smoothing": 0.1}),
    ("cpo_contrastive", {}), ("cpo_contrastive", {"margin": "hinge", "beta": 0.05}),
    ("cpo_contrastive", {"margin": "ipo", "cpo_alpha": 0.5}),
    ("cpo_contrastive", {"margin": "simpo", "label_smoothing": 0.2}),
    ("cpo_contrastive", {"cpo_alpha": 0.0, "label_smoothing": 0.1}),
    ("alphapo", {}), ("alphapo", {"alpha": 0.5}), ("alphapo", {"alpha": -0.3, "beta": 1.0}),
    ("orpo", {}), ("orpo", {"beta": 0.5}), ("mapo_diffusion", {}),
    ("mapo_diffusion", {"num_train_timesteps": 10, "snr_value": 2.0}), ("mapo_llm_literal", {}),
    ("mapo_llm_literal", {"scale": 5.0}), ("cpo_cond", {}),
    ("cpo_cond", {"tau": 0.5, "alpha": 2.0, "gamma": 0.1}), ("cpo_cond_easy", {}),
    ("cpo_cond_clip", {}), ("rdpo_rationale", {}), ("rorpo_sigmoid", {}),
    ("rorpo_linear", {"gamma": 0.1}),
]


def _data(seed=0):
  rng = np.random.default_rng(seed)
  n = rng.integers(0, 30, size=(6, 2))
  lp = -rng.uniform(0.05, 2.0, size=(6, 2)) * np.maximum(n, 1)
  lr = lp + rng.normal(size=(6, 2)) * 2.0
  r = -rng.uniform(1, 30, size=6)
  return lp, lr, n, r


def _first_input(name, lp):
  # mapo_diffusion takes denoising MSEs (≥ 0) in place of log-probs.
  return -lp / 10.0 if name == "mapo_diffusion" else lp


def _call(name, x, lr, labels=None, *, n, r, **kw):
  sp = losses.spec(name)
  extra = {"rationale_logps": r} if "rationale_logps" in sp.extra_inputs else {}
  return sp.fn(x, lr if sp.needs_reference else None, labels, lengths=n, **extra, **kw)


@pytest.mark.parametrize("name,hp", CASES)
def test_matches_float64_numpy_reference(name, hp):
  lp, lr, n, r = _data(1)
  x = _first_input(name, lp)
  want = np_ref_free(name, x, lr, n, r, **hp)
  with X64():
    got = _call(name, jnp.asarray(x), jnp.asarray(lr), n=jnp.asarray(n), r=jnp.asarray(r), **hp)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  got32 = _call(name, jnp.asarray(x, jnp.float32), jnp.asarray(lr, jnp.float32), n=n,
                r=jnp.asarray(r, jnp.float32), **hp)
  np.testing.assert_allclose(got32, want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Hand-worked values. lp = [-2, -4], n = [2, 2] → a = [-1, -2]; lr = [-3, -3] → a_ref = -1.5.

LP = jnp.array([-2.0, -4.0])
LR = jnp.array([-3.0, -3.0])
LEN = jnp.array([2, 2])
L1M1 = math.log(1 - math.exp(-1.0))  # log1mexp(-1) = -0.458675
L1M2 = math.log(1 - math.exp(-2.0))  # log1mexp(-2) = -0.145413
LOG_ODDS = 1.0 - (L1M1 - L1M2)  # (a_w − a_l) − (log1mexp(a_w) − log1mexp(a_l)) = 1.313262


def _softplus(x):
  return math.log1p(math.exp(x))


HAND = [
    # z = 1·(−1 + 2) − 0.5 = 0.5 → −logσ(0.5) = log(1 + e^{−0.5}) = 0.474077.
    ("simpo", {"beta": 1.0, "gamma": 0.5}, {}, _softplus(-0.5)),
    # m = 2: −logσ(2) = 0.126928; NLL = −(−2)/2 = 1 → 1.126928.
    ("cpo_contrastive", {"beta": 1.0}, {}, _softplus(-2.0) + 1.0),
    # hinge, β = 0.25: max(0, 1 − 0.5) = 0.5; + NLL 1 → 1.5.
    ("cpo_contrastive", {"beta": 0.25, "margin": "hinge"}, {}, 1.5),
    # ipo, β = 0.5: (a_w − a_l − 1)² = (1 − 1)² = 0; + NLL 1 → 1.
    ("cpo_contrastive", {"beta": 0.5, "margin": "ipo"}, {}, 1.0),
    # α = 1: r(−1) = 1 − e = −1.718282, r(−2) = 1 − e² = −6.389056, m = 4.670774;
    # β = 1, γ = 0: −logσ(4.670774) = log(1 + e^{−4.670774}) = 0.009330.
    ("alphapo", {"alpha": 1.0, "beta": 1.0, "gamma": 0.0}, {},
     _softplus(-((1 - math.e) - (1 - math.e**2)))),
    # NLL = 1; log odds = 1 − (−0.458675 + 0.145413) = 1.313262; L = 1 − 0.1·logσ(1.313262).
    ("orpo", {}, {}, 1.0 + 0.1 * _softplus(-LOG_ODDS)),
    ("mapo_llm", {}, {}, 1.0 + 0.1 * _softplus(-LOG_ODDS)),
    # m = −a = [1, 2], c = 0.5: φ(0.5) = 0.5/(e^{0.5} − 1) = 0.770747, φ(1) = 1/(e − 1) = 0.581977;
    # log odds = 0.188770; L = mean(m_w) − β logσ(0.188770) = 1 + 0.1·softplus(−0.188770).
    ("mapo_llm_literal", {}, {},
     1.0 + 0.1 * _softplus(-(0.5 / math.expm1(0.5) - 1 / math.expm1(1)))),
    # δ_π = 1, δ_ref = 0; m = softplus(2·0.5)/2 = 0.656631; β = α = 1:
    # −logσ(1 − 0 − 0.656631) = softplus(−0.343369).
    ("cpo_cond", {"beta": 1.0}, {}, _softplus(-(1 - _softplus(1.0) / 2))),
    # m = 0.05·(1/−1.5 + 1/−1.5) = −0.0666667; β = 1: −logσ(1 + 0.0666667).
    ("cpo_cond_easy", {"beta": 1.0}, {}, _softplus(-(1 + 0.2 / 3))),
    # lr = [−2, −4] → δ_ref = 1 > 0: −logσ(β·(1 − 1)) = ln 2.
    ("cpo_cond_clip", {"beta": 1.0}, {"lr": jnp.array([-2.0, -4.0])}, math.log(2.0)),
    # h = (−2 + 3) − (−4 + 3) = 2; r = −10, γ = 0.1: −logσ(2) − logσ(−1) = 0.126928 + 1.313262.
    ("rdpo_rationale", {"beta": 1.0}, {"r": -10.0}, _softplus(-2.0) + _softplus(1.0)),
    # r = −1, γ = 1: L = 1 − (0.1·logσ(1.313262) + logσ(−1)).
    ("rorpo_sigmoid", {}, {"r": -1.0}, 1.0 + 0.1 * _softplus(-LOG_ODDS) + _softplus(1.0)),
    # r = −1, γ = 1: L = 1 − (0.1·logσ(1.313262) − 1).
    ("rorpo_linear", {}, {"r": -1.0}, 1.0 + 0.1 * _softplus(-LOG_ODDS) + 1.0),
]


@pytest.mark.parametrize("name,hp,inputs,expected", HAND, ids=[h[0] for h in HAND])
def test_hand_worked_values(name, hp, inputs, expected):
  got = _call(name, LP, inputs.get("lr", LR), n=LEN, r=jnp.asarray(inputs.get("r", -1.0)), **hp)
  assert float(got) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_mapo_diffusion_hand_value():
  # m = [0, 2 ln 2], c = 0.5: φ(0) = 1, φ(ln 2) = ln 2/(2 − 1) = ln 2; T = 1, β = 1:
  # L = mean(m_w) − logσ(1 − ln 2) = 0 + softplus(−0.306853).
  mse = jnp.array([0.0, 2 * math.log(2.0)])
  got = rf.mapo_diffusion(mse, None, num_train_timesteps=1, beta=1.0)
  assert float(got) == pytest.approx(_softplus(-(1 - math.log(2.0))), rel=1e-6)


# ------------------------------------------------------------------------------------------------
# Properties.


@pytest.mark.parametrize("name", NAMES)
def test_gradient_signs(name):
  lp, lr, n, r = _data(2)
  lp = np.sort(lp, axis=-1)  # the chosen (slot 0) currently has the lower log-prob
  x = jnp.asarray(_first_input(name, lp), jnp.float32)
  g = jax.grad(lambda v: _call(name, v, jnp.asarray(lr), n=n, r=r))(x)
  sign = 1.0 if name == "mapo_diffusion" else -1.0  # lowering the chosen MSE lowers the loss
  assert np.all(sign * g[:, 0] > 0), g
  assert np.all(sign * g[:, 1] < 0), g


@pytest.mark.parametrize("name", NAMES)
def test_masking_ties_and_all_masked(name):
  lp, lr, n, r = _data(3)
  lp[0] = [-3e3, -5.0]
  x = _first_input(name, lp)
  where = np.ones_like(lp, bool)
  where[0, 0] = False
  want = _call(name, jnp.asarray(x[1:]), jnp.asarray(lr[1:]), n=n[1:], r=r[1:])
  got, g = jax.value_and_grad(lambda v: _call(name, v, jnp.asarray(lr), where=where, n=n, r=r))(
      jnp.asarray(x))
  assert float(got) == pytest.approx(float(want), rel=1e-5, abs=1e-6)
  np.testing.assert_array_equal(g[0], [0.0, 0.0])
  labels = np.tile([1.0, 0.0], (6, 1))
  labels[0] = [2.0, 2.0]
  tied = _call(name, jnp.asarray(x), jnp.asarray(lr), jnp.asarray(labels), n=n, r=r)
  assert float(tied) == pytest.approx(float(want), rel=1e-5, abs=1e-6)
  # Swapped layout ordered by labels.
  swapped = _call(name, jnp.asarray(x[:, ::-1]), jnp.asarray(lr[:, ::-1]), jnp.asarray([0.0, 1.0]),
                  n=n[:, ::-1], r=r)
  assert float(swapped) == pytest.approx(float(_call(name, jnp.asarray(x), jnp.asarray(lr), n=n,
                                                      r=r)), rel=1e-6)
  none, g = jax.value_and_grad(lambda v: _call(name, v, jnp.asarray(lr),
                                               where=np.zeros((6, 2), bool), n=n, r=r))(
      jnp.asarray(x))
  assert float(none) == 0.0 and np.all(np.isfinite(g))


@pytest.mark.parametrize("name", NAMES)
def test_reductions_jit_and_vmap(name):
  lp, lr, n, r = _data(4)
  x = jnp.asarray(_first_input(name, lp), jnp.float32)
  lr = jnp.asarray(lr, jnp.float32)
  mean = _call(name, x, lr, n=n, r=r)
  per = _call(name, x, lr, n=n, r=r, reduce_fn=None)
  s, c = _call(name, x, lr, n=n, r=r, reduce_fn=losses.sum_and_count)
  assert per.shape == (6,) and float(c) == 6.0
  assert float(jnp.sum(per)) == pytest.approx(float(s), rel=1e-5)
  assert float(s / c) == pytest.approx(float(mean), rel=1e-5)
  stack = lambda v: jnp.stack([v, v[::-1]])  # noqa: E731
  out = jax.jit(jax.vmap(lambda a, b, m, q: _call(name, a, b, n=m, r=q)))(
      stack(x), stack(lr), stack(jnp.asarray(n)), stack(jnp.asarray(r)))
  np.testing.assert_allclose(out, [mean, _call(name, x[::-1], lr[::-1], n=n[::-1], r=r[::-1])],
                             rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_large_inputs_stay_finite(name):
  rng = np.random.default_rng(5)
  lp = -rng.uniform(0.5e4, 1.5e4, size=(6, 2))
  lr = -rng.uniform(0.5e4, 1.5e4, size=(6, 2))
  x = jnp.asarray(_first_input(name, lp), jnp.float32)
  for n in (np.full((6, 2), 20), np.ones((6, 2), int)):
    val, g = jax.value_and_grad(lambda v: _call(name, v, jnp.asarray(lr), n=n, r=-1e4 * np.ones(6),
                                                alpha=1.0) if name == "alphapo" else
                                _call(name, v, jnp.asarray(lr), n=n, r=-1e4 * np.ones(6)))(x)
    assert np.isfinite(float(val)) and np.all(np.isfinite(g)), (val, g)


def test_orpo_and_mapo_edge_cases_are_finite():
  # A probability-1 chosen sequence (lp = 0) hits the −1e−7 clamp of log1mexp.
  val, g = jax.value_and_grad(lambda v: rf.orpo(v, None, lengths=jnp.array([3, 3])))(
      jnp.array([0.0, -1e-9]))
  assert np.isfinite(float(val)) and np.all(np.isfinite(g))
  # MaPO at m = 0 (φ's 0/0), tiny m (series branch), and huge m (e^u overflow).
  for mse in ([0.0, 0.0], [1e-7, 2e-5], [1e4, 1e3], [0.0, 500.0]):
    val, g = jax.value_and_grad(lambda v: rf.mapo_diffusion(v, None))(jnp.array(mse))
    assert np.isfinite(float(val)) and np.all(np.isfinite(g)), mse
  # Equal MSEs: log odds 0 → L = m_w + β ln 2.
  assert float(rf.mapo_diffusion(jnp.array([0.0, 0.0]), None)) == pytest.approx(0.1 * math.log(2))


def test_cpo_cond_easy_clamps_the_reference_average():
  # lr = 0 → a_ref clamped to −1e−6 → m = 0.05·(−2e6) = −1e5, so z = β·δ_π − β·0 − m ≈ 1e5:
  # the loss softplus(−z) and its gradient underflow to exactly 0 (no division by a_ref = 0).
  val, g = jax.value_and_grad(lambda v: rf.cpo_cond_easy(v, jnp.zeros(2), lengths=LEN))(LP)
  assert float(val) == 0.0 and np.all(np.asarray(g) == 0.0)
  # γ = 1e−6 keeps the clamped margin finite: m = 1e−6·(−1e6 − 1e6) = −2; δ_π = −1 − (−2) = 1,
  # z = 2.5·1 + 2 = 4.5, ℓ = softplus(−4.5); ∂ℓ/∂lp = −σ(−4.5)·(β/n)·[1, −1], β/n = 1.25.
  val, g = jax.value_and_grad(
      lambda v: rf.cpo_cond_easy(v, jnp.zeros(2), lengths=LEN, gamma=1e-6))(LP)
  sig = 1.0 / (1.0 + math.exp(4.5))
  np.testing.assert_allclose(val, math.log1p(math.exp(-4.5)), rtol=1e-5)
  np.testing.assert_allclose(g, [-1.25 * sig, 1.25 * sig], rtol=1e-5)


def test_errors_and_registry():
  with pytest.raises(ValueError, match="simpo: `lengths`"):
    rf.simpo(LP, None, lengths=None)
  with pytest.raises(ValueError, match="cpo_contrastive: margin"):
    rf.cpo_contrastive(LP, lengths=LEN, margin="square")
  with pytest.raises(ValueError, match="cpo_cond: `ref_logps`"):
    rf.cpo_cond(LP, None, lengths=LEN)
  with pytest.raises(ValueError, match="mapo_diffusion: mse"):
    rf.mapo_diffusion(jnp.array([-1.0, 0.0]), None)
  with pytest.raises(ValueError, match="simpo: label_smoothing"):
    rf.simpo(LP, lengths=LEN, label_smoothing=0.5)
  with pytest.raises(ValueError, match="rorpo_sigmoid: rationale_logps has shape"):
    rf.rorpo_sigmoid(LP, lengths=LEN, rationale_logps=jnp.ones(3))
  assert losses.get("mapo_llm") is rf.orpo
  assert losses.spec("cpo_cond").needs_reference and not losses.spec("simpo").needs_reference
  assert losses.spec("rorpo_linear").extra_inputs == ("rationale_logps",)
  # cpo_alpha = 0 with the summed-margin shapes needs no lengths.
  assert np.isfinite(float(rf.cpo_contrastive(LP, cpo_alpha=0.0)))
