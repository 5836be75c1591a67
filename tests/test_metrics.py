"""Tests of alignment.metrics: hand-worked values, float64 numpy references, accumulation."""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment import metrics as M

ATOL = 1e-5


def _is_static(value):
  return value is None or isinstance(value, (bool, int, float, str, tuple))


@functools.lru_cache(maxsize=None)
def _compiled(fn, static_items):
  return jax.jit(functools.partial(fn, **dict(static_items)))


def run(fn, *args, **kwargs):
  """Calls a metric under `jit` with its hyper-parameters static.

  One XLA compilation per shape is several times cheaper on CPU than op-by-op dispatch of
  eager mode, which keeps this module fast; `test_jit_matches_eager` covers eager mode.
  """
  static = tuple(sorted((k, v) for k, v in kwargs.items() if _is_static(v)))
  dynamic = {k: v for k, v in kwargs.items() if not _is_static(v)}
  return _compiled(fn, static)(*args, **dynamic)


def _mean(sc):
  return float(M.mean(sc))


def _rng(seed):
  return np.random.default_rng(seed)


def _random_lists(seed, shape=(6, 4), num_labels=3):
  """Float32 log-probs, integer labels (with ties), lengths and a mask with ragged lists."""
  rng = _rng(seed)
  logps = rng.normal(-5.0, 2.0, shape).astype(np.float32)
  ref = (logps + rng.normal(0.0, 1.0, shape)).astype(np.float32)
  labels = rng.integers(0, num_labels, shape).astype(np.float32)
  lengths = rng.integers(1, 9, shape).astype(np.int32)
  where = rng.random(shape) < 0.8
  where[..., :1] = True
  return logps, ref, labels, lengths, where


# ---------------------------------------------------------------------------------------------
# (sum, count) helpers.


def test_sum_count_mean_and_add():
  sc = M.sum_count(jnp.array([1.0, 2.0, jnp.nan, 4.0]), jnp.array([True, True, False, False]))
  assert (float(sc.sum), float(sc.count)) == (3.0, 2.0)  # the NaN slot is masked away
  assert _mean(M.sum_count(jnp.zeros(3), jnp.zeros(3, bool))) == 0.0  # empty set -> 0
  tree = {"a": M.SumCount(jnp.array(3.0), jnp.array(2.0)), "b": jnp.array(7.0)}
  total = M.add(tree, tree)
  assert float(total["a"].sum) == 6.0 and float(total["a"].count) == 4.0
  means = M.mean(total)
  assert float(means["a"]) == 1.5 and float(means["b"]) == 14.0  # non-SumCount leaves pass
  per_axis = M.sum_count(jnp.array([[1.0, 2.0], [3.0, 4.0]]), axis=0)
  np.testing.assert_array_equal(per_axis.sum, [4.0, 6.0])
  np.testing.assert_array_equal(per_axis.count, [2.0, 2.0])


# ---------------------------------------------------------------------------------------------
# §8.1 reward metrics.


def test_reward_metrics_pairs_hand_worked():
  logps = jnp.array([[-1.0, -3.0], [-2.0, -2.0]])
  ref = jnp.array([[-2.0, -2.0], [-1.0, -4.0]])
  labels = jnp.array([[1.0, 0.0], [1.0, 0.0]])
  out = M.mean(run(M.reward_metrics, logps, ref, labels, beta=0.5))
  # rho = [[1, -1], [-1, 2]]; r = 0.5 rho = [[0.5, -0.5], [-0.5, 1.0]].
  expected = {
      "rewards/chosen": (0.5 - 0.5) / 2,  # 0
      "rewards/rejected": (-0.5 + 1.0) / 2,  # 0.25
      "rewards/accuracies": (1 + 0) / 2,  # 0.5 > -0.5 yes, -0.5 > 1.0 no
      "rewards/margins": (1.0 - 1.5) / 2,  # -0.25
      "logps/chosen": (-1.0 - 2.0) / 2,  # -1.5
      "logps/rejected": (-3.0 - 2.0) / 2,  # -2.5
  }
  assert set(out) == set(expected)
  for k, v in expected.items():
    assert float(out[k]) == pytest.approx(v, abs=ATOL), k


def test_reward_accuracy_is_strict():
  # Equal implicit rewards: r_w = r_l = 0, a tie counts as wrong.
  out = M.mean(run(M.reward_metrics, jnp.array([[-1.0, -2.0]]), jnp.array([[-1.0, -2.0]]),
                                jnp.array([[1.0, 0.0]])))
  assert float(out["rewards/accuracies"]) == 0.0


def _reward_metrics_reference(logps, ref, labels, beta, lengths, where):
  """Direct float64 loops over lists and pairs."""
  sums = {k: [0.0, 0] for k in ("rc", "rr", "acc", "marg", "lc", "lr")}
  for b in range(logps.shape[0]):
    idx = [i for i in range(logps.shape[1]) if where[b, i]]
    rho = logps[b].astype(np.float64) - (0.0 if ref is None else ref[b].astype(np.float64))
    r = beta * rho / (1.0 if lengths is None else np.maximum(lengths[b], 1))
    pairs = [(i, j) for i in idx for j in idx if labels[b, i] > labels[b, j]]
    for i, j in pairs:
      sums["acc"][0] += float(r[i] > r[j]); sums["acc"][1] += 1
      sums["marg"][0] += r[i] - r[j]; sums["marg"][1] += 1
    if pairs:
      best = max(idx, key=lambda i: (labels[b, i], -i))
      worst = min(idx, key=lambda i: (labels[b, i], i))
      for key, value in (("rc", r[best]), ("rr", r[worst]), ("lc", logps[b, best]),
                         ("lr", logps[b, worst])):
        sums[key][0] += value; sums[key][1] += 1
  return {k: s / max(c, 1) for k, (s, c) in sums.items()}


