"""DR-PO dataset resets: roll-in prompts on prefixes of offline responses, and their loss mask.

A data-side transform of on-policy training ("Dataset Reset Policy Optimization for RLHF",
Chang et al., 2024): the policy continues from a teacher-forced prefix of a preferred response,
and the prefix is masked out of the policy loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from alignment import arrays

Array = jax.Array


def drpo_reset(
    key, prompt_tokens, prompt_lengths, preferred_tokens, preferred_lengths, *,
    p_reset: float = 1.0,
) -> tuple[Array, Array, Array]:
  """DR-PO dataset reset: roll in on a prefix of the offline preferred response.

  With probability `p_reset` per sample the prefix length is uniform on `1..len − 1` (no reset
  when `len < 2`); the prefix is appended to the prompt (teacher-forced), the policy continues
  from there, and the prefix is masked out of the policy loss (`rollin_mask`). The rest is
  PPO-RLHF (per-token reward `−0.05·(lp_t − lr_t)` + score at EOS, GAE γ = 1, λ = 0.95, clip 0.2,
  temperature 0.7), not part of this transform.

  Paper: "Dataset Reset Policy Optimization for RLHF" (Chang et al., 2024); code Cornell-RL/drpo
  (`src/tldr/drpo.py`).

  Args:
    key: PRNG key.
    prompt_tokens: `[B, P]` right-padded prompts; prompt_lengths: `[B]`.
    preferred_tokens: `[B, R]` right-padded preferred responses; preferred_lengths: `[B]`.
    p_reset: reset probability in [0, 1] (1.0).

  Returns:
    `(tokens [B, P + R], lengths [B], prefix_lengths [B])`: the right-padded (pad 0) new prompts
    = prompt followed by the prefix, their lengths, and the prefix lengths (0 = no reset).
  """
  name = "drpo_reset"
  arrays.check_range("p_reset", p_reset, low=0.0, high=1.0, where=name)
  prompt_tokens, preferred_tokens = jnp.asarray(prompt_tokens), jnp.asarray(preferred_tokens)
  if prompt_tokens.ndim != 2 or preferred_tokens.ndim != 2:
    raise ValueError(f"{name}: prompt_tokens and preferred_tokens must be [B, P] and [B, R], "
                     f"got {prompt_tokens.shape} and {preferred_tokens.shape}.")
  prompt_lengths = jnp.asarray(prompt_lengths, jnp.int32)
  lengths = jnp.asarray(preferred_lengths, jnp.int32)
  reset_key, length_key = jax.random.split(key)
  reset = (jax.random.uniform(reset_key, lengths.shape) < p_reset) & (lengths >= 2)
  prefix = jax.random.randint(length_key, lengths.shape, 1, jnp.maximum(lengths, 2))
  prefix = jnp.where(reset, prefix, 0)
  total = prompt_tokens.shape[1] + preferred_tokens.shape[1]
  pos = jnp.arange(total)[None, :]
  start = prompt_lengths[:, None]
  from_prompt = jnp.take_along_axis(
      prompt_tokens, jnp.clip(pos, 0, prompt_tokens.shape[1] - 1), axis=1)
  from_response = jnp.take_along_axis(
      preferred_tokens, jnp.clip(pos - start, 0, preferred_tokens.shape[1] - 1), axis=1)
  tokens = jnp.where(pos < start, from_prompt,
                     jnp.where(pos < start + prefix[:, None], from_response, 0))
  return tokens.astype(prompt_tokens.dtype), prompt_lengths + prefix, prefix


def rollin_mask(completion_mask, prefix_lengths) -> Array:
  """The policy-loss mask of a response that starts with a teacher-forced roll-in prefix.

  Drops the first `prefix_lengths` completion tokens of each row: `mask_t & (rank_t > prefix)`,
  rank_t = 1-based index of token t among the completion tokens.

  Args:
    completion_mask: `[..., T]` bool. prefix_lengths: `[...]` int (0 = nothing dropped).

  Returns:
    `[..., T]` bool.
  """
  mask = jnp.asarray(completion_mask, bool)
  rank = jnp.cumsum(mask, axis=-1)
  return mask & (rank > jnp.asarray(prefix_lengths)[..., None])
