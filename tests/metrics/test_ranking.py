"""Tests of `alignment.metrics.ranking`: ranking accuracy, its idealized optimum, flip
thresholds, NDCG and Kendall τ, by hand and against float64 references (and Rax)."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment import metrics as M
from tests.metrics.helpers import ATOL, assert_trees_close, mean_of, random_lists, run


def test_ranking_accuracy_hand_worked():
  logps = jnp.array([[-1.0, -2.0], [-3.0, -1.0], [-2.0, -2.0]])
  labels = jnp.array([[1.0, 0.0]] * 3)
  # correct, wrong, tie (lp_w >= lp_l counts as correct) -> 2/3.
  assert mean_of(run(M.ranking_accuracy, logps, labels)) == pytest.approx(2 / 3)
  # Length normalisation: a = [-10/10, -6/3] = [-1, -2] is correct; raw [-10, -6] is wrong.
  lp, n = jnp.array([[-10.0, -6.0]]), jnp.array([[10, 3]])
  assert mean_of(run(M.ranking_accuracy, lp, labels[:1])) == 0.0
  assert mean_of(run(M.ranking_accuracy, lp, labels[:1], lengths=n)) == 1.0
  # Tied labels form no pair: nothing to count.
  assert float(run(M.ranking_accuracy, lp, jnp.array([[1.0, 1.0]])).count) == 0.0


def test_ranking_accuracy_matches_pair_loop():
  logps, _, labels, lengths, where = random_lists(1)
  for use_lengths in (False, True):
    n = lengths if use_lengths else None
    s = logps.astype(np.float64) / (1.0 if n is None else np.maximum(n, 1))
    hits = [float(s[b, i] >= s[b, j]) for b in range(6) for i in range(4) for j in range(4)
            if where[b, i] and where[b, j] and labels[b, i] > labels[b, j]]
    got = run(M.ranking_accuracy, logps, labels, lengths=n, where=where)
    assert float(got.count) == len(hits)
    assert mean_of(got) == pytest.approx(np.mean(hits), abs=ATOL)


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
  assert mean_of(run(M.ranking_accuracy_lists, scores, labels)) == pytest.approx(2 / 3)
  np.testing.assert_array_equal(_rank_max_positions([3.0, 1.0, 3.0]), [1, 3, 1])
  # Masking the mismatching item (slot 2) of list 2 leaves [3, 1] vs [2, 0]: a match.
  where = jnp.array([[True] * 3, [True, True, False], [True] * 3])
  assert mean_of(run(M.ranking_accuracy_lists, scores, labels, where=where)) == 1.0


def test_ranking_accuracy_lists_matches_reference():
  rng = np.random.default_rng(2)
  scores = rng.integers(0, 3, (40, 3)).astype(np.float32)  # many ties
  labels = rng.integers(0, 3, (40, 3)).astype(np.float32)
  where = rng.random((40, 3)) < 0.85
  where[:, 0] = True
  hits = []
  for s, l, w in zip(scores, labels, where):
    hits.append(float(np.array_equal(_rank_max_positions(s[w]), _rank_max_positions(l[w]))))
  got = run(M.ranking_accuracy_lists, scores, labels, where=where)
  assert float(got.count) == 40
  assert mean_of(got) == pytest.approx(np.mean(hits))
  assert 0.0 < np.mean(hits) < 1.0  # the reference is not degenerate


# ---------------------------------------------------------------------------------------------
# Idealized ranking accuracy.


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
  rng = np.random.default_rng(3)
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
# Flip thresholds.


def _dpo_loss64(lp, lr, beta):
  h = (lp[..., 0] - lp[..., 1]) - (lr[..., 0] - lr[..., 1])
  return np.logaddexp(0.0, -beta * h)  # -log sigmoid(beta h)


def test_dpo_flip_threshold_hand_worked_and_iff():
  # c = lr_l - lr_w = -2; threshold = -log sigmoid(0.5 * -2) = softplus(1) = ln(1 + e) = 1.313262.
  thr = run(M.dpo_flip_threshold, jnp.array([[-1.0, -3.0]]), beta=0.5)
  assert float(thr[0]) == pytest.approx(math.log1p(math.e), abs=ATOL)
  rng = np.random.default_rng(4)
  lp = rng.normal(-5.0, 2.0, (500, 2))
  lr = rng.normal(-5.0, 2.0, (500, 2))
  keep = np.abs(lp[:, 0] - lp[:, 1]) > 1e-2  # away from the boundary (float32 rounding)
  lp, lr = lp[keep], lr[keep]
  for beta in (0.1, 1.0):
    loss = _dpo_loss64(lp, lr, beta)
    thr = np.asarray(run(M.dpo_flip_threshold, lr.astype(np.float32), beta=beta), np.float64)
    np.testing.assert_array_equal(loss <= thr, lp[:, 0] >= lp[:, 1])  # Thm 4.1: iff
  below = run(M.below_flip_threshold, jnp.array([1.0, 2.0, 3.0]), jnp.array([1.0, 1.5, 4.0]))
  assert mean_of(below) == pytest.approx(2 / 3)  # 1 <= 1, 2 > 1.5, 3 <= 4


def test_ipo_flip_threshold_hand_worked_and_guarantee():
  beta = 0.5  # 1/(2 beta) = 1
  thr = run(M.ipo_flip_threshold, jnp.array([[-1.0, -2.0], [-3.0, -1.0]]), beta=beta)
  # c' = 1 -> (1 + 1)^2 = 4;  c' = -2 < -1 -> no threshold (-inf).
  assert float(thr[0]) == pytest.approx(4.0) and float(thr[1]) == -np.inf
  rng = np.random.default_rng(5)
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
# NDCG and Kendall tau.


def test_ndcg_hand_worked():
  scores = jnp.array([[3.0, 2.0, 1.0]])
  labels = jnp.array([[0.0, 1.0, 2.0]])
  # gains [0, 1, 3]; model ranks [1, 2, 3]: DCG = 0 + 1/log2(3) + 3/log2(4) = 2.130930;
  # ideal ranks [3, 2, 1]: 3/log2(2) + 1/log2(3) = 3.630930.  NDCG = 0.586883.
  assert mean_of(run(M.ndcg, scores, labels)) == pytest.approx(2.130930 / 3.630930, abs=ATOL)
  # @1: DCG 0.  @2: 0.630930 / 3.630930 = 0.173766.
  assert mean_of(run(M.ndcg, scores, labels, topn=1)) == 0.0
  assert mean_of(run(M.ndcg, scores, labels, topn=2)) == pytest.approx(0.630930 / 3.630930,
                                                                     abs=ATOL)
  # All gains 0: ideal DCG 0 -> denominator 1, NDCG 0, and the list still counts.
  got = run(M.ndcg, jnp.array([[1.0, 2.0]]), jnp.zeros((1, 2)))
  assert (float(got.sum), float(got.count)) == (0.0, 1.0)
  # Tied scores are ranked by index: [1, 1] with labels [0, 1] puts the 0-gain item first.
  tied = run(M.ndcg, jnp.array([[1.0, 1.0]]), jnp.array([[0.0, 1.0]]))
  assert mean_of(tied) == pytest.approx(1 / math.log2(3), abs=ATOL)


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
  rng = np.random.default_rng(7)
  scores = rng.integers(0, 4, (12, 5)).astype(np.float32)  # ties by index matter
  labels = rng.integers(0, 4, (12, 5)).astype(np.float32)
  where = rng.random((12, 5)) < 0.8
  where[0] = False  # an all-padding list is not counted
  got = run(M.ndcg, scores, labels, topn=topn, where=where)
  want, count = _ndcg_reference(scores, labels, where, topn)
  assert float(got.count) == count
  assert mean_of(got) == pytest.approx(want, abs=ATOL)
  rax = pytest.importorskip("rax")
  assert mean_of(got) == pytest.approx(float(rax.ndcg_metric(scores, labels, where=where,
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
  assert mean_of(got["tau"]) == pytest.approx((2 / math.sqrt(6) + 0 - 1 + 0) / 4, abs=ATOL)
  assert (float(got["undefined"].sum), float(got["undefined"].count)) == (2.0, 4.0)


def test_kendall_tau_matches_reference():
  rng = np.random.default_rng(8)
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
  assert mean_of(got["tau"]) == pytest.approx(np.mean(taus), abs=ATOL)
  assert float(got["undefined"].sum) == undefined


# ---------------------------------------------------------------------------------------------
# Properties, jit, errors.


def test_list_metrics_are_invariant_to_permuting_the_list():
  logps, ref, labels, lengths, where = random_lists(30)
  perm = np.random.default_rng(31).permutation(4)
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

  assert_trees_close(evaluate(*permuted), evaluate(*original))


def test_jit_of_the_ipo_flip_threshold():
  ref = np.random.default_rng(24).normal(size=(5, 2))
  np.testing.assert_allclose(jax.jit(M.ipo_flip_threshold)(ref), M.ipo_flip_threshold(ref))


def test_bad_inputs_raise_clear_errors():
  x = jnp.zeros((2, 3))
  with pytest.raises(ValueError, match=r"ranking_accuracy: labels has shape \(2, 2\)"):
    M.ranking_accuracy(x, jnp.zeros((2, 2)))
  with pytest.raises(ValueError, match=r"dpo_flip_threshold: `ref_logps` must have shape"):
    M.dpo_flip_threshold(x)
  with pytest.raises(ValueError, match="idealized_ranking_accuracy: every beta"):
    M.idealized_ranking_accuracy(jnp.zeros((2, 2)), 0.7, betas=(0.1, -1.0))
  with pytest.raises(ValueError, match="tie_tolerance"):
    M.idealized_ranking_accuracy(jnp.zeros((2, 2)), 0.7, tie_tolerance=1.0)
  with pytest.raises(ValueError, match="ndcg: topn"):
    M.ndcg(x, x, topn=0)
