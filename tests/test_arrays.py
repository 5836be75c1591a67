"""Tests of `alignment.arrays`: masks, pairs, reductions, checks and ranks, by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment import arrays


def test_pair_mask_is_strict_and_respects_where():
  labels = jnp.array([2.0, 0.0, 2.0, 1.0])
  # (i, j) with labels_i > labels_j: 0 > 1, 0 > 3, 2 > 1, 2 > 3, 3 > 1; the tie (0, 2) is no pair.
  want = np.zeros((4, 4), bool)
  for i, j in ((0, 1), (0, 3), (2, 1), (2, 3), (3, 1)):
    want[i, j] = True
  np.testing.assert_array_equal(arrays.pair_mask(labels), want)
  where = jnp.array([True, True, False, True])
  want[2] = want[:, 2] = False
  np.testing.assert_array_equal(arrays.pair_mask(labels, where), want)
  assert arrays.list_mask(jnp.array([[False, False], [False, True]])).tolist() == [False, True]


def test_order_pairs_orders_by_labels_and_weights_the_chosen_item():
  logps = jnp.array([[-1.0, -2.0], [-3.0, -4.0], [-5.0, -6.0]])
  labels = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # in order, swapped, tied
  weights = jnp.array([[0.5, 2.0], [0.5, 2.0], [0.5, 2.0]])
  pairs = arrays.order_pairs("f", logps, labels, None, weights)
  assert pairs.valid.tolist() == [True, True, False]
  assert pairs.swap.tolist() == [False, True, False]
  np.testing.assert_array_equal(pairs.weight, [0.5, 2.0, 0.5])
  chosen, rejected = arrays.chosen_rejected(logps, pairs.swap)
  np.testing.assert_array_equal(chosen, [-1.0, -4.0, -5.0])
  np.testing.assert_array_equal(rejected, [-2.0, -3.0, -6.0])
  # Per-pair losses [1, 2, 3] weighted [0.5, 2, ·]: mean over the two valid pairs (0.5 + 4)/2.
  loss = jnp.array([1.0, 2.0, 3.0])
  assert float(arrays.reduce_pairs(loss, pairs, jnp.mean)) == 2.25
  with pytest.raises(ValueError, match=r"f: pairwise objectives take \[\.\.\., 2\] inputs"):
    arrays.order_pairs("f", jnp.zeros((2, 3)), None, None, None)
  np.testing.assert_array_equal(
      arrays.pair_valid(jnp.array([[True, False], [True, True]]), (2, 2)), [False, True])


def test_reduce_loss_contract():
  values = jnp.array([1.0, jnp.nan, 3.0, 4.0])
  mask = jnp.array([True, False, True, False])
  np.testing.assert_array_equal(arrays.reduce_loss(values, mask, None), [1.0, 0.0, 3.0, 0.0])
  assert float(arrays.reduce_loss(values, mask, jnp.mean)) == 2.0
  assert float(arrays.reduce_loss(values, mask, jnp.sum)) == 4.0
  total, count = arrays.reduce_loss(values, mask, arrays.sum_and_count)
  assert (float(total), float(count)) == (4.0, 2.0)
  # Nothing valid: 0 with a finite (zero) gradient.
  value, grad = jax.value_and_grad(
      lambda x: arrays.reduce_loss(x, jnp.zeros(4, bool), jnp.mean))(values)
  assert float(value) == 0.0 and np.all(np.asarray(grad) == 0.0)


def test_as_mean_over_gives_the_subset_mean_under_every_reduction():
  # Valid entries 0..3 (N = 4); subset {0, 1}; Σ_subset = 1 + 3 = 4 over denominator 8: 0.5.
  values = jnp.array([1.0, 3.0, 5.0, 7.0, 9.0])
  subset = jnp.array([True, True, False, False, True])
  valid = jnp.array([True, True, True, True, False])
  shares = arrays.as_mean_over(values, subset, valid, 8.0)
  np.testing.assert_allclose(shares, [0.5, 1.5, 0.0, 0.0, 0.0])
  assert float(arrays.reduce_loss(shares, valid, jnp.mean)) == 0.5
  total, count = arrays.reduce_loss(shares, valid, arrays.sum_and_count)
  assert (float(total), float(count)) == (2.0, 4.0)


def test_masked_mean_and_logsumexp_ignore_masked_infinities():
  x = jnp.array([[1.0, jnp.inf, 3.0], [jnp.nan, 0.0, 0.0]])
  mask = jnp.array([[True, False, True], [False, False, False]])
  np.testing.assert_allclose(arrays.masked_mean(x, mask, axis=-1), [2.0, 0.0])
  # log(e^1 + e^3) = 3 + log(1 + e^−2); an empty row gives 0.
  np.testing.assert_allclose(arrays.masked_logsumexp(x, mask), [3 + np.log1p(np.exp(-2)), 0.0],
                             rtol=1e-6)
  grad = jax.grad(lambda v: jnp.sum(arrays.masked_logsumexp(v, mask)))(x)
  assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[~np.asarray(mask)] == 0.0)


def test_ranks():
  values = jnp.array([1.0, 3.0, 1.0, 2.0])
  valid = jnp.array([True, True, True, False])
  # Valid items by descending value, ties by index: 1 (3.0), 0 (1.0), 2 (1.0); invalid 3 last.
  assert arrays.descending_ranks(values, valid).tolist() == [2, 1, 3, 4]
  # A tie-break value reverses the tied pair (item 2 has the smaller tie-break).
  tiebreak = jnp.array([0.9, 0.0, 0.1, 0.0])
  assert arrays.descending_ranks(values, valid, tiebreak=tiebreak).tolist() == [3, 1, 2, 4]
  # "1224" ranking: tied items share the best position.
  assert arrays.competition_ranks(jnp.array([3.0, 1.0, 3.0]), jnp.ones(3, bool)).tolist() == [
      1, 3, 1]


def test_length_normalized():
  np.testing.assert_allclose(arrays.length_normalized(jnp.array([-4.0, -3.0]), jnp.array([2, 0])),
                             [-2.0, -3.0])  # lengths are clamped to >= 1
  assert arrays.length_normalized(jnp.array([-4.0])).dtype == jnp.float32


def test_checks_name_the_function_and_the_argument():
  with pytest.raises(ValueError, match=r"f: beta must lie in \(0.0, inf\), got 0.0"):
    arrays.check_positive("beta", 0.0, where="f")
  with pytest.raises(ValueError, match=r"f: eps must lie in \[0.0, 0.5\), got 0.5"):
    arrays.check_range("eps", 0.5, low=0.0, high=0.5, high_inclusive=False, where="f")
  with pytest.raises(ValueError, match=r"f: mode must be one of \('a', 'b'\), got 'c'"):
    arrays.check_choice("mode", "c", ("a", "b"), where="f")
  with pytest.raises(ValueError, match="f: `lengths` is required"):
    arrays.require("f", None, "lengths")
  with pytest.raises(ValueError, match=r"f: `x` must have shape \[\.\.\., 2\]"):
    arrays.check_pair_layout("f", "x", jnp.zeros(3))
  with pytest.raises(ValueError, match=r"f: p must lie in \[0.0, 1.0\]; 1 entries do not, "
                                       r"e.g. 2.0 at index \(1,\)"):
    arrays.check_array_range("p", jnp.array([0.5, 2.0, 3.0]), low=0.0, high=1.0,
                             mask=jnp.array([True, True, False]), where="f")
  # Traced values cannot be inspected: no error under jit.
  assert arrays.concrete_float(2) == 2.0
  jax.jit(lambda b: arrays.check_positive("beta", b) or b)(0.0)


def test_check_shapes_broadcast_or_exact():
  x = jnp.zeros((2, 3))
  arrays.check_shapes("f", "x", x, labels=jnp.zeros(3), where=None)  # broadcasts
  with pytest.raises(ValueError, match=r"f: labels has shape \(2,\), which does not broadcast"):
    arrays.check_shapes("f", "x", x, labels=jnp.zeros(2))
  with pytest.raises(ValueError, match=r"f: labels has shape \(3,\), which does not equal the "
                                       r"shape \(2, 3\) of x"):
    arrays.check_shapes("f", "x", x, exact=True, labels=jnp.zeros(3))


def test_dtypes():
  assert arrays.f32(jnp.array([1], jnp.int32)).dtype == jnp.float32
  assert arrays.as_float(jnp.array([1.0], jnp.bfloat16)).dtype == jnp.float32
