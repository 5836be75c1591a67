"""Preference data from a policy: sample K responses per prompt, rate them, write a dataset.

Writes `workdir/preferences.jsonl` (listwise layout: `prompt`, `responses`, `scores` = the
rater's graded labels, `rewards` = the true rewards) and `workdir/preferences_stats.json`.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np

from alignment.recipes import config as config_lib
from alignment.training import generation, runs, setup

DATA_FILE = "preferences.jsonl"
STATS_FILE = "preferences_stats.json"


@dataclasses.dataclass(frozen=True)
class Preferences:
  """`k` samples at `temperature` for each of `num_prompts` prompts of `split` from `policy` (a
  workdir or parameter file), rated by `rater` ("plackett_luce" over the true rewards at
  `rater_temperature`, with labels flipped at `flip_rate`, or "true_reward")."""

  num_prompts: int = 1024
  k: int = 4
  temperature: float = 1.0
  policy: str = ""
  rater: str = "plackett_luce"
  rater_temperature: float = 0.05
  flip_rate: float = 0.0
  batch_size: int = 256
  split: str = "train"
  seed_offset: int = 0  # added to the seeds of prompts, samples and rater (online rounds)


@dataclasses.dataclass(frozen=True)
class Config:
  seed: int = 0
  task: config_lib.Task = config_lib.Task()
  model: config_lib.Model = config_lib.Model()
  preferences: Preferences = Preferences()


@dataclasses.dataclass(frozen=True)
class Result:
  records: list[dict]
  stats: dict
  path: str


def run(config: Config, workdir: str) -> Result:
  """Samples, rates and writes preference records; returns them with their statistics."""
  cfg = config.preferences
  if not cfg.policy:
    raise ValueError("preferences.policy is empty: set it to an SFT workdir or parameter file "
                     "(--config.preferences.policy=...).")
  task, model_config = config_lib.task_and_model(config.task, config.model)
  params = setup.load_params(runs.init_model(model_config, config.seed), cfg.policy)
  offset = cfg.seed_offset
  prompts = task.prompts(cfg.split, cfg.num_prompts, seed=config.seed + offset)
  responses, _ = generation.sample_responses(
      model_config, params, task.tokenizer, prompts,
      jax.random.key(config.seed + 1000 + offset), num_samples=cfg.k,
      max_prompt_length=task.max_prompt_length + 1,
      max_new_tokens=task.max_response_length + 1, temperature=cfg.temperature,
      batch_size=cfg.batch_size,
  )
  rng = np.random.default_rng(config.seed + 2000 + offset)
  rewards, labels = generation.rate_lists(
      task, prompts, responses, rng, rater=cfg.rater, temperature=cfg.rater_temperature,
      flip_rate=cfg.flip_rate,
  )
  records = generation.make_preference_records(prompts, responses, labels, rewards)
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, DATA_FILE)
  with open(path, "w", encoding="utf-8") as f:
    for record in records:
      f.write(json.dumps(record) + "\n")
  stats = {
      "num_lists": len(records),
      "k": cfg.k,
      "mean_reward": float(rewards.mean()),
      "mean_best_reward": float(rewards.max(-1).mean()),
      "mean_reward_spread": float((rewards.max(-1) - rewards.min(-1)).mean()),
      "lists_all_tied": int(np.sum(np.all(labels == labels[:, :1], axis=-1))),
  }
  with open(os.path.join(workdir, STATS_FILE), "w", encoding="utf-8") as f:
    json.dump(stats, f, indent=2)
  print(f"[preferences] {json.dumps(stats)}", flush=True)
  return Result(records, stats, path)
