"""Tests of alignment.data.batching: the exact batches of docs/interfaces.md#batches, truncation,
packing."""

import hypothesis
from hypothesis import strategies as st
import jax
import numpy as np
import pytest

from alignment.data import batching


class _Tokenizer:
  """Test-local tokenizer: one id per character, `ord(c) - ord("a") + 3` ("a" -> 3)."""

  pad_id = 0

  def __init__(self, bos_id=1, eos_id=2):
    self.bos_id, self.eos_id = bos_id, eos_id

  def encode(self, text):
    return [ord(c) - ord("a") + 3 for c in text]


def _example(prompt, *responses, labels=None):
  labels = [float(len(responses) - i) for i in range(len(responses))] if labels is None else labels
  return {"prompt": np.asarray(prompt, np.int32),
          "responses": tuple(np.asarray(r, np.int32) for r in responses),
          "labels": np.asarray(labels, np.float32)}


def test_the_example_of_the_interface_document():
  # prompt [1, 2, 3], chosen [4, 5], rejected [6], T = P + R = 3 + 2 = 5.
  batch = batching.collate([_example([1, 2, 3], [4, 5], [6], labels=[1, 0])],
                           config=batching.BatchConfig(max_prompt_tokens=3,
                                                       max_response_tokens=2))
  np.testing.assert_array_equal(batch["tokens"], [[[1, 2, 3, 4, 5], [1, 2, 3, 6, 0]]])
  np.testing.assert_array_equal(batch["segment_ids"], [[[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]])
  np.testing.assert_array_equal(batch["positions"], [[[0, 1, 2, 3, 4], [0, 1, 2, 3, 0]]])
  np.testing.assert_array_equal(batch["completion_mask"], [[[0, 0, 0, 1, 1], [0, 0, 0, 1, 0]]])
  np.testing.assert_array_equal(batch["prompt_tokens"], [[1, 2, 3]])
  np.testing.assert_array_equal(batch["prompt_lengths"], [3])
  np.testing.assert_array_equal(batch["response_tokens"], [[[4, 5], [6, 0]]])
  np.testing.assert_array_equal(batch["response_lengths"], [[2, 1]])
  np.testing.assert_array_equal(batch["labels"], [[1.0, 0.0]])
  np.testing.assert_array_equal(batch["where"], [[True, True]])
  dtypes = {k: v.dtype for k, v in batch.items()}
  assert dtypes == {"tokens": np.int32, "segment_ids": np.int32, "positions": np.int32,
                    "completion_mask": bool, "prompt_tokens": np.int32,
                    "prompt_lengths": np.int32, "response_tokens": np.int32,
                    "response_lengths": np.int32, "labels": np.float32, "where": bool}


def test_lists_of_varying_k_are_padded_with_where():
  # Example 0: prompt [7], K = 1; example 1: prompt [8, 9], K = 3. K = 3, P = 2, R = 2.
  batch = batching.collate(
      [_example([7], [4], labels=[1.0]), _example([8, 9], [4, 5], [6], [3], labels=[2, 0, 1])])
  np.testing.assert_array_equal(batch["where"], [[1, 0, 0], [1, 1, 1]])
  np.testing.assert_array_equal(batch["labels"], [[1, 0, 0], [2, 0, 1]])
  np.testing.assert_array_equal(batch["response_lengths"], [[1, 0, 0], [2, 1, 1]])
  np.testing.assert_array_equal(batch["prompt_tokens"], [[7, 0], [8, 9]])
  # A padded slot holds the prompt alone: segment 1 on it, no completion token.
  np.testing.assert_array_equal(batch["tokens"][0], [[7, 4, 0, 0], [7, 0, 0, 0], [7, 0, 0, 0]])
  np.testing.assert_array_equal(batch["segment_ids"][0], [[1, 1, 0, 0], [1, 0, 0, 0],
                                                          [1, 0, 0, 0]])
  np.testing.assert_array_equal(batch["completion_mask"][0], [[0, 1, 0, 0], [0, 0, 0, 0],
                                                              [0, 0, 0, 0]])
  np.testing.assert_array_equal(batch["tokens"][1], [[8, 9, 4, 5], [8, 9, 6, 0], [8, 9, 3, 0]])
  np.testing.assert_array_equal(batch["positions"][1], [[0, 1, 2, 3], [0, 1, 2, 0],
                                                        [0, 1, 2, 0]])


def test_tokenize_adds_bos_and_eos():
  record = {"prompt": "abc", "responses": ["de", "f"], "scores": [1.0, 0.0]}
  example, events = batching.tokenize_record(record, _Tokenizer())
  # a b c -> 3 4 5, d e -> 6 7, f -> 8; BOS 1 first, EOS 2 last.
  np.testing.assert_array_equal(example["prompt"], [1, 3, 4, 5])
  assert [r.tolist() for r in example["responses"]] == [[6, 7, 2], [8, 2]]
  np.testing.assert_array_equal(example["labels"], [1.0, 0.0])
  assert events == {}
  example, _ = batching.tokenize_record(record, _Tokenizer(),
                                        batching.BatchConfig(add_bos=False, append_eos=False))
  np.testing.assert_array_equal(example["prompt"], [3, 4, 5])
  assert [r.tolist() for r in example["responses"]] == [[6, 7], [8]]
  example, _ = batching.tokenize_record(record, _Tokenizer(bos_id=None, eos_id=None))
  assert [r.tolist() for r in example["responses"]] == [[6, 7], [8]]


@pytest.mark.parametrize("ids, limit, policy, expected", [
    ([1, 2, 3, 4], 2, "keep_start", ([1, 2], True)),
    ([1, 2, 3, 4], 2, "keep_end", ([3, 4], True)),
    ([1, 2, 3, 4], 2, "drop", (None, True)),
    ([1, 2], 2, "drop", ([1, 2], False)),
    ([1, 2, 3], None, "keep_start", ([1, 2, 3], False)),
])
def test_truncate(ids, limit, policy, expected):
  assert batching.truncate(ids, limit, policy) == expected


def test_length_policy_of_prompts_and_responses():
  record = {"prompt": "abcde", "responses": ["fgh", "i"], "scores": [1.0, 0.0]}
  tok = _Tokenizer()
  config = batching.BatchConfig(max_prompt_tokens=3, max_response_tokens=3)
  example, events = batching.tokenize_record(record, tok, config)
  # Prompt keeps its end after BOS: [BOS, d, e] = [1, 6, 7]. "fgh"+EOS = [8, 9, 10, 2] keeps
  # its start [8, 9, 10] (EOS cut); "i"+EOS = [11, 2] fits.
  np.testing.assert_array_equal(example["prompt"], [1, 6, 7])
  assert [r.tolist() for r in example["responses"]] == [[8, 9, 10], [11, 2]]
  assert events == {"truncated_prompts": 1, "truncated_responses": 1}
  example, _ = batching.tokenize_record(record, tok, batching.BatchConfig(
      max_prompt_tokens=3, max_response_tokens=3, prompt_overflow="keep_start",
      response_overflow="keep_end"))
  np.testing.assert_array_equal(example["prompt"], [1, 3, 4])
  assert [r.tolist() for r in example["responses"]] == [[9, 10, 2], [11, 2]]
  assert batching.tokenize_record(record, tok, batching.BatchConfig(
      max_prompt_tokens=3, prompt_overflow="drop")) == (None, {"dropped_long_prompt": 1})
  assert batching.tokenize_record(record, tok, batching.BatchConfig(
      max_response_tokens=3, response_overflow="drop")) == (None, {"dropped_long_response": 1})


def test_bad_inputs_are_named():
  tok = _Tokenizer(bos_id=None)
  with pytest.raises(ValueError, match="3 responses but BatchConfig.list_size=2"):
    batching.tokenize_record({"prompt": "a", "responses": ["a", "b", "c"], "scores": [0, 1, 2]},
                             tok, batching.BatchConfig(list_size=2))
  with pytest.raises(ValueError, match="no token"):
    batching.tokenize_record({"prompt": "", "responses": ["a"], "scores": [1]}, tok)
  with pytest.raises(ValueError, match="prompt_overflow='middle'"):
    batching.BatchConfig(prompt_overflow="middle")
  with pytest.raises(ValueError, match="no room"):
    batching.BatchConfig(max_prompt_tokens=1)
  with pytest.raises(ValueError, match="example 0: a response is longer than 1"):
    batching.collate([_example([1], [2, 3])], config=batching.BatchConfig(max_response_tokens=1))


_ids = st.lists(st.integers(3, 9), min_size=0, max_size=4)
_examples = st.lists(
    st.tuples(st.lists(st.integers(3, 9), min_size=1, max_size=4),
              st.lists(_ids, min_size=1, max_size=3)),
    min_size=1, max_size=4)


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(_examples)
def test_collate_matches_a_per_row_reference(raw):
  examples = [_example(p, *rs) for p, rs in raw]
  batch = batching.collate(examples, config=batching.BatchConfig(
      max_prompt_tokens=4, max_response_tokens=4, list_size=3))
  for b, (prompt, responses) in enumerate(raw):
    for k in range(3):
      response = responses[k] if k < len(responses) else []
      row = prompt + response
      n = len(row)
      expected_tokens = row + [0] * (8 - n)
      np.testing.assert_array_equal(batch["tokens"][b, k], expected_tokens)
      np.testing.assert_array_equal(batch["segment_ids"][b, k], [1] * n + [0] * (8 - n))
      np.testing.assert_array_equal(batch["positions"][b, k], list(range(n)) + [0] * (8 - n))
      np.testing.assert_array_equal(
          batch["completion_mask"][b, k], [0] * len(prompt) + [1] * len(response) + [0] * (8 - n))
      assert batch["where"][b, k] == (k < len(responses))
      assert batch["response_lengths"][b, k] == len(response)


def test_pack_first_fit_layout():
  # Sequences (prompt + response) (0,0) [1,2,3], (0,1) [1,4], (1,0) [5,6,7,8] into rows of
  # L = 5: the first two fill row 0 exactly (3 + 2 = 5); the third (4) opens row 1.
  examples = [_example([1], [2, 3], [4]), _example([5, 6], [7, 8])]
  batch = batching.pack(examples, config=batching.BatchConfig(list_size=2), row_length=5)
  np.testing.assert_array_equal(batch["tokens"], [[1, 2, 3, 1, 4], [5, 6, 7, 8, 0]])
  np.testing.assert_array_equal(batch["segment_ids"], [[1, 1, 1, 2, 2], [1, 1, 1, 1, 0]])
  np.testing.assert_array_equal(batch["positions"], [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]])
  np.testing.assert_array_equal(batch["completion_mask"], [[0, 1, 1, 0, 1], [0, 0, 1, 1, 0]])
  np.testing.assert_array_equal(batch["pack_row"], [[0, 0], [1, 0]])
  np.testing.assert_array_equal(batch["pack_segment"], [[1, 2], [1, 0]])
  np.testing.assert_array_equal(batch["where"], [[1, 1], [1, 0]])
  with pytest.raises(ValueError, match="need 2 rows of 5; num_rows=1"):
    batching.pack(examples, row_length=5, num_rows=1)
  with pytest.raises(ValueError, match="row_length=3 is shorter"):
    batching.pack(examples, row_length=3)


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(_examples, st.integers(8, 16))
def test_packed_sums_equal_the_unpacked_sums(raw, row_length):
  examples = [_example(p, *rs) for p, rs in raw]
  config = batching.BatchConfig(max_prompt_tokens=4, max_response_tokens=4, list_size=3)
  flat = batching.collate(examples, config=config)
  packed = batching.pack(examples, config=config, row_length=row_length)
  # A per-token value that depends only on the token and its position in its sequence.
  value = lambda b: np.where(b["completion_mask"], b["tokens"] * 10.0 + b["positions"], 0.0)
  expected = value(flat).sum(-1)
  got = jax.jit(batching.packed_sums)(value(packed), packed["segment_ids"], packed["pack_row"],
                                      packed["pack_segment"])
  np.testing.assert_allclose(np.asarray(got), expected)
  assert packed["tokens"].shape[1] == row_length
  assert (packed["segment_ids"] > 0).sum() == (flat["segment_ids"] > 0).sum() - (
      (~flat["where"]) * flat["prompt_lengths"][:, None]).sum()


