"""Reference log-prob cache: computed once per (parameters, data), never reused when either changes."""

import os

import jax.numpy as jnp
import numpy as np

from alignment.training import reference


def _logp_fn(params, batch):
  logps = jnp.einsum("nkf,f->nk", batch["x"], params["w"])
  return logps, jnp.ones_like(logps)


def _data(n=10, seed=0):
  return {"x": np.random.default_rng(seed).normal(size=(n, 3, 4)).astype(np.float32)}


def test_values_match_direct_computation_with_partial_last_batch():
  params, data = {"w": jnp.arange(4.0)}, _data(n=10)
  logps = reference.compute_reference_logps(_logp_fn, params, data, batch_size=4)
  np.testing.assert_allclose(logps, np.einsum("nkf,f->nk", data["x"], np.arange(4.0)), atol=1e-5)
  assert logps.shape == (10, 3)


def test_cache_is_reused_and_keyed_by_params_and_data(tmp_path):
  params, data = {"w": jnp.arange(4.0)}, _data()
  first = reference.cached_reference_logps(str(tmp_path), _logp_fn, params, data, batch_size=4)
  assert len(os.listdir(tmp_path)) == 1
  # A poisoned cache file proves the second call reads from disk instead of recomputing.
  (path,) = [os.path.join(tmp_path, f) for f in os.listdir(tmp_path)]
  np.save(path, np.full_like(first, 7.0))
  again = reference.cached_reference_logps(str(tmp_path), _logp_fn, params, data, batch_size=4)
  np.testing.assert_array_equal(again, 7.0)
  other_params = reference.cached_reference_logps(
      str(tmp_path), _logp_fn, {"w": jnp.arange(4.0) + 1}, data, batch_size=4)
  other_data = reference.cached_reference_logps(
      str(tmp_path), _logp_fn, params, _data(seed=1), batch_size=4)
  assert len(os.listdir(tmp_path)) == 3
  assert not np.allclose(other_params, 7.0) and not np.allclose(other_data, 7.0)


def test_cache_key_changes_with_any_byte():
  params, data = {"w": np.arange(4.0, dtype=np.float32)}, _data()
  key = reference.cache_key(params, data)
  tweaked = {"w": params["w"].copy()}
  tweaked["w"][2] = np.nextafter(tweaked["w"][2], np.float32(9))
  assert reference.cache_key(tweaked, data) != key
  assert reference.cache_key(params, data) == key
