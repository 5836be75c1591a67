"""Supervised fine-tuning of the policy on a task's mixed-quality demonstrations.

The SFT policy is the starting point and the reference model of the later stages. Writes
`workdir/params.msgpack`, `metrics.jsonl`, TensorBoard events and checkpoints; re-running with the
same workdir resumes from the newest checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from alignment.recipes import config as config_lib
from alignment.training import objective, runs, setup


@dataclasses.dataclass(frozen=True)
class SFT:
  """`num_steps` steps of `batch_size` demonstrations drawn from `num_demonstrations`."""

  num_demonstrations: int = 4096
  batch_size: int = 64
  num_steps: int = 600
  optimizer: config_lib.Optimizer = config_lib.Optimizer(
      learning_rate=3e-3, schedule="cosine", warmup_steps=30, total_steps=600, b2=0.99)
  log_every: int = 50


@dataclasses.dataclass(frozen=True)
class Config(config_lib.Run):
  sft: SFT = SFT()


@dataclasses.dataclass(frozen=True)
class Result:
  params: Any
  metrics: list[dict]
  params_path: str


def run(config: Config, workdir: str) -> Result:
  """Trains the SFT policy (token NLL of the demonstrations' responses); returns it."""
  cfg = config.sft
  task, model_config = config_lib.task_and_model(config.task, config.model)
  demos = task.demonstrations(cfg.num_demonstrations, seed=config.seed)
  records = [{"prompt": p, "responses": [r], "scores": [1.0]} for p, r in demos]
  iterator = runs.batches(records, runs.task_encoding(task), batch_size=cfg.batch_size,
                          list_size=1, seed=config.seed)
  logp_fn = setup.logp_fn(model_config, chunk_size=config.model.logprob_chunk)
  state, rows = runs.train_run(
      name="sft",
      workdir=workdir,
      loss_fn=objective.sft_loss(logp_fn),
      params=runs.init_model(model_config, config.seed),
      optimizer_config=cfg.optimizer,
      iterator=iterator,
      num_steps=cfg.num_steps,
      seed=config.seed,
      model_config=model_config,
      mesh_config=dataclasses.asdict(config.mesh),
      log_every=cfg.log_every,
  )
  return Result(state.params, rows, os.path.join(workdir, setup.PARAMS_FILE))
