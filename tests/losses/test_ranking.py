"""Tests of the generic learning-to-rank losses (alignment/losses/ranking.py)."""

import doctest
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment import arrays
from alignment.losses import lambdaweights
from alignment.losses import ranking

PAIR_LOSSES = {
    "logistic": (ranking.pairwise_logistic_loss, lambda d: np.logaddexp(0.0, -d)),
    "hinge": (ranking.pairwise_hinge_loss, lambda d: np.maximum(0.0, 1.0 - d)),
    "squared": (ranking.pairwise_squared_loss, lambda d: (1.0 - d) ** 2),
    "soft_zero_one": (ranking.pairwise_soft_zero_one_loss, lambda d: 1.0 / (1.0 + np.exp(d))),
}
LIST_LOSSES = {
    "listmle": ranking.listmle_loss,
    "softmax": ranking.softmax_loss,
    "pointwise": ranking.pointwise_sigmoid_loss,
}
ALL_LOSSES = {**{k: v[0] for k, v in PAIR_LOSSES.items()}, **LIST_LOSSES}


def _random(seed, shape=(4, 6), levels=4):
  rng = np.random.default_rng(seed)
  scores = rng.normal(size=shape) * 2.0
  labels = rng.integers(0, levels, size=shape).astype(np.float64)
  where = rng.random(shape) > 0.25
  weights = rng.random(shape) + 0.5
  return scores, labels, where, weights


# ----------------------------------------------------------------------------------------------
# Independent float64 numpy references (explicit loops, no shared code with the library).


def np_pairwise(pair_fn, scores, labels, where, weights):
  total, count = 0.0, 0
  for idx in np.ndindex(scores.shape[:-1]):
    s, y, m, w = scores[idx], labels[idx], where[idx], weights[idx]
    for i in range(len(s)):
      for j in range(len(s)):
        if m[i] and m[j] and y[i] > y[j]:
          total += w[i] * pair_fn(s[i] - s[j])
          count += 1
  return total / max(count, 1)


def np_listmle(scores, labels, where):
  losses = []
  for idx in np.ndindex(scores.shape[:-1]):
    m = where[idx]
    if not m.any():
      continue
    valid = np.flatnonzero(m)
    order = valid[np.argsort(-labels[idx][valid], kind="stable")]
    s = scores[idx][order]
    losses.append(sum(np.logaddexp.reduce(s[r:]) - s[r] for r in range(len(s))))
  return np.mean(losses) if losses else 0.0


def np_softmax(scores, labels, where, weights, normalize):
  losses = []
  for idx in np.ndindex(scores.shape[:-1]):
    m = where[idx]
    if not m.any():
      continue
    s, y = scores[idx][m], (labels[idx] * weights[idx])[m]
    if normalize:
      y = y / y.sum() if y.sum() != 0 else np.full(len(y), 1.0 / len(y))
    losses.append(-np.sum(y * (s - np.logaddexp.reduce(s))))
  return np.mean(losses) if losses else 0.0


def np_pointwise(scores, labels, where, weights):
  s, y = scores[where], labels[where]
  bce = y * np.logaddexp(0.0, -s) + (1.0 - y) * np.logaddexp(0.0, s)
  return np.mean(bce * weights[where])


# ----------------------------------------------------------------------------------------------
# Hand-worked values.


def test_pairwise_hand_values():
  s, y = jnp.array([0.5, 0.0, 1.0]), jnp.array([1.0, 0.0, 0.0])
  # Pairs (0,1): d = 0.5 and (0,2): d = -0.5.
  # logistic: (softplus(-0.5) + softplus(0.5)) / 2 = (0.474077 + 0.974077) / 2 = 0.724077.
  np.testing.assert_allclose(ranking.pairwise_logistic_loss(s, y), 0.7240769, rtol=1e-6)
  # hinge: (max(0, 0.5) + max(0, 1.5)) / 2 = 1.0.
  np.testing.assert_allclose(ranking.pairwise_hinge_loss(s, y), 1.0, rtol=1e-6)
  # squared: ((1 - 0.5)^2 + (1 + 0.5)^2) / 2 = (0.25 + 2.25) / 2 = 1.25.
  np.testing.assert_allclose(ranking.pairwise_squared_loss(s, y), 1.25, rtol=1e-6)
  # soft zero-one: (σ(-0.5) + σ(0.5)) / 2 = 1 / 2.
  np.testing.assert_allclose(ranking.pairwise_soft_zero_one_loss(s, y), 0.5, rtol=1e-6)


