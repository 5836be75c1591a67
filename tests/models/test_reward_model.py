"""Tests of alignment.models.reward_model: parameter tree, the scored token, values against a
float64 numpy head over the decoder's hidden states, and where gradients flow."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment.models import config as config_lib
from alignment.models import reward_model
from alignment.models import transformer

CONFIG = config_lib.get_config("tiny", dtype=jnp.float32, vocab_size=13, width=32, mlp_dim=64)


def _batch():
  """Two lists of K = 2 (layout of docs/interfaces.md#batches), T = 6.

  List 0: prompt [1, 2, 3], responses [4, 5] and [6]; list 1: prompt [7, 8], responses
  [9, 10, 11, 12] and an empty response (a padded slot: prompt only).
  """
  tokens = np.array([[[1, 2, 3, 4, 5, 0], [1, 2, 3, 6, 0, 0]],
                     [[7, 8, 9, 10, 11, 12], [7, 8, 0, 0, 0, 0]]], np.int32)
  segment_ids = (tokens != 0).astype(np.int32)
  positions = np.where(segment_ids, np.arange(6), 0).astype(np.int32)
  completion = np.array([[[0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 0, 0]],
                         [[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]]], bool)
  return tokens, positions, segment_ids, completion


@pytest.fixture(scope="module")
def params():
  return reward_model.init_reward_params(CONFIG, jax.random.key(0), num_heads=3)


def test_parameter_tree_has_no_lm_head_and_one_column_per_head(params):
  decoder = transformer.init_params(CONFIG, jax.random.key(0))
  assert "lm_head" in decoder and "lm_head" not in params["backbone"]
  assert set(params["backbone"]) == set(decoder) - {"lm_head"}
  assert params["head"]["kernel"].shape == (CONFIG.width, 3)
  np.testing.assert_array_equal(params["head"]["bias"], np.zeros(3))
  assert 0.01 < float(jnp.std(params["head"]["kernel"])) < 0.03  # N(0, 0.02²)
  axes = reward_model.logical_axes(CONFIG)
  is_axes = lambda x: isinstance(x, tuple)
  assert (jax.tree.structure(jax.tree.map(lambda _: 0, axes, is_leaf=is_axes))
          == jax.tree.structure(jax.tree.map(lambda _: 0, params)))
  assert axes["head"]["kernel"] == ("embed", None)
  assert axes["backbone"]["layers_0"]["attn"]["q"]["kernel"] == ("embed", "heads")


def test_backbone_from_decoder_keeps_everything_but_the_lm_head():
  decoder = transformer.init_params(CONFIG, jax.random.key(1))
  backbone = reward_model.backbone_from_decoder(decoder)
  assert set(backbone) == set(decoder) - {"lm_head"}
  assert backbone["embed"] is decoder["embed"]


@pytest.mark.parametrize("num_heads", [0, -1, 1.5, True])
def test_bad_num_heads_raises(num_heads):
  with pytest.raises(ValueError, match="num_heads"):
    reward_model.init_reward_params(CONFIG, jax.random.key(0), num_heads=num_heads)


def test_last_token_index_by_hand():
  _, _, segment_ids, completion = _batch()
  # Last completion tokens: 4 (token 5), 3 (token 6), 5 (token 12); the empty response scores
  # its last real token (1: token 8).
  np.testing.assert_array_equal(reward_model.last_token_index(segment_ids, completion),
                                [[4, 3], [5, 1]])
  # An all-padding row scores index 0.
  assert int(reward_model.last_token_index(np.zeros((1, 4), np.int32),
                                           np.zeros((1, 4), bool))[0]) == 0


def test_rewards_match_a_float64_head_on_the_decoder_hidden_states(params):
  tokens, positions, segment_ids, completion = _batch()
  rewards = jax.jit(reward_model.reward_scores, static_argnums=0)(
      CONFIG, params, tokens, positions, segment_ids, completion)
  assert rewards.shape == (2, 2, 3) and rewards.dtype == jnp.float32
  hidden = np.asarray(transformer.apply(CONFIG, params["backbone"], tokens, positions,
                                        segment_ids), np.float64)
  w = np.asarray(params["head"]["kernel"], np.float64)
  b = np.asarray(params["head"]["bias"], np.float64) + np.array([0.5, -1.0, 2.0])
  shifted = {**params, "head": {**params["head"], "bias": jnp.asarray(b, jnp.float32)}}
  rewards = reward_model.reward_scores(CONFIG, shifted, tokens, positions, segment_ids,
                                       completion)
  for (i, j), t in {(0, 0): 4, (0, 1): 3, (1, 0): 5, (1, 1): 1}.items():
    np.testing.assert_allclose(rewards[i, j], hidden[i, j, t] @ w + b, rtol=1e-5, atol=1e-6)


def test_rewards_ignore_padding_and_depend_on_the_response(params):
  tokens, positions, segment_ids, completion = _batch()
  score = lambda tok: np.asarray(reward_model.reward_scores(
      CONFIG, params, tok, positions, segment_ids, completion))
  base = score(tokens)
  padded = tokens.copy()
  padded[0, 1, 4:] = [11, 12]  # content of padding positions (segment 0)
  np.testing.assert_allclose(score(padded), base, rtol=1e-6, atol=1e-7)
  changed = tokens.copy()
  changed[0, 0, 3] = 9  # a response token before the scored one
  out = score(changed)
  assert np.all(np.abs(out[0, 0] - base[0, 0]) > 1e-6)
  np.testing.assert_allclose(out[0, 1:], base[0, 1:], rtol=1e-6)
  np.testing.assert_allclose(out[1], base[1], rtol=1e-6)


def test_rewards_do_not_depend_on_the_batch_layout(params):
  tokens, positions, segment_ids, completion = _batch()
  full = reward_model.reward_scores(CONFIG, params, tokens, positions, segment_ids, completion)
  flat = reward_model.reward_scores(CONFIG, params, tokens.reshape(4, 6),
                                    positions.reshape(4, 6), segment_ids.reshape(4, 6),
                                    completion.reshape(4, 6))
  np.testing.assert_allclose(flat.reshape(2, 2, 3), full, rtol=1e-5, atol=1e-6)


def test_gradients_flow_to_the_head_and_the_tokens_seen_only(params):
  tokens, positions, segment_ids, completion = _batch()
  weights = jnp.asarray(np.random.default_rng(0).normal(size=(2, 2, 3)), jnp.float32)

  def objective(p):
    return jnp.sum(weights * reward_model.reward_scores(CONFIG, p, tokens, positions,
                                                        segment_ids, completion))

  grads = jax.grad(objective)(params)
  hidden = transformer.apply(CONFIG, params["backbone"], tokens, positions, segment_ids)
  last = hidden[np.arange(2)[:, None], np.arange(2)[None, :], np.array([[4, 3], [5, 1]])]
  # ∂/∂W_da = Σ_rows c_a·h_d and ∂/∂b_a = Σ_rows c_a, with c the weights of the objective.
  np.testing.assert_allclose(grads["head"]["kernel"], jnp.einsum("ikd,ika->da", last, weights),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(grads["head"]["bias"], weights.sum((0, 1)), rtol=1e-5)
  embedding_grad = np.abs(np.asarray(grads["backbone"]["embed"]["embedding"])).sum(-1)
  seen = np.unique(tokens[segment_ids != 0])
  unseen = np.setdiff1d(np.arange(CONFIG.vocab_size), seen)
  assert np.all(embedding_grad[seen] > 0)
  np.testing.assert_array_equal(embedding_grad[unseen], 0.0)  # 0 (padding) included
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_mismatched_completion_mask_raises(params):
  tokens, positions, segment_ids, completion = _batch()
  with pytest.raises(ValueError, match="completion_mask has shape"):
    reward_model.reward_scores(CONFIG, params, tokens, positions, segment_ids, completion[..., 1:])
