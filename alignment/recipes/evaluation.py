"""Evaluation of a policy against a reference policy under the task's true reward.

On held-out prompts: win rate of the policy's samples against the reference's (ties count half)
with a 95% interval, mean reward and per-attribute rewards of both, the per-attribute win rates
(the same comparison under each attribute's true value), the fraction of each model's responses
that are good on each attribute and on all of them (as good as the task's optimum on that
attribute), the sequence-level KL estimate `E_{y~π}[log π(y) − log π_ref(y)]`, and ranking
accuracy of the policy's likelihoods on held-out preference lists rated by the true reward.
Writes `workdir/eval.json`.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from alignment import metrics
from alignment.recipes import config as config_lib
from alignment.training import generation, runs, setup

EVAL_FILE = "eval.json"


@dataclasses.dataclass(frozen=True)
class Evaluate:
  """`policy` against `reference` (workdirs or parameter files) on `num_prompts` held-out
  prompts, one sample each at `temperature`; ranking accuracy on `heldout_preferences` lists of
  `heldout_list_size` samples of the reference."""

  policy: str = ""
  reference: str = ""
  num_prompts: int = 512
  temperature: float = 1.0
  batch_size: int = 256
  heldout_preferences: int = 256
  heldout_list_size: int = 4


@dataclasses.dataclass(frozen=True)
class Config:
  seed: int = 0
  task: config_lib.Task = config_lib.Task()
  model: config_lib.Model = config_lib.Model()
  evaluate: Evaluate = Evaluate()


def sequence_logps(logp_fn, params, batches) -> np.ndarray:
  """`[N, K]` summed completion log-probs of `params` over fixed batches, concatenated."""
  jitted = jax.jit(logp_fn)
  return np.concatenate([np.asarray(jitted(params, b)[0]) for b in batches])


def _load(template, path: str, setting: str):
  if not path:
    raise ValueError(f"evaluate.{setting} is empty: set it to a workdir or parameter file "
                     f"(--config.evaluate.{setting}=...).")
  return setup.load_params(template, path)


def run(config: Config, workdir: str) -> dict:
  """Evaluates `evaluate.policy` against `evaluate.reference`; returns the summary."""
  cfg = config.evaluate
  task, model_config = config_lib.task_and_model(config.task, config.model)
  template = runs.init_model(model_config, config.seed)
  policy_params = _load(template, cfg.policy, "policy")
  reference_params = _load(template, cfg.reference, "reference")
  prompts = task.prompts("heldout", cfg.num_prompts, seed=config.seed)
  sample = lambda params, key, prompts, k: generation.sample_responses(
      model_config, params, task.tokenizer, prompts, key, num_samples=k,
      max_prompt_length=task.max_prompt_length + 1, max_new_tokens=task.max_response_length + 1,
      temperature=cfg.temperature, batch_size=cfg.batch_size,
  )
  key = jax.random.key(config.seed + 777)
  policy_texts, policy_logps = sample(policy_params, key, prompts, 1)
  reference_texts, _ = sample(reference_params, jax.random.fold_in(key, 1), prompts, 1)
  policy_texts = [r[0] for r in policy_texts]
  reference_texts = [r[0] for r in reference_texts]
  policy_rewards = task.reward_batch(prompts, policy_texts)
  reference_rewards = task.reward_batch(prompts, reference_texts)
  wr = metrics.win_rate(jnp.asarray(policy_rewards), jnp.asarray(reference_rewards))

  # KL(π || π_ref) from the policy's own samples, scored by both models (k1 estimator).
  logp_fn = setup.logp_fn(model_config, chunk_size=config.model.logprob_chunk)
  encoding = runs.task_encoding(task)
  records = [{"prompt": p, "responses": [r], "scores": [1.0]}
             for p, r in zip(prompts, policy_texts)]
  batches = runs.fixed_batches(records, encoding, batch_size=cfg.batch_size, list_size=1)
  n = len(prompts)
  kl = metrics.mean(metrics.sample_kl(
      jnp.asarray(sequence_logps(logp_fn, policy_params, batches)[:n, 0]),
      jnp.asarray(sequence_logps(logp_fn, reference_params, batches)[:n, 0]),
  ))

  # Ranking accuracy on held-out lists sampled from the reference and rated by the true reward.
  held_prompts = prompts[: cfg.heldout_preferences]
  held = sample(reference_params, jax.random.fold_in(key, 2), held_prompts,
                cfg.heldout_list_size)[0]
  true = np.array([task.reward_batch([p] * len(rs), rs) for p, rs in zip(held_prompts, held)])
  list_records = [{"prompt": p, "responses": rs, "scores": list(map(float, t))}
                  for p, rs, t in zip(held_prompts, held, true)]
  list_batches = runs.fixed_batches(
      list_records, encoding, batch_size=cfg.batch_size, list_size=cfg.heldout_list_size)
  list_logps = sequence_logps(logp_fn, policy_params, list_batches)[: len(list_records)]
  ranking = metrics.mean(metrics.ranking_accuracy(jnp.asarray(list_logps), jnp.asarray(true)))

  attributes, values = {}, {}
  for name, texts in (("policy", policy_texts), ("reference", reference_texts)):
    values[name] = task.attributes_batch(prompts, texts)
    attributes[name] = {k: float(np.mean(v)) for k, v in values[name].items()}
  optimum = task.attributes_batch(prompts, [task.optimum(p) for p in prompts])
  summary = {
      "num_prompts": n,
      "win_rate": float(wr.rate),
      "win_rate_ci95": [float(wr.low), float(wr.high)],
      "mean_reward": {"policy": float(policy_rewards.mean()),
                      "reference": float(reference_rewards.mean())},
      "attributes": attributes,
      "attribute_win_rate": metrics.attribute_win_rates(values["policy"], values["reference"]),
      "good_fraction": {name: metrics.good_fractions(v, optimum) for name, v in values.items()},
      "kl_policy_reference": float(kl),
      "ranking_accuracy_heldout": float(ranking),
      "mean_policy_logp": float(policy_logps.mean()),
      "examples": [
          {"prompt": p, "policy": a, "reference": b, "optimum": task.optimum(p)}
          for p, a, b in list(zip(prompts, policy_texts, reference_texts))[:8]
      ],
  }
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, EVAL_FILE), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2)
  print(f"[evaluate] win rate {summary['win_rate']:.3f} "
        f"(95% CI {summary['win_rate_ci95'][0]:.3f}-{summary['win_rate_ci95'][1]:.3f}), "
        f"reward {summary['mean_reward']['policy']:.3f} vs "
        f"{summary['mean_reward']['reference']:.3f}, KL {summary['kl_policy_reference']:.3f}",
        flush=True)
  return summary
