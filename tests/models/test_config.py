"""Decoder configuration: the preset table, validation, canonical dtypes and hashing.

Parameter counts of the real-model presets are checked against the published checkpoints in
`tests/models/test_transformer.py`.
"""

import dataclasses
import re

import jax
import jax.numpy as jnp
import pytest

from alignment.models import config as config_lib


def _documented_presets():
  """`{name: (V, D, L, H, G, hd, F)}` from the table in the module docstring."""
  rows = re.findall(r"^\| `(\w+)` +\|[^|]*\| ([\d, /]+?) +\|$", config_lib.__doc__, re.MULTILINE)
  return {name: tuple(int(x) for x in re.split(r"[,/]\s*", shape)) for name, shape in rows}


def test_the_documented_preset_table_is_the_presets():
  documented = _documented_presets()
  assert set(documented) == set(config_lib.preset_names())
  for name, shape in documented.items():
    c = config_lib.get_config(name)
    assert (c.vocab_size, c.width, c.depth, c.num_heads, c.num_kv_heads, c.head_dim,
            c.mlp_dim) == shape, name


def test_dtypes_are_canonical_so_equal_configs_hash_equal():
  a = config_lib.get_config("tiny", dtype="bfloat16", param_dtype=jnp.float32)
  b = config_lib.get_config("tiny", dtype=jnp.bfloat16, param_dtype="float32")
  assert a == b and hash(a) == hash(b)
  assert a.dtype == jnp.dtype(jnp.bfloat16) and b.param_dtype == jnp.dtype(jnp.float32)
  # Hashable configs are static arguments of jit: equal configs share one trace.
  traces = []

  def width(config, x):
    traces.append(config)
    return x * config.width

  jitted = jax.jit(width, static_argnums=0)
  assert int(jitted(a, 1)) == int(jitted(b, 1)) == 64
  assert len(traces) == 1


def test_overrides_replace_fields_and_keep_the_preset():
  c = config_lib.get_config("tiny", tie_embeddings=True, remat="dots", norm_eps=1e-6)
  assert (c.tie_embeddings, c.remat, c.norm_eps) == (True, "dots", 1e-6)
  assert dataclasses.replace(c, tie_embeddings=False, remat="none", norm_eps=1e-5) == (
      config_lib.get_config("tiny"))
  with pytest.raises(dataclasses.FrozenInstanceError):
    c.width = 8


@pytest.mark.parametrize("overrides, match", [
    (dict(head_dim=15), "head_dim must be even for RoPE"),
    (dict(mlp_activation="relu"), "mlp_activation must be one of"),
    (dict(rope_theta=0.0), "rope_theta and norm_eps must be positive"),
    (dict(norm_eps=-1e-6), "rope_theta and norm_eps must be positive"),
    (dict(depth=True), "depth must be a positive int"),
    (dict(vocab_size=32.0), "vocab_size must be a positive int"),
    (dict(attn_logit_softcap=0.0), "attn_logit_softcap must be None or positive"),
    (dict(final_logit_softcap=-30.0), "final_logit_softcap must be None or positive"),
    (dict(query_pre_attn_scalar=True), "query_pre_attn_scalar must be None or positive"),
    (dict(sliding_window=0), "sliding_window must be None or a positive int"),
    (dict(sliding_window=4.0), "sliding_window must be None or a positive int"),
    (dict(sliding_window_layers="odd"), "sliding_window_layers must be one of"),
])
def test_invalid_fields_are_named(overrides, match):
  with pytest.raises(ValueError, match=match):
    config_lib.get_config("tiny", **overrides)


def test_family_features_are_off_by_default_and_windows_pick_layers():
  c = config_lib.get_config("tiny")
  assert not (c.qk_norm or c.post_norms)
  assert (c.attn_logit_softcap, c.final_logit_softcap, c.query_pre_attn_scalar,
          c.sliding_window) == (None, None, None, None)
  assert not any(c.is_sliding(i) for i in range(4))
  every = config_lib.get_config("tiny", sliding_window=8)
  alternate = config_lib.get_config("tiny", sliding_window=8, sliding_window_layers="alternate")
  assert [every.is_sliding(i) for i in range(4)] == [True] * 4
  assert [alternate.is_sliding(i) for i in range(4)] == [True, False, True, False]


def test_llama3_rope_scaling_defaults_are_llama_3_2s():
  # Llama-3.2-1B's config.json: factor 32, low 1, high 4, original context 8192.
  scaling = config_lib.get_config("llama3_2_1b").rope_scaling
  assert scaling == config_lib.Llama3RopeScaling(factor=32.0, low_freq_factor=1.0,
                                                 high_freq_factor=4.0, original_max_length=8192)
