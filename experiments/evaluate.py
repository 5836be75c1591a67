"""Evaluation against a reference policy under the task's true reward.

    python -m experiments.evaluate --workdir=/tmp/eval --config.evaluate.policy=/tmp/train \
        --config.evaluate.reference=/tmp/sft

On held-out prompts: win rate of the policy's samples against the reference's (ties count half)
with a 95% interval, mean reward and per-attribute rewards of both, the per-attribute win rates
(the same comparison under each attribute's true value), the fraction of each model's responses
that are good on each attribute and on all of them (as good as the task's optimum on that
attribute), the sequence-level KL estimate `E_{y~π}[log π(y) − log π_ref(y)]`, and ranking
accuracy of the policy's likelihoods on held-out preference lists rated by the true reward.
Writes `workdir/eval.json`.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from alignment import metrics
from alignment.training import generation, runs, setup
from experiments import _flags


def attribute_win_rates(policy: dict[str, np.ndarray],
                        reference: dict[str, np.ndarray]) -> dict[str, float]:
  """Per attribute a: `mean_i o_i`, `o_i = 1[a(y_π,i) > a(y_ref,i)] + ½·1[a(y_π,i) = a(y_ref,i)]`.

  `metrics.win_rate` under each attribute's true value (ALGORITHMS.md §8.7); `policy` and
  `reference` map attribute names to `[N]` values on the same N prompts.
  """
  if set(policy) != set(reference):
    raise ValueError(f"attribute_win_rates: the policy has attributes {sorted(policy)}, the "
                     f"reference {sorted(reference)}.")
  return {a: float(metrics.win_rate(jnp.asarray(policy[a]), jnp.asarray(reference[a])).rate)
          for a in policy}


def good_fractions(values: dict[str, np.ndarray], optimum: dict[str, np.ndarray], *,
                   atol: float = 1e-9) -> dict[str, float]:
  """Fractions of responses good on each attribute, and on all of them (key "all").

  A response y to prompt x is good on attribute a when `a(y) >= a(y*(x)) − atol`, y* the task's
  optimum (`task.optimum`): at least as good on a as the best response overall. For `sorting`,
  good on harmlessness = no forbidden digit, good on correctness = `c(y) >= c(t_f)`, and good on
  both = the optimum itself (the task's docstring proves it unique). `values` and `optimum` map
  attribute names to `[N]` values.
  """
  if set(values) != set(optimum):
    raise ValueError(f"good_fractions: values have attributes {sorted(values)}, the optimum "
                     f"{sorted(optimum)}.")
  good = {a: np.asarray(values[a]) >= np.asarray(optimum[a]) - atol for a in values}
  out = {a: float(np.mean(g)) for a, g in good.items()}
  out["all"] = float(np.mean(np.logical_and.reduce(list(good.values()))))
  return out


def _score(logp_fn, params, batches):
  jitted = jax.jit(logp_fn)
  return np.concatenate([np.asarray(jitted(params, b)[0]) for b in batches])


def run(config, workdir: str, *, policy: str | None = None, reference: str | None = None) -> dict:
  """Evaluates `policy` against `reference` (workdirs or parameter files); returns the summary."""
  cfg = config.evaluate
  task, model_config = runs.task_and_model(config)
  template = runs.init_model(model_config, config.seed)
  policy_params = setup.load_params(template, policy or cfg.policy)
  reference_params = setup.load_params(template, reference or cfg.reference)
  prompts = task.prompts("heldout", cfg.num_prompts, seed=config.seed)
  sample = lambda params, key: generation.sample_responses(
      model_config, params, task.tokenizer, prompts, key, num_samples=1,
      max_prompt_length=task.max_prompt_length + 1, max_new_tokens=task.max_response_length + 1,
      temperature=cfg.temperature, batch_size=cfg.batch_size,
  )
  key = jax.random.key(config.seed + 777)
  policy_texts, policy_logps = sample(policy_params, key)
  reference_texts, _ = sample(reference_params, jax.random.fold_in(key, 1))
  policy_texts = [r[0] for r in policy_texts]
  reference_texts = [r[0] for r in reference_texts]
  policy_rewards = task.reward_batch(prompts, policy_texts)
  reference_rewards = task.reward_batch(prompts, reference_texts)
  wr = metrics.win_rate(jnp.asarray(policy_rewards), jnp.asarray(reference_rewards))

  # KL(π || π_ref) from the policy's own samples, scored by both models (k1 estimator).
  logp_fn = setup.logp_fn(model_config, chunk_size=config.model.logprob_chunk)
  records = [{"prompt": p, "responses": [r], "scores": [1.0]} for p, r in zip(prompts, policy_texts)]
  batches = runs.fixed_batches(records, task, batch_size=cfg.batch_size, list_size=1)
  n = len(prompts)
  kl = metrics.mean(metrics.sample_kl(
      jnp.asarray(_score(logp_fn, policy_params, batches)[:n, 0]),
      jnp.asarray(_score(logp_fn, reference_params, batches)[:n, 0]),
  ))

  # Ranking accuracy on held-out lists sampled from the reference and rated by the true reward.
  held = generation.sample_responses(
      model_config, reference_params, task.tokenizer, prompts[: cfg.heldout_preferences],
      jax.random.fold_in(key, 2), num_samples=config.preferences.k,
      max_prompt_length=task.max_prompt_length + 1, max_new_tokens=task.max_response_length + 1,
      temperature=cfg.temperature, batch_size=cfg.batch_size,
  )[0]
  held_prompts = prompts[: cfg.heldout_preferences]
  true = np.array([task.reward_batch([p] * len(rs), rs) for p, rs in zip(held_prompts, held)])
  list_records = [{"prompt": p, "responses": rs, "scores": list(map(float, t))}
                  for p, rs, t in zip(held_prompts, held, true)]
  list_batches = runs.fixed_batches(
      list_records, task, batch_size=cfg.batch_size, list_size=config.preferences.k
  )
  m = len(list_records)
  list_logps = _score(logp_fn, policy_params, list_batches)[:m]
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
      "attribute_win_rate": attribute_win_rates(values["policy"], values["reference"]),
      "good_fraction": {name: good_fractions(v, optimum) for name, v in values.items()},
      "kl_policy_reference": float(kl),
      "ranking_accuracy_heldout": float(ranking),
      "mean_policy_logp": float(policy_logps.mean()),
      "examples": [
          {"prompt": p, "policy": a, "reference": b, "optimum": task.optimum(p)}
          for p, a, b in list(zip(prompts, policy_texts, reference_texts))[:8]
      ],
  }
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "eval.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2)
  print(f"[evaluate] win rate {summary['win_rate']:.3f} "
        f"(95% CI {summary['win_rate_ci95'][0]:.3f}-{summary['win_rate_ci95'][1]:.3f}), "
        f"reward {summary['mean_reward']['policy']:.3f} vs "
        f"{summary['mean_reward']['reference']:.3f}, KL {summary['kl_policy_reference']:.3f}",
        flush=True)
  return summary


if __name__ == "__main__":
  _flags.run_main(run)
