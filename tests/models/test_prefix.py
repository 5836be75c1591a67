"""Tests of prefix-shared scoring and sequence packing (alignment/models/prefix.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment.models import config as config_lib
from alignment.models import prefix
from alignment.models import transformer

CONFIG = config_lib.get_config("tiny", dtype=jnp.float32, qkv_bias=True)
CONFIG_TIED = config_lib.get_config("tiny", dtype=jnp.float32, tie_embeddings=True)
# Gemma 2's features: a window of 3 on layer 0 (shorter than prompt + response, so windowed
# layers must count positions, not slots, in the shared row) and soft-caps.
CONFIG_GEMMA2 = config_lib.get_config(
    "tiny", dtype=jnp.float32, tie_embeddings=True, scale_embeddings=True,
    norm_unit_offset=True, mlp_activation="gelu_tanh", post_norms=True, attn_logit_softcap=0.5,
    final_logit_softcap=0.5, sliding_window=3, sliding_window_layers="alternate")


def _params(config, seed=0):
  """Initial params plus noise on every leaf (non-trivial biases and norm scales)."""
  params = transformer.init_params(config, jax.random.key(seed))
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  return jax.tree.unflatten(
      treedef, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def _batch(seed, b=2, k=3, p=5, r=4, vocab=32):
  """Random right-padded prompts, responses of 2..R tokens; the last row's last slot is empty."""
  rng = np.random.default_rng(seed)
  prompt_lengths = rng.integers(1, p, b).astype(np.int32)  # Padded prompts ...
  prompt_lengths[0] = p  # ... and one full prompt.
  response_lengths = rng.integers(2, r + 1, (b, k)).astype(np.int32)
  response_lengths[-1, -1] = 0
  prompts = rng.integers(1, vocab, (b, p)).astype(np.int32)
  prompts[np.arange(p)[None] >= prompt_lengths[:, None]] = 0
  responses = rng.integers(1, vocab, (b, k, r)).astype(np.int32)
  response_mask = np.arange(r)[None, None] < response_lengths[..., None]
  responses[~response_mask] = 0
  return prompts, prompt_lengths, responses, response_mask


def _independent_rows(prompts, prompt_lengths, responses, response_mask):
  """The docs/interfaces.md#batches layout: one row [prompt, response_k, padding] per response."""
  b, k, r = responses.shape
  t = prompts.shape[1] + r
  tokens = np.zeros((b, k, t), np.int32)
  completion = np.zeros((b, k, t), bool)
  for i in range(b):
    for j in range(k):
      resp = responses[i, j][response_mask[i, j]]
      row = np.concatenate([prompts[i, :prompt_lengths[i]], resp])
      tokens[i, j, :len(row)] = row
      completion[i, j, prompt_lengths[i]:len(row)] = True
  lengths = prompt_lengths[:, None] + response_mask.sum(-1)
  segments = (np.arange(t)[None, None] < lengths[..., None]).astype(np.int32)
  positions = np.where(segments == 1, np.arange(t), 0).astype(np.int32)
  return tokens, positions, segments, completion


shared = jax.jit(prefix.prefix_shared_logps, static_argnums=0)
naive = jax.jit(transformer.naive_sequence_logps, static_argnums=0)


@pytest.mark.parametrize("config", [CONFIG, CONFIG_TIED, CONFIG_GEMMA2],
                         ids=["untied_bias", "tied", "gemma2_window_softcaps"])
def test_prefix_shared_equals_independent_scoring(config):
  params = _params(config)
  batch = _batch(0)
  logps, counts = shared(config, params, *batch)
  want, want_counts = naive(config, params, *_independent_rows(*batch))
  assert logps.shape == counts.shape == (2, 3)
  np.testing.assert_array_equal(counts, batch[3].sum(-1))
  np.testing.assert_array_equal(want_counts, counts)
  np.testing.assert_allclose(logps, want, atol=1e-5, rtol=1e-6)
  assert logps[-1, -1] == 0.0  # Empty slot.
  assert np.all(np.asarray(logps)[batch[3].any(-1)] < 0)


