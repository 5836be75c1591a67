"""Model FLOP utilisation (MFU) of our DPO train step on this device.

  python -m benchmarks.mfu [--preset=small] [--pairs=8] [--length=256] [--steps=3] \
      [--matmul_size=2048]

`MFU = (FLOPs of one step / median step time) / peak`, where
- the step is `benchmarks.dpo_step`'s (forward, DPO loss, backward, AdamW; float32);
- its FLOPs come from XLA's `cost_analysis()` of the same step compiled with a single LM-head
  tile (`dpo_step.SINGLE_TILE`: XLA counts a loop body once, so the chunked head would be
  undercounted; that program is only compiled, never run);
- the peak is measured, not taken from a data sheet: the FLOP rate `2·n³ / t` of a jitted
  `[n, n] @ [n, n]` matmul in the step's dtype on the same device (median of `repeats` runs).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from alignment.models import config as config_lib
from alignment.models import transformer
from benchmarks import dpo_step


def xla_flops(jitted, *args) -> float:
  """FLOPs XLA's cost analysis assigns to `jitted(*args)` (compiled, not run)."""
  cost = jitted.lower(*args).compile().cost_analysis()
  return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


def matmul_peak(n: int, *, dtype=jnp.float32, repeats: int = 10) -> float:
  """Measured dense-matmul FLOP/s: `2·n³ / median time` of a jitted `[n, n] @ [n, n]`."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  matmul = jax.jit(jnp.matmul)
  jax.block_until_ready(matmul(a, b))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(matmul(a, b))
    times.append(time.perf_counter() - start)
  return 2 * n**3 / statistics.median(times)


def measure(*, preset: str = "small", pairs: int = 8, length: int = 256, steps: int = 3,
            matmul_size: int = 2048) -> dict:
  """`{"config", "step_flops", "step_s", "achieved", "peak", "mfu"}` (FLOP/s for rates)."""
  config = config_lib.get_config(preset, dtype=jnp.float32)
  params = jax.jit(transformer.init_params, static_argnums=0)(config, jax.random.key(0))
  batch = jax.device_put(dpo_step.make_batch(config.vocab_size, pairs=pairs, length=length))
  counting, state = dpo_step.train_step("dpo", dpo_step.logp_fn(config, single_tile=True),
                                        params, donate=False)
  flops = xla_flops(counting, state, batch, None)
  step, state = dpo_step.train_step("dpo", dpo_step.logp_fn(config), params)
  step_s = dpo_step.run_step(step, state, batch, steps)["step_s"]
  peak = matmul_peak(matmul_size)
  return {
      "config": (f"{preset} f32 DPO step, {pairs} pairs x {length} tokens; peak: "
                 f"{matmul_size}^3 f32 matmul"),
      "step_flops": flops, "step_s": step_s, "achieved": flops / step_s, "peak": peak,
      "mfu": flops / step_s / peak,
  }


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="small")
  parser.add_argument("--pairs", type=int, default=8)
  parser.add_argument("--length", type=int, default=256)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--matmul_size", type=int, default=2048)
  args = parser.parse_args(argv)
  r = measure(preset=args.preset, pairs=args.pairs, length=args.length, steps=args.steps,
              matmul_size=args.matmul_size)
  print(f"{jax.devices()[0].device_kind}: {r['config']}")
  print(f"  step {r['step_flops'] / 1e9:.1f} GFLOP in {r['step_s']:.3f} s = "
        f"{r['achieved'] / 1e9:.1f} GFLOP/s; peak {r['peak'] / 1e9:.1f} GFLOP/s; "
        f"MFU {100 * r['mfu']:.1f}%")


if __name__ == "__main__":
  main()
