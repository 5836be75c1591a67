"""Tests of the policy-gradient objectives (clipped surrogate, GRPO family, RLOO, CoPG, Pref-GRPO,
TRPA, A-LoL): hand-worked values, float64 numpy references on seeded random inputs, clipping
properties, masking, gradients.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment import losses
from alignment.losses.advantages import multi_reward_advantages
from alignment.losses import policy_gradient as pg
from tests.references import (
    GROUP_SHAPE, as_float32, group_inputs, np_grpo_advantages, np_rloo)

B, K, T = GROUP_SHAPE


def np_sig(x):
  return 1.0 / (1.0 + np.exp(-x))


def np_softplus(x):
  return np.logaddexp(0.0, x)


# ------------------------------------------------------------------------------------------------
# float64 numpy reference of the clipped surrogate (loops over groups and tokens).


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
# GRPO family and the clipped surrogate.


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
  got = pg.grpo_loss(lp, None, jnp.array([1.0, 0.0]), mask=mask, old_logps=old)
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
  lp, old, ref, mask, where, r = group_inputs(4)
  old = lp + np.random.default_rng(5).normal(0, 0.3, lp.shape)  # ratios on both clip sides
  adv = np_grpo_advantages(r, where)
  want = np_surrogate(lp, old, ref, adv, mask, where, **cfg)
  kw = dict(epsilon_high=cfg.get("eps_high"), delta=cfg.get("delta"),
            beta_kl=cfg.get("beta", 0.0), kl_estimator=cfg.get("est", "k3"),
            importance_sampling_level=cfg.get("level", "token"),
            loss_type=cfg.get("loss_type", "grpo"), max_completion_length=cfg.get("l_max"))
  lp_, old_, ref_, r_ = as_float32(lp, old, ref, r)
  got = pg.grpo_loss(lp_, ref_, r_, mask=mask, old_logps=old_, where=where, **kw)
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
  # sum_and_count gives (sum, count) whose ratio is the mean.
  total, count = pg.grpo_loss(lp_, ref_, r_, mask=mask, old_logps=old_, where=where,
                              reduce_fn=losses.sum_and_count, **kw)
  np.testing.assert_allclose(total / count, want, rtol=2e-5, atol=1e-6)


def test_dr_grpo_is_grpo_without_std_and_with_constant_normaliser():
  lp, old, ref, mask, where, r = group_inputs(6)
  lp_, old_, ref_, r_ = as_float32(lp, old, ref, r)
  want = np_surrogate(lp, old, ref, np_grpo_advantages(r, where, "none"), mask, where,
                      loss_type="dr_grpo")
  got = losses.get("dr_grpo")(lp_, None, r_, mask=mask, old_logps=old_, where=where)
  np.testing.assert_allclose(got, want, rtol=2e-5)


def test_mo_grpo_uses_normalize_then_sum_advantages():
  lp, old, ref, mask, where, _ = group_inputs(7)
  heads = np.random.default_rng(8).normal(size=(B, K, 3)) * np.array([1.0, 10.0, 0.1])
  adv = multi_reward_advantages(jnp.asarray(heads, jnp.float32), where=where,
                                aggregation="normalize_then_sum")
  want = np_surrogate(lp, old, ref, np.asarray(adv, np.float64), mask, where)
  lp_, old_, heads_ = as_float32(lp, old, heads)
  got = pg.mo_grpo(lp_, None, heads_, mask=mask, old_logps=old_, where=where)
  np.testing.assert_allclose(got, want, rtol=2e-5)


def test_ratio_one_gradient_is_policy_gradient():
  # old = sg(lp): ∂L/∂lp_t = −A_i·m_t/Σm for the token-mean aggregation (KL off).
  lp, _, _, mask, where, r = group_inputs(9)
  lp_, r_ = as_float32(lp, r)
  g = jax.grad(lambda x: pg.grpo_loss(x, None, r_, mask=mask, where=where, loss_type="bnpo"))(lp_)
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
  f = lambda x: pg.clipped_surrogate_loss(x, adv, mask=mask, old_logps=old)
  g = float(jax.grad(f)(lp)[0, 0, 0])
  if zero:
    assert g == 0.0
  else:  # d(−r·A)/d lp / 2 sequences = −r·A/2
    np.testing.assert_allclose(g, -math.exp(log_ratio) * advantage / 2, rtol=1e-6)


@pytest.mark.parametrize("name", ["grpo_loss", "dr_grpo", "mo_grpo", "trpa_loss", "alol_seq"])
def test_masked_tokens_and_completions_contribute_nothing(name):
  lp, old, ref, mask, where, r = group_inputs(10)
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
  lp, _, _, mask, _, r = group_inputs(11)
  with pytest.raises(ValueError, match="beta_kl"):
    pg.grpo_loss(*as_float32(lp), None, jnp.asarray(r), mask=mask, beta_kl=0.01)
  with pytest.raises(ValueError, match="loss_type"):
    pg.grpo_loss(*as_float32(lp), None, jnp.asarray(r), mask=mask, loss_type="seq")
  with pytest.raises(ValueError, match="epsilon"):
    pg.grpo_loss(*as_float32(lp), None, jnp.asarray(r), mask=mask, epsilon=1.5)


# ------------------------------------------------------------------------------------------------
# RLOO, CoPG.


def test_reinforce_loss_hand_worked_and_reference():
  # rewards [2, 0], β = 0: A = [2, −2]; ℓ = [−2·(−1), 2·(−3)] = [2, −6], mean −2.
  got = pg.reinforce_loss(jnp.array([-1.0, -3.0]), None, jnp.array([2.0, 0.0]), beta_kl=0.0)
  np.testing.assert_allclose(got, -2.0)
  rng = np.random.default_rng(12)
  lp, ref, r = -rng.uniform(1, 10, (B, K)), -rng.uniform(1, 10, (B, K)), rng.normal(size=(B, K))
  where = np.ones((B, K), bool)
  where[0, 2] = False
  a = np_rloo(r - 0.05 * (lp - ref), where)
  want = np.sum(np.where(where, -a * lp, 0.0)) / where.sum()
  np.testing.assert_allclose(losses.get("rloo")(*as_float32(lp, ref, r), where=where), want,
                             rtol=1e-5)
  # Whitening: the advantages are standardised over the valid completions (Bessel).
  aw = (a[where] - a[where].mean()) / (a[where].std(ddof=1) + 1e-8)
  want = np.mean(-aw * lp[where])
  got = pg.reinforce_loss(*as_float32(lp, ref, r), where=where, normalize_advantages=True)
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
      pg.copg(jnp.zeros(2), jnp.zeros(2), jnp.array([1.0, 0.0]), beta=0.5), 1.0)
  rng = np.random.default_rng(13)
  lp, ref, r = -rng.uniform(1, 5, (B, K)), -rng.uniform(1, 5, (B, K)), rng.normal(size=(B, K))
  where = np.ones((B, K), bool)
  where[1, 1:] = False  # a group with one valid sample: no pair, not counted
  got = pg.copg(*as_float32(lp, ref, r), beta=0.3, where=where)
  np.testing.assert_allclose(got, np_copg(lp, ref, r, where, 0.3), rtol=1e-5)
  # ∂ℓ/∂lp_i = −2β·A^{RLOO}(R_β)_i / #groups (mean over the 2 counted groups).
  g = jax.grad(lambda x: pg.copg(x, *as_float32(ref, r), beta=0.3, where=where))(
      jnp.asarray(lp, jnp.float32))
  want = -2 * 0.3 * np_rloo(r - 0.3 * (lp - ref), where) / 2
  want[1] = 0.0
  np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Pref-GRPO, TRPA.


def test_pref_grpo_rewards_and_advantages():
  # Hard judgements among 3: 0 beats 1, ties 2; 1 beats 2. win = [1.5, 1, 0.5]/2.
  p = jnp.array([[0.0, 1.0, 0.5], [0.0, 0.0, 1.0], [0.5, 0.0, 0.0]])
  np.testing.assert_allclose(pg.pref_grpo_rewards(p), [0.75, 0.5, 0.25], rtol=1e-6)
  rng = np.random.default_rng(14)
  s = rng.normal(size=(B, K))
  where = np.ones((B, K), bool)
  where[2, 0] = False
  got = pg.pref_grpo_rewards(pg.bradley_terry_preferences(jnp.asarray(s)), where=where)
  want = np.zeros((B, K))
  for b in range(B):
    idx = np.flatnonzero(where[b])
    for i in idx:
      want[b, i] = round(np.mean([np_sig(s[b, i] - s[b, j]) for j in idx if j != i]), 3)
  np.testing.assert_allclose(got, want, atol=1e-6)
  a = pg.pref_grpo_advantages(got, where=where)
  np.testing.assert_allclose(a, np.clip(np_grpo_advantages(want, where, eps=1e-8), -5, 5),
                             rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="preferences"):
    pg.pref_grpo_rewards(2.0 * p)


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
  lp, old, ref, mask, where, _ = group_inputs(15)
  levels = np.random.default_rng(16).integers(1, 4, (B, K)).astype(float)
  got = pg.trpa_loss(*as_float32(lp, ref, levels), mask=mask,
                     old_logps=jnp.asarray(old, jnp.float32), where=where)
  np.testing.assert_allclose(got, np_trpa(lp, ref, old, levels, mask, where), rtol=1e-5)
  # All rollouts at one level: the fallback (levels 1 → softplus(−s), others softplus(s)).
  for level in (1.0, 3.0):
    flat = np.full((B, K), level)
    got = pg.trpa_loss(*as_float32(lp, ref, flat), mask=mask,
                       old_logps=jnp.asarray(old, jnp.float32), where=where)
    np.testing.assert_allclose(got, np_trpa(lp, ref, old, flat, mask, where), rtol=1e-5)
  # Unreduced values sum to N times the mean.
  unreduced = pg.trpa_loss(*as_float32(lp, ref, levels), mask=mask, where=where, reduce_fn=None)
  np.testing.assert_allclose(np.sum(unreduced) / where.sum(),
                             pg.trpa_loss(*as_float32(lp, ref, levels), mask=mask, where=where),
                             rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# A-LoL.


def test_alol_family_hand_worked():
  lp, ref, a = jnp.array([-2.0, -3.0]), jnp.array([-4.0, -3.0]), jnp.array([0.5, -1.0])
  # alol: only A > 0 kept; ratio e^2 clipped to 1.9: ℓ = 0.5·1.9·2 = 1.9.
  np.testing.assert_allclose(pg.alol(lp, ref, a), 1.9, rtol=1e-6)
  # ref-free: mean(A·nll) = (0.5·2 + (−1)·3)/2 = −1.
  np.testing.assert_allclose(pg.alol_ref_free(lp, None, a), -1.0, rtol=1e-6)
  # KL: mean_{A>0}(A·nll) + 0.1·mean(lp − lr) = 1 + 0.1·(2 + 0)/2 = 1.1.
  np.testing.assert_allclose(pg.alol_kl(lp, ref, a, beta_kl=0.1), 1.1, rtol=1e-6)
  # seq: tokens lp − lr = [ln 3, ln 0.05] → ratios clipped [1.9, 0.1]; ℓ = 1·(1.9·1 + 0.1·2).
  tok_lp = jnp.array([[-1.0, -2.0]])
  tok_ref = tok_lp - jnp.log(jnp.array([[3.0, 0.05]]))
  got = pg.alol_seq(tok_lp, tok_ref, jnp.array([1.0]), mask=jnp.ones((1, 2), bool))
  np.testing.assert_allclose(got, 2.1, rtol=1e-5)


def test_alol_family_numpy_reference_and_gradients():
  rng = np.random.default_rng(17)
  lp, ref = -rng.uniform(1, 5, (B, K)), -rng.uniform(1, 5, (B, K))
  a = rng.normal(size=(B, K))
  where = np.ones((B, K), bool)
  where[0, 0] = False
  keep = where & (a > 0)
  r = np.clip(np.exp(lp - ref), 0.1, 1.9)
  np.testing.assert_allclose(pg.alol(*as_float32(lp, ref, a), where=where),
                             np.mean(-(a * r * lp)[keep]), rtol=1e-5)
  np.testing.assert_allclose(pg.alol_ref_free(*as_float32(lp), None, jnp.asarray(a), where=where),
                             np.mean(-(a * lp)[where]), rtol=1e-5)
  np.testing.assert_allclose(pg.alol_kl(*as_float32(lp, ref, a), where=where, beta_kl=0.2),
                             np.mean(-(a * lp)[keep]) + 0.2 * np.mean((lp - ref)[where]),
                             rtol=1e-5)
  # The ratio and advantage are constants: ∂ℓ/∂lp = −A·r/|kept| on kept examples, 0 elsewhere.
  g = jax.grad(lambda x: pg.alol(x, *as_float32(ref, a), where=where))(jnp.asarray(lp, jnp.float32))
  np.testing.assert_allclose(g, np.where(keep, -a * r / keep.sum(), 0.0), rtol=1e-5, atol=1e-7)
  tl, _, tr, mask, where_t, _ = group_inputs(18)
  rt = np.clip(np.exp(tl - tr), 0.1, 1.9)
  per_seq = -np.sum(np.where(mask, rt * tl, 0.0), -1) * a
  want = np.mean(per_seq[where_t & (a > 0)])
  np.testing.assert_allclose(pg.alol_seq(*as_float32(tl, tr, a), mask=mask, where=where_t), want,
                             rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# Registry.


def test_registry_entries():
  names = losses.names(family="group")
  for name in ("grpo_loss", "dr_grpo", "mo_grpo", "reinforce_loss", "trpa_loss", "copg", "alol",
               "alol_seq", "alol_ref_free", "alol_kl"):
    assert name in names
  assert losses.get("grpo") is pg.grpo_loss and losses.get("rloo") is pg.reinforce_loss
  assert not losses.spec("grpo_loss").needs_reference
