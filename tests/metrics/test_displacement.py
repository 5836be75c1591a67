"""Tests of `alignment.metrics.displacement`: log-prob changes and CHES, by hand and against the
reference code's semantics."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment import metrics as M
from tests.metrics.helpers import run


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
  rng = np.random.default_rng(6)
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


def test_jit_of_ches():
  hidden = np.random.default_rng(24).normal(size=(2, 4, 3)).astype(np.float32)
  mask = np.array([[0, 1, 1, 0], [0, 1, 0, 0]], bool)
  np.testing.assert_allclose(jax.jit(M.ches)(hidden, mask, hidden, mask),
                             M.ches(hidden, mask, hidden, mask), rtol=1e-6)
  np.testing.assert_allclose(jax.jit(M.ln_ches)(hidden, mask, hidden, mask),
                             M.ln_ches(hidden, mask, hidden, mask), rtol=1e-6)


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match="ches: `rejected` hidden states"):
    M.ches(jnp.zeros((2, 4, 3)), jnp.ones((2, 4), bool), jnp.zeros((2, 4, 3)),
           jnp.ones((2, 5), bool))
