"""RLHF with group policy gradients: on-policy rounds as a data stream of the one training loop.

One round samples G responses per prompt from the current policy, scores them, turns the scores
into group advantages and takes several minibatch epochs of clipped policy-gradient updates
(GRPO: *DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models*,
Shao et al., 2024; RLOO: *Back to Basics: Revisiting REINFORCE Style Optimization for Learning
from Human Feedback in LLMs*, Ahmadian et al., ACL 2024):

    samples  -> sample_groups          the sampler of preference sampling
                                       (`alignment.training.generation.sample_tokens`)
             -> on_policy_batch        tokens/positions/segment_ids/completion_mask [B, G, T]
                                       (+ the sampler's per-token log-probs as `old_token_logps`)
    rewards  -> reward_sources         the task's true reward and/or learned reward models
             -> shape_rewards          [B, G, M] scores of M sources, optionally LSC-transformed
                                       against per-prompt reference rewards, combined
             -> kl_penalised_rewards   r − β·(lp − lr), k1 summed per sequence ("KL in the reward")
             -> group_advantages       GRPO group z-scores or RLOO leave-one-out (stop-gradient)
    update   -> policy_gradient_loss   PPO's clipped surrogate (`losses.policy_gradient`) over
                                       per-token log-probs (chunked: never [B, T, V] f32 logits),
                                       optionally + β·k3 to the reference ("KL in the loss")

`prepare_round` does the first two rows for one round; `RoundBatches` is the data iterator of
`alignment.training.loop.train` that runs a round whenever the previous one's minibatches are
used up, with the policy the loop hands it, and checkpoints at round boundaries. The per-token
arrays of a batch are named `old_token_logps` / `ref_token_logps` `[B, G, T]` (entry t scores
token t, 0 elsewhere), distinct from the sequence-level `ref_logps` `[B, K]` of the batch layout
(docs/interfaces.md, "Batches"); KL estimators and clipping follow docs/conventions.md.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alignment import arrays
from alignment import losses
from alignment import metrics as metrics_lib
from alignment import parallel
from alignment.losses import advantages, policy_gradient
from alignment.models import logprobs as logprobs_lib
from alignment.rewards import transforms
from alignment.training import generation, reward_training

Array = jax.Array
TokenLogpFn = Callable[[Any, dict], Array]
# (prompts [N], response texts [N], on-policy batch with N = B·G rows) -> rewards [N]
RewardSource = Callable[[Sequence[str], Sequence[str], dict], np.ndarray]

ADVANTAGES = ("grpo", "rloo")
KL_PLACEMENTS = ("loss", "reward")
REWARD_TRANSFORMS = ("none", "lsc")
R_REF_ESTIMATORS = ("quantile", "normal")


# ------------------------------------------------------------------------------------------------
# The on-policy batch.


def on_policy_batch(
    prompt_tokens, prompt_lengths, sample_tokens, sample_lengths, *, sample_logps=None,
    pad_id: int = 0,
) -> dict[str, np.ndarray]:
  """The batch of docs/interfaces.md ("Batches") for G sampled responses per prompt (K = G).

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


def sample_groups(model_config, params, tokenizer, prompts: Sequence[str], key, *,
                  num_samples: int, max_prompt_length: int, max_new_tokens: int,
                  temperature: float = 1.0, batch_size: int = 256
                  ) -> tuple[dict[str, np.ndarray], list[str]]:
  """G = `num_samples` responses to each of B prompts from `params`: `(batch, texts [B·G])`.

  Sampled by `alignment.training.generation.sample_tokens` (the sampler of preference sampling)
  in chunks of `batch_size` rows; `batch` is `on_policy_batch` of the samples, with the sampler's
  per-token log-probs as `old_token_logps`, and `texts[b·G + g]` the decoded response (g, b).
  """
  prompt_tokens, prompt_lengths = generation.encode_prompts(tokenizer, prompts,
                                                            max_prompt_length)
  tokens, logps, lengths = generation.sample_tokens(
      model_config, params, np.repeat(prompt_tokens, num_samples, axis=0),
      np.repeat(prompt_lengths, num_samples, axis=0), key, max_new_tokens=max_new_tokens,
      eos_id=tokenizer.eos_id, temperature=temperature, batch_size=batch_size,
      show_progress=False)
  b = len(prompts)
  batch = on_policy_batch(
      prompt_tokens, prompt_lengths, tokens.reshape(b, num_samples, -1),
      lengths.reshape(b, num_samples), sample_logps=logps.reshape(b, num_samples, -1),
      pad_id=tokenizer.pad_id)
  return batch, generation.decode_responses(tokenizer, tokens, lengths)