def test_prefix_shared_gradients_equal_independent_gradients():
  params = _params(CONFIG, seed=3)
  batch = _batch(1, b=2, k=2, p=4, r=3)
  rows = _independent_rows(*batch)
  weights = jnp.array([[1.0, -0.5], [0.7, 0.0]])  # A signed combination, as in a preference loss.
  grad = jax.jit(jax.grad(lambda p: jnp.sum(weights * prefix.prefix_shared_logps(
      CONFIG, p, *batch, chunk_size=5, vocab_chunk_size=16)[0])))(params)
  want = jax.jit(jax.grad(lambda p: jnp.sum(
      weights * transformer.naive_sequence_logps(CONFIG, p, *rows)[0])))(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4), grad, want)


def test_responses_do_not_see_each_other():
  params = _params(CONFIG)
  prompts, lengths, responses, mask = _batch(2)
  logps, _ = shared(CONFIG, params, prompts, lengths, responses, mask)
  changed = responses.copy()
  changed[:, 1] = (changed[:, 1] + 5) % CONFIG.vocab_size
  logps2, _ = shared(CONFIG, params, prompts, lengths, changed, mask)
  np.testing.assert_allclose(logps2[:, [0, 2]], logps[:, [0, 2]], atol=1e-6)
  assert np.all(np.abs(np.asarray(logps2[:, 1] - logps[:, 1])) > 1e-4)
  # Prompt padding is invisible: different ids on padded prompt slots change nothing.
  padded = prompts.copy()
  padded[np.arange(prompts.shape[1])[None] >= lengths[:, None]] = 7
  logps3, _ = shared(CONFIG, params, padded, lengths, responses, mask)
  np.testing.assert_allclose(logps3, logps, atol=1e-6)


def test_prefix_shared_layout_by_hand():
  # B=1, P=3 with 2 real prompt tokens [a, b]; K=2, R=2: response 1 = [c, d], response 2 = [e].
  tokens, positions, mask = prefix.prefix_shared_layout(
      jnp.array([[10, 11, 0]]), jnp.array([2]), jnp.array([[[12, 13], [14, 0]]]),
      jnp.array([[[True, True], [True, False]]]))
  np.testing.assert_array_equal(tokens, [[10, 11, 0, 12, 13, 14, 0]])
  np.testing.assert_array_equal(positions, [[0, 1, 2, 2, 3, 2, 3]])
  #              a  b  pad c  d  e  pad     (key slots)
  want = np.array([[1, 0, 0, 0, 0, 0, 0],   # a
                   [1, 1, 0, 0, 0, 0, 0],   # b
                   [1, 1, 0, 0, 0, 0, 0],   # prompt pad (sees the prompt; unused)
                   [1, 1, 0, 1, 0, 0, 0],   # c
                   [1, 1, 0, 1, 1, 0, 0],   # d
                   [1, 1, 0, 0, 0, 1, 0],   # e: not c, d
                   [1, 1, 0, 0, 0, 1, 0]],  # response pad (unused)
                  bool)
  np.testing.assert_array_equal(mask[0], want)


def test_prefix_shared_bfloat16_is_close():
  config = config_lib.get_config("tiny", qkv_bias=True)  # bfloat16 compute.
  params = _params(config)
  batch = _batch(4)
  logps, _ = shared(config, params, *batch)
  want, _ = shared(CONFIG, params, *batch)
  np.testing.assert_allclose(logps, want, rtol=0.05, atol=0.1)


def test_prefix_shared_rejects_bad_shapes():
  params = _params(CONFIG)
  prompts, lengths, responses, mask = _batch(0)
  with pytest.raises(ValueError, match="response_mask"):
    prefix.prefix_shared_logps(CONFIG, params, prompts, lengths, responses, mask[..., :2])
  with pytest.raises(ValueError, match="prompt_lengths"):
    prefix.prefix_shared_logps(CONFIG, params, prompts, lengths[:1], responses, mask)
  with pytest.raises(ValueError, match=r"\[B, K, R\]"):
    prefix.prefix_shared_logps(CONFIG, params, prompts, lengths, responses[:, 0], mask[:, 0])


