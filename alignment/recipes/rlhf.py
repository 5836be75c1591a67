"""RLHF: on-policy group policy-gradient training of the SFT policy, then evaluation.

Starts from `rlhf.init` (an SFT workdir; empty: the `sft` recipe trains one in `workdir/sft`),
which is also the KL reference. Each round samples `group_size` responses per prompt from the
current policy, scores them (true task reward and/or learned reward models, optionally
LSC-transformed and combined), computes group advantages (GRPO or RLOO) and takes `epochs` passes
of minibatch updates of the clipped surrogate (`alignment.training.rlhf`). The rounds are the data
iterator of the one loop (`alignment.training.runs.train_run`: sharding over the `mesh` section,
memory report, multi-host checks), checkpointed every `checkpoint_every` rounds; a restarted run
resumes from the last one. Writes `params.msgpack`, `metrics.jsonl` (one row per round, at its
last optimizer step), TensorBoard events, `eval.json` (the `evaluation` recipe's held-out win
rate against the SFT policy, with the RLHF run's summary under "rlhf"; `rlhf.json` instead when
`rlhf.evaluate` is off) and `rlhf.png` (true reward and KL per round).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any

import jax

from alignment import parallel
from alignment.recipes import config as config_lib
from alignment.recipes import evaluation, plots, sft
from alignment.training import logs, rlhf, runs, setup

PLOT_FILE = "rlhf.png"
EVAL_FILE = evaluation.EVAL_FILE  # the evaluation's summary plus the run's, with rlhf.evaluate
SUMMARY_FILE = "rlhf.json"  # the run's summary alone, without


@dataclasses.dataclass(frozen=True)
class RLHF:
  """The RLHF run.

  Each of `num_rounds` rounds samples `group_size` responses at `temperature` (in chunks of
  `sample_batch_size` rows) for `prompts_per_round` prompts drawn from a pool of `num_prompts`
  training prompts, then takes `epochs` passes of minibatches of `minibatch_prompts` whole groups.
  - Advantages: `advantage` "grpo" (group z-score; `scale_rewards` "group" | "batch" | "none")
    or "rloo" (leave-one-out).
  - The clipped surrogate of `alignment.losses.policy_gradient`: `loss_type` "grpo" | "bnpo" |
    "dapo" | "dr_grpo", clip range `epsilon` / `epsilon_high`, `importance_sampling_level`
    "token" or "sequence" (GSPO).
  - KL to the SFT reference: `kl_in` "loss" (`beta_kl` × `kl_estimator` per token) or "reward"
    (`beta_kl` × k1 summed per sequence, subtracted from the reward); `beta_kl` 0 switches it off.
  - Old log-probs of the ratio: `old_logps` "sampler" (returned by the sampler) or "forward" (one
    forward of the current policy before the epochs).
  - Rewards: `rewards` ("task" = the true reward, or reward-model workdirs of the reward-model
    recipe) with `reward_weights` (empty: all 1), combined by `reward_transform` "none" (weighted
    raw sum) or "lsc" (weighted sum of logσ(r − r_ref(x)), r_ref by `r_ref_estimator` at
    quantile `r_ref_q` of `r_ref_samples` SFT samples per prompt).
  - `checkpoint_every` is in rounds; `evaluate` runs the `evaluation` recipe (the `evaluate`
    section) against the SFT policy; `kill_after_step` > 0 is a testing hook (SIGKILL after that
    optimizer step's checkpoint).
  """

  init: str = ""
  num_prompts: int = 2048
  num_rounds: int = 24
  prompts_per_round: int = 64
  group_size: int = 8
  temperature: float = 1.0
  epochs: int = 2
  minibatch_prompts: int = 16
  advantage: str = "grpo"
  scale_rewards: str = "group"
  loss_type: str = "grpo"
  epsilon: float = 0.2
  epsilon_high: float = 0.2
  importance_sampling_level: str = "token"
  kl_in: str = "loss"
  beta_kl: float = 0.02
  kl_estimator: str = "k3"
  old_logps: str = "sampler"
  rewards: tuple[str, ...] = ("task",)
  reward_weights: tuple[float, ...] = ()
  reward_transform: str = "none"
  r_ref_estimator: str = "quantile"
  r_ref_samples: int = 8
  r_ref_q: float = 0.85
  # 24 rounds x 2 epochs x 64/16 minibatches = 192 steps.
  optimizer: config_lib.Optimizer = config_lib.Optimizer(
      learning_rate=3e-4, schedule="cosine", warmup_steps=4, total_steps=192, b2=0.99)
  sample_batch_size: int = 512
  checkpoint_every: int = 1
  keep_checkpoints: int = 2
  evaluate: bool = True
  kill_after_step: int = -1


@dataclasses.dataclass(frozen=True)
class Config(config_lib.Run):
  sft: sft.SFT = sft.SFT()
  rlhf: RLHF = RLHF()
  evaluate: evaluation.Evaluate = evaluation.Evaluate()


@dataclasses.dataclass(frozen=True)
class Result:
  params: Any
  summary: dict  # written as eval.json (rlhf.json without the evaluation)
  params_path: str
  summary_path: str


def check(cfg: RLHF) -> None:
  """Raises a ValueError naming the first setting of the `rlhf` section out of range."""
  for name, choices in (
      ("advantage", rlhf.ADVANTAGES), ("kl_in", rlhf.KL_PLACEMENTS),
      ("reward_transform", rlhf.REWARD_TRANSFORMS), ("r_ref_estimator", rlhf.R_REF_ESTIMATORS),
      ("old_logps", ("sampler", "forward"))):
    if getattr(cfg, name) not in choices:
      raise ValueError(f"rlhf.{name} must be one of {choices}, got {getattr(cfg, name)!r}.")
  if cfg.group_size < 2:
    raise ValueError(f"rlhf.group_size must be >= 2 (group baselines), got {cfg.group_size}.")
  if not cfg.rewards:
    raise ValueError("rlhf.rewards is empty; use ('task',) and/or reward-model workdirs.")
  if cfg.reward_weights and len(cfg.reward_weights) != len(cfg.rewards):
    raise ValueError(f"rlhf.reward_weights has {len(cfg.reward_weights)} entries for "
                     f"{len(cfg.rewards)} reward sources {tuple(cfg.rewards)}.")
  if cfg.checkpoint_every < 1:
    raise ValueError(f"rlhf.checkpoint_every must be >= 1 round, got {cfg.checkpoint_every}.")


def sft_policy(config: Config, workdir: str) -> str:
  """The SFT workdir: `rlhf.init`, or `workdir/sft` (trained by the `sft` recipe if needed)."""
  if config.rlhf.init:
    return config.rlhf.init
  sft_dir = os.path.join(workdir, "sft")
  if not os.path.exists(os.path.join(sft_dir, setup.PARAMS_FILE)):
    sft.run(config_lib.select(sft.Config, config), sft_dir)
  return sft_dir


def round_batches(config: Config, task, model_config, reference_params) -> rlhf.RoundBatches:
  """The rounds of `config.rlhf` as the loop's data iterator (`rlhf.RoundBatches`)."""
  cfg = config.rlhf
  token_logps = jax.jit(rlhf.token_logp_fn(model_config, chunk_size=config.model.logprob_chunk))
  sample = lambda params, prompts, key, n: rlhf.sample_groups(
      model_config, params, task.tokenizer, prompts, key, num_samples=n,
      max_prompt_length=task.max_prompt_length + 1, max_new_tokens=task.max_response_length + 1,
      temperature=cfg.temperature, batch_size=cfg.sample_batch_size)
  prepare = functools.partial(
      rlhf.prepare_round, cfg, reference_params=reference_params, sample=sample,
      sources=rlhf.reward_sources(cfg.rewards, task, model_config),
      true_reward=task.reward_batch, token_logps=token_logps)
  prompts = rlhf.PromptRounds(task.prompts("train", cfg.num_prompts, seed=config.seed),
                              per_round=cfg.prompts_per_round, seed=config.seed)
  return rlhf.RoundBatches(prompts, prepare, minibatch_prompts=cfg.minibatch_prompts,
                           epochs=cfg.epochs, seed=config.seed)


def plot(workdir: str, summary: dict) -> str:
  """True reward and KL to the SFT policy per round (and the held-out result) to a PNG."""
  plt = plots.pyplot()
  rows = [r for r in logs.read_metrics(workdir) if "reward/true" in r]
  rounds = [r["round"] for r in rows]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  axes[0].plot(rounds, [r["reward/true"] for r in rows], marker="o", label="true reward")
  title = "true reward of the round's samples"
  if "win_rate" in summary:
    axes[0].axhline(summary["mean_reward"]["reference"], color="grey", linestyle=":",
                    label="SFT policy (held-out)")
    lo, hi = summary["win_rate_ci95"]
    title += f"\nheld-out win rate vs SFT {summary['win_rate']:.3f} [{lo:.3f}, {hi:.3f}]"
  axes[0].set(title=title, xlabel="round")
  axes[0].legend()
  if rows and "kl_sequence" in rows[0]:
    axes[1].plot(rounds, [r["kl_sequence"] for r in rows], marker="o")
  axes[1].set(title="KL(policy || SFT) per sequence (k1, the round's samples)", xlabel="round")
  return plots.save(fig, os.path.join(workdir, PLOT_FILE))


def run(config: Config, workdir: str) -> Result:
  """Trains the policy with RLHF rounds and evaluates it against the SFT policy."""
  start = time.perf_counter()
  cfg = config.rlhf
  check(cfg)
  os.makedirs(workdir, exist_ok=True)
  task, model_config = config_lib.task_and_model(config.task, config.model)
  sft_dir = sft_policy(config, workdir)
  sft_params = setup.load_params(runs.init_model(model_config, config.seed), sft_dir)
  sft_seconds = time.perf_counter() - start
  iterator = round_batches(config, task, model_config, sft_params)
  steps = iterator.steps_per_round
  state, _ = runs.train_run(
      name="rlhf",
      workdir=workdir,
      loss_fn=rlhf.policy_gradient_loss(
          rlhf.token_logp_fn(model_config, chunk_size=config.model.logprob_chunk),
          epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high,
          beta_kl=cfg.beta_kl if cfg.kl_in == "loss" else 0.0, kl_estimator=cfg.kl_estimator,
          loss_type=cfg.loss_type, importance_sampling_level=cfg.importance_sampling_level,
          max_completion_length=task.max_response_length + 1),
      params=sft_params,
      optimizer_config=cfg.optimizer,
      iterator=iterator,
      num_steps=cfg.num_rounds * steps,
      seed=config.seed,
      log_every=steps,  # one row per round, at its last step
      checkpoint_every=cfg.checkpoint_every * steps,  # round boundaries only: exact resume
      keep_checkpoints=cfg.keep_checkpoints,
      kill_after_step=cfg.kill_after_step if cfg.kill_after_step > 0 else None,
      model_config=model_config,
      mesh_config=dataclasses.asdict(config.mesh),
  )
  rlhf_seconds = time.perf_counter() - start - sft_seconds
  summary = {}
  if cfg.evaluate:
    summary = evaluation.run(
        config_lib.replace_in(config_lib.select(evaluation.Config, config), "evaluate",
                              policy=workdir, reference=sft_dir), workdir)
  summary["rlhf"] = {
      "sft": sft_dir,
      "num_rounds": cfg.num_rounds,
      "optimizer_steps": int(state.step),
      "nonfinite_skipped": int(state.nonfinite),
      "seconds": {"sft": round(sft_seconds, 1), "rlhf": round(rlhf_seconds, 1),
                  "total": round(time.perf_counter() - start, 1)},
  }
  summary["plot"] = PLOT_FILE
  summary_path = os.path.join(workdir, EVAL_FILE if cfg.evaluate else SUMMARY_FILE)
  if parallel.is_coordinator():  # process 0 writes the files
    plot(workdir, summary)
    with open(summary_path, "w", encoding="utf-8") as f:
      json.dump(summary, f, indent=2)
    print(f"[rlhf] done in {summary['rlhf']['seconds']['total']} s", flush=True)
  return Result(state.params, summary, os.path.join(workdir, setup.PARAMS_FILE), summary_path)
