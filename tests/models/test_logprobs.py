"""Tests of alignment.models.logprobs: chunked log-probs equal the naive float32 ones, in value
and gradient, and never hold [N, V] float32 logits."""

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment.models import config as config_lib
from alignment.models import logprobs
from alignment.models import transformer


def _np_reference(hidden, head, targets, c1, c2):
  """float64 numpy: lp, log Σ p², and the gradients of Σ c1·lp + c2·log Σ p² w.r.t. h and W."""
  h, w = np.asarray(hidden, np.float64), np.asarray(head, np.float64)
  z = h @ w
  m = z.max(axis=1, keepdims=True)
  lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
  lse2 = 2 * m[:, 0] + np.log(np.exp(2 * (z - m)).sum(axis=1))
  lp = z[np.arange(len(targets)), targets] - lse
  p, p2 = np.exp(z - lse[:, None]), np.exp(2 * z - lse2[:, None])
  onehot = np.eye(w.shape[1])[targets]
  dz = c1[:, None] * (onehot - p) + c2[:, None] * (2 * p2 - 2 * p)
  return lp, lse2 - 2 * lse, dz @ w.T, h.T @ dz


def _naive(hidden, head, targets, soft_cap=None):
  z = jnp.einsum("...d,dv->...v", hidden, head, preferred_element_type=jnp.float32)
  z = transformer.soft_cap(z, soft_cap)
  lp = jnp.take_along_axis(jax.nn.log_softmax(z), targets[..., None], axis=-1)[..., 0]
  return lp, jax.nn.logsumexp(2 * z, axis=-1) - 2 * jax.nn.logsumexp(z, axis=-1)


def _inputs(seed, n, d, v, scale=1.0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, d)).astype(np.float32),
          (scale * rng.normal(size=(d, v)) / np.sqrt(d)).astype(np.float32),
          rng.integers(0, v, size=n).astype(np.int32),
          rng.normal(size=n), rng.normal(size=n))


