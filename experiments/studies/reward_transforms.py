"""Study 7 (issue 6): raw sum versus LSC sum of per-attribute reward models in RLHF.

    python -m experiments.studies.reward_transforms \
        --workdir=workdir/studies/reward_transforms [--quick]

Claim of *Transforming and Combining Rewards for Aligning Large Language Models* (Wang, Nagpal,
Berant, Eisenstein, D'Amour, Koyejo, Veitch; ICML 2024): aligning to the sum
of log-sigmoid-centred rewards `Σ_a logσ(r_a(x, y) − r_ref,a(x))` ("LSC", r_ref a quantile of the
SFT policy's rewards for the prompt) gives outputs that are good on *all* attributes more often,
with a better balance between them, than the raw sum `Σ_a r_a`, at the same KL to the SFT policy.

Per seed: one SFT policy (`common.sft_policy`); one learned scalar reward model per attribute of
the task (the `alignment.recipes.reward_model` recipe with `data.attribute`), trained on lists
of the SFT policy's samples rated by the simulated rater over that attribute's true value; then
RLHF (`alignment.recipes.rlhf`) from the SFT policy with `rlhf.rewards` = the reward-model
workdirs, weighted by the task's weights (`c + 2h` for `sorting`), for each reward transform
("none": raw sum; "lsc": LSC sum, r_ref the 0.85-quantile of 8 SFT samples per prompt), each
RLHF set-up and each KL strength `beta_kl`. Two set-ups (`SETUPS`): "grpo_kl_loss" (the RLHF recipe's default: GRPO
advantages z-scored per group, per-token k3 KL in the loss, so a given `beta_kl` weighs the KL
against advantages of unit scale under both transforms) and "rloo_kl_reward" (RLOO advantages,
unscaled, and the KL in the reward, `r − β·KL`: the KL-regularised objective of the paper, where
the transformed reward's saturation above r_ref is not undone by a per-group rescaling; raw reward
models' scale then sets the effective β, so the two transforms are compared at matched KL). Each
cell is evaluated (`alignment.recipes.evaluation`) on held-out prompts against the SFT policy:
win rate under the true reward and under each attribute's true value (ties count half), the
fraction of outputs good on each attribute and on all (as good as the task's optimum on the attribute: for
`sorting`, no forbidden digit / correctness at least that of the optimum, both = the optimum),
the mean true reward and the KL to the SFT policy.

Writes `reward_transforms.json` (every run, the reward models' held-out accuracies, the table of
means ± std over seeds, the claim checks at matched KL per set-up) and `reward_transforms.png`
(metrics against KL, one line per set-up and transform).
"""

from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import numpy as np

from alignment.recipes import config as config_lib
from alignment.recipes import reward_model, rlhf
from experiments.configs import reward_model as reward_model_configs
from experiments.configs import rlhf as rlhf_configs
from experiments.studies import common

TRANSFORMS = ("none", "lsc")
# RLHF set-ups: how the advantages are normalised and where the KL penalty goes.
SETUPS = {
    # GRPO: advantages z-scored per group, per-token k3 KL in the loss.
    "grpo_kl_loss": dict(advantage="grpo", kl_in="loss"),
    # RLOO: leave-one-out baseline, unscaled; KL in the reward, r − β·Σ_t k1 (the paper's
    # objective max E[u] − β·KL with the transformed reward u).
    "rloo_kl_reward": dict(advantage="rloo", kl_in="reward"),
}
FULL = dict(seeds=(0, 1, 2), beta_kls={"grpo_kl_loss": (0.01, 0.05, 0.2, 1.0),
                                       "rloo_kl_reward": (0.03, 0.1, 0.3, 1.0)})
QUICK = dict(seeds=(0,), beta_kls={"grpo_kl_loss": (0.05,), "rloo_kl_reward": (0.3,)})
# Metrics compared at matched KL in the claim checks.
CLAIM_METRICS = ("good_all", "min_attribute_win_rate", "win_rate", "mean_reward")


def metric_names(attributes: Sequence[str]) -> tuple[str, ...]:
  """The metrics of a row for a task with these attributes."""
  return ("win_rate", *(f"win_rate_{a}" for a in attributes), "min_attribute_win_rate",
          "good_all", *(f"good_{a}" for a in attributes), "mean_reward", "reward_gain", "kl")


