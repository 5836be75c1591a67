"""Low-rank adapters (LoRA) over the decoder's parameter tree, purely functionally.

*LoRA: Low-Rank Adaptation of Large Language Models* (Hu et al., 2021): a frozen kernel
`W [in, out]` is used as `W + (alpha / rank) · A @ B` with trainable `A [in, rank]` (random) and
`B [rank, out]` (zero, so the adapted model starts as the base model). Only `A` and `B` are
trained; the base parameters are never copied: `merge(params, adapters)` builds the effective
parameters inside the step, and `merge(params, adapters, enabled=False)` is the base model itself,
which makes a frozen LoRA policy its own reference model.

```python
adapters = lora.init_lora(params, key, rank=8, alpha=16.0)
def loss(adapters):
  logps, _ = sequence_logps(config, lora.merge(params, adapters), ...)
  ...
grads = jax.grad(loss)(adapters)   # base params are closed over: frozen
```
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

Array = jax.Array
Params = dict[str, Any]

# All linear projections of a decoder layer (QLoRA, Dettmers et al., 2023, found adapting all of
# them is needed to match full fine-tuning); the embedding and LM head are never adapted.
DEFAULT_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")


@flax.struct.dataclass
class LoraAdapters:
  """Trainable factors and the static scale `alpha / rank`.

  Attributes:
    weights: nested dict mirroring the parameter tree down to each adapted layer, with
      `{"a": [in, rank], "b": [rank, out]}` in place of `{"kernel": [in, out]}`, e.g.
      `weights["layers_0"]["attn"]["q"]["a"]`.
    scale: `alpha / rank` (static: not a leaf, receives no gradient).
  """

  weights: Params
  scale: float = flax.struct.field(pytree_node=False)


def _adapted_paths(params: Params, targets: Sequence[str]) -> list[tuple[str, ...]]:
  """Paths (excluding the trailing "kernel") of every `.../<target>/kernel` leaf."""
  paths = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    keys = tuple(k.key for k in path)
    if len(keys) >= 2 and keys[-1] == "kernel" and keys[-2] in targets:
      if jnp.ndim(leaf) != 2:
        raise ValueError(f"LoRA target {'/'.join(keys)} is not a 2-D kernel: shape "
                         f"{jnp.shape(leaf)}.")
      paths.append(keys[:-1])
  return paths


def _get(tree: Params, path: Sequence[str]) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def _set(tree: Params, path: Sequence[str], value: Any) -> Params:
  """A copy of the dicts along `path` (created if missing) with the leaf set; the rest is shared."""
  if not path:
    return value
  return {**tree, path[0]: _set(tree.get(path[0], {}), path[1:], value)}


def init_lora(params: Params, key: Array, *, rank: int = 8, alpha: float = 8.0,
              targets: Sequence[str] = DEFAULT_TARGETS, dtype: Any = jnp.float32
              ) -> LoraAdapters:
  """Adapters for every `<target>/kernel` of `params`.

  `A ~ N(0, 1/in)` (so `x @ A` keeps the scale of `x`), `B = 0`; hence
  `merge(params, init_lora(params, ...)) == params`. Defaults follow the LoRA paper (rank 8,
  alpha = rank, i.e. scale 1).

  Args:
    params: the decoder parameters (`alignment.models.transformer.init_params` layout).
    key: PRNG key for the `A` factors.
    rank: r, the adapter rank.
    alpha: the scale numerator; the update is `(alpha / rank) · A @ B`.
    targets: names of the adapted layers, from `DEFAULT_TARGETS`.
    dtype: dtype of the trainable factors.

  Raises:
    ValueError: a non-positive rank, or targets that match no kernel (the message lists the
      adaptable names present).
  """
  if not isinstance(rank, int) or rank < 1:
    raise ValueError(f"init_lora: rank must be a positive int, got {rank!r}.")
  paths = _adapted_paths(params, tuple(targets))
  found = {p[-1] for p in paths}
  missing = sorted(set(targets) - found)
  if missing or not paths:
    present = sorted({p[-1] for p in _adapted_paths(params, DEFAULT_TARGETS)})
    raise ValueError(f"init_lora: targets {missing or list(targets)} match no 2-D kernel; "
                     f"adaptable layers present: {present}.")
  weights: Params = {}
  for path, path_key in zip(paths, jax.random.split(key, len(paths))):
    fan_in, fan_out = _get(params, path)["kernel"].shape
    a = jax.random.normal(path_key, (fan_in, rank), dtype) / jnp.sqrt(fan_in).astype(dtype)
    weights = _set(weights, path, {"a": a, "b": jnp.zeros((rank, fan_out), dtype)})
  return LoraAdapters(weights=weights, scale=float(alpha) / rank)


def _adapter_paths(adapters: LoraAdapters) -> list[tuple[str, ...]]:
  leaves = jax.tree_util.tree_flatten_with_path(adapters.weights)[0]
  return [tuple(k.key for k in path)[:-1] for path, _ in leaves if path[-1].key == "a"]


def merge(params: Params, adapters: LoraAdapters, *, enabled: bool = True) -> Params:
  """Effective parameters: `W + scale · A @ B` on adapted kernels, in the kernel's dtype.

  With `enabled=False` this returns `params` itself (the base model; no copy is made), which is
  the reference model of a LoRA policy. Only the adapted kernels are new arrays (inside a jitted
  step XLA materialises them transiently, layer by layer as they are used); every other leaf is
  the same object as in `params`.

  Raises:
    ValueError: an adapter whose path or shapes do not match `params`.
  """
  if not enabled:
    return params
  merged = params
  for path in _adapter_paths(adapters):
    try:
      kernel = _get(params, path)["kernel"]
    except (KeyError, TypeError):
      raise ValueError(f"merge: adapter {'/'.join(path)} has no kernel in params.") from None
    factors = _get(adapters.weights, path)
    a, b = factors["a"], factors["b"]
    if a.shape[0] != kernel.shape[0] or b.shape[1] != kernel.shape[1] or a.shape[1] != b.shape[0]:
      raise ValueError(f"merge: adapter {'/'.join(path)} has A {a.shape}, B {b.shape}, but the "
                       f"kernel is {kernel.shape}.")
    delta = adapters.scale * jnp.dot(a, b, preferred_element_type=jnp.float32)
    merged = _set(merged, path + ("kernel",), (kernel + delta).astype(kernel.dtype))
  return merged


def logical_axes(adapters: LoraAdapters, base_axes: Params) -> LoraAdapters:
  """Logical axis names of the adapters from those of the base kernels.

  `A [in, rank]` gets `(in_axis, None)` and `B [rank, out]` gets `(None, out_axis)`, so adapters
  are sharded like their kernels (`alignment.parallel.param_shardings` accepts the result).
  """
  weights: Params = {}
  for path in _adapter_paths(adapters):
    in_axis, out_axis = _get(base_axes, path)["kernel"]
    weights = _set(weights, path, {"a": (in_axis, None), "b": (None, out_axis)})
  return LoraAdapters(weights=weights, scale=adapters.scale)