@pytest.mark.parametrize("reference_free, use_lengths", [(False, False), (True, True)])
def test_reward_metrics_lists_match_reference(reference_free, use_lengths):
  logps, ref, labels, lengths, where = _random_lists(0)
  ref = None if reference_free else ref
  lengths = lengths if use_lengths else None
  got = M.mean(run(M.reward_metrics, logps, ref, labels, beta=0.3, lengths=lengths, where=where))
  want = _reward_metrics_reference(logps, ref, labels, 0.3, lengths, where)
  names = {"rc": "rewards/chosen", "rr": "rewards/rejected", "acc": "rewards/accuracies",
           "marg": "rewards/margins", "lc": "logps/chosen", "lr": "logps/rejected"}
  for short, name in names.items():
    assert float(got[name]) == pytest.approx(want[short], abs=1e-5), name


# ---------------------------------------------------------------------------------------------
# §8.2 ranking accuracy.


def test_ranking_accuracy_hand_worked():
  logps = jnp.array([[-1.0, -2.0], [-3.0, -1.0], [-2.0, -2.0]])
  labels = jnp.array([[1.0, 0.0]] * 3)
  # correct, wrong, tie (lp_w >= lp_l counts as correct) -> 2/3.
  assert _mean(run(M.ranking_accuracy, logps, labels)) == pytest.approx(2 / 3)
  # Length normalisation: a = [-10/10, -6/3] = [-1, -2] is correct; raw [-10, -6] is wrong.
  lp, n = jnp.array([[-10.0, -6.0]]), jnp.array([[10, 3]])
  assert _mean(run(M.ranking_accuracy, lp, labels[:1])) == 0.0
  assert _mean(run(M.ranking_accuracy, lp, labels[:1], lengths=n)) == 1.0
  # Tied labels form no pair: nothing to count.
  assert float(run(M.ranking_accuracy, lp, jnp.array([[1.0, 1.0]])).count) == 0.0


def test_ranking_accuracy_matches_pair_loop():
  logps, _, labels, lengths, where = _random_lists(1)
  for use_lengths in (False, True):
    n = lengths if use_lengths else None
    s = logps.astype(np.float64) / (1.0 if n is None else np.maximum(n, 1))
    hits = [float(s[b, i] >= s[b, j]) for b in range(6) for i in range(4) for j in range(4)
            if where[b, i] and where[b, j] and labels[b, i] > labels[b, j]]
    got = run(M.ranking_accuracy, logps, labels, lengths=n, where=where)
    assert float(got.count) == len(hits)
    assert _mean(got) == pytest.approx(np.mean(hits), abs=ATOL)


def _rank_max_positions(x):
  """K + 1 − rank_max(x_i), with rank_max computed by sorting (independent of the library)."""
  x = np.asarray(x, np.float64)
  order = np.sort(x)
  rank_max = np.searchsorted(order, x, side="right")  # ascending, ties -> maximum rank
  return len(x) + 1 - rank_max


def test_ranking_accuracy_lists_hand_worked():
  scores = jnp.array([[3.0, 1.0, 3.0], [3.0, 1.0, 3.0], [1.0, 2.0, 3.0]])
  labels = jnp.array([[2.0, 0.0, 2.0], [2.0, 0.0, 1.0], [0.0, 1.0, 2.0]])
  # nu(scores [3,1,3]) = [1,3,1]; labels [2,0,2] -> [1,3,1] match; [2,0,1] -> [1,3,2] no;
  # list 3: [3,2,1] both -> match.  2/3.
  assert _mean(run(M.ranking_accuracy_lists, scores, labels)) == pytest.approx(2 / 3)
  np.testing.assert_array_equal(_rank_max_positions([3.0, 1.0, 3.0]), [1, 3, 1])
  # Masking the mismatching item (slot 2) of list 2 leaves [3, 1] vs [2, 0]: a match.
  where = jnp.array([[True] * 3, [True, True, False], [True] * 3])
  assert _mean(run(M.ranking_accuracy_lists, scores, labels, where=where)) == 1.0


def test_ranking_accuracy_lists_matches_reference():
  rng = _rng(2)
  scores = rng.integers(0, 3, (40, 3)).astype(np.float32)  # many ties
  labels = rng.integers(0, 3, (40, 3)).astype(np.float32)
  where = rng.random((40, 3)) < 0.85
  where[:, 0] = True
  hits = []
  for s, l, w in zip(scores, labels, where):
    hits.append(float(np.array_equal(_rank_max_positions(s[w]), _rank_max_positions(l[w]))))
  got = run(M.ranking_accuracy_lists, scores, labels, where=where)
  assert float(got.count) == 40
  assert _mean(got) == pytest.approx(np.mean(hits))
  assert 0.0 < np.mean(hits) < 1.0  # the reference is not degenerate


# ---------------------------------------------------------------------------------------------
# §8.3 idealized ranking accuracy.


