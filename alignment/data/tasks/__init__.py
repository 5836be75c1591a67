"""Synthetic tasks with known rewards: `get_task(name, **options)`, `task_names()`.

Each task (`alignment.data.tasks.base.Task`) has prompts with disjoint train / held-out splits,
a graded multi-attribute true reward, a known optimum and mixed-quality demonstrations; see
docs/tasks.md.

>>> task = get_task("sorting")
>>> task.optimum("52817:")
'1258'
>>> round(task.reward("52817:", "1258"), 4)  # 2·4/(4 + 5) + 2·(1 − 0/5)
2.8889
"""

from __future__ import annotations

import dataclasses

from alignment.data.tasks.arithmetic import ArithmeticTask
from alignment.data.tasks.base import SPLITS, Task
from alignment.data.tasks.sorting import SortingTask

_TASKS: dict[str, type[Task]] = {t.name: t for t in (SortingTask, ArithmeticTask)}


def task_names() -> list[str]:
  """Sorted names of the built-in tasks."""
  return sorted(_TASKS)


def get_task(name: str, **options) -> Task:
  """The task `name` built with `options` (its dataclass fields, e.g. `max_digits=6`).

  Unknown names raise a KeyError listing the known ones; unknown options a TypeError naming
  the task's options.
  """
  if name not in _TASKS:
    raise KeyError(f"Unknown task {name!r}. Known tasks: {', '.join(task_names())}.")
  cls = _TASKS[name]
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(options) - known)
  if unknown:
    raise TypeError(f"Task {name!r} has no option(s) {unknown}; its options are {sorted(known)}.")
  return cls(**options)


__all__ = ["ArithmeticTask", "SPLITS", "SortingTask", "Task", "get_task", "task_names"]
