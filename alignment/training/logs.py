"""Metric writers (TensorBoard event files + JSONL) and a progress line with rate and ETA.

Only process 0 writes; every other process gets writers that do nothing, so binaries can call
them unconditionally on every host.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Mapping, Optional, TextIO

import jax
import numpy as np


def _scalar(value) -> float:
  return float(np.asarray(value))


class MetricWriter:
  """Writes scalar metrics to `workdir/metrics.jsonl` and TensorBoard events in `workdir/tb`."""

  def __init__(self, workdir: str, *, prefix: str = "", tensorboard: bool = True):
    self._enabled = jax.process_index() == 0
    self._prefix = prefix
    self._jsonl = None
    self._tb = None
    if not self._enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel

      self._tb = SummaryWriter(os.path.join(workdir, "tb"))

  def write(self, step: int, metrics: Mapping[str, object]) -> None:
    """Writes one row; values are converted to Python floats (non-finite kept as strings)."""
    if not self._enabled:
      return
    row = {"step": int(step)}
    for name, value in metrics.items():
      v = _scalar(value)
      key = self._prefix + name
      row[key] = v if math.isfinite(v) else str(v)
      if self._tb is not None:
        self._tb.add_scalar(key, v, int(step))
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
  """Reads back the rows of `workdir/metrics.jsonl`."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def _format_seconds(seconds: float) -> str:
  seconds = max(int(round(seconds)), 0)
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
  """Prints `name step/total | rate | ETA | metrics` at most every `every_seconds` seconds."""

  def __init__(
      self,
      name: str,
      total: int,
      *,
      start: int = 0,
      every_seconds: float = 5.0,
      unit: str = "steps",
      stream: Optional[TextIO] = None,
  ):
    self.name, self.total, self.unit = name, int(total), unit
    self._start_step, self._start_time = int(start), time.perf_counter()
    self._last_print = -math.inf
    self._every = every_seconds
    self._stream = stream or sys.stdout
    self._enabled = jax.process_index() == 0

  def update(self, step: int, metrics: Optional[Mapping[str, object]] = None, *, force=False):
    if not self._enabled:
      return
    now = time.perf_counter()
    if not force and now - self._last_print < self._every and step < self.total:
      return
    self._last_print = now
    done = step - self._start_step
    rate = done / max(now - self._start_time, 1e-9)
    eta = (self.total - step) / rate if rate > 0 else float("inf")
    parts = [
        f"[{self.name}] {step}/{self.total}",
        f"{rate:.2f} {self.unit}/s",
        f"ETA {_format_seconds(eta) if math.isfinite(eta) else '?'}",
    ]
    for key, value in (metrics or {}).items():
      parts.append(f"{key} {_scalar(value):.4g}")
    print(" | ".join(parts), file=self._stream, flush=True)
