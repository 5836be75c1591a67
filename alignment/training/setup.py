"""Glue shared by the recipes: the batch log-prob function and parameter files."""

from __future__ import annotations

import os
from typing import Any

import flax.serialization
import jax

from alignment.models import config as model_config_lib
from alignment.models import logprobs as logprobs_lib

PARAMS_FILE = "params.msgpack"


def logp_fn(config: model_config_lib.ModelConfig, *, chunk_size: int):
  """`(params, batch) -> (logps [B, K], counts [B, K])` (batch: docs/interfaces.md#batches)."""

  def fn(params, batch):
    return logprobs_lib.sequence_logps(
        config,
        params,
        batch["tokens"],
        batch["positions"],
        batch["segment_ids"],
        batch["completion_mask"],
        chunk_size=chunk_size,
    )

  return fn


def save_params(params: Any, workdir: str) -> str:
  """Writes `workdir/params.msgpack` atomically; returns its path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, PARAMS_FILE)
  with open(path + ".tmp", "wb") as f:
    f.write(flax.serialization.to_bytes(jax.device_get(params)))
  os.replace(path + ".tmp", path)
  return path


def load_params(template: Any, workdir_or_path: str) -> Any:
  """Reads parameters saved by `save_params` into the structure of `template`."""
  path = workdir_or_path
  if os.path.isdir(path):
    path = os.path.join(path, PARAMS_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"No parameter file at {path} (expected one written by save_params).")
  with open(path, "rb") as f:
    return flax.serialization.from_bytes(template, f.read())