def test_pair_weights_multiply_better_item_not_denominator():
  # Equal scores: every pair loss is ln 2. Pairs (0,1), (0,2), (1,2) with better-item weights
  # 2, 2, 3: mean = (2 + 2 + 3)·ln 2 / 3 (3 pairs in the denominator, not the weight sum 7).
  s, y, w = jnp.zeros(3), jnp.array([2.0, 1.0, 0.0]), jnp.array([2.0, 3.0, 5.0])
  loss = ranking.pairwise_logistic_loss(s, y, weights=w)
  np.testing.assert_allclose(loss, 7.0 * math.log(2.0) / 3.0, rtol=1e-6)


def test_pair_mean_is_over_pairs_of_whole_input():
  # List A: labels [2, 1, 0], scores 0 -> 3 pairs of ln 2. List B: labels [1, 0, 0], scores
  # [0, 0, 0] with slot 2 masked -> 1 pair of ln 2 ... but make B's pair loss softplus(-2):
  # B scores [2, 0, 0]. Mean over 4 pairs = (3·ln 2 + softplus(-2)) / 4, not the mean of
  # list means ((ln 2 + softplus(-2)) / 2).
  s = jnp.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
  y = jnp.array([[2.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
  where = jnp.array([[True, True, True], [True, True, False]])
  expected = (3 * math.log(2.0) + math.log1p(math.exp(-2.0))) / 4
  np.testing.assert_allclose(ranking.pairwise_logistic_loss(s, y, where=where), expected,
                             rtol=1e-6)


def test_listmle_hand_value():
  # Labels [2, 0, 1] -> order (0, 2, 1), sorted scores (1, 0, 2):
  # [log(e + 1 + e^2) - 1] + [log(1 + e^2) - 0] + [2 - 2] = 1.407606 + 2.126928 = 3.534534.
  loss = ranking.listmle_loss(jnp.array([1.0, 2.0, 0.0]), jnp.array([2.0, 0.0, 1.0]))
  np.testing.assert_allclose(loss, 3.5345340, rtol=1e-6)


def test_listmle_ties_are_stable_and_key_breaks_them():
  # Tied labels keep input order: order (0, 1): loss = log(e^0 + e^3) - 0 + 0 = 3.048587.
  s, y = jnp.array([0.0, 3.0]), jnp.array([1.0, 1.0])
  np.testing.assert_allclose(ranking.listmle_loss(s, y), np.logaddexp(0.0, 3.0), rtol=1e-6)
  # Reversed input order -> order (1, 0): log(e^3 + e^0) - 3 = 0.048587.
  np.testing.assert_allclose(ranking.listmle_loss(s[::-1], y), np.logaddexp(0.0, 3.0) - 3.0,
                             rtol=1e-5)
  # A key gives one of the two orders, chosen by the uniform draw of that key.
  values = {round(float(ranking.listmle_loss(s, y, key=jax.random.PRNGKey(i))), 4)
            for i in range(8)}
  assert values == {3.0486, 0.0486}


def test_listmle_one_valid_item_is_zero():
  loss = ranking.listmle_loss(jnp.array([5.0, 1.0]), jnp.array([1.0, 0.0]),
                              where=jnp.array([True, False]))
  assert float(loss) == 0.0


def test_softmax_hand_value_and_normalised_labels():
  # -log softmax([2, 1, 3])_0 = log(e^2 + e + e^3) - 2 = 3.407606 - 2 = 1.407606.
  s = jnp.array([2.0, 1.0, 3.0])
  np.testing.assert_allclose(ranking.softmax_loss(s, jnp.array([1.0, 0.0, 0.0])), 1.4076059,
                             rtol=1e-6)
  # Raw labels [2, 0, 0] weigh the cross-entropy by 2; normalised they give the same 1.407606.
  y = jnp.array([2.0, 0.0, 0.0])
  np.testing.assert_allclose(ranking.softmax_loss(s, y), 2 * 1.4076059, rtol=1e-6)
  np.testing.assert_allclose(
      ranking.softmax_loss(s, y, label_fn=ranking.normalize_probabilities), 1.4076059, rtol=1e-6)


def test_normalize_probabilities():
  where = jnp.array([[True, True, True], [True, True, False], [False, False, False]])
  y = jnp.array([[2.0, 0.0, 2.0], [0.0, 0.0, 7.0], [1.0, 1.0, 1.0]])
  np.testing.assert_allclose(
      ranking.normalize_probabilities(y, where=where),
      [[0.5, 0.0, 0.5], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]])


def test_pointwise_hand_value():
  # y = 1, s = 0: log 2; y = 0.25, s = 2: 0.25·softplus(-2) + 0.75·softplus(2)
  #   = 0.25·0.126928 + 0.75·2.126928 = 1.626928; mean = (0.693147 + 1.626928) / 2 = 1.160038.
  loss = ranking.pointwise_sigmoid_loss(jnp.array([0.0, 2.0]), jnp.array([1.0, 0.25]))
  np.testing.assert_allclose(loss, 1.1600376, rtol=1e-6)


def test_pointwise_and_softmax_reject_bad_labels():
  with pytest.raises(ValueError, match="pointwise_sigmoid_loss: labels must lie in"):
    ranking.pointwise_sigmoid_loss(jnp.zeros(2), jnp.array([1.5, 0.0]))
  with pytest.raises(ValueError, match="softmax_loss: labels must lie in"):
    ranking.softmax_loss(jnp.zeros(2), jnp.array([-1.0, 0.0]))
  # Masked slots are not checked.
  ranking.softmax_loss(jnp.zeros(2), jnp.array([-1.0, 0.0]), where=jnp.array([False, True]))


def test_shape_mismatch_names_the_argument():
  with pytest.raises(ValueError, match="pairwise_hinge_loss: labels has shape"):
    ranking.pairwise_hinge_loss(jnp.zeros((2, 3)), jnp.zeros((2, 4)))
  with pytest.raises(ValueError, match="listmle_loss: where has shape"):
    ranking.listmle_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)), where=jnp.ones((3, 3), bool))


