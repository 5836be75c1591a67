"""The outer training loop: resume, step, log, checkpoint, stop cleanly on non-finite values.

The loop is the same for SFT, preference training, reward models and RLHF; what differs is the
step function, the data iterator and the evaluation hook. The iterator must provide `next()`,
`get_state()` and `set_state(state)` (grain iterators do), so that a checkpoint records exactly
where the data stream stands. An iterator whose batches depend on the policy (RLHF rounds, online
preference data) also has `update_policy(params)`, called with the current parameters before
every `next()`, and may have `metrics()`: host floats about its latest batch, added to the
logged rows.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any, Callable, Optional

from alignment import parallel
from alignment.training.checkpoint import Checkpointer
from alignment.training.logs import MetricWriter, Progress
from alignment.training.step import TrainState


class NonFiniteError(FloatingPointError):
  """Raised (with `on_nonfinite="error"`) when a step produced a non-finite loss or gradient."""


def restore_or_init(
    checkpointer: Checkpointer, state: TrainState, iterator
) -> tuple[TrainState, bool]:
  """Restores the newest readable checkpoint into `state` and `iterator`, if there is one."""
  restored = checkpointer.restore_latest(state)
  if restored is None:
    return state, False
  step, state, data_state = restored
  if data_state:
    iterator.set_state(data_state)
  logging.info("Resumed from checkpoint step %d in %s", step, checkpointer.directory)
  print(f"Resuming from checkpoint step {step} ({checkpointer.directory})", flush=True)
  return state, True


def train(
    *,
    name: str,
    state: TrainState,
    step_fn: Callable[[TrainState, dict, Any], tuple[TrainState, dict]],
    frozen: Any,
    iterator,
    num_steps: int,
    checkpointer: Optional[Checkpointer],
    writer: MetricWriter,
    log_every: int = 10,
    on_nonfinite: str = "skip",
    kill_after_step: Optional[int] = None,
    to_device: Callable[[dict], dict] = lambda batch: batch,
    eval_fn: Optional[Callable[[Any, Any], dict]] = None,
    eval_every: int = 0,
) -> tuple[TrainState, list[dict]]:
  """Runs `step_fn` until `state.step == num_steps`; returns the final state and logged rows.

  Args:
    kill_after_step: testing hook: SIGKILL this process right after saving that step's
      checkpoint, to test that resuming from a hard kill is exact.
    to_device: turns a host batch into device arrays (e.g. `parallel.shard_batch`).
    eval_fn: `(params, frozen) -> {name: float}` (the arrays the step sees), written as
      `heldout/<name>` rows at step 0 (a fresh run), every `eval_every` steps (0: never in
      between) and after the last step.
    eval_every: steps between evaluations.
  """
  if eval_every < 0:
    raise ValueError(f"{name}: eval_every must be >= 0, got {eval_every}.")
  step = int(state.step)
  progress = Progress(name, num_steps, start=step)
  rows = []

  def evaluate(at: int) -> None:
    held = {f"heldout/{k}": float(v) for k, v in eval_fn(state.params, frozen).items()}
    writer.write(at, held)
    rows.append({"step": at, **held})

  if eval_fn is not None and step == 0:
    evaluate(0)
  update_policy = getattr(iterator, "update_policy", None)
  iterator_metrics = getattr(iterator, "metrics", None)
  while step < num_steps:
    if update_policy is not None:
      update_policy(state.params)
    batch = to_device(next(iterator))
    state, metrics = step_fn(state, batch, frozen)
    step += 1
    if on_nonfinite == "error" and not bool(metrics["finite"]):
      last = checkpointer.steps()[-1] if checkpointer and checkpointer.steps() else None
      raise NonFiniteError(
          f"{name}: non-finite loss or gradient at step {step} (loss={float(metrics['loss'])}); "
          f"the update was not applied. Last good checkpoint: step {last}."
      )
    if step % log_every == 0 or step == num_steps:
      # Metrics are computed on the global batch, so they are already reduced over all hosts.
      host = {k: float(v) for k, v in parallel.to_host(metrics).items()}
      host["nonfinite_skipped"] = float(parallel.to_host(state.nonfinite))
      if iterator_metrics is not None:
        host.update(iterator_metrics())
      writer.write(step, host)
      rows.append({"step": step, **host})
      progress.update(step, {"loss": host["loss"]}, force=step == num_steps)
    if checkpointer is not None and checkpointer.should_save(step, force=step == num_steps):
      # Collective on every host: the data state of all of them goes into the checkpoint.
      checkpointer.save(step, state, iterator.get_state(), force=True)
    if eval_fn is not None and ((eval_every and step % eval_every == 0) or step == num_steps):
      evaluate(step)
    if kill_after_step is not None and step == kill_after_step:
      os.kill(os.getpid(), signal.SIGKILL)
  return state, rows
