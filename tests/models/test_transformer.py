"""Tests of the reference decoder (alignment/models/transformer.py and config.py).

The forward pass is checked against an independent float64 numpy implementation written from
the HF Llama / Mistral / Qwen2 / Qwen3 / Gemma / Gemma 2 equations, for every family flag.
"""

import dataclasses
import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment.models import config as config_lib
from alignment.models import transformer

F32 = dict(dtype=jnp.float32)
apply = jax.jit(transformer.apply, static_argnums=0)

VARIANTS = {
    "llama_untied": config_lib.get_config("tiny", **F32),
    "llama3_rope_scaling_tied": config_lib.get_config(
        "tiny", tie_embeddings=True, rope_theta=10_000.0,
        rope_scaling=config_lib.Llama3RopeScaling(
            factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_length=64),
        **F32),
    "qwen2_bias": config_lib.get_config("tiny", qkv_bias=True, tie_embeddings=True,
                                        rope_theta=1e6, norm_eps=1e-6, **F32),
    "gemma_mqa": config_lib.get_config(
        "tiny", num_heads=2, num_kv_heads=1, head_dim=24, tie_embeddings=True,
        scale_embeddings=True, norm_unit_offset=True, mlp_activation="gelu_tanh", **F32),
    "qwen3_qk_norm": config_lib.get_config("tiny", head_dim=24, qk_norm=True, norm_eps=1e-6,
                                           **F32),
    "mistral_window": config_lib.get_config("tiny", sliding_window=3, **F32),
    # Soft-caps small enough to bend the scores of these small weights; window on layer 0 only.
    "gemma2_sandwich": config_lib.get_config(
        "tiny", head_dim=24, tie_embeddings=True, scale_embeddings=True, norm_unit_offset=True,
        mlp_activation="gelu_tanh", post_norms=True, attn_logit_softcap=0.5,
        final_logit_softcap=2.0, query_pre_attn_scalar=20.0, sliding_window=3,
        sliding_window_layers="alternate", **F32),
}


def _perturbed_params(config, seed=0):
  """Initial params plus noise on every leaf, so zero biases and unit scales are exercised."""

  def perturbed(key):
    params = transformer.init_params(config, key)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    noisy = [x + 0.1 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, noisy)

  return perturbed(jax.random.key(seed))


# ---------------------------------------------------------------------------------------------
# Independent float64 numpy reference (HF modeling_llama / qwen2 / gemma equations).


def _np_inv_freq(c):
  inv = 1.0 / c.rope_theta ** (np.arange(0, c.head_dim, 2) / c.head_dim)
  s = c.rope_scaling
  if s is None:
    return inv
  low_wl = s.original_max_length / s.low_freq_factor
  high_wl = s.original_max_length / s.high_freq_factor
  out = []
  for f in inv:
    wl = 2 * math.pi / f
    if wl < high_wl:
      out.append(f)
    elif wl > low_wl:
      out.append(f / s.factor)
    else:
      smooth = (s.original_max_length / wl - s.low_freq_factor) / (
          s.high_freq_factor - s.low_freq_factor)
      out.append((1 - smooth) * f / s.factor + smooth * f)
  return np.array(out)


def _np_rope(x, pos, c):  # x [T, heads, hd], pos [T]
  ang = pos[:, None] * _np_inv_freq(c)[None, :]
  ang = np.concatenate([ang, ang], -1)[:, None, :]
  half = c.head_dim // 2
  rot = np.concatenate([-x[..., half:], x[..., :half]], -1)
  return x * np.cos(ang) + rot * np.sin(ang)


def _np_rms(x, w, c):
  y = x / np.sqrt(np.mean(x * x, -1, keepdims=True) + c.norm_eps)
  return y * ((1.0 + w) if c.norm_unit_offset else w)


