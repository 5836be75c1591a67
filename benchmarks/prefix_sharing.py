r"""Prefix-shared vs independent scoring of K responses per prompt: time and XLA FLOPs.

  python -m benchmarks.prefix_sharing [--config=small] [--dtype=float32] [--batch=2] \
      [--prompt_length=256] [--response_length=64] [--ks=2,4,8] [--repeats=3] [--grad]

For each K, three methods compute the same `[B, K]` summed response log-probs (checked):
- `sequence_logps`: the standard path without prefix sharing: `B·K` rows `[prompt, response_k]`
  of `P + R` tokens (docs/interfaces.md#batches layout) through `logprobs.sequence_logps`, whose
  chunked LM head runs on every position of every row (prompt positions included, then masked);
- `gathered`: the same `B·K` rows, but the chunked LM head only on the `R` response-predicting
  positions of each row (the strongest independent baseline: it isolates the decoder's cost);
- `shared`: `alignment.models.prefix.prefix_shared_logps`, one row `[prompt | resp_1 | ... |
  resp_K]` of `P + K·R` tokens per prompt with a block attention mask, same head work as
  `gathered`.
Prompts and responses are full length (no padding). Time is the median wall time of `--repeats`
runs after a warm-up; FLOPs come from `compiled.cost_analysis()` of the same function lowered with
a single LM-head tile (XLA counts a loop body once, so the chunked head would be undercounted;
that program is only compiled, never run). `--grad` measures value-and-gradient w.r.t. the params
(a training step's model part) instead of the forward pass. The default dtype is float32 because
XLA:CPU emulates bfloat16 matmuls; on an accelerator pass `--dtype=bfloat16`.
"""

from __future__ import annotations

import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from alignment.models import config as config_lib
from alignment.models import logprobs
from alignment.models import prefix
from alignment.models import transformer

_CONFIG = flags.DEFINE_string("config", "small", "model preset.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype.")
_BATCH = flags.DEFINE_integer("batch", 2, "prompts per batch (B).")
_PROMPT = flags.DEFINE_integer("prompt_length", 256, "prompt tokens (P).")
_RESPONSE = flags.DEFINE_integer("response_length", 64, "tokens per response (R).")
_KS = flags.DEFINE_list("ks", ["2", "4", "8"], "responses per prompt (K) to measure.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timed runs per measurement (median reported).")
_GRAD = flags.DEFINE_bool("grad", False, "time value_and_grad w.r.t. params, not the forward.")


def _independent_rows(prompt_tokens, response_tokens):
  """`[B, K, P + R]` rows `[prompt, response_k]` and their positions (no padding)."""
  b, p = prompt_tokens.shape
  k, r = response_tokens.shape[1:]
  tokens = jnp.concatenate([jnp.broadcast_to(prompt_tokens[:, None], (b, k, p)), response_tokens],
                           axis=-1)
  return tokens, jnp.broadcast_to(jnp.arange(p + r), tokens.shape)


def sequence_logps_baseline(config, params, prompt_tokens, prompt_lengths, response_tokens,
                            response_mask, **tiles):
  """`[B, K]` log-probs of B·K independent rows through `logprobs.sequence_logps`."""
  del prompt_lengths  # Full-length prompts.
  tokens, positions = _independent_rows(prompt_tokens, response_tokens)
  completion = jnp.concatenate(
      [jnp.zeros(tokens.shape[:-1] + (prompt_tokens.shape[1],), bool), response_mask], axis=-1)
  return logprobs.sequence_logps(config, params, tokens, positions, jnp.ones_like(tokens),
                                 completion, **tiles)[0]


def gathered_baseline(config, params, prompt_tokens, prompt_lengths, response_tokens,
                      response_mask, **tiles):
  """`[B, K]` log-probs of B·K independent rows, LM head on response-predicting positions only."""
  del prompt_lengths  # Full-length prompts.
  p = prompt_tokens.shape[1]
  tokens, positions = _independent_rows(prompt_tokens, response_tokens)
  hidden = transformer.apply(config, params, tokens, positions, jnp.ones_like(tokens))
  head = transformer.lm_head_weight(config, params).astype(hidden.dtype)
  token_logps = logprobs.token_logps(hidden[:, :, p - 1:-1], head, response_tokens, **tiles)
  return jnp.sum(jnp.where(response_mask, token_logps, 0.0), axis=-1)


def shared(config, params, *batch, **tiles):
  return prefix.prefix_shared_logps(config, params, *batch, **tiles)[0]


METHODS = {"sequence_logps": sequence_logps_baseline, "gathered": gathered_baseline,
           "shared": shared}


def _program(fn, config, grad: bool, **tiles):
  scores = functools.partial(fn, config, **tiles)
  if grad:
    return jax.jit(jax.value_and_grad(lambda params, *batch: jnp.sum(scores(params, *batch))))
  return jax.jit(scores)


def measure(fn, config, params, batch, grad: bool, repeats: int):
  """(median seconds, XLA FLOPs, output) of one method."""
  counting = _program(fn, config, grad, chunk_size=2**31 - 1, vocab_chunk_size=None)
  cost = counting.lower(params, *batch).compile().cost_analysis()
  flops = (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]
  timed = _program(fn, config, grad)
  out = jax.block_until_ready(timed(params, *batch))  # Compile and warm up.
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(timed(params, *batch))
    times.append(time.perf_counter() - start)
  return statistics.median(times), flops, out


def main(argv):
  del argv
  config = config_lib.get_config(_CONFIG.value, dtype=_DTYPE.value)
  b, p, r = _BATCH.value, _PROMPT.value, _RESPONSE.value
  params = jax.jit(transformer.init_params, static_argnums=0)(config, jax.random.key(0))
  print(f"backend={jax.default_backend()} device={jax.devices()[0].device_kind} "
        f"config={_CONFIG.value} (V={config.vocab_size} D={config.width} L={config.depth}) "
        f"dtype={config.dtype.name} B={b} P={p} R={r} "
        f"mode={'value_and_grad' if _GRAD.value else 'forward'}")
  print(f"{'K':>2} | {'method':<14} | {'seconds':>8} | {'GFLOP':>7} | "
        f"shared vs method: speed-up, FLOP ratio | max |Δlogp| vs shared")
  rng = np.random.default_rng(0)
  for k in map(int, _KS.value):
    batch = (jnp.asarray(rng.integers(1, config.vocab_size, (b, p)), jnp.int32),
             jnp.full((b,), p, jnp.int32),
             jnp.asarray(rng.integers(1, config.vocab_size, (b, k, r)), jnp.int32),
             jnp.ones((b, k, r), bool))
    results = {name: measure(fn, config, params, batch, _GRAD.value, _REPEATS.value)
               for name, fn in METHODS.items()}
    t_sh, f_sh, out_sh = results["shared"]
    for name, (t, f, out) in results.items():
      delta = jnp.max(jnp.abs((out[0] - out_sh[0]) if _GRAD.value else (out - out_sh)))
      print(f"{k:>2} | {name:<14} | {t:>8.3f} | {f / 1e9:>7.1f} | "
            f"{t / t_sh:>16.2f}x, {f / f_sh:>10.2f}x | {float(delta):.1e}")


if __name__ == "__main__":
  app.run(main)
