"""The reference decoder: a Llama-style transformer in flax.linen, used through pure functions.

Architecture (Llama 2/3; Mistral, Qwen2/3 and Gemma 1/2 through `ModelConfig` flags):
```
h_0 = embed(tokens)                                        (· sqrt(D) for Gemma)
h   = h + post(o(attention(rope(q(n)), rope(k(n)), v(n))))  n = RMSNorm_attn(h)
h   = h + post(down(act(gate(n)) ⊙ up(n)))                  n = RMSNorm_mlp(h); SwiGLU / GeGLU
out = RMSNorm_final(h)                                     [..., T, D]
```
- RMSNorm: `x / sqrt(mean(x²) + eps) · w` (Gemma: `· (1 + w)`), statistics in float32; `post` is
  the identity, or another RMSNorm with `post_norms` (Gemma 2's attn_post_norm, mlp_post_norm);
  with `qk_norm` (Qwen3) q and k are RMS-normed per head over hd before RoPE.
- RoPE, rotate-half convention of HF Llama: `x·cos(pθ) + rotate_half(x)·sin(pθ)` with
  `rotate_half([x1, x2]) = [-x2, x1]` and `θ_i = theta^(-2i/hd)` repeated over both halves.
- Grouped-query attention with H query heads sharing G key/value heads, `softmax(qkᵀ/√hd)` in
  float32 (`1/√hd` becomes `query_pre_attn_scalar^(-1/2)` and scores are soft-capped,
  `c·tanh(s/c)`, with Gemma 2's settings); the mask is causal AND same non-zero segment id
  (sequences packed in a row carry segment ids 1..n and restart their positions), or an explicit
  `attention_mask` override. Sliding-window layers (Mistral, Gemma 2) further keep only keys at
  positions `> p − W` for a query at position p (*Longformer: The Long-Document Transformer*,
  Beltagy et al., 2020; *Mistral 7B*, Jiang et al., 2023).
- Final logits are soft-capped like the scores with `final_logit_softcap` (*Gemma 2: Improving
  Open Language Models at a Practical Size*, Gemma Team, 2024).
- Compute in `config.dtype` with parameters in `config.param_dtype` (two separate settings).

Functions, not modules, are the API (docs/interfaces.md#models): `init_params`, `apply`,
`lm_head_weight`, `logits`, `logical_axes`, `init_cache`, and `naive_sequence_logps` (a
full-logits reference for tests only). Parameters are a plain nested dict whose names are fixed
by docs/interfaces.md; every parameter carries logical axis names (`embed`, `mlp`, `heads`, `kv`,
`vocab`) and activations are constrained with (`batch`, `length`, `embed`, `heads`, `mlp`) through
`nn.with_logical_constraint`, a no-op unless logical axis rules and a mesh are in scope.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from alignment.models.config import ModelConfig

Array = jax.Array
Params = dict[str, Any]
Cache = dict[str, Any]

_INIT_STD = 0.02  # HF `initializer_range` of Llama, Qwen2 and Gemma.
_MASKED = float(jnp.finfo(jnp.float32).min)

_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def _normal_init(names: tuple[str, ...]):
  return nn.with_logical_partitioning(nn.initializers.normal(_INIT_STD), names)


def _dense(config: ModelConfig, features: int, names: tuple[str, str], name: str,
           use_bias: bool = False) -> nn.Dense:
  return nn.Dense(
      features, use_bias=use_bias, dtype=config.dtype, param_dtype=config.param_dtype,
      kernel_init=_normal_init(names),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), names[1:]),
      name=name)


class RMSNorm(nn.Module):
  """`y = x / sqrt(mean(x², -1) + eps) · w` (or `· (1 + w)`), computed in float32.

  Root Mean Square Layer Normalization (Zhang & Sennrich, 2019). Parameter `scale [D]` (logical
  axis `axis`: "embed" on the residual stream, None over a head's hd).
  """

  config: ModelConfig
  axis: Optional[str] = "embed"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = self.config
    init = nn.initializers.zeros_init() if c.norm_unit_offset else nn.initializers.ones_init()
    scale = self.param("scale", nn.with_logical_partitioning(init, (self.axis,)),
                       (x.shape[-1],), c.param_dtype)
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + c.norm_eps)
    scale = scale.astype(jnp.float32)
    return (normed * (1.0 + scale if c.norm_unit_offset else scale)).astype(c.dtype)


def _inverse_frequencies(config: ModelConfig) -> Array:
  """RoPE inverse frequencies `θ_i = theta^(-2i/hd)`, `[hd/2]` float32, optionally Llama-3 scaled.

  Llama-3 scaling (HF `_compute_llama3_parameters`): with wavelength `λ = 2π/θ`,
  `low = L₀/low_freq_factor`, `high = L₀/high_freq_factor`: keep θ if `λ < high`, use
  `θ/factor` if `λ > low`, else `(1-s)·θ/factor + s·θ` with
  `s = (L₀/λ - low_freq_factor) / (high_freq_factor - low_freq_factor)`.
  """
  hd = config.head_dim
  inv_freq = 1.0 / (config.rope_theta ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd))
  scaling = config.rope_scaling
  if scaling is None:
    return inv_freq
  wavelength = 2.0 * math.pi / inv_freq
  low_wavelength = scaling.original_max_length / scaling.low_freq_factor
  high_wavelength = scaling.original_max_length / scaling.high_freq_factor
  smooth = ((scaling.original_max_length / wavelength - scaling.low_freq_factor)
            / (scaling.high_freq_factor - scaling.low_freq_factor))
  interpolated = (1.0 - smooth) * inv_freq / scaling.factor + smooth * inv_freq
  return jnp.where(wavelength < high_wavelength, inv_freq,
                   jnp.where(wavelength > low_wavelength, inv_freq / scaling.factor,
                             interpolated))


def rope_tables(config: ModelConfig, positions: Array) -> tuple[Array, Array]:
  """`(cos, sin)` of `positions [..., T]` times the inverse frequencies: `[..., T, hd]` float32.

  The half-dimension table is repeated over both halves (HF's `cat((freqs, freqs), -1)`).
  """
  angles = positions.astype(jnp.float32)[..., None] * _inverse_frequencies(config)
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def soft_cap(x: Array, cap: Optional[float]) -> Array:
  """`cap · tanh(x / cap)` (values squashed into `(-cap, cap)`), or `x` when `cap` is None.

  The logit soft-capping of *Gemma 2: Improving Open Language Models at a Practical Size*
  (Gemma Team, 2024); its derivative is `1 − (y / cap)²` in terms of the output y.
  """
  return x if cap is None else cap * jnp.tanh(x / cap)


def _apply_rope(x: Array, cos: Array, sin: Array) -> Array:
  """`x·cos + rotate_half(x)·sin` on `x [N, T, heads, hd]`, cos/sin `[N, T, hd]`, in float32."""
  x32 = x.astype(jnp.float32)
  x1, x2 = jnp.split(x32, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  out = x32 * cos[:, :, None, :] + rotated * sin[:, :, None, :]
  return out.astype(x.dtype)


class Attention(nn.Module):
  """Grouped-query self-attention with RoPE, optionally reading and writing a KV cache.

  `out_h = softmax(mask(rope(q_h) rope(k_{g(h)})ᵀ / √hd)) v_{g(h)}` with `g(h) = h // (H/G)`
  (HF `repeat_kv`), then `o`. GQA: Training Generalized Multi-Query Transformer Models from
  Multi-Head Checkpoints (Ainslie et al., 2023); RoFormer: Enhanced Transformer with Rotary
  Position Embedding (Su et al., 2021). Params: q `[D, H·hd]`, k and v `[D, G·hd]` (+ biases for
  Qwen2), o `[H·hd, D]` (+ q_norm, k_norm `scale [hd]` with `qk_norm`). With Gemma 2's settings
  the scores are `soft_cap(qkᵀ · query_pre_attn_scalar^(-1/2), attn_logit_softcap)`.
  """

  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array, cos: Array, sin: Array, mask: Array,
               kv_cache: Optional[dict[str, Array]], cache_index: Optional[Array]):
    """x `[N, T, D]`, mask `[N, T, S]` bool; returns `([N, T, D], new kv_cache or None)`."""
    c = self.config
    n, t, _ = x.shape
    h, g, hd = c.num_heads, c.num_kv_heads, c.head_dim
    q = _dense(c, h * hd, ("embed", "heads"), "q", c.qkv_bias)(x).reshape(n, t, h, hd)
    k = _dense(c, g * hd, ("embed", "kv"), "k", c.qkv_bias)(x).reshape(n, t, g, hd)
    v = _dense(c, g * hd, ("embed", "kv"), "v", c.qkv_bias)(x).reshape(n, t, g, hd)
    q = nn.with_logical_constraint(q, ("batch", "length", "heads", None))
    if c.qk_norm:
      q, k = RMSNorm(c, None, name="q_norm")(q), RMSNorm(c, None, name="k_norm")(k)
    q, k = _apply_rope(q, cos, sin), _apply_rope(k, cos, sin)
    if kv_cache is not None:
      k = jax.lax.dynamic_update_slice(kv_cache["k"], k.astype(kv_cache["k"].dtype),
                                       (0, cache_index, 0, 0))
      v = jax.lax.dynamic_update_slice(kv_cache["v"], v.astype(kv_cache["v"].dtype),
                                       (0, cache_index, 0, 0))
      kv_cache = {"k": k, "v": v}
    q = q.reshape(n, t, g, h // g, hd)
    scores = jnp.einsum("ntgrd,nsgd->ngrts", q, k.astype(q.dtype),
                        preferred_element_type=jnp.float32)
    scores = scores / math.sqrt(c.query_pre_attn_scalar or hd)
    scores = soft_cap(scores, c.attn_logit_softcap)
    scores = jnp.where(mask[:, None, None, :, :], scores, _MASKED)
    probs = jax.nn.softmax(scores, axis=-1).astype(c.dtype)
    out = jnp.einsum("ngrts,nsgd->ntgrd", probs, v.astype(c.dtype)).reshape(n, t, h, hd)
    out = nn.with_logical_constraint(out, ("batch", "length", "heads", None))
    out = _dense(c, c.width, ("heads", "embed"), "o")(out.reshape(n, t, h * hd))
    return out, kv_cache


class Mlp(nn.Module):
  """Gated MLP `down(act(gate(x)) ⊙ up(x))`: SwiGLU (silu) or GeGLU (tanh-approximate GELU).

  GLU Variants Improve Transformer (Shazeer, 2020). Params gate, up `[D, F]`, down `[F, D]`.
  """

  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = self.config
    gate = _dense(c, c.mlp_dim, ("embed", "mlp"), "gate")(x)
    up = _dense(c, c.mlp_dim, ("embed", "mlp"), "up")(x)
    act = nn.silu if c.mlp_activation == "silu" else (lambda y: nn.gelu(y, approximate=True))
    hidden = nn.with_logical_constraint(act(gate) * up, ("batch", "length", "mlp"))
    return _dense(c, c.width, ("mlp", "embed"), "down")(hidden)


class Block(nn.Module):
  """Pre-norm decoder layer: `h += attn(norm(h)); h += mlp(norm(h))`.

  With `post_norms` each sub-layer output is normed again before its residual add (the
  "sandwich" of Gemma 2): `h += norm(attn(norm(h))); h += norm(mlp(norm(h)))`.
  """

  config: ModelConfig

  @nn.compact
  def __call__(self, x, cos, sin, mask, kv_cache, cache_index):
    c = self.config
    attn_out, kv_cache = Attention(c, name="attn")(
        RMSNorm(c, name="attn_norm")(x), cos, sin, mask, kv_cache, cache_index)
    if c.post_norms:
      attn_out = RMSNorm(c, name="attn_post_norm")(attn_out)
    x = x + attn_out
    mlp_out = Mlp(c, name="mlp")(RMSNorm(c, name="mlp_norm")(x))
    if c.post_norms:
      mlp_out = RMSNorm(c, name="mlp_post_norm")(mlp_out)
    x = x + mlp_out
    return nn.with_logical_constraint(x, ("batch", "length", "embed")), kv_cache


class Decoder(nn.Module):
  """Embedding, `depth` blocks named `layers_{i}`, final norm and (untied) `lm_head/kernel`."""

  config: ModelConfig

  def setup(self):
    c = self.config
    self.embed = nn.Embed(
        c.vocab_size, c.width, dtype=c.dtype, param_dtype=c.param_dtype,
        embedding_init=_normal_init(("vocab", "embed")))
    block = Block
    if c.remat != "none":
      block = nn.remat(Block, policy=_REMAT_POLICIES[c.remat])
    self.layers = [block(c) for _ in range(c.depth)]  # Named layers_0 ... layers_{L-1}.
    self.final_norm = RMSNorm(c)
    if not c.tie_embeddings:
      self.lm_head = _LMHead(c)

  def __call__(self, tokens, positions, masks, cache):
    """tokens, positions `[N, T]`, masks `(full, sliding)` `[N, T, S]` bool (sliding is None
    without a window); returns `(hidden [N, T, D], caches)`."""
    c = self.config
    x = self.embed(tokens)
    if c.scale_embeddings:
      x = x * jnp.asarray(math.sqrt(c.width), c.dtype)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    cos, sin = rope_tables(c, positions)
    new_layers = []
    for i, layer in enumerate(self.layers):
      kv_cache = None if cache is None else cache["layers"][i]
      mask = masks[1] if c.is_sliding(i) else masks[0]
      x, kv_cache = layer(x, cos, sin, mask, kv_cache, None if cache is None else cache["index"])
      new_layers.append(kv_cache)
    return self.final_norm(x), new_layers

  def init_all(self, tokens, positions, mask):
    """Touches every parameter (the forward pass and the LM head) for `init`."""
    hidden, _ = self(tokens, positions, (mask, mask), None)
    return hidden, self.head_weight()

  def head_weight(self) -> Array:
    return self.embed.embedding.T if self.config.tie_embeddings else self.lm_head()


class _LMHead(nn.Module):
  """Holds `lm_head/kernel [D, V]` for untied embeddings."""

  config: ModelConfig

  def setup(self):
    c = self.config
    self.kernel = self.param("kernel", _normal_init(("embed", "vocab")),
                             (c.width, c.vocab_size), c.param_dtype)

  def __call__(self) -> Array:
    return self.kernel


def _boxed_init(config: ModelConfig, key: Array):
  tokens = jnp.zeros((1, 1), jnp.int32)
  return Decoder(config).init(key, tokens, tokens, jnp.ones((1, 1, 1), bool),
                              method=Decoder.init_all)["params"]


def init_params(config: ModelConfig, key: Array) -> Params:
  """Randomly initialised parameters: a plain nested dict (names in docs/interfaces.md#models).

  Kernels and embeddings ~ N(0, 0.02²); RMSNorm scales 1 (0 with `norm_unit_offset`);
  biases 0. All in `config.param_dtype`.
  """
  return nn.unbox(_boxed_init(config, key))


def logical_axes(config: ModelConfig) -> Params:
  """The parameter tree with each leaf replaced by its tuple of logical axis names.

  e.g. `layers_0/attn/q/kernel -> ("embed", "heads")`. Computed abstractly (no FLOPs). Tuples
  are pytrees, so map over it with `is_leaf=lambda x: isinstance(x, tuple)`.
  """
  boxed = jax.eval_shape(lambda key: _boxed_init(config, key), jax.random.key(0))
  return jax.tree.map(lambda box: tuple(box.names), boxed,
                      is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def causal_segment_mask(segment_ids: Array) -> Array:
  """`mask[..., i, j] = j <= i and seg[i] == seg[j] != 0`: `[..., T, T]` bool.

  Query rows of padding (segment 0) see nothing; their outputs are finite and meaningless.
  """
  t = segment_ids.shape[-1]
  causal = jnp.arange(t)[:, None] >= jnp.arange(t)[None, :]
  same = segment_ids[..., :, None] == segment_ids[..., None, :]
  return causal & same & (segment_ids[..., :, None] != 0)


def init_cache(config: ModelConfig, batch_size: int, length: int, *,
               dtype: Any = None) -> Cache:
  """An empty KV cache for `batch_size` rows of up to `length` tokens.

  Returns `{"index": int32 scalar (next slot to write), "segment_ids": [B, S] int32 (0 = empty),
  "positions": [B, S] int32, "layers": [{"k": [B, S, G, hd], "v": [B, S, G, hd]}] * depth}` in
  `dtype` (default `config.dtype`). RoPE is applied before caching, so a slot's position is
  whatever position was passed when it was written (kept in "positions" for sliding windows):
  rows need not be aligned.
  """
  dtype = config.dtype if dtype is None else dtype
  shape = (batch_size, length, config.num_kv_heads, config.head_dim)
  return {
      "index": jnp.zeros((), jnp.int32),
      "segment_ids": jnp.zeros((batch_size, length), jnp.int32),
      "positions": jnp.zeros((batch_size, length), jnp.int32),
      "layers": [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
                 for _ in range(config.depth)],
  }


def _check_shapes(tokens, positions, segment_ids, attention_mask, key_length):
  if not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise TypeError(f"apply: tokens must be integer ids, got dtype {tokens.dtype}.")
  if tokens.ndim < 2:
    raise ValueError(f"apply: tokens must be [..., T] with a batch dim, got {tokens.shape}.")
  for name, x in (("positions", positions), ("segment_ids", segment_ids)):
    if x.shape != tokens.shape:
      raise ValueError(f"apply: {name} has shape {x.shape}, tokens have {tokens.shape}.")
  expected = tokens.shape + (key_length,)
  if attention_mask is not None and attention_mask.shape != expected:
    raise ValueError(f"apply: attention_mask has shape {attention_mask.shape}, expected "
                     f"{expected} (tokens [..., T] -> [..., T, S]).")


def apply(config: ModelConfig, params: Params, tokens: Array, positions: Array,
          segment_ids: Array, *, attention_mask: Optional[Array] = None,
          cache: Optional[Cache] = None):
  """Final-normed hidden states of the decoder.

  Args:
    config: the model configuration.
    params: `init_params`-shaped parameters.
    tokens: `[..., T]` int token ids; any leading batch dims (flattened internally).
    positions: `[..., T]` int positions (RoPE), 0-based within each sequence.
    segment_ids: `[..., T]` int; tokens attend causally within the same non-zero segment.
    attention_mask: optional `[..., T, S]` bool override of the segment mask (True = may
      attend; S = T without cache, S = cache length with it). It replaces the causal/segment
      mask entirely (e.g. the block mask of prefix sharing); sliding-window layers still drop
      the keys whose positions are W or more behind the query's.
    cache: optional KV cache from `init_cache` (then tokens must be `[B, T]` with the cache's
      B). The T tokens are written at slots `index .. index+T-1` and attend, causally by slot,
      to every cached slot of their own non-zero segment. The caller keeps
      `index + T <= S`; writes past the end are clamped by XLA.

  Returns:
    `hidden [..., T, D]` in `config.dtype`; with a cache, `(hidden, new_cache)`.
  """
  tokens, positions, segment_ids = (jnp.asarray(x) for x in (tokens, positions, segment_ids))
  key_length = tokens.shape[-1] if cache is None else cache["segment_ids"].shape[1]
  _check_shapes(tokens, positions, segment_ids, attention_mask, key_length)
  batch_shape, t = tokens.shape[:-1], tokens.shape[-1]
  tokens, positions, segment_ids = (x.reshape(-1, t) for x in (tokens, positions, segment_ids))
  if cache is not None:
    if tokens.shape[0] != cache["segment_ids"].shape[0] or len(batch_shape) != 1:
      raise ValueError(f"apply: with a cache, tokens must be [B, T] with B = "
                       f"{cache['segment_ids'].shape[0]}, got {batch_shape + (t,)}.")
    index = cache["index"]
    key_segments, key_positions = (
        jax.lax.dynamic_update_slice(cache[name], x.astype(jnp.int32), (0, index))
        for name, x in (("segment_ids", segment_ids), ("positions", positions)))
    query_slots = index + jnp.arange(t)
    causal = query_slots[:, None] >= jnp.arange(key_length)[None, :]
    mask = (causal & (segment_ids[:, :, None] == key_segments[:, None, :])
            & (segment_ids[:, :, None] != 0))
  else:
    mask, key_positions = causal_segment_mask(segment_ids), positions
  if attention_mask is not None:
    mask = jnp.asarray(attention_mask, bool).reshape(-1, t, key_length)
  sliding = None
  if config.sliding_window is not None:
    distance = positions[:, :, None] - key_positions[:, None, :]
    sliding = mask & (distance < config.sliding_window)
  hidden, new_layers = Decoder(config).apply({"params": params}, tokens, positions,
                                             (mask, sliding), cache)
  hidden = hidden.reshape(batch_shape + hidden.shape[-2:])
  if cache is None:
    return hidden
  return hidden, {"index": cache["index"] + t, "segment_ids": key_segments,
                  "positions": key_positions, "layers": new_layers}


def lm_head_weight(config: ModelConfig, params: Params) -> Array:
  """The LM-head matrix `[D, V]`: `lm_head/kernel`, or `embed/embedding.T` when tied."""
  if config.tie_embeddings:
    return params["embed"]["embedding"].T
  return params["lm_head"]["kernel"]


def logits(config: ModelConfig, params: Params, hidden: Array) -> Array:
  """Float32 logits `[..., V]` of `hidden [..., D]`: `soft_cap(hidden @ head,
  final_logit_softcap)`. For small or evaluation use only: training paths use the chunked
  log-probs of `alignment.models.logprobs`."""
  head = lm_head_weight(config, params)
  return soft_cap(jnp.einsum("...d,dv->...v", hidden, head.astype(hidden.dtype),
                             preferred_element_type=jnp.float32), config.final_logit_softcap)


def naive_sequence_logps(config: ModelConfig, params: Params, tokens: Array, positions: Array,
                         segment_ids: Array, completion_mask: Array) -> tuple[Array, Array]:
  """Reference summed completion log-probs from full float32 logits (tests only).

  `logps[...] = Σ_{t counted} log softmax(logits[..., t-1])[tokens[..., t]]`, `counts[...] =
  #counted`, where t >= 1 is counted iff `completion_mask[..., t]` and token t - 1 is in the same
  segment (token t is predicted from position t - 1 of its own sequence; the convention of
  `alignment.models.logprobs.sequence_logps`). Inputs `[..., T]` in the layout of
  docs/interfaces.md#batches. Builds `[..., T, V]` float32 logits: never use on a training path.
  """
  tokens, segment_ids = jnp.asarray(tokens), jnp.asarray(segment_ids)
  hidden = apply(config, params, tokens, positions, segment_ids)
  log_probs = jax.nn.log_softmax(logits(config, params, hidden[..., :-1, :]), axis=-1)
  target_logps = jnp.take_along_axis(log_probs, tokens[..., 1:, None], axis=-1)[..., 0]
  mask = (jnp.asarray(completion_mask, bool)[..., 1:]
          & (segment_ids[..., 1:] == segment_ids[..., :-1]))
  return (jnp.sum(jnp.where(mask, target_logps, 0.0), axis=-1),
          jnp.sum(mask, axis=-1).astype(jnp.int32))
