"""Study 3 (ranking accuracy): does DPO learn to rank the preferred response first?

    python -m experiments.studies.ranking_accuracy --workdir=workdir/studies/ranking_accuracy \
        [--quick]

Claims of *Preference Learning Algorithms Do Not Learn Preference Rankings* (Chen, Malladi et
al., NeurIPS 2024): the ranking accuracy of a DPO policy's likelihoods,
`R = mean 1[lp_w ≥ lp_l]`, stays far below the idealized ranking accuracy `R*` that the exact
DPO/RLHF optimum would reach (a large alignment gap `R* − R`), and DPO rarely flips a pair that
the reference ranks wrongly: by Thm 4.1 such a pair is ranked correctly iff its DPO loss falls
below `−logσ(β·(lr_l − lr_w))`, which is tiny when the reference margin is wide.

Per seed: the SFT policy, K = 2 pairs sampled from it (1024 training prompts) and rated by the
config's Plackett–Luce rater, and one DPO run per learning rate (β = `loss.beta`,
`train.num_steps` steps from the SFT policy, which is the reference; the config's learning rate
and a tenth of it, to see how far the answer depends on how hard DPO optimises), checkpointed
every `eval_every` steps (`dpo_dynamics.seed_stages`). At step 0 and every checkpoint, on the
training pairs and on held-out pairs (sampled and rated the same way on held-out prompts):

- `ranking_accuracy` (`lp`) and `ranking_accuracy_ln` (`lp / n`) of the policy's likelihoods;
- `idealized_ranking_accuracy` at the training β, from the reference log-probs and the rater's
  preference probability `α = σ((r_w − r_l)/τ)` (flip rate 0) of each pair (constant in the
  step), and `alignment_gap` = idealized − actual; min / median / max of the idealized accuracy
  over β ∈ {0.01, 0.1, 1, 5, 10} are reported per seed;
- `dpo_loss` and `reward_accuracy` (the implicit-reward accuracy `1[βρ_w > βρ_l]` that DPO logs,
  which is not ranking accuracy);
- over the pairs the SFT policy ranks wrongly (`lr_w < lr_l`): `flipped_fraction`, those ranked
  correctly at the step, and `below_threshold`, those whose DPO loss is at most the flip
  threshold of the paper (equal to `flipped_fraction` by Thm 4.1, a check of the measurement).

The pairs measured are those DPO trains on (two different, non-empty responses) whose label
agrees with the rater's majority, `α > 1/2` (the setting of the paper, whose `y_w` is the
majority choice): the idealized optimum ranks pairs by the majority, so a pair labelled against
it (rater noise) or with equal true rewards (α = 1/2) has no well-defined idealized ranking.
The counts of the others are reported.

Writes `ranking_accuracy.json` (per seed and step, the table of means ± std over seeds, the
idealized accuracies, the claim checks) and `ranking_accuracy.png`.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from alignment import metrics
from alignment.losses import pairwise
from experiments.studies import common, dpo_dynamics

# lr_factors: learning rates of the DPO runs, as multiples of `train.optimizer.learning_rate`.
FULL = dict(seeds=(0, 1, 2, 3, 4), eval_every=dpo_dynamics.EVAL_EVERY["full"],
            lr_factors=(1.0, 0.1))
QUICK = dict(seeds=(0,), eval_every=dpo_dynamics.EVAL_EVERY["quick"], lr_factors=(1.0,))
KEYS = ("lr_factor", "split", "step")
SPLITS = ("train", "heldout")
METRICS = ("ranking_accuracy", "ranking_accuracy_ln", "idealized_ranking_accuracy",
           "alignment_gap", "reward_accuracy", "dpo_loss", "flipped_fraction", "below_threshold")
# `below_threshold` equals `flipped_fraction` (Thm 4.1): checked in `claim_checks`, not tabled.
TABLE_METRICS = tuple(m for m in METRICS if m != "below_threshold")
PAIR_LABELS = (1.0, 0.0)


def _masked_mean(values, where) -> float:
  return float(metrics.mean(metrics.sum_count(jnp.asarray(values), jnp.asarray(where))))


def step_measures(logps, lengths, ref_logps, *, beta: float, where) -> dict:
  """Ranking and DPO measures of one policy on chosen-first pairs (`alignment.metrics`).

  Args:
    logps: `[N, 2]` the policy's log-probs, slot 0 the chosen response.
    lengths: `[N, 2]` completion token counts (length-normalised ranking accuracy).
    ref_logps: `[N, 2]` the reference's (the SFT policy, which also defines "initially
      mis-ranked": `lr_w < lr_l`).
    beta: DPO's β.
    where: `[N]` bool, the pairs measured.

  Returns:
    `ranking_accuracy`, `ranking_accuracy_ln`, `reward_accuracy`, `dpo_loss` over `where`;
    `flipped_fraction` and `below_threshold` over the initially mis-ranked pairs of `where`,
    `misranked_initially` (their count).
  """
  logps, lengths, ref_logps = (jnp.asarray(x, jnp.float32) for x in (logps, lengths, ref_logps))
  where = np.asarray(where, bool)
  labels = jnp.broadcast_to(jnp.asarray(PAIR_LABELS), logps.shape)
  slots = jnp.broadcast_to(jnp.asarray(where)[:, None], logps.shape)
  losses = pairwise.dpo(logps, ref_logps, labels, beta=beta, reduce_fn=None)
  misranked = where & np.asarray(ref_logps[:, 0] < ref_logps[:, 1])
  reward = metrics.reward_metrics(logps, ref_logps, labels, beta=beta, where=slots)
  return {
      "ranking_accuracy": float(metrics.mean(metrics.ranking_accuracy(logps, labels,
                                                                      where=slots))),
      "ranking_accuracy_ln": float(metrics.mean(metrics.ranking_accuracy(
          logps, labels, lengths=lengths, where=slots))),
      "reward_accuracy": float(metrics.mean(reward["rewards/accuracies"])),
      "dpo_loss": _masked_mean(losses, where),
      "flipped_fraction": _masked_mean(logps[:, 0] >= logps[:, 1], misranked),
      "below_threshold": float(metrics.mean(metrics.below_flip_threshold(
          losses, metrics.dpo_flip_threshold(ref_logps, beta=beta), where=jnp.asarray(misranked)))),
      "misranked_initially": int(misranked.sum()),
  }


def idealized(ref_logps, alpha, *, beta: float, where) -> dict:
  """Idealized ranking accuracy (`alignment.metrics.idealized_ranking_accuracy`) of chosen-first
  pairs: at the training `beta`, and min / median / max over `metrics.IDEALIZED_BETAS` (each a mean over the `where` pairs)."""
  slots = jnp.broadcast_to(jnp.asarray(where, bool)[:, None], np.shape(ref_logps))
  ref = jnp.asarray(ref_logps, jnp.float32)
  over = metrics.idealized_ranking_accuracy(ref, jnp.asarray(alpha), where=slots)
  at_beta = metrics.idealized_ranking_accuracy(ref, jnp.asarray(alpha), betas=(beta,), where=slots)
  return {"at_beta": float(metrics.mean(at_beta)[0]),
          **{k: float(v) for k, v in metrics.summarize_over_betas(over).items()}}


def run_rows(stages: dict, workdir: str, steps: Sequence[int], scorer) -> dict:
  """Measures of one DPO run at each of `steps` on both splits, cached in `seed_{s}/{run}`.

  Returns `{"rows": [{lr_factor, split, step, seed, *METRICS}], "pairs": {split: counts},
  "idealized": {split: idealized(...)}}`.
  """
  config = stages["config"]
  path = os.path.join(common.seed_dir(workdir, config.seed), stages["run"],
                      "ranking_accuracy.json")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  beta = float(config.loss.beta)
  params = dpo_dynamics.checkpoint_params(config, stages["train_dir"], steps,
                                          initial=stages["sft"])
  rows, pairs, ideal = [], {}, {}
  for split in SPLITS:
    records = stages[split]
    alpha = dpo_dynamics.rater_alpha(config, records)
    trained = dpo_dynamics.trained_mask(records)
    where = (alpha > 0.5) & trained
    ref_logps, lengths = scorer.logps(params[0], records)
    ideal[split] = idealized(ref_logps, alpha, beta=beta, where=where)
    pairs[split] = {"pairs": len(records), "measured": int(where.sum()),
                    "not_trained": int(np.sum(~trained)),
                    "tied_rewards": int(np.sum(alpha == 0.5)),
                    "against_majority": int(np.sum(alpha < 0.5))}
    for step in steps:
      logps = ref_logps if step == 0 else scorer.logps(params[step], records)[0]
      m = step_measures(logps, lengths, ref_logps, beta=beta, where=where)
      m["idealized_ranking_accuracy"] = ideal[split]["at_beta"]
      m["alignment_gap"] = m["idealized_ranking_accuracy"] - m["ranking_accuracy"]
      rows.append({"lr_factor": stages["lr_factor"], "split": split, "step": step,
                   "seed": config.seed, **m})
  out = {"rows": rows, "pairs": pairs, "idealized": ideal}
  common.write_json(out, path)
  return out


def claim_checks(table: Sequence[dict], steps: Sequence[int],
                 lr_factors: Sequence[float]) -> dict:
  """Per learning rate and split, at the final step: the alignment gap, ranking vs reward
  accuracy, the flips, and the Thm 4.1 identity (flipped = below threshold, at every step)."""
  first, last = min(steps), max(steps)
  checks = {}
  for f, split in ((f, split) for f in lr_factors for split in SPLITS):
    start, end = (common.lookup(table, lr_factor=f, split=split, step=s) for s in (first, last))
    checks[f"lr×{f:g}/{split}"] = {
        "ranking_accuracy_start": start["ranking_accuracy_mean"],
        "ranking_accuracy_end": end["ranking_accuracy_mean"],
        "idealized_ranking_accuracy": end["idealized_ranking_accuracy_mean"],
        "alignment_gap_end": end["alignment_gap_mean"],
        "reward_accuracy_end": end["reward_accuracy_mean"],
        "flipped_fraction_end": end["flipped_fraction_mean"],
        "thm41_max_abs_difference": max(abs(r["flipped_fraction_mean"] - r["below_threshold_mean"])
                                        for r in table
                                        if (r["lr_factor"], r["split"]) == (f, split)),
    }
  return checks


def run(config, workdir: str, *, quick: bool = False, seeds: Sequence[int] | None = None,
        eval_every: int | None = None, lr_factors: Sequence[float] | None = None) -> dict:
  """Runs (or resumes) the DPO runs (seeds × learning rates) and their measurements; returns
  the summary."""
  grid = QUICK if quick else FULL
  seeds = tuple(seeds or grid["seeds"])
  eval_every = int(eval_every or grid["eval_every"])
  lr_factors = tuple(float(f) for f in (lr_factors or grid["lr_factors"]))
  config = common.quick_config(config) if quick else config
  steps = dpo_dynamics.eval_steps(int(config.train.num_steps), eval_every)
  rows, per_seed, dpo_rows = [], {}, []
  scorer = None
  for seed, f in ((s, f) for s in seeds for f in lr_factors):
    stages = dpo_dynamics.seed_stages(common.with_overrides(config, seed=seed), workdir,
                                      eval_every=eval_every, lr_factor=f)
    scorer = scorer or dpo_dynamics.PairScorer(stages["config"])
    measured = run_rows(stages, workdir, steps, scorer)
    rows += measured["rows"]
    # The same at every learning rate: the pairs and the reference are the seed's.
    per_seed[seed] = {"pairs": measured["pairs"], "idealized": measured["idealized"]}
    dpo_rows.append({**stages["row"], "lr_factor": f})
  table = common.aggregate(rows, KEYS, METRICS)
  beta = float(config.loss.beta)
  summary = {
      "study": "ranking_accuracy",
      "mode": "quick" if quick else "full",
      "seeds": list(seeds),
      "steps": steps,
      "beta": beta,
      "idealized_betas": list(metrics.IDEALIZED_BETAS),
      "rater_temperature": float(config.preferences.rater_temperature),
      "learning_rate": float(config.train.optimizer.learning_rate),
      "lr_factors": list(lr_factors),
      "train_steps": config.train.num_steps,
      "train_batch_size": config.train.batch_size,
      "table": table,
      "per_seed": per_seed,
      "dpo_evaluation": common.aggregate(dpo_rows, ("lr_factor",)),
      "claims": claim_checks(table, steps, lr_factors),
      "runs": rows,
  }
  return common.finish(
      workdir, summary, keys=KEYS, metrics=TABLE_METRICS,
      plot=lambda path: common.plot_series(
          [{**r, "curve": f"{r['split']}, lr x{r['lr_factor']:g}"} for r in table], x="step",
          series="curve",
          metrics=("ranking_accuracy", "alignment_gap", "reward_accuracy", "flipped_fraction"),
          title=f"Ranking accuracy under DPO: {len(seeds)} seed(s), beta {beta}",
          path=path))


if __name__ == "__main__":
  common.main(run)
