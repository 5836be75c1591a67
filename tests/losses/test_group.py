"""Tests of the group / on-policy objectives (ALGORITHMS.md §5): hand-worked values, float64
numpy references on seeded random inputs, advantage and clipping properties, masking, gradients.
"""

import collections
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment import losses
from alignment.losses import group as gr

B, K, T = 3, 4, 5


def np_sig(x):
  return 1.0 / (1.0 + np.exp(-x))


def np_softplus(x):
  return np.logaddexp(0.0, x)


def _tokens(seed=0):
  """Token-level inputs [B, K, T] with ragged completions and one padded completion."""
  rng = np.random.default_rng(seed)
  lp = -rng.uniform(0.1, 2.0, (B, K, T))
  old = lp + rng.normal(0, 0.3, (B, K, T))
  ref = lp + rng.normal(0, 0.5, (B, K, T))
  lengths = rng.integers(1, T + 1, (B, K))
  mask = np.arange(T)[None, None, :] < lengths[..., None]
  where = np.ones((B, K), bool)
  where[1, 3] = False
  rewards = rng.normal(size=(B, K))
  return lp, old, ref, mask, where, rewards


def _j(*xs):
  return [jnp.asarray(x, jnp.float32) if np.asarray(x).dtype.kind == "f" else jnp.asarray(x)
          for x in xs]


# ------------------------------------------------------------------------------------------------
# float64 numpy references (loops over groups and tokens, written from ALGORITHMS.md §5).


def np_grpo_advantages(r, where, scale="group", eps=1e-4):
  r = np.asarray(r, np.float64)
  out = np.zeros_like(r)
  valid = where & ~np.isnan(r)
  batch_std = np.std(r[valid], ddof=1)
  for b in range(r.shape[0]):
    v = r[b][valid[b]]
    if v.size == 0:
      continue
    mu = v.mean()
    sd = v.std(ddof=1) if v.size > 1 else 0.0
    div = {"group": sd + eps, "batch": batch_std + eps, "none": 1.0}[scale]
    out[b][valid[b]] = (v - mu) / div
  return out


def np_rloo(r, where):
  out = np.zeros_like(r, dtype=np.float64)
  for b in range(r.shape[0]):
    idx = np.flatnonzero(where[b])
    for i in idx:
      others = [r[b, j] for j in idx if j != i]
      if others:
        out[b, i] = r[b, i] - np.mean(others)
  return out


def np_surrogate(lp, old, ref, adv, mask, where, *, eps=0.2, eps_high=None, delta=None,
                 beta=0.0, est="k3", level="token", loss_type="grpo", l_max=None):
  eps_high = eps if eps_high is None else eps_high
  seq_vals, tok_sum, tok_cnt, n_seq = [], 0.0, 0, 0
  for b in range(lp.shape[0]):
    for i in range(lp.shape[1]):
      if not where[b, i]:
        continue
      n_seq += 1
      m = mask[b, i]
      lr = lp[b, i] - old[b, i]
      if level == "sequence":
        lr = np.full_like(lr, lr[m].mean() if m.any() else 0.0)
      r = np.exp(lr)
      a = adv[b, i]
      r1 = r if delta is None else np.minimum(r, delta)
      ell = -np.minimum(r1 * a, np.clip(r, 1 - eps, 1 + eps_high) * a)
      d = ref[b, i] - lp[b, i]
      kl = {"k1": -d, "k2": 0.5 * d * d, "k3": np.exp(d) - d - 1}[est]
      ell = ell + beta * kl
      s = ell[m].sum()
      tok_sum += s
      tok_cnt += m.sum()
      seq_vals.append(s / max(m.sum(), 1) if loss_type == "grpo" else s / (l_max or T))
  if loss_type in ("bnpo", "dapo"):
    return tok_sum / max(tok_cnt, 1)
  return np.sum(seq_vals) / max(n_seq, 1)


# ------------------------------------------------------------------------------------------------
# Advantages.


def test_grpo_advantages_hand_worked():
  # Group [1, 2, 3, 6]: μ = 3, deviations [−2, −1, 0, 3], Bessel var = (4 + 1 + 0 + 9)/3 = 14/3.
  a = gr.grpo_advantages(jnp.array([1.0, 2.0, 3.0, 6.0]), epsilon=0.0)
  np.testing.assert_allclose(a, np.array([-2, -1, 0, 3]) / math.sqrt(14 / 3), rtol=1e-6)
  # NaN abstains: group [1, NaN, 3] → μ = 2, std = √2, A = [−1/√2, 0, 1/√2].
  a = gr.grpo_advantages(jnp.array([1.0, jnp.nan, 3.0]), epsilon=0.0)
  np.testing.assert_allclose(a, [-1 / math.sqrt(2), 0.0, 1 / math.sqrt(2)], rtol=1e-6)
  # "none": A = r − μ = [−2, −1, 0, 3].
  np.testing.assert_allclose(
      gr.grpo_advantages(jnp.array([1.0, 2.0, 3.0, 6.0]), scale_rewards="none"), [-2, -1, 0, 3])


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_advantages_numpy_reference_and_zero_sum(scale):
  _, _, _, _, where, r = _tokens(1)
  r = r.copy()
  r[2, 1] = np.nan
  got = gr.grpo_advantages(jnp.asarray(r, jnp.float32), where=where, scale_rewards=scale)
  np.testing.assert_allclose(got, np_grpo_advantages(r, where, scale), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.sum(got, axis=-1), 0.0, atol=1e-5)  # per group


