"""Reward models: the reference decoder with a scalar (or one-per-attribute) linear head.

    r(x, y) = W_rᵀ · h_last(x, y) + b_r        W_r [D, A], b_r [A]

where `h_last` is the final-normed hidden state (`alignment.models.transformer.apply`) at the last
completion token of the sequence `x ⊕ y` (the EOS where the task appends one). With A = 1 this is
the scalar reward model of *Training language models to follow instructions with human feedback*
(Ouyang et al., 2022) and *Learning to summarize from human feedback* (Stiennon et al., 2020); with
A > 1 each head scores one attribute (the multi-objective reward model of *Arithmetic Control of
LLMs for Diverse User Preferences: Directional Preference Alignment with Multi-Objective Rewards*,
Wang et al., 2024). No LM head is kept or computed: the model never builds `[..., T, V]` logits.

Parameter tree (plain nested dict):
```
backbone/...      the decoder's parameters (docs/interfaces.md#models) without lm_head
head/kernel       [D, A]   ("embed", None)
head/bias         [A]      (None,)
```
Rows follow the batch layout of docs/interfaces.md#batches: one sequence per row (segment ids 0/1),
right-padded. Packed rows (segment ids 1..n) are not supported: a row gets one reward.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from alignment.models import transformer
from alignment.models.config import ModelConfig

Array = jax.Array
Params = dict[str, Any]

_HEAD_INIT_STD = 0.02  # HF `initializer_range`, as for the score head of sequence classifiers.


def _check_num_heads(num_heads) -> None:
  if not isinstance(num_heads, int) or isinstance(num_heads, bool) or num_heads < 1:
    raise ValueError(f"reward_model: num_heads must be a positive int, got {num_heads!r}.")


def backbone_from_decoder(params: Params) -> Params:
  """The decoder parameters a reward model keeps: all but `lm_head` (e.g. of an SFT model)."""
  return {name: value for name, value in params.items() if name != "lm_head"}


def init_reward_params(config: ModelConfig, key: Array, *, num_heads: int = 1) -> Params:
  """Fresh reward-model parameters `{"backbone": ..., "head": {"kernel", "bias"}}`.

  The backbone is `transformer.init_params(config, key)` without `lm_head`; the head kernel is
  `N(0, 0.02²)` of shape `[D, num_heads]` and the bias 0. To start from a fine-tuned decoder,
  replace `backbone` with `backbone_from_decoder(decoder_params)`.
  """
  _check_num_heads(num_heads)
  backbone_key, head_key = jax.random.split(key)
  backbone = backbone_from_decoder(transformer.init_params(config, backbone_key))
  kernel = _HEAD_INIT_STD * jax.random.normal(head_key, (config.width, num_heads),
                                              config.param_dtype)
  head = {"kernel": kernel, "bias": jnp.zeros((num_heads,), config.param_dtype)}
  return {"backbone": backbone, "head": head}


def logical_axes(config: ModelConfig) -> Params:
  """The parameter tree with each leaf replaced by its logical axis names (for sharding rules)."""
  backbone = backbone_from_decoder(transformer.logical_axes(config))
  return {"backbone": backbone, "head": {"kernel": ("embed", None), "bias": (None,)}}


def last_token_index(segment_ids: Array, completion_mask: Array) -> Array:
  """Index `[...]` of the token whose hidden state is scored, per row of `[..., T]` inputs.

  The last completion token; for a row without one (an empty response or a padded list slot),
  the last real token (`segment_ids != 0`); for an all-padding row, 0.
  """
  t = segment_ids.shape[-1]
  positions = jnp.arange(t)
  last = lambda mask: jnp.max(jnp.where(mask, positions, -1), axis=-1)
  last_completion = last(jnp.asarray(completion_mask, bool))
  last_real = last(jnp.asarray(segment_ids) != 0)
  return jnp.maximum(jnp.where(last_completion >= 0, last_completion, last_real), 0)


def reward_head(params: Params, hidden: Array) -> Array:
  """`hidden [..., D] -> rewards [..., A]` in float32: `h·W + b`."""
  head = params["head"]
  return (jnp.einsum("...d,da->...a", hidden.astype(jnp.float32),
                     head["kernel"].astype(jnp.float32))
          + head["bias"].astype(jnp.float32))


def reward_scores(config: ModelConfig, params: Params, tokens: Array, positions: Array,
                  segment_ids: Array, completion_mask: Array) -> Array:
  """Rewards `[..., A]` float32 of the sequences `tokens [..., T]` (docs/interfaces.md#batches).

  `r = head(h[last])`, `h = transformer.apply(backbone, ...)`, `last = last_token_index(...)`.

  Args:
    config: the decoder configuration of the backbone.
    params: `init_reward_params`-shaped parameters.
    tokens, positions, segment_ids: `[..., T]` int, one right-padded sequence per row.
    completion_mask: `[..., T]` bool, True on response tokens.

  Returns:
    `[..., A]` float32 rewards, one per head (A = 1 for a scalar reward model).
  """
  completion_mask = jnp.asarray(completion_mask)
  segment_ids = jnp.asarray(segment_ids)
  if completion_mask.shape != segment_ids.shape:
    raise ValueError(f"reward_scores: completion_mask has shape {completion_mask.shape}, "
                     f"segment_ids have {segment_ids.shape}.")
  hidden = transformer.apply(config, params["backbone"], tokens, positions, segment_ids)
  index = last_token_index(segment_ids, completion_mask)
  last_hidden = jnp.take_along_axis(hidden, index[..., None, None], axis=-2)[..., 0, :]
  return reward_head(params, last_hidden)