def study_config(config, *, quick: bool):
  """`config` with an `rlhf` section (that of `experiments/configs/rlhf.py` if it has none).

  Quick mode shrinks every stage (`common.quick_config`) and RLHF to 2 rounds of 16 prompts.
  """
  config = config.copy_and_resolve_references()
  if "rlhf" not in config:
    with config.unlocked():
      config.rlhf = rlhf_configs.get_config().rlhf
  if not quick:
    return config
  config = common.quick_config(config)
  with config.unlocked():
    config.rlhf.update(num_prompts=64, num_rounds=2, prompts_per_round=16, minibatch_prompts=8,
                       group_size=4, epochs=1, r_ref_samples=4, sample_batch_size=64)
    config.rlhf.optimizer.update(total_steps=4, warmup_steps=0, schedule="constant")
  return config


def reward_model_config(config, *, attribute: str, policy: str, quick: bool):
  """The default reward-model config (`experiments/configs/reward_model.py`) for one attribute.

  Same seed, task and model as `config` (RLHF loads the reward model with its own model
  section); candidate lists are samples of `policy` (the SFT policy), rated over
  `attribute`'s true value.
  """
  rm = reward_model_configs.get_config()
  with rm.unlocked():
    rm.seed = config.seed
    rm.task = config.task.copy_and_resolve_references()
    rm.model = config.model.copy_and_resolve_references()
    rm.data.update(source="policy", policy=policy, attribute=attribute)
    if quick:
      rm.data.update(num_prompts=64, k=4)
      rm.train.update(num_steps=6, eval_every=6, log_every=3, checkpoint_every=6)
      rm.train.optimizer.update(total_steps=6, warmup_steps=1)
      rm.evaluate.update(num_prompts=32, batch_size=32)
  return rm


def reward_models(config, workdir: str, attributes: Sequence[str], *, policy: str,
                  quick: bool) -> dict[str, dict]:
  """One reward model per attribute in `seed_{s}/rm_{attribute}` (cached): `{a: {dir, heldout}}`."""
  out = {}
  for attribute in attributes:
    path = os.path.join(common.seed_dir(workdir, config.seed), f"rm_{attribute}")
    summary_path = os.path.join(path, reward_model.EVAL_FILE)
    if not os.path.exists(summary_path):
      rm = reward_model_config(config, attribute=attribute, policy=policy, quick=quick)
      reward_model.run(config_lib.from_dict(reward_model.Config, rm.to_dict()), path)
    with open(summary_path, encoding="utf-8") as f:
      summary = json.load(f)
    out[attribute] = {"dir": path, "heldout": summary["heldout"], "seconds": summary["seconds"]}
  return out


def cell_row(summary: Mapping, attributes: Sequence[str]) -> dict:
  """The metrics of one RLHF cell from its evaluation summary (`alignment.recipes.evaluation`).

  `min_attribute_win_rate` = `min_a win_rate_a`: the balance between attributes (the worse
  attribute's win rate against the SFT policy); `good_*` are the policy's good fractions.
  """
  wins = {a: summary["attribute_win_rate"][a] for a in attributes}
  good = summary["good_fraction"]["policy"]
  reward = summary["mean_reward"]
  return {
      "win_rate": summary["win_rate"],
      **{f"win_rate_{a}": w for a, w in wins.items()},
      "min_attribute_win_rate": min(wins.values()),
      "good_all": good["all"],
      **{f"good_{a}": good[a] for a in attributes},
      "mean_reward": reward["policy"],
      "reward_gain": reward["policy"] - reward["reference"],
      "kl": summary["kl_policy_reference"],
      "sft_good_all": summary["good_fraction"]["reference"]["all"],
  }


def rlhf_cell(config, workdir: str, run: str, *, attributes: Sequence[str], info: Mapping) -> dict:
  """Runs RLHF with `config` into `seed_{s}/{run}/rlhf`; the row is cached in `row.json`."""
  out = os.path.join(common.seed_dir(workdir, config.seed), run)
  row_path = os.path.join(out, "row.json")
  if os.path.exists(row_path):
    with open(row_path, encoding="utf-8") as f:
      return json.load(f)
  summary = rlhf.run(config_lib.from_dict(rlhf.Config, config.to_dict()),
                     os.path.join(out, "rlhf")).summary
  row = {**info, "seed": config.seed, **cell_row(summary, attributes),
         "seconds": summary["rlhf"]["seconds"]}
  common.write_json(row, row_path)
  return row


