"""Glue shared by the experiment binaries: model config, log-prob functions, parameter files.

Kept in the library (not in `experiments/`) so that notebooks and tests build runs the same way.
"""

from __future__ import annotations

import os
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp

from alignment.models import config as model_config_lib
from alignment.models import logprobs as logprobs_lib

PARAMS_FILE = "params.msgpack"


def model_config(cfg, vocab_size: int) -> model_config_lib.ModelConfig:
  """`ModelConfig` from a config section: `preset` plus any `ModelConfig` field overrides."""
  fields = {f for f in model_config_lib.ModelConfig.__dataclass_fields__}
  overrides = {k: v for k, v in cfg.items() if k in fields}
  unknown = sorted(set(cfg.keys()) - fields - {"preset", "logprob_chunk"})
  if unknown:
    raise ValueError(f"config.model has unknown fields {unknown}; known: {sorted(fields)}.")
  if "dtype" in overrides:
    overrides["dtype"] = jnp.dtype(overrides["dtype"])
  overrides["vocab_size"] = vocab_size
  return model_config_lib.get_config(cfg.preset, **overrides)


def logp_fn(config: model_config_lib.ModelConfig, *, chunk_size: int):
  """`(params, batch) -> (logps [B, K], counts [B, K])` over the batch layout of interfaces §2."""

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
