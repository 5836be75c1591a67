"""Curry-DPO curricula: chosen/rejected pairs built from rated lists, easy pairs first.

A data-side transform ("Curry-DPO: Enhancing Alignment using Curriculum Learning & Ranked
Preferences", Pattnaik et al., 2024): each list of K rated responses gives the pairs of its best
response with every worse one, grouped into stages that a training run visits in order, the
model after one stage serving as the initialisation and the reference of the next.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from alignment import arrays


def curry_pairs(ratings, *, where=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Curry-DPO pairs of one list: `(chosen_idx, rejected_idx, stage)`, int arrays, easy first.

  The valid responses are ranked `R_1 > … > R_n` by rating (stable); the pairs are
  `(R_1, R_j)` for `j = n, …, 2` (largest rating gap, "easy", first), dropping ratings equal
  to `R_1`'s. `stage = n − j`, i.e. grouped by the rejected response's rank (stage 0 pairs the
  best with the worst). Paper: *Curry-DPO: Enhancing Alignment using Curriculum Learning &
  Ranked Preferences* (Pattnaik et al., 2024).

  Args:
    ratings: `[K]` ratings, higher is better.
    where: optional `[K]` bool, valid responses.
  """
  ratings = np.asarray(ratings, np.float64)
  if ratings.ndim != 1:
    raise ValueError(f"curry_pairs: ratings must be [K], got shape {ratings.shape}.")
  valid = np.ones(ratings.shape, bool) if where is None else np.asarray(where, bool)
  order = np.flatnonzero(valid)[np.argsort(-ratings[valid], kind="stable")]
  if order.size < 2:
    empty = np.zeros((0,), np.int64)
    return empty, empty, empty
  best, rest = order[0], order[1:]
  rank = np.arange(2, order.size + 1)
  keep = ratings[rest] < ratings[best]
  rejected, rank = rest[keep][::-1], rank[keep][::-1]
  return np.full(rejected.shape, best, np.int64), rejected.astype(np.int64), order.size - rank


def curry_schedule(
    ratings: Sequence, *, where: Optional[Sequence] = None, by: str = "rank",
    num_stages: Optional[int] = None,
) -> list[np.ndarray]:
  """Curry-DPO curriculum over a dataset: stages, each `[n, 3]` rows (example, chosen, rejected).

  `by="rank"` (default) groups the pairs of `curry_pairs` by stage (the rejected response's
  rank level); `by="gap"` sorts all pairs by rating gap, largest first, and splits them into
  `num_stages` (default K − 1) nearly equal stages. Within a stage, pairs run easy → hard (largest
  gap first; ties by example). Iterative training (the paper's default) makes the model after stage
  i both the initialisation and the reference of stage i + 1: the training loop recomputes reference
  log-probs between stages.

  Args:
    ratings: `[N, K]` (or a sequence of `[K]`) ratings.
    where: optional matching validity masks.
    by: "rank" or "gap".
    num_stages: number of stages for `by="gap"`.
  """
  arrays.check_choice("by", by, ("rank", "gap"), where="curry_schedule")
  rows = []
  for example, list_ratings in enumerate(ratings):
    list_where = None if where is None else where[example]
    chosen, rejected, stage = curry_pairs(list_ratings, where=list_where)
    r = np.asarray(list_ratings, np.float64)
    for c, j, st in zip(chosen, rejected, stage):
      rows.append((example, int(c), int(j), int(st), r[c] - r[j]))
  if not rows:
    return []
  table = np.array([row[:4] for row in rows], np.int64)
  gaps = np.array([row[4] for row in rows])
  order = np.lexsort((table[:, 0], -gaps))  # gap descending, then example
  table, gaps = table[order], gaps[order]
  if by == "rank":
    return [table[table[:, 3] == st, :3] for st in np.unique(table[:, 3])]
  k = max(len(np.asarray(r)) for r in ratings)
  stages = (k - 1) if num_stages is None else num_stages
  arrays.check_range("num_stages", stages, low=1.0, where="curry_schedule")
  return [chunk[:, :3] for chunk in np.array_split(table, stages) if len(chunk)]


def stage_records(records: Sequence[dict], by: str = "rank") -> list[list[dict]]:
  """`curry_schedule` applied to listwise records (`prompt`, `responses`, `scores`): one list of
  pair records `{prompt, responses: [chosen, rejected], scores: [1, 0]}` per stage, each ordered
  easy to hard."""
  schedule = curry_schedule([r["scores"] for r in records], by=by)
  return [
      [{"prompt": records[e]["prompt"],
        "responses": [records[e]["responses"][c], records[e]["responses"][j]],
        "scores": [1.0, 0.0]} for e, c, j in rows]
      for rows in schedule
  ]
