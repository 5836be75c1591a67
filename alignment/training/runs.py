"""Run builders shared by the recipes: datasets, states, step functions and the one train loop.

`alignment/recipes` composes these into whole runs; `train_run` is the loop every training run
goes through (sharding, memory report, multi-host checks, resume, logs, evaluation hooks).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional, Sequence

import grain
import jax
import numpy as np
from jax.experimental import multihost_utils

from alignment import parallel
from alignment.data import batching
from alignment.data import pipeline
from alignment.models import transformer
from alignment.training import loop, optim, reference, setup
from alignment.training.checkpoint import Checkpointer
from alignment.training.logs import MetricWriter
from alignment.training.step import init_train_state, make_train_step, train_state_sharding


@dataclasses.dataclass(frozen=True)
class Encoding:
  """How canonical records become token batches: the tokenizer, the static lengths of
  `batching.BatchConfig` (one compilation of the step), and the chat-template renderer of
  conversational records (`batching.Render`; None for text records)."""

  tokenizer: Any
  max_prompt_tokens: Optional[int]
  max_response_tokens: Optional[int]
  max_length: Optional[int] = None
  add_bos: bool = True
  render: Optional[batching.Render] = None

  def batch_config(self, list_size: int) -> batching.BatchConfig:
    return batching.BatchConfig(
        max_prompt_tokens=self.max_prompt_tokens, max_response_tokens=self.max_response_tokens,
        max_length=self.max_length, list_size=list_size, add_bos=self.add_bos)


def task_encoding(task) -> Encoding:
  """A synthetic task's records: BOS + its longest prompt, its longest response + EOS."""
  return Encoding(task.tokenizer, task.max_prompt_length + 1, task.max_response_length + 1)


def batches(records: Sequence[dict], encoding: Encoding, *, batch_size: int, list_size: int,
            seed: int, shuffle: bool = True):
  """An endless (shuffled) checkpointable iterator of batches over canonical records.

  `batch_size` is the global batch: each of the `P` processes reads its `batch_size / P` rows of
  every global batch (`parallel.process_rows`), so the global batches, and a run's trajectory,
  do not depend on the number of hosts. The iterator's state covers every host
  (`parallel.ProcessDataIterator`).
  """
  stream = grain.MapDataset.source(records)
  if shuffle:
    stream = stream.shuffle(seed=seed)
  dataset = pipeline.preference_dataset(
      parallel.process_rows(stream, batch_size), tokenizer=encoding.tokenizer,
      batch_size=parallel.local_batch_size(batch_size),
      config=encoding.batch_config(list_size), render=encoding.render,
      shuffle=False, process_index=0, process_count=1,
  )
  return parallel.ProcessDataIterator(iter(dataset), global_batch_size=batch_size)


def fixed_batches(records: Sequence[dict], encoding: Encoding, *, batch_size: int,
                  list_size: int):
  """All records once, in order, as numpy dicts; the last batch is padded by repeating its last
  record, with `where` False on the padding rows (they count in no metric)."""
  config = encoding.batch_config(list_size)
  examples = []
  for i, record in enumerate(records):
    example, _ = batching.tokenize_record(record, encoding.tokenizer, config,
                                          render=encoding.render)
    if example is None:
      raise ValueError(f"Record {i} was dropped by the length policy: {record['prompt']!r}.")
    examples.append(example)
  out = []
  for start in range(0, len(examples), batch_size):
    chunk = examples[start:start + batch_size]
    real = len(chunk)
    chunk = chunk + [chunk[-1]] * (batch_size - real)
    batch = batching.collate(chunk, config=config, pad_id=encoding.tokenizer.pad_id)
    batch["where"][real:] = False
    out.append(batch)
  return out


_SCORED_KEYS = ("tokens", "positions", "segment_ids", "completion_mask")


