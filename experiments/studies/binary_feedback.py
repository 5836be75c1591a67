"""Study 5 (binary feedback): BCO and KTO on thumbs data vs DPO on the pairs it came from.

    python -m experiments.studies.binary_feedback --workdir=workdir/studies/binary_feedback \
        [--quick]

Claims of *Binary Classifier Optimization for Large Language Model Alignment* (Jung et al.,
2024) and *KTO: Model Alignment as Prospect Theoretic Optimization* (Ethayarajh et al., 2024):
trained on binary (thumbs up / down) feedback only, BCO is on par with DPO trained on the
preference pairs, and KTO is close.

Per seed: one SFT policy; K = 2 pairs sampled from it once and ranked by the config's
Plackett–Luce rater; pairs of identical responses are dropped (as `experiments.train` drops
them for DPO). The thumbs data are the same responses unpaired (`unpaired_from_pairs`):
chosen → desirable (label 1), rejected → undesirable (label 0), both in one shuffled dataset, so
the binary feedback carries exactly the pairs' information minus the pairing. `dpo` trains on
the pairs with `train.batch_size` pairs per step; `kto` and `bco` on the thumbs data with
2 × `train.batch_size` single responses per step: the same number of gradient steps
(`train.num_steps`) and of responses seen per step. Every objective runs at each β of the grid:
`loss.beta` (the demo's 0.5 for summed log-ratios, used by studies 1-2) and, in full mode, 0.1
(the KTO paper's and TRL's default for KTO and BCO; the BCO paper's runs use 0.01), with the
objectives' other defaults (KTO λ_D = λ_U = 1, balanced classes; BCO's pooled running-mean δ,
no UDM).
KTO's reference point z0 comes from the mismatched pairs of each batch, computed in the step
with a reference forward (`train.reference="forward"`); DPO and BCO use cached reference
log-probs (the same maths).

Writes `binary_feedback.json` (runs, table of means ± std over seeds, per-seed paired
differences to DPO at the same β) and `binary_feedback.png`.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from experiments.studies import common

OBJECTIVES = ("dpo", "kto", "bco")
UNPAIRED = ("kto", "bco")
FULL = dict(seeds=(0, 1, 2, 3, 4))
QUICK = dict(seeds=(0,))
# Full mode runs `loss.beta` (the demo's 0.5 for summed log-ratios, as in studies 1-2) and the
# KTO paper's and TRL's default β for KTO and BCO.
PAPER_BETA = 0.1


def unpaired_from_pairs(pairs: Sequence[dict], *, seed: int) -> list[dict]:
  """Thumbs records `{prompt, completion, label}` of K = 2 pair records, shuffled.

  The response with the higher rater label becomes desirable (label 1), the other undesirable
  (label 0). The order is a permutation drawn with `seed`. The pairs should be those a DPO run
  trains on (`common.trainable_lists`: no pair of identical responses).
  """
  rows = []
  for i, r in enumerate(pairs):
    scores = r["scores"]
    if len(scores) != 2 or scores[0] == scores[1]:
      raise ValueError(f"unpaired_from_pairs: record {i} is not a strict pair (scores {scores}).")
    chosen = int(scores[1] > scores[0])
    rows += [{"prompt": r["prompt"], "completion": r["responses"][j], "label": float(j == chosen)}
             for j in range(2)]
  return [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))]


def _train_overrides(name: str, pair_batch: int) -> dict:
  """DPO: `pair_batch` pairs; KTO/BCO: 2 × `pair_batch` responses; KTO's reference in-step."""
  if name not in UNPAIRED:
    return dict(batch_size=pair_batch, reference="cache")
  return dict(batch_size=2 * pair_batch, reference="forward" if name == "kto" else "cache")


def run(config, workdir: str, *, quick: bool = False, seeds: Sequence[int] | None = None,
        objectives: Sequence[str] | None = None, betas: Sequence[float] | None = None) -> dict:
  """Runs (or resumes) the grid objectives × β × seeds; returns the written summary."""
  grid = QUICK if quick else FULL
  seeds, objectives = tuple(seeds or grid["seeds"]), tuple(objectives or OBJECTIVES)
  beta = float(config.loss.beta)
  default_betas = (beta,) if quick else tuple(dict.fromkeys((beta, PAPER_BETA)))
  betas = tuple(float(b) for b in betas or default_betas)
  if "dpo" not in objectives or not set(objectives) <= set(OBJECTIVES):
    raise ValueError(f"binary_feedback.run: objectives must include 'dpo' and come from "
                     f"{OBJECTIVES}; got {objectives}.")
  config = common.quick_config(config) if quick else config
  pair_batch = int(config.train.batch_size)
  rows = []
  for seed in seeds:
    seed_config = common.with_overrides(config, seed=seed, preferences=dict(k=2))
    sft = common.sft_policy(seed_config, workdir)
    common.preference_lists(seed_config, workdir, "k2", policy=sft)
    pairs_path = os.path.join(common.seed_dir(workdir, seed), "data_k2", "preferences.jsonl")
    data = {
        "pairs": pairs_path,
        "thumbs": common.write_records(
            unpaired_from_pairs(common.trainable_lists(pairs_path), seed=seed),
            os.path.join(common.seed_dir(workdir, seed), "thumbs_k2.jsonl")),
    }
    for beta in betas:
      for name in objectives:
        kind = "thumbs" if name in UNPAIRED else "pairs"
        run_config = common.with_overrides(
            seed_config, loss={"name": name, "beta": beta},
            train=_train_overrides(name, pair_batch))
        rows.append(common.train_and_evaluate(
            run_config, workdir, f"{name}_beta{beta:g}", data=data[kind], policy=sft,
            info={"objective": name, "data": kind, "beta": beta}))
  table = common.aggregate(rows, ("objective", "data", "beta"))
  summary = {
      "study": "binary_feedback",
      "mode": "quick" if quick else "full",
      "seeds": list(seeds),
      "objectives": list(objectives),
      "betas": list(betas),
      "train_steps": config.train.num_steps,
      "responses_per_step": 2 * pair_batch,
      "table": table,
      "claims": {
          f"beta={b:g}": {f"{o}_minus_dpo": common.paired_margins(
              [r for r in rows if r["beta"] == b], "objective", o, "dpo")
                          for o in objectives if o != "dpo"}
          for b in betas},
      "runs": rows,
  }
  return common.finish(
      workdir, summary, keys=("objective", "data", "beta"),
      plot=lambda path: common.plot_series(
          table, x="beta", series="objective", metrics=("win_rate", "reward_gain", "kl"),
          title=f"Binary feedback: {len(seeds)} seed(s), {config.train.num_steps} steps",
          path=path))


if __name__ == "__main__":
  common.main(run)
