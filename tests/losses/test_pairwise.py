"""Tests of the pairwise objectives: closed forms, float64 numpy references,
gradient signs, masking, reductions, stability, state and range errors."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment import losses, scores
from alignment.losses import pairwise
from tests.references import NpRunningMoments

X64 = functools.partial(jax.enable_x64, True)
PAIRWISE = losses.names(family="pairwise")


def np_logsig(x):
  return -np.logaddexp(0.0, -x)


def np_sig(x):
  return 1.0 / (1.0 + np.exp(-x))


def np_smoothed(z, eps):
  return -(1 - eps) * np_logsig(z) - eps * np_logsig(-z)


# ------------------------------------------------------------------------------------------------
# Independent float64 references: per-pair losses (or the batch scalar for coupled ones).


def np_pairwise(name, lp, lr, n, beta=0.1, **hp):
  rho = lp - lr
  rw, rl = rho[..., 0], rho[..., 1]
  h = rw - rl
  nn = np.maximum(n, 1)
  if name == "dpo":
    return np_smoothed(beta * h, hp.get("label_smoothing", 0.0))
  if name == "cdpo":
    return np_smoothed(beta * h, hp["label_smoothing"])
  if name == "rdpo":
    e = hp.get("label_smoothing", 0.1)
    return (-(1 - e) * np_logsig(beta * h) + e * np_logsig(-beta * h)) / (1 - 2 * e)
  if name == "ipo_sum":
    return (h - 1 / (2 * beta)) ** 2
  if name == "ipo_mean":
    return (rw / nn[..., 0] - rl / nn[..., 1] - 1 / (2 * beta)) ** 2
  if name == "hinge":
    return np.maximum(0.0, 1 - beta * h)
  if name == "slic_hf":
    return np.maximum(0.0, hp["delta"] - lp[..., 0] + lp[..., 1]) - hp["reg_weight"] * hp[
        "target_logps"]
  if name == "ln_dpo":
    return -np_logsig(beta * (rw / nn[..., 0] - rl / nn[..., 1]))
  if name == "dpo_gamma":
    g = hp.get("gamma", 1.0)
    return -np_logsig(beta * ((lp[..., 0] - lp[..., 1]) - g * (lr[..., 0] - lr[..., 1])))
  if name == "nca_pair":
    return -np_logsig(beta * rw) - 0.5 * np_logsig(-beta * rw) - 0.5 * np_logsig(-beta * rl)
  if name == "exo_pair":
    e = hp.get("label_smoothing", 1e-3)
    q = np_sig(beta * h)
    return q * (np_logsig(beta * h) - np.log(1 - e)) + (1 - q) * (
        np_logsig(-beta * h) - np.log(e))
  if name == "apo_zero":
    return 1 - np_sig(beta * rw) + np_sig(beta * rl)
  if name == "apo_down":
    return np_sig(beta * rw) + 1 - np_sig(beta * h)
  if name == "sppo_hard":
    return (rw - 1 / (2 * beta)) ** 2 + (rl + 1 / (2 * beta)) ** 2
  if name == "discopop":
    z, tau = beta * h, hp.get("tau", 0.05)
    m = np_sig(z / tau)
    return (1 - m) * -np_logsig(z) + m * np.exp(-z)
  if name == "bco_pair_noshift":
    return -np_logsig(beta * rw) - np_logsig(-beta * rl)
  if name in ("aot_paired", "aot_unpaired"):
    if name == "aot_paired":
      u, v = lp[..., 0] - lp[..., 1], lr[..., 0] - lr[..., 1]
    else:
      u, v = rw, rl
    d = np.sort(u.ravel()) - np.sort(v.ravel())
    return np.mean(np_smoothed(beta * d, hp.get("label_smoothing", 0.0)))
  if name == "sft":
    return -lp[..., 0].sum() / nn[..., 0].sum()
  raise AssertionError(name)


COUPLED = ("aot_paired", "aot_unpaired", "sft")

CASES = [
    ("dpo", {}), ("dpo", {"label_smoothing": 0.2}), ("cdpo", {"label_smoothing": 0.1}),
    ("rdpo", {}), ("rdpo", {"label_smoothing": 0.3, "beta": 0.5}), ("ipo_sum", {}),
    ("ipo_mean", {"beta": 0.5}), ("hinge", {"beta": 0.5}),
    ("slic_hf", {"delta": 1.0, "reg_weight": 0.1}), ("ln_dpo", {"beta": 2.0}),
    ("dpo_gamma", {"gamma": 0.5}), ("dpo_gamma", {"gamma": 0.0}), ("nca_pair", {}),
    ("exo_pair", {}), ("exo_pair", {"label_smoothing": 0.2}), ("apo_zero", {}), ("apo_down", {}),
    ("sppo_hard", {}), ("discopop", {}), ("discopop", {"tau": 0.5, "beta": 0.5}),
    ("bco_pair_noshift", {}), ("aot_paired", {}), ("aot_paired", {"label_smoothing": 0.1}),
    ("aot_unpaired", {}), ("sft", {}),
]


def _data(seed=0, batch=(6,)):
  rng = np.random.default_rng(seed)
  n = rng.integers(0, 30, size=batch + (2,))
  lp = -rng.uniform(0.2, 2.0, size=batch + (2,)) * np.maximum(n, 1)
  lr = lp + rng.normal(size=batch + (2,)) * 3.0
  extra = {"target_logps": -rng.uniform(1, 20, size=batch),
           "rationale_logps": -rng.uniform(1, 20, size=batch)}
  return lp, lr, n, extra


def _call(name, logps, ref_logps, labels=None, *, lengths, extras, **kw):
  sp = losses.spec(name)
  kwargs = {k: extras[k] for k in sp.extra_inputs}
  if name == "slic_hf":
    kwargs.update(delta=1.0, reg_weight=0.1)
  kwargs.update(kw)
  out = sp.fn(logps, ref_logps, labels, lengths=lengths, **kwargs)
  return out[0] if sp.stateful else out


@pytest.mark.parametrize("name,hp", CASES)
def test_matches_float64_numpy_reference(name, hp):
  lp, lr, n, extra = _data(1)
  np_hp = dict(hp, **({"target_logps": extra["target_logps"]} if name == "slic_hf" else {}))
  want = np_pairwise(name, lp, lr, n, **np_hp)
  fn = losses.get(name)
  kw = dict(hp, **({"target_logps": extra["target_logps"]} if name == "slic_hf" else {}))
  with X64():
    got = fn(jnp.asarray(lp), jnp.asarray(lr), None, lengths=jnp.asarray(n), **kw)
    if name not in COUPLED:
      per = fn(jnp.asarray(lp), jnp.asarray(lr), None, lengths=jnp.asarray(n), reduce_fn=None,
               **kw)
      np.testing.assert_allclose(per, want, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(got, np.mean(want), rtol=1e-6, atol=1e-6)
  got32 = fn(jnp.asarray(lp, jnp.float32), jnp.asarray(lr, jnp.float32), None,
             lengths=jnp.asarray(n), **kw)
  np.testing.assert_allclose(got32, np.mean(want), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Hand-worked values. Pair: lp = [-1, -2], lr = [-1.5, -1.5] → ρ_w = 0.5, ρ_l = -0.5, h = 1.

LP = jnp.array([-1.0, -2.0])
LR = jnp.array([-1.5, -1.5])
LEN = jnp.array([2, 4])
LOGSIG1 = math.log(1 / (1 + math.exp(-1.0)))  # logσ(1) = -0.3132617


def _sig(x):
  return 1 / (1 + math.exp(-x))


HAND = [
    # −logσ(1) = 0.3132617.
    ("dpo", {"beta": 1.0}, -LOGSIG1),
    # −(1−ε)logσ(z) − ε logσ(−z) = −logσ(z) + εz (since logσ(−z) = logσ(z) − z) = 0.31326 + 0.25.
    ("cdpo", {"beta": 1.0, "label_smoothing": 0.25}, -LOGSIG1 + 0.25),
    # [−0.75·logσ(1) + 0.25·logσ(−1)]/0.5 = [0.2349463 − 0.3283154]/0.5 = −0.1867383.
    ("rdpo", {"beta": 1.0, "label_smoothing": 0.25},
     (-0.75 * LOGSIG1 + 0.25 * (LOGSIG1 - 1)) / 0.5),
    # (h − 1/(2β))² = (1 − 2)² = 1 at β = 0.25.
    ("ipo_sum", {"beta": 0.25}, 1.0),
    # h̄ = 0.5/2 − (−0.5)/4 = 0.375; (0.375 − 1)² = 0.390625 at β = 0.5.
    ("ipo_mean", {"beta": 0.5}, 0.390625),
    # max(0, 1 − 0.5·1) = 0.5.
    ("hinge", {"beta": 0.5}, 0.5),
    # max(0, δ − lp_w + lp_l) − λ·lp_ref = max(0, 2 + 1 − 2) − 0.1·(−3) = 1.3.
    ("slic_hf", {"delta": 2.0, "reg_weight": 0.1, "target_logps": jnp.array(-3.0)}, 1.3),
    # −logσ(1·0.375) = log(1 + e^{−0.375}) = 0.5231.
    ("ln_dpo", {"beta": 1.0}, math.log1p(math.exp(-0.375))),
    # γ = 0: margin = lp_w − lp_l = 1 → −logσ(1).
    ("dpo_gamma", {"beta": 1.0, "gamma": 0.0}, -LOGSIG1),
    # −logσ(.5) − ½logσ(−.5) − ½logσ(.5) = .474077 + .487038 + .237038 = 1.198154.
    ("nca_pair", {"beta": 1.0}, 1.5 * math.log1p(math.exp(-0.5)) + 0.5 * math.log1p(math.exp(0.5))),
    # q = σ(1) = .731059: q(logσ(1) − log .9) + (1−q)(logσ(−1) − log .1)
    #   = .731059·(−.207901) + .268941·(.989323) = −.151988 + .266070 = .114082.
    ("exo_pair", {"beta": 1.0, "label_smoothing": 0.1},
     _sig(1) * (LOGSIG1 - math.log(0.9)) + _sig(-1) * (LOGSIG1 - 1 - math.log(0.1))),
    # (1 − σ(.5)) + σ(−.5) = .377541 + .377541 = .755081.
    ("apo_zero", {"beta": 1.0}, 2 * _sig(-0.5)),
    # σ(.5) + 1 − σ(1) = .622459 + .268941 = .891401.
    ("apo_down", {"beta": 1.0}, _sig(0.5) + 1 - _sig(1.0)),
    # (.5 − 1)² + (−.5 + 1)² = .5 at β = .5.
    ("sppo_hard", {"beta": 0.5}, 0.5),
    # τ = 1: m = σ(1); (1−m)(−logσ(1)) + m·e^{−1} = .268941·.313262 + 1/(e+1) = .084250 + .268941.
    ("discopop", {"beta": 1.0, "tau": 1.0}, _sig(-1) * -LOGSIG1 + 1 / (math.e + 1)),
    # −logσ(.5) − logσ(.5) = 2·.474077 = .948154.
    ("bco_pair_noshift", {"beta": 1.0}, 2 * math.log1p(math.exp(-0.5))),
    # −lp_w / n_w = 1/2.
    ("sft", {}, 0.5),
]


@pytest.mark.parametrize("name,hp,expected", HAND, ids=[h[0] for h in HAND])
def test_hand_worked_values(name, hp, expected):
  got = losses.get(name)(LP, LR, jnp.array([1.0, 0.0]), lengths=LEN, **hp)
  assert float(got) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_aot_hand_values_are_batch_coupled():
  # Pairs lp = [[-1,-2],[-3,-1]], lr = [[-1.5,-1.5],[-1,-4]].
  # Paired: u = [1, -2], v = [0, 3]; sorted u = [-2, 1], sorted v = [0, 3] → δ = [-2, -2];
  # loss = −logσ(−2) = log(1 + e²) = 2.126928 (per-example DPO would use h = [1, -5]).
  lp = jnp.array([[-1.0, -2.0], [-3.0, -1.0]])
  lr = jnp.array([[-1.5, -1.5], [-1.0, -4.0]])
  got = pairwise.aot_paired(lp, lr, beta=1.0)
  assert float(got) == pytest.approx(math.log1p(math.exp(2.0)), rel=1e-6)
  # Unpaired: ρ_w = [.5, −2], ρ_l = [−.5, 3]; sorted: [−2, .5] − [−.5, 3] = [−1.5, −2.5];
  # loss = mean(log(1 + e^{1.5}), log(1 + e^{2.5})).
  got = pairwise.aot_unpaired(lp, lr, beta=1.0)
  want = 0.5 * (math.log1p(math.exp(1.5)) + math.log1p(math.exp(2.5)))
  assert float(got) == pytest.approx(want, rel=1e-6)
  # The sort runs over all leading axes together: [2, 3, 2] equals its flattening [6, 2].
  lp3, lr3, _, _ = _data(7)
  a = pairwise.aot_paired(jnp.asarray(lp3.reshape(2, 3, 2)), jnp.asarray(lr3.reshape(2, 3, 2)))
  b = pairwise.aot_paired(jnp.asarray(lp3), jnp.asarray(lr3))
  assert float(a) == pytest.approx(float(b), rel=1e-6)


def test_k2_reduction_dpo_equals_pairwise_logistic_on_beta_rho():
  # K = 2 reduction: with s = βρ, the pairwise logistic loss softplus(−(s_w − s_l)) is DPO.
  lp, lr, n, _ = _data(2)
  s = 0.1 * (lp - lr)
  want = np.mean(np.logaddexp(0.0, -(s[:, 0] - s[:, 1])))
  assert float(pairwise.dpo(jnp.asarray(lp), jnp.asarray(lr))) == pytest.approx(want, rel=1e-5)
  # Step-0 invariant: policy = reference gives ln 2.
  assert float(pairwise.dpo(jnp.asarray(lp), jnp.asarray(lp))) == pytest.approx(math.log(2.0))


def test_cdpo_is_dpo_with_label_smoothing_and_finite_minimiser():
  lp, lr, _, _ = _data(3)
  a = pairwise.cdpo(jnp.asarray(lp), jnp.asarray(lr), label_smoothing=0.1)
  b = pairwise.dpo(jnp.asarray(lp), jnp.asarray(lr), label_smoothing=0.1)
  assert float(a) == float(b)
  # h* = logit(1 − ε)/β: the gradient vanishes there.
  eps, beta = 0.1, 0.1
  h_star = math.log((1 - eps) / eps) / beta
  g = jax.grad(lambda x: pairwise.cdpo(jnp.stack([x, 0.0]), jnp.zeros(2), beta=beta,
                                       label_smoothing=eps))(h_star)
  assert abs(float(g)) < 1e-6


# ------------------------------------------------------------------------------------------------
# Modifiers: f-divergences, WPO, LD-DPO.

FDIV_LOSSES = ["dpo", "cdpo", "rdpo", "ipo_sum", "ipo_mean", "hinge", "ln_dpo", "dpo_gamma",
               "nca_pair", "exo_pair", "sppo_hard", "discopop", "bco_pair_noshift"]


@pytest.mark.parametrize("fdiv", sorted(scores.F_DIVERGENCES))
@pytest.mark.parametrize("name", FDIV_LOSSES)
def test_fdiv_replaces_log_ratios(name, fdiv):
  lp, lr, n, _ = _data(4)
  rho = lp - lr
  if name in ("ipo_mean", "ln_dpo"):
    rho = rho / np.maximum(n, 1)
  s = {"reverse_kl": lambda r: r, "forward_kl": lambda r: -np.exp(-r),
       "js_divergence": np_logsig, "alpha_div": lambda r: -np.exp(-0.5 * r) / 0.5,
       "alpha_div_trl": lambda r: np.exp(-0.5 * r) / -0.5}[fdiv](rho)
  # Feed s as "log-ratios with zero reference" to the numpy reference, and undo normalisation.
  s_in = s * np.maximum(n, 1) if name in ("ipo_mean", "ln_dpo") else s
  hp = {"label_smoothing": 0.1} if name == "cdpo" else {}
  want = np.mean(np_pairwise(name, s_in, np.zeros_like(s_in), n, **hp))
  with X64():
    got = losses.get(name)(jnp.asarray(lp), jnp.asarray(lr), lengths=jnp.asarray(n), fdiv=fdiv,
                           **hp)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_fdiv_callable_with_other_alpha_and_apo_aot_ignore_it():
  lp, lr, _, _ = _data(5)
  rho = lp - lr
  s = -np.exp(-0.3 * rho) / 0.3
  want = np.mean(-np_logsig(0.1 * (s[:, 0] - s[:, 1])))
  got = pairwise.dpo(jnp.asarray(lp), jnp.asarray(lr),
                     fdiv=functools.partial(scores.alpha_div, alpha=0.3))
  assert float(got) == pytest.approx(want, rel=1e-5)
  with pytest.raises(TypeError):
    pairwise.apo_zero(jnp.asarray(lp), jnp.asarray(lr), fdiv="forward_kl")


def test_wpo_weights_multiply_pair_losses():
  rng = np.random.default_rng(8)
  tok = -rng.uniform(0, 2, size=(6, 2, 5))
  lss = -rng.uniform(0, 1, size=(6, 2, 5))
  mask = rng.uniform(size=(6, 2, 5)) < 0.8
  lp = jnp.asarray(np.where(mask, tok, 0).sum(-1), jnp.float32)
  lr = lp + jnp.asarray(rng.normal(size=(6, 2)), jnp.float32)
  w = scores.wpo_weights(tok, lss, mask)
  per = pairwise.dpo(lp, lr, reduce_fn=None)
  got = pairwise.dpo(lp, lr, weights=w)
  np.testing.assert_allclose(got, np.mean(per * w[:, 0]), rtol=1e-6)
  # Weights are data: no gradient flows into the token log-probs through them.
  g = jax.grad(lambda t: pairwise.dpo(lp, lr, weights=scores.wpo_weights(t, lss, mask)))(
      jnp.asarray(tok, jnp.float32))
  assert np.all(g == 0.0)


def test_ld_dpo_inputs_give_the_paper_loss():
  # n_w = 3, n_l = 1, α = 0.5: lp^LD = [-1 + .5·(-5), -4] = [-3.5, -4]; ref: [-2, -2].
  tok = jnp.array([[-1.0, -2.0, -3.0], [-4.0, 0.0, 0.0]])
  ref = jnp.array([[-1.0, -1.0, -1.0], [-2.0, 0.0, 0.0]])
  mask = jnp.array([[True, True, True], [True, False, False]])
  lp, lr = scores.ld_dpo_logps(tok, ref, mask, alpha=0.5)
  # h = (-3.5 + 2) - (-4 + 2) = 0.5; β = 1 → −logσ(0.5) = log(1 + e^{−0.5}).
  got = pairwise.dpo(lp, lr, beta=1.0)
  assert float(got) == pytest.approx(math.log1p(math.exp(-0.5)), rel=1e-6)


# ------------------------------------------------------------------------------------------------
# Stateful BCO-pair.


def test_bco_pair_shift_hand_value():
  # ρ = [0.5, 0.1], β = 1: batch value mean(0.5, 0.1) = 0.3; from init μ' = 0.3·1/(1 + 1e-24).
  # ℓ = −logσ(0.5 − 0.3) − logσ(−(0.1 − 0.3)) = 2·log(1 + e^{−0.2}).
  loss, state = pairwise.bco_pair_shift(jnp.array([-1.0, -2.0]), jnp.array([-1.5, -2.1]),
                                        beta=1.0)
  assert float(loss) == pytest.approx(2 * math.log1p(math.exp(-0.2)), rel=1e-5)
  assert float(state.mean) == pytest.approx(0.3, rel=1e-6)
  assert float(state.count) == pytest.approx(1.0)


def test_bco_pair_shift_recurrence_matches_numpy_running_moments():
  rm = NpRunningMoments()
  state = losses.spec("bco_pair_shift").init_state()
  for step in range(4):
    lp, lr, _, _ = _data(10 + step)
    where = np.ones_like(lp, bool)
    where[0] = step % 2 == 0  # the first pair is masked on odd steps
    valid = where.all(-1)
    rho = (lp - lr)[valid]
    r = 0.1 * rho
    rm.update(np.mean(np.concatenate([r[:, 0], r[:, 1]])))  # one scalar per step, updated first
    want = np.mean(-np_logsig(r[:, 0] - rm.mean) - np_logsig(-(r[:, 1] - rm.mean)))
    loss, state = pairwise.bco_pair_shift(jnp.asarray(lp), jnp.asarray(lr), where=where,
                                          state=state)
    assert float(loss) == pytest.approx(want, rel=1e-5)
    np.testing.assert_allclose([state.mean, state.count], [rm.mean, rm.count], rtol=1e-6)
    np.testing.assert_allclose(state.var, rm.var, rtol=1e-4)  # float32 state, small variance
  # Evaluation: no update, the stored δ is used.
  lp, lr, _, _ = _data(20)
  _, same = pairwise.bco_pair_shift(jnp.asarray(lp), jnp.asarray(lr), state=state, training=False)
  for a, b in zip(same, state):
    assert float(a) == float(b)
  # δ is stop-gradient: the gradient equals that of the loss with δ held fixed.
  g = jax.grad(lambda x: pairwise.bco_pair_shift(x, jnp.asarray(lr), state=state)[0])(
      jnp.asarray(lp, jnp.float32))
  new = pairwise.bco_pair_shift(jnp.asarray(lp), jnp.asarray(lr), state=state)[1]
  g_fixed = jax.grad(lambda x: jnp.mean(
      -jax.nn.log_sigmoid(0.1 * (x[:, 0] - lr[:, 0]) - new.mean)
      - jax.nn.log_sigmoid(-(0.1 * (x[:, 1] - lr[:, 1]) - new.mean))))(jnp.asarray(lp, jnp.float32))
  np.testing.assert_allclose(g, g_fixed, rtol=1e-5, atol=1e-7)


def test_bco_pair_shift_state_is_a_jittable_pytree():
  lp, lr, _, _ = _data(21)
  state = pairwise.running_moments_init()
  step = jax.jit(lambda s, x: pairwise.bco_pair_shift(x, jnp.asarray(lr), state=s))
  loss, new = step(state, jnp.asarray(lp, jnp.float32))
  eager, new_eager = pairwise.bco_pair_shift(jnp.asarray(lp, jnp.float32), jnp.asarray(lr),
                                             state=state)
  assert float(loss) == pytest.approx(float(eager), rel=1e-6)
  assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(state)


# ------------------------------------------------------------------------------------------------
# combine (RPO, MPO) and sft.


def test_combine_rpo_and_mpo():
  lp, lr, n, _ = _data(22)
  lp, lr = jnp.asarray(lp), jnp.asarray(lr)
  rpo = pairwise.combine([("dpo", 1.0), ("sft", 1.0)])
  want = float(pairwise.dpo(lp, lr)) + float(pairwise.sft(lp, None, lengths=n))
  assert float(rpo(lp, lr, lengths=n)) == pytest.approx(want, rel=1e-6)
  # Weighted, with hyper-parameters per term.
  mix = pairwise.combine([("dpo", 0.5, {"beta": 0.3}), (pairwise.hinge, 2.0)])
  want = 0.5 * float(pairwise.dpo(lp, lr, beta=0.3)) + 2.0 * float(pairwise.hinge(lp, lr))
  assert float(mix(lp, lr)) == pytest.approx(want, rel=1e-6)
  # MPO: a stateful term threads its state.
  mpo = pairwise.combine([("dpo", 0.8), ("bco_pair_shift", 0.2), ("sft", 1.0)])
  assert mpo.stateful
  loss, state = mpo(lp, lr, lengths=n, state=mpo.init_state())
  bco_loss, bco_state = pairwise.bco_pair_shift(lp, lr)
  want = (0.8 * float(pairwise.dpo(lp, lr)) + 0.2 * float(bco_loss)
          + float(pairwise.sft(lp, None, lengths=n)))
  assert float(loss) == pytest.approx(want, rel=1e-6)
  assert state[0] is None and float(state[1].mean) == float(bco_state.mean)
  with pytest.raises(ValueError, match="no term accepts"):
    rpo(lp, lr, lengths=n, kl_logps=lp)


def test_sft_is_a_token_mean_and_its_shares_reduce_consistently():
  lp, lr, n, _ = _data(23)
  where = np.array([True, False, True, True, True, False])[:, None] & np.ones((1, 2), bool)
  nn = np.maximum(n, 1)
  want = -lp[where[:, 0], 0].sum() / nn[where[:, 0], 0].sum()
  got = pairwise.sft(jnp.asarray(lp), None, lengths=n, where=where)
  assert float(got) == pytest.approx(want, rel=1e-6)
  s, c = pairwise.sft(jnp.asarray(lp), None, lengths=n, where=where, reduce_fn=losses.sum_and_count)
  assert float(s / c) == pytest.approx(want, rel=1e-6) and float(c) == 4.0
  # Unreduced shares: −lp_w·N/Σn_w on valid pairs, 0 on masked ones.
  per = pairwise.sft(jnp.asarray(lp), None, lengths=n, where=where, reduce_fn=None)
  np.testing.assert_allclose(per,
                             np.where(where[:, 0], -lp[:, 0] * 4 / nn[where[:, 0], 0].sum(), 0),
                             rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Generic properties of every registered pairwise objective.

CHOSEN_UP_RAISES_LOSS = {"apo_down"}  # APO-down pushes both log-ratios down by design.
REJECTED_FREE = {"sft"}  # sft ignores y_l.


@pytest.mark.parametrize("name", PAIRWISE)
def test_gradient_signs(name):
  # The model prefers the rejected response: lp_w < lp_l, ρ_w = −10, ρ_l = +10 (βh = −2).
  lp, _, n, extra = _data(30)
  lp = jnp.asarray(np.sort(lp, axis=-1), jnp.float32)  # slot 0 the lower log-prob
  lr = lp + jnp.array([10.0, -10.0])
  g = jax.grad(lambda x: _call(name, x, lr, lengths=n, extras=extra))(lp)
  if name in CHOSEN_UP_RAISES_LOSS:
    assert np.all(g[:, 0] > 0), g
  else:
    assert np.all(g[:, 0] < 0), g
  if name in REJECTED_FREE:
    assert np.all(g[:, 1] == 0)
  else:
    assert np.all(g[:, 1] > 0), g


def test_discopop_is_not_monotone_near_zero_but_is_away_from_it():
  # dℓ/dz at z = 0, τ = 0.05: −(σ'(0)/τ)·ln 2 − σ(0)² + σ'(0)/τ − σ(0) = −3.466 − .25 + 5 − .5
  # = +0.784 (the known bump of the discovered loss); at z = ±1 the slope is negative.
  dz = jax.grad(lambda z: pairwise.discopop(jnp.stack([z, 0.0]), jnp.zeros(2), beta=1.0))
  assert float(dz(0.0)) == pytest.approx(-5 * math.log(2) - 0.25 + 5 - 0.5, rel=1e-5)
  assert float(dz(1.0)) < 0 and float(dz(-1.0)) < 0


@pytest.mark.parametrize("name", PAIRWISE)
def test_masked_and_tied_pairs_contribute_nothing(name):
  lp, lr, n, extra = _data(31)
  lp[0], lr[0] = [5e3, -7e3], [-4e3, 9e3]  # garbage in the masked pair
  where = np.ones_like(lp, bool)
  where[0, 1] = False
  sub = {k: v[1:] for k, v in extra.items()}
  want = _call(name, jnp.asarray(lp[1:]), jnp.asarray(lr[1:]), lengths=n[1:], extras=sub)
  got, g = jax.value_and_grad(lambda x: _call(name, x, jnp.asarray(lr), where=where, lengths=n,
                                              extras=extra))(jnp.asarray(lp))
  assert float(got) == pytest.approx(float(want), rel=1e-5, abs=1e-6)
  np.testing.assert_array_equal(g[0], [0.0, 0.0])
  labels = np.tile([1.0, 0.0], (len(lp), 1))
  labels[0] = [0.5, 0.5]  # tie → no pair
  got = _call(name, jnp.asarray(lp), jnp.asarray(lr), labels, lengths=n, extras=extra)
  assert float(got) == pytest.approx(float(want), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", PAIRWISE)
def test_all_masked_is_zero_with_finite_gradients(name):
  lp, lr, n, extra = _data(32)
  where = np.zeros_like(lp, bool)
  val, g = jax.value_and_grad(lambda x: _call(name, x, jnp.asarray(lr), where=where, lengths=n,
                                              extras=extra))(jnp.asarray(lp))
  assert float(val) == 0.0
  assert np.all(np.isfinite(g))


@pytest.mark.parametrize("name", PAIRWISE)
def test_labels_order_swapped_layouts(name):
  lp, lr, n, extra = _data(33)
  want = _call(name, jnp.asarray(lp), jnp.asarray(lr), lengths=n, extras=extra)
  swapped = _call(name, jnp.asarray(lp[:, ::-1]), jnp.asarray(lr[:, ::-1]),
                  jnp.asarray([0.0, 1.0]), lengths=n[:, ::-1], extras=extra)
  assert float(swapped) == pytest.approx(float(want), rel=1e-6)


@pytest.mark.parametrize("name", PAIRWISE)
def test_reductions_and_transformations(name):
  lp, lr, n, extra = _data(34)
  call = functools.partial(_call, name, lengths=n, extras=extra)
  lp, lr = jnp.asarray(lp, jnp.float32), jnp.asarray(lr, jnp.float32)
  mean = call(lp, lr)
  per = call(lp, lr, reduce_fn=None)
  assert per.shape == lp.shape[:-1]
  total = call(lp, lr, reduce_fn=jnp.sum)
  s, c = call(lp, lr, reduce_fn=losses.sum_and_count)
  assert float(jnp.sum(per)) == pytest.approx(float(total), rel=1e-5)
  assert float(s) == pytest.approx(float(total), rel=1e-5) and float(c) == len(lp)
  assert float(total / len(lp)) == pytest.approx(float(mean), rel=1e-5)
  # jit(vmap) over an outer batch axis equals the eager loop over it.
  stack = lambda x: jnp.stack([x, x[::-1]])  # noqa: E731
  ext = {k: np.stack([v, v[::-1]]) for k, v in extra.items()}
  out = jax.jit(jax.vmap(lambda a, b, m, e: _call(name, a, b, lengths=m, extras=e)))(
      stack(lp), stack(lr), stack(jnp.asarray(n)), ext)
  flipped = _call(name, lp[::-1], lr[::-1], lengths=n[::-1],
                  extras={k: v[::-1] for k, v in extra.items()})
  np.testing.assert_allclose(out, [mean, flipped], rtol=1e-5)


@pytest.mark.parametrize("name", PAIRWISE)
def test_large_log_probs_stay_finite(name):
  rng = np.random.default_rng(35)
  lp = -rng.uniform(0.5e4, 1.5e4, size=(6, 2))  # |βh| up to 1e3
  lr = -rng.uniform(0.5e4, 1.5e4, size=(6, 2))
  n = np.full((6, 2), 20)
  extra = {"target_logps": -rng.uniform(1e3, 1e4, size=6)}
  val, g = jax.value_and_grad(lambda x: _call(name, x, jnp.asarray(lr), lengths=n, extras=extra))(
      jnp.asarray(lp, jnp.float32))
  assert np.isfinite(float(val)) and np.all(np.isfinite(g))


@pytest.mark.parametrize("fdiv", sorted(scores.F_DIVERGENCES))
@pytest.mark.parametrize("name", ["dpo", "discopop", "exo_pair", "nca_pair"])
def test_fdiv_and_discopop_overflow_cases_are_finite(name, fdiv):
  # h = ±1e4 (DiscoPOP: m·e^{−z} must not become inf·0) and ρ = ±1e4 for the exponents.
  lp = jnp.array([[1e4, -1e4], [-1e4, 1e4], [0.0, 0.0], [1e4, 1e4], [-1e4, -1e4], [1.0, 2.0]])
  val, g = jax.value_and_grad(lambda x: losses.get(name)(x, jnp.zeros((6, 2)), fdiv=fdiv,
                                                          beta=1.0))(lp)
  assert np.isfinite(float(val)) and np.all(np.isfinite(g))


# ------------------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize("name,hp,match", [
    ("rdpo", {"label_smoothing": 0.5}, "rdpo: label_smoothing"),
    ("rdpo", {"label_smoothing": -0.1}, "rdpo: label_smoothing"),
    ("rdpo", {"label_smoothing": 0.7}, "rdpo: label_smoothing"),
    ("cdpo", {"label_smoothing": 0.5}, "cdpo: label_smoothing"),
    ("dpo", {"label_smoothing": -0.2}, "dpo: label_smoothing"),
    ("exo_pair", {"label_smoothing": 0.0}, "exo_pair: label_smoothing"),
    ("exo_pair", {"label_smoothing": 1.0}, "exo_pair: label_smoothing"),
    ("dpo", {"beta": 0.0}, "dpo: beta"),
    ("discopop", {"tau": -1.0}, "discopop: tau"),
    ("aot_paired", {"label_smoothing": 0.5}, "aot_paired: label_smoothing"),
])
def test_out_of_range_hyper_parameters_raise(name, hp, match):
  with pytest.raises(ValueError, match=match):
    losses.get(name)(LP, LR, lengths=LEN, **hp)


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match=r"dpo: pairwise objectives take \[\.\.\., 2\]"):
    pairwise.dpo(jnp.zeros((3, 3)), jnp.zeros((3, 3)))
  with pytest.raises(ValueError, match="dpo: where has shape"):
    pairwise.dpo(jnp.zeros((3, 2)), jnp.zeros((3, 2)), where=jnp.ones((4, 2), bool))
  with pytest.raises(ValueError, match="ipo_mean: `lengths`"):
    pairwise.ipo_mean(LP, LR, lengths=None)
  with pytest.raises(ValueError, match="dpo: `ref_logps`"):
    pairwise.dpo(LP, None)
  with pytest.raises(ValueError, match="aot_paired: AOT takes no weights"):
    pairwise.aot_paired(LP, LR, weights=jnp.ones(2))


def test_pair_to_list_and_registry():
  x, labels = pairwise.pair_to_list(jnp.array([-1.0, -3.0]), jnp.array([-2.0, -4.0]))
  np.testing.assert_array_equal(x, [[-1.0, -2.0], [-3.0, -4.0]])
  np.testing.assert_array_equal(labels, [[1.0, 0.0], [1.0, 0.0]])
  assert losses.get("ipo") is pairwise.ipo_mean
  assert losses.get("sigmoid_norm") is pairwise.ln_dpo
  assert losses.spec("ipo_mean").needs_lengths and losses.spec("ln_dpo").needs_lengths
  assert not losses.spec("slic_hf").needs_reference
  assert losses.spec("slic_hf").extra_inputs == ("target_logps",)
  sp = losses.spec("bco_pair_shift")
  assert sp.stateful and sp.init_state() == pairwise.running_moments_init()
