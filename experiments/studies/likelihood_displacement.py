"""Study 6 (likelihood displacement): does a pair's CHES predict how far DPO lowers `lp(y_w)`?

    python -m experiments.studies.likelihood_displacement \
        --workdir=workdir/studies/ranking_accuracy [--quick]

Claim of *Unintentional Unalignment: Likelihood Displacement in Direct Preference Optimization*
(Razin et al., ICLR 2025): DPO often lowers the likelihood of the preferred
response (likelihood displacement), and the centered hidden embedding similarity of a pair,
`CHES = ⟨H+, H−⟩ − ‖H+‖²` (H± the sums of the hidden states that predict the response tokens;
LN-CHES its length-normalised form), predicts it: the higher the CHES, the further `lp(y_w)` falls;
filtering out the pairs with the highest LN-CHES mitigates it.

Per seed, the same stages as study 3 (`dpo_dynamics.seed_stages`: SFT policy, K = 2 training
pairs, one DPO run with β = `loss.beta`), so run with study 3's workdir the DPO runs are shared.
For each training pair that DPO trains on (two different, non-empty responses), under the SFT
policy: CHES, LN-CHES and the exact first-order change of `lp(y_w)` under a gradient step on the
pair's own DPO loss, `⟨g_w, g_w − g_l⟩` with `g = ∇_θ lp(y)` (`PairScorer.first_order_change`;
its negative, `gradient_ches = ⟨g_w, g_l⟩ − ‖g_w‖²`, is the quantity CHES approximates with
hidden states); and the chosen (rejected) log-prob change `lp_T(y) − lp_0(y)` from the SFT policy
to the final DPO policy trained on all pairs. Reported for each (score, target) — CHES, LN-CHES
and gradient CHES against the chosen change of the joint run, CHES and LN-CHES against the
first-order single-pair change: Spearman and Pearson correlations, the mean target per score
quintile, and the paper's filter read-out, the mean target of the top-decile pairs minus that of
the bottom decile (negative = high score displaces more).

Intervention (the paper's filter): DPO, same budget, on the pairs without the top decile by
LN-CHES, against the pairs without a random decile; compared by the chosen and rejected log-prob
change on their own training pairs (and the change of the same pairs under the all-pairs run) and
by win rate against the SFT policy.

Writes `likelihood_displacement.json` (per seed and mean ± std over seeds) and
`likelihood_displacement.png` (CHES and LN-CHES against the chosen change, LN-CHES against the
first-order change, the binned means of the chosen change).
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from alignment.recipes import plots
from experiments.studies import common, dpo_dynamics

FULL = dict(seeds=(0, 1, 2, 3, 4))
QUICK = dict(seeds=(0,))
# (score, target): the target is the chosen log-prob change of the joint DPO run, or the
# first-order change of a step on the pair alone (gradient CHES is minus the latter).
EFFECTS = (("ches", "chosen_change"), ("ln_ches", "chosen_change"),
           ("gradient_ches", "chosen_change"), ("ches", "first_order_change"),
           ("ln_ches", "first_order_change"))
NUM_BINS = 5  # quintiles
FILTER_FRACTION = 0.1  # the decile of the filter read-out and of the intervention
CORRELATION_METRICS = ("spearman", "pearson", "top_decile_change", "bottom_decile_change",
                       "decile_difference")
INTERVENTION_METRICS = ("chosen_change", "rejected_change", "chosen_change_in_full_run",
                        "win_rate", "mean_reward", "kl")
DATA_VARIANTS = ("all", "without_top_ln_ches", "without_random")


def average_ranks(x) -> np.ndarray:
  """1-based ranks of `x` `[N]`, tied values sharing the mean of their ranks (as Spearman's ρ
  needs): `[10, 30, 20, 20] -> [1, 4, 2.5, 2.5]`."""
  x = np.asarray(x, np.float64)
  order = np.argsort(x, kind="stable")
  ranks = np.empty(len(x), np.float64)
  ranks[order] = np.arange(1, len(x) + 1)
  _, group, counts = np.unique(x, return_inverse=True, return_counts=True)
  sums = np.bincount(group, weights=ranks)
  return sums[group] / counts[group]


def pearson(x, y) -> float:
  """Pearson's r = `Σ(x − x̄)(y − ȳ) / sqrt(Σ(x − x̄)² Σ(y − ȳ)²)`; NaN if either is constant."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
    raise ValueError(f"pearson: need two [N] arrays with N >= 2, got {x.shape} and {y.shape}.")
  dx, dy = x - x.mean(), y - y.mean()
  denominator = np.sqrt(np.sum(dx * dx) * np.sum(dy * dy))
  return float(np.sum(dx * dy) / denominator) if denominator > 0 else float("nan")


