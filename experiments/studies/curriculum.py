"""Study 4 (Curry-DPO): DPO on ranked pairs in curriculum order vs the same pairs shuffled.

    python -m experiments.studies.curriculum --workdir=workdir/studies/curriculum [--quick]

Claim of *Curry-DPO: Enhancing Alignment using Curriculum Learning & Ranked Preferences*
(Pattnaik et al., 2024): from K rated responses per prompt, training DPO on
the pairs (best, j-th) easy → hard, each stage starting from the previous stage's model *and
using it as the reference*, beats training on the same pairs in random order.

Per seed: one SFT policy; lists of K = 4 responses sampled from it once and ranked by the
config's Plackett–Luce rater (duplicate responses dropped, as `experiments.train` does, so a
list may have fewer than 4). The Curry-DPO pairs of a list are (R1, R4), (R1, R3), (R1, R2)
(`alignment.data.curriculum.curry_pairs`; stage = the rejected response's rank, largest rating
gap first). Every method runs DPO (β = `loss.beta`) for `train.num_steps` steps of
`train.batch_size` pairs:

- `curriculum`: the K − 1 = 3 stages in order (`train.curriculum="rank"`), each
  `num_steps / 3` steps, the reference refreshed to the previous stage's model;
- `shuffled`: the same pairs in one shuffled stage with the SFT reference;
- `curriculum_fixed_ref`: the stages in order, the SFT reference throughout (isolates the
  reference refresh from the ordering);
- `random_pair`: one random pair of distinct ratings per list (the usual DPO baseline, 1/3 of
  the pairs, hence ~3 times as many epochs over them).

Each curriculum stage is a complete DPO run, as in the paper: a fresh AdamW whose schedule
(warm-up, cosine) spans the stage's steps (`stage_optimizer`); the one-stage methods use the
config's schedule over all steps. Writes `curriculum.json` (runs, table of means ± std over
seeds, per-seed paired differences of `COMPARISONS`) and `curriculum.png`.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from alignment.data import curriculum
from experiments.studies import common

# (name, train-section overrides); the staged methods get `stage_optimizer` on top.
METHODS = (
    ("curriculum", dict(curriculum="rank", refresh_reference=True)),
    ("shuffled", dict(curriculum="")),
    ("curriculum_fixed_ref", dict(curriculum="rank", refresh_reference=False)),
    ("random_pair", dict(curriculum="")),
)
FULL = dict(seeds=(0, 1, 2, 3, 4), methods=tuple(name for name, _ in METHODS))
QUICK = dict(seeds=(0,), methods=("curriculum", "shuffled"))
K = 4
# Paired comparisons (a, b) reported as a − b: the claim (curriculum vs shuffled), then what the
# reference refresh and the extra pairs per list contribute.
COMPARISONS = (("curriculum", "shuffled"), ("curriculum", "curriculum_fixed_ref"),
               ("curriculum", "random_pair"), ("shuffled", "random_pair"))


def curry_pair_records(lists: Sequence[dict]) -> list[dict]:
  """All Curry-DPO pairs of `lists` (chosen first, scores [1, 0]), stage after stage."""
  return [pair for stage in curriculum.stage_records(lists) for pair in stage]


def random_pair_records(lists: Sequence[dict], *, seed: int) -> list[dict]:
  """One pair per list: two responses drawn uniformly among those of distinct labels, the
  better-labelled first (scores [1, 0]); a list whose labels are all equal gives no pair."""
  rng = np.random.default_rng(seed)
  out = []
  for r in lists:
    labels = np.asarray(r["scores"], np.float64)
    pairs = [(i, j) for i in range(len(labels)) for j in range(len(labels))
             if labels[i] > labels[j]]
    if pairs:
      i, j = pairs[rng.integers(len(pairs))]
      out.append({"prompt": r["prompt"], "responses": [r["responses"][i], r["responses"][j]],
                  "scores": [1.0, 0.0]})
  return out


def stage_optimizer(optimizer, num_steps: int, num_stages: int) -> dict:
  """The optimiser section of one curriculum stage: the schedule spans `num_steps // num_stages`
  steps (train.py's stage length) and the warm-up shrinks in proportion (below the length)."""
  steps = max(num_steps // num_stages, 1)
  warmup = int(round(optimizer.warmup_steps * steps / max(num_steps, 1)))
  return {**dict(optimizer), "total_steps": steps, "warmup_steps": min(warmup, steps - 1)}


def run(config, workdir: str, *, quick: bool = False, seeds: Sequence[int] | None = None,
        methods: Sequence[str] | None = None) -> dict:
  """Runs (or resumes) the grid methods × seeds; returns the written summary."""
  grid = QUICK if quick else FULL
  seeds, methods = tuple(seeds or grid["seeds"]), tuple(methods or grid["methods"])
  known = dict(METHODS)
  unknown = [m for m in methods if m not in known]
  if unknown or "curriculum" not in methods or "shuffled" not in methods:
    raise ValueError(f"curriculum.run: methods must include 'curriculum' and 'shuffled' and "
                     f"come from {sorted(known)}; got {methods}.")
  config = common.quick_config(config) if quick else config
  beta, num_steps = float(config.loss.beta), int(config.train.num_steps)
  rows, num_pairs = [], {}
  for seed in seeds:
    seed_config = common.with_overrides(config, seed=seed, preferences=dict(k=K))
    sft = common.sft_policy(seed_config, workdir)
    common.preference_lists(seed_config, workdir, f"k{K}", policy=sft)
    folder = common.seed_dir(workdir, seed)
    lists_path = os.path.join(folder, f"data_k{K}", "preferences.jsonl")  # train.py stages it
    lists = common.trainable_lists(lists_path)
    num_stages = len(curriculum.curry_schedule([r["scores"] for r in lists], by="rank"))
    pairs = curry_pair_records(lists)
    data = {
        "curriculum": lists_path,
        "curriculum_fixed_ref": lists_path,
        "shuffled": common.write_records(pairs, os.path.join(folder, "curry_pairs.jsonl")),
        "random_pair": common.write_records(random_pair_records(lists, seed=seed),
                                            os.path.join(folder, "random_pairs.jsonl")),
    }
    num_pairs[seed] = {"curry_pairs": len(pairs), "stages": num_stages, "lists": len(lists)}
    for name in methods:
      overrides = dict(known[name])
      if overrides["curriculum"]:
        overrides["optimizer"] = stage_optimizer(config.train.optimizer, num_steps, num_stages)
      run_config = common.with_overrides(
          seed_config, loss={"name": "dpo", "beta": beta}, train=overrides)
      rows.append(common.train_and_evaluate(
          run_config, workdir, name, data=data[name], policy=sft,
          info={"method": name}))
  table = common.aggregate(rows, ("method",))
  summary = {
      "study": "curriculum",
      "mode": "quick" if quick else "full",
      "seeds": list(seeds),
      "methods": list(methods),
      "k": K,
      "beta": beta,
      "train_steps": num_steps,
      "train_batch_size": config.train.batch_size,
      "data": num_pairs,
      "table": table,
      "claims": {f"{a}_minus_{b}": common.paired_margins(rows, "method", a, b)
                 for a, b in COMPARISONS if a in methods and b in methods},
      "runs": rows,
  }
  return common.finish(
      workdir, summary, keys=("method",),
      plot=lambda path: common.plot_bars(
          table, x="method", metrics=("win_rate", "reward_gain", "kl"),
          title=f"Curry-DPO: {len(seeds)} seed(s), {num_steps} steps, K {K}, beta {beta}",
          path=path))


if __name__ == "__main__":
  common.main(run)