def matched_kl(table: Sequence[dict], metric: str, *, base: str = "none",
               other: str = "lsc") -> dict:
  """`other − base` in `metric` (means over seeds) at matched KL to the SFT policy.

  At each cell of `other` whose mean KL lies inside the range of `base`'s mean KLs, `base`'s
  curve (metric against KL, sorted by KL) is linearly interpolated there (`np.interp`). Returns
  the points `{beta_kl, kl, other, base, difference}` and the mean difference (None when the KL
  ranges do not overlap).
  """
  curve = sorted((r for r in table if r["transform"] == base), key=lambda r: r["kl_mean"])
  xp = np.array([r["kl_mean"] for r in curve])
  fp = np.array([r[f"{metric}_mean"] for r in curve])
  points = []
  for r in sorted((r for r in table if r["transform"] == other), key=lambda r: r["kl_mean"]):
    if len(xp) and xp[0] <= r["kl_mean"] <= xp[-1]:
      at = float(np.interp(r["kl_mean"], xp, fp))
      points.append({"beta_kl": r["beta_kl"], "kl": r["kl_mean"], other: r[f"{metric}_mean"],
                     base: at, "difference": r[f"{metric}_mean"] - at})
  mean = float(np.mean([p["difference"] for p in points])) if points else None
  return {"points": points, "mean_difference": mean}


def run(config, workdir: str, *, quick: bool = False, seeds: Sequence[int] | None = None,
        beta_kls: Mapping[str, Sequence[float]] | None = None,
        transforms: Sequence[str] = TRANSFORMS) -> dict:
  """Runs (or resumes) the grid set-ups × transforms × beta_kl × seeds; returns the summary.

  `beta_kls` maps each set-up of `SETUPS` to run to its KL strengths (default: the grid's).
  """
  grid = QUICK if quick else FULL
  seeds = tuple(seeds or grid["seeds"])
  beta_kls = {setup: tuple(sorted(b)) for setup, b in (beta_kls or grid["beta_kls"]).items()}
  for name, chosen, known in (("transforms", transforms, TRANSFORMS),
                              ("set-ups", beta_kls, tuple(SETUPS))):
    unknown = set(chosen) - set(known)
    if unknown:
      raise ValueError(f"reward_transforms.run: unknown {name} {sorted(unknown)}; known: "
                       f"{known}.")
  config = study_config(config, quick=quick)
  task = config_lib.from_dict(config_lib.Task, config.task.to_dict()).build()
  attributes = list(task.weights)
  weights = tuple(float(task.weights[a]) for a in attributes)
  rows, accuracies = [], {}
  for seed in seeds:
    seed_config = common.with_overrides(config, seed=seed)
    sft = common.sft_policy(seed_config, workdir)
    models = reward_models(seed_config, workdir, attributes, policy=sft, quick=quick)
    accuracies[seed] = {a: m["heldout"]["pairwise_accuracy"] for a, m in models.items()}
    for setup, betas in beta_kls.items():
      for transform in transforms:
        for beta in betas:
          cell_config = common.with_overrides(seed_config, rlhf=dict(
              init=sft, rewards=tuple(models[a]["dir"] for a in attributes),
              reward_weights=weights, reward_transform=transform, beta_kl=beta,
              **SETUPS[setup]))
          rows.append(rlhf_cell(cell_config, workdir, f"{setup}_{transform}_beta{beta:g}",
                                attributes=attributes,
                                info={"setup": setup, "transform": transform, "beta_kl": beta}))
  metrics = metric_names(attributes)
  keys = ("setup", "transform", "beta_kl")
  table = common.aggregate(rows, keys, (*metrics, "sft_good_all"))
  claims = {}
  if set(TRANSFORMS) <= set(transforms):
    for setup in beta_kls:
      rows_of_setup = [r for r in table if r["setup"] == setup]
      claims[setup] = {m: matched_kl(rows_of_setup, m) for m in CLAIM_METRICS}
  summary = {
      "study": "reward_transforms",
      "mode": "quick" if quick else "full",
      "seeds": list(seeds),
      "beta_kls": {setup: list(b) for setup, b in beta_kls.items()},
      "setups": {setup: SETUPS[setup] for setup in beta_kls},
      "transforms": list(transforms),
      "attributes": attributes,
      "reward_weights": list(weights),
      "rlhf": {k: config.rlhf[k] for k in ("num_rounds", "prompts_per_round", "group_size",
                                           "epochs", "r_ref_estimator", "r_ref_q",
                                           "r_ref_samples")},
      "reward_model_heldout_accuracy": {str(s): a for s, a in accuracies.items()},
      "table": table,
      "claims": claims,
      "runs": rows,
  }
  return common.finish(
      workdir, summary, keys=keys, metrics=metrics,
      plot=lambda path: common.plot_series(
          [{**r, "curve": f"{r['setup']}: {r['transform']}"} for r in table], x="kl_mean",
          series="curve", metrics=("good_all", *(f"win_rate_{a}" for a in attributes),
                                   "mean_reward"),
          title=(f"Reward transforms: {len(seeds)} seed(s), {config.rlhf.num_rounds} RLHF rounds "
                 f"(x: KL to the SFT policy)"),
          path=path))


if __name__ == "__main__":
  common.main(run)
