"""Supervised fine-tuning of the policy on a task's mixed-quality demonstrations.

    python -m experiments.sft --config=experiments/configs/demo.py --workdir=/tmp/sft

Writes `workdir/params.msgpack` (the SFT policy, also the reference of later stages),
`metrics.jsonl`, TensorBoard events and checkpoints; re-running with the same workdir resumes.
"""

from __future__ import annotations


from alignment.training import objective, runs, setup
from experiments import _flags


def run(config, workdir: str):
  """Trains the SFT policy; returns its parameters."""
  task, model_config = runs.task_and_model(config)
  demos = task.demonstrations(config.sft.num_demonstrations, seed=config.seed)
  records = [{"prompt": p, "responses": [r], "scores": [1.0]} for p, r in demos]
  iterator = runs.batches(
      records, task, batch_size=config.sft.batch_size, list_size=1, seed=config.seed
  )
  logp_fn = setup.logp_fn(model_config, chunk_size=config.model.logprob_chunk)
  state, _ = runs.train_run(
      name="sft",
      workdir=workdir,
      loss_fn=objective.sft_loss(logp_fn),
      params=runs.init_model(model_config, config.seed),
      optimizer_config=config.sft.optimizer,
      iterator=iterator,
      num_steps=config.sft.num_steps,
      seed=config.seed,
      model_config=model_config,
      mesh_config=config.mesh,
      log_every=config.sft.log_every,
  )
  return state.params


if __name__ == "__main__":
  _flags.run_main(run)
