"""The pure pieces of the RLHF policy-gradient loop (`experiments/rlhf.py`).

One round: sample G responses per prompt from the current policy, score them, turn the scores
into group advantages and take several minibatch epochs of clipped policy-gradient updates
(ALGORITHMS.md §5.1–§5.3):

    samples  -> on_policy_batch        tokens/positions/segment_ids/completion_mask [B, G, T]
                                       (+ the sampler's per-token log-probs as `old_token_logps`)
    rewards  -> shape_rewards          [B, G, M] scores of M sources, optionally LSC-transformed
                                       against per-prompt reference rewards, combined (§6.2)
             -> kl_penalised_rewards   r − β·(lp − lr), k1 summed per sequence ("KL in the reward")
             -> group_advantages       GRPO group z-scores or RLOO leave-one-out (stop-gradient)
    update   -> policy_gradient_loss   PPO's clipped surrogate of `alignment.losses.group` over
                                       per-token log-probs (chunked: never [B, T, V] f32 logits),
                                       optionally + β·k3 to the reference ("KL in the loss")

Everything here is a function of arrays; sampling, reward models and checkpoints are wired in
the binary. The per-token arrays of a batch are named `old_token_logps` / `ref_token_logps`
`[B, G, T]` (entry t scores token t, 0 elsewhere), distinct from the sequence-level `ref_logps`
`[B, K]` of docs/interfaces.md §2.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alignment import losses
from alignment import metrics as metrics_lib
from alignment.losses import group
from alignment.models import logprobs as logprobs_lib
from alignment.rewards import transforms

Array = jax.Array
TokenLogpFn = Callable[[Any, dict], Array]

ADVANTAGES = ("grpo", "rloo")
KL_PLACEMENTS = ("loss", "reward")
REWARD_TRANSFORMS = ("none", "lsc")
R_REF_ESTIMATORS = ("quantile", "normal")


def _check_choice(name: str, value, choices, where: str) -> None:
  if value not in choices:
    raise ValueError(f"{where}: {name} must be one of {choices}, got {value!r}.")


# ------------------------------------------------------------------------------------------------
# The on-policy batch.


def on_policy_batch(
    prompt_tokens, prompt_lengths, sample_tokens, sample_lengths, *, sample_logps=None,
    pad_id: int = 0,
) -> dict[str, np.ndarray]:
  """The batch of docs/interfaces.md §2 for G sampled responses per prompt (K = G).

  Row `(b, g)` of `tokens` is the prompt `prompt_tokens[b, :prompt_lengths[b]]`, then the
  sampled response `sample_tokens[b, g, :sample_lengths[b, g]]` (EOS included where the sampler
  emitted one), then `pad_id`; `T = P + N`. Segment id 1 and positions 0, 1, … on the real
  tokens, 0 on padding; `completion_mask` is True on the response tokens. Every slot is valid
  (`where` True) and `labels` are 0 (rewards come later).

  Args:
    prompt_tokens: `[B, P]` int, right-padded. prompt_lengths: `[B]` int in `[1, P]`.
    sample_tokens: `[B, G, N]` int, right-padded (as `alignment.models.sampler.sample` returns,
      reshaped). sample_lengths: `[B, G]` int in `[0, N]`.
    sample_logps: optional `[B, G, N]` float per-token log-probs of the samples under the
      sampling policy; returned as `old_token_logps [B, G, T]` aligned with `tokens`.
    pad_id: padding id.

  Returns:
    A dict of numpy arrays: `prompt_tokens`, `prompt_lengths`, `response_tokens [B, G, N]`,
    `response_lengths [B, G]`, `tokens`, `positions`, `segment_ids [B, G, T]` int32,
    `completion_mask [B, G, T]` bool, `labels [B, G]` float32, `where [B, G]` bool, and
    `old_token_logps [B, G, T]` float32 when `sample_logps` is given.
  """
  prompt_tokens = np.asarray(prompt_tokens, np.int32)
  prompt_lengths = np.asarray(prompt_lengths, np.int32)
  sample_tokens = np.asarray(sample_tokens, np.int32)
  sample_lengths = np.asarray(sample_lengths, np.int32)
  if prompt_tokens.ndim != 2 or prompt_lengths.shape != prompt_tokens.shape[:1]:
    raise ValueError(f"on_policy_batch: expected prompt_tokens [B, P] and prompt_lengths [B], "
                     f"got {prompt_tokens.shape} and {prompt_lengths.shape}.")
  b, p = prompt_tokens.shape
  if sample_tokens.ndim != 3 or sample_tokens.shape[0] != b:
    raise ValueError(f"on_policy_batch: sample_tokens must be [B={b}, G, N], got "
                     f"{sample_tokens.shape}.")
  if sample_lengths.shape != sample_tokens.shape[:2]:
    raise ValueError(f"on_policy_batch: sample_lengths must be [B, G] = "
                     f"{sample_tokens.shape[:2]}, got {sample_lengths.shape}.")
  n = sample_tokens.shape[2]
  if prompt_lengths.min(initial=1) < 1 or prompt_lengths.max(initial=1) > p:
    raise ValueError(f"on_policy_batch: prompt_lengths must be in [1, P={p}], got "
                     f"{prompt_lengths.tolist()}.")
  if sample_lengths.min(initial=0) < 0 or sample_lengths.max(initial=0) > n:
    raise ValueError(f"on_policy_batch: sample_lengths must be in [0, N={n}], got "
                     f"{sample_lengths.tolist()}.")
  t = np.arange(p + n)[None, None, :]  # [1, 1, T]
  pl = prompt_lengths[:, None, None]  # [B, 1, 1]
  in_prompt = np.broadcast_to(t < pl, (b, sample_tokens.shape[1], p + n))
  offset = t - pl  # index into the response
  completion = (offset >= 0) & (offset < sample_lengths[:, :, None])
  gather = np.clip(offset, 0, n - 1)
  response_part = np.take_along_axis(sample_tokens, np.broadcast_to(gather, completion.shape),
                                     axis=-1)
  prompt_part = np.take_along_axis(
      np.pad(prompt_tokens, ((0, 0), (0, n)))[:, None, :], np.broadcast_to(t, completion.shape),
      axis=-1)
  real = in_prompt | completion
  batch = {
      "prompt_tokens": prompt_tokens,
      "prompt_lengths": prompt_lengths,
      "response_tokens": np.where(np.arange(n) < sample_lengths[..., None], sample_tokens,
                                  pad_id).astype(np.int32),
      "response_lengths": sample_lengths,
      "tokens": np.where(in_prompt, prompt_part,
                         np.where(completion, response_part, pad_id)).astype(np.int32),
      "positions": np.where(real, t, 0).astype(np.int32),
      "segment_ids": real.astype(np.int32),
      "completion_mask": completion,
      "labels": np.zeros(sample_lengths.shape, np.float32),
      "where": np.ones(sample_lengths.shape, bool),
  }
  if sample_logps is not None:
    sample_logps = np.asarray(sample_logps, np.float32)
    if sample_logps.shape != sample_tokens.shape:
      raise ValueError(f"on_policy_batch: sample_logps must have the shape of sample_tokens "
                       f"{sample_tokens.shape}, got {sample_logps.shape}.")
    aligned = np.take_along_axis(sample_logps, np.broadcast_to(gather, completion.shape), axis=-1)
    batch["old_token_logps"] = np.where(completion, aligned, 0.0).astype(np.float32)
  return batch


@functools.cache
def token_logp_fn(model_config, *, chunk_size: int) -> TokenLogpFn:
  """`(params, batch) -> per-token completion log-probs [..., T]` float32 (0 off the mask).

  `alignment.models.logprobs.sequence_logps(return_per_token=True)`: the vocabulary is
  processed in tiles, so no `[B, T, V]` float32 logits are built, forward or backward. One
  function per `(model_config, chunk_size)`, so `jax.jit` of it compiles once per process.
  """

  def fn(params, batch):
    return logprobs_lib.sequence_logps(
        model_config, params, batch["tokens"], batch["positions"], batch["segment_ids"],
        batch["completion_mask"], chunk_size=chunk_size, return_per_token=True)[2]

  return fn


# ------------------------------------------------------------------------------------------------
# Rewards and advantages.


def reference_rewards(sample_rewards, *, estimator: str = "quantile", q: float = 0.85) -> Array:
  """Per-prompt reference rewards `r_ref(x)` of the LSC transform (ALGORITHMS.md §6.2).

  Args:
    sample_rewards: `[B, n, M]` rewards, by M reward sources, of n samples of the base (SFT)
      policy per prompt.
    estimator: "quantile" (`r_ref_quantile`, default) or "normal" (`r_ref_normal`).
    q: the quantile (0.85).

  Returns:
    `[B, M]` reference rewards.
  """
  _check_choice("estimator", estimator, R_REF_ESTIMATORS, "reference_rewards")
  x = jnp.asarray(sample_rewards, jnp.float32)
  if x.ndim != 3:
    raise ValueError(f"reference_rewards: sample_rewards must be [B, n, M], got {x.shape}.")
  fn = transforms.r_ref_quantile if estimator == "quantile" else transforms.r_ref_normal
  return fn(jnp.swapaxes(x, -1, -2), q=q)


def shape_rewards(rewards, *, transform: str = "none", reference=None, weights=None) -> Array:
  """Combines M reward sources into one reward per response.

  - `transform="none"`: `r = Σ_m w_m·r_m` (`combine_rewards(mode="raw_sum")`);
  - `transform="lsc"`: `r = Σ_m w_m·logσ(r_m − r_ref,m(x))` (`combine_rewards(mode="lsc_sum")`,
    *Transforming and Combining Rewards for Aligning Large Language Models*, Wang et al., 2024).

  Args:
    rewards: `[B, G, M]` rewards of M sources (true task reward, reward models).
    transform: "none" or "lsc".
    reference: `[B, M]` per-prompt reference rewards (`reference_rewards`), for "lsc".
    weights: optional `[M]` weights (default 1).

  Returns:
    `[B, G]` combined rewards.
  """
  _check_choice("transform", transform, REWARD_TRANSFORMS, "shape_rewards")
  rewards = jnp.asarray(rewards, jnp.float32)
  if rewards.ndim != 3:
    raise ValueError(f"shape_rewards: rewards must be [B, G, M], got {rewards.shape}.")
  if transform == "none":
    return transforms.combine_rewards(rewards, mode="raw_sum", weights=weights)
  if reference is None:
    raise ValueError("shape_rewards: transform='lsc' needs the per-prompt reference rewards "
                     "[B, M].")
  reference = jnp.asarray(reference, jnp.float32)
  if reference.shape != (rewards.shape[0], rewards.shape[2]):
    raise ValueError(f"shape_rewards: reference must be [B, M] = "
                     f"{(rewards.shape[0], rewards.shape[2])}, got {reference.shape}.")
  return transforms.combine_rewards(rewards, reference[:, None, :], mode="lsc_sum",
                                    weights=weights)


def kl_penalised_rewards(rewards, token_logps, ref_token_logps, mask, *, beta_kl: float) -> Array:
  """KL in the reward: `r̃ = r − β_KL·Σ_t m_t·(lp_t − lr_t)` (k1 summed over the sequence, §5.3).

  Args:
    rewards: `[B, G]`. token_logps: `[B, G, T]` per-token log-probs under the sampling policy;
      ref_token_logps: the same under the reference. mask: `[B, G, T]` completion mask.
    beta_kl: β_KL >= 0.

  Returns:
    `[B, G]` penalised rewards (constants: no gradient flows into the log-probs).
  """
  if beta_kl < 0:
    raise ValueError(f"kl_penalised_rewards: beta_kl must be >= 0, got {beta_kl}.")
  k1 = group.kl_estimate(token_logps, ref_token_logps, estimator="k1")
  kl = jnp.sum(jnp.where(jnp.asarray(mask, bool), k1, 0.0), axis=-1)
  return jnp.asarray(rewards, jnp.float32) - beta_kl * jax.lax.stop_gradient(kl)


def group_advantages(rewards, *, estimator: str = "grpo", scale_rewards: str = "group") -> Array:
  """`[B, G]` rewards -> advantages: `group.grpo_advantages` (§5.1) or `group.rloo_advantages`
  (§5.3, `scale_rewards` unused). Identical rewards in a group give 0, never NaN."""
  _check_choice("estimator", estimator, ADVANTAGES, "group_advantages")
  if estimator == "grpo":
    return group.grpo_advantages(rewards, scale_rewards=scale_rewards)
  return group.rloo_advantages(rewards)


# ------------------------------------------------------------------------------------------------
# The loss of `alignment.training.step.make_train_step`.


def policy_gradient_loss(
    token_logps: TokenLogpFn, *, epsilon: float = 0.2, epsilon_high: Optional[float] = None,
    beta_kl: float = 0.0, kl_estimator: str = "k3", loss_type: str = "grpo",
    importance_sampling_level: str = "token", max_completion_length: Optional[int] = None,
) -> Callable:
  """The clipped policy-gradient loss over an on-policy batch, for `make_train_step`.

  `ℓ_t = −min(r_t·A, clip(r_t, 1 − ε, 1 + ε_high)·A) + β_KL·k_t`, `r_t = exp(lp_t − old_lp_t)`,
  aggregated by `loss_type` ("grpo", "bnpo", "dapo", "dr_grpo"):
  `alignment.losses.group.clipped_surrogate_loss` with `reduce_fn=sum_and_count`, so gradient
  accumulation is exact. With one epoch of one minibatch, `old_lp = lp` and GRPO advantages this
  is `group.grpo_loss` (*DeepSeekMath*, Shao et al., 2024); with RLOO advantages it is RLOO fed
  into the clipped surrogate (*Back to Basics*, Ahmadian et al., 2024).

  The batch holds `tokens`, `positions`, `segment_ids`, `completion_mask [B, G, T]`,
  `where [B, G]`, `advantages [B, G]` (stop-gradient), `old_token_logps [B, G, T]` and, when
  `beta_kl > 0`, `ref_token_logps [B, G, T]`.

  Args:
    token_logps: `(params, batch) -> [B, G, T]` per-token log-probs (`token_logp_fn`).
    epsilon, epsilon_high, beta_kl, kl_estimator, loss_type, importance_sampling_level,
      max_completion_length: as `group.clipped_surrogate_loss` (ε = 0.2, β_KL = 0, k3, "grpo").

  Returns:
    `loss_fn(params, batch, loss_state, frozen, rng) -> ((sum, count), (loss_state, aux))`,
    aux: `clip_fraction` (completion tokens whose ratio, per token or per sequence as the
    importance sampling level says, left the clip range) and, with a reference,
    `kl_k3` (mean per-token k3 to the reference), both as (sum, count).
  """
  epsilon_high = epsilon if epsilon_high is None else epsilon_high

  def loss_fn(params, batch, loss_state, frozen, rng):
    del frozen, rng
    lp = token_logps(params, batch)
    mask = batch["completion_mask"] & batch["where"][..., None]
    ref = batch.get("ref_token_logps") if beta_kl > 0 else None
    if beta_kl > 0 and ref is None:
      raise ValueError("policy_gradient_loss: beta_kl > 0 needs batch['ref_token_logps'].")
    total, count = group.clipped_surrogate_loss(
        lp, batch["advantages"], mask=batch["completion_mask"], old_logps=batch["old_token_logps"],
        ref_logps=ref, where=batch["where"], epsilon=epsilon, epsilon_high=epsilon_high,
        beta_kl=beta_kl, kl_estimator=kl_estimator, loss_type=loss_type,
        importance_sampling_level=importance_sampling_level,
        max_completion_length=max_completion_length, reduce_fn=losses.sum_and_count)
    lp_sg = jax.lax.stop_gradient(lp)
    log_ratio = lp_sg - batch["old_token_logps"]
    if importance_sampling_level == "sequence":  # GSPO: the sequence's ratio on all its tokens
      log_ratio = jnp.broadcast_to(
          metrics_lib.mean(metrics_lib.sum_count(log_ratio, mask, axis=-1))[..., None],
          log_ratio.shape)
    ratio = jnp.exp(jnp.clip(log_ratio, -80.0, 80.0))
    clipped = (ratio < 1.0 - epsilon) | (ratio > 1.0 + epsilon_high)
    aux = {"clip_fraction": tuple(metrics_lib.sum_count(clipped.astype(jnp.float32), mask))}
    if ref is not None:
      aux["kl_k3"] = tuple(metrics_lib.token_kl_k3(lp_sg, ref, mask))
    return (total, count), (loss_state, aux)

  return loss_fn


# ------------------------------------------------------------------------------------------------
# Scheduling: prompts per round and minibatches per epoch.


def minibatch_indices(num_prompts: int, minibatch_prompts: int, epochs: int,
                      rng: np.random.Generator) -> list[np.ndarray]:
  """`epochs` shuffled passes over `num_prompts` prompt groups, in minibatches of whole groups.

  Groups stay whole (group statistics need them). `num_prompts` must divide by
  `minibatch_prompts` so that every jitted step sees one static shape.
  """
  if minibatch_prompts < 1 or num_prompts % minibatch_prompts:
    raise ValueError(f"rlhf: prompts per round ({num_prompts}) must be a multiple of the "
                     f"minibatch size ({minibatch_prompts} prompts).")
  if epochs < 1:
    raise ValueError(f"rlhf: epochs must be >= 1, got {epochs}.")
  out = []
  for _ in range(epochs):
    order = rng.permutation(num_prompts)
    out += [order[i:i + minibatch_prompts] for i in range(0, num_prompts, minibatch_prompts)]
  return out


class PromptRounds:
  """The data stream of the RLHF loop: round r's prompts, and the round counter as its state.

  Round r draws `per_round` distinct prompts from `prompts` with `default_rng([seed, r])`, so a
  resumed run sees the same prompts. `get_state()`/`set_state()` make it checkpointable like a
  grain iterator (`alignment.training.loop.restore_or_init`).
  """

  def __init__(self, prompts: Sequence[str], *, per_round: int, seed: int):
    if not 1 <= per_round <= len(prompts):
      raise ValueError(f"rlhf: prompts_per_round must be in [1, {len(prompts)}] (the prompt "
                       f"pool), got {per_round}.")
    self.prompts, self.per_round, self.seed, self.round = list(prompts), per_round, seed, 0

  def __next__(self) -> list[str]:
    rng = np.random.default_rng([self.seed, self.round])
    chosen = rng.choice(len(self.prompts), self.per_round, replace=False)
    self.round += 1
    return [self.prompts[i] for i in chosen]

  def get_state(self) -> dict:
    return {"round": self.round}

  def set_state(self, state: dict) -> None:
    self.round = int(state["round"])
