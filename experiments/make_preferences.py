"""Preference data from a policy: sample K responses per prompt, rate them, write a dataset.

    python -m experiments.make_preferences --workdir=/tmp/prefs --config.preferences.policy=/tmp/sft

Writes `workdir/preferences.jsonl` (listwise layout: `prompt`, `responses`, `scores` = the
rater's graded labels, `rewards` = the true rewards) and `workdir/preferences_stats.json`.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from alignment.training import generation, runs, setup
from experiments import _flags

DATA_FILE = "preferences.jsonl"


def run(config, workdir: str, *, policy: str | None = None, split: str = "train",
        num_prompts: int | None = None, seed_offset: int = 0) -> list[dict]:
  """Samples, rates and writes preference records; returns them."""
  cfg = config.preferences
  task, model_config = runs.task_and_model(config)
  params = setup.load_params(
      runs.init_model(model_config, config.seed), policy or cfg.get("policy", None) or ""
  )
  n = num_prompts or cfg.num_prompts
  prompts = task.prompts(split, n, seed=config.seed + seed_offset)
  responses, _ = generation.sample_responses(
      model_config, params, task.tokenizer, prompts,
      jax.random.key(config.seed + 1000 + seed_offset), num_samples=cfg.k,
      max_prompt_length=task.max_prompt_length + 1,
      max_new_tokens=task.max_response_length + 1, temperature=cfg.temperature,
      batch_size=cfg.batch_size,
  )
  rng = np.random.default_rng(config.seed + 2000 + seed_offset)
  rewards, labels = generation.rate_lists(
      task, prompts, responses, rng, rater=cfg.rater, temperature=cfg.rater_temperature,
      flip_rate=cfg.flip_rate,
  )
  records = generation.make_preference_records(prompts, responses, labels, rewards)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, DATA_FILE), "w", encoding="utf-8") as f:
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
  with open(os.path.join(workdir, "preferences_stats.json"), "w", encoding="utf-8") as f:
    json.dump(stats, f, indent=2)
  print(f"[preferences] {json.dumps(stats)}", flush=True)
  return records


if __name__ == "__main__":
  _flags.run_main(run)
