"""Reference log-probs computed once per dataset and cached on disk.

The cache key is a SHA-256 over the reference parameters (shapes, dtypes and bytes) and the
tokenised dataset arrays, so a changed reference or changed data can never reuse a stale cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any, Callable, Mapping

import jax
import numpy as np

from alignment.training.logs import Progress


def _update_with_tree(digest, tree) -> None:
  leaves, treedef = jax.tree.flatten(tree)
  digest.update(str(treedef).encode())
  for leaf in leaves:
    array = np.asarray(leaf)
    digest.update(f"{array.shape}{array.dtype}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())


def cache_key(ref_params: Any, data: Mapping[str, np.ndarray]) -> str:
  """Hex digest identifying (reference parameters, dataset)."""
  digest = hashlib.sha256()
  _update_with_tree(digest, ref_params)
  _update_with_tree(digest, {k: data[k] for k in sorted(data)})
  return digest.hexdigest()[:32]


def compute_reference_logps(
    logp_fn: Callable[[Any, dict], tuple[jax.Array, jax.Array]],
    ref_params: Any,
    data: Mapping[str, np.ndarray],
    *,
    batch_size: int,
) -> np.ndarray:
  """Reference log-probs `[N, K]` for a dataset of `N` examples, in dataset order.

  The last partial batch is padded by repeating its final row and trimmed afterwards, so a single
  compiled shape serves the whole pass.
  """
  n = len(next(iter(data.values())))
  jitted = jax.jit(logp_fn)
  out = []
  progress = Progress("reference log-probs", n, unit="examples")
  for start in range(0, n, batch_size):
    idx = np.minimum(np.arange(start, start + batch_size), n - 1)
    batch = {k: v[idx] for k, v in data.items()}
    logps, _ = jitted(ref_params, batch)
    out.append(np.asarray(logps)[: min(batch_size, n - start)])
    progress.update(min(start + batch_size, n))
  return np.concatenate(out, axis=0)


def cached_reference_logps(
    cache_dir: str,
    logp_fn: Callable[[Any, dict], tuple[jax.Array, jax.Array]],
    ref_params: Any,
    data: Mapping[str, np.ndarray],
    *,
    batch_size: int,
) -> np.ndarray:
  """`compute_reference_logps`, read from `cache_dir/ref_logps-<key>.npy` when present."""
  os.makedirs(cache_dir, exist_ok=True)
  path = os.path.join(cache_dir, f"ref_logps-{cache_key(ref_params, data)}.npy")
  if os.path.exists(path):
    logging.info("Reference log-probs read from cache %s", path)
    return np.load(path)
  logps = compute_reference_logps(logp_fn, ref_params, data, batch_size=batch_size)
  tmp = path + ".tmp.npy"
  np.save(tmp, logps)
  os.replace(tmp, path)
  return logps
