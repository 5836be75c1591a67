r"""XLA memory of token log-probs, forward + backward: chunked (`token_logps`) vs naive.

Compile-only (nothing is executed, so it runs on a laptop): for batch 8 x length 1024 tokens,
width 512 and vocabularies of 32k, 128k and 256k, prints the temporary bytes XLA allocates for
`value_and_grad` of the summed log-probs w.r.t. hidden states and head, and their ratio.

  python -m benchmarks.logprob_memory [--dtype=bfloat16] [--chunk_size=1024] \
      [--vocab_chunk_size=8192]

Naive = `log_softmax(hidden @ head)` in float32 then a gather: forward and backward hold several
`[N, V]` float32 arrays. Numbers depend on the backend (XLA:CPU has no bf16 matmul, so it keeps
a float32 copy of a bf16 head).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from absl import app, flags

from alignment.models import logprobs

_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"],
                           "dtype of the hidden states and head.")
_CHUNK = flags.DEFINE_integer("chunk_size", logprobs.DEFAULT_CHUNK_SIZE, "tokens per tile.")
_VOCAB_CHUNK = flags.DEFINE_integer("vocab_chunk_size", logprobs.DEFAULT_VOCAB_CHUNK_SIZE,
                                    "vocabulary entries per tile.")

BATCH, LENGTH, WIDTH = 8, 1024, 512
VOCABS = (32 * 1024, 128 * 1024, 256 * 1024)


def naive_token_logps(hidden, head, targets):
  logits = jnp.einsum("btd,dv->btv", hidden, head, preferred_element_type=jnp.float32)
  return jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], axis=-1)[..., 0]


def compiled_memory(fn, v: int, dtype) -> tuple[int, float]:
  """(temporary bytes, compile seconds) of value_and_grad(sum(fn)) w.r.t. hidden and head."""
  args = (jax.ShapeDtypeStruct((BATCH, LENGTH, WIDTH), dtype),
          jax.ShapeDtypeStruct((WIDTH, v), dtype),
          jax.ShapeDtypeStruct((BATCH, LENGTH), jnp.int32))
  step = jax.jit(jax.value_and_grad(lambda h, w, t: jnp.sum(fn(h, w, t)), argnums=(0, 1)))
  start = time.perf_counter()
  compiled = step.lower(*args).compile()
  return compiled.memory_analysis().temp_size_in_bytes, time.perf_counter() - start


def main(argv):
  del argv
  dtype = jnp.dtype(_DTYPE.value)
  n = BATCH * LENGTH
  chunked = lambda h, w, t: logprobs.token_logps(h, w, t, chunk_size=_CHUNK.value,
                                                 vocab_chunk_size=_VOCAB_CHUNK.value)
  print(f"backend={jax.default_backend()} tokens={n} (batch {BATCH} x length {LENGTH}) "
        f"width={WIDTH} dtype={dtype.name} tile={_CHUNK.value}x{_VOCAB_CHUNK.value}")
  print(f"{'vocab':>7} | {'naive temp MiB':>14} | {'chunked temp MiB':>16} | {'ratio':>6} | "
        f"{'[N,V] f32 MiB':>13} | compile s (naive, chunked)")
  for v in VOCABS:
    naive, naive_s = compiled_memory(naive_token_logps, v, dtype)
    small, small_s = compiled_memory(chunked, v, dtype)
    print(f"{v:>7} | {naive / 2**20:>14.1f} | {small / 2**20:>16.1f} | {naive / small:>5.1f}x | "
          f"{n * v * 4 / 2**20:>13.0f} | {naive_s:.2f}, {small_s:.2f}")


if __name__ == "__main__":
  app.run(main)