@pytest.mark.parametrize("n, v, chunk_size, vocab_chunk_size", [
    (37, 101, 8, 16),     # neither size divides: last chunks are shifted back and masked
    (32, 96, 8, 32),      # both divide
    (5, 50, 1024, None),  # one tile holds everything
    (19, 70, 1, 69),      # one token per chunk; a 1-column last vocabulary chunk
])
def test_values_and_gradients_match_references(n, v, chunk_size, vocab_chunk_size):
  hidden, head, targets, c1, c2 = _inputs(n * v, n, 16, v, scale=3.0)

  def objective(fn):
    def f(h, w):
      lp, lss = fn(h, w)
      return jnp.sum(lp * c1 + lss * c2), (lp, lss)
    return jax.value_and_grad(f, (0, 1), has_aux=True)

  def chunked(h, w):
    return logprobs.token_logps(h, w, jnp.asarray(targets), chunk_size=chunk_size,
                                vocab_chunk_size=vocab_chunk_size, return_log_sum_sq=True)

  (_, (lp, lss)), (d_h, d_w) = jax.jit(objective(chunked))(hidden, head)
  ref_lp, ref_lss, ref_dh, ref_dw = _np_reference(hidden, head, targets, c1, c2)
  np.testing.assert_allclose(lp, ref_lp, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(lss, ref_lss, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(d_h, ref_dh, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(d_w, ref_dw, atol=1e-5, rtol=1e-5)
  # And against autodiff through the naive float32 computation.
  (_, naive_outputs), naive_grads = jax.jit(objective(
      lambda h, w: _naive(h, w, jnp.asarray(targets))))(hidden, head)
  for got, want in zip((lp, lss, d_h, d_w), naive_outputs + naive_grads):
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_soft_capped_values_and_gradients_match_naive_autodiff():
  # Gemma 2's final soft-cap z = c·tanh(u / c) inside the tiles (logits up to ~10 here, so a cap
  # of 2.5 bends them) and its chain rule in the custom backward pass.
  hidden, head, targets, c1, c2 = _inputs(7, 23, 16, 41, scale=3.0)
  targets = jnp.asarray(targets)

  def objective(fn):
    return jax.jit(jax.value_and_grad(
        lambda h, w: jnp.sum(fn(h, w)[0] * c1 + fn(h, w)[1] * c2), (0, 1)))

  chunked = objective(lambda h, w: logprobs.token_logps(
      h, w, targets, chunk_size=8, vocab_chunk_size=16, return_log_sum_sq=True, soft_cap=2.5))
  (value, grads), (want, want_grads) = chunked(hidden, head), objective(
      lambda h, w: _naive(h, w, targets, soft_cap=2.5))(hidden, head)
  np.testing.assert_allclose(value, want, rtol=1e-5)
  for got, ref in zip(grads, want_grads):
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-5)
  uncapped = _naive(hidden, head, targets)[0]
  assert float(jnp.max(jnp.abs(uncapped - _naive(hidden, head, targets, 2.5)[0]))) > 0.5


def test_log_probs_only_gradient_and_leading_dims():
  # Leading axes [2] are kept whole in each tile: chunk_size 10 -> 10 // 2 = 5 positions of 13.
  hidden, head, targets, c1, _ = _inputs(1, 26, 8, 30)
  f = lambda h, w: jnp.sum(logprobs.token_logps(h, w, jnp.asarray(targets).reshape(2, 13),
                                                chunk_size=10, vocab_chunk_size=7)
                           * c1.reshape(2, 13))
  value, (d_h, d_w) = jax.value_and_grad(f, (0, 1))(hidden.reshape(2, 13, 8), head)
  ref_lp, _, ref_dh, ref_dw = _np_reference(hidden, head, targets, c1, np.zeros(26))
  np.testing.assert_allclose(value, ref_lp @ c1, rtol=1e-5)
  np.testing.assert_allclose(d_h.reshape(26, 8), ref_dh, atol=1e-5)
  np.testing.assert_allclose(d_w, ref_dw, atol=1e-5)


def test_hand_computed_values():
  # z = h @ W = [[2, 0, 0], [0, 0, 0]].
  # Row 0, target 0: lp = 2 - log(e² + 2) = 2 - log(9.389056) = 2 - 2.239545 = -0.239545.
  #   p = [e², 1, 1] / (e² + 2); Σ p² = (e⁴ + 2) / (e² + 2)² = 56.598150 / 88.154374 = 0.642035,
  #   log Σ p² = -0.443113.
  # Row 1, target 2: uniform over 3, lp = -log 3 = -1.098612; Σ p² = 1/3, log Σ p² = -1.098612.
  hidden = jnp.array([[2.0, 0.0], [0.0, 0.0]])
  head = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
  lp, lss = logprobs.token_logps(hidden, head, jnp.array([0, 2]), chunk_size=1,
                                 vocab_chunk_size=2, return_log_sum_sq=True)
  np.testing.assert_allclose(lp, [-0.239545, -1.098612], atol=1e-6)
  np.testing.assert_allclose(lss, [-0.443113, -1.098612], atol=1e-6)
  # d lp_1 / d z_1 = onehot(2) - 1/3 = [-1/3, -1/3, 2/3]; d lp_1 / d h_1 = W · that = [-1/3, -1/3].
  d_h = jax.grad(lambda h: logprobs.token_logps(h, head, jnp.array([0, 2]), chunk_size=1,
                                                vocab_chunk_size=2)[1])(hidden)
  np.testing.assert_allclose(d_h, [[0.0, 0.0], [-1 / 3, -1 / 3]], atol=1e-6)


def test_bfloat16_inputs_accumulate_in_float32():
  hidden, head, targets, c1, _ = _inputs(2, 24, 32, 64)
  h16, w16 = jnp.asarray(hidden, jnp.bfloat16), jnp.asarray(head, jnp.bfloat16)
  lp = logprobs.token_logps(h16, w16, jnp.asarray(targets), chunk_size=7, vocab_chunk_size=10)
  assert lp.dtype == jnp.float32
  # Reference: float64 on the bf16-rounded inputs (the products are exact in float32).
  ref_lp, _, ref_dh, ref_dw = _np_reference(np.asarray(h16, np.float32),
                                            np.asarray(w16, np.float32), targets, c1,
                                            np.zeros(24))
  np.testing.assert_allclose(lp, ref_lp, atol=1e-5, rtol=1e-5)
  d_h, d_w = jax.grad(lambda h, w: jnp.sum(logprobs.token_logps(
      h, w, jnp.asarray(targets), chunk_size=7, vocab_chunk_size=10) * c1), (0, 1))(h16, w16)
  assert d_h.dtype == jnp.bfloat16 and d_w.dtype == jnp.bfloat16
  # The cotangent tile is rounded to bf16 before its matmuls: bf16 precision (~2⁻⁸ relative).
  np.testing.assert_allclose(np.asarray(d_h, np.float32), ref_dh, atol=2e-2, rtol=2e-2)
  np.testing.assert_allclose(np.asarray(d_w, np.float32), ref_dw, atol=2e-2, rtol=2e-2)


def test_vmap_and_out_of_range_target():
  hidden, head, targets, _, _ = _inputs(3, 12, 8, 20)
  batched = jax.vmap(lambda h, t: logprobs.token_logps(h, head, t, chunk_size=5,
                                                       vocab_chunk_size=6))(
      hidden.reshape(2, 6, 8), targets.reshape(2, 6))
  np.testing.assert_allclose(batched.reshape(12), _np_reference(
      hidden, head, targets, np.zeros(12), np.zeros(12))[0], atol=1e-5)
  bad = logprobs.token_logps(hidden, head, jnp.asarray(targets).at[3].set(20), chunk_size=5)
  assert np.isnan(bad[3]) and np.isfinite(np.delete(np.asarray(bad), 3)).all()


def test_bad_arguments_are_named():
  h, w, t = jnp.zeros((4, 8)), jnp.zeros((8, 10)), jnp.zeros((4,), jnp.int32)
  with pytest.raises(ValueError, match="hidden width 8 != head rows 7"):
    logprobs.token_logps(h, jnp.zeros((7, 10)), t)
  with pytest.raises(ValueError, match="targets shape"):
    logprobs.token_logps(h, w, jnp.zeros((5,), jnp.int32))
  with pytest.raises(ValueError, match="targets must be integers"):
    logprobs.token_logps(h, w, jnp.zeros((4,)))
  with pytest.raises(ValueError, match="chunk_size must be a positive int"):
    logprobs.token_logps(h, w, t, chunk_size=0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_memory_chunked_forward_backward_under_one_eighth_of_naive(dtype):
  """Compile-only: batch 8 x length 1024 tokens, width 512, vocabulary 128k."""
  b, t, d, v = 8, 1024, 512, 128 * 1024
  n = b * t
  args = (jax.ShapeDtypeStruct((b, t, d), dtype), jax.ShapeDtypeStruct((d, v), dtype),
          jax.ShapeDtypeStruct((b, t), jnp.int32))

  def temp_bytes(fn):
    loss = lambda h, w, t: jnp.sum(fn(h, w, t))
    start = time.perf_counter()
    compiled = jax.jit(jax.value_and_grad(loss, (0, 1))).lower(*args).compile()
    return compiled.memory_analysis().temp_size_in_bytes, time.perf_counter() - start

  naive, _ = temp_bytes(lambda h, w, t: _naive(h, w, t)[0])
  chunked, seconds = temp_bytes(logprobs.token_logps)
  logits_bytes = n * v * 4  # one [N, V] float32 array: 4 GiB
  assert naive >= logits_bytes
  assert chunked * 8 <= naive, (chunked, naive)
  # Below 1/8 of a single [N, V] float32 array. (With bf16 inputs XLA:CPU keeps one float32
  # copy of the [D, V] head, 256 MiB, since it has no bf16 matmul; float32 needs ~82 MiB.)
  assert chunked * 8 < logits_bytes, (chunked, logits_bytes)
  assert seconds < 30


def _tiny(**overrides):
  return config_lib.get_config("tiny", dtype=jnp.float32, depth=1, **overrides)


def _batch():
  # docs/interfaces.md#batches example plus a random row; B = 2, K = 2, T = 6.
  rng = np.random.default_rng(0)
  tokens = np.array([[[1, 2, 3, 4, 5, 0], [1, 2, 3, 6, 0, 0]],
                     rng.integers(1, 32, size=(2, 6))], np.int32)
  segment_ids = np.array([[[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]],
                          [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]]], np.int32)
  positions = np.where(segment_ids > 0, np.arange(6), 0).astype(np.int32)
  mask = np.array([[[0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 0, 0]],
                   [[0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 1, 0]]], bool)
  return tokens, positions, segment_ids, mask


@pytest.mark.parametrize("overrides", [
    dict(tie_embeddings=False), dict(tie_embeddings=True),
    dict(final_logit_softcap=0.05, sliding_window=2),  # Gemma 2's cap bends these tiny logits.
])
def test_sequence_logps_matches_naive_values_and_gradients(overrides):
  config = _tiny(**overrides)
  params = transformer.init_params(config, jax.random.key(1))
  batch = _batch()
  chunked = lambda p: logprobs.sequence_logps(config, p, *batch, chunk_size=5,
                                              vocab_chunk_size=7)
  naive = lambda p: transformer.naive_sequence_logps(config, p, *batch)
  (logps, counts), (ref_logps, ref_counts) = jax.jit(chunked)(params), jax.jit(naive)(params)
  np.testing.assert_allclose(logps, ref_logps, atol=1e-5, rtol=1e-5)
  np.testing.assert_array_equal(counts, [[2, 1], [4, 4]])
  np.testing.assert_array_equal(counts, ref_counts)
  weights = jnp.array([[1.0, -2.0], [0.5, 3.0]])
  grads = jax.jit(jax.grad(lambda p: jnp.sum(chunked(p)[0] * weights)))(params)
  ref_grads = jax.jit(jax.grad(lambda p: jnp.sum(naive(p)[0] * weights)))(params)
  for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-4)


def test_sequence_logps_per_token_and_log_sum_sq():
  config = _tiny()
  params = transformer.init_params(config, jax.random.key(2))
  tokens, positions, segment_ids, mask = _batch()
  logps, counts, per_token, log_sum_sq = logprobs.sequence_logps(
      config, params, tokens, positions, segment_ids, mask, chunk_size=4,
      return_per_token=True, return_log_sum_sq=True)
  z = np.asarray(transformer.logits(config, params, transformer.apply(
      config, params, tokens, positions, segment_ids)), np.float64)[..., :-1, :]
  lse = np.log(np.exp(z).sum(-1))
  ref_per_token = np.take_along_axis(z, tokens[..., 1:, None], -1)[..., 0] - lse
  ref_lss = np.log(np.exp(2 * z).sum(-1)) - 2 * lse
  counted = mask[..., 1:]
  np.testing.assert_allclose(per_token[..., 0], 0.0)
  np.testing.assert_allclose(per_token[..., 1:], np.where(counted, ref_per_token, 0), atol=1e-5)
  np.testing.assert_allclose(log_sum_sq[..., 1:], np.where(counted, ref_lss, 0), atol=1e-5)
  np.testing.assert_allclose(per_token.sum(-1), logps, atol=1e-6)
  assert counts.dtype == jnp.int32 and per_token.shape == tokens.shape


def test_packed_sequences_score_like_separate_rows():
  config = _tiny()
  params = transformer.init_params(config, jax.random.key(3))
  a, b = [1, 2, 3, 4], [5, 6, 7]
  # Packed row: segment 2 starts with a completion token, which must not be scored from a's end.
  score = jax.jit(functools.partial(logprobs.sequence_logps, config))
  packed = score(
      params, np.array([a + b]), np.array([[0, 1, 2, 3, 0, 1, 2]]),
      np.array([[1, 1, 1, 1, 2, 2, 2]]), np.array([[0, 0, 1, 1, 1, 1, 1]], bool))
  separate = score(
      params, np.array([a + [0, 0, 0], b + [0, 0, 0, 0]]),
      np.array([[0, 1, 2, 3, 0, 0, 0], [0, 1, 2, 0, 0, 0, 0]]),
      np.array([[1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0]]),
      np.array([[0, 0, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0]], bool))
  np.testing.assert_array_equal(packed[1], [4])  # tokens 3, 4 of a; 6, 7 of b
  np.testing.assert_array_equal(separate[1], [2, 2])
  np.testing.assert_allclose(packed[0], separate[0].sum(keepdims=True), atol=1e-5)


def test_sequence_logps_rejects_mismatched_mask():
  config = _tiny()
  params = transformer.init_params(config, jax.random.key(0))
  tokens, positions, segment_ids, mask = _batch()
  with pytest.raises(ValueError, match="completion_mask has shape"):
    logprobs.sequence_logps(config, params, tokens, positions, segment_ids, mask[..., :-1])
