"""Sampling responses from a policy and turning them into rated preference records.

Used offline (`alignment.recipes.preferences`), for online preference rounds (call
`make_preference_records` every N steps with the current policy), and by RLHF rounds
(`alignment.training.rlhf.sample_groups`), which keep the tokens and per-token log-probs of
`sample_tokens`.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

from alignment.data import raters
from alignment.models import sampler as sampler_lib
from alignment.training.logs import Progress


def encode_prompts(
    tokenizer, prompts: Sequence[str], max_length: int
) -> tuple[np.ndarray, np.ndarray]:
  """Right-padded prompt ids `[N, P]` and lengths `[N]`; an over-long prompt is an error.

  The tokenizer's BOS (if any) is prepended, as `data.batching.BatchConfig(add_bos=True)` does
  for training batches, so sampled and trained prompts look the same to the model.
  """
  bos = [] if tokenizer.bos_id is None else [tokenizer.bos_id]
  ids = [bos + tokenizer.encode(p) for p in prompts]
  for i, row in enumerate(ids):
    if not row:
      raise ValueError(f"Prompt {i} ({prompts[i]!r}) encodes to no tokens.")
    if len(row) > max_length:
      raise ValueError(
          f"Prompt {i} ({prompts[i]!r}) has {len(row)} tokens, more than max_length={max_length}."
      )
  tokens = np.full((len(ids), max_length), tokenizer.pad_id, np.int32)
  for i, row in enumerate(ids):
    tokens[i, : len(row)] = row
  return tokens, np.array([len(r) for r in ids], np.int32)


def decode_responses(tokenizer, tokens: np.ndarray, lengths: np.ndarray) -> list[str]:
  """Decodes sampled rows, dropping the EOS token that ended a row (if any)."""
  out = []
  for row, n in zip(np.asarray(tokens), np.asarray(lengths)):
    row = [int(t) for t in row[: int(n)]]
    if row and tokenizer.eos_id is not None and row[-1] == tokenizer.eos_id:
      row = row[:-1]
    out.append(tokenizer.decode(row))
  return out


def sample_tokens(
    model_config,
    params: Any,
    prompt_tokens: np.ndarray,
    prompt_lengths: np.ndarray,
    key: jax.Array,
    *,
    max_new_tokens: int,
    eos_id,
    temperature: float = 1.0,
    greedy: bool = False,
    batch_size: int = 256,
    show_progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One continuation of each of N right-padded prompts `[N, P]` (lengths `[N]`).

  `alignment.models.sampler.sample` in chunks of `batch_size` rows (the last chunk padded by
  repeating a row, so every call has one static shape); chunk c draws with the c-th key split
  off `key`. Returns `tokens [N, M]` int32 (0 after EOS), the model's per-token `logps [N, M]`
  float32 (0 after EOS) and `lengths [N]` int32 (EOS included), M = `max_new_tokens`.
  """
  total = len(prompt_tokens)
  chunks = []
  progress = Progress("sampling", total, unit="responses") if show_progress else None
  for start in range(0, total, batch_size):
    idx = np.minimum(np.arange(start, start + batch_size), total - 1)
    key, sub = jax.random.split(key)
    out = sampler_lib.sample(
        model_config, params, prompt_tokens[idx], prompt_lengths[idx], sub,
        max_new_tokens=max_new_tokens, temperature=temperature, eos_id=eos_id, greedy=greedy,
    )
    keep = min(batch_size, total - start)
    chunks.append([np.asarray(x)[:keep] for x in out])
    if progress is not None:
      progress.update(start + keep)
  tokens, logps, lengths = (np.concatenate(parts) for parts in zip(*chunks))
  return tokens, logps, lengths


def sample_responses(
    model_config,
    params: Any,
    tokenizer,
    prompts: Sequence[str],
    key: jax.Array,
    *,
    num_samples: int,
    max_prompt_length: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    greedy: bool = False,
    batch_size: int = 256,
) -> tuple[list[list[str]], np.ndarray]:
  """`num_samples` responses per prompt: `(responses [N][k] strings, sequence logps [N, k])`."""
  prompt_tokens, prompt_lengths = encode_prompts(tokenizer, prompts, max_prompt_length)
  tokens, logps, lengths = sample_tokens(
      model_config, params, np.repeat(prompt_tokens, num_samples, axis=0),
      np.repeat(prompt_lengths, num_samples, axis=0), key, max_new_tokens=max_new_tokens,
      eos_id=tokenizer.eos_id, temperature=temperature, greedy=greedy, batch_size=batch_size,
  )
  texts = decode_responses(tokenizer, tokens, lengths)
  responses = [texts[i * num_samples:(i + 1) * num_samples] for i in range(len(prompts))]
  return responses, logps.sum(axis=-1).reshape(len(prompts), num_samples)


def rate_lists(
    task, prompts: Sequence[str], responses: Sequence[Sequence[str]], rng: np.random.Generator,
    *, rater: str, temperature: float, flip_rate: float, attribute: str = "",
) -> tuple[np.ndarray, np.ndarray]:
  """True values `[N, K]` and the simulated rater's graded labels `[N, K]` (higher is better).

  The rater sees the true reward `R = Σ_a w_a·a(y)` (`attribute=""`, the default) or one
  attribute's true value `a(y)` (`attribute` a name of `task.weights`, e.g. "harmlessness"): a
  rater asked about that attribute alone, as for the per-attribute reward models of *Transforming
  and Combining Rewards for Aligning Large Language Models* (Wang et al., 2024). An unknown
  attribute raises a ValueError naming the task's attributes.
  """
  if attribute:
    if attribute not in task.weights:
      raise ValueError(f"rate_lists: unknown attribute {attribute!r} of task {task.name!r}; "
                       f"known: {sorted(task.weights)} (or '' for the total reward).")
    k = len(responses[0]) if len(responses) else 0
    if any(len(rs) != k for rs in responses):
      raise ValueError(f"rate_lists: every list needs the same number of responses, got "
                       f"{sorted({len(rs) for rs in responses})}.")
    flat = task.attributes_batch([p for p in prompts for _ in range(k)],
                                 [r for rs in responses for r in rs])[attribute]
    rewards = np.asarray(flat, np.float64).reshape(len(prompts), k)
  else:
    rewards = np.array(
        [[task.reward(p, r) for r in rs] for p, rs in zip(prompts, responses)], np.float64
    )
  if rater == "plackett_luce":
    labels = raters.ranking_labels(
        raters.plackett_luce_ranking(rewards, rng, temperature=temperature, flip_rate=flip_rate)
    )
  elif rater == "true_reward":
    labels = rewards
  else:
    raise ValueError(f"preferences.rater must be 'plackett_luce' or 'true_reward', got {rater!r}.")
  return rewards, np.asarray(labels, np.float32)


def make_preference_records(prompts, responses, labels, rewards) -> list[dict]:
  """Canonical listwise records `{prompt, responses, scores, rewards}`."""
  return [
      {"prompt": p, "responses": list(rs), "scores": [float(x) for x in ls],
       "rewards": [float(x) for x in rw]}
      for p, rs, ls, rw in zip(prompts, responses, labels, rewards)
  ]
