"""Offline preference training with any registered objective (and Curry-DPO curricula).

    python -m experiments.train --workdir=/tmp/train --config.loss.name=dpo \
        --config.train.init=/tmp/sft --config.train.data=/tmp/prefs/preferences.jsonl

The policy starts from `train.init` (an SFT workdir), which is also the reference model.
Writes `params.msgpack`, `metrics.jsonl`, TensorBoard events, checkpoints and `data_stats.json`.
"""

from __future__ import annotations

import json
import os

from absl import app, logging

from alignment import losses
from alignment.data import formats
from alignment.training import objective, runs, setup
from experiments import _flags


def read_preferences(path: str, workdir: str) -> tuple[list[dict], dict]:
  """Listwise records from `path` under the default bad-input policy; counts are saved."""
  stats = formats.DataStats()
  records = list(formats.read_records(path, layout="listwise", stats=stats))
  if not records:
    raise ValueError(f"No usable preference lists in {path} (counts: {dict(stats.counts)}).")
  with open(os.path.join(workdir, "data_stats.json"), "w", encoding="utf-8") as f:
    json.dump(stats.to_json(), f, indent=2)
  return records, stats.to_json()


def run(config, workdir: str, *, init: str | None = None, data: str | None = None):
  """Trains the policy on preference lists; returns its parameters."""
  cfg = config.train
  os.makedirs(workdir, exist_ok=True)
  task, model_config = runs.task_and_model(config)
  hyper = {k: v for k, v in config.loss.items() if k != "name"}
  records, _ = read_preferences(data or cfg.data, workdir)
  list_size = max(len(r["responses"]) for r in records)
  if losses.spec(config.loss.name).family == "pairwise" and list_size != 2:
    raise ValueError(
        f"Objective {config.loss.name!r} is pairwise but the data has lists of up to "
        f"{list_size} responses; build pairs first (e.g. losses.listwise.curry_pairs)."
    )
  init_params = setup.load_params(runs.init_model(model_config, config.seed), init or cfg.init)
  logp_fn = setup.logp_fn(model_config, chunk_size=config.model.logprob_chunk)
  spec = losses.spec(config.loss.name)
  loss_fn = objective.preference_loss(
      config.loss.name, logp_fn, reference=cfg.reference, hyper_parameters=hyper,
      ref_logp_fn=logp_fn,
  )
  if cfg.reference == "cache" and spec.needs_reference:
    records = runs.attach_reference_logps(
        records, task, logp_fn, init_params, list_size=list_size,
        batch_size=config.evaluate.batch_size, cache_dir=os.path.join(workdir, "ref_cache"),
    )
  iterator = runs.batches(
      records, task, batch_size=cfg.batch_size, list_size=list_size, seed=config.seed
  )
  state, _ = runs.train_run(
      name=f"train[{config.loss.name}]",
      workdir=workdir,
      loss_fn=loss_fn,
      params=init_params,
      optimizer_config=cfg.optimizer,
      iterator=iterator,
      num_steps=cfg.num_steps,
      seed=config.seed,
      frozen=init_params if spec.needs_reference and cfg.reference != "cache" else None,
      loss_state=spec.init_state() if spec.stateful else (),
      accum_steps=cfg.accum_steps,
      on_nonfinite=cfg.on_nonfinite,
      log_every=cfg.log_every,
      checkpoint_every=cfg.checkpoint_every,
      keep_checkpoints=cfg.keep_checkpoints,
      kill_after_step=cfg.kill_after_step if cfg.kill_after_step > 0 else None,
  )
  return state.params


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  run(_flags.CONFIG.value, _flags.WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
