"""Tests of the listwise preference objectives (alignment/losses/listwise.py)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment import losses
from alignment.losses import listwise as lw

LIPO_CONSTANT = 1.0 / math.log(2.0) - 1.0 / math.log(3.0)  # |2^1 - 2^0|·|1/ln 2 - 1/ln 3|
softplus = lambda x: np.logaddexp(0.0, x)
B, K, T, D = 3, 4, 6, 3


def _lists(seed, *, levels=4, sorted_labels=False):
  rng = np.random.default_rng(seed)
  logps = -rng.random((B, K)) * 20.0
  ref = logps + rng.normal(size=(B, K)) * 3.0
  labels = rng.integers(0, levels, size=(B, K)).astype(np.float64)
  if sorted_labels:
    labels = -np.sort(-labels, axis=-1)
  lengths = rng.integers(1, 12, size=(B, K))
  where = np.ones((B, K), bool)
  where[1, -1] = False
  return logps, ref, labels, lengths, where


def _tpo_inputs(seed, shape=(B, K)):
  rng = np.random.default_rng(seed)
  steps = np.tile(np.array([0, 1, 1, 2, 3, 3]), shape + (1,))
  steps[..., 1, -2:] = 0  # response 1 has 2 steps: the cap is 2 steps for every response
  return dict(
      token_logps=-rng.random(shape + (T,)) * 3.0,
      token_ref_logps=-rng.random(shape + (T,)) * 3.0,
      step_ids=steps,
      hidden_states=rng.normal(size=shape + (T, D)),
  )


def _best_first(labels):
  labels = labels.copy()
  labels[..., 0] = labels.max(-1) + 1.0
  return labels


# ----------------------------------------------------------------------------------------------
# Independent float64 numpy references.


def np_lipo(kind, logps, ref, labels, where, beta):
  s = beta * (logps - ref)
  pair_total, pair_count, list_losses = 0.0, 0, []
  for b in range(s.shape[0]):
    idx = np.flatnonzero(where[b])
    sb, yb = s[b, idx], labels[b, idx]
    order = np.argsort(-sb, kind="stable")
    tau = np.empty(len(idx))
    tau[order] = np.arange(1, len(idx) + 1)
    for i in range(len(idx)):
      for j in range(len(idx)):
        if yb[i] > yb[j]:
          d = sb[i] - sb[j]
          value = {"pair_logistic": softplus(-d), "pair_hinge": max(0.0, 1.0 - d),
                   "lambda": abs(2 ** yb[i] - 2 ** yb[j]) * abs(
                       1 / np.log1p(tau[i]) - 1 / np.log1p(tau[j])) * softplus(-d)}.get(kind)
          if value is not None:
            pair_total += value
            pair_count += 1
    if kind == "listmle":
      ordered = sb[np.argsort(-yb, kind="stable")]
      list_losses.append(sum(np.logaddexp.reduce(ordered[r:]) - ordered[r]
                             for r in range(len(ordered))))
    if kind == "softmax":
      p = yb / yb.sum() if yb.sum() else np.full(len(yb), 1 / len(yb))
      list_losses.append(-np.sum(p * (sb - np.logaddexp.reduce(sb))))
  if kind in ("listmle", "softmax"):
    return np.mean(list_losses)
  return pair_total / max(pair_count, 1)


def np_pro(logps, rewards, lengths, where, sft_index=0, sft_weight=0.05, eps=1e-10):
  out = []
  for b in range(logps.shape[0]):
    idx = np.flatnonzero(where[b])
    s = logps[b, idx] / np.maximum(lengths[b, idx], 1)
    r = rewards[b, idx]
    n = len(idx)
    total = 0.0
    for t in range(n - 1):
      gaps = r[t] - r[t + 1:]
      top = gaps.max()
      total += np.log(eps + np.exp(s[t] * top) + np.sum(np.exp(s[t + 1:] * gaps))) - s[t] * top
    out.append(total + sft_weight * (n - 1) ** 2 * -logps[b, sft_index])
  return np.mean(out)


def np_knowpat(logps, labels, lengths, where, padded_length=None):
  """Port of the released `AlignmentTrainer.align_loss` / `sft_loss`, one list at a time."""
  out = []
  for b in range(logps.shape[0]):
    idx = np.flatnonzero(where[b])
    scores = logps[b, idx] / lengths[b, idx]
    n = len(idx)
    maxs, mins = scores.max(), scores.min()
    loss = 0.0
    for i in range(n - 1):
      lossi = np.log(1 + np.exp(-scores[i]))
      for j in range(i + 1, n):
        lossi += np.log(1 + np.exp(scores[j])) / (n - i - 1)
      weight = (scores[i] - mins) / (maxs - mins) if maxs > mins else 0.0
      loss += lossi * weight
    best = idx[np.argmax(labels[b, idx])]
    denominator = lengths[b, best] if padded_length is None else padded_length
    out.append(100.0 * loss / 3 - logps[b, best] / denominator)
  return np.mean(out)


def np_tpo_scores(token_logps, token_ref_logps, step_ids, hidden):
  out = np.zeros(token_logps.shape[:-1])
  for b in range(token_logps.shape[0]):
    n_steps = [len(set(step_ids[b, n][step_ids[b, n] > 0])) for n in range(token_logps.shape[1])]
    cap = min(n_steps)
    for n in range(token_logps.shape[1]):
      num = den = 0.0
      for k in range(1, cap + 1):
        sel, sel0 = step_ids[b, n] == k, step_ids[b, 0] == k
        rho = np.mean(token_logps[b, n, sel] - token_ref_logps[b, n, sel])
        h, h0 = hidden[b, n, sel].mean(0), hidden[b, 0, sel0].mean(0)
        w = 1 + h @ h0 / (np.linalg.norm(h) * np.linalg.norm(h0))
        num, den = num + w * rho, den + w
      out[b, n] = num / den
  return out


# ----------------------------------------------------------------------------------------------
# Hand-worked values and K = 2 reductions (closed forms, independent of `dpo`).


def test_k2_reductions_closed_form():
  logps, ref = jnp.array([[-3.0, -7.0], [-9.0, -4.0]]), jnp.array([[-5.0, -6.0], [-8.0, -8.0]])
  y = jnp.array([[1.0, 0.0], [1.0, 0.0]])
  beta = 0.5
  # h = (lp_w - lp_l) - (lr_w - lr_l): row 0: 4 - 1 = 3; row 1: -5 - 0 = -5.
  h = np.array([3.0, -5.0])
  dpo = np.mean(softplus(-beta * h))  # (softplus(-1.5) + softplus(2.5)) / 2
  for name in ("lipo_pair_logistic", "lipo_listmle", "lipo_softmax", "ranklist_pairs",
               "ranklist_lse"):
    np.testing.assert_allclose(losses.get(name)(logps, ref, y, beta=beta), dpo, rtol=1e-6)
  np.testing.assert_allclose(lw.lipo_lambda(logps, ref, y, beta=beta), LIPO_CONSTANT * dpo,
                             rtol=1e-6)
  np.testing.assert_allclose(lw.lipo_lambda(logps, ref, y, beta=beta, rax_scaled=True),
                             2 * math.log(2.0) * LIPO_CONSTANT * dpo, rtol=1e-6)
  # hinge: max(0, 1 - 1.5) = 0, max(0, 1 + 2.5) = 3.5 -> mean 1.75.
  np.testing.assert_allclose(lw.lipo_pair_hinge(logps, ref, y, beta=beta), 1.75, rtol=1e-6)


def test_pro_hand_value():
  # a = (-2/2, -6/3) = (-1, -2); r = (3, 1): T = 2; ε = 0:
  # ℓ_1 = log(e^{-2} + e^{-4}) + 2 = softplus(-2) = 0.126928; sft = 0.05·1²·2 = 0.1.
  loss = lw.pro(jnp.array([-2.0, -6.0]), None, jnp.array([3.0, 1.0]), lengths=jnp.array([2, 3]),
                epsilon=0.0)
  np.testing.assert_allclose(loss, softplus(-2.0) + 0.1, rtol=1e-6)


def test_knowpat_hand_value():
  # s = (-1, -2); w_0 = 1; align = (softplus(1) + softplus(-2))/3 = (1.313262 + 0.126928)/3;
  # 100·align = 48.006323; sft = -(-2/2) = 1 -> 49.006323.
  loss = lw.knowpat(jnp.array([-2.0, -6.0]), None, jnp.array([1.0, 0.0]),
                    lengths=jnp.array([2, 3]))
  np.testing.assert_allclose(loss, 49.006323, rtol=1e-6)


def _one_step_tpo_inputs():
  # One step of 2 tokens per response; lp - lr = (0.2, 0.4) -> 0.3 and (-0.1, -0.3) -> -0.2.
  return dict(
      token_logps=jnp.array([[-1.0, -0.8, -0.6], [-1.0, -1.1, -1.3]]),
      token_ref_logps=jnp.array([[-5.0, -1.0, -1.0], [-5.0, -1.0, -1.0]]),
      step_ids=jnp.array([[0, 1, 1], [0, 1, 1]]),
      hidden_states=jnp.ones((2, 3, 2)),
  )


def test_tpo_hand_values():
  y = jnp.array([1.0, 0.0])
  inputs = _one_step_tpo_inputs()
  # S = (0.3, -0.2), β = 0.5: 0.532456·softplus(-0.25) = 0.532456·0.575904 = 0.306662.
  np.testing.assert_allclose(lw.tpo(None, None, y, **inputs), LIPO_CONSTANT * softplus(-0.25),
                             rtol=1e-5)
  # Released: pairs (0,1), (1,0): softplus(-0.5) each; (0,0), (1,1): log 2 each;
  # R = (2·0.474077 + 2·0.693147)/2 = 1.167224; L = softplus(-0.5·1.167224) = 0.443326.
  np.testing.assert_allclose(lw.tpo_released(None, None, y, **inputs), 0.4433257, rtol=1e-5)


def test_ranklist_skip_pairs_hand_value():
  # Labels (0, 2, 1): order (1, 2, 0). max_skip = 1: pairs (1,2) and (2,0) only.
  logps, ref, y = jnp.array([1.0, 3.0, 0.0]), jnp.zeros(3), jnp.array([0.0, 2.0, 1.0])
  # s = β·ρ = (1, 3, 0) with β = 1: d(1,2) = 3, d(2,0) = -1;
  # mean = (softplus(-3) + softplus(1)) / 2 = (0.048587 + 1.313262) / 2 = 0.680925.
  expected = (softplus(-3.0) + softplus(1.0)) / 2
  np.testing.assert_allclose(lw.ranklist_pairs(logps, ref, y, beta=1.0, max_skip=1), expected,
                             rtol=1e-6)
  # lse: log(1 + e^{-3} + e^{1}) = log(3.767610) = 1.326439.
  np.testing.assert_allclose(lw.ranklist_lse(logps, ref, y, beta=1.0, max_skip=1),
                             np.log(1.0 + np.exp(-3.0) + np.e), rtol=1e-6)
  # min_gap = 2 keeps only (1, 0).
  np.testing.assert_allclose(lw.ranklist_pairs(logps, ref, y, beta=1.0, min_gap=2.0),
                             softplus(-2.0), rtol=1e-6)


def test_ranklist_max_skip_schedule():
  got = [int(lw.ranklist_max_skip(t, total_steps=100, list_size=5)) for t in (0, 33, 34, 99, 200)]
  # 1 + floor(3·t/100): 1, 1 + floor(0.99) = 1, 1 + floor(1.02) = 2, 1 + floor(2.97) = 3, 4.
  assert got == [1, 1, 2, 3, 4]


def test_labels_from_pairwise_probs():
  probs = jnp.array([[0.5, 0.8, 0.6], [0.2, 0.5, 0.3], [0.4, 0.7, 0.5]])
  # (0.8 + 0.6)/2 = 0.7, (0.2 + 0.3)/2 = 0.25, (0.4 + 0.7)/2 = 0.55.
  np.testing.assert_allclose(lw.labels_from_pairwise_probs(probs), [0.7, 0.25, 0.55], rtol=1e-6)
  np.testing.assert_allclose(
      lw.labels_from_pairwise_probs(probs, where=jnp.array([True, False, True])),
      [0.6, 0.0, 0.4], rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Against numpy references on random inputs.


@pytest.mark.parametrize("kind", ["pair_logistic", "pair_hinge", "lambda", "listmle", "softmax"])
def test_lipo_matches_numpy(kind):
  logps, ref, labels, _, where = _lists(0)
  got = losses.get(f"lipo_{kind}")(jnp.asarray(logps), jnp.asarray(ref), jnp.asarray(labels),
                                    where=jnp.asarray(where), beta=0.3)
  np.testing.assert_allclose(got, np_lipo(kind, logps, ref, labels, where, 0.3), rtol=1e-5)


def test_pro_matches_numpy():
  logps, _, labels, lengths, where = _lists(1, sorted_labels=True)
  for eps in (1e-10, 0.0):
    got = lw.pro(jnp.asarray(logps), None, jnp.asarray(labels), lengths=jnp.asarray(lengths),
                 where=jnp.asarray(where), sft_weight=0.5, epsilon=eps)
    np.testing.assert_allclose(got, np_pro(logps, labels, lengths, where, sft_weight=0.5,
                                           eps=eps), rtol=1e-5)


def test_knowpat_matches_released_code():
  logps, _, labels, lengths, where = _lists(2)
  args = (jnp.asarray(logps), None, jnp.asarray(labels))
  kwargs = dict(lengths=jnp.asarray(lengths), where=jnp.asarray(where))
  np.testing.assert_allclose(lw.knowpat(*args, **kwargs),
                             np_knowpat(logps, labels, lengths, where), rtol=1e-5)
  np.testing.assert_allclose(
      lw.knowpat(*args, **kwargs, sft_padded_mean=True, padded_length=40),
      np_knowpat(logps, labels, lengths, where, padded_length=40), rtol=1e-5)


def test_tpo_matches_numpy():
  inputs = _tpo_inputs(3)
  labels = _best_first(_lists(3)[2])
  s = np_tpo_scores(*(inputs[k] for k in ("token_logps", "token_ref_logps", "step_ids",
                                          "hidden_states")))
  np.testing.assert_allclose(lw.tpo_response_scores(**inputs), s, rtol=1e-5, atol=1e-6)
  beta = 0.5
  expected = np_lipo("lambda", beta * s, np.zeros_like(s), labels, np.ones(s.shape, bool), 1.0)
  np.testing.assert_allclose(lw.tpo(None, None, jnp.asarray(labels), beta=beta, **inputs),
                             expected, rtol=1e-5)
  sign = np.sign(labels[:, :, None] - labels[:, None, :])
  r = softplus(-(s[:, :, None] - s[:, None, :]) * sign).sum((1, 2)) / (K * (K - 1))
  np.testing.assert_allclose(lw.tpo_released(None, None, jnp.asarray(labels), **inputs),
                             np.mean(softplus(-beta * r)), rtol=1e-5)


def test_ranklist_matches_numpy():
  logps, ref, labels, _, where = _lists(4)
  s = 0.1 * (logps - ref)
  pairs, lse = [], []
  for b in range(B):
    idx = np.flatnonzero(where[b])
    order = idx[np.argsort(-labels[b, idx], kind="stable")]
    list_pairs = [(order[r], order[r + k]) for k in (1, 2) for r in range(len(order) - k)
                  if labels[b, order[r]] > labels[b, order[r + k]]]
    pairs += [softplus(-(s[b, i] - s[b, j])) for i, j in list_pairs]
    lse.append(np.log1p(sum(np.exp(-(s[b, i] - s[b, j])) for i, j in list_pairs)))
  args = (jnp.asarray(logps), jnp.asarray(ref), jnp.asarray(labels))
  np.testing.assert_allclose(lw.ranklist_pairs(*args, where=jnp.asarray(where), max_skip=2),
                             np.mean(pairs), rtol=1e-5)
  np.testing.assert_allclose(lw.ranklist_lse(*args, where=jnp.asarray(where), max_skip=2),
                             np.mean(lse), rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Structural properties of every listwise objective.

LISTWISE = losses.names(family="listwise")
POSITIONAL = {"pro", "knowpat"}  # inputs ordered best -> worst by contract
PAIR_BASED = {"lipo_pair_logistic", "lipo_pair_hinge", "lipo_lambda", "ranklist_pairs", "tpo"}


def _call(name, logps, ref, labels, where, lengths, tpo_inputs, **kwargs):
  fn = losses.get(name)
  if name in ("tpo", "tpo_released"):
    return fn(None, None, labels, where=where, **tpo_inputs, **kwargs)
  if name == "lipo_pointwise":
    labels = labels / jnp.max(labels)
  return fn(logps, ref, labels, where=where, lengths=lengths, **kwargs)


def _inputs(name, seed=5, levels=4):
  logps, ref, labels, lengths, where = _lists(seed, levels=levels,
                                              sorted_labels=name in POSITIONAL)
  if name.startswith("tpo"):
    labels = _best_first(labels)
  tpo = {k: jnp.asarray(v) for k, v in _tpo_inputs(seed).items()}
  return (jnp.asarray(logps), jnp.asarray(ref), jnp.asarray(labels), jnp.asarray(where),
          jnp.asarray(lengths), tpo)


def test_registered():
  assert set(LISTWISE) >= {
      "lipo_pair_logistic", "lipo_pair_hinge", "lipo_listmle", "lipo_softmax", "lipo_lambda",
      "lipo_pointwise", "pro", "tpo", "tpo_released", "knowpat", "ranklist_pairs",
      "ranklist_lse"}
  assert losses.get("ranklist") is lw.ranklist_pairs
  assert losses.spec("tpo").extra_inputs == ("token_logps", "token_ref_logps", "step_ids",
                                             "hidden_states")
  assert not losses.spec("pro").needs_reference and losses.spec("pro").needs_lengths


@pytest.mark.parametrize("name", LISTWISE)
def test_padding_leaves_loss_unchanged(name):
  logps, ref, labels, where, lengths, tpo = _inputs(name)
  base = _call(name, logps, ref, labels, where, lengths, tpo)
  pad = lambda a, v: jnp.concatenate([a, jnp.full(a.shape[:-1] + (2,), v, a.dtype)], -1)
  padded_tpo = {k: jnp.concatenate([v, jnp.zeros((B, 2) + v.shape[2:], v.dtype)], 1)
                for k, v in tpo.items()}
  labels_pad = pad(labels, -1.0 if name in POSITIONAL else 0.0)
  got = _call(name, pad(logps, jnp.nan), pad(ref, jnp.nan), labels_pad, pad(where, False),
              pad(lengths, 0), padded_tpo)
  np.testing.assert_allclose(got, base, rtol=1e-5)


@pytest.mark.parametrize("name", [n for n in LISTWISE if n not in POSITIONAL])
def test_permutation_invariance(name):
  logps, ref, labels, where, lengths, tpo = _inputs(name, levels=1000)  # no ties
  perm = np.array([0, 2, 3, 1])  # keeps response 0 first (TPO's best response)
  base = _call(name, logps, ref, labels, where, lengths, tpo)
  got = _call(name, logps[:, perm], ref[:, perm], labels[:, perm], where[:, perm],
              lengths[:, perm], {k: v[:, perm] for k, v in tpo.items()})
  np.testing.assert_allclose(got, base, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(PAIR_BASED))
def test_tied_lists_contribute_nothing(name):
  logps, ref, labels, where, lengths, tpo = _inputs(name)
  tied = labels.at[0].set(labels[0, 0])  # list 0 all tied
  full = _call(name, logps, ref, tied, where, lengths, tpo)
  rest = _call(name, logps[1:], ref[1:], tied[1:], where[1:], lengths[1:],
               {k: v[1:] for k, v in tpo.items()})
  np.testing.assert_allclose(full, rest, rtol=1e-6)


@pytest.mark.parametrize("name", LISTWISE)
def test_all_masked_is_zero_with_finite_grads(name):
  logps, ref, labels, where, lengths, tpo = _inputs(name)
  none = jnp.zeros_like(where)

  def loss(lp, tok):
    return _call(name, lp, ref, labels, none, lengths, {**tpo, "token_logps": tok})

  value, grads = jax.value_and_grad(loss, argnums=(0, 1))(logps, tpo["token_logps"])
  assert float(value) == 0.0
  assert all(np.all(np.isfinite(g)) and np.all(g == 0.0) for g in grads)


# ----------------------------------------------------------------------------------------------
# Validation.


def test_bad_hyper_parameters_and_inputs_raise():
  lp, y = jnp.zeros((2, 3)), jnp.array([[2.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
  with pytest.raises(ValueError, match="lipo_lambda: beta must lie in"):
    lw.lipo_lambda(lp, lp, y, beta=0.0)
  with pytest.raises(ValueError, match="ranklist_pairs: beta"):
    lw.ranklist_pairs(lp, lp, y, beta=-1.0)
  with pytest.raises(ValueError, match="pro: labels must be sorted"):
    lw.pro(lp, None, y[:, ::-1], lengths=jnp.ones((2, 3)))
  with pytest.raises(ValueError, match="pro: sft_index"):
    lw.pro(lp, None, y, lengths=jnp.ones((2, 3)), sft_index=3)
  with pytest.raises(ValueError, match="pro: `lengths`"):
    lw.pro(lp, None, y)
  with pytest.raises(ValueError, match="knowpat: `lengths`"):
    lw.knowpat(lp, None, y)
  with pytest.raises(ValueError, match="knowpat: sft_padded_mean"):
    lw.knowpat(lp, None, y, lengths=jnp.ones((2, 3)), sft_padded_mean=True)
  with pytest.raises(ValueError, match="tpo: `token_logps`"):
    lw.tpo(lp, lp, y)
  with pytest.raises(ValueError, match="response 0 must be valid and the best"):
    lw.tpo(None, None, y[:, ::-1], **_tpo_inputs(0, shape=(2, 3)))
  with pytest.raises(ValueError, match="lipo_softmax|softmax_loss: labels"):
    lw.lipo_softmax(lp, lp, -y)
  with pytest.raises(ValueError, match="lipo_pair_logistic: ref_logps has shape"):
    lw.lipo_pair_logistic(lp, jnp.zeros((2, 4)), y)
  with pytest.raises(ValueError, match="ranklist_pairs: max_skip"):
    lw.ranklist_pairs(lp, lp, y, max_skip=0)
