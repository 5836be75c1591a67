"""Memory-safe token and sequence log-probabilities.

The LM head turns hidden states `h [N, D]` into logits `z = h @ W [N, V]`; a training step needs
`log_softmax(z)[target]` and its gradient. Built naively, forward and backward hold several
`[N, V]` float32 arrays (logits, softmax, their cotangents): at N = 8192 tokens and a 128k
vocabulary that is 4 GiB each. Here the logits are computed one `[chunk_size, vocab_chunk_size]`
tile at a time, reduced on the fly with an online log-sum-exp (as in *Online normalizer
calculation for softmax*, Milakov & Gimelshein, 2018), and recomputed tile by tile in a custom
backward pass, so the peak temporary memory is a few tiles, never `[N, V]`.

Matmul inputs keep their dtype (bf16 is fine); accumulation, log-softmax and the returned
log-probs are float32. A final-logit soft-cap `c·tanh(z / c)` (Gemma 2) is applied to each tile
before the log-sum-exp, as `transformer.logits` applies it to full logits.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from alignment.models import transformer
from alignment.models.config import ModelConfig

Array = jax.Array

DEFAULT_CHUNK_SIZE = 1024
DEFAULT_VOCAB_CHUNK_SIZE = 8192


def token_logps(
    hidden: Array,
    head: Array,
    targets: Array,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    vocab_chunk_size: int | None = DEFAULT_VOCAB_CHUNK_SIZE,
    return_log_sum_sq: bool = False,
    soft_cap: float | None = None,
) -> Array | tuple[Array, Array]:
  """Log-probability of each target token, computed without `[..., N, V]` logits.

  `lp_n = z_{n, t_n} - logsumexp_v z_{n, v}` with `z = hidden @ head` (float32 accumulation),
  or `z = c·tanh((hidden @ head) / c)` with `soft_cap=c` (see `transformer.soft_cap`).
  The loop runs along the token axis N only; leading (batch) axes, of total size M, are kept whole
  in every tile, so a batch sharded over devices stays sharded (no gather: each device scores its
  own rows). A tile is `[M, max(1, chunk_size // M), vocab_chunk_size]` float32 (about
  `chunk_size · vocab_chunk_size · 4` bytes: 32 MiB with the defaults), never `[M, N, V]`.
  With `return_log_sum_sq=True` it also returns, from the same pass, the log collision probability
  that WPO (*WPO: Enhancing RLHF with Weighted Preference Optimization*, Zhou et al., 2024) needs:
  `log Σ_v p_v² = logsumexp_v(2·z) − 2·logsumexp_v(z)`. Both outputs are differentiable with
  respect to `hidden` and `head` (custom VJP that recomputes logits tile by tile).

  Args:
    hidden: `[..., N, D]` hidden states, any float dtype.
    head: `[D, V]` LM head matrix (the transposed embedding when embeddings are tied).
    targets: `[..., N]` integer token ids in `[0, V)`; an id outside that range yields NaN.
    chunk_size: tokens per tile, over all M leading rows (`max(1, chunk_size // M)` positions).
    vocab_chunk_size: vocabulary entries per tile; `None` = the whole vocabulary per token chunk.
    return_log_sum_sq: also return `log Σ_v p_v²`.
    soft_cap: c of the final-logit soft-cap, or None (no cap).

  Returns:
    `[..., N]` float32 log-probs, and `[..., N]` float32 `log Σ_v p_v²` if requested.
  """
  if hidden.ndim < 2 or head.ndim != 2:
    raise ValueError(f"token_logps: expected hidden [..., N, D] and head [D, V]; got hidden "
                     f"{hidden.shape} and head {head.shape}.")
  if hidden.shape[-1] != head.shape[0]:
    raise ValueError(f"token_logps: hidden width {hidden.shape[-1]} != head rows {head.shape[0]} "
                     f"(hidden {hidden.shape}, head {head.shape}).")
  if targets.shape != hidden.shape[:-1]:
    raise ValueError(f"token_logps: targets shape {targets.shape} must equal hidden.shape[:-1] = "
                     f"{hidden.shape[:-1]}.")
  if not jnp.issubdtype(targets.dtype, jnp.integer):
    raise ValueError(f"token_logps: targets must be integers; got {targets.dtype}.")
  for name, value in (("chunk_size", chunk_size), ("vocab_chunk_size", vocab_chunk_size)):
    if value is not None and (not isinstance(value, int) or value < 1):
      raise ValueError(f"token_logps: {name} must be a positive int; got {value!r}.")
  shape = targets.shape
  if not targets.size:
    empty = jnp.zeros(shape, jnp.float32)
    return (empty, empty) if return_log_sum_sq else empty
  num_tokens, vocab = shape[-1], head.shape[1]
  rows = min(num_tokens, max(1, chunk_size // (targets.size // num_tokens)))
  outputs = _chunked_logps(rows, min(vocab_chunk_size or vocab, vocab), return_log_sum_sq,
                           None if soft_cap is None else float(soft_cap),
                           hidden.reshape(-1, num_tokens, head.shape[0]), head,
                           targets.reshape(-1, num_tokens).astype(jnp.int32))
  outputs = tuple(o.reshape(shape) for o in outputs)
  return outputs if return_log_sum_sq else outputs[0]


def sequence_logps(
    config: ModelConfig,
    params: transformer.Params,
    tokens: Array,
    positions: Array,
    segment_ids: Array,
    completion_mask: Array,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    vocab_chunk_size: int | None = DEFAULT_VOCAB_CHUNK_SIZE,
    return_per_token: bool = False,
    return_log_sum_sq: bool = False,
) -> tuple[Array, ...]:
  """Summed completion log-probs of each sequence, without `[..., T, V]` float32 logits.

  Token t is predicted from the hidden state at t − 1 (`apply` then the LM head of
  `lm_head_weight`, cast to the hidden dtype, and the config's final soft-cap, as in
  `transformer.logits`); it counts iff `completion_mask[..., t]` and it is in the same segment
  as token t − 1 (so a packed sequence is never scored from its neighbour; position 0 is never
  scored):
  `logps = Σ_{t ≥ 1, counted} log softmax(h_{t−1} W)[tokens_t]`, `counts = #counted`.

  Args:
    config, params: the decoder (`alignment.models.transformer`).
    tokens, positions, segment_ids: `[..., T]` ints (layout of docs/interfaces.md#batches).
    completion_mask: `[..., T]` bool, True on the tokens whose log-probs are summed.
    chunk_size, vocab_chunk_size: tile sizes of `token_logps`.
    return_per_token: also return the per-token log-probs `[..., T]` float32, aligned with
      `tokens` (entry t scores token t; 0 where not counted).
    return_log_sum_sq: also return WPO's `log Σ_v p_v²` of the distribution that predicts each
      token, `[..., T]` float32, aligned like the per-token log-probs (0 where not counted).

  Returns:
    `(logps [...] float32, counts [...] int32)`, then `per_token` and `log_sum_sq` if requested.
  """
  completion_mask = jnp.asarray(completion_mask)
  if completion_mask.shape != jnp.shape(tokens):
    raise ValueError(f"sequence_logps: completion_mask has shape {completion_mask.shape}, "
                     f"tokens have {jnp.shape(tokens)}.")
  hidden = transformer.apply(config, params, tokens, positions, segment_ids)
  head = transformer.lm_head_weight(config, params).astype(hidden.dtype)
  segment_ids = jnp.asarray(segment_ids)
  counted = (completion_mask[..., 1:].astype(bool)
             & (segment_ids[..., 1:] == segment_ids[..., :-1]))
  stats = token_logps(hidden[..., :-1, :], head, jnp.asarray(tokens)[..., 1:],
                      chunk_size=chunk_size, vocab_chunk_size=vocab_chunk_size,
                      return_log_sum_sq=return_log_sum_sq, soft_cap=config.final_logit_softcap)
  stats = stats if return_log_sum_sq else (stats,)
  # `where`, not a product: a NaN or -inf on an uncounted token must not reach the sum.
  pad = [(0, 0)] * (counted.ndim - 1) + [(1, 0)]
  per_token, *log_sum_sq = [jnp.pad(jnp.where(counted, x, 0.0), pad) for x in stats]
  outputs = (per_token.sum(axis=-1), counted.sum(axis=-1, dtype=jnp.int32))
  return outputs + ((per_token,) if return_per_token else ()) + tuple(log_sum_sq)


def _num_chunks(total: int, size: int) -> int:
  return -(-total // size)


def _chunk(index: Array, total: int, size: int) -> tuple[Array, Array]:
  """Start of chunk `index` and a mask of the entries it owns.

  Chunks have a fixed `size`; the last one is shifted back to end at `total` instead of being
  padded (no copy of the inputs), and its entries already covered by the previous chunk are
  masked out so that every entry is owned by exactly one chunk.
  """
  nominal = index * size
  start = jnp.minimum(nominal, total - size)
  owned = start + jnp.arange(size) >= nominal
  return start, owned


def _tile_logits(h: Array, w: Array, col_owned: Array, cap: float | None) -> Array:
  """`[M, rows, cols]` float32 (soft-capped) logits of one tile; columns not owned are -inf."""
  z = transformer.soft_cap(jnp.einsum("mrd,dc->mrc", h, w, preferred_element_type=jnp.float32),
                           cap)
  return jnp.where(col_owned, z, -jnp.inf)


def _forward(rows: int, cols: int, with_sq: bool, cap: float | None, hidden: Array, head: Array,
             targets: Array):
  """`(lse, target_logit)` `[M, N]`, plus `lse2 = logsumexp(2z)` if `with_sq`, by tiles."""
  batch, num_tokens = targets.shape
  vocab = head.shape[1]

  def row_chunk(outputs, i):
    start, _ = _chunk(i, num_tokens, rows)
    h = lax.dynamic_slice_in_dim(hidden, start, rows, axis=1)
    t = lax.dynamic_slice_in_dim(targets, start, rows, axis=1)

    def col_chunk(carry, j):
      m, s, s2, tgt = carry
      col_start, col_owned = _chunk(j, vocab, cols)
      w = lax.dynamic_slice_in_dim(head, col_start, cols, axis=1)
      z = _tile_logits(h, w, col_owned, cap)
      m_new = jnp.maximum(m, z.max(axis=-1))
      s = s * jnp.exp(m - m_new) + jnp.exp(z - m_new[..., None]).sum(axis=-1)
      if with_sq:  # max(2z) = 2·max(z): the same running maximum serves both sums.
        s2 = s2 * jnp.exp(2 * (m - m_new)) + jnp.exp(2 * (z - m_new[..., None])).sum(axis=-1)
      local = t - col_start
      in_tile = (local >= 0) & (local < cols) & (t >= j * cols)
      picked = jnp.take_along_axis(z, jnp.clip(local, 0, cols - 1)[..., None], axis=-1)[..., 0]
      return (m_new, s, s2, jnp.where(in_tile, picked, tgt)), None

    init = tuple(jnp.full((batch, rows), value, jnp.float32)
                 for value in (-jnp.inf, 0.0, 0.0, jnp.nan))
    (m, s, s2, tgt), _ = lax.scan(col_chunk, init, jnp.arange(_num_chunks(vocab, cols)))
    # Rows shared with the previous chunk are recomputed identically, so overwriting is exact.
    new = (m + jnp.log(s), tgt) + ((2 * m + jnp.log(s2),) if with_sq else ())
    return tuple(lax.dynamic_update_slice_in_dim(o, n, start, axis=1)
                 for o, n in zip(outputs, new)), None

  zeros = jnp.zeros((batch, num_tokens), jnp.float32)
  outputs, _ = lax.scan(row_chunk, (zeros,) * (3 if with_sq else 2),
                        jnp.arange(_num_chunks(num_tokens, rows)))
  return outputs


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _chunked_logps(rows, cols, with_sq, cap, hidden, head, targets):
  """`(lp,)` or `(lp, log Σ p²)`, `[M, N]`, over `[M, rows, cols]` tiles."""
  return _chunked_logps_fwd(rows, cols, with_sq, cap, hidden, head, targets)[0]


def _chunked_logps_fwd(rows, cols, with_sq, cap, hidden, head, targets):
  lse, tgt, *lse2 = _forward(rows, cols, with_sq, cap, hidden, head, targets)
  outputs = (tgt - lse,) + ((lse2[0] - 2 * lse,) if with_sq else ())
  return outputs, (hidden, head, targets, lse, lse2[0] if with_sq else None)


def _chunked_logps_bwd(rows, cols, with_sq, cap, residuals, cotangents):
  """Recomputes each logit tile and applies `dz = g·(onehot(t) − p) + g2·(2·softmax(2z) − 2·p)`.

  With `p = softmax(z)`: `∂lp/∂z = onehot(t) − p` and `∂(lse(2z) − 2·lse(z))/∂z = 2·softmax(2z) −
  2·p`. With a soft-cap, `z = c·tanh(u / c)` of the raw tile u, and `dz` is multiplied by
  `∂z/∂u = 1 − (z / c)²` (on owned columns; the others have zero cotangent). The outer loop
  runs over vocabulary chunks, so each `[D, cols]` block of the head gradient is finished in
  float32 before it is added to `d_head`; `d_hidden` accumulates in float32. Entries not owned by
  a tile (see `_chunk`) get zero cotangent, so adding their blocks is exact.
  """
  hidden, head, targets, lse, lse2 = residuals
  g = cotangents[0].astype(jnp.float32)
  g2 = cotangents[1].astype(jnp.float32) if with_sq else None
  num_tokens, vocab = targets.shape[1], head.shape[1]
  compute_dtype = jnp.promote_types(hidden.dtype, head.dtype)

  def col_chunk(carry, j):
    d_hidden, d_head = carry
    col_start, col_owned = _chunk(j, vocab, cols)
    w = lax.dynamic_slice_in_dim(head, col_start, cols, axis=1)

    def row_chunk(inner, i):
      d_w, d_hidden = inner
      start, row_owned = _chunk(i, num_tokens, rows)
      rows_of = lambda x: lax.dynamic_slice_in_dim(x, start, rows, axis=1)
      h, t = rows_of(hidden), rows_of(targets)
      z = _tile_logits(h, w, col_owned, cap)
      p = jnp.exp(z - rows_of(lse)[..., None])
      onehot = (t[..., None] == col_start + jnp.arange(cols)) & col_owned
      dz = rows_of(g)[..., None] * (onehot - p)
      if with_sq:
        dz = dz + rows_of(g2)[..., None] * (2 * jnp.exp(2 * z - rows_of(lse2)[..., None]) - 2 * p)
      if cap is not None:
        dz = dz * (1.0 - jnp.square(jnp.where(col_owned, z, 0.0) / cap))
      dz = jnp.where(row_owned[:, None], dz, 0.0).astype(compute_dtype)
      d_h = jnp.einsum("mrc,dc->mrd", dz, w, preferred_element_type=jnp.float32)
      d_w = d_w + jnp.einsum("mrd,mrc->dc", h, dz, preferred_element_type=jnp.float32)
      return (d_w, _add_block(d_hidden, d_h, start, axis=1)), None

    (d_w, d_hidden), _ = lax.scan(
        row_chunk, (jnp.zeros((head.shape[0], cols), jnp.float32), d_hidden),
        jnp.arange(_num_chunks(num_tokens, rows)))
    return (d_hidden, _add_block(d_head, d_w.astype(head.dtype), col_start, axis=1)), None

  (d_hidden, d_head), _ = lax.scan(
      col_chunk, (jnp.zeros(hidden.shape, jnp.float32), jnp.zeros_like(head)),
      jnp.arange(_num_chunks(vocab, cols)))
  return d_hidden.astype(hidden.dtype), d_head, None


def _add_block(acc: Array, block: Array, start: Array, *, axis: int) -> Array:
  size = block.shape[axis]
  return lax.dynamic_update_slice_in_dim(
      acc, lax.dynamic_slice_in_dim(acc, start, size, axis) + block, start, axis)


_chunked_logps.defvjp(_chunked_logps_fwd, _chunked_logps_bwd)