# ------------------------------------------------------------------------------------------------
# Rewards and advantages.


def reference_rewards(sample_rewards, *, estimator: str = "quantile", q: float = 0.85) -> Array:
  """Per-prompt reference rewards `r_ref(x)` of the LSC transform (*Transforming and Combining
  Rewards for Aligning Large Language Models*, Wang et al., ICML 2024).

  Args:
    sample_rewards: `[B, n, M]` rewards, by M reward sources, of n samples of the base (SFT)
      policy per prompt.
    estimator: "quantile" (`r_ref_quantile`, default) or "normal" (`r_ref_normal`).
    q: the quantile (0.85).

  Returns:
    `[B, M]` reference rewards.
  """
  arrays.check_choice("estimator", estimator, R_REF_ESTIMATORS, where="reference_rewards")
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
  arrays.check_choice("transform", transform, REWARD_TRANSFORMS, where="shape_rewards")
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
  """KL in the reward: `r̃ = r − β_KL·Σ_t m_t·(lp_t − lr_t)` (k1 summed over the sequence,
  docs/conventions.md#kl-estimators).

  Args:
    rewards: `[B, G]`. token_logps: `[B, G, T]` per-token log-probs under the sampling policy;
      ref_token_logps: the same under the reference. mask: `[B, G, T]` completion mask.
    beta_kl: β_KL >= 0.

  Returns:
    `[B, G]` penalised rewards (constants: no gradient flows into the log-probs).
  """
  if beta_kl < 0:
    raise ValueError(f"kl_penalised_rewards: beta_kl must be >= 0, got {beta_kl}.")
  k1 = advantages.kl_estimate(token_logps, ref_token_logps, estimator="k1")
  kl = jnp.sum(jnp.where(jnp.asarray(mask, bool), k1, 0.0), axis=-1)
  return jnp.asarray(rewards, jnp.float32) - beta_kl * jax.lax.stop_gradient(kl)


def group_advantages(rewards, *, estimator: str = "grpo", scale_rewards: str = "group") -> Array:
  """`[B, G]` rewards -> advantages: `advantages.grpo_advantages` (GRPO, Shao et al., 2024) or
  `advantages.rloo_advantages` (RLOO, Ahmadian et al., 2024; `scale_rewards` unused). Identical
  rewards in a group give 0, never NaN."""
  arrays.check_choice("estimator", estimator, ADVANTAGES, where="group_advantages")
  if estimator == "grpo":
    return advantages.grpo_advantages(rewards, scale_rewards=scale_rewards)
  return advantages.rloo_advantages(rewards)


_SCORED_KEYS = ("tokens", "positions", "segment_ids", "completion_mask")


def reward_model_source(model_config, workdir: str) -> RewardSource:
  """The combined-head score of the reward model trained into `workdir`
  (`reward_training.load_reward_model`), on the rows of the on-policy batch."""
  params, weights = reward_training.load_reward_model(model_config, workdir)
  score = jax.jit(reward_training.score_fn(model_config))

  def fn(prompts, texts, batch):
    del prompts, texts
    rows = {k: batch[k].reshape(-1, 1, batch[k].shape[-1]) for k in _SCORED_KEYS}
    return np.asarray(reward_training.combine_heads(score(params, rows), weights))[:, 0]

  return fn


def reward_sources(names: Sequence[str], task, model_config) -> list[RewardSource]:
  """One reward source per name: "task" (the task's true reward) or a reward-model workdir."""
  sources = []
  for name in names:
    if name == "task":
      sources.append(lambda prompts, texts, batch: task.reward_batch(prompts, texts))
    elif os.path.isdir(name):
      sources.append(reward_model_source(model_config, name))
    else:
      raise ValueError(f"rlhf.rewards entry {name!r} is neither 'task' nor a reward-model "
                       "workdir (alignment.recipes.reward_model).")
  return sources


