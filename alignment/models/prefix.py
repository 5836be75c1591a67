"""Prefix sharing (K responses scored with the prompt encoded once) and sequence packing.

Prefix sharing lays one row per prompt out as `[prompt | resp_1 | ... | resp_K]` (T = P + K·R)
and replaces the causal mask with a block mask: prompt tokens attend causally to the real prompt;
a token of response k attends to the real prompt tokens and causally to the real tokens of
response k, never to another response. Response positions continue from the real prompt length,
so every response sees exactly the context it would see in its own row `[prompt, resp_k]`, and
the scores equal independent scoring while the prompt's FLOPs are paid once instead of K times
(cf. *Prefix Sharing for Direct Preference Optimization*, Wang et al., 2024).

Packing puts several short sequences in one row with segment ids 1..n and restarting positions;
`transformer.apply`'s causal-and-same-segment mask keeps them independent.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alignment.models import logprobs as logprobs_lib
from alignment.models import transformer
from alignment.models.config import ModelConfig

Array = jax.Array


def prefix_shared_layout(prompt_tokens: Array, prompt_lengths: Array, response_tokens: Array,
                         response_mask: Array) -> tuple[Array, Array, Array]:
  """Builds the shared row: `(tokens [B, T], positions [B, T], attention_mask [B, T, T])`.

  With T = P + K·R, slot `P + k·R + r` holds `response_tokens[b, k, r]` at position
  `prompt_lengths[b] + r`. Block id: 0 for the prompt, k + 1 for response k. Key j is valid if
  it is a real prompt token (`j < prompt_lengths[b]`) or a real response token
  (`response_mask`). `mask[b, i, j] = valid[b, j] ∧ j <= i ∧ (block[j] = 0 ∨ block[j] =
  block[i])`. Slot 0 is always a valid key (prompt_lengths >= 1), so no query row is empty.
  """
  b, p = prompt_tokens.shape
  _, k, r = response_tokens.shape
  t = p + k * r
  tokens = jnp.concatenate([prompt_tokens, response_tokens.reshape(b, k * r)], axis=1)
  prompt_lengths = jnp.asarray(prompt_lengths, jnp.int32)
  response_positions = prompt_lengths[:, None] + jnp.tile(jnp.arange(r, dtype=jnp.int32), k)
  positions = jnp.concatenate(
      [jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p)), response_positions], axis=1)
  block = jnp.concatenate([jnp.zeros(p, jnp.int32), jnp.repeat(jnp.arange(1, k + 1), r)])
  valid = jnp.concatenate([jnp.arange(p)[None, :] < prompt_lengths[:, None],
                           jnp.asarray(response_mask, bool).reshape(b, k * r)], axis=1)
  slots = jnp.arange(t)
  structure = ((slots[None, :] <= slots[:, None])
               & ((block[None, :] == 0) | (block[None, :] == block[:, None])))
  return tokens, positions, structure[None] & valid[:, None, :]


def prefix_shared_logps(config: ModelConfig, params, prompt_tokens: Array, prompt_lengths: Array,
                        response_tokens: Array, response_mask: Array, *,
                        chunk_size: int = logprobs_lib.DEFAULT_CHUNK_SIZE,
                        vocab_chunk_size: Optional[int] = logprobs_lib.DEFAULT_VOCAB_CHUNK_SIZE,
                        ) -> tuple[Array, Array]:
  """Summed log-probs of K responses per prompt, with the prompt encoded once.

  `logps[b, k] = Σ_r response_mask[b,k,r] · log p(response_tokens[b,k,r] | prompt_b,
  response_tokens[b,k,:r])`, equal (up to float rounding) to scoring each `[prompt, resp_k]` in
  its own row. The first response token is predicted from the hidden state of the last real
  prompt token; later ones from the previous response slot. The LM head runs through the
  chunked `alignment.models.logprobs.token_logps` (no `[B, T, V]` float32 logits) with the
  config's final soft-cap; sliding windows are measured in positions, which are those of the
  independent row, so windowed layers see what they would see there.

  Args:
    config, params: the model.
    prompt_tokens: `[B, P]` int, right-padded.
    prompt_lengths: `[B]` int, real prompt tokens (1 <= length <= P; not checked under jit).
    response_tokens: `[B, K, R]` int, right-padded.
    response_mask: `[B, K, R]` bool, True on real response tokens.
    chunk_size, vocab_chunk_size: tile sizes of `token_logps`.

  Returns:
    `(logps [B, K] float32, counts [B, K] int32)` with `counts = Σ_r response_mask`.
  """
  prompt_tokens, response_tokens = jnp.asarray(prompt_tokens), jnp.asarray(response_tokens)
  response_mask = jnp.asarray(response_mask, bool)
  if prompt_tokens.ndim != 2 or response_tokens.ndim != 3:
    raise ValueError(f"prefix_shared_logps: expected prompt_tokens [B, P] and response_tokens "
                     f"[B, K, R], got {prompt_tokens.shape} and {response_tokens.shape}.")
  b, p = prompt_tokens.shape
  if response_tokens.shape[0] != b or response_mask.shape != response_tokens.shape:
    raise ValueError(f"prefix_shared_logps: response_tokens {response_tokens.shape} and "
                     f"response_mask {response_mask.shape} must be [B={b}, K, R] alike.")
  if jnp.shape(prompt_lengths) != (b,):
    raise ValueError(f"prefix_shared_logps: prompt_lengths must be [B={b}], "
                     f"got {jnp.shape(prompt_lengths)}.")
  _, k, r = response_tokens.shape
  tokens, positions, mask = prefix_shared_layout(prompt_tokens, prompt_lengths, response_tokens,
                                                 response_mask)
  hidden = transformer.apply(config, params, tokens, positions, jnp.ones_like(tokens),
                             attention_mask=mask)
  # Slot predicting response token (k, r): the last real prompt token for r = 0, else the
  # previous slot of the same response.
  last_prompt = jnp.asarray(prompt_lengths, jnp.int32)[:, None, None] - 1
  previous = p + (jnp.arange(k) * r)[:, None] + jnp.arange(r)[None, :] - 1
  source = jnp.where(jnp.arange(r) == 0, last_prompt, previous[None])  # [B, K, R]
  source_hidden = jnp.take_along_axis(hidden, source.reshape(b, k * r, 1), axis=1)
  head = transformer.lm_head_weight(config, params).astype(hidden.dtype)
  token_logps = logprobs_lib.token_logps(
      source_hidden.reshape(b, k, r, -1), head, response_tokens.astype(jnp.int32),
      chunk_size=chunk_size, vocab_chunk_size=vocab_chunk_size,
      soft_cap=config.final_logit_softcap)
  logps = jnp.sum(jnp.where(response_mask, token_logps, 0.0), axis=-1)
  return logps, jnp.sum(response_mask, axis=-1, dtype=jnp.int32)


def pack_sequences(sequences: Sequence[Sequence[int]], row_length: int, *,
                   masks: Optional[Sequence[Sequence[bool]]] = None,
                   pad_id: int = 0) -> dict[str, np.ndarray]:
  """Packs variable-length sequences into rows of `row_length` (host-side numpy, first fit).

  Sequences are placed, in order, into the first row with enough room (a new row otherwise).
  Within a row, the i-th sequence gets segment id i (1-based) and positions 0..len-1; padding
  has segment 0, position 0 and `pad_id`.

  Args:
    sequences: n sequences of token ids, each of length 1..row_length.
    row_length: tokens per row.
    masks: optional per-token booleans (e.g. completion masks), same lengths as `sequences`.
    pad_id: id written on padding.

  Returns:
    A dict of numpy arrays: `tokens`, `segment_ids`, `positions` `[rows, row_length]` int32,
    `mask` `[rows, row_length]` bool (only if `masks` is given), and `row [n]`, `start [n]` int32
    (where sequence i was placed), so per-sequence results can be gathered back.

  Raises:
    ValueError: an empty or over-long sequence, or a mask of the wrong length (naming its index).
  """
  if row_length < 1:
    raise ValueError(f"pack_sequences: row_length must be >= 1, got {row_length}.")
  if masks is not None and len(masks) != len(sequences):
    raise ValueError(f"pack_sequences: {len(masks)} masks for {len(sequences)} sequences.")
  free, rows_of, starts = [], [], []  # free[row] = next free slot of that row.
  for i, seq in enumerate(sequences):
    n = len(seq)
    if not 1 <= n <= row_length:
      raise ValueError(f"pack_sequences: sequence {i} has length {n}, expected 1..{row_length}.")
    if masks is not None and len(masks[i]) != n:
      raise ValueError(f"pack_sequences: mask {i} has length {len(masks[i])}, sequence has {n}.")
    row = next((j for j, used in enumerate(free) if used + n <= row_length), len(free))
    if row == len(free):
      free.append(0)
    rows_of.append(row)
    starts.append(free[row])
    free[row] += n
  shape = (len(free), row_length)
  out = {"tokens": np.full(shape, pad_id, np.int32), "segment_ids": np.zeros(shape, np.int32),
         "positions": np.zeros(shape, np.int32)}
  if masks is not None:
    out["mask"] = np.zeros(shape, bool)
  segment_counter = [0] * len(free)
  for i, (seq, row, start) in enumerate(zip(sequences, rows_of, starts)):
    segment_counter[row] += 1
    span = slice(start, start + len(seq))
    out["tokens"][row, span] = seq
    out["segment_ids"][row, span] = segment_counter[row]
    out["positions"][row, span] = np.arange(len(seq))
    if masks is not None:
      out["mask"][row, span] = masks[i]
  out["row"] = np.asarray(rows_of, np.int32)
  out["start"] = np.asarray(starts, np.int32)
  return out
