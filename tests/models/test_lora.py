"""Tests of alignment.models.lora: functional LoRA over the decoder's parameter tree."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alignment.models import config as config_lib
from alignment.models import logprobs
from alignment.models import lora
from alignment.models import transformer

CONFIG = config_lib.get_config("tiny", dtype=jnp.float32, depth=1)
TOKENS = np.array([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 0]], np.int32)
SEGMENTS = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]], np.int32)
POSITIONS = np.where(SEGMENTS > 0, np.arange(6), 0).astype(np.int32)
MASK = np.array([[0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0]], bool)


@functools.partial(jax.jit, static_argnames="enabled")
def _logps(params, adapters, enabled=True):
  return logprobs.sequence_logps(CONFIG, lora.merge(params, adapters, enabled=enabled), TOKENS,
                                 POSITIONS, SEGMENTS, MASK, chunk_size=4)[0]


@jax.jit
def _base_logps(params):
  return logprobs.sequence_logps(CONFIG, params, TOKENS, POSITIONS, SEGMENTS, MASK,
                                 chunk_size=4)[0]


@pytest.fixture(scope="module")
def params():
  return transformer.init_params(CONFIG, jax.random.key(0))


def _randomise_b(adapters, key):
  """Adapters with random B (init has B = 0), so that A @ B != 0."""
  leaves, treedef = jax.tree.flatten(adapters)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(treedef, [x if np.any(x) else 0.1 * jax.random.normal(k, x.shape)
                                      for x, k in zip(leaves, keys)])


def test_init_shapes_and_initial_model_equals_base(params):
  adapters = lora.init_lora(params, jax.random.key(1), rank=4, alpha=8.0)
  assert adapters.scale == 2.0  # alpha / rank = 8 / 4
  q = adapters.weights["layers_0"]["attn"]["q"]
  assert q["a"].shape == (64, 4) and q["b"].shape == (4, 64)  # D = 64, H·hd = 4·16
  down = adapters.weights["layers_0"]["mlp"]["down"]
  assert down["a"].shape == (128, 4) and down["b"].shape == (4, 64)  # F = 128
  assert set(adapters.weights["layers_0"]["attn"]) == {"q", "k", "v", "o"}
  assert all(not np.any(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(adapters)
             if path[-1].key == "b")
  # A ~ N(0, 1/in): 64·4 samples of variance 1/64 -> sample std within 20% of 1/8.
  assert 0.1 < float(jnp.std(q["a"])) < 0.15
  merged = lora.merge(params, adapters)
  for got, want in zip(jax.tree.leaves(merged), jax.tree.leaves(params)):
    np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(_logps(params, adapters), _logps(params, adapters, False))


def test_merge_formula_and_sharing(params):
  adapters = _randomise_b(lora.init_lora(params, jax.random.key(2), rank=2, alpha=3.0,
                                         targets=("q", "down")), jax.random.key(3))
  merged = lora.merge(params, adapters)
  for group, name in (("attn", "q"), ("mlp", "down")):
    factors = adapters.weights["layers_0"][group][name]
    want = (np.asarray(params["layers_0"][group][name]["kernel"], np.float64)
            + 1.5 * np.asarray(factors["a"], np.float64) @ np.asarray(factors["b"], np.float64))
    np.testing.assert_allclose(merged["layers_0"][group][name]["kernel"], want, atol=1e-6)
  # Untouched leaves are the very same arrays (no copy of the base weights).
  assert merged["layers_0"]["attn"]["k"]["kernel"] is params["layers_0"]["attn"]["k"]["kernel"]
  assert merged["embed"]["embedding"] is params["embed"]["embedding"]
  assert lora.merge(params, adapters, enabled=False) is params
  assert not np.allclose(_logps(params, adapters), _logps(params, adapters, False))


def test_reference_with_adapters_off_equals_base_model(params):
  adapters = _randomise_b(lora.init_lora(params, jax.random.key(4)), jax.random.key(5))
  np.testing.assert_array_equal(_logps(params, adapters, False), _base_logps(params))


def test_gradients_reach_only_adapters_and_follow_chain_rule(params):
  adapters = _randomise_b(lora.init_lora(params, jax.random.key(6), rank=2, alpha=4.0),
                          jax.random.key(7))
  loss = lambda ad: -jnp.sum(_logps(params, ad))
  grads = jax.jit(jax.grad(loss))(adapters)
  assert isinstance(grads, lora.LoraAdapters) and grads.scale == adapters.scale
  assert jax.tree.structure(grads) == jax.tree.structure(adapters)
  # Chain rule through W' = W + s·A@B: dL/dA = s·G·Bᵀ and dL/dB = s·Aᵀ·G with G = dL/dW'.
  merged = lora.merge(params, adapters)
  g_w = jax.jit(jax.grad(lambda p: -jnp.sum(_base_logps(p))))(merged)
  for group, name in (("attn", "v"), ("mlp", "up")):
    g = np.asarray(g_w["layers_0"][group][name]["kernel"], np.float64)
    factors = adapters.weights["layers_0"][group][name]
    a, b = np.asarray(factors["a"], np.float64), np.asarray(factors["b"], np.float64)
    got = grads.weights["layers_0"][group][name]
    np.testing.assert_allclose(got["a"], 2.0 * g @ b.T, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(got["b"], 2.0 * a.T @ g, atol=1e-5, rtol=1e-4)
    assert np.any(np.asarray(got["a"]) != 0) and np.any(np.asarray(got["b"]) != 0)


def test_training_adapters_leaves_base_frozen(params):
  adapters = lora.init_lora(params, jax.random.key(8), rank=2)
  base_copy = jax.tree.map(np.array, params)
  optimizer = optax.adam(1e-2)
  state = optimizer.init(adapters)
  loss = jax.jit(lambda ad: -jnp.sum(_logps(params, ad)))
  grad = jax.jit(jax.grad(loss))
  start = float(loss(adapters))
  for _ in range(3):
    updates, state = optimizer.update(grad(adapters), state)
    adapters = optax.apply_updates(adapters, updates)
  assert float(loss(adapters)) < start  # the policy moved ...
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(base_copy)):
    np.testing.assert_array_equal(got, want)  # ... the base (and reference) did not
  np.testing.assert_array_equal(_logps(params, adapters, False), _base_logps(params))


def test_logical_axes_follow_kernels(params):
  adapters = lora.init_lora(params, jax.random.key(9), targets=("k", "o"))
  axes = lora.logical_axes(adapters, transformer.logical_axes(CONFIG))
  assert axes.weights["layers_0"]["attn"]["k"] == {"a": ("embed", None), "b": (None, "kv")}
  assert axes.weights["layers_0"]["attn"]["o"] == {"a": ("heads", None), "b": (None, "embed")}


def test_bad_arguments(params):
  with pytest.raises(ValueError, match=r"targets \['qq'\] match no 2-D kernel"):
    lora.init_lora(params, jax.random.key(0), targets=("q", "qq"))
  with pytest.raises(ValueError, match="rank must be a positive int"):
    lora.init_lora(params, jax.random.key(0), rank=0)
  adapters = lora.init_lora(params, jax.random.key(0), targets=("q",))
  with pytest.raises(ValueError, match="has A"):
    lora.merge(params, lora.LoraAdapters(
        weights={"layers_0": {"attn": {"q": {"a": jnp.zeros((3, 8)), "b": jnp.zeros((8, 64))}}}},
        scale=1.0))
  with pytest.raises(ValueError, match="layers_7/attn/q has no kernel"):
    lora.merge(params, lora.LoraAdapters(weights={"layers_7": adapters.weights["layers_0"]},
                                         scale=1.0))