def test_grpo_advantages_rejects_single_completion_and_bad_mode():
  with pytest.raises(ValueError, match="K >= 2"):
    gr.grpo_advantages(jnp.ones((3, 1)))
  with pytest.raises(ValueError, match="scale_rewards"):
    gr.grpo_advantages(jnp.ones((3, 2)), scale_rewards="global")


def test_rloo_advantages_hand_worked_reference_zero_sum():
  # [3, 1, 2]: 3 − (1+2)/2 = 1.5, 1 − 2.5 = −1.5, 2 − 2 = 0.
  np.testing.assert_allclose(gr.rloo_advantages(jnp.array([3.0, 1.0, 2.0])), [1.5, -1.5, 0.0])
  _, _, _, _, where, r = _tokens(2)
  got = gr.rloo_advantages(jnp.asarray(r, jnp.float32), where=where)
  np.testing.assert_allclose(got, np_rloo(r, where), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.sum(got, axis=-1), 0.0, atol=1e-5)
  assert float(got[1, 3]) == 0.0  # padded slot


def test_multi_reward_advantages():
  rng = np.random.default_rng(3)
  r = rng.normal(size=(B, K, 2)) * np.array([1.0, 100.0])
  r[0, 1, 0] = np.nan
  r[2, 2, :] = np.nan  # every function abstains
  w = np.array([1.0, 0.5])
  where = np.ones((B, K), bool)
  # sum_then_normalize: nansum of weighted rewards, all-NaN rows → NaN, then group z-score.
  s = np.nansum(r * w, axis=-1)
  s[2, 2] = np.nan
  got = gr.multi_reward_advantages(jnp.asarray(r, jnp.float32), reward_weights=jnp.asarray(w))
  np.testing.assert_allclose(got, np_grpo_advantages(s, where), rtol=1e-4, atol=1e-5)
  # normalize_then_sum: per-function group z-scores, weighted sum, batch z-score (Bessel).
  z = sum(w[f] * np_grpo_advantages(r[..., f], where) for f in range(2))
  ok = ~np.all(np.isnan(r), axis=-1)
  want = np.where(ok, (z - z[ok].mean()) / (z[ok].std(ddof=1) + 1e-4), 0.0)
  got = gr.multi_reward_advantages(jnp.asarray(r, jnp.float32), reward_weights=jnp.asarray(w),
                                   aggregation="normalize_then_sum")
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_zero_std_fraction():
  # Groups [1, 1], [0, 2], [5, 5 (padded)]: the last has one valid reward and is not counted.
  r = jnp.array([[1.0, 1.0], [0.0, 2.0], [5.0, 5.0]])
  where = jnp.array([[True, True], [True, True], [True, False]])
  assert float(gr.zero_std_fraction(r, where=where)) == 0.5


# ------------------------------------------------------------------------------------------------
# KL estimators and the clipped surrogate.


def test_kl_estimators_hand_worked_and_k3_nonnegative():
  # lp = −1, lr = −2: Δ = −1; k1 = 1, k2 = 0.5, k3 = e^{−1} + 1 − 1 = 0.36788.
  lp, lr = jnp.array(-1.0), jnp.array(-2.0)
  assert float(gr.kl_estimate(lp, lr, estimator="k1")) == 1.0
  assert float(gr.kl_estimate(lp, lr, estimator="k2")) == 0.5
  np.testing.assert_allclose(gr.kl_estimate(lp, lr), math.exp(-1.0), rtol=1e-6)
  # low_var_kl clamps k3 at 10: Δ = 5 gives e^5 − 6 = 142.4 → 10.
  assert float(gr.kl_estimate(jnp.array(-6.0), jnp.array(-1.0), estimator="low_var_kl")) == 10.0
  x = jnp.asarray(np.random.default_rng(0).normal(0, 5, (1000,)), jnp.float32)
  assert np.all(np.asarray(gr.kl_estimate(x, jnp.zeros_like(x))) >= 0.0)