def attach_reference_logps(
    records: Sequence[dict], encoding: Encoding, logp_fn, ref_params, *, list_size: int,
    batch_size: int, cache_dir: str,
) -> list[dict]:
  """Copies of `records` with `ref_logps` from the disk cache (computed once per (params, data))."""
  fixed = fixed_batches(records, encoding, batch_size=batch_size, list_size=list_size)
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
    eval_fn=None,
    eval_every: int = 0,
):
  """Builds state and step, resumes from `workdir/checkpoints` if possible, trains, saves params.

  With `mesh_config` (`shape`: mesh axis sizes, `strategy`: "dp", "fsdp", "tp", "fsdp_tp", ...)
  and `model_config`, parameters, optimiser state, reference parameters and batches are placed on
  the mesh and the step is jitted with those explicit in/out shardings (the default mesh is all
  devices on the data axis). `logical_axes` gives the trainable tree's logical axes when it is
  not the decoder's parameter tree (e.g. LoRA adapters); frozen arrays are the decoder's.

  `eval_fn(params, frozen) -> {name: float}` is evaluated at step 0, every `eval_every` steps and at the
  end, and logged as `heldout/<name>` rows (`loop.train`).

  Returns `(state, logged_rows)`; `export_params(final params)` is written to
  `workdir/params.msgpack` (e.g. LoRA adapters merged into the base).
  """
  if jax.process_count() > 1:  # every host must start from the same seed (same PRNG streams)
    multihost_utils.assert_equal(np.int64(seed), f"{name}: the seed differs between processes")
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
    state = parallel.put_global(state, state_sharding)
    frozen_sharding = None
    if frozen is not None:
      frozen_sharding = parallel.param_shardings(model_axes, mesh, rules, shapes=frozen)
      frozen = parallel.put_global(frozen, frozen_sharding)
    shardings = dict(
        state_sharding=state_sharding, batch_sharding=parallel.batch_sharding(mesh),
        frozen_sharding=frozen_sharding,
    )
    to_device = lambda batch: parallel.shard_batch(batch, mesh)
  checkpointer = Checkpointer(
      os.path.join(workdir, "checkpoints"),
      save_interval_steps=checkpoint_every, max_to_keep=keep_checkpoints,
  )
  frozen = _unaliased(frozen, state)
  state, _ = loop.restore_or_init(checkpointer, state, iterator)
  step_fn = _compiled_on_first_call(
      make_train_step(
          loss_fn, optimizer, accum_steps=accum_steps, on_nonfinite=on_nonfinite, **shardings
      ),
      workdir,
  )
  writer = MetricWriter(workdir)
  try:
    state, rows = loop.train(
        name=name, state=state, step_fn=step_fn, frozen=frozen, iterator=iterator,
        num_steps=num_steps, checkpointer=checkpointer, writer=writer, log_every=log_every,
        on_nonfinite=on_nonfinite, kill_after_step=kill_after_step, to_device=to_device,
        eval_fn=eval_fn, eval_every=eval_every,
    )
  finally:
    writer.close()
    checkpointer.close()
  final_params = parallel.to_host(export_params(state.params))  # collective with several hosts
  if parallel.is_coordinator():
    setup.save_params(final_params, workdir)
  return state, rows


def _unaliased(frozen: Any, state) -> Any:
  """`frozen`, copied when it shares arrays with `state`: the step donates the state's buffers
  (its parameters are updated in place), so a frozen reference given as the very arrays of the
  initial parameters (e.g. a checkpoint already on device) would be overwritten."""
  if _buffers(frozen) & _buffers(state):
    return jax.tree.map(lambda x: x.copy(), frozen)
  return frozen


def _buffers(tree: Any) -> set[int]:
  """Addresses of the device buffers of the jax arrays of `tree` (this process's shards)."""
  return {shard.data.unsafe_buffer_pointer() for x in jax.tree.leaves(tree)
          if isinstance(x, jax.Array) for shard in x.addressable_shards}


MEMORY_FILE = "memory.json"


def _compiled_on_first_call(step_fn, workdir: str):
  """`step_fn`, compiled ahead of time on its first call; writes XLA's per-device memory figures
  of the step (`parallel.memory_report`) to `workdir/memory.json` (process 0) and prints them."""
  compiled = []

  def step(state, batch, frozen):
    if not compiled:
      compiled.append(step_fn.lower(state, batch, frozen).compile())
      report = parallel.memory_report(compiled[0])
      if parallel.is_coordinator():
        with open(os.path.join(workdir, MEMORY_FILE), "w", encoding="utf-8") as f:
          json.dump({"devices": jax.device_count(), "processes": jax.process_count(),
                     "per_device": report}, f, indent=2)
        print("Train step, per device: " + ", ".join(
            f"{k} {v / 2**20:.2f} MiB" for k, v in report.items()), flush=True)
    return compiled[0](state, batch, frozen)

  return step


def init_model(model_config, seed: int):
  """Fresh decoder parameters (also the template that `setup.load_params` fills)."""
  return transformer.init_params(model_config, jax.random.key(seed))