# ---------------------------------------------------------------------- TRL's lengths, max_length


def test_defaults_are_trls_convention_by_name():
  assert batching.BatchConfig.from_trl(max_prompt_length=4, max_completion_length=3,
                                       max_length=6, list_size=2) == batching.BatchConfig(
                                           max_prompt_tokens=4, max_response_tokens=3,
                                           list_size=2, max_length=6)
  default = batching.BatchConfig()
  assert (default.prompt_overflow, default.response_overflow) == ("keep_end", "keep_start")


def test_max_length_cuts_the_response_after_the_prompt():
  record = {"prompt": "abcde", "responses": ["fgh", "i"], "scores": [1.0, 0.0]}
  config = batching.BatchConfig(max_prompt_tokens=4, max_response_tokens=5, max_length=6)
  example, events = batching.tokenize_record(record, _Tokenizer(), config)
  # Prompt: BOS + its last 3 tokens [c, d, e] = [1, 5, 6, 7]. Responses: at most 6 − 4 = 2
  # tokens, their start: "fgh"+EOS = [8, 9, 10, 2] -> [8, 9]; "i"+EOS = [11, 2] fits.
  np.testing.assert_array_equal(example["prompt"], [1, 5, 6, 7])
  assert [r.tolist() for r in example["responses"]] == [[8, 9], [11, 2]]
  assert events == {"truncated_prompts": 1, "truncated_responses": 1}
  # Rows are min(P + R, L) = min(4 + 5, 6) = 6 long.
  batch = batching.collate([example], config=config)
  np.testing.assert_array_equal(batch["tokens"], [[[1, 5, 6, 7, 8, 9], [1, 5, 6, 7, 11, 2]]])
  assert batch["response_tokens"].shape == (1, 2, 5)
  assert batching.pack([example], config=config)["tokens"].shape == (2, 6)
  # A short prompt leaves more room: "a" -> [1, 3], responses up to 4 tokens.
  example, events = batching.tokenize_record(dict(record, prompt="a"), _Tokenizer(), config)
  assert [r.tolist() for r in example["responses"]] == [[8, 9, 10, 2], [11, 2]]
  assert events == {}
  with pytest.raises(ValueError, match="longer than max_length=6"):
    batching.collate([_example([1, 2, 3], [4, 5, 6, 7])], config=config)


