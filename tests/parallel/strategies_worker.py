"""Subprocess body of tests/parallel/test_strategies.py: runs on 8 simulated CPU devices.

XLA_FLAGS=--xla_force_host_platform_device_count=8 must be set by the caller before this process
imports jax. Trains the SFT stage of the demo configuration (one layer) for 3 steps on one device
and under each sharding strategy, and prints one JSON object: per strategy the losses, XLA's
per-device memory figures of the train step and the per-device parameter bytes.
"""

import json
import os
import sys
import tempfile

import jax

from alignment import parallel
from alignment.models import transformer
from alignment.recipes import config as config_lib
from alignment.training import objective, runs, setup
from experiments.configs import demo

# (strategy, mesh shape) on 8 devices: 1-D meshes, data x tensor (2-D), data x fsdp x tensor (3-D).
CASES = (
    ("dp", {"data": 8}),
    ("fsdp", {"fsdp": 8}),
    ("tp", {"data": 2, "tensor": 4}),
    ("fsdp_tp", {"data": 2, "fsdp": 2, "tensor": 2}),
)
NUM_STEPS = 3


def main(root):
  assert jax.device_count() == 8, jax.devices()
  model = config_lib.Model(overrides={**config_lib.Model().overrides, "depth": 1})
  task, model_config = config_lib.task_and_model(config_lib.Task(), model)
  records = [{"prompt": p, "responses": [r], "scores": [1.0]}
             for p, r in task.demonstrations(64, seed=0)]
  loss_fn = objective.sft_loss(setup.logp_fn(model_config, chunk_size=model.logprob_chunk))
  params = jax.device_get(runs.init_model(model_config, 0))  # host copy: each run donates its own
  axes = transformer.logical_axes(model_config)

  def train(name, mesh_config):
    workdir = os.path.join(root, name)
    _, rows = runs.train_run(
        name=name, workdir=workdir, loss_fn=loss_fn, params=params,
        optimizer_config=demo.optimizer(3e-3, NUM_STEPS), num_steps=NUM_STEPS, seed=0,
        iterator=runs.batches(records, runs.task_encoding(task), batch_size=8, list_size=1,
                              seed=0), log_every=1,
        model_config=None if mesh_config is None else model_config, mesh_config=mesh_config)
    with open(os.path.join(workdir, runs.MEMORY_FILE), encoding="utf-8") as f:
      step_memory = json.load(f)["per_device"]
    return {"losses": [row["loss"] for row in rows], "step_memory": step_memory}

  results = {"single": train("single", None)}
  for strategy, shape in CASES:
    result = train(strategy, {"shape": shape, "strategy": strategy})
    mesh = parallel.make_mesh(shape)
    shardings = parallel.param_shardings(axes, mesh, parallel.logical_axis_rules(strategy),
                                         shapes=params)
    result["parameter_bytes"] = parallel.parameter_bytes(params, shardings)
    results[strategy] = result
  print(json.dumps(results))


if __name__ == "__main__":
  with tempfile.TemporaryDirectory() as tmp:
    main(sys.argv[1] if len(sys.argv) > 1 else tmp)
