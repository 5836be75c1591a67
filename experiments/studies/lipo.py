"""Study 1 (LiPO): listwise objectives at list sizes K ∈ {2, 4, 8} under one step budget.

    python -m experiments.studies.lipo --workdir=workdir/studies/lipo [--quick]

Claims of *LiPO: Listwise Preference Optimization through Learning-to-Rank* (Liu, Qin et al.,
2024): LiPO-λ beats DPO_BT, DPO_PL, SLiC, softmax and PRO, and its gain grows with K.

Per seed: one SFT policy, lists of max(K) responses sampled from it once and ranked by the
config's Plackett–Luce rater; the lists of size K are their first K responses (the rater's order
restricted to them, labels renumbered 0..K−1), so the K = 2 pairs are nested in the K = 4 lists,
and those in the K = 8 lists. Every objective trains `train.num_steps` steps of `train.batch_size`
lists from the SFT policy (β = `loss.beta` for all reference-based ones) and is evaluated against
it: win rate under the true reward, mean true reward, KL, held-out ranking accuracy.

PRO is reference-free (average log-probs as scores, `train.reference = "none"`), takes no β, and
needs lists sorted best to worst with reward scores as labels: its lists are the same ones,
reordered by the rater's labels, with the renumbered ranks 0..K−1 as the scores.

At K = 2, DPO_PL (ListMLE) and softmax are DPO_BT exactly (the K = 2 reduction of
`alignment/losses/listwise.py`, tested there), so that cell is trained once and shared by the
three rows (`SAME_AT_K2`).

Writes `lipo.json` (every run, the table of means ± std over seeds, the claim checks) and
`lipo.png` (win rate and reward gain against K per objective).
"""

from __future__ import annotations

import os
from typing import Sequence

from experiments.studies import common

# (registry name, the LiPO paper's name for it)
OBJECTIVES = (
    ("lipo_pair_logistic", "DPO_BT"),
    ("lipo_listmle", "DPO_PL"),
    ("lipo_pair_hinge", "SLiC"),
    ("lipo_softmax", "softmax"),
    ("pro", "PRO"),
    ("lipo_lambda", "LiPO-λ"),
)
FULL = dict(seeds=(0, 1, 2), ks=(2, 4, 8))
QUICK = dict(seeds=(0,), ks=(2, 4))
REFERENCE_FREE = ("pro",)
# Objectives that are the same loss as another at K = 2: trained once, the row shared.
SAME_AT_K2 = {"lipo_listmle": "lipo_pair_logistic", "lipo_softmax": "lipo_pair_logistic"}


def _loss(name: str, beta: float) -> dict:
  return {"name": name} if name in REFERENCE_FREE else {"name": name, "beta": beta}


def claim_checks(table: Sequence[dict], ks: Sequence[int], objectives: Sequence[str]) -> dict:
  """LiPO-λ's rank by mean win rate at each K and its margin over the best other objective."""
  checks = {}
  for k in ks:
    rows = sorted((common.lookup(table, objective=o, k=k) for o in objectives),
                  key=lambda r: -r["win_rate_mean"])
    ours = common.lookup(table, objective="lipo_lambda", k=k)
    best_other = next(r for r in rows if r["objective"] != "lipo_lambda")
    checks[f"k={k}"] = {
        "lipo_lambda_rank": 1 + [r["objective"] for r in rows].index("lipo_lambda"),
        "best_other": best_other["objective"],
        "margin_win_rate": ours["win_rate_mean"] - best_other["win_rate_mean"],
        "margin_reward": ours["mean_reward_mean"] - best_other["mean_reward_mean"],
    }
  return checks


def run(config, workdir: str, *, quick: bool = False, seeds: Sequence[int] | None = None,
        ks: Sequence[int] | None = None, objectives: Sequence[str] | None = None) -> dict:
  """Runs (or resumes) the grid objectives × K × seeds; returns the written summary."""
  grid = QUICK if quick else FULL
  seeds, ks = tuple(seeds or grid["seeds"]), tuple(sorted(ks or grid["ks"]))
  objectives = tuple(objectives or (name for name, _ in OBJECTIVES))
  if "lipo_lambda" not in objectives:
    raise ValueError("lipo.run: the study compares against 'lipo_lambda'; keep it in objectives.")
  config = common.quick_config(config) if quick else config
  beta = float(config.loss.beta)
  rows = []
  for seed in seeds:
    seed_config = common.with_overrides(config, seed=seed)
    sft = common.sft_policy(seed_config, workdir)
    lists = common.preference_lists(
        common.with_overrides(seed_config, preferences=dict(k=max(ks))), workdir,
        f"k{max(ks)}", policy=sft)
    for k in ks:
      data = common.sub_lists(lists, k)
      paths = {
          False: common.write_records(
              data, os.path.join(common.seed_dir(workdir, seed), f"lists_k{k}.jsonl")),
          True: common.write_records(
              common.sorted_best_first(data),
              os.path.join(common.seed_dir(workdir, seed), f"lists_k{k}_sorted.jsonl")),
      }
      for name in objectives:
        trained = SAME_AT_K2.get(name, name) if k == 2 else name
        free = trained in REFERENCE_FREE
        run_config = common.with_overrides(
            seed_config, loss=_loss(trained, beta), preferences=dict(k=k),
            train=dict(reference="none") if free else {})
        row = common.train_and_evaluate(
            run_config, workdir, f"{trained}_k{k}", data=paths[free], policy=sft,
            info={"objective": trained, "k": k})
        rows.append({**row, "objective": name})
  table = common.aggregate(rows, ("objective", "k"))
  summary = {
      "study": "lipo",
      "mode": "quick" if quick else "full",
      "seeds": list(seeds),
      "ks": list(ks),
      "beta": beta,
      "train_steps": config.train.num_steps,
      "train_batch_size": config.train.batch_size,
      "table": table,
      "claims": claim_checks(table, ks, objectives),
      "runs": rows,
  }
  return common.finish(
      workdir, summary, keys=("objective", "k"),
      plot=lambda path: common.plot_series(
          table, x="k", series="objective", metrics=("win_rate", "reward_gain"),
          title=f"LiPO study: {len(seeds)} seed(s), {config.train.num_steps} steps, beta {beta}",
          path=path))


if __name__ == "__main__":
  common.main(run)