def spearman(x, y) -> float:
  """Spearman's ρ: Pearson's r of the average ranks (ties share their mean rank)."""
  return pearson(average_ranks(x), average_ranks(y))


def quantile_bins(scores, num_bins: int) -> np.ndarray:
  """Bin index `[N]` in 0..num_bins−1 by ascending score, bins of equal size (±1; ties broken
  by position), as `np.array_split` of the stable sort: bin 0 holds the lowest scores."""
  scores = np.asarray(scores, np.float64)
  if not 1 <= num_bins <= len(scores):
    raise ValueError(f"quantile_bins: need 1 <= num_bins <= {len(scores)}, got {num_bins}.")
  bins = np.empty(len(scores), np.int64)
  for b, members in enumerate(np.array_split(np.argsort(scores, kind="stable"), num_bins)):
    bins[members] = b
  return bins


def binned_means(scores, values, num_bins: int) -> tuple[np.ndarray, np.ndarray]:
  """`(mean score, mean value)` `[num_bins]` of each `quantile_bins` bin of `scores`."""
  scores, values = np.asarray(scores, np.float64), np.asarray(values, np.float64)
  bins = quantile_bins(scores, num_bins)
  counts = np.bincount(bins, minlength=num_bins)
  return (np.bincount(bins, scores, num_bins) / counts,
          np.bincount(bins, values, num_bins) / counts)


def score_effects(scores, change, *, num_bins: int = NUM_BINS,
                  fraction: float = FILTER_FRACTION) -> dict:
  """How a score relates to a log-prob change over pairs `[N]`: correlations, the mean change
  per quantile bin, and the top vs bottom `fraction` (the paper's filter read-out)."""
  tails = int(round(1.0 / fraction))
  _, tail_means = binned_means(scores, change, tails)
  score_means, change_means = binned_means(scores, change, num_bins)
  return {
      "spearman": spearman(scores, change),
      "pearson": pearson(scores, change),
      "top_decile_change": float(tail_means[-1]),
      "bottom_decile_change": float(tail_means[0]),
      "decile_difference": float(tail_means[-1] - tail_means[0]),
      "bin_score": score_means.tolist(),
      "bin_change": change_means.tolist(),
  }


def removal(ln_ches, *, fraction: float, seed: int) -> dict[str, np.ndarray]:
  """Indices `[⌊fraction·N⌉]` to remove: the highest LN-CHES, and as many drawn at random."""
  ln_ches = np.asarray(ln_ches, np.float64)
  count = int(round(fraction * len(ln_ches)))
  top = np.argsort(-ln_ches, kind="stable")[:count]
  random = np.random.default_rng(seed).choice(len(ln_ches), size=count, replace=False)
  return {"without_top_ln_ches": np.sort(top), "without_random": np.sort(random)}


def _changes(scorer, params_0, params_t, pairs) -> tuple[np.ndarray, np.ndarray]:
  """`lp_T − lp_0` `[N, 2]` (chosen, rejected) of chosen-first `pairs`."""
  return scorer.logps(params_t, pairs)[0] - scorer.logps(params_0, pairs)[0]


def intervention(stages: dict, workdir: str, scorer, *, initial, change, trained,
                 ln_ches) -> dict:
  """The paper's filter against random removal, for one seed (`FILTER_FRACTION` of the trained
  pairs each): one DPO cell per variant, summarised with the all-pairs cell.

  Args:
    stages: `dpo_dynamics.seed_stages` of the seed.
    initial: the SFT parameters.
    change: `[N, 2]` log-prob changes of the all-pairs run.
    trained: `[N]` bool, the pairs the trainer keeps (only these are removed or averaged).
    ln_ches: `[N]` LN-CHES of the pairs.

  Returns:
    `{variant: {win_rate, mean_reward, kl, removed, chosen_change, rejected_change,
    chosen_change_in_full_run}}`, the changes averaged over the variant's own trained pairs.
  """
  config, pairs = stages["config"], stages["train"]
  seed_path = common.seed_dir(workdir, config.seed)
  candidates = np.flatnonzero(trained)
  out = {"all": {**_run_summary(stages["row"]), "removed": 0,
                 "chosen_change": float(change[candidates, 0].mean()),
                 "rejected_change": float(change[candidates, 1].mean()),
                 "chosen_change_in_full_run": float(change[candidates, 0].mean())}}
  for variant, removed in removal(ln_ches[candidates], fraction=FILTER_FRACTION,
                                  seed=config.seed).items():
    removed = set(candidates[removed].tolist())
    data = common.write_records(
        [r for i, r in enumerate(stages["records"]) if i not in removed],
        os.path.join(seed_path, f"data_k2_{variant}.jsonl"))
    run = f"{dpo_dynamics.RUN}_{variant}"
    row = common.train_and_evaluate(config, workdir, run, data=data, policy=stages["sft"],
                                    info={"data": variant})
    final = int(config.train.num_steps)
    params = dpo_dynamics.checkpoint_params(config, os.path.join(seed_path, run, "train"),
                                            [final], initial=stages["sft"])[final]
    kept = np.array([i for i in candidates if i not in removed])
    kept_change = _changes(scorer, initial, params, [pairs[i] for i in kept])
    out[variant] = {**_run_summary(row), "removed": len(removed),
                    "chosen_change": float(kept_change[:, 0].mean()),
                    "rejected_change": float(kept_change[:, 1].mean()),
                    "chosen_change_in_full_run": float(change[kept, 0].mean())}
  return out


