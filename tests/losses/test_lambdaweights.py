"""Tests of the lambda weights (alignment/losses/lambdaweights.py)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment.losses import lambdaweights as lw

LOG2_3 = math.log2(3.0)


# ----------------------------------------------------------------------------------------------
# Independent float64 numpy reference (loops; ranks from an explicit stable sort).


def np_ranks(values, valid):
  order = sorted(range(len(values)), key=lambda i: (not valid[i], -values[i] if valid[i] else 0, i))
  ranks = np.empty(len(values))
  ranks[order] = np.arange(1, len(values) + 1)
  return ranks


def np_lambdaweight(kind, scores, labels, where, weights=None, topn=None, normalize=False,
                    light_discount=False):
  out = np.zeros(scores.shape + scores.shape[-1:])
  k = scores.shape[-1]
  d = lambda r: 1.0 / np.log2(1.0 + r)
  for idx in np.ndindex(scores.shape[:-1]):
    s, y, m = scores[idx], labels[idx], where[idx]
    g = 2.0 ** y - 1.0
    if weights is not None:
      g = g * weights[idx]
    tau = np_ranks(s, m)
    if normalize:
      ideal = np_ranks(np.where(m, g, 0.0), m)
      idcg = sum(g[i] * d(ideal[i]) for i in range(k)
                 if m[i] and (topn is None or ideal[i] <= topn))
      g = g / (idcg if idcg != 0 else 1.0)
    for i in range(k):
      for j in range(k):
        if not (m[i] and m[j] and y[i] > y[j]):
          continue
        if kind == "labeldiff":
          out[idx + (i, j)] = abs(y[i] - y[j])
        elif kind == "lipo":
          # Paper gain 2^y; with item weights the documented gain (2^y - 1)·w.
          gi, gj = (2.0 ** y[i], 2.0 ** y[j]) if weights is None else (g[i], g[j])
          out[idx + (i, j)] = abs(gi - gj) * abs(
              1 / np.log(1 + tau[i]) - 1 / np.log(1 + tau[j]))
        elif kind == "dcg":
          di = d(tau[i]) if topn is None or tau[i] <= topn else 0.0
          dj = d(tau[j]) if topn is None or tau[j] <= topn else 0.0
          out[idx + (i, j)] = k * abs(g[i] - g[j]) * abs(di - dj)
        elif kind == "dcg2":
          delta = abs(tau[i] - tau[j])
          disc = d(delta) if light_discount else abs(d(delta) - d(delta + 1))
          worst = max(tau[i], tau[j])
          if topn is not None and worst > topn:
            disc /= 1.0 - d(worst)
          out[idx + (i, j)] = k * abs(g[i] - g[j]) * disc
  return out


def _random(seed, shape=(3, 5)):
  rng = np.random.default_rng(seed)
  scores = np.round(rng.normal(size=shape), 1)  # rounding makes score ties likely
  labels = rng.integers(0, 4, size=shape).astype(np.float64)
  where = rng.random(shape) > 0.2
  weights = rng.random(shape) + 0.5
  return scores, labels, where, weights


# ----------------------------------------------------------------------------------------------
# Hand-worked values.


def test_dcg_and_dcg2_hand_values():
  s, y = jnp.array([3.0, 2.0, 1.0]), jnp.array([2.0, 0.0, 1.0])
  # Ranks (1, 2, 3); gains 2^y - 1 = (3, 0, 1); d = (1, 1/log2 3 = 0.630930, 0.5); K = 3.
  # dcg: (0,1): 3·3·(1 - 0.630930) = 3.321630; (0,2): 3·2·0.5 = 3; (2,1): 3·1·0.130930 = 0.392789.
  expected = np.zeros((3, 3))
  expected[0, 1], expected[0, 2], expected[2, 1] = 9 * (1 - 1 / LOG2_3), 3.0, 3 * (1 / LOG2_3 - 0.5)
  np.testing.assert_allclose(lw.dcg_lambdaweight(s, y), expected, rtol=1e-6)
  # dcg2: δ(0,1) = 1: 3·3·|d(1) - d(2)| = 3.321630; δ(0,2) = 2: 3·2·|d(2) - d(3)| = 0.785578;
  # δ(2,1) = 1: 3·1·|d(1) - d(2)| = 1.107210.
  expected2 = np.zeros((3, 3))
  expected2[0, 1] = 9 * (1 - 1 / LOG2_3)
  expected2[0, 2] = 6 * (1 / LOG2_3 - 0.5)
  expected2[2, 1] = 3 * (1 - 1 / LOG2_3)
  np.testing.assert_allclose(lw.dcg2_lambdaweight(s, y), expected2, rtol=1e-6)


def test_labeldiff_hand_value():
  got = lw.labeldiff_lambdaweight(jnp.zeros(3), jnp.array([2.0, 0.5, 1.0]))
  np.testing.assert_allclose(got, [[0, 1.5, 1.0], [0, 0, 0], [0, 0.5, 0]])


def test_lipo_k2_constant_whichever_ranks_first():
  # |2^1 - 2^0|·|1/ln 2 - 1/ln 3| = 1·(1.442695 - 0.910239) = 0.532456.
  constant = 1.0 / math.log(2.0) - 1.0 / math.log(3.0)
  y = jnp.array([1.0, 0.0])
  for s in ([2.0, -1.0], [-1.0, 2.0], [0.0, 0.0]):
    np.testing.assert_allclose(lw.lipo_lambdaweight(jnp.array(s), y), [[0, constant], [0, 0]],
                               rtol=1e-6)
  # Rax scaling: K·ln 2·Δ = 2·0.693147·0.532456 = 0.738140.
  np.testing.assert_allclose(lw.lipo_lambdaweight(jnp.zeros(2), y, rax_scaled=True)[0, 1],
                             2 * math.log(2.0) * constant, rtol=1e-6)


def test_ranks_ties_by_index_and_invalid_last():
  # Scores tied: item 0 ranks 1, item 1 ranks 2 -> Δ(1, 0) uses d(2) - d(1) whatever the order.
  y = jnp.array([0.0, 1.0, 0.0])
  where = jnp.array([True, True, False])
  got = lw.lipo_lambdaweight(jnp.array([0.5, 0.5, 9.0]), y, where=where)
  np.testing.assert_allclose(got[1, 0], 1 / math.log(2) - 1 / math.log(3), rtol=1e-6)
  # The masked item (score 9) does not take rank 1, and its pairs are 0.
  assert np.all(got[:, 2] == 0) and np.all(got[2, :] == 0)


def test_topn_normalize_hand_value():
  # Labels (1, 0, 1), scores (0, 2, 1): ranks (3, 1, 2); gains (1, 0, 1); topn = 2.
  # Ideal DCG@2 = 1·d(1) + 1·d(2) = 1.630930. d@2 by current rank: (0, 1, 0.630930).
  # (0,1): K·|1 - 0|/1.630930·|0 - 1| = 3/1.630930 = 1.839441;
  # (2,1): 3/1.630930·|0.630930 - 1| = 0.678853.
  got = lw.dcg_lambdaweight(jnp.array([0.0, 2.0, 1.0]), jnp.array([1.0, 0.0, 1.0]), topn=2,
                            normalize=True)
  idcg = 1 + 1 / LOG2_3
  np.testing.assert_allclose(got[0, 1], 3 / idcg, rtol=1e-6)
  np.testing.assert_allclose(got[2, 1], 3 / idcg * (1 - 1 / LOG2_3), rtol=1e-6)
  assert float(got[0, 2]) == 0.0  # tied labels


# ----------------------------------------------------------------------------------------------
# Against numpy and rax.

CASES = [
    ("labeldiff", lw.labeldiff_lambdaweight, {}),
    ("lipo", lw.lipo_lambdaweight, {}),
    ("dcg", lw.dcg_lambdaweight, {}),
    ("dcg", lw.dcg_lambdaweight, dict(topn=2)),
    ("dcg", lw.dcg_lambdaweight, dict(topn=3, normalize=True)),
    ("dcg2", lw.dcg2_lambdaweight, {}),
    ("dcg2", lw.dcg2_lambdaweight, dict(light_discount=True)),
    ("dcg2", lw.dcg2_lambdaweight, dict(topn=2, normalize=True)),
]


@pytest.mark.parametrize("kind,fn,options", CASES)
@pytest.mark.parametrize("use_weights", [False, True])
def test_matches_numpy(kind, fn, options, use_weights):
  s, y, m, w = _random(1)
  w = w if use_weights and kind != "labeldiff" else None
  got = fn(jnp.asarray(s), jnp.asarray(y), where=jnp.asarray(m),
           weights=None if w is None else jnp.asarray(w), **options)
  np.testing.assert_allclose(got, np_lambdaweight(kind, s, y, m, w, **options), rtol=1e-5,
                             atol=1e-6)


def test_lipo_is_dcg_over_k_ln2():
  s, y, m, w = (jnp.asarray(a) for a in _random(2))
  k = s.shape[-1]
  dcg = lw.dcg_lambdaweight(s, y, where=m, weights=w)
  np.testing.assert_allclose(k * math.log(2.0) * lw.lipo_lambdaweight(s, y, where=m, weights=w),
                             dcg, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(lw.lipo_lambdaweight(s, y, where=m, weights=w, rax_scaled=True),
                                dcg)


rax = pytest.importorskip("rax")


@pytest.mark.parametrize("name,options", [
    ("labeldiff_lambdaweight", {}),
    ("dcg_lambdaweight", {}),
    ("dcg_lambdaweight", dict(topn=2, normalize=True)),
    ("dcg2_lambdaweight", dict(topn=3)),
    ("dcg2_lambdaweight", dict(light_discount=True, normalize=True)),
])
def test_matches_rax_on_valid_pairs(name, options):
  s, y, m, w = (jnp.asarray(a, jnp.float32) for a in _random(3))
  m = m.astype(bool)
  ours = getattr(lw, name)(s, y, where=m, weights=w, **options)
  theirs = getattr(rax, name)(s, y, where=m, weights=w, **options).reshape(ours.shape)
  pairs = (y[..., :, None] > y[..., None, :]) & m[..., :, None] & m[..., None, :]
  np.testing.assert_allclose(ours, jnp.where(pairs, theirs, 0.0), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# Properties.


@pytest.mark.parametrize("fn", [lw.labeldiff_lambdaweight, lw.lipo_lambdaweight,
                                lw.dcg_lambdaweight, lw.dcg2_lambdaweight])
def test_stop_gradient_zero_off_pairs_and_jit(fn):
  s, y, m, _ = (jnp.asarray(a, jnp.float32) for a in _random(4))
  m = m.astype(bool)
  grad = jax.grad(lambda x: jnp.sum(fn(x, y, where=m) * x[..., :, None]))(s)
  # d/dx Σ_ij λ_ij·x_i = Σ_j λ_ij when λ is constant.
  np.testing.assert_allclose(grad, jnp.sum(fn(s, y, where=m), axis=-1), rtol=1e-6)
  out = jax.jit(fn)(s, y, where=m)
  pairs = (y[..., :, None] > y[..., None, :]) & m[..., :, None] & m[..., None, :]
  assert np.all(np.asarray(out)[~np.asarray(pairs)] == 0.0)
  assert np.all(np.asarray(out) >= 0.0)


def test_lipo_invariant_to_positive_beta():
  s, y, m, _ = (jnp.asarray(a) for a in _random(5))
  np.testing.assert_array_equal(lw.lipo_lambdaweight(0.05 * s, y, where=m),
                                lw.lipo_lambdaweight(s, y, where=m))


def test_usable_as_lambdaweight_fn_with_options():
  from alignment.losses import ranking  # pylint: disable=g-import-not-at-top
  s, y = jnp.array([0.0, 2.0, 1.0]), jnp.array([1.0, 0.0, 1.0])
  fn = functools.partial(lw.dcg_lambdaweight, topn=2, normalize=True)
  # Pairs (0,1) and (2,1), λ = 1.839441 and 0.678853 (test_topn_normalize_hand_value); pair
  # losses softplus(2) = 2.126928 and softplus(1) = 1.313262; mean over the 2 pairs.
  expected = (1.8394415 * 2.1269280 + 0.6788527 * 1.3132617) / 2
  np.testing.assert_allclose(ranking.pairwise_logistic_loss(s, y, lambdaweight_fn=fn), expected,
                             rtol=1e-5)