def test_pack_sequences_layout_by_hand():
  out = prefix.pack_sequences([[1, 2, 3], [4, 5, 6, 7], [8], [9, 9]], row_length=5,
                              masks=[[0, 1, 1], [0, 0, 1, 1], [1], [0, 1]])
  # First fit: [1,2,3] -> row 0 (3 used); [4..7] does not fit -> row 1; [8] -> row 0 (4 used);
  # [9,9] fits neither (row 0 has 1 free, row 1 has 1 free) -> row 2.
  np.testing.assert_array_equal(out["tokens"], [[1, 2, 3, 8, 0], [4, 5, 6, 7, 0],
                                                [9, 9, 0, 0, 0]])
  np.testing.assert_array_equal(out["segment_ids"], [[1, 1, 1, 2, 0], [1, 1, 1, 1, 0],
                                                     [1, 1, 0, 0, 0]])
  np.testing.assert_array_equal(out["positions"], [[0, 1, 2, 0, 0], [0, 1, 2, 3, 0],
                                                   [0, 1, 0, 0, 0]])
  np.testing.assert_array_equal(out["mask"], [[0, 1, 1, 1, 0], [0, 0, 1, 1, 0], [0, 1, 0, 0, 0]])
  np.testing.assert_array_equal(out["row"], [0, 1, 0, 2])
  np.testing.assert_array_equal(out["start"], [0, 0, 3, 0])
  with pytest.raises(ValueError, match="sequence 1 has length 6"):
    prefix.pack_sequences([[1], [1] * 6], row_length=5)
  with pytest.raises(ValueError, match="sequence 0 has length 0"):
    prefix.pack_sequences([[]], row_length=5)
  with pytest.raises(ValueError, match="mask 0 has length 1"):
    prefix.pack_sequences([[1, 2]], row_length=5, masks=[[1]])


def test_packed_rows_equal_independent_rows():
  params = _params(CONFIG)
  rng = np.random.default_rng(5)
  sequences = [rng.integers(1, CONFIG.vocab_size, n).tolist() for n in (5, 3, 4, 2, 6)]
  completions = [[False] + [True] * (len(seq) - 1) for seq in sequences]
  packed = prefix.pack_sequences(sequences, row_length=10, masks=completions)
  assert packed["tokens"].shape[0] < len(sequences)  # Something was actually packed.
  apply = jax.jit(transformer.apply, static_argnums=0)
  hidden = apply(CONFIG, params, packed["tokens"], packed["positions"], packed["segment_ids"])
  # Every sequence alone, right-padded to 6 tokens in one batch.
  alone = np.zeros((len(sequences), 6), np.int32)
  segs = np.zeros_like(alone)
  for i, seq in enumerate(sequences):
    alone[i, :len(seq)], segs[i, :len(seq)] = seq, 1
  want = apply(CONFIG, params, alone, np.where(segs == 1, np.arange(6), 0), segs)
  for i, seq in enumerate(sequences):
    row, start = packed["row"][i], packed["start"][i]
    np.testing.assert_allclose(hidden[row, start:start + len(seq)], want[i, :len(seq)],
                               atol=1e-5)
  # Scores too: a packed row's log-prob is the sum of its sequences' (no cross-segment token).
  packed_logps, packed_counts = naive(CONFIG, params, packed["tokens"], packed["positions"],
                                      packed["segment_ids"], packed["mask"])
  alone_mask = np.zeros_like(alone, bool)
  for i, mask in enumerate(completions):
    alone_mask[i, :len(mask)] = mask
  alone_logps, _ = naive(CONFIG, params, alone, np.where(segs == 1, np.arange(6), 0), segs,
                         alone_mask)
  want_logps = np.zeros(len(packed_logps))
  np.add.at(want_logps, packed["row"], np.asarray(alone_logps))
  np.testing.assert_allclose(packed_logps, want_logps, atol=1e-5)
  np.testing.assert_array_equal(packed_counts,
                                np.bincount(packed["row"], [len(s) - 1 for s in sequences]))
