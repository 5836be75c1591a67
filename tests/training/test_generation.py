"""Prompts in, sampled responses out, rated into preference records.

Sampling runs a tiny decoder; the reported log-probs are checked against re-scoring the samples
with full logits (`transformer.naive_sequence_logps`).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment.data.tokenizers import CharTokenizer
from alignment.models import config as config_lib
from alignment.models import transformer
from alignment.training import generation

TOKENIZER = CharTokenizer("abc")  # pad 0, BOS 1, EOS 2, "a" 3, "b" 4, "c" 5
PROMPTS = ["ab", "c", "cab", "b", "aa"]


class _NoBos(CharTokenizer):
  bos_id = None


def test_encode_prompts_by_hand():
  tokens, lengths = generation.encode_prompts(TOKENIZER, ["ab", "c"], max_length=4)
  np.testing.assert_array_equal(tokens, [[1, 3, 4, 0], [1, 5, 0, 0]])  # BOS first, pad right
  np.testing.assert_array_equal(lengths, [3, 2])
  tokens, lengths = generation.encode_prompts(_NoBos("abc"), ["ab"], max_length=2)
  np.testing.assert_array_equal(tokens, [[3, 4]])


def test_bad_prompts_are_named():
  with pytest.raises(ValueError, match=r"Prompt 1 \('cab'\) has 4 tokens, more than max_length=3"):
    generation.encode_prompts(TOKENIZER, ["a", "cab"], max_length=3)
  with pytest.raises(ValueError, match="Prompt 0 .* encodes to no tokens"):
    generation.encode_prompts(_NoBos("abc"), [""], max_length=3)


def test_decode_responses_drops_only_a_final_eos():
  # Row 0 ends with EOS at length 3; row 1 is cut at length 2 before its EOS; row 2 is empty.
  tokens = np.array([[3, 4, 2, 0], [5, 5, 2, 0], [2, 0, 0, 0]])
  assert generation.decode_responses(TOKENIZER, tokens, np.array([3, 2, 1])) == ["ab", "cc", ""]


@pytest.fixture(scope="module")
def tiny():
  config = config_lib.get_config("tiny", dtype=jnp.float32, vocab_size=TOKENIZER.vocab_size)
  return config, transformer.init_params(config, jax.random.key(0))


def test_sample_tokens_in_chunks_equals_one_batch_when_greedy(tiny):
  config, params = tiny
  prompt_tokens, prompt_lengths = generation.encode_prompts(TOKENIZER, PROMPTS, max_length=4)
  kwargs = dict(max_new_tokens=5, eos_id=TOKENIZER.eos_id, greedy=True, show_progress=False)
  # 5 prompts in chunks of 2 (the last chunk padded by repeating a row) or in one chunk of 8.
  chunked = generation.sample_tokens(config, params, prompt_tokens, prompt_lengths,
                                     jax.random.key(1), batch_size=2, **kwargs)
  whole = generation.sample_tokens(config, params, prompt_tokens, prompt_lengths,
                                   jax.random.key(2), batch_size=8, **kwargs)
  for a, b in zip(chunked, whole):
    assert a.shape[0] == len(PROMPTS)
    np.testing.assert_allclose(a, b, rtol=1e-5)
  tokens, logps, lengths = chunked
  assert tokens.shape == logps.shape == (5, 5) and np.all((lengths >= 1) & (lengths <= 5))
  after = np.arange(5)[None, :] >= lengths[:, None]
  assert np.all(tokens[after] == 0) and np.all(logps[after] == 0.0)


def test_sampled_log_probs_equal_rescoring_the_samples(tiny):
  config, params = tiny
  prompt_tokens, prompt_lengths = generation.encode_prompts(TOKENIZER, PROMPTS, max_length=4)
  tokens, logps, lengths = generation.sample_tokens(
      config, params, prompt_tokens, prompt_lengths, jax.random.key(3), max_new_tokens=4,
      eos_id=TOKENIZER.eos_id, batch_size=4, show_progress=False)
  for i, (prompt, n) in enumerate(zip(prompt_tokens, prompt_lengths)):
    sequence = np.concatenate([prompt[:n], tokens[i, :lengths[i]]])[None]
    completion = np.arange(sequence.shape[1])[None] >= n
    want, _ = transformer.naive_sequence_logps(
        config, params, sequence, np.arange(sequence.shape[1])[None], np.ones_like(sequence),
        completion)
    np.testing.assert_allclose(logps[i].sum(), want[0], rtol=1e-4, atol=1e-5)


def test_sample_responses_groups_the_samples_of_each_prompt(tiny):
  # Prompt i's k samples are rows i·k .. i·k + k − 1 of one `sample_tokens` call on the
  # repeated prompts, decoded, with their summed log-probs.
  config, params = tiny
  responses, logps = generation.sample_responses(
      config, params, TOKENIZER, PROMPTS[:3], jax.random.key(4), num_samples=2,
      max_prompt_length=4, max_new_tokens=4, batch_size=4)
  prompt_tokens, prompt_lengths = generation.encode_prompts(TOKENIZER, PROMPTS[:3], max_length=4)
  tokens, token_logps, lengths = generation.sample_tokens(
      config, params, np.repeat(prompt_tokens, 2, axis=0), np.repeat(prompt_lengths, 2),
      jax.random.key(4), max_new_tokens=4, eos_id=TOKENIZER.eos_id, batch_size=4,
      show_progress=False)
  texts = generation.decode_responses(TOKENIZER, tokens, lengths)
  assert responses == [texts[0:2], texts[2:4], texts[4:6]]
  np.testing.assert_allclose(logps, token_logps.sum(-1).reshape(3, 2), rtol=1e-6)


class _LengthTask:
  """Reward = 2·len(response): one attribute, "length", of weight 2."""

  name = "length"
  weights = {"length": 2.0}

  def reward(self, prompt, response):
    del prompt
    return 2.0 * len(response)

  def attributes_batch(self, prompts, responses):
    del prompts
    return {"length": [float(len(r)) for r in responses]}


def test_rate_lists_with_the_true_reward_and_a_noiseless_ranking():
  prompts, responses = ["p", "q"], [["a", "abc", "ab"], ["bb", "b", "bbbb"]]
  rewards, labels = generation.rate_lists(_LengthTask(), prompts, responses,
                                          np.random.default_rng(0), rater="true_reward",
                                          temperature=1.0, flip_rate=0.0)
  np.testing.assert_array_equal(rewards, [[2, 6, 4], [4, 2, 8]])
  np.testing.assert_array_equal(labels, rewards)
  # Plackett–Luce at temperature 0 sorts by reward: labels K − 1 − rank.
  _, labels = generation.rate_lists(_LengthTask(), prompts, responses, np.random.default_rng(0),
                                    rater="plackett_luce", temperature=0.0, flip_rate=0.0)
  np.testing.assert_array_equal(labels, [[0, 2, 1], [1, 0, 2]])
  # ... and reverses every ranking when flip_rate = 1.
  _, labels = generation.rate_lists(_LengthTask(), prompts, responses, np.random.default_rng(0),
                                    rater="plackett_luce", temperature=0.0, flip_rate=1.0)
  np.testing.assert_array_equal(labels, [[2, 0, 1], [1, 2, 0]])
  # One attribute alone: its own value, without the weight.
  rewards, _ = generation.rate_lists(_LengthTask(), prompts, responses, np.random.default_rng(0),
                                     rater="true_reward", temperature=1.0, flip_rate=0.0,
                                     attribute="length")
  np.testing.assert_array_equal(rewards, [[1, 3, 2], [2, 1, 4]])
  with pytest.raises(ValueError, match="rater must be 'plackett_luce' or 'true_reward'"):
    generation.rate_lists(_LengthTask(), prompts, responses, np.random.default_rng(0),
                          rater="human", temperature=1.0, flip_rate=0.0)


def test_preference_records_by_hand():
  records = generation.make_preference_records(
      ["p"], [["a", "b"]], np.array([[1.0, 0.0]], np.float32), np.array([[2.5, -1.0]]))
  assert records == [{"prompt": "p", "responses": ["a", "b"], "scores": [1.0, 0.0],
                      "rewards": [2.5, -1.0]}]
  assert all(type(x) is float for x in records[0]["scores"] + records[0]["rewards"])