def test_idealized_ranking_accuracy_hand_worked():
  ref = jnp.array([[-1.0, -2.0], [-5.0, -1.0]])
  alpha = jnp.array([0.8, 0.6])
  got = run(M.idealized_ranking_accuracy, ref, alpha)
  # Pair 1: d = 1, log-odds = ln 4 > 0: z > 0 for every beta -> correct.
  # Pair 2: d = -4, log-odds = ln 1.5 = 0.405465; z = -4 + 0.405465/beta:
  #   beta 0.01 -> 36.5, 0.1 -> 0.0547 (correct); 1 -> -3.59, 5, 10 -> negative (wrong).
  np.testing.assert_array_equal(got.sum, [2, 2, 1, 1, 1])
  np.testing.assert_array_equal(got.count, [2, 2, 2, 2, 2])
  summary = M.summarize_over_betas(got)
  assert [float(summary[k]) for k in ("min", "median", "max")] == [0.5, 0.5, 1.0]


def test_idealized_ranking_accuracy_clips_alpha_and_tolerates_ties():
  # alpha = 1 is clipped to 0.999: log-odds ln 999 = 6.906755; with beta = 100 the shift is
  # 0.0690675 < 0.07, so z = -0.07 + 0.0690675 < 0 (wrong); unclipped it would be +inf.
  got = run(M.idealized_ranking_accuracy, jnp.array([[-1.07, -1.0]]), jnp.array(1.0),
            betas=(100.0,))
  assert float(got.sum[0]) == 0.0 and float(got.count[0]) == 1.0
  # alpha = 1/2: the human ranking is a tie. With tolerance 0.05 a ratio e^0.01 is a tie
  # (|e^0.01 - 1| = 0.01 < 0.05, correct) and e^0.2 is not (0.221, wrong); without tolerance
  # neither is.
  ref = jnp.array([[-1.0, -1.01], [-1.0, -1.2]])
  tol = run(M.idealized_ranking_accuracy, ref, jnp.array(0.5), betas=(1.0,), tie_tolerance=0.05)
  np.testing.assert_array_equal(tol.sum, [1.0])
  strict = run(M.idealized_ranking_accuracy, ref, jnp.array(0.5), betas=(1.0,))
  np.testing.assert_array_equal(strict.sum, [0.0])