def test_max_length_alone_cuts_prompts_to_leave_one_response_token():
  record = {"prompt": "abcde", "responses": ["fg"], "scores": [1.0]}
  config = batching.BatchConfig(max_length=4)
  example, events = batching.tokenize_record(record, _Tokenizer(), config)
  # Prompt: L − 1 = 3 tokens, BOS + [d, e]; response: 4 − 3 = 1 token of [f, g, EOS].
  np.testing.assert_array_equal(example["prompt"], [1, 6, 7])
  assert [r.tolist() for r in example["responses"]] == [[8]]
  assert events == {"truncated_prompts": 1, "truncated_responses": 1}
  drop = batching.BatchConfig(max_length=4, response_overflow="drop")
  assert batching.tokenize_record(record, _Tokenizer(), drop) == (
      None, {"dropped_long_response": 1})
  with pytest.raises(ValueError, match="no room for a response in max_length=4"):
    batching.BatchConfig(max_prompt_tokens=4, max_length=4)
  with pytest.raises(ValueError, match="no room for prompt text"):
    batching.BatchConfig(max_length=2)


def test_mismatched_batch_keeps_max_length():
  # Row 0: prompt [1], response [4, 5, 6, 7]; row 1: prompt [1, 2, 3, 4], response [8].
  # L = 5: row 1 takes row 0's response after its 4 prompt tokens: 1 token fits, [4].
  config = batching.BatchConfig(max_prompt_tokens=4, max_response_tokens=4, max_length=5)
  batch = batching.collate([_example([1], [4, 5, 6, 7], labels=[1]),
                            _example([1, 2, 3, 4], [8], labels=[0])], config=config)
  out = batching.mismatched_batch(batch)
  np.testing.assert_array_equal(out["tokens"], [[[1, 8, 0, 0, 0]], [[1, 2, 3, 4, 4]]])
  np.testing.assert_array_equal(out["response_lengths"], [[1], [1]])
  np.testing.assert_array_equal(out["response_tokens"], [[[8, 0, 0, 0]], [[4, 0, 0, 0]]])
  np.testing.assert_array_equal(out["completion_mask"], [[[0, 1, 0, 0, 0]], [[0, 0, 0, 0, 1]]])