def test_grpo_loss_hand_worked():
  # One group, K = 2, rewards [1, 0] → A = ±0.5/(√0.5 + 1e−4) ≈ ±0.70701; old = lp (ratio 1).
  # ℓ_t = −A per token, "grpo": sequence means −A, then mean over the 2 sequences = 0.
  lp = jnp.array([[-1.0, -2.0], [-0.5, -0.5]])
  mask = jnp.array([[True, True], [True, False]])
  assert abs(float(losses.get("grpo")(lp, None, jnp.array([1.0, 0.0]), mask=mask))) < 1e-7
  # With old_logps: seq 0 (A = +a) has ratios [1.5, 1]; 1.5 is clipped to 1.2, so
  # ℓ = [−1.2a, −a], sequence mean −1.1a; seq 1 (A = −a, one token) has ratio 1: ℓ = +a.
  # Mean over the two sequences: (−1.1a + a)/2 = −0.05a = −0.035350.
  old = lp - jnp.array([[math.log(1.5), 0.0], [0.0, 0.0]])
  a = 0.5 / (math.sqrt(0.5) + 1e-4)
  want = 0.5 * (-1.1 * a + a)
  got = gr.grpo_loss(lp, None, jnp.array([1.0, 0.0]), mask=mask, old_logps=old)
  np.testing.assert_allclose(got, want, rtol=1e-5)


