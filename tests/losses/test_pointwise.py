"""Tests of the pointwise / unpaired objectives: closed forms, float64 numpy
references, the BCO running moments, gradient signs, masking and label checks."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment import losses
from alignment.losses import pointwise as pw
from tests.references import NpRunningMoments

X64 = functools.partial(jax.enable_x64, True)
NAMES = losses.names(family="pointwise")


def np_logsig(x):
  return -np.logaddexp(0.0, -x)


def np_sig(x):
  return 1.0 / (1.0 + np.exp(-x))


def _data(seed=0, k=1):
  rng = np.random.default_rng(seed)
  n = rng.integers(0, 25, size=(6, k))
  lp = -rng.uniform(0.1, 2.0, size=(6, k)) * np.maximum(n, 1)
  lr = lp + rng.normal(size=(6, k)) * 3.0
  labels = (np.arange(6 * k).reshape(6, k) % 3 != 0).astype(np.float64)  # 4 desirable, 2 not
  kl = {"kl_logps": lp[::-1] + rng.normal(size=(6, k)), "kl_ref_logps": lr}
  return lp, lr, n, labels, kl


def np_pointwise(name, lp, lr, n, y, kl, beta=0.1, **hp):
  rho = lp - lr
  d = y == 1.0
  if name == "kto":
    z0 = max(0.0, np.mean(kl["kl_logps"] - kl["kl_ref_logps"]))
    return np.mean(np.where(d, hp.get("desirable_weight", 1.0) * (1 - np_sig(beta * (rho - z0))),
                            hp.get("undesirable_weight", 1.0) * (1 - np_sig(beta * (z0 - rho)))))
  if name == "apo_zero_unpaired":
    return np.mean(np.where(d, 1 - np_sig(beta * rho), np_sig(beta * rho)))
  if name == "pointwise_sigmoid":
    s = beta * rho
    return np.mean(-(y * np_logsig(s) + (1 - y) * np_logsig(-s)))
  if name == "d2o":
    logit = beta * rho[:, 1:].mean(-1) - hp.get("alpha", 0.1) * rho[:, 0]
    return np.mean(-np_logsig(logit))
  nn = np.maximum(n, 1)
  a, rbar, z = lp / nn, rho / nn, hp.get("z", 0.0)
  kind = "pointwise_dpo" if name == "pointwise_dpo" else hp.get("positive_loss", "logloss")
  pos = {"logloss": lambda: np.mean(-a[d]), "beta_logloss": lambda: -beta * np.mean(a[d]),
         "pointwise_dpo": lambda: np.mean(-np_logsig(beta * rbar[d] + z)),
         "shifted_ce_loss": lambda: -lp[d].sum() / nn[d].sum()}[kind]()
  if hp.get("negative_loss", "binary") == "binary":
    neg = np.mean(-np_logsig(-beta * rbar[~d] - z))
  else:
    neg = np.mean((y[~d] - beta * rbar[~d] - z) ** 2)
  return pos + neg


CASES = [
    ("kto", {}), ("kto", {"beta": 0.5, "desirable_weight": 1.33, "undesirable_weight": 0.7}),
    ("apo_zero_unpaired", {}), ("ulma", {}), ("ulma", {"positive_loss": "beta_logloss"}),
    ("ulma", {"positive_loss": "pointwise_dpo", "z": 0.2}),
    ("ulma", {"positive_loss": "shifted_ce_loss"}), ("ulma", {"negative_loss": "continuous"}),
    ("pointwise_dpo", {"beta": 0.3}), ("pointwise_sigmoid", {}), ("d2o", {}),
    ("d2o", {"alpha": 0.5, "beta": 0.2}),
]


def _call(name, lp, lr, labels, *, n, kl, **kw):
  sp = losses.spec(name)
  extra = {k: kl[k] for k in sp.extra_inputs}
  out = sp.fn(lp, lr, labels, lengths=n, **extra, **kw)
  return out[0] if sp.stateful else out


@pytest.mark.parametrize("name,hp", CASES)
def test_matches_float64_numpy_reference(name, hp):
  lp, lr, n, y, kl = _data(1, k=3 if name == "d2o" else 1)
  if name == "ulma" and hp.get("negative_loss") == "continuous":
    y = np.where(y == 1, 1.0, np.random.default_rng(0).uniform(0, 0.9, size=y.shape))
  if name == "pointwise_sigmoid":
    y = np.random.default_rng(0).uniform(0, 1, size=y.shape)
  if name == "d2o":
    y = None
  want = np_pointwise(name, lp, lr, n, y, kl, **hp)
  with X64():
    got = _call(name, jnp.asarray(lp), jnp.asarray(lr), y, n=n,
                kl={k: jnp.asarray(v) for k, v in kl.items()}, **hp)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  got32 = _call(name, jnp.asarray(lp, jnp.float32), jnp.asarray(lr, jnp.float32), y, n=n, kl=kl,
                **hp)
  np.testing.assert_allclose(got32, want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Hand-worked values: lp = [−1, −2], lr = [−1.5, −1.5] → ρ = [0.5, −0.5]; labels [1, 0].

LP = jnp.array([-1.0, -2.0])
LR = jnp.array([-1.5, -1.5])
Y = jnp.array([1.0, 0.0])


def _softplus(x):
  return math.log1p(math.exp(x))


def _sig(x):
  return 1 / (1 + math.exp(-x))


def test_kto_hand_value_and_z0_clamp():
  # kl ratios [1, 0.2] → z0 = 0.6; β = 1: ℓ_D = 1 − σ(0.5 − 0.6) = σ(0.1) = 0.524979,
  # ℓ_U = 1 − σ(0.6 + 0.5) = σ(−1.1) = 0.249740; mean = 0.387360.
  kl = dict(kl_logps=jnp.array([0.0, -1.0]), kl_ref_logps=jnp.array([-1.0, -1.2]))
  got = pw.kto(LP, LR, Y, beta=1.0, **kl)
  assert float(got) == pytest.approx(0.5 * (_sig(0.1) + _sig(-1.1)), rel=1e-6)
  # Negative KL mean is clamped: z0 = max(0, −0.4) = 0 → ℓ_D = ℓ_U = 1 − σ(0.5).
  kl = dict(kl_logps=jnp.array([-1.0, -1.0]), kl_ref_logps=jnp.array([-0.6, -0.6]))
  assert float(pw.kto(LP, LR, Y, beta=1.0, **kl)) == pytest.approx(1 - _sig(0.5), rel=1e-6)
  # z0 is stop-gradient: no gradient flows into the mismatched-pair log-probs.
  g = jax.grad(lambda k: pw.kto(LP, LR, Y, kl_logps=k, kl_ref_logps=jnp.zeros(2)))(
      jnp.array([1.0, 2.0]))
  np.testing.assert_array_equal(g, [0.0, 0.0])


def test_rotate_completions():
  np.testing.assert_array_equal(pw.rotate_completions(jnp.arange(4)), [3, 0, 1, 2])


HAND = [
    # Desirable 1 − σ(0.5) = 0.377541; undesirable σ(−0.5) = 0.377541.
    ("apo_zero_unpaired", {"beta": 1.0}, 1 - _sig(0.5)),
    # lengths [1, 1]: a = lp, ρ̄ = ρ. logloss: −a_w = 1; binary negative: −logσ(−0.1·(−0.5))
    # = softplus(−0.05) = 0.668809. L = 1.668809.
    ("ulma", {}, 1.0 + _softplus(-0.05)),
    # β = 1: −logσ(0.5) + −logσ(0.5) = 2·0.474077.
    ("pointwise_dpo", {"beta": 1.0}, 2 * _softplus(-0.5)),
    # Labels [1, 0.25], ρ = [0.5, −0.5], β = 1: −logσ(0.5) = 0.474077;
    # −[0.25·logσ(−0.5) + 0.75·logσ(0.5)] = 0.25·0.974077 + 0.75·0.474077 = 0.599077.
    ("pointwise_sigmoid", {"beta": 1.0, "labels": jnp.array([1.0, 0.25])},
     0.5 * (_softplus(-0.5) + 0.25 * _softplus(0.5) + 0.75 * _softplus(-0.5))),
]


@pytest.mark.parametrize("name,hp,expected", HAND, ids=[h[0] for h in HAND])
def test_hand_worked_values(name, hp, expected):
  hp = dict(hp)
  labels = hp.pop("labels", Y)
  got = losses.get(name)(LP, LR, labels, lengths=jnp.array([1, 1]), **hp)
  assert float(got) == pytest.approx(expected, rel=1e-5)


def test_d2o_hand_value():
  # Slot 0 the human negative ρ = 1, samples ρ = [0.5, −0.3]; β = 1, α = 0.5:
  # logit = mean(0.5, −0.3) − 0.5·1 = −0.4 → −logσ(−0.4) = softplus(0.4) = 0.913015.
  got = pw.d2o(jnp.array([1.0, 0.5, -0.3]), jnp.zeros(3), beta=1.0, alpha=0.5)
  assert float(got) == pytest.approx(_softplus(0.4), rel=1e-6)
  # A padded sample slot is excluded from the mean: samples [0.5], logit = 0.5 − 0.5 = 0.
  got = pw.d2o(jnp.array([1.0, 0.5, 7.0]), jnp.zeros(3), where=jnp.array([True, True, False]),
               beta=1.0, alpha=0.5)
  assert float(got) == pytest.approx(math.log(2.0), rel=1e-6)


# ------------------------------------------------------------------------------------------------
# BCO.


def test_bco_hand_value():
  # ρ = [0.5, 0.1], β = 1, labels [1, 0]: pooled mean 0.3 → δ = 0.3 after the first update;
  # ℓ_D = −logσ(0.2), ℓ_U = −logσ(−(0.1 − 0.3)) = −logσ(0.2); mean = softplus(−0.2) = 0.598139.
  loss, state = pw.bco(LP, jnp.array([-1.5, -2.1]), Y, beta=1.0)
  assert float(loss) == pytest.approx(_softplus(-0.2), rel=1e-5)
  assert float(state.mean) == pytest.approx(0.3, rel=1e-6) and float(state.count) == 2.0
  # Population variance of [0.5, 0.1] is 0.04; v' = (1·1e−24 + … + 0.04·2)/2 = 0.04.
  assert float(state.var) == pytest.approx(0.04, rel=1e-5)


@pytest.mark.parametrize("delta", ["pooled", "class_mean"])
def test_bco_recurrence_matches_numpy_running_moments(delta):
  rm = NpRunningMoments()
  state = losses.spec("bco").init_state()
  for step in range(4):
    lp, lr, _, y, _ = _data(10 + step)
    where = np.ones_like(lp, bool)
    where[step] = False
    udm = np.random.default_rng(step).uniform(0.5, 10, size=lp.shape)
    r = (0.1 * (lp - lr))[where]
    d = (y == 1)[where]
    rm.update(r if delta == "pooled" else 0.5 * (r[d].mean() + r[~d].mean()))
    want = np.mean(np.where(d, -np_logsig(r - rm.mean),
                            -udm[where] * np_logsig(-(r - rm.mean))))
    loss, state = pw.bco(jnp.asarray(lp), jnp.asarray(lr), y, where=where, state=state,
                         udm_weights=udm, delta=delta)
    assert float(loss) == pytest.approx(want, rel=1e-5)
    np.testing.assert_allclose([state.mean, state.count], [rm.mean, rm.count], rtol=1e-5)
    np.testing.assert_allclose(state.var, rm.var, rtol=1e-4)
  lp, lr, _, y, _ = _data(30)
  _, same = pw.bco(jnp.asarray(lp), jnp.asarray(lr), y, state=state, training=False)
  assert all(float(a) == float(b) for a, b in zip(same, state))
  # δ and the UDM weights are stop-gradient.
  g = jax.grad(lambda w: pw.bco(jnp.asarray(lp), jnp.asarray(lr), y, state=state,
                                udm_weights=w)[0])(jnp.ones(lp.shape))
  np.testing.assert_array_equal(g, np.zeros(lp.shape))


def test_running_moments_empty_batch_is_identity():
  state = pw.running_moments_update(pw.running_moments_init(), jnp.array([1.0, 3.0]))
  same = pw.running_moments_update(state, jnp.array([5.0]), jnp.array([False]))
  assert all(float(a) == float(b) for a, b in zip(same, state))


# ------------------------------------------------------------------------------------------------
# Generic properties.


def _inputs(name, seed):
  k = 3 if name == "d2o" else 1
  lp, lr, n, y, kl = _data(seed, k=k)
  if name == "d2o":
    y = np.tile([0.0, 1.0, 1.0], (6, 1))
  return lp, lr, n, y, kl


@pytest.mark.parametrize("name", NAMES)
def test_gradient_signs(name):
  lp, lr, n, y, kl = _inputs(name, 2)
  g = jax.grad(lambda x: _call(name, x, jnp.asarray(lr), y, n=n, kl=kl))(
      jnp.asarray(lp, jnp.float32))
  d = y == 1
  assert np.all(g[d] < 0), g  # raising a desirable (or self-generated) response lowers the loss
  assert np.all(g[~d] > 0), g  # raising an undesirable (or the human negative) one raises it


@pytest.mark.parametrize("name", NAMES)
def test_masking_all_masked_and_reductions(name):
  lp, lr, n, y, kl = _inputs(name, 3)
  where = np.ones_like(lp, bool)
  where[0] = False
  lp[0] = -4e3
  sub = {k: v[1:] for k, v in kl.items()}
  want = _call(name, jnp.asarray(lp[1:]), jnp.asarray(lr[1:]), y[1:], n=n[1:], kl=sub,
               where=where[1:])
  got, g = jax.value_and_grad(lambda x: _call(name, x, jnp.asarray(lr), y, n=n, kl=kl,
                                              where=where))(jnp.asarray(lp))
  if name != "kto":  # KTO's z0 is a batch mean over the where-masked mismatched pairs too
    assert float(got) == pytest.approx(float(want), rel=1e-5, abs=1e-6)
  np.testing.assert_array_equal(g[0], np.zeros_like(g[0]))
  none, g = jax.value_and_grad(lambda x: _call(name, x, jnp.asarray(lr), y, n=n, kl=kl,
                                               where=np.zeros_like(where)))(jnp.asarray(lp))
  assert float(none) == 0.0 and np.all(np.isfinite(g))
  x, r = jnp.asarray(lp, jnp.float32), jnp.asarray(lr, jnp.float32)
  mean = _call(name, x, r, y, n=n, kl=kl)
  per = _call(name, x, r, y, n=n, kl=kl, reduce_fn=None)
  s, c = _call(name, x, r, y, n=n, kl=kl, reduce_fn=losses.sum_and_count)
  assert float(jnp.sum(per)) == pytest.approx(float(s), rel=1e-5)
  assert float(s / c) == pytest.approx(float(mean), rel=1e-5)
  assert float(jax.jit(lambda a, b: _call(name, a, b, y, n=n, kl=kl))(x, r)) == pytest.approx(
      float(mean), rel=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_large_log_probs_stay_finite(name):
  lp, lr, n, y, kl = _inputs(name, 4)
  lp, lr = lp * 0 - 1e4, lr * 0 - 2e4 * np.random.default_rng(0).uniform(size=lp.shape)
  val, g = jax.value_and_grad(lambda x: _call(name, x, jnp.asarray(lr), y, n=n, kl=kl))(
      jnp.asarray(lp, jnp.float32))
  assert np.isfinite(float(val)) and np.all(np.isfinite(g))


def test_label_errors_and_options():
  with pytest.raises(ValueError, match="pointwise_sigmoid: labels must lie in"):
    pw.pointwise_sigmoid(LP, LR, jnp.array([1.5, 0.0]))
  with pytest.raises(ValueError, match="apo_zero_unpaired: labels must be 0"):
    pw.apo_zero_unpaired(LP, LR, jnp.array([0.5, 0.0]))
  with pytest.raises(ValueError, match="bco: delta must be"):
    pw.bco(LP, LR, Y, delta="median")
  with pytest.raises(ValueError, match="ulma: positive_loss"):
    pw.ulma(LP, LR, Y, lengths=jnp.ones(2), positive_loss="sft")
  with pytest.raises(ValueError, match="kto: desirable_weight"):
    pw.kto(LP, LR, Y, kl_logps=LP, kl_ref_logps=LR, desirable_weight=-1.0)
  with pytest.raises(ValueError, match="kto: beta"):
    pw.kto(LP, LR, Y, kl_logps=LP, kl_ref_logps=LR, beta=0.0)
  # Traced labels are not inspected (jit works), the check applies to concrete ones only: under
  # `jit` even out-of-range labels give the formula's value (numpy, s = βρ = 0.1·[0.5, −0.5]).
  f = jax.jit(lambda y: pw.pointwise_sigmoid(LP, LR, y))
  s = 0.1 * np.array([0.5, -0.5])
  for y in (np.array([1.0, 0.0]), np.array([1.5, 0.0])):
    want = np.mean(-(y * np_logsig(s) + (1.0 - y) * np_logsig(-s)))
    np.testing.assert_allclose(f(jnp.asarray(y, jnp.float32)), want, rtol=1e-6)
  sp = losses.spec("kto")
  assert sp.extra_inputs == ("kl_logps", "kl_ref_logps") and sp.family == "pointwise"
  assert losses.spec("bco").stateful and losses.spec("ulma").needs_lengths