def seed_analysis(stages: dict, workdir: str, scorer) -> dict:
  """CHES, LN-CHES, first-order and log-prob changes of one seed's trained pairs, their
  effects, and the intervention; cached in `seed_{s}/dpo/likelihood_displacement.json`."""
  config = stages["config"]
  path = os.path.join(common.seed_dir(workdir, config.seed), dpo_dynamics.RUN,
                      "likelihood_displacement.json")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  steps = [0, int(config.train.num_steps)]
  params = dpo_dynamics.checkpoint_params(config, stages["train_dir"], steps,
                                          initial=stages["sft"])
  pairs = stages["train"]
  # Pairs the trainer drops (identical or empty responses) are neither analysed nor removed.
  trained = dpo_dynamics.trained_mask(pairs)
  ches, ln_ches = scorer.ches(params[0], pairs)
  first_order = scorer.first_order_change(params[0], pairs)
  change = _changes(scorer, params[0], params[steps[-1]], pairs)
  per_pair = {"ches": ches, "ln_ches": ln_ches, "gradient_ches": -first_order,
              "first_order_change": first_order, "chosen_change": change[:, 0],
              "rejected_change": change[:, 1]}
  per_pair = {k: v[trained] for k, v in per_pair.items()}
  out = {
      "seed": config.seed,
      "pairs": len(pairs),
      "trained_pairs": int(trained.sum()),
      "displaced_fraction": float(np.mean(per_pair["chosen_change"] < 0)),
      "first_order_displaced_fraction": float(np.mean(per_pair["first_order_change"] < 0)),
      "mean_chosen_change": float(per_pair["chosen_change"].mean()),
      "mean_rejected_change": float(per_pair["rejected_change"].mean()),
      "effects": {f"{score}/{target}": score_effects(per_pair[score], per_pair[target])
                  for score, target in EFFECTS},
      "interventions": intervention(stages, workdir, scorer, initial=params[0], change=change,
                                    trained=trained, ln_ches=ln_ches),
      "per_pair": {k: v.tolist() for k, v in per_pair.items()},
  }
  common.write_json(out, path)
  return out


def _run_summary(row: dict) -> dict:
  return {k: row[k] for k in ("win_rate", "mean_reward", "kl")}


def plot(analyses: Sequence[dict], table: Sequence[dict], path: str) -> str:
  """Scatter of CHES and LN-CHES against the chosen change of the joint run, LN-CHES against the
  first-order single-pair change (all seeds), and the binned means of the chosen change."""
  plt = plots.pyplot()

  fig, axes = plt.subplots(1, 4, figsize=(20.8, 4.2))
  for ax, (score, target) in zip(axes[:3], EFFECTS[:2] + EFFECTS[-1:]):
    for a in analyses:
      ax.scatter(a["per_pair"][score], a["per_pair"][target], s=4, alpha=0.4,
                 label=f"seed {a['seed']}")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set(xlabel=f"{score} (SFT policy)", ylabel=target, title=f"{target} vs {score}")
    if target == "first_order_change":
      ax.set_yscale("symlog")
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8, markerscale=3)
  for score, target in EFFECTS[:3]:
    rows = sorted((r for r in table if (r["score"], r["target"]) == (score, target)),
                  key=lambda r: r["bin"])
    axes[3].errorbar([r["bin"] + 1 for r in rows], [r["change_mean"] for r in rows],
                     yerr=[r["change_std"] for r in rows], marker="o", capsize=3, label=score)
  axes[3].set(xlabel=f"score quantile bin (1 = lowest of {NUM_BINS})",
              ylabel="mean chosen log-prob change", title="binned means (± std over seeds)")
  axes[3].grid(alpha=0.3)
  axes[3].legend(fontsize=8)
  fig.suptitle(f"Likelihood displacement vs CHES: {len(analyses)} seed(s)")
  return plots.save(fig, path, dpi=100)


