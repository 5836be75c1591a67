"""Study 2 (noisy labels): DPO, cDPO and rDPO on pairs whose labels flip at rate ε.

    python -m experiments.studies.noisy_labels --workdir=workdir/studies/noisy_labels [--quick]

Claim of *Provably Robust DPO: Aligning Language Models with Noisy Feedback* (Chowdhury, Kini,
Natarajan, ICML 2024): with label-flip rate ε, rDPO (told the true ε) degrades least as ε grows,
compared with DPO and cDPO (label smoothing ε, Mitchell 2023).

Per seed: one SFT policy; K = 2 pairs sampled from it once per flip rate with the same sampling
key, so every flip rate rates the same responses, and ranked by the config's rater whose
`flip_rate` inverts a pair's label with probability ε (the same random draws at every ε, so the
flipped pairs are nested). cDPO and rDPO use `label_smoothing = ε`; at ε = 0 both are DPO exactly
(`cdpo(ε=0) = dpo`, `rdpo(ε=0) = −logσ(βh) = dpo`), so that cell is trained once and shared.
All objectives use β = `loss.beta` and `train.num_steps` steps from the SFT policy.

Writes `noisy_labels.json` (runs, table of means ± std over seeds, the observed label-error
rates, degradation from ε = 0 to the largest ε) and `noisy_labels.png`.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from experiments.studies import common

OBJECTIVES = ("dpo", "cdpo", "rdpo")
FULL = dict(seeds=(0, 1, 2), flip_rates=(0.0, 0.1, 0.2, 0.3))
QUICK = dict(seeds=(0,), flip_rates=(0.0, 0.3))


def label_error_rate(records: Sequence[dict]) -> float:
  """Fraction of pairs (with distinct true rewards) whose rater label prefers the worse response."""
  wrong = [
      (r["scores"][0] > r["scores"][1]) != (r["rewards"][0] > r["rewards"][1])
      for r in records if r["rewards"][0] != r["rewards"][1]
  ]
  return float(np.mean(wrong)) if wrong else 0.0


def degradation(table: Sequence[dict], flip_rates: Sequence[float]) -> dict:
  """Per objective: mean win rate and reward at the smallest ε minus those at the largest ε."""
  lo, hi = min(flip_rates), max(flip_rates)
  out = {}
  for name in OBJECTIVES:
    a, b = (common.lookup(table, objective=name, flip_rate=e) for e in (lo, hi))
    out[name] = {"win_rate_drop": a["win_rate_mean"] - b["win_rate_mean"],
                 "reward_drop": a["mean_reward_mean"] - b["mean_reward_mean"]}
  return out


def run(config, workdir: str, *, quick: bool = False, seeds: Sequence[int] | None = None,
        flip_rates: Sequence[float] | None = None) -> dict:
  """Runs (or resumes) the grid objectives × flip rates × seeds; returns the written summary."""
  grid = QUICK if quick else FULL
  seeds = tuple(seeds or grid["seeds"])
  flip_rates = tuple(sorted(flip_rates or grid["flip_rates"]))
  config = common.quick_config(config) if quick else config
  beta = float(config.loss.beta)
  rows, errors = [], {}
  for seed in seeds:
    seed_config = common.with_overrides(config, seed=seed, preferences=dict(k=2))
    sft = common.sft_policy(seed_config, workdir)
    for eps in flip_rates:
      name = f"k2_flip{eps:g}"
      records = common.preference_lists(
          common.with_overrides(seed_config, preferences=dict(flip_rate=eps)), workdir, name,
          policy=sft)
      errors.setdefault(eps, []).append(label_error_rate(records))
      data = os.path.join(common.seed_dir(workdir, seed), f"data_{name}", "preferences.jsonl")
      for objective in OBJECTIVES:
        trained = "dpo" if eps == 0.0 else objective
        loss = {"name": trained, "beta": beta}
        if trained != "dpo":
          loss["label_smoothing"] = eps
        row = common.train_and_evaluate(
            common.with_overrides(seed_config, loss=loss), workdir, f"{trained}_flip{eps:g}",
            data=data, policy=sft, info={"objective": trained, "flip_rate": eps})
        rows.append({**row, "objective": objective})
  table = common.aggregate(rows, ("objective", "flip_rate"))
  summary = {
      "study": "noisy_labels",
      "mode": "quick" if quick else "full",
      "seeds": list(seeds),
      "flip_rates": list(flip_rates),
      "beta": beta,
      "train_steps": config.train.num_steps,
      "train_batch_size": config.train.batch_size,
      "observed_label_error": {f"{e:g}": float(np.mean(v)) for e, v in errors.items()},
      "table": table,
      "degradation": degradation(table, flip_rates),
      "runs": rows,
  }
  return common.finish(
      workdir, summary, keys=("objective", "flip_rate"),
      plot=lambda path: common.plot_series(
          table, x="flip_rate", series="objective", metrics=("win_rate", "reward_gain"),
          title=f"Noisy labels: {len(seeds)} seed(s), {config.train.num_steps} steps, beta {beta}",
          path=path))


if __name__ == "__main__":
  common.main(run)