def _np_act(x, c):
  if c.mlp_activation == "silu":
    return x / (1 + np.exp(-x))
  return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def reference_hidden(c, params, tokens, positions, mask):
  """Float64 forward of one row: tokens, positions [T], mask [T, T] bool -> [T, D].

  Sliding-window layers also mask keys W or more positions behind the query (HF's
  `sliding_window_overlay`: key > query − W)."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  x = p["embed"]["embedding"][tokens]
  if c.scale_embeddings:
    x = x * math.sqrt(c.width)
  t, h, g, hd = len(tokens), c.num_heads, c.num_kv_heads, c.head_dim
  for i in range(c.depth):
    lp = p[f"layers_{i}"]
    n = _np_rms(x, lp["attn_norm"]["scale"], c)
    proj = {}
    for name, heads in (("q", h), ("k", g), ("v", g)):
      y = n @ lp["attn"][name]["kernel"]
      if c.qkv_bias:
        y = y + lp["attn"][name]["bias"]
      proj[name] = y.reshape(t, heads, hd)
      if c.qk_norm and name != "v":  # Qwen3: RMSNorm over each head's hd, before RoPE.
        proj[name] = _np_rms(proj[name], lp["attn"][f"{name}_norm"]["scale"], c)
    q, k = _np_rope(proj["q"], positions, c), _np_rope(proj["k"], positions, c)
    layer_mask = mask
    if c.is_sliding(i):
      layer_mask = mask & (positions[:, None] - positions[None, :] < c.sliding_window)
    out = np.zeros((t, h, hd))
    for head in range(h):
      kv = head // (h // g)  # HF repeat_kv: each kv head serves h/g consecutive query heads.
      s = q[:, head] @ k[:, kv].T / math.sqrt(c.query_pre_attn_scalar or hd)
      if c.attn_logit_softcap is not None:
        s = c.attn_logit_softcap * np.tanh(s / c.attn_logit_softcap)
      s = np.where(layer_mask, s, -np.inf)
      w = np.exp(s - s.max(-1, keepdims=True))
      out[:, head] = (w / w.sum(-1, keepdims=True)) @ proj["v"][:, kv]
    attn = out.reshape(t, h * hd) @ lp["attn"]["o"]["kernel"]
    if c.post_norms:  # Gemma 2: the sub-layer output is normed before the residual add.
      attn = _np_rms(attn, lp["attn_post_norm"]["scale"], c)
    x = x + attn
    n = _np_rms(x, lp["mlp_norm"]["scale"], c)
    m = lp["mlp"]
    mlp = (_np_act(n @ m["gate"]["kernel"], c) * (n @ m["up"]["kernel"])) @ m["down"]["kernel"]
    if c.post_norms:
      mlp = _np_rms(mlp, lp["mlp_post_norm"]["scale"], c)
    x = x + mlp
  return _np_rms(x, p["final_norm"]["scale"], c)


# ---------------------------------------------------------------------------------------------


def _expected_tree(c):
  d, v, f = c.width, c.vocab_size, c.mlp_dim
  qd, kd = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
  tree = {"embed/embedding": ((v, d), ("vocab", "embed")),
          "final_norm/scale": ((d,), ("embed",))}
  for i in range(c.depth):
    pre = f"layers_{i}/"
    tree.update({
        pre + "attn_norm/scale": ((d,), ("embed",)),
        pre + "attn/q/kernel": ((d, qd), ("embed", "heads")),
        pre + "attn/k/kernel": ((d, kd), ("embed", "kv")),
        pre + "attn/v/kernel": ((d, kd), ("embed", "kv")),
        pre + "attn/o/kernel": ((qd, d), ("heads", "embed")),
        pre + "mlp_norm/scale": ((d,), ("embed",)),
        pre + "mlp/gate/kernel": ((d, f), ("embed", "mlp")),
        pre + "mlp/up/kernel": ((d, f), ("embed", "mlp")),
        pre + "mlp/down/kernel": ((f, d), ("mlp", "embed")),
    })
    if c.qkv_bias:
      tree.update({pre + "attn/q/bias": ((qd,), ("heads",)),
                   pre + "attn/k/bias": ((kd,), ("kv",)),
                   pre + "attn/v/bias": ((kd,), ("kv",))})
    if c.qk_norm:
      tree.update({pre + "attn/q_norm/scale": ((c.head_dim,), (None,)),
                   pre + "attn/k_norm/scale": ((c.head_dim,), (None,))})
    if c.post_norms:
      tree.update({pre + "attn_post_norm/scale": ((d,), ("embed",)),
                   pre + "mlp_post_norm/scale": ((d,), ("embed",))})
  if not c.tie_embeddings:
    tree["lm_head/kernel"] = ((d, v), ("embed", "vocab"))
  return tree


def _flatten(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, prefix + k + "/"))
    else:
      out[prefix + k] = v
  return out


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_param_tree_names_shapes_and_logical_axes(name):
  c = VARIANTS[name]
  params = transformer.init_params(c, jax.random.key(0))
  assert type(params) is dict
  flat = _flatten(params)
  axes = _flatten(transformer.logical_axes(c))
  expected = _expected_tree(c)
  assert sorted(flat) == sorted(expected)
  assert sorted(axes) == sorted(expected)
  for path, (shape, names) in expected.items():
    assert flat[path].shape == shape, path
    assert flat[path].dtype == jnp.float32, path
    assert axes[path] == names, path
  norm_init = 0.0 if c.norm_unit_offset else 1.0
  np.testing.assert_array_equal(flat["final_norm/scale"], norm_init)
  assert 0.015 < float(jnp.std(flat["layers_0/mlp/up/kernel"])) < 0.025  # N(0, 0.02²).


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_forward_matches_float64_numpy_reference(name):
  c = VARIANTS[name]
  params = _perturbed_params(c)
  rng = np.random.default_rng(0)
  # Row 0: one sequence at positions 5.. (exercises RoPE offsets and the Llama-3 bands);
  # row 1: two packed segments and padding.
  tokens = rng.integers(0, c.vocab_size, (2, 12)).astype(np.int32)
  positions = np.array([np.arange(5, 17), list(range(7)) + list(range(3)) + [0, 0]], np.int32)
  segments = np.array([[1] * 12, [1] * 7 + [2] * 3 + [0, 0]], np.int32)
  hidden = apply(c, params, tokens, positions, segments)
  assert hidden.shape == (2, 12, c.width) and hidden.dtype == jnp.float32
  for row in range(2):
    seg = segments[row]
    mask = np.tril(np.ones((12, 12), bool)) & (seg[:, None] == seg[None, :])
    want = reference_hidden(c, params, tokens[row], positions[row].astype(np.float64), mask)
    real = seg != 0
    np.testing.assert_allclose(np.asarray(hidden[row])[real], want[real], atol=2e-5, rtol=2e-5)


def test_rope_is_a_relative_position_encoding():
  # q·k after RoPE depends only on the position difference: shifting all positions by 11
  # leaves the hidden states of a single sequence unchanged (up to float32 rounding).
  c = VARIANTS["llama_untied"]
  params = _perturbed_params(c)
  tokens = jnp.arange(1, 9, dtype=jnp.int32)[None]
  ones = jnp.ones_like(tokens)
  base = apply(c, params, tokens, jnp.arange(8)[None], ones)
  shifted = apply(c, params, tokens, jnp.arange(8)[None] + 11, ones)
  np.testing.assert_allclose(base, shifted, atol=1e-4)
  # Positions are not ignored: a permutation of positions changes the output.
  permuted = apply(c, params, tokens, jnp.arange(8)[::-1][None], ones)
  assert float(jnp.max(jnp.abs(base - permuted))) > 1e-2


def test_causal_mask_future_tokens_do_not_change_the_past():
  c = VARIANTS["llama_untied"]
  params = _perturbed_params(c)
  tokens = jnp.array([[3, 1, 4, 1, 5, 9, 2, 6]], jnp.int32)
  pos, seg = jnp.arange(8)[None], jnp.ones((1, 8), jnp.int32)
  h = apply(c, params, tokens, pos, seg)
  h2 = apply(c, params, tokens.at[0, 5].set(7), pos, seg)
  np.testing.assert_array_equal(h[:, :5], h2[:, :5])
  assert float(jnp.max(jnp.abs(h[:, 5:] - h2[:, 5:]))) > 1e-3


def test_leading_batch_dims_and_explicit_mask_override():
  c = VARIANTS["gemma_mqa"]
  params = _perturbed_params(c)
  rng = np.random.default_rng(1)
  tokens = rng.integers(0, c.vocab_size, (2, 3, 6)).astype(np.int32)
  pos = np.broadcast_to(np.arange(6), tokens.shape)
  seg = np.ones_like(tokens)
  seg[1, 2, 4:] = 0
  h = apply(c, params, tokens, pos, seg)
  assert h.shape == (2, 3, 6, c.width)
  flat = apply(c, params, tokens.reshape(6, 6), pos.reshape(6, 6), seg.reshape(6, 6))
  np.testing.assert_allclose(h.reshape(6, 6, -1), flat, atol=1e-6)
  # Passing the default causal-and-segment mask explicitly changes nothing.
  mask = transformer.causal_segment_mask(jnp.asarray(seg))
  h_mask = apply(c, params, tokens, pos, seg, attention_mask=mask)
  np.testing.assert_allclose(h_mask, h, atol=1e-6)
  with pytest.raises(ValueError, match="attention_mask has shape"):
    apply(c, params, tokens, pos, seg, attention_mask=mask[..., :5])
  with pytest.raises(ValueError, match="positions has shape"):
    apply(c, params, tokens, pos[..., :5], seg)
  with pytest.raises(TypeError, match="integer"):
    apply(c, params, tokens.astype(np.float32), pos, seg)


def test_causal_segment_mask_by_hand():
  seg = jnp.array([1, 1, 2, 2, 0])
  want = np.array([[1, 0, 0, 0, 0],
                   [1, 1, 0, 0, 0],
                   [0, 0, 1, 0, 0],
                   [0, 0, 1, 1, 0],
                   [0, 0, 0, 0, 0]], bool)
  np.testing.assert_array_equal(transformer.causal_segment_mask(seg), want)


@pytest.mark.parametrize("name", ["qwen2_bias", "gemma2_sandwich"])
def test_kv_cache_decode_equals_full_forward(name):
  # Right-padded prompts of lengths 5 and 3, prefilled in one call, then 4 tokens decoded one at
  # a time at slots 6.. with per-row positions; compare with the full forward of each row. (With
  # a window of 3, the cached positions, not the slots, decide which keys a token still sees.)
  c = VARIANTS[name]
  params = _perturbed_params(c)
  rng = np.random.default_rng(2)
  p, n, lengths = 6, 4, np.array([5, 3])
  prompts = rng.integers(1, c.vocab_size, (2, p)).astype(np.int32)
  continuation = rng.integers(1, c.vocab_size, (2, n)).astype(np.int32)
  cache = transformer.init_cache(c, 2, p + n)
  segments = (np.arange(p)[None] < lengths[:, None]).astype(np.int32)
  prefill, cache = apply(c, params, prompts, np.broadcast_to(np.arange(p), (2, p)),
                                     segments, cache=cache)
  decode = jax.jit(lambda tok, pos, cache: transformer.apply(
      c, params, tok, pos, jnp.ones_like(tok), cache=cache))
  steps = []
  for i in range(n):
    h, cache = decode(continuation[:, i:i + 1], (lengths + i)[:, None], cache)
    steps.append(h[:, 0])
  assert int(cache["index"]) == p + n
  for row in range(2):
    seq = np.concatenate([prompts[row, :lengths[row]], continuation[row]])
    full = apply(c, params, seq[None], np.arange(len(seq))[None],
                             np.ones((1, len(seq)), np.int32))[0]
    np.testing.assert_allclose(prefill[row, :lengths[row]], full[:lengths[row]], atol=1e-5)
    np.testing.assert_allclose(np.stack([s[row] for s in steps]), full[lengths[row]:],
                               atol=1e-5)


def test_remat_gives_the_same_values_and_gradients():
  base = VARIANTS["llama_untied"]
  params = _perturbed_params(base)
  tokens = jnp.array([[1, 2, 3, 4, 5, 6]], jnp.int32)
  pos, seg = jnp.arange(6)[None], jnp.ones((1, 6), jnp.int32)
  mask = jnp.array([[0, 0, 0, 1, 1, 1]], bool)

  def loss(params, c):
    return transformer.naive_sequence_logps(c, params, tokens, pos, seg, mask)[0].sum()

  value_and_grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  want, want_grad = value_and_grad(params, base)
  got, grad = value_and_grad(params, dataclasses.replace(base, remat="full"))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), grad,
               want_grad)


def test_naive_sequence_logps_against_numpy():
  c = VARIANTS["qwen2_bias"]
  params = _perturbed_params(c)
  # docs/interfaces.md#batches example: prompt [1,2,3], chosen [4,5], rejected [6].
  tokens = np.array([[1, 2, 3, 4, 5], [1, 2, 3, 6, 0]], np.int32)
  segs = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], np.int32)
  pos = np.array([[0, 1, 2, 3, 4], [0, 1, 2, 3, 0]], np.int32)
  comp = np.array([[0, 0, 0, 1, 1], [0, 0, 0, 1, 0]], bool)
  logps, counts = transformer.naive_sequence_logps(c, params, tokens, pos, segs, comp)
  np.testing.assert_array_equal(counts, [2, 1])
  head = np.asarray(params["embed"]["embedding"], np.float64).T  # tied
  for row in range(2):
    length = segs[row].sum()
    hid = reference_hidden(c, params, tokens[row, :length], pos[row, :length].astype(float),
                           np.tril(np.ones((length, length), bool)))
    z = hid @ head
    lsm = z - z.max(-1, keepdims=True)
    lsm = lsm - np.log(np.exp(lsm).sum(-1, keepdims=True))
    want = sum(lsm[t - 1, tokens[row, t]] for t in range(length) if comp[row, t])
    np.testing.assert_allclose(logps[row], want, atol=2e-5)


def test_a_window_as_long_as_the_sequence_changes_nothing():
  c = VARIANTS["llama_untied"]
  params = _perturbed_params(c)
  tokens = jnp.array([[3, 1, 4, 1, 5, 9, 2, 6]], jnp.int32)
  pos, seg = jnp.arange(8)[None] + 40, jnp.ones((1, 8), jnp.int32)
  h = apply(c, params, tokens, pos, seg)
  wide = apply(dataclasses.replace(c, sliding_window=8), params, tokens, pos, seg)
  np.testing.assert_array_equal(wide, h)
  narrow = apply(dataclasses.replace(c, sliding_window=7), params, tokens, pos, seg)
  np.testing.assert_array_equal(narrow[:, :7], h[:, :7])  # only the last query loses a key
  assert float(jnp.max(jnp.abs(narrow[:, 7] - h[:, 7]))) > 1e-3


def test_final_logit_soft_cap():
  c = VARIANTS["gemma2_sandwich"]
  hidden = jax.random.normal(jax.random.key(0), (3, c.width)) * 4.0
  params = _perturbed_params(c)
  raw = transformer.logits(dataclasses.replace(c, final_logit_softcap=None), params, hidden)
  capped = transformer.logits(c, params, hidden)
  assert float(jnp.max(jnp.abs(raw))) > 2.0  # the cap bends something
  np.testing.assert_allclose(capped, 2.0 * np.tanh(np.asarray(raw) / 2.0), atol=1e-6)
  # soft_cap by hand: 2·tanh(1/2) = 0.924234, 2·tanh(-3/2) = -1.810296; None is the identity.
  np.testing.assert_allclose(transformer.soft_cap(jnp.array([1.0, -3.0]), 2.0),
                             [0.924234, -1.810296], atol=1e-6)
  assert transformer.soft_cap(raw, None) is raw


def test_bfloat16_compute_is_close_to_float32():
  c32 = VARIANTS["llama_untied"]
  c16 = dataclasses.replace(c32, dtype=jnp.bfloat16)
  params = transformer.init_params(c32, jax.random.key(3))
  tokens = jnp.array([[5, 6, 7, 8]], jnp.int32)
  pos, seg = jnp.arange(4)[None], jnp.ones((1, 4), jnp.int32)
  h16 = apply(c16, params, tokens, pos, seg)
  h32 = apply(c32, params, tokens, pos, seg)
  assert h16.dtype == jnp.bfloat16
  assert jax.tree.leaves(params)[0].dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(h16, np.float32), h32, atol=0.1, rtol=0.05)
  assert transformer.logits(c16, params, h16).dtype == jnp.float32


@pytest.mark.parametrize("name, want", [
    # Exact parameter counts of the published safetensors checkpoints (tied embeddings counted
    # once): Llama-3.2-1B 1.24B, Qwen2.5-0.5B 0.49B, Gemma-2B 2.51B.
    ("llama3_2_1b", 1_235_814_400),
    ("qwen2_5_0_5b", 494_032_768),
    ("gemma_2b", 2_506_172_416),
])
def test_presets_have_the_real_parameter_counts(name, want):
  c = config_lib.get_config(name)
  shapes = jax.eval_shape(lambda k: transformer.init_params(c, k), jax.random.key(0))
  count = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))
  assert count == want
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(shapes))


def test_config_validation_and_presets():
  assert set(config_lib.preset_names()) == {"tiny", "small", "llama3_2_1b", "qwen2_5_0_5b",
                                            "gemma_2b"}
  c = config_lib.get_config("tiny", dtype="float32")
  assert c.dtype == jnp.float32 and hash(c) == hash(config_lib.get_config("tiny", **F32))
  with pytest.raises(KeyError, match="known presets"):
    config_lib.get_config("llama9")
  with pytest.raises(TypeError, match="unknown ModelConfig fields"):
    config_lib.get_config("tiny", heads=3)
  with pytest.raises(ValueError, match="multiple of num_kv_heads"):
    config_lib.get_config("tiny", num_kv_heads=3)
  with pytest.raises(ValueError, match="remat"):
    config_lib.get_config("tiny", remat="some")
  with pytest.raises(ValueError, match="width must be a positive int"):
    config_lib.get_config("tiny", width=0)


_MESH_SCRIPT = textwrap.dedent("""
    import re
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    from alignment.models import config as config_lib, transformer

    c = config_lib.get_config("tiny", dtype="float32")
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
    rules = (("batch", ("data", "fsdp")), ("embed", "fsdp"), ("heads", "tensor"),
             ("kv", "tensor"), ("mlp", "tensor"), ("vocab", "tensor"), ("length", None))
    params = transformer.init_params(c, jax.random.key(0))
    tokens = np.arange(64).reshape(8, 8) % c.vocab_size
    f = jax.jit(lambda p, t: transformer.apply(c, p, t, np.broadcast_to(np.arange(8), (8, 8)),
                                               np.ones((8, 8), np.int32)))
    want = f(params, tokens)
    shardings = jax.tree.map(
        lambda names: NamedSharding(mesh, nn.logical_to_mesh_axes(names, rules)),
        transformer.logical_axes(c), is_leaf=lambda x: isinstance(x, tuple))
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      sharded = jax.device_put(params, shardings)
      hlo = f.lower(sharded, tokens).as_text()
      got = f(sharded, tokens)
    print("constraints", len(re.findall("sharding_constraint", hlo)))
    print("diff", float(jnp.max(jnp.abs(got - want))))
    print("spec", tuple(got.sharding.spec))
    print("q_kernel", tuple(sharded["layers_0"]["attn"]["q"]["kernel"].sharding.spec))
""")


def test_logical_annotations_shard_on_an_8_device_mesh():
  # Subprocess: 8 simulated CPU devices must be configured before JAX starts.
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  out = subprocess.run([sys.executable, "-c", _MESH_SCRIPT], env=env, capture_output=True,
                       text=True, timeout=300, check=True).stdout
  lines = dict(line.split(" ", 1) for line in out.strip().splitlines())
  depth = config_lib.get_config("tiny").depth
  # Embedding output + per layer: q, attention output, MLP hidden, block output.
  assert int(lines["constraints"]) == 1 + 4 * depth
  assert float(lines["diff"]) < 1e-5  # Sharded forward == single-device forward.
  assert lines["spec"] == "(('data', 'fsdp'),)"  # Hidden [B, T, D]: batch over data x fsdp.
  assert lines["q_kernel"] == "('fsdp', 'tensor')"