def test_docstring_examples_run():
  result = doctest.testmod(ranking, optionflags=doctest.ELLIPSIS, extraglobs={"jnp": jnp})
  assert result.attempted >= 6 and result.failed == 0


# ----------------------------------------------------------------------------------------------
# Against numpy float64 references.


@pytest.mark.parametrize("name", list(PAIR_LOSSES))
@pytest.mark.parametrize("seed", [0, 1])
def test_pairwise_matches_numpy(name, seed):
  fn, pair_fn = PAIR_LOSSES[name]
  s, y, m, w = _random(seed)
  got = fn(jnp.asarray(s), jnp.asarray(y), where=jnp.asarray(m), weights=jnp.asarray(w))
  np.testing.assert_allclose(got, np_pairwise(pair_fn, s, y, m, w), rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_list_losses_match_numpy(seed):
  s, y, m, w = _random(seed)
  m[0] = False  # one fully masked list
  args = (jnp.asarray(s), jnp.asarray(y))
  np.testing.assert_allclose(ranking.listmle_loss(*args, where=jnp.asarray(m)),
                             np_listmle(s, y, m), rtol=1e-5)
  for normalize in (False, True):
    got = ranking.softmax_loss(
        *args, where=jnp.asarray(m), weights=jnp.asarray(w),
        label_fn=ranking.normalize_probabilities if normalize else None)
    np.testing.assert_allclose(got, np_softmax(s, y, m, w, normalize), rtol=1e-5)
  yb = y / 3.0
  np.testing.assert_allclose(
      ranking.pointwise_sigmoid_loss(args[0], jnp.asarray(yb), where=jnp.asarray(m),
                                     weights=jnp.asarray(w)),
      np_pointwise(s, yb, m, w), rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Against the installed rax.

rax = pytest.importorskip("rax")

RAX_LAMBDAWEIGHTS = [
    (None, None),
    (lambdaweights.labeldiff_lambdaweight, "labeldiff_lambdaweight"),
    (lambdaweights.dcg_lambdaweight, "dcg_lambdaweight"),
    (functools.partial(lambdaweights.dcg_lambdaweight, topn=2, normalize=True),
     ("dcg_lambdaweight", dict(topn=2, normalize=True))),
    (functools.partial(lambdaweights.dcg2_lambdaweight, topn=3),
     ("dcg2_lambdaweight", dict(topn=3))),
]


def _rax_lambdaweight(spec):
  if spec is None:
    return None
  if isinstance(spec, str):
    return getattr(rax, spec)
  name, kwargs = spec
  return functools.partial(getattr(rax, name), **kwargs)


@pytest.mark.parametrize("name", ["logistic", "hinge", "soft_zero_one"])
@pytest.mark.parametrize("ours_lw,rax_lw", RAX_LAMBDAWEIGHTS)
def test_pairwise_matches_rax(name, ours_lw, rax_lw):
  s, y, m, w = (jnp.asarray(a, jnp.float32) for a in _random(3))
  m = m.astype(bool)
  ours = PAIR_LOSSES[name][0](s, y, where=m, weights=w, lambdaweight_fn=ours_lw)
  theirs = getattr(rax, f"pairwise_{name}_loss")(s, y, where=m, weights=w,
                                                   lambdaweight_fn=_rax_lambdaweight(rax_lw))
  np.testing.assert_allclose(ours, theirs, rtol=2e-6)
  # Unreduced: the same pair losses, laid out [..., K, K] here and [..., K*K] in rax.
  ours = PAIR_LOSSES[name][0](s, y, where=m, weights=w, reduce_fn=None)
  theirs = getattr(rax, f"pairwise_{name}_loss")(s, y, where=m, weights=w, reduce_fn=None)
  np.testing.assert_allclose(ours.reshape(theirs.shape), theirs, rtol=1e-6, atol=1e-7)


def test_pairwise_squared_matches_rax_generic_pairwise_loss():
  from rax._src.losses import pairwise_loss  # pylint: disable=g-import-not-at-top
  s, y, m, w = (jnp.asarray(a, jnp.float32) for a in _random(4))
  m = m.astype(bool)
  theirs = pairwise_loss(s, y, where=m, weights=w,
                         pair_loss_fn=lambda ds, dy: (jnp.square(1.0 - ds), dy > 0))
  np.testing.assert_allclose(ranking.pairwise_squared_loss(s, y, where=m, weights=w), theirs,
                             rtol=2e-6)


@pytest.mark.parametrize("seed", [5, 6])
def test_list_losses_match_rax(seed):
  s, y, m, w = (jnp.asarray(a, jnp.float32) for a in _random(seed))
  m = m.astype(bool)
  np.testing.assert_allclose(ranking.listmle_loss(s, y, where=m),
                             rax.listmle_loss(s, y, where=m), rtol=2e-6)
  key = jax.random.PRNGKey(seed)
  np.testing.assert_allclose(ranking.listmle_loss(s, y, where=m, key=key),
                             rax.listmle_loss(s, y, where=m, key=key), rtol=2e-6)
  np.testing.assert_allclose(ranking.softmax_loss(s, y, where=m, weights=w),
                             rax.softmax_loss(s, y, where=m, weights=w), rtol=2e-6)
  np.testing.assert_allclose(
      ranking.softmax_loss(s, y, where=m, label_fn=ranking.normalize_probabilities),
      rax.softmax_loss(s, y, where=m, label_fn=rax.utils.normalize_probabilities), rtol=2e-6)
  np.testing.assert_allclose(
      ranking.pointwise_sigmoid_loss(s, y / 3, where=m, weights=w),
      rax.pointwise_sigmoid_loss(s, y / 3, where=m, weights=w), rtol=2e-6)


# ----------------------------------------------------------------------------------------------
# Structural properties.


def _labels_for(name, y):
  return y / jnp.max(y) if name == "pointwise" else y


@pytest.mark.parametrize("name", list(ALL_LOSSES))
def test_reductions_are_consistent(name):
  fn = ALL_LOSSES[name]
  s, y, m, _ = (jnp.asarray(a) for a in _random(7))
  y = _labels_for(name, y)
  unreduced = fn(s, y, where=m, reduce_fn=None)
  total, count = fn(s, y, where=m, reduce_fn=arrays.sum_and_count)
  np.testing.assert_allclose(jnp.sum(unreduced), fn(s, y, where=m, reduce_fn=jnp.sum), rtol=1e-6)
  np.testing.assert_allclose(total, jnp.sum(unreduced), rtol=1e-6)
  np.testing.assert_allclose(total / count, fn(s, y, where=m), rtol=1e-6)
  expected_shape = {"listmle": (4,), "softmax": (4,), "pointwise": (4, 6)}.get(name, (4, 6, 6))
  assert unreduced.shape == expected_shape


@pytest.mark.parametrize("name", list(ALL_LOSSES))
def test_padding_with_garbage_changes_nothing(name):
  fn = ALL_LOSSES[name]
  s, y, m, w = (jnp.asarray(a, jnp.float32) for a in _random(8))
  m = m.astype(bool)
  y = _labels_for(name, y)
  pad = lambda a, v: jnp.concatenate([a, jnp.full(a.shape[:-1] + (2,), v, a.dtype)], -1)

  def loss(scores, labels, where, weights):
    return fn(scores, labels, where=where, weights=weights)

  base, base_grad = jax.value_and_grad(loss)(s, y, m, w)
  padded, padded_grad = jax.value_and_grad(loss)(pad(s, jnp.nan), pad(y, jnp.nan),
                                                 pad(m, False), pad(w, jnp.inf))
  np.testing.assert_allclose(padded, base, rtol=1e-6)
  np.testing.assert_allclose(padded_grad[..., :6], base_grad, rtol=1e-5, atol=1e-7)
  assert np.all(padded_grad[..., 6:] == 0.0)


@pytest.mark.parametrize("name", list(ALL_LOSSES))
def test_permutation_invariance(name):
  fn = ALL_LOSSES[name]
  s, y, m, w = (jnp.asarray(a, jnp.float32) for a in _random(9, levels=100))  # no label ties
  y = _labels_for(name, y)
  perm = np.random.default_rng(0).permutation(6)
  np.testing.assert_allclose(fn(s[:, perm], y[:, perm], where=m[:, perm], weights=w[:, perm]),
                             fn(s, y, where=m, weights=w), rtol=1e-6)


@pytest.mark.parametrize("name", list(PAIR_LOSSES))
def test_tied_labels_contribute_nothing(name):
  fn = PAIR_LOSSES[name][0]
  s = jnp.array([[1.0, -2.0, 0.5], [0.3, 0.1, 2.0]])
  y = jnp.array([[1.0, 1.0, 1.0], [2.0, 0.0, 0.0]])
  # The all-tied first list has no pair: the mean is that of the second list alone.
  np.testing.assert_allclose(fn(s, y), fn(s[1:], y[1:]), rtol=1e-6)
  np.testing.assert_array_equal(fn(s[:1], y[:1], reduce_fn=None), 0.0)


@pytest.mark.parametrize("name", list(ALL_LOSSES))
def test_everything_masked_is_zero_with_finite_grads(name):
  fn = ALL_LOSSES[name]
  s, y, _, _ = (jnp.asarray(a, jnp.float32) for a in _random(10))
  y = _labels_for(name, y)
  m = jnp.zeros(s.shape, bool)
  loss, grad = jax.value_and_grad(lambda x: fn(x, y, where=m))(s)
  assert float(loss) == 0.0
  assert np.all(grad == 0.0)


@pytest.mark.parametrize("name", list(ALL_LOSSES))
def test_jit_grad_vmap_bf16_and_large_scores(name):
  fn = ALL_LOSSES[name]
  s, y, m, _ = (jnp.asarray(a, jnp.float32) for a in _random(11))
  m = m.astype(bool)
  y = _labels_for(name, y)
  eager = fn(s, y, where=m)
  np.testing.assert_allclose(jax.jit(fn)(s, y, where=m), eager, rtol=1e-6)
  grad = jax.jit(jax.grad(lambda x: fn(x, y, where=m)))(s)
  assert grad.shape == s.shape and np.all(np.isfinite(grad))
  per_list = jax.vmap(lambda a, b, c: fn(a, b, where=c, reduce_fn=jnp.sum))(s, y, m)
  np.testing.assert_allclose(jnp.sum(per_list), fn(s, y, where=m, reduce_fn=jnp.sum), rtol=1e-6)
  # bfloat16 inputs are computed in float32.
  s16 = s.astype(jnp.bfloat16)
  out = fn(s16, y, where=m)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, fn(s16.astype(jnp.float32), y, where=m), rtol=1e-6)
  # Scores of magnitude 1e4: finite values and gradients.
  big = s * 1e4
  value, grad = jax.value_and_grad(lambda x: fn(x, y, where=m))(big)
  assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_lambdaweights_receive_no_gradient():
  s, y, _, _ = (jnp.asarray(a, jnp.float32) for a in _random(12))
  # A lambda weight λ_ij = s_i² that depends on the scores: without the stop-gradient it would
  # add 2·s_i·softplus(−(s_i − s_j)) to the gradient.
  score_squared = lambda scores, labels, **_: jnp.broadcast_to(
      scores[..., :, None] ** 2, scores.shape + scores.shape[-1:])

  def expected(x):
    lam = jax.lax.stop_gradient(x[..., :, None] ** 2)
    pair_losses = lam * jax.nn.softplus(-arrays.pairwise_differences(x))
    return jnp.sum(jnp.where(arrays.pair_mask(y), pair_losses, 0.0))

  got = jax.grad(lambda x: ranking.pairwise_logistic_loss(
      x, y, lambdaweight_fn=score_squared, reduce_fn=jnp.sum))(s)
  np.testing.assert_allclose(got, jax.grad(expected)(s), rtol=1e-5)
