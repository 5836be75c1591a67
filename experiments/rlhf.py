"""RLHF: on-policy group policy-gradient training of the SFT policy, then evaluation.

    python -m experiments.rlhf --config=experiments/configs/rlhf.py --workdir=/tmp/rlhf \
        [--config.rlhf.init=/tmp/sft] [--config.rlhf.advantage=rloo --config.rlhf.kl_in=reward]

Starts from `rlhf.init` (an SFT workdir; empty: trains one in `workdir/sft`), which is also the
KL reference. Each round samples `group_size` responses per prompt from the current policy,
scores them (true task reward and/or learned reward models, optionally LSC-transformed and
combined), computes group advantages (GRPO or RLOO) and takes `epochs` passes of jitted minibatch
updates of the clipped surrogate (`alignment.training.rlhf`). The train state (params, optimiser,
PRNG key) and the round counter are checkpointed every `checkpoint_every` rounds; a restarted run
resumes from the last one. Writes `params.msgpack`, `metrics.jsonl` (one row per round),
TensorBoard events, `eval.json` (held-out win rate against the SFT policy, with the RLHF run's
summary; `rlhf.json` instead when `rlhf.evaluate` is off) and `rlhf.png` (reward and KL per
round).
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

from alignment.losses import group
from alignment.models import reward_model, sampler as sampler_lib
from alignment.training import generation, logs, loop, optim, reward_training, rlhf, runs, setup
from alignment.training.checkpoint import Checkpointer
from alignment.training.step import init_train_state, make_train_step
from experiments import _flags, _plots, evaluate, sft

PLOT_FILE = "rlhf.png"
EVAL_FILE = "eval.json"  # evaluate.run's summary plus the run's, with rlhf.evaluate
SUMMARY_FILE = "rlhf.json"  # the run's summary alone, without
_STEP_KEYS = ("tokens", "positions", "segment_ids", "completion_mask", "where", "advantages",
              "old_token_logps", "ref_token_logps")


def _check_config(config) -> None:
  if "rlhf" not in config:
    raise ValueError("The config has no `rlhf` section; pass --config=experiments/configs/rlhf.py.")
  cfg = config.rlhf
  for name, value, choices in (
      ("advantage", cfg.advantage, rlhf.ADVANTAGES), ("kl_in", cfg.kl_in, rlhf.KL_PLACEMENTS),
      ("reward_transform", cfg.reward_transform, rlhf.REWARD_TRANSFORMS),
      ("r_ref_estimator", cfg.r_ref_estimator, rlhf.R_REF_ESTIMATORS),
      ("old_logps", cfg.old_logps, ("sampler", "forward"))):
    if value not in choices:
      raise ValueError(f"rlhf.{name} must be one of {choices}, got {value!r}.")
  if cfg.group_size < 2:
    raise ValueError(f"rlhf.group_size must be >= 2 (group baselines), got {cfg.group_size}.")
  if not cfg.rewards:
    raise ValueError("rlhf.rewards is empty; use ('task',) and/or reward-model workdirs.")
  if cfg.reward_weights and len(cfg.reward_weights) != len(cfg.rewards):
    raise ValueError(f"rlhf.reward_weights has {len(cfg.reward_weights)} entries for "
                     f"{len(cfg.rewards)} reward sources {tuple(cfg.rewards)}.")


def sft_policy(config, workdir: str, model_config) -> tuple[dict, str]:
  """`(SFT params, SFT workdir)`: `rlhf.init`, or a policy trained in `workdir/sft`."""
  sft_dir = config.rlhf.init
  if not sft_dir:
    sft_dir = os.path.join(workdir, "sft")
    if not os.path.exists(os.path.join(sft_dir, setup.PARAMS_FILE)):
      sft.run(config, sft_dir)
  template = runs.init_model(model_config, config.seed)
  return setup.load_params(template, sft_dir), sft_dir


def _reward_model_source(config, model_config, path: str):
  """`(prompts, texts, batch) -> [N]` scores of the reward model in workdir `path`."""
  with open(os.path.join(path, "eval.json"), encoding="utf-8") as f:
    summary = json.load(f)
  template = reward_model.init_reward_params(
      model_config, jax.random.key(config.seed), num_heads=len(summary["heads"]))
  params = setup.load_params(template, path)
  score = jax.jit(reward_training.score_fn(model_config))
  weights = summary.get("head_weights")

  def fn(prompts, texts, batch):
    del prompts, texts
    rows = {k: batch[k].reshape(-1, 1, batch[k].shape[-1])
            for k in ("tokens", "positions", "segment_ids", "completion_mask")}
    return np.asarray(reward_training.combine_heads(score(params, rows), weights))[:, 0]

  return fn


def reward_sources(config, task, model_config) -> list:
  """One `(prompts, texts, batch) -> rewards [N]` function per entry of `rlhf.rewards`."""
  sources = []
  for name in config.rlhf.rewards:
    if name == "task":
      sources.append(lambda prompts, texts, batch: task.reward_batch(prompts, texts))
    elif os.path.isdir(name):
      sources.append(_reward_model_source(config, model_config, name))
    else:
      raise ValueError(f"rlhf.rewards entry {name!r} is neither 'task' nor a reward-model "
                       "workdir (experiments/reward_model.py).")
  return sources


def sample_groups(config, task, model_config, params, prompts, key, num_samples: int):
  """`num_samples` responses per prompt: `(batch of rlhf.on_policy_batch, texts [B·G])`."""
  cfg = config.rlhf
  prompt_tokens, prompt_lengths = generation.encode_prompts(
      task.tokenizer, prompts, task.max_prompt_length + 1)
  flat_tokens = np.repeat(prompt_tokens, num_samples, axis=0)
  flat_lengths = np.repeat(prompt_lengths, num_samples, axis=0)
  total = len(flat_tokens)
  chunks = []
  for start in range(0, total, cfg.sample_batch_size):
    idx = np.minimum(np.arange(start, start + cfg.sample_batch_size), total - 1)
    out = sampler_lib.sample(
        model_config, params, flat_tokens[idx], flat_lengths[idx], jax.random.fold_in(key, start),
        max_new_tokens=task.max_response_length + 1, temperature=cfg.temperature,
        eos_id=task.tokenizer.eos_id)
    chunks.append([np.asarray(x)[: total - start] for x in out])
  tokens, logps, lengths = (np.concatenate(parts) for parts in zip(*chunks))
  b = len(prompts)
  batch = rlhf.on_policy_batch(
      prompt_tokens, prompt_lengths, tokens.reshape(b, num_samples, -1),
      lengths.reshape(b, num_samples), sample_logps=logps.reshape(b, num_samples, -1),
      pad_id=task.tokenizer.pad_id)
  return batch, generation.decode_responses(task.tokenizer, tokens, lengths)


def _score_all(sources, prompts, texts, batch, num_samples: int) -> np.ndarray:
  """`[B, G, M]` rewards of every source."""
  flat_prompts = [p for p in prompts for _ in range(num_samples)]
  return np.stack([np.asarray(s(flat_prompts, texts, batch), np.float32) for s in sources],
                  axis=-1).reshape(len(prompts), num_samples, len(sources))


def prepare_round(config, task, model_config, params, sft_params, prompts, key, *, sources,
                  token_logps) -> tuple[dict, dict]:
  """Samples, scores and computes advantages for one round: `(batch, host metrics)`."""
  cfg = config.rlhf
  g = cfg.group_size
  sample_key, ref_key = jax.random.split(key)
  batch, texts = sample_groups(config, task, model_config, params, prompts, sample_key, g)
  raw = _score_all(sources, prompts, texts, batch, g)
  flat_prompts = [p for p in prompts for _ in range(g)]
  true = task.reward_batch(flat_prompts, texts).reshape(len(prompts), g)
  reference = None
  if cfg.reward_transform == "lsc":  # r_ref(x) from SFT samples scored by the same sources
    ref_batch, ref_texts = sample_groups(config, task, model_config, sft_params, prompts, ref_key,
                                         cfg.r_ref_samples)
    reference = rlhf.reference_rewards(
        _score_all(sources, prompts, ref_texts, ref_batch, cfg.r_ref_samples),
        estimator=cfg.r_ref_estimator, q=cfg.r_ref_q)
  weights = np.asarray(cfg.reward_weights, np.float32) if cfg.reward_weights else None
  rewards = rlhf.shape_rewards(raw, transform=cfg.reward_transform, reference=reference,
                               weights=weights)
  if cfg.old_logps == "forward":
    batch["old_token_logps"] = np.asarray(token_logps(params, batch))
  host = {}
  if cfg.beta_kl > 0:
    batch["ref_token_logps"] = np.asarray(token_logps(sft_params, batch))
    seq_kl = np.sum(np.where(batch["completion_mask"],
                             batch["old_token_logps"] - batch["ref_token_logps"], 0.0), axis=-1)
    host["kl_sequence"] = float(seq_kl.mean())
    if cfg.kl_in == "reward":
      rewards = rlhf.kl_penalised_rewards(
          rewards, batch["old_token_logps"], batch["ref_token_logps"], batch["completion_mask"],
          beta_kl=cfg.beta_kl)
  batch["advantages"] = np.asarray(
      rlhf.group_advantages(rewards, estimator=cfg.advantage, scale_rewards=cfg.scale_rewards))
  host.update({
      "reward/true": float(true.mean()),
      "reward/shaped": float(np.mean(rewards)),
      "reward/zero_std_groups": float(group.zero_std_fraction(rewards)),
      "response_length": float(batch["response_lengths"].mean()),
  })
  return batch, host


def plot(workdir: str, summary: dict | None = None) -> str:
  """True reward and KL to the SFT policy per round (and the held-out result) to a PNG."""
  plt = _plots.pyplot()

  rows = [r for r in logs.read_metrics(workdir) if "reward/true" in r]
  rounds = [r["step"] for r in rows]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  axes[0].plot(rounds, [r["reward/true"] for r in rows], marker="o", label="true reward")
  title = "true reward of the round's samples"
  if summary is not None:
    axes[0].axhline(summary["mean_reward"]["reference"], color="grey", linestyle=":",
                    label="SFT policy (held-out)")
    lo, hi = summary["win_rate_ci95"]
    title += f"\nheld-out win rate vs SFT {summary['win_rate']:.3f} [{lo:.3f}, {hi:.3f}]"
  axes[0].set(title=title, xlabel="round")
  axes[0].legend()
  if rows and "kl_sequence" in rows[0]:
    axes[1].plot(rounds, [r["kl_sequence"] for r in rows], marker="o")
  axes[1].set(title="KL(policy || SFT) per sequence (k1, the round's samples)", xlabel="round")
  return _plots.save(fig, os.path.join(workdir, PLOT_FILE))


def run(config, workdir: str) -> dict:
  """Trains the policy with RLHF rounds and evaluates it against the SFT policy."""
  start = time.perf_counter()
  _check_config(config)
  cfg = config.rlhf
  os.makedirs(workdir, exist_ok=True)
  task, model_config = runs.task_and_model(config)
  sft_params, sft_dir = sft_policy(config, workdir, model_config)
  sft_seconds = time.perf_counter() - start
  sources = reward_sources(config, task, model_config)
  token_logps = jax.jit(rlhf.token_logp_fn(model_config, chunk_size=config.model.logprob_chunk))
  loss_fn = rlhf.policy_gradient_loss(
      rlhf.token_logp_fn(model_config, chunk_size=config.model.logprob_chunk),
      epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high,
      beta_kl=cfg.beta_kl if cfg.kl_in == "loss" else 0.0, kl_estimator=cfg.kl_estimator,
      loss_type=cfg.loss_type, importance_sampling_level=cfg.importance_sampling_level,
      max_completion_length=task.max_response_length + 1)
  optimizer = optim.make_optimizer(cfg.optimizer)
  state = init_train_state(sft_params, optimizer, jax.random.key(config.seed))
  rounds = rlhf.PromptRounds(task.prompts("train", cfg.num_prompts, seed=config.seed),
                             per_round=cfg.prompts_per_round, seed=config.seed)
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"),
                              save_interval_steps=cfg.checkpoint_every,
                              max_to_keep=cfg.keep_checkpoints)
  state, _ = loop.restore_or_init(checkpointer, state, rounds)
  step_fn = make_train_step(loss_fn, optimizer)
  writer = logs.MetricWriter(workdir)
  progress = logs.Progress("rlhf", cfg.num_rounds, start=rounds.round, unit="rounds")
  try:
    while rounds.round < cfg.num_rounds:
      t0 = time.perf_counter()
      prompts = next(rounds)
      rng, round_key = jax.random.split(state.rng)
      state = state.replace(rng=rng)
      batch, host = prepare_round(config, task, model_config, state.params, sft_params, prompts,
                                  round_key, sources=sources, token_logps=token_logps)
      step_batch = {k: batch[k] for k in _STEP_KEYS if k in batch}
      order = rlhf.minibatch_indices(cfg.prompts_per_round, cfg.minibatch_prompts, cfg.epochs,
                                     np.random.default_rng([config.seed, rounds.round, 1]))
      sums = {}
      for idx in order:
        state, step_metrics = step_fn(state, {k: v[idx] for k, v in step_batch.items()}, None)
        for k, v in jax.device_get(step_metrics).items():
          sums[k] = sums.get(k, 0.0) + float(v) / len(order)
      host.update(sums)
      host["seconds"] = time.perf_counter() - t0
      writer.write(rounds.round, host)
      progress.update(rounds.round, {"reward": host["reward/true"]},
                      force=rounds.round == cfg.num_rounds)
      checkpointer.save(rounds.round, state, rounds.get_state(),
                        force=rounds.round == cfg.num_rounds)
  finally:
    writer.close()
    checkpointer.close()
  setup.save_params(state.params, workdir)
  rlhf_seconds = time.perf_counter() - start - sft_seconds
  summary = {}
  if cfg.evaluate:
    summary = evaluate.run(config, workdir, policy=workdir, reference=sft_dir)
  summary["rlhf"] = {
      "sft": sft_dir,
      "num_rounds": cfg.num_rounds,
      "optimizer_steps": int(state.step),
      "nonfinite_skipped": int(state.nonfinite),
      "seconds": {"sft": round(sft_seconds, 1), "rlhf": round(rlhf_seconds, 1),
                  "total": round(time.perf_counter() - start, 1)},
  }
  summary["plot"] = os.path.basename(plot(workdir, summary if cfg.evaluate else None))
  with open(os.path.join(workdir, EVAL_FILE if cfg.evaluate else SUMMARY_FILE), "w",
            encoding="utf-8") as f:
    json.dump(summary, f, indent=2)
  print(f"[rlhf] done in {summary['rlhf']['seconds']['total']} s", flush=True)
  return summary


if __name__ == "__main__":
  _flags.run_main(run)
