"""Tests of the KV-cache sampler (alignment/models/sampler.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment.models import config as config_lib
from alignment.models import sampler
from alignment.models import transformer

CONFIG = config_lib.get_config("tiny", dtype=jnp.float32)
# Gemma 2's features: a window of 3 on layer 0 (so cached keys fall out of it while decoding) and
# soft-capped attention scores and logits.
GEMMA2 = config_lib.get_config(
    "tiny", dtype=jnp.float32, tie_embeddings=True, scale_embeddings=True,
    norm_unit_offset=True, mlp_activation="gelu_tanh", post_norms=True, attn_logit_softcap=1.0,
    final_logit_softcap=2.0, query_pre_attn_scalar=20.0, sliding_window=3,
    sliding_window_layers="alternate")
N = 6


@functools.partial(jax.jit, static_argnums=0)
def _perturbed(config, key):
  params = transformer.init_params(config, key)
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
  # Larger weights than at init, so the next-token distributions are far from uniform.
  return jax.tree.unflatten(
      treedef, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


@pytest.fixture(scope="module")
def params():
  return _perturbed(CONFIG, jax.random.key(0))


# Right-padded prompts of lengths 4, 1 and 3.
PROMPTS = np.array([[5, 9, 2, 7], [3, 0, 0, 0], [8, 8, 1, 0]], np.int32)
LENGTHS = np.array([4, 1, 3], np.int32)


@functools.partial(jax.jit, static_argnums=2)
def _full_log_probs(params, row_tokens, config=CONFIG):
  """Next-token log-probs `[T, V]` of one unpadded row under the full (cache-free) forward."""
  t = row_tokens.shape[0]
  hidden = transformer.apply(config, params, row_tokens[None], jnp.arange(t)[None],
                             jnp.ones((1, t), jnp.int32))
  return jax.nn.log_softmax(transformer.logits(config, params, hidden[0]), axis=-1)


def _rows(tokens, lengths):
  """Each prompt without padding followed by its generated tokens."""
  return [np.concatenate([PROMPTS[b, :LENGTHS[b]], tokens[b, :lengths[b]]]) for b in range(3)]


def _rescored(params, tokens, lengths, config=CONFIG):
  """Per-token log-probs of the generated tokens under the full forward pass."""
  out = []
  for b, row in enumerate(_rows(tokens, lengths)):
    log_probs = np.asarray(_full_log_probs(params, jnp.asarray(row), config))
    out.append(log_probs[np.arange(LENGTHS[b] - 1, len(row) - 1), row[LENGTHS[b]:]])
  return out


def test_reported_logps_equal_rescoring(params):
  # Temperature and top-k change what is sampled, not what is reported: the model's own
  # log-probs at temperature 1.
  tokens, logps, lengths = sampler.sample(CONFIG, params, PROMPTS, LENGTHS, jax.random.key(0),
                                          max_new_tokens=N, temperature=0.7, top_k=8)
  assert tokens.shape == logps.shape == (3, N) and lengths.shape == (3,)
  np.testing.assert_array_equal(lengths, N)
  for b, want in enumerate(_rescored(params, np.asarray(tokens), np.asarray(lengths))):
    np.testing.assert_allclose(logps[b], want, atol=1e-5)


def test_windowed_soft_capped_model_reports_its_own_logps():
  # The cache keeps each slot's position, so the window of layer 0 drops the same keys as in the
  # full forward (rows of different prompt lengths included); logits are soft-capped in both.
  params = _perturbed(GEMMA2, jax.random.key(4))
  tokens, logps, lengths = sampler.sample(GEMMA2, params, PROMPTS, LENGTHS, jax.random.key(5),
                                          max_new_tokens=N)
  for b, want in enumerate(_rescored(params, np.asarray(tokens), np.asarray(lengths), GEMMA2)):
    np.testing.assert_allclose(logps[b], want, atol=1e-5)
  # Capped logits |z| < c = 2 bound every log-prob: log p >= -2c - log V.
  assert float(np.min(logps)) >= -4.0 - np.log(GEMMA2.vocab_size)


def test_greedy_is_deterministic_and_follows_the_argmax(params):
  run = lambda key: sampler.sample(CONFIG, params, PROMPTS, LENGTHS, key, max_new_tokens=N,
                                   greedy=True)
  tokens, logps, _ = run(jax.random.key(1))
  tokens2, logps2, _ = run(jax.random.key(2))
  np.testing.assert_array_equal(tokens, tokens2)
  np.testing.assert_array_equal(logps, logps2)
  # Each greedy token is the argmax of the full forward pass given everything before it, and its
  # log-prob is therefore the largest log-prob of that step.
  for b, row in enumerate(_rows(np.asarray(tokens), [N] * 3)):
    log_probs = _full_log_probs(params, jnp.asarray(row))
    np.testing.assert_array_equal(np.argmax(log_probs[LENGTHS[b] - 1:-1], -1), tokens[b])
  # Rows decoded alone give the same tokens as in the padded batch.
  alone, _, _ = sampler.sample(CONFIG, params, PROMPTS[1:2, :1], LENGTHS[1:2], jax.random.key(0),
                               max_new_tokens=N, greedy=True)
  np.testing.assert_array_equal(alone[0], tokens[1])


def test_top_k_1_equals_greedy(params):
  greedy = sampler.sample(CONFIG, params, PROMPTS, LENGTHS, jax.random.key(3), max_new_tokens=N,
                          greedy=True)
  top1 = sampler.sample(CONFIG, params, PROMPTS, LENGTHS, jax.random.key(4), max_new_tokens=N,
                        top_k=1, temperature=1.3)
  for a, b in zip(greedy, top1):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_eos_stops_a_row(params):
  tokens, logps, _ = sampler.sample(CONFIG, params, PROMPTS, LENGTHS, jax.random.key(5),
                                    max_new_tokens=N, greedy=True)
  tokens, logps = np.asarray(tokens), np.asarray(logps)
  eos = int(tokens[0, 2])
  got_tokens, got_logps, got_lengths = sampler.sample(
      CONFIG, params, PROMPTS, LENGTHS, jax.random.key(5), max_new_tokens=N, greedy=True,
      eos_id=eos)
  for b in range(3):
    hits = np.flatnonzero(tokens[b] == eos)
    length = hits[0] + 1 if hits.size else N  # Up to and including EOS.
    assert got_lengths[b] == length
    np.testing.assert_array_equal(got_tokens[b, :length], tokens[b, :length])
    np.testing.assert_allclose(got_logps[b, :length], logps[b, :length], atol=1e-6)
    np.testing.assert_array_equal(got_tokens[b, length:], 0)  # Pad after EOS.
    np.testing.assert_array_equal(got_logps[b, length:], 0.0)
  assert got_lengths[0] <= 3


def test_first_token_frequencies_match_the_tempered_top_k_distribution(params):
  # 4000 rows with the same prompt, one step: the empirical distribution of the sampled token
  # must match softmax(z / T) restricted to the top k (a wrong temperature or filter moves
  # probabilities by far more than the ~0.008 standard error).
  rows, temperature, k = 4000, 0.5, 4
  prompts = np.tile(PROMPTS[:1], (rows, 1))
  tokens, logps, _ = sampler.sample(CONFIG, params, prompts, np.full(rows, 4), jax.random.key(6),
                                    max_new_tokens=1, temperature=temperature, top_k=k)
  hidden = transformer.apply(CONFIG, params, PROMPTS[:1], np.arange(4)[None],
                             np.ones((1, 4), np.int32))
  z = np.asarray(transformer.logits(CONFIG, params, hidden[0, -1]), np.float64)
  top = np.argsort(z)[::-1][:k]
  want = np.zeros_like(z)
  want[top] = np.exp((z[top] - z[top].max()) / temperature)
  want /= want.sum()
  freq = np.bincount(np.asarray(tokens[:, 0]), minlength=CONFIG.vocab_size) / rows
  np.testing.assert_allclose(freq, want, atol=0.03)
  assert set(np.unique(tokens)) <= set(top.tolist())
  log_softmax = z - np.log(np.exp(z - z.max()).sum()) - z.max()
  np.testing.assert_allclose(logps[:, 0], log_softmax[np.asarray(tokens[:, 0])], atol=1e-5)


def test_zero_bias_and_identity_hook_sample_what_the_plain_sampler_samples(params):
  kwargs = dict(max_new_tokens=N, temperature=0.8, top_k=10)
  want = sampler.sample(CONFIG, params, PROMPTS, LENGTHS, jax.random.key(7), **kwargs)
  for hook in (dict(logit_bias=np.zeros(CONFIG.vocab_size)),
               dict(logit_bias=np.zeros((3, CONFIG.vocab_size))),
               dict(logits_fn=lambda z, n: z)):
    got = sampler.sample(CONFIG, params, PROMPTS, LENGTHS, jax.random.key(7), **kwargs, **hook)
    for a, b in zip(got, want):
      np.testing.assert_array_equal(a, b)


def test_a_huge_bias_forces_its_token_and_logps_stay_the_models(params):
  v = CONFIG.vocab_size
  bias = np.zeros(v, np.float32)
  bias[11] = 1e4
  tokens, logps, _ = sampler.sample(CONFIG, params, PROMPTS, LENGTHS, jax.random.key(8),
                                    max_new_tokens=N, logit_bias=bias)
  np.testing.assert_array_equal(tokens, 11)
  # Reported log-probs are the model's own (unbiased) log-probs of the forced tokens.
  for b, want in enumerate(_rescored(params, np.asarray(tokens), [N] * 3)):
    np.testing.assert_allclose(logps[b], want, atol=1e-5)
  # A per-row bias [B, V] forces a different token in each row, also under greedy decoding.
  per_row = np.zeros((3, v), np.float32)
  per_row[[0, 1, 2], [4, 5, 6]] = 1e4
  tokens, _, _ = sampler.sample(CONFIG, params, PROMPTS, LENGTHS, jax.random.key(8),
                                max_new_tokens=N, logit_bias=per_row, greedy=True)
  np.testing.assert_array_equal(tokens, np.repeat([[4], [5], [6]], N, axis=1))


def test_a_function_hook_sees_the_step_and_composes_with_the_bias(params):
  v = CONFIG.vocab_size

  def cycle(logits, n):  # step n may only emit token n + 3
    return jnp.where(jnp.arange(v) == n + 3, logits, -jnp.inf)

  tokens, _, _ = sampler.sample(CONFIG, params, PROMPTS, LENGTHS, jax.random.key(9),
                                max_new_tokens=N, logits_fn=cycle, temperature=0.5)
  np.testing.assert_array_equal(tokens, np.broadcast_to(np.arange(N) + 3, (3, N)))
  # The bias is added before the function: a function adding the same bias samples the same.
  bias = jax.random.normal(jax.random.key(1), (v,))
  with_bias = sampler.sample(CONFIG, params, PROMPTS, LENGTHS, jax.random.key(9),
                             max_new_tokens=N, logit_bias=bias)
  with_fn = sampler.sample(CONFIG, params, PROMPTS, LENGTHS, jax.random.key(9),
                           max_new_tokens=N, logits_fn=lambda z, n: z + bias)
  for a, b in zip(with_bias, with_fn):
    np.testing.assert_array_equal(a, b)


def test_biases_vmap_with_shared_sampling_noise(params):
  # Candidates sampled under vmap with one key share the noise: a zero bias reproduces the plain
  # sampler, and a bias that forbids token t only changes rows that drew t.
  v, t = CONFIG.vocab_size, 5
  forbid = np.zeros(v, np.float32)
  forbid[t] = -1e4
  key = jax.random.key(10)
  got, _, _ = jax.vmap(lambda b: sampler.sample(CONFIG, params, PROMPTS, LENGTHS, key,
                                                max_new_tokens=N, logit_bias=b))(
                                                    np.stack([np.zeros(v), forbid]))
  plain, _, _ = sampler.sample(CONFIG, params, PROMPTS, LENGTHS, key, max_new_tokens=N)
  np.testing.assert_array_equal(got[0], plain)
  assert not (np.asarray(got[1]) == t).any()
  first = np.argmax(np.concatenate([np.asarray(plain) == t, np.ones((3, 1), bool)], 1), 1)
  assert (first < N).any() and (first == N).any()  # some rows drew t, some did not
  for b in range(3):  # identical up to the first t the plain sampler drew (all, if none)
    np.testing.assert_array_equal(got[1][b, :first[b]], plain[b, :first[b]])


def test_filter_logits_by_hand():
  logits = jnp.log(jnp.array([[0.1, 0.4, 0.2, 0.3]]))
  inf = -np.inf
  np.testing.assert_array_equal(
      np.isfinite(sampler.filter_logits(logits, top_k=2)), [[False, True, False, True]])
  # Sorted probabilities 0.4, 0.3, 0.2, 0.1; mass before each: 0, 0.4, 0.7, 0.9.
  # top_p = 0.5 keeps mass_before < 0.5: {0.4, 0.3}; top_p = 0.3 keeps only 0.4.
  got = sampler.filter_logits(logits, top_p=0.5)
  np.testing.assert_array_equal(np.isfinite(got), [[False, True, False, True]])
  np.testing.assert_allclose(got[0, 1], np.log(0.4), rtol=1e-6)
  assert sampler.filter_logits(logits, top_p=0.3)[0].tolist().count(inf) == 3
  assert bool(jnp.all(jnp.isfinite(sampler.filter_logits(logits, top_p=1.0))))
  # top-p acts on the renormalised top-k distribution: top-3 {.4, .3, .2} / .9 has mass before
  # each of 0, .444, .778, so top_p = 0.75 keeps two tokens and top_p = 0.8 keeps three.
  np.testing.assert_array_equal(np.isfinite(sampler.filter_logits(logits, top_k=3, top_p=0.75)),
                                [[False, True, False, True]])
  np.testing.assert_array_equal(np.isfinite(sampler.filter_logits(logits, top_k=3, top_p=0.8)),
                                [[False, True, True, True]])


def test_sample_rejects_bad_arguments(params):
  call = lambda **kw: sampler.sample(CONFIG, params, PROMPTS, LENGTHS, jax.random.key(0),
                                     **{"max_new_tokens": 2, **kw})
  with pytest.raises(ValueError, match="max_new_tokens"):
    call(max_new_tokens=0)
  with pytest.raises(ValueError, match="temperature"):
    call(temperature=0.0)
  with pytest.raises(ValueError, match="top_k"):
    call(top_k=CONFIG.vocab_size + 1)
  with pytest.raises(ValueError, match="top_p"):
    call(top_p=0.0)
  with pytest.raises(ValueError, match=r"logit_bias must be \[V=.*\], got \(2,\)"):
    call(logit_bias=np.zeros(2))
  with pytest.raises(ValueError, match="prompt_lengths must be in"):
    sampler.sample(CONFIG, params, PROMPTS, np.array([4, 0, 3]), jax.random.key(0),
                   max_new_tokens=2)
  with pytest.raises(ValueError, match="prompt_lengths"):
    sampler.sample(CONFIG, params, PROMPTS, LENGTHS[:2], jax.random.key(0), max_new_tokens=2)
