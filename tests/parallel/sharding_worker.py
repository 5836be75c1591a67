"""Subprocess body of tests/parallel/test_sharding.py: runs on 8 simulated CPU devices.

XLA_FLAGS=--xla_force_host_platform_device_count=8 must be set by the caller before this process
imports jax. Prints one JSON object: per strategy, the largest deviation from the single-device
results and the partition specs that were actually used.
"""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from alignment import parallel
from alignment.models import config as config_lib
from alignment.models import logprobs
from alignment.models import lora
from alignment.models import transformer

# (strategy, mesh shape). Tiny model: V = 32, D = 64, H·hd = 64, G·hd = 32, F = 128, H = 4.
CASES = (
    ("dp", {"data": 8}),
    ("fsdp", {"fsdp": 8}),
    ("tp", {"data": 2, "tensor": 4}),
    ("fsdp_tp", {"data": 2, "fsdp": 2, "tensor": 2}),
    ("dp+fsdp", {"data": 2, "fsdp": 4}),
)


def _batch():
  rng = np.random.default_rng(0)
  b, k, t = 8, 2, 12
  lengths = rng.integers(6, t + 1, size=(b, k))
  segment_ids = (np.arange(t) < lengths[..., None]).astype(np.int32)
  return {
      "tokens": rng.integers(1, 32, size=(b, k, t)).astype(np.int32) * segment_ids,
      "positions": np.where(segment_ids > 0, np.arange(t), 0).astype(np.int32),
      "segment_ids": segment_ids,
      "completion_mask": (np.arange(t) >= 4) & (segment_ids > 0),
  }


def _spec_names(tree):
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(str(k.key) for k in path): str(x.sharding.spec) for path, x in flat}


def main():
  assert jax.device_count() == 8, jax.devices()
  config = config_lib.get_config("tiny", dtype=jnp.float32, depth=1)
  params = transformer.init_params(config, jax.random.key(0))
  adapters = lora.init_lora(params, jax.random.key(1), rank=4)
  adapters = jax.tree.map(lambda x: x + 0.05, adapters)  # B != 0, so LoRA changes the model
  batch = _batch()
  weights = np.linspace(-1.0, 1.0, 16).reshape(8, 2)  # per-sequence loss weights

  def loss(params, adapters, batch):
    logps, _ = logprobs.sequence_logps(
        config, lora.merge(params, adapters), batch["tokens"], batch["positions"],
        batch["segment_ids"], batch["completion_mask"], chunk_size=16, vocab_chunk_size=8)
    return jnp.sum(logps * weights), logps

  step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
  (_, want_logps), want_grads = step(params, adapters, batch)

  axes = transformer.logical_axes(config)
  results = {}
  for strategy, shape in CASES:
    mesh = parallel.make_mesh(shape)
    rules = parallel.logical_axis_rules(strategy)
    sharded_params = parallel.shard_params(params, axes, mesh, rules)
    sharded_adapters = parallel.shard_params(adapters, lora.logical_axes(adapters, axes), mesh,
                                             rules)
    sharded_batch = parallel.shard_batch(batch, mesh)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      compiled = step.lower(sharded_params, sharded_adapters, sharded_batch).compile()
    (_, logps), grads = compiled(sharded_params, sharded_adapters, sharded_batch)
    results[strategy] = {
        "logps_max_abs_diff": float(np.max(np.abs(np.asarray(logps) - want_logps))),
        # Per leaf, max |g - g_single| / max |g_single|; then the worst leaf.
        "grads_max_rel_diff": max(float(np.max(np.abs(np.asarray(g) - w)) / np.max(np.abs(w)))
                                  for g, w in zip(jax.tree.leaves(grads),
                                                  jax.tree.leaves(want_grads))),
        "param_specs": _spec_names(sharded_params),
        "adapter_specs": _spec_names(sharded_adapters.weights),
        "batch_spec": str(sharded_batch["tokens"].sharding.spec),
        "logps_spec": str(logps.sharding.spec),
        # Data parallelism must need no all-gather: each device scores its own rows.
        "all_gathers": compiled.as_text().count(" all-gather("),
        "up_kernel_shard_shape": list(
            sharded_params["layers_0"]["mlp"]["up"]["kernel"].addressable_shards[0].data.shape),
    }
  print(json.dumps(results))


if __name__ == "__main__":
  main()