def test_idealized_ranking_accuracy_matches_reference_code_semantics():
  """Float64 ratio-space computation as in the paper's code (no overflow in this range)."""
  rng = _rng(3)
  ref = rng.normal(-3.0, 1.0, (200, 2)).astype(np.float32)
  lengths = rng.integers(1, 6, (200, 2))
  alpha = rng.choice([0.2, 0.5, 0.6, 0.75, 1.0], 200)
  betas = (0.5, 1.0, 5.0)

  def ranking(ratio, tol=0.05):  # _get_ranking_from_ratio of the reference code
    return 0 if abs(ratio - 1.0) < tol else (1 if ratio >= 1.0 + tol else -1)

  for use_lengths in (False, True):
    lr = ref.astype(np.float64) / (np.maximum(lengths, 1) if use_lengths else 1.0)
    a = np.clip(alpha, 1e-3, 1 - 1e-3)
    want = [np.mean([ranking(a[i] / (1 - a[i])) ==
                     ranking((a[i] / (1 - a[i])) ** (1 / b) * np.exp(lr[i, 0] - lr[i, 1]))
                     for i in range(200)]) for b in betas]
    got = run(M.idealized_ranking_accuracy, ref, alpha, betas=betas, tie_tolerance=0.05,
                                       lengths=lengths if use_lengths else None)
    np.testing.assert_allclose(M.mean(got), want, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# §8.4 flip thresholds.


def _dpo_loss64(lp, lr, beta):
  h = (lp[..., 0] - lp[..., 1]) - (lr[..., 0] - lr[..., 1])
  return np.logaddexp(0.0, -beta * h)  # -log sigmoid(beta h)


def test_dpo_flip_threshold_hand_worked_and_iff():
  # c = lr_l - lr_w = -2; threshold = -log sigmoid(0.5 * -2) = softplus(1) = ln(1 + e) = 1.313262.
  thr = run(M.dpo_flip_threshold, jnp.array([[-1.0, -3.0]]), beta=0.5)
  assert float(thr[0]) == pytest.approx(math.log1p(math.e), abs=ATOL)
  rng = _rng(4)
  lp = rng.normal(-5.0, 2.0, (500, 2))
  lr = rng.normal(-5.0, 2.0, (500, 2))
  keep = np.abs(lp[:, 0] - lp[:, 1]) > 1e-2  # away from the boundary (float32 rounding)
  lp, lr = lp[keep], lr[keep]
  for beta in (0.1, 1.0):
    loss = _dpo_loss64(lp, lr, beta)
    thr = np.asarray(run(M.dpo_flip_threshold, lr.astype(np.float32), beta=beta), np.float64)
    np.testing.assert_array_equal(loss <= thr, lp[:, 0] >= lp[:, 1])  # Thm 4.1: iff
  below = run(M.below_flip_threshold, jnp.array([1.0, 2.0, 3.0]), jnp.array([1.0, 1.5, 4.0]))
  assert _mean(below) == pytest.approx(2 / 3)  # 1 <= 1, 2 > 1.5, 3 <= 4


def test_ipo_flip_threshold_hand_worked_and_guarantee():
  beta = 0.5  # 1/(2 beta) = 1
  thr = run(M.ipo_flip_threshold, jnp.array([[-1.0, -2.0], [-3.0, -1.0]]), beta=beta)
  # c' = 1 -> (1 + 1)^2 = 4;  c' = -2 < -1 -> no threshold (-inf).
  assert float(thr[0]) == pytest.approx(4.0) and float(thr[1]) == -np.inf
  rng = _rng(5)
  lp = rng.normal(-3.0, 1.0, (2000, 2))
  lr = rng.normal(-3.0, 1.0, (2000, 2))
  h = (lp[:, 0] - lp[:, 1]) - (lr[:, 0] - lr[:, 1])
  loss = (h - 1.0 / (2 * beta)) ** 2  # ipo_sum
  thr = np.asarray(run(M.ipo_flip_threshold, lr.astype(np.float32), beta=beta), np.float64)
  guaranteed = loss <= thr * (1 - 1e-5)
  assert guaranteed.sum() > 100
  assert np.all(lp[guaranteed, 0] >= lp[guaranteed, 1])
  # Below -1/(2 beta), zero loss means h = 1/(2 beta) and lp_w - lp_l = h + c' < 0: wrong.
  c = lr[:, 0] - lr[:, 1]
  assert np.all(1.0 / (2 * beta) + c[c < -1.0 / (2 * beta)] < 0)


# ---------------------------------------------------------------------------------------------
# §8.5 log-prob change and CHES.


def test_logprob_change_hand_worked():
  lp = jnp.array([[-1.0, -2.0], [-3.0, -5.0]])
  lp0 = jnp.array([[-2.0, -2.0], [-2.0, -4.0]])
  got = run(M.logprob_change, lp, lp0)
  # changes [[1, 0], [-1, -1]]: chosen mean 0, rejected mean -1.
  np.testing.assert_array_equal(got.sum, [0.0, -1.0])
  np.testing.assert_array_equal(got.count, [2.0, 2.0])
  masked = run(M.logprob_change, lp, lp0, where=jnp.array([[True, True], [False, True]]))
  np.testing.assert_array_equal(M.mean(masked), [1.0, -0.5])


def test_predicting_window_mask():
  completion = jnp.array([[0, 0, 0, 1, 1], [0, 0, 0, 1, 0]], bool)
  # Last prompt position (2) through the second-to-last response position.
  np.testing.assert_array_equal(M.predicting_window_mask(completion),
                                [[0, 0, 1, 1, 0], [0, 0, 1, 0, 0]])


def test_ches_hand_worked():
  chosen = jnp.array([[[1.0], [2.0], [3.0]]])  # window positions 1, 2: H+ = 5, n+ = 2
  rejected = jnp.array([[[1.0], [3.0]]])  # window positions 0, 1: H- = 4, n- = 2
  cm, rm = jnp.array([[False, True, True]]), jnp.array([[True, True]])
  assert float(run(M.ches, chosen, cm, rejected, rm)[0]) == pytest.approx(5 * 4 - 25)  # -5
  assert float(run(M.ln_ches, chosen, cm, rejected, rm)[0]) == pytest.approx(20 / 4 - 25 / 4)


def _ches_reference(h_pos, last_pos, h_neg, last_neg, normalize):
  """The reference code's algorithm (princeton-nlp ches.py) in float64 numpy, unpadded rows."""
  def window(h, last):
    h = h * (np.arange(h.shape[1]) >= last[:, None])[..., None]
    return h[:, :-1]
  wp, wn = window(h_pos, last_pos), window(h_neg, last_neg)
  if normalize:
    wp = wp / (wp.shape[1] - last_pos)[:, None, None]
    wn = wn / (wn.shape[1] - last_neg)[:, None, None]
  sp, sn = wp.sum(1), wn.sum(1)
  return (sp * sn).sum(1) - (sp * sp).sum(1)


@pytest.mark.parametrize("normalize", [False, True])
def test_ches_matches_reference_code_and_handles_right_padding(normalize):
  rng = _rng(6)
  b, p, d = 3, 4, 5
  r_pos, r_neg = 3, 6  # response lengths; rows have exactly T = P + R tokens
  h_pos = rng.normal(size=(b, p + r_pos, d))
  h_neg = rng.normal(size=(b, p + r_neg, d))
  last = np.full(b, p - 1)
  want = _ches_reference(h_pos, last, h_neg, last, normalize)

  def completion(t, r):
    return np.arange(t) >= t - r

  fn = functools.partial(run, M.ln_ches if normalize else M.ches)
  mask_pos = M.predicting_window_mask(np.broadcast_to(completion(p + r_pos, r_pos), (b, p + r_pos)))
  mask_neg = M.predicting_window_mask(np.broadcast_to(completion(p + r_neg, r_neg), (b, p + r_neg)))
  got = fn(h_pos.astype(np.float32), mask_pos, h_neg.astype(np.float32), mask_neg)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  # Right-pad the preferred rows with 3 garbage positions: explicit masks give the same scores.
  padded = np.concatenate([h_pos, 100.0 * rng.normal(size=(b, 3, d))], axis=1)
  mask_padded = np.concatenate([np.asarray(mask_pos), np.zeros((b, 3), bool)], axis=1)
  got_padded = fn(padded.astype(np.float32), mask_padded, h_neg.astype(np.float32), mask_neg)
  np.testing.assert_allclose(got_padded, want, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# §8.6 NDCG and Kendall tau.


def test_ndcg_hand_worked():
  scores = jnp.array([[3.0, 2.0, 1.0]])
  labels = jnp.array([[0.0, 1.0, 2.0]])
  # gains [0, 1, 3]; model ranks [1, 2, 3]: DCG = 0 + 1/log2(3) + 3/log2(4) = 2.130930;
  # ideal ranks [3, 2, 1]: 3/log2(2) + 1/log2(3) = 3.630930.  NDCG = 0.586883.
  assert _mean(run(M.ndcg, scores, labels)) == pytest.approx(2.130930 / 3.630930, abs=ATOL)
  # @1: DCG 0.  @2: 0.630930 / 3.630930 = 0.173766.
  assert _mean(run(M.ndcg, scores, labels, topn=1)) == 0.0
  assert _mean(run(M.ndcg, scores, labels, topn=2)) == pytest.approx(0.630930 / 3.630930, abs=ATOL)
  # All gains 0: ideal DCG 0 -> denominator 1, NDCG 0, and the list still counts.
  got = run(M.ndcg, jnp.array([[1.0, 2.0]]), jnp.zeros((1, 2)))
  assert (float(got.sum), float(got.count)) == (0.0, 1.0)
  # Tied scores are ranked by index: [1, 1] with labels [0, 1] puts the 0-gain item first.
  tied = run(M.ndcg, jnp.array([[1.0, 1.0]]), jnp.array([[0.0, 1.0]]))
  assert _mean(tied) == pytest.approx(1 / math.log2(3), abs=ATOL)


def _ndcg_reference(scores, labels, where, topn):
  values = []
  for s, l, w in zip(scores, labels, where):
    if not w.any():
      continue
    s, g = s[w].astype(np.float64), 2.0 ** l[w].astype(np.float64) - 1.0

    def dcg(order):
      k = len(order) if topn is None else min(topn, len(order))
      return sum(g[i] / np.log2(2.0 + r) for r, i in enumerate(order[:k]))

    ideal = dcg(np.argsort(-g, kind="stable"))
    values.append(dcg(np.argsort(-s, kind="stable")) / (ideal if ideal else 1.0))
  return np.mean(values), len(values)


@pytest.mark.parametrize("topn", [None, 2])
def test_ndcg_matches_reference_and_rax(topn):
  rng = _rng(7)
  scores = rng.integers(0, 4, (12, 5)).astype(np.float32)  # ties by index matter
  labels = rng.integers(0, 4, (12, 5)).astype(np.float32)
  where = rng.random((12, 5)) < 0.8
  where[0] = False  # an all-padding list is not counted
  got = run(M.ndcg, scores, labels, topn=topn, where=where)
  want, count = _ndcg_reference(scores, labels, where, topn)
  assert float(got.count) == count
  assert _mean(got) == pytest.approx(want, abs=ATOL)
  rax = pytest.importorskip("rax")
  assert _mean(got) == pytest.approx(float(rax.ndcg_metric(scores, labels, where=where,
                                                           topn=topn)), abs=ATOL)


def _tau_b_reference(x, y):
  """Direct O(K^2) tau-b in float64; None when undefined."""
  nc = nd = ts = tl = 0
  for i, j in itertools.combinations(range(len(x)), 2):
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    nc += sx * sy > 0
    nd += sx * sy < 0
    ts += sx != 0
    tl += sy != 0
  return None if ts * tl == 0 else (nc - nd) / math.sqrt(ts * tl)


def test_kendall_tau_hand_worked():
  scores = jnp.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0], [3.0, 2.0, 1.0], [5.0, 0.0, 0.0]])
  labels = jnp.array([[1.0, 2.0, 2.0], [0.0, 1.0, 2.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
  where = jnp.array([[True] * 3, [True] * 3, [True] * 3, [True, False, False]])
  got = run(M.kendall_tau, scores, labels, where=where)
  # List 1: pairs (0,1), (0,2) concordant, (1,2) tied in labels: n_c = 2, n_d = 0,
  #   untied in scores 3, in labels 2 -> tau_b = 2 / sqrt(6) = 0.816497.
  # List 2: all scores tied -> undefined -> 0.  List 3: reversed -> -1.
  # List 4: a single valid item -> undefined -> 0, still counted.
  assert float(got["tau"].count) == 4
  assert _mean(got["tau"]) == pytest.approx((2 / math.sqrt(6) + 0 - 1 + 0) / 4, abs=ATOL)
  assert (float(got["undefined"].sum), float(got["undefined"].count)) == (2.0, 4.0)


def test_kendall_tau_matches_reference():
  rng = _rng(8)
  scores = rng.integers(0, 4, (30, 6)).astype(np.float32)
  labels = rng.integers(0, 3, (30, 6)).astype(np.float32)
  where = rng.random((30, 6)) < 0.7
  taus, undefined = [], 0
  for s, l, w in zip(scores, labels, where):
    if not w.any():
      continue
    tau = _tau_b_reference(s[w], l[w])
    undefined += tau is None
    taus.append(0.0 if tau is None else tau)
  got = run(M.kendall_tau, scores, labels, where=where)
  assert float(got["tau"].count) == len(taus)
  assert _mean(got["tau"]) == pytest.approx(np.mean(taus), abs=ATOL)
  assert float(got["undefined"].sum) == undefined


# ---------------------------------------------------------------------------------------------
# §8.7 win rate.


def test_win_rate_hand_worked():
  got = run(M.win_rate, jnp.arange(10.0), jnp.full(10, 4.0))
  # Outcomes: 0..3 lose, 4 ties (1/2), 5..9 win: WR = 5.5/10 = 0.55.
  # sd = sqrt(mean(o^2) - WR^2) = sqrt(0.525 - 0.3025) = 0.471699;
  # half width = 1.96 * 0.471699 / sqrt(10) = 0.292367.
  assert float(got.rate) == pytest.approx(0.55)
  assert float(got.low) == pytest.approx(0.55 - 0.292367, abs=ATOL)
  assert float(got.high) == pytest.approx(0.55 + 0.292367, abs=ATOL)
  assert float(got.n) == 10


def test_win_rate_normal_interval_matches_formula():
  rng = _rng(9)
  policy = rng.integers(0, 5, 300).astype(np.float32)
  reference = rng.integers(0, 5, 300).astype(np.float32)
  where = rng.random(300) < 0.9
  o = np.where(policy > reference, 1.0, np.where(policy == reference, 0.5, 0.0))[where]
  half = 1.96 * o.std() / math.sqrt(len(o))
  got = run(M.win_rate, policy, reference, where=where)
  np.testing.assert_allclose([got.rate, got.low, got.high, got.n],
                             [o.mean(), o.mean() - half, o.mean() + half, len(o)], atol=1e-5)
  # The interval is clipped to [0, 1].
  clipped = run(M.win_rate, jnp.array([1.0, 1.0, 1.0, 0.0]), jnp.zeros(4))
  assert float(clipped.high) == 1.0 and float(clipped.low) < 0.75


def test_win_rate_bootstrap():
  rng = _rng(10)
  policy = rng.normal(0.3, 1.0, 400).astype(np.float32)
  reference = rng.normal(0.0, 1.0, 400).astype(np.float32)
  key = jax.random.key(0)
  boot = run(M.win_rate, policy, reference, ci="bootstrap", key=key)
  normal = run(M.win_rate, policy, reference)
  assert float(boot.rate) == float(normal.rate)
  assert float(boot.low) < float(boot.rate) < float(boot.high)
  # For n = 400 the bootstrap percentiles agree with the normal approximation to ~0.01.
  assert float(boot.low) == pytest.approx(float(normal.low), abs=0.015)
  assert float(boot.high) == pytest.approx(float(normal.high), abs=0.015)
  again = run(M.win_rate, policy, reference, ci="bootstrap", key=key)
  assert float(again.low) == float(boot.low)  # deterministic given the key
  # Masked prompts are never drawn: valid ones all lose, masked ones all win.
  where = np.arange(20) < 12
  masked = run(M.win_rate, np.where(where, -1.0, 1.0), np.zeros(20), where=where, ci="bootstrap",
                      key=key, num_resamples=50)
  assert [float(masked.low), float(masked.high), float(masked.n)] == [0.0, 0.0, 12.0]
  # Eager mode draws the same resamples as `jit`.
  policy, reference = policy[:20], reference[:20]
  jitted = run(M.win_rate, policy, reference, ci="bootstrap", key=key, num_resamples=50)
  eager = M.win_rate(policy, reference, ci="bootstrap", key=key, num_resamples=50)
  _assert_trees_close(eager, jitted)
  with pytest.raises(ValueError, match="key"):
    run(M.win_rate, policy, reference, ci="bootstrap")
  with pytest.raises(ValueError, match="ci must be"):
    run(M.win_rate, policy, reference, ci="wilson")


# ---------------------------------------------------------------------------------------------
# §8.8 KL.


def test_sample_kl_and_k3_hand_worked():
  # k1: ((-1) - (-1.5) + (-2) - (-1)) / 2 = (0.5 - 1) / 2 = -0.25.
  assert _mean(run(M.sample_kl, jnp.array([-1.0, -2.0]), jnp.array([-1.5, -1.0]))) == -0.25
  # k3 with delta = lr - lp = [-0.5, 1, 0 (masked)]: e^-0.5 + 0.5 - 1 = 0.106531,
  # e^1 - 1 - 1 = 0.718282; mean = 0.412406.
  got = run(M.token_kl_k3, jnp.array([[-1.0, -2.0, -3.0]]), jnp.array([[-1.5, -1.0, -9.0]]),
                      jnp.array([[True, True, False]]))
  assert _mean(got) == pytest.approx((math.exp(-0.5) - 0.5 + math.e - 2) / 2, abs=ATOL)


def test_kl_estimators_agree_with_exact_kl():
  rng = _rng(11)
  logits = rng.normal(size=5)
  ref_logits = rng.normal(size=5)
  log_p = logits - np.log(np.exp(logits).sum())
  log_q = ref_logits - np.log(np.exp(ref_logits).sum())
  exact = float(np.sum(np.exp(log_p) * (log_p - log_q)))
  got = run(M.exact_kl, logits[None].astype(np.float32), ref_logits[None].astype(np.float32))
  assert _mean(got) == pytest.approx(exact, abs=1e-6)
  assert _mean(run(M.exact_kl, logits[None], logits[None])) == pytest.approx(0.0, abs=1e-6)
  # Monte Carlo with tokens drawn from pi: k1 and k3 are unbiased for the exact KL.
  tokens = rng.choice(5, size=20000, p=np.exp(log_p))
  lp, lr = log_p[tokens].astype(np.float32), log_q[tokens].astype(np.float32)
  assert _mean(run(M.sample_kl, lp, lr)) == pytest.approx(exact, abs=0.03)
  assert _mean(run(M.token_kl_k3, lp[None], lr[None])) == pytest.approx(exact, abs=0.03)
  # A zero-probability token (-inf logit) contributes 0, not NaN.
  zero = run(M.exact_kl, jnp.array([[0.0, -jnp.inf]]), jnp.array([[0.0, 0.0]]))
  assert _mean(zero) == pytest.approx(math.log(2.0), abs=1e-6)


# ---------------------------------------------------------------------------------------------
# §8.9 ECE.


def _ece_reference(p, y, num_bins):
  """Loop over bins with the ALGORITHMS.md edges, float64; also MORE's per-bin errors."""
  p = np.asarray(p, np.float64)
  y = np.asarray(y, np.float64)
  total, per_bin = 0.0, []
  for b in range(num_bins):
    lo, hi = b / num_bins, (b + 1) / num_bins
    inside = (p >= lo) & ((p < hi) if b < num_bins - 1 else (p <= hi))
    gap = abs(p[inside].sum() - y[inside].sum())
    total += gap
    if inside.any():
      per_bin.append(gap / inside.sum())
  return total / len(p), np.mean(per_bin), np.max(per_bin)


def test_ece_hand_worked():
  got = run(M.ece, jnp.array([0.1, 0.9, 0.5, 1.0]), jnp.array([0.0, 1.0, 1.0, 1.0]))
  # 5 bins: 0.1 -> bin 0 (gap 0.1), 0.5 -> bin 2 (gap 0.5), 0.9 and 1.0 -> bin 4 (1.9 vs 2,
  # gap 0.1).  ECE = 0.7/4 = 0.175; per bin 0.1, 0.5, 0.05 -> average 0.216667, max 0.5.
  assert float(got["ece"]) == pytest.approx(0.175, abs=ATOL)
  assert float(got["average_bin_error"]) == pytest.approx(0.65 / 3, abs=ATOL)
  assert float(got["max_bin_error"]) == pytest.approx(0.5, abs=ATOL)


def test_ece_matches_loop_including_bin_edges():
  rng = _rng(12)
  p = np.concatenate([rng.random(200), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]]).astype(np.float32)
  y = (rng.random(206) < p).astype(np.float32)
  for num_bins in (5, 10):
    got = run(M.ece, p, y, num_bins=num_bins)
    want = _ece_reference(p, y, num_bins)
    np.testing.assert_allclose(
        [got["ece"], got["average_bin_error"], got["max_bin_error"]], want, atol=1e-5)
  bins = run(M.calibration_bins, p, y)
  np.testing.assert_array_equal(bins.count.sum(), 206)
  assert float(run(M.ece, p[:0], y[:0])["ece"]) == 0.0  # empty set


# ---------------------------------------------------------------------------------------------
# §2.5 undesirable region.


def test_undesirable_region_fraction_hand_worked():
  logps = jnp.array([[-2.0, -3.0], [-3.0, -2.0], [-3.0, -2.0]])
  ref = jnp.array([[-2.0, -2.0], [-5.0, -1.0], [-1.0, -2.0]])
  lengths = jnp.array([[2, 1], [1, 1], [1, 1]])
  # Pair 1: a = [-1, -3], delta_pi = 2 >= 0: outside.
  # Pair 2: delta_pi = -1, delta_ref = -5 + 1 = -4: -4 < -1 < 0 inside.
  # Pair 3: delta_pi = -1, delta_ref = 1: delta_pi < delta_ref, outside.
  got = run(M.undesirable_region_fraction, logps, ref, lengths)
  assert (float(got.sum), float(got.count)) == (1.0, 3.0)
  masked = run(M.undesirable_region_fraction, logps, ref, lengths,
                                         where=jnp.array([[True, True], [True, False],
                                                          [True, True]]))
  assert (float(masked.sum), float(masked.count)) == (0.0, 2.0)


# ---------------------------------------------------------------------------------------------
# Accumulation, masks, jit, errors: every (sum, count) metric.


def _sum_count_metrics():
  """name -> fn(arrays dict) returning a pytree of SumCounts, on [B, K] inputs."""
  return {
      "reward_metrics": lambda a: M.reward_metrics(a["logps"], a["ref"], a["labels"],
                                                   where=a["where"]),
      "ranking_accuracy": lambda a: M.ranking_accuracy(a["logps"], a["labels"],
                                                       lengths=a["lengths"], where=a["where"]),
      "ranking_accuracy_lists": lambda a: M.ranking_accuracy_lists(a["logps"], a["labels"],
                                                                   where=a["where"]),
      "idealized": lambda a: M.idealized_ranking_accuracy(a["ref"][:, :2], a["alpha"],
                                                          where=a["where"][:, :2]),
      "logprob_change": lambda a: M.logprob_change(a["logps"], a["ref"], where=a["where"]),
      "ndcg": lambda a: M.ndcg(a["logps"], a["labels"], topn=2, where=a["where"]),
      "kendall_tau": lambda a: M.kendall_tau(a["logps"], a["labels"], where=a["where"]),
      "sample_kl": lambda a: M.sample_kl(a["logps"], a["ref"], where=a["where"]),
      "token_kl_k3": lambda a: M.token_kl_k3(a["logps"], a["ref"], a["where"]),
      "exact_kl": lambda a: M.exact_kl(a["logps"], a["ref"], where=a["where"][:, 0]),
      "calibration_bins": lambda a: M.calibration_bins(a["probs"], a["outcomes"],
                                                       where=a["where"]),
      "undesirable": lambda a: M.undesirable_region_fraction(a["logps"][:, :2], a["ref"][:, :2],
                                                             a["lengths"][:, :2],
                                                             where=a["where"][:, :2]),
      "below_flip_threshold": lambda a: M.below_flip_threshold(
          a["logps"][:, 0], M.dpo_flip_threshold(a["ref"][:, :2]), where=a["where"][:, 0]),
  }


def _arrays(seed, batch=8):
  logps, ref, labels, lengths, where = _random_lists(seed, (batch, 4))
  rng = _rng(seed + 100)
  return {
      "logps": logps, "ref": ref, "labels": labels, "lengths": lengths, "where": where,
      "alpha": rng.random(batch).astype(np.float32),
      "probs": rng.random((batch, 4)).astype(np.float32),
      "outcomes": (rng.random((batch, 4)) < 0.5).astype(np.float32),
  }


def _assert_trees_close(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5), a, b)


@pytest.mark.parametrize("name", sorted(_sum_count_metrics()))
def test_accumulating_two_half_batches_equals_the_whole_batch(name):
  fn = _sum_count_metrics()[name]
  arrays = _arrays(20)
  first = {k: v[:3] for k, v in arrays.items()}
  second = {k: v[3:] for k, v in arrays.items()}
  fn = jax.jit(fn)
  _assert_trees_close(M.add(fn(first), fn(second)), fn(arrays))


@pytest.mark.parametrize("name", sorted(_sum_count_metrics()))
def test_fully_masked_examples_do_not_change_the_metric(name):
  fn = _sum_count_metrics()[name]
  arrays = _arrays(21)
  extra = _arrays(22, batch=3)
  extra["where"][:] = False
  for k in ("logps", "ref", "probs", "alpha"):
    extra[k][:] = np.nan  # garbage in masked slots must not leak into any sum
  together = {k: np.concatenate([arrays[k], extra[k]]) for k in arrays}
  fn = jax.jit(fn)
  _assert_trees_close(fn(together), fn(arrays))


@pytest.mark.parametrize("name", sorted(_sum_count_metrics()))
def test_jit_matches_eager(name):
  fn = _sum_count_metrics()[name]
  arrays = _arrays(23)
  _assert_trees_close(jax.jit(fn)(arrays), fn(arrays))


def test_list_metrics_are_invariant_to_permuting_the_list():
  logps, ref, labels, lengths, where = _random_lists(30)
  perm = _rng(31).permutation(4)
  original = (logps, ref, labels, lengths, where)
  permuted = tuple(x[:, perm] for x in original)

  def evaluate(lp, lr, lab, n, w):
    rewards = run(M.reward_metrics, lp, lr, lab, where=w)
    return {
        "accuracies": rewards["rewards/accuracies"],
        "margins": rewards["rewards/margins"],
        "ranking": run(M.ranking_accuracy, lp, lab, lengths=n, where=w),
        "lists": run(M.ranking_accuracy_lists, lp, lab, where=w),
        "tau": run(M.kendall_tau, lp, lab, where=w),
    }

  _assert_trees_close(evaluate(*permuted), evaluate(*original))


def test_jit_of_the_remaining_metrics():
  rng = _rng(24)
  hidden = rng.normal(size=(2, 4, 3)).astype(np.float32)
  mask = np.array([[0, 1, 1, 0], [0, 1, 0, 0]], bool)
  np.testing.assert_allclose(jax.jit(M.ches)(hidden, mask, hidden, mask),
                             M.ches(hidden, mask, hidden, mask), rtol=1e-6)
  np.testing.assert_allclose(jax.jit(M.ln_ches)(hidden, mask, hidden, mask),
                             M.ln_ches(hidden, mask, hidden, mask), rtol=1e-6)
  policy, reference = rng.normal(size=50), rng.normal(size=50)
  _assert_trees_close(jax.jit(M.win_rate)(policy, reference), M.win_rate(policy, reference))
  p, y = rng.random(20), (rng.random(20) < 0.5)
  _assert_trees_close(jax.jit(M.ece)(p, y), M.ece(p, y))
  ref = rng.normal(size=(5, 2))
  np.testing.assert_allclose(jax.jit(M.ipo_flip_threshold)(ref), M.ipo_flip_threshold(ref))


def test_bad_inputs_raise_clear_errors():
  x = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match=r"ranking_accuracy: `labels` has shape \(2, 2\)"):
    M.ranking_accuracy(x, jnp.zeros((2, 2)))
  with pytest.raises(ValueError, match=r"dpo_flip_threshold: `ref_logps` must have shape"):
    M.dpo_flip_threshold(x)
  with pytest.raises(ValueError, match="reward_metrics: beta"):
    M.reward_metrics(x, x, x, beta=0.0)
  with pytest.raises(ValueError, match="idealized_ranking_accuracy: every beta"):
    M.idealized_ranking_accuracy(jnp.zeros((2, 2)), 0.7, betas=(0.1, -1.0))
  with pytest.raises(ValueError, match="tie_tolerance"):
    M.idealized_ranking_accuracy(jnp.zeros((2, 2)), 0.7, tie_tolerance=1.0)
  with pytest.raises(ValueError, match="ches: `rejected` hidden states"):
    M.ches(jnp.zeros((2, 4, 3)), jnp.ones((2, 4), bool), jnp.zeros((2, 4, 3)),
           jnp.ones((2, 5), bool))
  with pytest.raises(ValueError, match="ndcg: topn"):
    M.ndcg(x, x, topn=0)
  with pytest.raises(ValueError, match="num_bins"):
    M.ece(x, x, num_bins=0)