def score_groups(sources: Sequence[RewardSource], prompts: Sequence[str], texts: Sequence[str],
                 batch: dict, num_samples: int) -> np.ndarray:
  """`[B, G, M]` rewards of G = `num_samples` responses per prompt by each of M sources."""
  flat_prompts = [p for p in prompts for _ in range(num_samples)]
  return np.stack([np.asarray(s(flat_prompts, texts, batch), np.float32) for s in sources],
                  axis=-1).reshape(len(prompts), num_samples, len(sources))


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
  `alignment.losses.policy_gradient.clipped_surrogate_loss` with `reduce_fn=sum_and_count`, so
  gradient accumulation is exact. With one epoch of one minibatch, `old_lp = lp` and GRPO
  advantages this is `policy_gradient.grpo_loss` (*DeepSeekMath*, Shao et al., 2024); with RLOO
  advantages it is RLOO fed into the clipped surrogate (*Back to Basics*, Ahmadian et al., 2024).

  The batch holds `tokens`, `positions`, `segment_ids`, `completion_mask [B, G, T]`,
  `where [B, G]`, `advantages [B, G]` (stop-gradient), `old_token_logps [B, G, T]` and, when
  `beta_kl > 0`, `ref_token_logps [B, G, T]`.

  Args:
    token_logps: `(params, batch) -> [B, G, T]` per-token log-probs (`token_logp_fn`).
    epsilon, epsilon_high, beta_kl, kl_estimator, loss_type, importance_sampling_level,
      max_completion_length: as `policy_gradient.clipped_surrogate_loss` (ε = 0.2, β_KL = 0, k3,
      "grpo").

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
    total, count = policy_gradient.clipped_surrogate_loss(
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


# ------------------------------------------------------------------------------------------------
# Rounds: the data stream of the training loop.

STEP_KEYS = ("tokens", "positions", "segment_ids", "completion_mask", "where", "advantages",
             "old_token_logps", "ref_token_logps")


def prepare_round(cfg, params, prompts: Sequence[str], key, *, reference_params, sample,
                  sources: Sequence[RewardSource], true_reward, token_logps
                  ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
  """Samples, scores and computes the advantages of one round: `(batch, host metrics)`.

  Args:
    cfg: the round's settings, an object with the fields `group_size` (G), `reward_transform`
      ("none" | "lsc"), `r_ref_samples`, `r_ref_estimator`, `r_ref_q`, `reward_weights` (empty:
      all 1), `old_logps` ("sampler" | "forward"), `beta_kl`, `kl_in` ("loss" | "reward"),
      `advantage` and `scale_rewards` (the RLHF recipe's `rlhf` section).
    params: the current policy. prompts: the round's B prompts. key: the round's PRNG key.
    reference_params: the KL reference, whose samples also give LSC's reference rewards.
    sample: `(params, prompts, key, num_samples) -> (on_policy_batch, texts)` (`sample_groups`
      with the sampling settings bound).
    sources: the reward sources combined by `shape_rewards`.
    true_reward: `(prompts [N], texts [N]) -> [N]` the task's true reward (logged only).
    token_logps: `(params, batch) -> [B, G, T]` per-token log-probs (jitted `token_logp_fn`).

  Returns:
    The on-policy batch with `advantages [B, G]` (and `ref_token_logps` when `beta_kl > 0`;
    `old_token_logps` from a forward of `params` when `old_logps="forward"`), and host floats:
    `reward/true`, `reward/shaped`, `reward/zero_std_groups`, `response_length` and, with a
    KL term, `kl_sequence` (k1 summed per sequence, the round's mean).
  """
  g = cfg.group_size
  sample_key, ref_key = jax.random.split(key)
  batch, texts = sample(params, prompts, sample_key, g)
  raw = score_groups(sources, prompts, texts, batch, g)
  true = true_reward([p for p in prompts for _ in range(g)], texts).reshape(len(prompts), g)
  reference = None
  if cfg.reward_transform == "lsc":  # r_ref(x) from reference samples scored by the same sources
    n = cfg.r_ref_samples
    ref_batch, ref_texts = sample(reference_params, prompts, ref_key, n)
    reference = reference_rewards(score_groups(sources, prompts, ref_texts, ref_batch, n),
                                  estimator=cfg.r_ref_estimator, q=cfg.r_ref_q)
  weights = np.asarray(cfg.reward_weights, np.float32) if cfg.reward_weights else None
  rewards = shape_rewards(raw, transform=cfg.reward_transform, reference=reference,
                          weights=weights)
  if cfg.old_logps == "forward":
    batch["old_token_logps"] = np.asarray(token_logps(params, batch))
  host = {}
  if cfg.beta_kl > 0:
    batch["ref_token_logps"] = np.asarray(token_logps(reference_params, batch))
    seq_kl = np.sum(np.where(batch["completion_mask"],
                             batch["old_token_logps"] - batch["ref_token_logps"], 0.0), axis=-1)
    host["kl_sequence"] = float(seq_kl.mean())
    if cfg.kl_in == "reward":
      rewards = kl_penalised_rewards(
          rewards, batch["old_token_logps"], batch["ref_token_logps"], batch["completion_mask"],
          beta_kl=cfg.beta_kl)
  batch["advantages"] = np.asarray(
      group_advantages(rewards, estimator=cfg.advantage, scale_rewards=cfg.scale_rewards))
  host.update({
      "reward/true": float(true.mean()),
      "reward/shaped": float(np.mean(rewards)),
      "reward/zero_std_groups": float(advantages.zero_std_fraction(rewards)),
      "response_length": float(batch["response_lengths"].mean()),
  })
  return batch, host


class RoundBatches:
  """The RLHF data iterator of `alignment.training.loop.train`: minibatches of on-policy rounds.

  The loop calls `update_policy(params)` before every `next()`. When the previous round's
  minibatches are used up, `next()` draws the next round's prompts (`PromptRounds`) and calls
  `prepare(params, prompts, key) -> (batch, metrics)` (`prepare_round` with its settings bound)
  with the current policy and the key `fold_in(key(seed + 3000), round)`; the round's
  `STEP_KEYS` arrays are then served as `epochs` shuffled passes of minibatches of
  `minibatch_prompts` whole groups (`minibatch_indices`), each process taking its rows
  `[i·m/P, (i+1)·m/P)` of every minibatch (every host prepares the same round). `metrics()` are
  the latest round's host floats plus its index `round`.

  `get_state()`/`set_state()` hold the round counter; a checkpoint is exact at round boundaries
  only (the next round is sampled from the restored policy), so saving in the middle of a round
  is an error: checkpoint every multiple of `steps_per_round` steps.
  """

  def __init__(self, rounds: PromptRounds, prepare, *, minibatch_prompts: int, epochs: int,
               seed: int):
    self.steps_per_round = len(minibatch_indices(rounds.per_round, minibatch_prompts, epochs,
                                                 np.random.default_rng(0)))
    self._rounds, self._prepare = rounds, prepare
    self._minibatch_prompts, self._epochs, self._seed = minibatch_prompts, epochs, seed
    local = parallel.local_batch_size(minibatch_prompts)
    self._rows = slice(jax.process_index() * local, (jax.process_index() + 1) * local)
    self._params, self._batch, self._order, self._metrics = None, {}, [], {}

  def __iter__(self):
    return self

  def update_policy(self, params) -> None:
    """The policy of the next round (kept only until that round is sampled)."""
    self._params = params

  def __next__(self) -> dict[str, np.ndarray]:
    if not self._order:
      self._start_round()
    idx = self._order.pop(0)[self._rows]
    return {k: v[idx] for k, v in self._batch.items()}

  def _start_round(self) -> None:
    if self._params is None:
      raise RuntimeError("RoundBatches: call update_policy(params) before a round starts.")
    params = self._params if jax.process_count() == 1 else parallel.to_host(self._params)
    self._params = None  # the loop donates the train state: never hold its buffers
    prompts = next(self._rounds)
    r = self._rounds.round
    batch, metrics = self._prepare(params, prompts,
                                   jax.random.fold_in(jax.random.key(self._seed + 3000), r))
    self._batch = {k: batch[k] for k in STEP_KEYS if k in batch}
    self._order = minibatch_indices(self._rounds.per_round, self._minibatch_prompts,
                                    self._epochs, np.random.default_rng([self._seed, r, 1]))
    self._metrics = {"round": float(r), **metrics}

  def metrics(self) -> dict[str, float]:
    return dict(self._metrics)

  def get_state(self) -> dict:
    if self._order:
      raise ValueError(f"RoundBatches: a checkpoint in the middle of round {self._rounds.round} "
                       f"({len(self._order)} minibatches left) cannot be resumed exactly; save "
                       f"every multiple of {self.steps_per_round} steps.")
    return self._rounds.get_state()

  def set_state(self, state: dict) -> None:
    self._rounds.set_state(state)
    self._batch, self._order, self._metrics = {}, [], {}