def run(config, workdir: str, *, quick: bool = False, seeds: Sequence[int] | None = None) -> dict:
  """Runs (or resumes) every seed's DPO run, scores and interventions; returns the summary."""
  grid = QUICK if quick else FULL
  seeds = tuple(seeds or grid["seeds"])
  config = common.quick_config(config) if quick else config
  eval_every = dpo_dynamics.EVAL_EVERY["quick" if quick else "full"]  # the cells of study 3
  analyses, scorer = [], None
  for seed in seeds:
    stages = dpo_dynamics.seed_stages(common.with_overrides(config, seed=seed), workdir,
                                      eval_every=eval_every)
    scorer = scorer or dpo_dynamics.PairScorer(stages["config"])
    analyses.append(seed_analysis(stages, workdir, scorer))
  effects = [(score, target, a["seed"], a["effects"][f"{score}/{target}"])
             for a in analyses for score, target in EFFECTS]
  correlation_rows = [{"score": score, "target": target, "seed": seed, **e}
                      for score, target, seed, e in effects]
  bin_rows = [{"score": score, "target": target, "bin": b, "seed": seed, "score_mean": s,
               "change": c}
              for score, target, seed, e in effects
              for b, (s, c) in enumerate(zip(e["bin_score"], e["bin_change"]))]
  intervention_rows = [{"data": v, "seed": a["seed"], **a["interventions"][v]}
                       for a in analyses for v in DATA_VARIANTS]
  # The filter against random removal, paired by seed (same SFT policy and pairs).
  gain_rows = [{"filter": "top_ln_ches - random", **{m: a["interventions"][
      "without_top_ln_ches"][m] - a["interventions"]["without_random"][m]
      for m in INTERVENTION_METRICS}} for a in analyses]
  prevalence = ("displaced_fraction", "first_order_displaced_fraction", "mean_chosen_change",
                "mean_rejected_change")
  prevalence_rows = [{"pairs": "trained", **{k: a[k] for k in prevalence}} for a in analyses]
  tables = {
      "correlations": common.aggregate(correlation_rows, ("score", "target"),
                                       CORRELATION_METRICS),
      "bins": common.aggregate(bin_rows, ("score", "target", "bin"), ("score_mean", "change")),
      "interventions": common.aggregate(intervention_rows, ("data",), INTERVENTION_METRICS),
      "filter_gain": common.aggregate(gain_rows, ("filter",), INTERVENTION_METRICS),
      "prevalence": common.aggregate(prevalence_rows, ("pairs",), prevalence),
  }
  summary = {
      "study": "likelihood_displacement",
      "mode": "quick" if quick else "full",
      "seeds": list(seeds),
      "beta": float(config.loss.beta),
      "train_steps": config.train.num_steps,
      "train_batch_size": config.train.batch_size,
      "filter_fraction": FILTER_FRACTION,
      "num_bins": NUM_BINS,
      "tables": tables,
      "claims": claim_checks(tables),
      "per_seed": [{k: v for k, v in a.items() if k != "per_pair"} for a in analyses],
  }
  common.write_json(summary, os.path.join(workdir, "likelihood_displacement.json"))
  plot(analyses, tables["bins"], os.path.join(workdir, "likelihood_displacement.png"))
  print(common.markdown_table(tables["prevalence"], ("pairs",), prevalence))
  print(common.markdown_table(tables["correlations"], ("score", "target"), CORRELATION_METRICS))
  print(common.markdown_table(tables["interventions"], ("data",), INTERVENTION_METRICS))
  print(common.markdown_table(tables["filter_gain"], ("filter",), INTERVENTION_METRICS),
        flush=True)
  return summary


def claim_checks(tables: dict) -> dict:
  """Signs of the predicted effects (means over seeds): for each (score, target), Spearman ρ < 0
  and the top-decile change below the bottom-decile change; for the filter, the gains in chosen
  change and win rate of removing the top LN-CHES decile over removing a random one (paired
  by seed), with their standard deviations over seeds."""
  checks = {}
  for score, target in EFFECTS:
    row = common.lookup(tables["correlations"], score=score, target=target)
    checks[f"{score}/{target}"] = {"spearman_negative": row["spearman_mean"] < 0,
                                   "top_decile_displaces_more": row["decile_difference_mean"] < 0}
  (gain,) = tables["filter_gain"]
  checks["filter"] = {f"{m}_gain": [gain[f"{m}_mean"], gain[f"{m}_std"]]
                      for m in ("chosen_change", "win_rate")}
  return checks


if __name__ == "__main__":
  common.main(run)
