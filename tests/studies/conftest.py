"""Fixtures of the study tests: a fake pipeline that records each cell instead of training it."""

import json
import os

import pytest

from experiments.studies import common


@pytest.fixture
def fake_pipeline(monkeypatch):
  """`install(lists, *, records_for=None) -> cells`: replaces SFT, sampling and training in
  `experiments.studies.common` by fakes.

  The SFT policy of seed s is the string `"sft{s}"`; `preference_lists` writes and returns
  `records_for(config, lists)` (default: `lists` as given); `train_and_evaluate` appends to
  `cells` the cell's run name, loss, train section (also `reference`, `batch_size`, `steps`),
  `preferences_k`, the records of its data file, its policy and `info`, and returns a row whose
  every metric is the cell's index (1-based), so aggregates can be checked by hand.
  """

  def install(lists, *, records_for=None):
    cells = []

    def train_and_evaluate(config, workdir, run, *, data, policy, info):
      with open(data, encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
      cells.append(dict(
          run=run, loss=dict(config.loss), train=config.train.to_dict(),
          reference=config.train.reference, batch_size=config.train.batch_size,
          steps=config.train.num_steps, preferences_k=config.preferences.k, records=records,
          policy=policy, **info))
      return {**info, "seed": config.seed, **{m: float(len(cells)) for m in common.METRICS}}

    def preference_lists(config, workdir, name, *, policy):
      del policy
      records = records_for(config, lists) if records_for else lists
      out = os.path.join(common.seed_dir(workdir, config.seed), f"data_{name}")
      common.write_records(records, os.path.join(out, "preferences.jsonl"))
      return records

    monkeypatch.setattr(common, "sft_policy", lambda config, workdir: f"sft{config.seed}")
    monkeypatch.setattr(common, "preference_lists", preference_lists)
    monkeypatch.setattr(common, "train_and_evaluate", train_and_evaluate)
    return cells

  return install
