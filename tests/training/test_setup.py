"""Run set-up shared by the recipes: the batch log-prob function and parameter files."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment.models import config as model_config
from alignment.models import transformer
from alignment.training import setup


def test_logp_fn_matches_full_logits_on_the_batch_layout():
  config = model_config.get_config("tiny", dtype=jnp.float32, vocab_size=32)
  params = transformer.init_params(config, jax.random.key(0))
  rng = np.random.default_rng(0)
  # [B = 2, K = 2, T = 8]: prompt = the first 3 tokens, row 1 slot 1 padded after 6 tokens.
  tokens = rng.integers(1, 32, (2, 2, 8)).astype(np.int32)
  segment_ids = np.ones_like(tokens)
  segment_ids[1, 1, 6:] = 0
  completion = np.zeros(tokens.shape, bool)
  completion[..., 3:] = True
  completion &= segment_ids > 0
  batch = {"tokens": tokens, "segment_ids": segment_ids, "completion_mask": completion,
           "positions": np.broadcast_to(np.arange(8, dtype=np.int32), tokens.shape)}
  logps, counts = setup.logp_fn(config, chunk_size=3)(params, batch)
  want_logps, want_counts = transformer.naive_sequence_logps(
      config, params, tokens, batch["positions"], segment_ids, completion)
  np.testing.assert_array_equal(counts, [[5, 5], [5, 3]])
  np.testing.assert_array_equal(counts, want_counts)
  np.testing.assert_allclose(logps, want_logps, rtol=1e-5)


def test_params_round_trip_through_a_file(tmp_path):
  params = {"dense": {"kernel": jnp.arange(6.0).reshape(2, 3), "bias": jnp.ones(3, jnp.bfloat16)},
            "scale": jnp.float32(0.5)}
  path = setup.save_params(params, str(tmp_path / "run"))
  assert path == os.path.join(tmp_path, "run", setup.PARAMS_FILE)
  assert os.listdir(tmp_path / "run") == [setup.PARAMS_FILE]  # the temporary file is gone
  template = jax.tree.map(jnp.zeros_like, params)
  for source in (str(tmp_path / "run"), path):  # a workdir or the file itself
    loaded = setup.load_params(template, source)
    assert jax.tree.structure(loaded) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
      assert a.dtype == b.dtype
      np.testing.assert_array_equal(a, b)


def test_missing_params_file_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="No parameter file at .*params.msgpack"):
    setup.load_params({"w": jnp.zeros(2)}, str(tmp_path))
