"""Run builders shared by the binaries: datasets, states, step functions and the train loop.

`experiments/*.py` only parse flags and call these; notebooks and tests call them too.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import jax
import numpy as np

from alignment import parallel
from alignment.data import batching
from alignment.data import pipeline
from alignment.data import tasks as tasks_lib
from alignment.models import transformer
from alignment.training import loop, optim, reference, setup
from alignment.training.checkpoint import Checkpointer
from alignment.training.logs import MetricWriter
from alignment.training.step import init_train_state, make_train_step, train_state_sharding


def task_and_model(config):
  """The task of `config.task` and the `ModelConfig` of `config.model` sized to its tokenizer."""
  options = {k: v for k, v in config.task.items() if k != "name"}
  task = tasks_lib.get_task(config.task.name, **options)
  return task, setup.model_config(config.model, task.tokenizer.vocab_size)


def batch_config(task, list_size: int) -> batching.BatchConfig:
  """Static shapes for the task: BOS + longest prompt, longest response + EOS, K slots."""
  return batching.BatchConfig(
      max_prompt_tokens=task.max_prompt_length + 1,
      max_response_tokens=task.max_response_length + 1,
      list_size=list_size,
  )


def batches(records: Sequence[dict], task, *, batch_size: int, list_size: int, seed: int,
            shuffle: bool = True):
  """An endless (shuffled) checkpointable iterator of batches over canonical records."""
  dataset = pipeline.preference_dataset(
      records, tokenizer=task.tokenizer, batch_size=batch_size,
      config=batch_config(task, list_size), seed=seed, shuffle=shuffle,
  )
  return iter(dataset)


def fixed_batches(records: Sequence[dict], task, *, batch_size: int, list_size: int):
  """All records once, in order (the last batch padded by repeating records), as numpy dicts."""
  config = batch_config(task, list_size)
  examples = []
  for i, record in enumerate(records):
    example, _ = batching.tokenize_record(record, task.tokenizer, config)
    if example is None:
      raise ValueError(f"Record {i} was dropped by the length policy: {record['prompt']!r}.")
    examples.append(example)
  out = []
  for start in range(0, len(examples), batch_size):
    chunk = examples[start:start + batch_size]
    chunk = chunk + [chunk[-1]] * (batch_size - len(chunk))
    out.append(batching.collate(chunk, config=config, pad_id=task.tokenizer.pad_id))
  return out


_SCORED_KEYS = ("tokens", "positions", "segment_ids", "completion_mask")


def attach_reference_logps(
    records: Sequence[dict], task, logp_fn, ref_params, *, list_size: int, batch_size: int,
    cache_dir: str,
) -> list[dict]:
  """Copies of `records` with `ref_logps` from the disk cache (computed once per (params, data))."""
  fixed = fixed_batches(records, task, batch_size=batch_size, list_size=list_size)
  n = len(records)
  data = {k: np.concatenate([b[k] for b in fixed])[:n] for k in _SCORED_KEYS}
  logps = reference.cached_reference_logps(
      cache_dir, logp_fn, ref_params, data, batch_size=batch_size
  )
  return [
      {**r, "ref_logps": [float(x) for x in logps[i, : len(r["responses"])]]}
      for i, r in enumerate(records)
  ]


def train_run(
    *,
    name: str,
    workdir: str,
    loss_fn,
    params: Any,
    optimizer_config,
    iterator,
    num_steps: int,
    seed: int,
    frozen: Any = None,
    loss_state: Any = (),
    accum_steps: int = 1,
    on_nonfinite: str = "skip",
    log_every: int = 10,
    checkpoint_every: int = 100,
    keep_checkpoints: int = 2,
    kill_after_step: Optional[int] = None,
    model_config=None,
    mesh_config=None,
    logical_axes: Any = None,
    export_params=lambda params: params,
):
  """Builds state and step, resumes from `workdir/checkpoints` if possible, trains, saves params.

  With `mesh_config` (`shape`: mesh axis sizes, `strategy`: "dp", "fsdp", "tp", "fsdp_tp", ...)
  and `model_config`, parameters, optimiser state, reference parameters and batches are placed on
  the mesh and the step is jitted with those explicit in/out shardings (the default mesh is all
  devices on the data axis). `logical_axes` gives the trainable tree's logical axes when it is
  not the decoder's parameter tree (e.g. LoRA adapters); frozen arrays are the decoder's.

  Returns `(state, logged_rows)`; `export_params(final params)` is written to
  `workdir/params.msgpack` (e.g. LoRA adapters merged into the base).
  """
  optimizer = optim.make_optimizer(optimizer_config)
  state = init_train_state(params, optimizer, jax.random.key(seed), loss_state)
  shardings, to_device = {}, lambda batch: batch
  if model_config is not None:
    mesh_config = mesh_config or {"shape": {"data": -1}, "strategy": "dp"}
    mesh = parallel.make_mesh(dict(mesh_config["shape"]))
    rules = parallel.logical_axis_rules(mesh_config["strategy"])
    model_axes = transformer.logical_axes(model_config)
    params_sharding = parallel.param_shardings(
        logical_axes or model_axes, mesh, rules, shapes=params
    )
    state_sharding = train_state_sharding(state, params_sharding, optimizer, mesh)
    state = jax.device_put(state, state_sharding)
    frozen_sharding = None
    if frozen is not None:
      frozen_sharding = parallel.param_shardings(model_axes, mesh, rules, shapes=frozen)
      frozen = jax.device_put(frozen, frozen_sharding)
    shardings = dict(
        state_sharding=state_sharding, batch_sharding=parallel.batch_sharding(mesh),
        frozen_sharding=frozen_sharding,
    )
    to_device = lambda batch: parallel.shard_batch(batch, mesh)
  checkpointer = Checkpointer(
      os.path.join(workdir, "checkpoints"),
      save_interval_steps=checkpoint_every, max_to_keep=keep_checkpoints,
  )
  state, _ = loop.restore_or_init(checkpointer, state, iterator)
  step_fn = make_train_step(
      loss_fn, optimizer, accum_steps=accum_steps, on_nonfinite=on_nonfinite, **shardings
  )
  writer = MetricWriter(workdir)
  try:
    state, rows = loop.train(
        name=name, state=state, step_fn=step_fn, frozen=frozen, iterator=iterator,
        num_steps=num_steps, checkpointer=checkpointer, writer=writer, log_every=log_every,
        on_nonfinite=on_nonfinite, kill_after_step=kill_after_step, to_device=to_device,
    )
  finally:
    writer.close()
    checkpointer.close()
  setup.save_params(export_params(state.params), workdir)
  return state, rows


def init_model(model_config, seed: int):
  """Fresh decoder parameters (also the template that `setup.load_params` fills)."""
  return transformer.init_params(model_config, jax.random.key(seed))
