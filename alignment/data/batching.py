"""Canonical records + tokenizer -> the batch layout of docs/interfaces.md#batches.

Two steps, both pure numpy: `tokenize_record` turns one canonical record
`{"prompt", "responses", "scores"}` into token ids under the length policy of `BatchConfig`,
and `collate` (or `pack`) stacks a list of those into arrays. With B = batch, K = list size,
P = max prompt length, R = max response length and T = P + R (or `max_length` when smaller):

    prompt_tokens [B, P] int32     prompt_lengths [B] int32 (>= 1)
    response_tokens [B, K, R] int32  response_lengths [B, K] int32 (0 for a padded slot)
    tokens, segment_ids, positions [B, K, T] int32, completion_mask [B, K, T] bool
    labels [B, K] float32           where [B, K] bool

Each row of `tokens` is the prompt, then the response, then `pad_id`: for prompt `[1, 2, 3]`,
chosen `[4, 5]`, rejected `[6]` and T = 5, `tokens = [[1,2,3,4,5],[1,2,3,6,0]]`. A padded slot
(`where` False) holds the prompt alone (segment 1, no completion token), so that no row of the
attention is entirely masked; its log-prob sums to 0 and `where` removes it from the losses.

Conversational records (prompt and responses as `{role, content}` message lists, see
`formats`) are rendered to text first by a chat template (`render_conversation`).

Length policy (`BatchConfig`), TRL's conventions by default (von Werra et al., *TRL: Transformer
Reinforcement Learning*, 2020; `BatchConfig.from_trl` takes TRL's names): BOS (if `add_bos` and
the tokenizer has one, and the prompt does not already start with it) starts every prompt and
counts towards `max_prompt_tokens`; EOS (if `append_eos` and the tokenizer has one) ends every
response and counts towards `max_response_tokens`, so a response cut with `keep_start` loses its
EOS. Over-long prompts keep their end by default (the text next to the response), over-long
responses their start; `max_length` then cuts each response to `max_length − prompt length`
tokens (TRL's `max_length` with `truncation_mode="keep_start"` on prompt + completion); `"drop"`
drops the whole record. Each event is counted (`truncated_prompts`, `truncated_responses`,
`dropped_long_prompt`, `dropped_long_response`), and `pipeline.preference_dataset` sums them in
`iterator.stats()` for the caller to print and save.

Packing (`pack`) puts several sequences in one row with segment ids 1..n; `packed_sums` (jnp, for
inside the step) maps per-token values of packed rows back to `[B, K]`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

_OVERFLOW = ("keep_start", "keep_end", "drop")


@dataclasses.dataclass(frozen=True)
class BatchConfig:
  """Shapes and length policy of a batch.

  The defaults are TRL's truncation convention: the prompt keeps its end, the response its start.

  Attributes:
    max_prompt_tokens: P, BOS included (TRL's `max_prompt_length`); None pads to the longest
      prompt and truncates nothing.
    max_response_tokens: R, EOS included (TRL's `max_completion_length`); None as above.
    list_size: K; None pads to the longest list in the batch. A longer list is an error.
    prompt_overflow: `keep_end` (default) keeps the prompt's end, `keep_start` its start,
      `drop` drops the record, for prompts longer than P.
    response_overflow: `keep_start` (default), `keep_end` or `drop` for responses longer than R
      (or than L minus the prompt).
    add_bos: prepend the tokenizer's BOS to prompts when it has one.
    append_eos: append the tokenizer's EOS to responses when it has one.
    max_length: L, prompt + response tokens of one sequence (TRL's `max_length`); None for
      P + R. Each response is cut to `L − its prompt's length` by `response_overflow`; rows are
      `min(P + R, L)` long. Needs `max_prompt_tokens < L`; without P, prompts are cut to L − 1.
  Fix all three sizes for static shapes (one compilation of the train step).
  """

  max_prompt_tokens: Optional[int] = None
  max_response_tokens: Optional[int] = None
  list_size: Optional[int] = None
  prompt_overflow: str = "keep_end"
  response_overflow: str = "keep_start"
  add_bos: bool = True
  append_eos: bool = True
  max_length: Optional[int] = None

  def __post_init__(self):
    for name in ("prompt_overflow", "response_overflow"):
      if getattr(self, name) not in _OVERFLOW:
        raise ValueError(f"BatchConfig.{name}={getattr(self, name)!r}; expected one of {_OVERFLOW}")
    for name in ("max_prompt_tokens", "max_response_tokens", "list_size", "max_length"):
      value = getattr(self, name)
      if value is not None and value < 1:
        raise ValueError(f"BatchConfig.{name}={value}; expected None or >= 1")
    bos = 1 if self.add_bos else 0
    prompt_limit = self.prompt_limit
    if prompt_limit is not None and prompt_limit <= bos:
      raise ValueError(f"BatchConfig.max_prompt_tokens={self.max_prompt_tokens} and "
                       f"max_length={self.max_length} leave no room for prompt text after BOS")
    if None not in (self.max_length, self.max_prompt_tokens) and (
        self.max_prompt_tokens >= self.max_length):
      raise ValueError(f"BatchConfig.max_prompt_tokens={self.max_prompt_tokens} leaves no room "
                       f"for a response in max_length={self.max_length}")

  @property
  def prompt_limit(self) -> Optional[int]:
    """Prompt tokens kept, BOS included: P, or L − 1 when only `max_length` is set."""
    if self.max_prompt_tokens is None and self.max_length is not None:
      return self.max_length - 1
    return self.max_prompt_tokens

  @classmethod
  def from_trl(cls, *, max_prompt_length: Optional[int] = None,
               max_completion_length: Optional[int] = None, max_length: Optional[int] = None,
               **kwargs) -> "BatchConfig":
    """A config from TRL's length names (`DPOConfig.max_prompt_length`, `max_completion_length`,
    `max_length`) and any other field; the default cuts are TRL's (prompt keeps its end,
    completion its start)."""
    return cls(max_prompt_tokens=max_prompt_length, max_response_tokens=max_completion_length,
               max_length=max_length, **kwargs)

  def row_length(self, p: int, r: int) -> int:
    """T for prompts of P = `p` and responses of R = `r` tokens: `P + R`, at most `max_length`."""
    return p + r if self.max_length is None else min(p + r, self.max_length)


def truncate(ids: Sequence[int], limit: Optional[int], policy: str
             ) -> tuple[Optional[list[int]], bool]:
  """`(ids cut to limit by policy, whether cut)`; `(None, True)` when `policy == "drop"`."""
  ids = list(ids)
  if limit is None or len(ids) <= limit:
    return ids, False
  if policy == "drop":
    return None, True
  return (ids[:limit] if policy == "keep_start" else ids[len(ids) - limit:]), True


Render = Callable[..., str]  # render(messages, *, add_generation_prompt: bool) -> str


def render_conversation(record: Mapping[str, Any], render: Render) -> dict:
  """A conversational record as text: the prompt and each response rendered by a chat template.

  TRL's rule for preference data: `prompt = render(prompt_messages, add_generation_prompt=True)`
  and response k is what `render(prompt_messages + response_k, add_generation_prompt=False)` adds
  after it. The prompt text is the common prefix of these K + 1 renderings (TRL does the same for
  templates that render the last assistant turn differently), so prompt + response k is always
  exactly the full rendering k.

  Args:
    record: `{"prompt": list[message], "responses": list[list[message]], ...}`.
    render: e.g. `functools.partial(tokenizers.apply_chat_template, tokenizer, template=...,
      tokenize=False)`.
  Returns:
    The record with `prompt` a string and `responses` strings; other keys unchanged.
  """
  prompt = list(record["prompt"])
  full = [render(prompt + list(r), add_generation_prompt=False) for r in record["responses"]]
  text = os.path.commonprefix([render(prompt, add_generation_prompt=True)] + full)
  return dict(record, prompt=text, responses=[f[len(text):] for f in full])


def tokenize_record(record: Mapping[str, Any], tokenizer, config: BatchConfig = BatchConfig(),
                    *, render: Optional[Render] = None
                    ) -> tuple[Optional[dict], dict[str, int]]:
  """Tokenizes one canonical record under the length policy.

  Args:
    record: `{"prompt": str, "responses": list[str], "scores": list[float]}`, optionally with
      `"ref_logps": list[float]` (cached reference log-probs, batched as `ref_logps [B, K]`); or a
      conversational record (message lists), rendered by `render` first.
    tokenizer: `encode`, `bos_id`, `eos_id` as in docs/interfaces.md#tokenizers.
    config: lengths and policy.
    render: the chat template of conversational records (`render_conversation`).
  Returns:
    `(example, events)`: example `{"prompt": int32 [p], "responses": tuple of int32 [r_k],
    "labels": float32 [K]}` or None when dropped; events counts `truncated_prompts`,
    `truncated_responses`, `dropped_long_prompt`, `dropped_long_response`.
  Raises:
    ValueError: a prompt with no token, more responses than `config.list_size`, or a
      conversational record without `render`.
  """
  if not isinstance(record["prompt"], str):
    if render is None:
      raise ValueError("a conversational record (message lists) needs a chat template: pass "
                       "render=... (see batching.render_conversation)")
    record = render_conversation(record, render)
  responses, scores = record["responses"], record["scores"]
  if config.list_size is not None and len(responses) > config.list_size:
    raise ValueError(f"record has {len(responses)} responses but BatchConfig.list_size="
                     f"{config.list_size}: {record['prompt'][:60]!r}")
  prompt = tokenizer.encode(record["prompt"])
  rendered_bos = tokenizer.bos_id is not None and prompt[:1] == [tokenizer.bos_id]
  prompt = prompt[1:] if rendered_bos else prompt  # a template's BOS: kept once, never cut
  bos = [tokenizer.bos_id] if rendered_bos or (
      config.add_bos and tokenizer.bos_id is not None) else []
  eos = [tokenizer.eos_id] if config.append_eos and tokenizer.eos_id is not None else []
  events = {}
  limit = None if config.prompt_limit is None else config.prompt_limit - len(bos)
  prompt, cut = truncate(prompt, limit, config.prompt_overflow)
  if prompt is None:
    return None, {"dropped_long_prompt": 1}
  events["truncated_prompts"] = int(cut)
  prompt = bos + prompt
  if not prompt:
    raise ValueError(f"prompt {record['prompt']!r} has no token and the tokenizer no BOS; "
                     "use DataPolicy(empty_prompt='drop_record') or a tokenizer with a BOS")
  limit = config.max_response_tokens
  if config.max_length is not None:
    limit = min(limit or config.max_length, config.max_length - len(prompt))
  tokenized = []
  for response in responses:
    ids, cut = truncate(tokenizer.encode(response) + eos, limit, config.response_overflow)
    if ids is None:
      return None, {"dropped_long_response": 1}
    events["truncated_responses"] = events.get("truncated_responses", 0) + int(cut)
    tokenized.append(np.asarray(ids, np.int32))
  example = {"prompt": np.asarray(prompt, np.int32), "responses": tuple(tokenized),
             "labels": np.asarray(scores, np.float32)}
  if "ref_logps" in record:  # cached reference log-probs travel with their responses
    example["ref_logps"] = np.asarray(record["ref_logps"], np.float32)
  return example, {k: v for k, v in events.items() if v}


def _sizes(examples: Sequence[Mapping[str, Any]], config: BatchConfig) -> tuple[int, int, int]:
  """`(P, R, K)`: the configured sizes, or the batch maxima where None; checks every example
  (and that prompt + response fits `config.max_length`)."""
  longest = lambda values: max(values, default=1)
  p = config.max_prompt_tokens or longest(len(e["prompt"]) for e in examples)
  r = config.max_response_tokens or longest(len(x) for e in examples for x in e["responses"])
  k = config.list_size or longest(len(e["responses"]) for e in examples)
  for b, e in enumerate(examples):
    if not 1 <= len(e["prompt"]) <= p:
      raise ValueError(f"example {b}: prompt has {len(e['prompt'])} tokens; expected 1..{p}")
    if len(e["responses"]) > k or len(e["labels"]) != len(e["responses"]):
      raise ValueError(f"example {b}: {len(e['responses'])} responses and {len(e['labels'])} "
                       f"labels; expected equal and <= {k}")
    if any(len(x) > r for x in e["responses"]):
      raise ValueError(f"example {b}: a response is longer than {r} tokens")
    if any(len(e["prompt"]) + len(x) > config.row_length(p, r) for x in e["responses"]):
      raise ValueError(f"example {b}: prompt + response is longer than max_length="
                       f"{config.max_length}")
  return p, r, k


def _list_arrays(examples, p: int, r: int, k: int, pad_id: int) -> dict[str, np.ndarray]:
  """The batch keys (docs/interfaces.md#batches) that do not depend on the layout of rows."""
  n = len(examples)
  batch = {
      "prompt_tokens": np.full((n, p), pad_id, np.int32),
      "prompt_lengths": np.zeros((n,), np.int32),
      "response_tokens": np.full((n, k, r), pad_id, np.int32),
      "response_lengths": np.zeros((n, k), np.int32),
      "labels": np.zeros((n, k), np.float32),
      "where": np.zeros((n, k), bool),
  }
  for b, e in enumerate(examples):
    batch["prompt_tokens"][b, :len(e["prompt"])] = e["prompt"]
    batch["prompt_lengths"][b] = len(e["prompt"])
    for j, response in enumerate(e["responses"]):
      batch["response_tokens"][b, j, :len(response)] = response
      batch["response_lengths"][b, j] = len(response)
    batch["labels"][b, :len(e["labels"])] = e["labels"]
    batch["where"][b, :len(e["responses"])] = True
  if all("ref_logps" in e for e in examples):
    batch["ref_logps"] = np.zeros((n, k), np.float32)
    for b, e in enumerate(examples):
      batch["ref_logps"][b, :len(e["ref_logps"])] = e["ref_logps"]
  return batch


def _row_arrays(shape: tuple[int, ...], pad_id: int) -> dict[str, np.ndarray]:
  return {"tokens": np.full(shape, pad_id, np.int32),
          "segment_ids": np.zeros(shape, np.int32),
          "positions": np.zeros(shape, np.int32),
          "completion_mask": np.zeros(shape, bool)}


def _place(rows: dict[str, np.ndarray], index, start: int, prompt, response, segment: int) -> int:
  """Writes prompt + response at `rows[..][index][start:]`; returns the end offset."""
  p, end = len(prompt), start + len(prompt) + len(response)
  rows["tokens"][index][start:end] = np.concatenate([prompt, response])
  rows["segment_ids"][index][start:end] = segment
  rows["positions"][index][start:end] = np.arange(end - start)
  rows["completion_mask"][index][start + p:end] = True
  return end


def collate(examples: Sequence[Mapping[str, Any]], *, config: BatchConfig = BatchConfig(),
            pad_id: int = 0) -> dict[str, np.ndarray]:
  """Stacks tokenized examples into the batch of docs/interfaces.md#batches (one sequence per row).

  Args:
    examples: outputs of `tokenize_record`, B of them.
    config: P, R, K (batch maxima where None).
    pad_id: the padding id (the tokenizer's `pad_id`).
  Returns:
    The dict of the module docstring; `tokens` etc. are `[B, K, T]`, T = `config.row_length(P, R)`.
  """
  p, r, k = _sizes(examples, config)
  batch = _list_arrays(examples, p, r, k, pad_id)
  rows = _row_arrays((len(examples), k, config.row_length(p, r)), pad_id)
  empty = np.zeros((0,), np.int32)
  for b, e in enumerate(examples):
    for j in range(k):
      response = e["responses"][j] if j < len(e["responses"]) else empty
      _place(rows, (b, j), 0, e["prompt"], response, 1)
  return batch | rows


def pack(examples: Sequence[Mapping[str, Any]], *, config: BatchConfig = BatchConfig(),
         pad_id: int = 0, row_length: Optional[int] = None,
         num_rows: Optional[int] = None) -> dict[str, np.ndarray]:
  """Like `collate`, but packs the valid (prompt + response) sequences into shared rows.

  Sequences are placed first-fit in (example, slot) order; within a row they get segment ids
  1..n and positions restarting at 0, so attention must not cross segments.

  Args:
    examples, config, pad_id: as in `collate`.
    row_length: L, default `config.row_length(P, R)` (P + R, at most `max_length`).
    num_rows: N; None uses as many rows as needed. Too few rows is an error.
  Returns:
    The list keys of `collate` (`prompt_tokens`, ..., `where`), `tokens`, `segment_ids`,
    `positions`, `completion_mask` of shape `[N, L]`, and `pack_row`, `pack_segment` `[B, K]`
    int32: where sequence (b, k) lies (segment 0 for a padded slot). `packed_sums` maps
    per-token values back to `[B, K]`.
  """
  p, r, k = _sizes(examples, config)
  length = row_length or config.row_length(p, r)
  if length < config.row_length(p, r):
    raise ValueError(f"row_length={length} is shorter than T = {config.row_length(p, r)}")
  batch = _list_arrays(examples, p, r, k, pad_id)
  batch["pack_row"] = np.zeros((len(examples), k), np.int32)
  batch["pack_segment"] = np.zeros((len(examples), k), np.int32)
  used, placed = [], []  # used[i]: tokens in row i; placed: (b, j, row, start, segment)
  for b, e in enumerate(examples):
    for j, response in enumerate(e["responses"]):
      size = len(e["prompt"]) + len(response)
      row = next((i for i, u in enumerate(used) if u[0] + size <= length), None)
      if row is None:
        used.append([0, 0])
        row = len(used) - 1
      used[row][1] += 1
      placed.append((b, j, row, used[row][0], used[row][1]))
      used[row][0] += size
  if num_rows is not None and len(used) > num_rows:
    raise ValueError(f"{len(placed)} sequences need {len(used)} rows of {length}; "
                     f"num_rows={num_rows}")
  rows = _row_arrays((num_rows or max(len(used), 1), length), pad_id)
  for b, j, row, start, segment in placed:
    _place(rows, row, start, examples[b]["prompt"], examples[b]["responses"][j], segment)
    batch["pack_row"][b, j] = row
    batch["pack_segment"][b, j] = segment
  return batch | rows


def packed_sums(values: jax.Array, segment_ids: jax.Array, pack_row: jax.Array,
                pack_segment: jax.Array) -> jax.Array:
  """Sums per-token `values [N, L]` over each packed sequence: `[B, K]` (0 for padded slots).

  `out[b, k] = Σ_l values[n, l] · [segment_ids[n, l] = pack_segment[b, k]]`, `n = pack_row[b, k]`.
  Mask `values` (e.g. with `completion_mask`) before calling.
  """
  n, length = segment_ids.shape
  ids = jnp.arange(n)[:, None] * (length + 1) + segment_ids
  sums = jax.ops.segment_sum(values.reshape(-1), ids.reshape(-1), num_segments=n * (length + 1))
  out = sums[pack_row * (length + 1) + pack_segment]
  return jnp.where(pack_segment > 0, out, 0)


def mismatched_batch(batch: Mapping[str, Any], *, pad_id: int = 0) -> dict[str, jax.Array]:
  """KTO's mismatched pairs: prompt i with the responses of row i − 1.

  Their log-probs estimate KTO's reference point z0 (Ethayarajh et al., *KTO: Model Alignment as
  Prospect Theoretic Optimization*, ICML 2024).

  Rotates the responses of a `collate`d batch by one along the batch axis (row 0 gets the last
  row's) and rebuilds the rows around the unchanged prompts, so the result is exactly
  `collate([{prompt_i, responses_{i−1}}])`: `tokens[b, k] = prompt_b ++ response_{b−1, k} ++
  pad`, segment 1 and positions 0.. on the sequence, `completion_mask` on the response. A padded
  slot of row b − 1 stays padded (`where`, `response_lengths`, `labels` rotate with it). When
  T < P + R (`BatchConfig.max_length`), a response that no longer fits after prompt b keeps its
  first `T − prompt_lengths[b]` tokens, as `tokenize_record` cuts it. Written
  in jnp so the trainer builds it inside the jitted step from the *global* batch (numpy inputs
  work too); packed batches (`pack`) are not supported.

  Args:
    batch: `prompt_tokens [B, P]`, `prompt_lengths [B]`, `response_tokens [B, K, R]`,
      `response_lengths [B, K]`, `labels [B, K]`, `where [B, K]`, `tokens [B, K, T]`.
    pad_id: the padding id (the tokenizer's `pad_id`).
  Returns:
    The keys above plus `segment_ids`, `positions`, `completion_mask` (`[B, K, T]`), for the
    mismatched pairs.
  """
  if "pack_row" in batch:
    raise ValueError("mismatched_batch: packed batches are not supported; use `collate`.")
  prompt = jnp.asarray(batch["prompt_tokens"])  # [B, P]
  prompt_lengths = jnp.asarray(batch["prompt_lengths"])[:, None, None]  # [B, 1, 1]
  roll = lambda key: jnp.roll(jnp.asarray(batch[key]), 1, axis=0)
  responses, response_lengths = roll("response_tokens"), roll("response_lengths")  # [B,K,R], [B,K]
  (b, k, r), (p, t) = responses.shape, (prompt.shape[1], batch["tokens"].shape[-1])
  response_lengths = jnp.minimum(response_lengths, t - prompt_lengths[..., 0])  # max_length
  responses = jnp.where(jnp.arange(r) < response_lengths[..., None], responses, pad_id)
  pos = jnp.arange(t)[None, None, :]  # [1, 1, T]
  in_prompt = jnp.broadcast_to(pos < prompt_lengths, (b, k, t))
  in_response = (pos >= prompt_lengths) & (pos < prompt_lengths + response_lengths[..., None])
  prompt_ids = jnp.take(prompt, jnp.minimum(jnp.arange(t), p - 1), axis=1)[:, None, :]
  offsets = jnp.broadcast_to(jnp.clip(pos - prompt_lengths, 0, r - 1), (b, k, t))
  response_ids = jnp.take_along_axis(responses, offsets, axis=2)
  sequence = in_prompt | in_response
  return {
      "prompt_tokens": prompt,
      "prompt_lengths": jnp.asarray(batch["prompt_lengths"]),
      "response_tokens": responses,
      "response_lengths": response_lengths,
      "labels": roll("labels"),
      "where": roll("where"),
      "tokens": jnp.where(in_prompt, prompt_ids, jnp.where(in_response, response_ids, pad_id)
                          ).astype(jnp.int32),
      "segment_ids": sequence.astype(jnp.int32),
      "positions": jnp.where(sequence, pos, 0).astype(jnp.int32),
      "completion_mask": in_response,
  }
