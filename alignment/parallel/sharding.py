"""Partition rules: logical axis names -> mesh axes, and placing parameters and batches.

Parameters and activations are annotated with logical axes (`batch`, `length`, `embed`, `mlp`,
`heads`, `kv`, `vocab`; see `alignment.models.logical_axes`). A strategy string picks the rules:

| strategy part | effect                                                                 |
|---------------|------------------------------------------------------------------------|
| `dp`          | data parallelism: parameters replicated                                |
| `fsdp`        | fully sharded data parallelism: the `embed` axis of every parameter     |
|               | is split over the `fsdp` mesh axis (gathered per layer by XLA)          |
| `tp`          | tensor (Megatron) parallelism: `heads`, `kv`, `mlp`, `vocab` over `tensor` |

Parts combine with `_` or `+` (`"fsdp_tp"`, `"dp+fsdp+tp"`). Whatever the strategy, the batch axis
is split over `("data", "fsdp")` (FSDP is data parallel in its activations) and `length` is not
split, so every mesh axis of size > 1 does useful work.

How a logical spec becomes a `PartitionSpec` (`spec_for`), dimension by dimension:
1. the dimension's logical name is looked up in the rules (`None` = not annotated = replicated);
2. mesh axes of size 1 and mesh axes already used by an earlier dimension are dropped (a mesh
   axis can split only one dimension of an array);
3. **divisibility fallback**: the longest prefix of the remaining mesh axes whose size product
   divides the dimension is kept; if even the first does not divide it, the dimension is
   replicated. E.g. `vocab = 50` over `tensor = 4` is replicated; `batch = 2` over
   `("data", "fsdp") = (2, 2)` is split over `data` only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MeshAxes = str | tuple[str, ...] | None
Rules = tuple[tuple[str, MeshAxes], ...]

LOGICAL_AXES = ("batch", "length", "embed", "mlp", "heads", "kv", "vocab")
STRATEGY_PARTS = ("dp", "fsdp", "tp")
BATCH_MESH_AXES = ("data", "fsdp")


def logical_axis_rules(strategy: str = "fsdp") -> Rules:
  """The rules table of a strategy, as `((logical_axis, mesh_axes), ...)`.

  The format is Flax's (`flax.linen.logical_axis_rules(rules)` accepts it), so the same table
  drives activation constraints inside a model.

  Args:
    strategy: parts from `("dp", "fsdp", "tp")` joined by `_` or `+`, e.g. `"fsdp_tp"`.

  Raises:
    ValueError: an empty strategy or an unknown part (the message lists the known ones).
  """
  parts = strategy.replace("+", "_").split("_") if isinstance(strategy, str) else []
  if not parts or set(parts) - set(STRATEGY_PARTS):
    raise ValueError(f"Unknown sharding strategy {strategy!r}: parts must come from "
                     f"{STRATEGY_PARTS}, joined by '_' or '+' (e.g. 'fsdp_tp').")
  tensor = "tensor" if "tp" in parts else None
  return (
      ("batch", BATCH_MESH_AXES),
      ("length", None),
      ("embed", "fsdp" if "fsdp" in parts else None),
      ("mlp", tensor),
      ("heads", tensor),
      ("kv", tensor),
      ("vocab", tensor),
  )


def spec_for(logical: Sequence[str | None], shape: Sequence[int] | None, mesh: Mesh,
             rules: Rules) -> PartitionSpec:
  """`PartitionSpec` of one array from its logical axes (see the module docstring for the rule).

  Args:
    logical: one logical axis name (or None) per dimension.
    shape: the array's shape, for the divisibility fallback; None skips that check.
    mesh: the mesh.
    rules: a rules table (`logical_axis_rules`).

  Raises:
    ValueError: a logical name missing from the rules, a rule naming an axis the mesh lacks, or
      `logical` and `shape` of different lengths.
  """
  table = dict(rules)
  if shape is not None and len(shape) != len(logical):
    raise ValueError(f"Logical axes {tuple(logical)} do not match shape {tuple(shape)}.")
  used: set[str] = set()
  spec = []
  for dim, name in enumerate(logical):
    if name is None:
      spec.append(None)
      continue
    if name not in table:
      raise ValueError(f"Logical axis {name!r} (in {tuple(logical)}) has no rule; rules cover "
                       f"{sorted(table)}.")
    axes = table[name]
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    if set(axes) - set(mesh.shape):
      raise ValueError(f"Rule {name!r} -> {axes} names mesh axes not in the mesh "
                       f"{tuple(mesh.shape)}.")
    axes = [a for a in axes if mesh.shape[a] > 1 and a not in used]
    if shape is not None:
      while axes and shape[dim] % math.prod(mesh.shape[a] for a in axes):
        axes.pop()
    used.update(axes)
    spec.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
  return PartitionSpec(*spec)


def _is_axes(x: Any) -> bool:
  return isinstance(x, tuple) and all(a is None or isinstance(a, str) for a in x)


def param_shardings(logical_axes_tree: Any, mesh: Mesh, rules: Rules, *,
                    shapes: Any = None) -> Any:
  """A tree of `NamedSharding`s from a tree of logical-axis tuples.

  Args:
    logical_axes_tree: e.g. `alignment.models.logical_axes(config)`.
    mesh: the mesh (`make_mesh`).
    rules: a rules table (`logical_axis_rules`).
    shapes: optional tree of the same structure whose leaves have `.shape` (arrays or
      `jax.ShapeDtypeStruct`s, e.g. from `jax.eval_shape(init_params, ...)`); enables the
      divisibility fallback. Without it every rule is applied as is.
  """
  if shapes is None:
    return jax.tree.map(lambda ax: NamedSharding(mesh, spec_for(ax, None, mesh, rules)),
                        logical_axes_tree, is_leaf=_is_axes)
  return jax.tree.map(lambda ax, x: NamedSharding(mesh, spec_for(ax, x.shape, mesh, rules)),
                      logical_axes_tree, shapes, is_leaf=_is_axes)


def shard_params(params: Any, logical_axes_tree: Any, mesh: Mesh, rules: Rules) -> Any:
  """`params` placed on `mesh` by `param_shardings` (with the divisibility fallback)."""
  return jax.device_put(params, param_shardings(logical_axes_tree, mesh, rules, shapes=params))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `("data", "fsdp")`; other axes replicated."""
  return NamedSharding(mesh, PartitionSpec(BATCH_MESH_AXES))


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Places a host-local batch (a pytree of arrays) on `mesh`, leading axis over data x fsdp.

  Each process passes its own slice of the global batch (on one host: the whole batch); the
  global leading dimension is the local one times `jax.process_count()`. Scalars are replicated.
  Unlike parameters, a batch that does not divide is an error, not a silent replication.

  Raises:
    ValueError: a global leading dimension not divisible by `data * fsdp` (names the key).
  """
  shards = math.prod(mesh.shape[a] for a in BATCH_MESH_AXES)
  sharded, replicated = batch_sharding(mesh), NamedSharding(mesh, PartitionSpec())

  def place(path, x):
    x = np.asarray(x)
    if x.ndim == 0:
      return jax.make_array_from_process_local_data(replicated, x)
    size = x.shape[0] * jax.process_count()
    if size % shards:
      raise ValueError(f"shard_batch: {jax.tree_util.keystr(path)} has global leading dimension "
                       f"{size} (shape {x.shape} per process), not divisible by data x fsdp = "
                       f"{shards}.")
    return jax.make_array_from_process_local_data(sharded, x)

  return jax.tree_util.tree_map_with_path(place, batch)