# -------------------------------------------------------------------------- conversational


def _render(messages, *, add_generation_prompt):
  """Test-local chat template: `<role>content` per message, `<assistant>` to generate."""
  text = "".join(f"<{m['role']}>{m['content']}" for m in messages)
  return text + ("<assistant>" if add_generation_prompt else "")


CONVERSATION = {"prompt": [{"role": "user", "content": "hi"}],
                "responses": [[{"role": "assistant", "content": "yo"}],
                              [{"role": "assistant", "content": "no"}]],
                "scores": [1.0, 0.0]}


def test_render_conversation_like_trl():
  assert batching.render_conversation(CONVERSATION, _render) == {
      "prompt": "<user>hi<assistant>", "responses": ["yo", "no"], "scores": [1.0, 0.0]}

  def newline_prompt(messages, *, add_generation_prompt):  # generation prompt != last turn's
    return _render(messages, add_generation_prompt=False) + (
        "<assistant>\n" if add_generation_prompt else "")

  # The prompt is the common prefix of the renderings ("\n" is not in the full ones), so prompt
  # + response is the full rendering.
  assert batching.render_conversation(CONVERSATION, newline_prompt) == {
      "prompt": "<user>hi<assistant>", "responses": ["yo", "no"], "scores": [1.0, 0.0]}


def test_conversational_records_are_tokenized_through_the_template():
  example, _ = batching.tokenize_record(CONVERSATION, _Tokenizer(), render=_render)
  text, _ = batching.tokenize_record(batching.render_conversation(CONVERSATION, _render),
                                     _Tokenizer())
  np.testing.assert_array_equal(example["prompt"], text["prompt"])
  assert [r.tolist() for r in example["responses"]] == [[27, 17, 2], [16, 17, 2]]  # y o, n o
  with pytest.raises(ValueError, match="needs a chat template: pass render="):
    batching.tokenize_record(CONVERSATION, _Tokenizer())


def test_a_bos_rendered_by_the_template_is_not_doubled_nor_cut():
  # "_" encodes to 1, the BOS id of the test tokenizer.
  record = {"prompt": "_abc", "responses": ["d"], "scores": [1.0]}
  example, _ = batching.tokenize_record(record, _Tokenizer())
  np.testing.assert_array_equal(example["prompt"], [1, 3, 4, 5])
  example, events = batching.tokenize_record(
      record, _Tokenizer(), batching.BatchConfig(max_prompt_tokens=2, add_bos=False))
  np.testing.assert_array_equal(example["prompt"], [1, 5])
  assert events == {"truncated_prompts": 1}