CONFIGS = [
    dict(),
    dict(loss_type="bnpo"),
    dict(loss_type="dapo", eps_high=0.28),
    dict(loss_type="dr_grpo", l_max=8),
    dict(delta=1.3, beta=0.04, est="k3"),
    dict(beta=0.1, est="k1", loss_type="bnpo"),
    dict(beta=0.1, est="k2"),
    dict(level="sequence"),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_grpo_loss_numpy_reference(cfg):
  lp, old, ref, mask, where, r = _tokens(4)
  old = lp + np.random.default_rng(5).normal(0, 0.3, lp.shape)  # ratios on both clip sides
  adv = np_grpo_advantages(r, where)
  want = np_surrogate(lp, old, ref, adv, mask, where, **cfg)
  kw = dict(epsilon_high=cfg.get("eps_high"), delta=cfg.get("delta"),
            beta_kl=cfg.get("beta", 0.0), kl_estimator=cfg.get("est", "k3"),
            importance_sampling_level=cfg.get("level", "token"),
            loss_type=cfg.get("loss_type", "grpo"), max_completion_length=cfg.get("l_max"))
  lp_, old_, ref_, r_ = _j(lp, old, ref, r)
  got = gr.grpo_loss(lp_, ref_, r_, mask=mask, old_logps=old_, where=where, **kw)
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
  # sum_and_count gives (sum, count) whose ratio is the mean.
  total, count = gr.grpo_loss(lp_, ref_, r_, mask=mask, old_logps=old_, where=where,
                              reduce_fn=losses.sum_and_count, **kw)
  np.testing.assert_allclose(total / count, want, rtol=2e-5, atol=1e-6)


def test_dr_grpo_is_grpo_without_std_and_with_constant_normaliser():
  lp, old, ref, mask, where, r = _tokens(6)
  lp_, old_, ref_, r_ = _j(lp, old, ref, r)
  want = np_surrogate(lp, old, ref, np_grpo_advantages(r, where, "none"), mask, where,
                      loss_type="dr_grpo")
  got = losses.get("dr_grpo")(lp_, None, r_, mask=mask, old_logps=old_, where=where)
  np.testing.assert_allclose(got, want, rtol=2e-5)


def test_mo_grpo_uses_normalize_then_sum_advantages():
  lp, old, ref, mask, where, _ = _tokens(7)
  heads = np.random.default_rng(8).normal(size=(B, K, 3)) * np.array([1.0, 10.0, 0.1])
  adv = gr.multi_reward_advantages(jnp.asarray(heads, jnp.float32), where=where,
                                   aggregation="normalize_then_sum")
  want = np_surrogate(lp, old, ref, np.asarray(adv, np.float64), mask, where)
  lp_, old_, heads_ = _j(lp, old, heads)
  got = gr.mo_grpo(lp_, None, heads_, mask=mask, old_logps=old_, where=where)
  np.testing.assert_allclose(got, want, rtol=2e-5)


def test_ratio_one_gradient_is_policy_gradient():
  # old = sg(lp): ∂L/∂lp_t = −A_i·m_t/Σm for the token-mean aggregation (KL off).
  lp, _, _, mask, where, r = _tokens(9)
  lp_, r_ = _j(lp, r)
  g = jax.grad(lambda x: gr.grpo_loss(x, None, r_, mask=mask, where=where, loss_type="bnpo"))(lp_)
  valid = mask & where[..., None]
  adv = np_grpo_advantages(r, where)
  want = np.where(valid, -adv[..., None] / valid.sum(), 0.0)
  np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("log_ratio,advantage,zero", [
    (math.log(1.5), 1.0, True),    # A > 0, r > 1 + ε: clipped, no push further up
    (math.log(0.5), 1.0, False),   # A > 0, r < 1 − ε: unclipped, still pushed up
    (math.log(0.5), -1.0, True),   # A < 0, r < 1 − ε: clipped, no push further down
    (math.log(1.5), -1.0, False),  # A < 0, r > 1 + ε: unclipped, still pushed down
])
def test_clipping_stops_gradient_in_the_right_direction(log_ratio, advantage, zero):
  lp = jnp.zeros((1, 2, 1))
  old = lp - jnp.array([[[log_ratio], [0.0]]])
  adv = jnp.array([[advantage, 0.0]])
  mask = jnp.ones((1, 2, 1), bool)
  f = lambda x: gr.clipped_surrogate_loss(x, adv, mask=mask, old_logps=old)
  g = float(jax.grad(f)(lp)[0, 0, 0])
  if zero:
    assert g == 0.0
  else:  # d(−r·A)/d lp / 2 sequences = −r·A/2
    np.testing.assert_allclose(g, -math.exp(log_ratio) * advantage / 2, rtol=1e-6)


@pytest.mark.parametrize("name", ["grpo_loss", "dr_grpo", "mo_grpo", "trpa_loss", "alol_seq"])
def test_masked_tokens_and_completions_contribute_nothing(name):
  lp, old, ref, mask, where, r = _tokens(10)
  valid = mask & where[..., None]
  third = np.stack([r, -r], -1) if name == "mo_grpo" else r
  kw = {"mask": mask, "where": where}
  if name != "alol_seq":
    kw["old_logps"] = jnp.asarray(np.where(valid, old, np.nan), jnp.float32)
  if name in ("grpo_loss", "dr_grpo", "mo_grpo"):
    kw["beta_kl"] = 0.1
  fn = losses.get(name)
  ref_ = jnp.asarray(np.where(valid, ref, np.nan), jnp.float32)
  f = lambda x: fn(x, ref_, jnp.asarray(third, jnp.float32), **kw)
  clean = f(jnp.asarray(lp, jnp.float32))
  value, grad = jax.value_and_grad(f)(jnp.asarray(np.where(valid, lp, np.nan), jnp.float32))
  np.testing.assert_allclose(value, clean, rtol=1e-6)
  assert np.isfinite(value) and np.all(np.isfinite(grad))
  assert np.all(np.asarray(grad)[~valid] == 0.0)
  # Everything masked: 0 with finite gradients.
  value, grad = jax.value_and_grad(lambda x: fn(x, ref_, jnp.asarray(third, jnp.float32),
                                                **{**kw, "where": np.zeros_like(where)}))(
                                                    jnp.asarray(lp, jnp.float32))
  assert float(value) == 0.0 and np.all(np.isfinite(grad))


def test_reference_needed_only_with_kl():
  lp, _, _, mask, _, r = _tokens(11)
  with pytest.raises(ValueError, match="beta_kl"):
    gr.grpo_loss(*_j(lp), None, jnp.asarray(r), mask=mask, beta_kl=0.01)
  with pytest.raises(ValueError, match="loss_type"):
    gr.grpo_loss(*_j(lp), None, jnp.asarray(r), mask=mask, loss_type="seq")
  with pytest.raises(ValueError, match="epsilon"):
    gr.grpo_loss(*_j(lp), None, jnp.asarray(r), mask=mask, epsilon=1.5)


# ------------------------------------------------------------------------------------------------
# RLOO, CoPG.


def test_reinforce_loss_hand_worked_and_reference():
  # rewards [2, 0], β = 0: A = [2, −2]; ℓ = [−2·(−1), 2·(−3)] = [2, −6], mean −2.
  got = gr.reinforce_loss(jnp.array([-1.0, -3.0]), None, jnp.array([2.0, 0.0]), beta_kl=0.0)
  np.testing.assert_allclose(got, -2.0)
  rng = np.random.default_rng(12)
  lp, ref, r = -rng.uniform(1, 10, (B, K)), -rng.uniform(1, 10, (B, K)), rng.normal(size=(B, K))
  where = np.ones((B, K), bool)
  where[0, 2] = False
  a = np_rloo(r - 0.05 * (lp - ref), where)
  want = np.sum(np.where(where, -a * lp, 0.0)) / where.sum()
  np.testing.assert_allclose(losses.get("rloo")(*_j(lp, ref, r), where=where), want, rtol=1e-5)
  # Whitening: the advantages are standardised over the valid completions (Bessel).
  aw = (a[where] - a[where].mean()) / (a[where].std(ddof=1) + 1e-8)
  want = np.mean(-aw * lp[where])
  got = gr.reinforce_loss(*_j(lp, ref, r), where=where, normalize_advantages=True)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def np_copg(lp, ref, r, where, beta):
  vals = []
  for b in range(lp.shape[0]):
    idx = np.flatnonzero(where[b])
    if idx.size < 2:
      continue
    rb = r[b] - beta * (lp[b] - ref[b])
    vals.append(sum((rb[i] - rb[j]) ** 2 for i in idx for j in idx if i > j) / (idx.size - 1))
  return np.mean(vals) if vals else 0.0


def test_copg_hand_worked_reference_and_gradient_is_rloo():
  # R = [1, 0], lp = lr: R_β = [1, 0]; ℓ = (1/1)·(1 − 0)² = 1.
  np.testing.assert_allclose(
      gr.copg(jnp.zeros(2), jnp.zeros(2), jnp.array([1.0, 0.0]), beta=0.5), 1.0)
  rng = np.random.default_rng(13)
  lp, ref, r = -rng.uniform(1, 5, (B, K)), -rng.uniform(1, 5, (B, K)), rng.normal(size=(B, K))
  where = np.ones((B, K), bool)
  where[1, 1:] = False  # a group with one valid sample: no pair, not counted
  got = gr.copg(*_j(lp, ref, r), beta=0.3, where=where)
  np.testing.assert_allclose(got, np_copg(lp, ref, r, where, 0.3), rtol=1e-5)
  # ∂ℓ/∂lp_i = −2β·A^{RLOO}(R_β)_i / #groups (mean over the 2 counted groups).
  g = jax.grad(lambda x: gr.copg(x, *_j(ref, r), beta=0.3, where=where))(jnp.asarray(lp,
                                                                                       jnp.float32))
  want = -2 * 0.3 * np_rloo(r - 0.3 * (lp - ref), where) / 2
  want[1] = 0.0
  np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Pref-GRPO, TRPA.


def test_pref_grpo_rewards_and_advantages():
  # Hard judgements among 3: 0 beats 1, ties 2; 1 beats 2. win = [1.5, 1, 0.5]/2.
  p = jnp.array([[0.0, 1.0, 0.5], [0.0, 0.0, 1.0], [0.5, 0.0, 0.0]])
  np.testing.assert_allclose(gr.pref_grpo_rewards(p), [0.75, 0.5, 0.25], rtol=1e-6)
  rng = np.random.default_rng(14)
  s = rng.normal(size=(B, K))
  where = np.ones((B, K), bool)
  where[2, 0] = False
  got = gr.pref_grpo_rewards(gr.bradley_terry_preferences(jnp.asarray(s)), where=where)
  want = np.zeros((B, K))
  for b in range(B):
    idx = np.flatnonzero(where[b])
    for i in idx:
      want[b, i] = round(np.mean([np_sig(s[b, i] - s[b, j]) for j in idx if j != i]), 3)
  np.testing.assert_allclose(got, want, atol=1e-6)
  a = gr.pref_grpo_advantages(got, where=where)
  np.testing.assert_allclose(a, np.clip(np_grpo_advantages(want, where, eps=1e-8), -5, 5),
                             rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="preferences"):
    gr.pref_grpo_rewards(2.0 * p)


def np_trpa(lp, ref, old, levels, mask, where, beta=0.1, c=2.5, c_tr=0.001):
  s = np.array([[lp[b, i][mask[b, i]].sum() - ref[b, i][mask[b, i]].sum() for i in range(K)]
                for b in range(B)]) / np.maximum(mask.sum(-1), 1)
  terms = []
  for b in range(B):
    for i in range(K):
      for j in range(K):
        if where[b, i] and where[b, j] and levels[b, i] < levels[b, j]:
          ci = c if levels[b, i] == 1 else 1.0
          terms.append(np_softplus(-ci * beta * (s[b, i] - s[b, j])))
  if terms:
    pref = np.mean(terms)
  else:
    pref = np.mean([np_softplus(-s[b, i] if levels[b, i] == 1 else s[b, i])
                    for b in range(B) for i in range(K) if where[b, i]])
  d = old - lp
  k3 = np.clip(np.exp(d) - d - 1, -10, 10)
  tok = mask & where[..., None]
  return pref + c_tr * k3[tok].mean()


def test_trpa_hand_worked_and_reference():
  # Two rollouts, one token each, lp − lr = [1, 0], levels [1, 2]: one pair, c = 2.5, β = 0.1:
  # softplus(−0.25) = ln(1 + e^{−0.25}) = 0.57593; old = lp so the trust-region term is 0.
  lp = jnp.array([[[-1.0], [-2.0]]])
  ref = jnp.array([[[-2.0], [-2.0]]])
  mask = jnp.ones((1, 2, 1), bool)
  got = losses.get("trpa")(lp, ref, jnp.array([[1.0, 2.0]]), mask=mask)
  np.testing.assert_allclose(got, math.log1p(math.exp(-0.25)), rtol=1e-6)
  lp, old, ref, mask, where, _ = _tokens(15)
  levels = np.random.default_rng(16).integers(1, 4, (B, K)).astype(float)
  got = gr.trpa_loss(*_j(lp, ref, levels), mask=mask, old_logps=jnp.asarray(old, jnp.float32),
                     where=where)
  np.testing.assert_allclose(got, np_trpa(lp, ref, old, levels, mask, where), rtol=1e-5)
  # All rollouts at one level: the fallback (levels 1 → softplus(−s), others softplus(s)).
  for level in (1.0, 3.0):
    flat = np.full((B, K), level)
    got = gr.trpa_loss(*_j(lp, ref, flat), mask=mask, old_logps=jnp.asarray(old, jnp.float32),
                       where=where)
    np.testing.assert_allclose(got, np_trpa(lp, ref, old, flat, mask, where), rtol=1e-5)
  # Unreduced values sum to N times the mean.
  unreduced = gr.trpa_loss(*_j(lp, ref, levels), mask=mask, where=where, reduce_fn=None)
  np.testing.assert_allclose(np.sum(unreduced) / where.sum(),
                             gr.trpa_loss(*_j(lp, ref, levels), mask=mask, where=where),
                             rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# A-LoL.


def test_alol_family_hand_worked():
  lp, ref, a = jnp.array([-2.0, -3.0]), jnp.array([-4.0, -3.0]), jnp.array([0.5, -1.0])
  # alol: only A > 0 kept; ratio e^2 clipped to 1.9: ℓ = 0.5·1.9·2 = 1.9.
  np.testing.assert_allclose(gr.alol(lp, ref, a), 1.9, rtol=1e-6)
  # ref-free: mean(A·nll) = (0.5·2 + (−1)·3)/2 = −1.
  np.testing.assert_allclose(gr.alol_ref_free(lp, None, a), -1.0, rtol=1e-6)
  # KL: mean_{A>0}(A·nll) + 0.1·mean(lp − lr) = 1 + 0.1·(2 + 0)/2 = 1.1.
  np.testing.assert_allclose(gr.alol_kl(lp, ref, a, beta_kl=0.1), 1.1, rtol=1e-6)
  # seq: tokens lp − lr = [ln 3, ln 0.05] → ratios clipped [1.9, 0.1]; ℓ = 1·(1.9·1 + 0.1·2).
  tok_lp = jnp.array([[-1.0, -2.0]])
  tok_ref = tok_lp - jnp.log(jnp.array([[3.0, 0.05]]))
  got = gr.alol_seq(tok_lp, tok_ref, jnp.array([1.0]), mask=jnp.ones((1, 2), bool))
  np.testing.assert_allclose(got, 2.1, rtol=1e-5)


def test_alol_family_numpy_reference_and_gradients():
  rng = np.random.default_rng(17)
  lp, ref = -rng.uniform(1, 5, (B, K)), -rng.uniform(1, 5, (B, K))
  a = rng.normal(size=(B, K))
  where = np.ones((B, K), bool)
  where[0, 0] = False
  keep = where & (a > 0)
  r = np.clip(np.exp(lp - ref), 0.1, 1.9)
  np.testing.assert_allclose(gr.alol(*_j(lp, ref, a), where=where),
                             np.mean(-(a * r * lp)[keep]), rtol=1e-5)
  np.testing.assert_allclose(gr.alol_ref_free(*_j(lp), None, jnp.asarray(a), where=where),
                             np.mean(-(a * lp)[where]), rtol=1e-5)
  np.testing.assert_allclose(gr.alol_kl(*_j(lp, ref, a), where=where, beta_kl=0.2),
                             np.mean(-(a * lp)[keep]) + 0.2 * np.mean((lp - ref)[where]),
                             rtol=1e-5)
  # The ratio and advantage are constants: ∂ℓ/∂lp = −A·r/|kept| on kept examples, 0 elsewhere.
  g = jax.grad(lambda x: gr.alol(x, *_j(ref, a), where=where))(jnp.asarray(lp, jnp.float32))
  np.testing.assert_allclose(g, np.where(keep, -a * r / keep.sum(), 0.0), rtol=1e-5, atol=1e-7)
  tl, _, tr, mask, where_t, _ = _tokens(18)
  rt = np.clip(np.exp(tl - tr), 0.1, 1.9)
  per_seq = -np.sum(np.where(mask, rt * tl, 0.0), -1) * a
  want = np.mean(per_seq[where_t & (a > 0)])
  np.testing.assert_allclose(gr.alol_seq(*_j(tl, tr, a), mask=mask, where=where_t), want,
                             rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# SPPO square, GPO, ONPO, HyPO.


def np_square(lp, ref, p, where, beta):
  per = np.sum(np.where(where, (lp - ref - (p - 0.5) / beta) ** 2, 0.0), -1)
  return per[where.any(-1)].mean()


def test_sppo_square_hand_worked_reference_and_hard_reduction():
  # ρ = [1, −1], p = [0.75, 0.25], β = 0.5: targets ±0.5 → (0.5)² + (−0.5)² = 0.5.
  got = gr.sppo_square(jnp.array([0.0, -2.0]), jnp.array([-1.0, -1.0]), jnp.array([0.75, 0.25]),
                       beta=0.5)
  np.testing.assert_allclose(got, 0.5, rtol=1e-6)
  rng = np.random.default_rng(19)
  lp, ref, p = -rng.uniform(1, 5, (B, K)), -rng.uniform(1, 5, (B, K)), rng.random((B, K))
  where = np.ones((B, K), bool)
  where[1] = False
  np.testing.assert_allclose(gr.sppo_square(*_j(lp, ref, p), where=where, beta=0.1),
                             np_square(lp, ref, p, where, 0.1), rtol=1e-5)
  # p = [1, 0] on pairs is SPPO-hard.
  pair_lp, pair_ref = _j(lp[:, :2], ref[:, :2])
  np.testing.assert_allclose(
      gr.sppo_square(pair_lp, pair_ref, jnp.array([1.0, 0.0]), beta=0.1),
      losses.get("sppo_hard")(pair_lp, pair_ref, jnp.array([1.0, 0.0]), beta=0.1), rtol=1e-5)


def test_gpo_targets_and_loss():
  # S = [[0, 2, 1], [1, 0, 0], [3, 1, 0]]: P̂ = S − Sᵀ = [[0, 1, −2], [−1, 0, −1], [2, 1, 0]],
  # p = row sums / 3 = [−1/3, −2/3, 1]; RM scores [0.2, 0.9, −1]: chosen 1, rejected 2.
  s = jnp.array([[0.0, 2.0, 1.0], [1.0, 0.0, 0.0], [3.0, 1.0, 0.0]])
  rm = jnp.array([0.2, 0.9, -1.0])
  chosen, rejected, p = gr.gpo_targets(s, rm)
  np.testing.assert_allclose(p, [-1 / 3, -2 / 3, 1.0], rtol=1e-6)
  assert chosen.tolist() == [False, True, False] and rejected.tolist() == [False, False, True]
  lp, ref = jnp.array([-1.0, -2.0, -3.0]), jnp.array([-1.5, -1.0, -3.0])
  # ρ_w = −1, target (−2/3 − ½)/0.1 = −11.667; ρ_l = 0, target (1 − ½)/0.1 = 5.
  want = (-1 + 35 / 3) ** 2 + 5.0**2
  np.testing.assert_allclose(gr.gpo(lp, ref, rm, preference_scores=s, beta=0.1), want, rtol=1e-5)
  # All RM scores tied: no chosen/rejected pair, the list contributes nothing.
  assert float(gr.gpo(lp, ref, jnp.zeros(3), preference_scores=s)) == 0.0


def test_onpo_optimistic_target():
  rng = np.random.default_rng(20)
  lp, ref = -rng.uniform(1, 5, (B, K)), -rng.uniform(1, 5, (B, K))
  p, p_prev = rng.random((B, K)), rng.random((B, K))
  where = np.ones((B, K), bool)
  got = gr.onpo(*_j(lp, ref, p), prev_win_probs=jnp.asarray(p_prev, jnp.float32), beta=0.2)
  np.testing.assert_allclose(got, np_square(lp, ref, 2 * p - p_prev, where, 0.2), rtol=1e-5)
  # p_prev = p: plain SPPO square.
  same = gr.onpo(*_j(lp, ref, p), prev_win_probs=jnp.asarray(p, jnp.float32), beta=0.2)
  np.testing.assert_allclose(same, gr.sppo_square(*_j(lp, ref, p), beta=0.2), rtol=1e-5)


def test_hypo_value_and_gradient():
  rng = np.random.default_rng(21)
  lp, ref = -rng.uniform(1, 5, (B, 2)), -rng.uniform(1, 5, (B, 2))
  olp, oref = -rng.uniform(1, 5, (B, K)), -rng.uniform(1, 5, (B, K))
  beta, lam = 0.1, 0.5
  h = (lp[:, 0] - ref[:, 0]) - (lp[:, 1] - ref[:, 1])
  a = np_rloo(olp - oref, np.ones((B, K), bool))
  want = np.mean(np_softplus(-beta * h)) + lam * np.mean(np.mean(a * olp, -1))
  f = lambda x: gr.hypo(*_j(lp, ref), jnp.array([1.0, 0.0]), online_logps=x,
                        online_ref_logps=jnp.asarray(oref, jnp.float32), beta=beta,
                        kl_weight=lam)
  value, g = jax.value_and_grad(f)(jnp.asarray(olp, jnp.float32))
  np.testing.assert_allclose(value, want, rtol=1e-5)
  # Score-function gradient: λ·(1/k)·(ρ_i − mean_{j≠i} ρ_j)/B.
  np.testing.assert_allclose(g, lam * a / K / B, rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------------------------------------
# DR-PO reset, RefAlign reward.


def test_drpo_reset_and_rollin_mask():
  prompts = jnp.array([[7, 8, 0], [9, 0, 0], [5, 6, 4]])
  plen = jnp.array([2, 1, 3])
  resp = jnp.array([[1, 2, 3, 0], [4, 0, 0, 0], [1, 1, 2, 3]])
  rlen = jnp.array([3, 1, 4])
  reset = jax.jit(gr.drpo_reset, static_argnames="p_reset")
  tokens, lengths, prefix = jax.device_get(reset(jax.random.PRNGKey(0), prompts, plen, resp, rlen))
  assert prefix[1] == 0  # len < 2: no reset
  assert 1 <= prefix[0] <= 2 and 1 <= prefix[2] <= 3
  for b in range(3):
    want = np.asarray(prompts)[b, :plen[b]].tolist() + np.asarray(resp)[b, :prefix[b]].tolist()
    assert tokens[b].tolist() == want + [0] * (7 - len(want))
  np.testing.assert_array_equal(lengths, np.asarray(plen) + prefix)
  # p_reset = 0: no resets; prefix lengths are uniform on 1..len−1 over many keys.
  assert np.all(np.asarray(reset(jax.random.PRNGKey(1), prompts, plen, resp, rlen,
                                 p_reset=0.0)[2]) == 0)
  draws = jax.jit(jax.vmap(lambda k: gr.drpo_reset(k, prompts, plen, resp, rlen)[2]))(
      jax.random.split(jax.random.PRNGKey(2), 3000))
  counts = np.bincount(np.asarray(draws[:, 2]), minlength=4)
  assert counts[0] == 0 and counts[4:].sum() == 0
  np.testing.assert_allclose(counts[1:4] / 3000, 1 / 3, atol=0.04)
  # Rollin mask drops the first `prefix` completion tokens.
  cm = jnp.array([[0, 0, 1, 1, 1, 0]], bool)
  assert gr.rollin_mask(cm, jnp.array([2])).tolist() == [[False] * 4 + [True, False]]


def test_refalign_reward_token_f1():
  # y = [1, 2, 2, 3], ref = [2, 1, 4]: overlap {1, 2} = 2 → F1 = 2·2/(4 + 3) = 4/7.
  np.testing.assert_allclose(gr.refalign_reward(jnp.array([1, 2, 2, 3]), jnp.array([2, 1, 4])),
                             4 / 7, rtol=1e-6)
  rng = np.random.default_rng(22)
  y, ref = rng.integers(1, 5, (6, 7)), rng.integers(1, 5, (6, 5))
  my, mr = rng.random((6, 7)) < 0.8, rng.random((6, 5)) < 0.8
  want = []
  for b in range(6):
    cy, cr = collections.Counter(y[b][my[b]]), collections.Counter(ref[b][mr[b]])
    o = sum(min(c, cr[v]) for v, c in cy.items())
    want.append(2 * o / max(my[b].sum() + mr[b].sum(), 1))
  got = gr.refalign_reward(jnp.asarray(y), jnp.asarray(ref), mask=jnp.asarray(my),
                           reference_mask=jnp.asarray(mr))
  np.testing.assert_allclose(got, want, rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Registry, jit/vmap of the helpers.


def test_registry_entries():
  names = losses.names(family="group")
  for name in ("grpo_loss", "dr_grpo", "mo_grpo", "reinforce_loss", "trpa_loss", "copg", "alol",
               "alol_seq", "alol_ref_free", "alol_kl", "sppo_square", "gpo", "onpo", "hypo"):
    assert name in names
  assert losses.get("grpo") is gr.grpo_loss and losses.get("rloo") is gr.reinforce_loss
  assert not losses.spec("grpo_loss").needs_reference


def test_helpers_under_jit_and_vmap():
  _, _, _, _, where, r = _tokens(23)
  r_ = jnp.asarray(r, jnp.float32)
  for fn in (gr.grpo_advantages, gr.rloo_advantages):
    eager = fn(r_, where=where)
    np.testing.assert_allclose(jax.jit(lambda x, w: fn(x, where=w))(r_, where), eager, rtol=1e-6)
    # Group statistics only: mapping over the groups one at a time gives the same advantages.
    per_group = jax.vmap(lambda x, w: fn(x[None], where=w[None])[0])(r_, jnp.asarray(where))
    np.testing.assert_allclose(per_group, eager, rtol=1e-6)
