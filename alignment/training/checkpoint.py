"""Orbax checkpoints of the whole training state plus the data iterator state.

A checkpoint holds the train state pytree (parameters, optimiser state, step, PRNG key, objective
state, counters) and a JSON item with the data iterator state, so that a restarted run resumes
exactly where it stopped. Orbax writes every step to a temporary directory and renames it when the
step is complete; a step directory that was never finalised (a hard kill during the write) or
that cannot be read is reported and skipped, and the newest readable step is used instead.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

_STATE = "state"
_DATA = "data"


class Checkpointer:
  """Saves and restores `(train_state, data_state)` under `workdir/checkpoints`.

  Args:
    directory: checkpoint root (created if missing).
    save_interval_steps: save when `step % save_interval_steps == 0` (or `force=True`).
    max_to_keep: keep the newest N complete checkpoints.
  """

  def __init__(self, directory: str, *, save_interval_steps: int = 100, max_to_keep: int = 3):
    if save_interval_steps < 1:
      raise ValueError(f"checkpoint.save_interval_steps must be >= 1, got {save_interval_steps}.")
    if max_to_keep < 1:
      raise ValueError(f"checkpoint.max_to_keep must be >= 1, got {max_to_keep}.")
    self.directory = os.path.abspath(directory)
    self._interval = save_interval_steps
    os.makedirs(self.directory, exist_ok=True)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
        ),
        item_names=(_STATE, _DATA),
    )

  def incomplete_steps(self) -> list[str]:
    """Names of step directories that were started but never finalised."""
    return sorted(
        name for name in os.listdir(self.directory) if ".orbax-checkpoint-tmp" in name
    )

  def steps(self) -> list[int]:
    """Completed checkpoint steps, oldest first."""
    return sorted(self._manager.all_steps())

  def should_save(self, step: int, *, force: bool = False) -> bool:
    """Whether `save(step, ..., force=force)` would write a checkpoint."""
    if not force and int(step) % self._interval:
      return False
    return int(step) not in self._manager.all_steps()

  def save(self, step: int, state: Any, data_state: Optional[dict] = None, *, force=False) -> bool:
    """Saves if the interval says so (or `force`); returns whether a checkpoint was written.

    With several processes every one of them must call this (Orbax writes collectively: each
    host its shards of the arrays, process 0 the metadata and `data_state`).
    """
    if not self.should_save(step, force=force):
      return False
    saved = self._manager.save(
        int(step),
        args=ocp.args.Composite(
            **{
                _STATE: ocp.args.StandardSave(state),
                _DATA: ocp.args.JsonSave(data_state or {}),
            }
        ),
        force=True,
    )
    self._manager.wait_until_finished()
    return bool(saved)

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """Restores checkpoint `step` as `(state, data_state)`.

    `abstract_state` is a pytree of `jax.ShapeDtypeStruct` (with shardings) or arrays giving the
    structure to restore into. A step that was never saved raises a FileNotFoundError listing
    the saved ones.
    """
    if int(step) not in self._manager.all_steps():
      raise FileNotFoundError(f"No checkpoint of step {step} in {self.directory} (saved steps: "
                              f"{self.steps()}).")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    restored = self._manager.restore(
        int(step),
        args=ocp.args.Composite(
            **{_STATE: ocp.args.StandardRestore(abstract), _DATA: ocp.args.JsonRestore()}
        ),
    )
    return restored[_STATE], dict(restored[_DATA] or {})

  def restore_latest(self, abstract_state: Any) -> Optional[tuple[int, Any, dict]]:
    """Restores the newest readable checkpoint as `(step, state, data_state)`, or None.

    Incomplete and unreadable steps are logged and skipped (`abstract_state` as in `restore`).
    """
    for name in self.incomplete_steps():
      logging.warning(
          "Ignoring incomplete checkpoint %s in %s (the run stopped while writing it).",
          name, self.directory,
      )
    for step in reversed(self.steps()):
      try:
        state, data_state = self.restore(step, abstract_state)
      except Exception as error:  # pylint: disable=broad-except
        logging.warning(
            "Checkpoint step %d in %s could not be read (%s: %s); trying the previous one.",
            step, self.directory, type(error).__name__, error,
        )
        continue
      return step, state, data_state
    return None

  def close(self) -> None:
    self._manager.close()
