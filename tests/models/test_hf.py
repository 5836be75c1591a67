"""Tests of alignment.models.hf: Hugging Face safetensors import/export for every family.

The comparisons against `transformers` (an optional test dependency, like torch) build tiny
random models locally (`tests/hf_fixtures.py`); nothing is downloaded.
"""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment.models import hf
from alignment.models import logprobs
from alignment.models import transformer
from alignment.models.config import ModelConfig
from tests import hf_fixtures

IDS = np.random.default_rng(0).integers(0, 64, size=(2, 7))
# Positions far from 0 so that RoPE (and Llama-3 scaling of its low frequencies) matters.
POSITIONS = np.broadcast_to(np.arange(7) + 300, (2, 7))

# name: (family, tie_word_embeddings (None: the family's default), max_shard_size or None).
CASES = {
    "llama_untied": ("llama", False, None),
    "llama_tied": ("llama", True, "20KB"),
    "qwen2": ("qwen2", None, None),
    "qwen3": ("qwen3", None, "20KB"),
    "mistral": ("mistral", None, None),
    "gemma": ("gemma", None, None),
    "gemma2": ("gemma2", None, "20KB"),
}
# The ModelConfig fields each family's tiny checkpoint must produce (others: their defaults).
EXPECTED = {
    "llama": dict(head_dim=8),
    "mistral": dict(head_dim=8, sliding_window=4, sliding_window_layers="all"),
    "qwen2": dict(head_dim=8, qkv_bias=True, tie_embeddings=True),
    "qwen3": dict(head_dim=16, qk_norm=True),
    "gemma": dict(head_dim=16, scale_embeddings=True, norm_unit_offset=True,
                  mlp_activation="gelu_tanh", tie_embeddings=True),
    "gemma2": dict(head_dim=16, scale_embeddings=True, norm_unit_offset=True,
                   mlp_activation="gelu_tanh", tie_embeddings=True, post_norms=True,
                   sliding_window=4, sliding_window_layers="alternate", attn_logit_softcap=2.0,
                   final_logit_softcap=3.0, query_pre_attn_scalar=24.0),
}
_FLAGS = ("head_dim", "qkv_bias", "qk_norm", "scale_embeddings", "norm_unit_offset",
          "mlp_activation", "post_norms", "sliding_window", "sliding_window_layers",
          "attn_logit_softcap", "final_logit_softcap", "query_pre_attn_scalar")


def _hf_logits(model):
  torch = pytest.importorskip("torch")
  with torch.no_grad():
    return model(torch.tensor(IDS), position_ids=torch.tensor(POSITIONS)).logits.numpy()


def _our_logits(config, params):
  hidden = transformer.apply(config, params, IDS, POSITIONS, np.ones(IDS.shape, np.int32))
  return np.asarray(transformer.logits(config, params, hidden))


@pytest.fixture(scope="module", params=sorted(CASES))
def saved(request, tmp_path_factory):
  """(family, transformers model, checkpoint directory written by `save_pretrained`)."""
  pytest.importorskip("transformers")
  family, tied, shards = CASES[request.param]
  path = tmp_path_factory.mktemp(request.param)
  model = hf_fixtures.write_checkpoint(path, family, tied=tied, shards=shards)
  assert os.path.isfile(path / hf.INDEX_FILE) == (shards is not None)
  return family, model, path


def test_logits_match_transformers(saved):
  family, model, path = saved
  config, params = hf.load_hf_checkpoint(path)  # a float32 checkpoint computes in float32
  assert config.dtype == jnp.float32 and config.param_dtype == jnp.float32
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  assert (config.vocab_size, config.width, config.depth, config.mlp_dim) == (64, 32, 2, 48)
  assert (config.num_heads, config.num_kv_heads) == (4, 2)
  assert config.tie_embeddings == model.config.tie_word_embeddings
  assert (config.rope_scaling is not None) == (family == "llama")
  want = EXPECTED[family]
  defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
  for field in _FLAGS:
    assert getattr(config, field) == want.get(field, defaults[field]), field
  ref = _hf_logits(model)
  assert np.abs(ref).max() > 1.0  # logits large enough for the comparison to mean something
  np.testing.assert_allclose(_our_logits(config, params), ref, atol=1e-5, rtol=0)
  # Summed completion log-probs (the chunked path) agree with transformers' log-softmax.
  mask = np.zeros(IDS.shape, bool)
  mask[:, 3:] = True
  logps, _ = logprobs.sequence_logps(config, params, IDS, POSITIONS, np.ones_like(IDS), mask,
                                     chunk_size=5, vocab_chunk_size=24)
  log_softmax = ref - np.log(np.exp(ref).sum(-1, keepdims=True))
  want = np.take_along_axis(log_softmax[:, :-1], IDS[:, 1:, None], -1)[..., 0][:, 2:].sum(-1)
  np.testing.assert_allclose(logps, want, atol=1e-5, rtol=0)


def test_export_round_trips_exactly_and_transformers_reads_it(saved, tmp_path):
  family, model, path = saved
  config, params = hf.load_hf_checkpoint(path)
  hf.save_hf_checkpoint(config, params, tmp_path / "single")
  assert sorted(os.listdir(tmp_path / "single")) == ["config.json", "model.safetensors"]
  # 64·32·4 bytes = 8 KiB per embedding: a 10 KB limit forces many shards.
  hf.save_hf_checkpoint(config, params, tmp_path / "sharded", max_shard_bytes=10_000)
  with open(tmp_path / "sharded" / hf.INDEX_FILE) as f:
    weight_map = json.load(f)["weight_map"]
  assert len(set(weight_map.values())) > 2
  for directory in ("single", "sharded"):
    config2, params2 = hf.load_hf_checkpoint(tmp_path / directory)
    assert config2 == config
    assert jax.tree.structure(params2) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(params2), jax.tree.leaves(params)):
      assert a.dtype == b.dtype
      np.testing.assert_array_equal(a, b)
  transformers = pytest.importorskip("transformers")
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "sharded").eval()
  assert type(reloaded) is type(model)
  np.testing.assert_array_equal(_hf_logits(reloaded), _hf_logits(model))


def test_bfloat16_parameters_round_trip(saved, tmp_path):
  _, _, path = saved
  config, params = hf.load_hf_checkpoint(path, param_dtype=jnp.bfloat16)
  assert config.dtype == jnp.bfloat16  # the compute dtype follows the parameter dtype
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params))
  hf.save_hf_checkpoint(config, params, tmp_path)
  with open(tmp_path / "config.json") as f:
    written = json.load(f)
  assert written["dtype"] == written["torch_dtype"] == "bfloat16"
  config2, params2 = hf.load_hf_checkpoint(tmp_path)  # the checkpoint's dtype, not overridden
  assert config2 == config
  for a, b in zip(jax.tree.leaves(params2), jax.tree.leaves(params)):
    assert a.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_bfloat16_transformers_checkpoint_keeps_its_dtype(tmp_path):
  torch = pytest.importorskip("torch")
  model = hf_fixtures.hf_model("qwen3").to(torch.bfloat16)
  model.save_pretrained(tmp_path)
  config, params = hf.load_hf_checkpoint(tmp_path)
  assert (config.param_dtype, config.dtype) == (jnp.bfloat16, jnp.bfloat16)
  kernel = model.model.layers[0].self_attn.q_proj.weight.detach().float().numpy().T
  np.testing.assert_array_equal(np.asarray(params["layers_0"]["attn"]["q"]["kernel"], np.float32),
                                kernel)
  config32, params32 = hf.load_hf_checkpoint(tmp_path, dtype=jnp.float32)  # compute only
  assert (config32.param_dtype, config32.dtype) == (jnp.bfloat16, jnp.float32)
  assert jax.tree.leaves(params32)[0].dtype == jnp.bfloat16


def test_dtype_rule_of_config_json():
  base = _llama_json()
  cases = [
      ({}, {}, ("float32", "float32")),  # no dtype recorded: float32
      ({"dtype": "float32"}, {}, ("float32", "float32")),
      ({"torch_dtype": "bfloat16"}, {}, ("bfloat16", "bfloat16")),  # transformers < 5
      ({"dtype": "float16"}, {}, ("float16", "float16")),
      ({"dtype": "bfloat16"}, {"dtype": "float32"}, ("bfloat16", "float32")),
      ({"dtype": "float32"}, {"param_dtype": "bfloat16"}, ("bfloat16", "bfloat16")),
      ({"dtype": "float32"}, {"param_dtype": "float32", "dtype": "bfloat16"},
       ("float32", "bfloat16")),
  ]
  for fields, overrides, (param_dtype, dtype) in cases:
    config = hf.config_from_hf({**base, **fields}, **overrides)
    assert (config.param_dtype, config.dtype) == (jnp.dtype(param_dtype), jnp.dtype(dtype))
  with pytest.raises(ValueError, match="dtype 'float64' is not supported"):
    hf.config_from_hf({**base, "dtype": "float64"})
  assert hf.config_from_hf({**base, "dtype": "float64"}, param_dtype="float32").dtype == (
      jnp.float32)


def test_window_free_mistral_exports_as_llama_unless_named(tmp_path):
  transformers = pytest.importorskip("transformers")
  model = hf_fixtures.write_checkpoint(tmp_path / "in", "mistral", sliding_window=None)
  config, params = hf.load_hf_checkpoint(tmp_path / "in")
  assert config.sliding_window is None
  assert hf.config_to_hf(config)["model_type"] == "llama"  # the same model
  hf.save_hf_checkpoint(config, params, tmp_path / "out", model_type="mistral")
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
  assert type(reloaded) is type(model) and reloaded.config.sliding_window is None
  np.testing.assert_array_equal(_hf_logits(reloaded), _hf_logits(model))
  with pytest.raises(ValueError, match="not a Hugging Face family 'qwen2'"):
    hf.config_to_hf(config, "qwen2")


def _llama_json(drop=(), **changes):
  base = {"model_type": "llama", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
          "num_hidden_layers": 1, "num_attention_heads": 4}
  return {k: v for k, v in {**base, **changes}.items() if k not in drop}


def test_config_defaults_and_legacy_fields():
  config = hf.config_from_hf(_llama_json(
      rope_theta=500_000.0, max_position_embeddings=4096,
      rope_scaling={"type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0}))
  assert (config.num_kv_heads, config.head_dim) == (4, 8)  # defaults: H and D / H
  assert config.rope_theta == 500_000.0 and not config.tie_embeddings
  assert config.rope_scaling.factor == 32.0
  assert config.rope_scaling.original_max_length == 4096  # defaults to max_position_embeddings
  gemma = hf.config_from_hf(_llama_json(model_type="gemma", hidden_act="gelu"))  # legacy value
  assert gemma.mlp_activation == "gelu_tanh" and gemma.tie_embeddings
  assert gemma.head_dim == 256  # GemmaConfig's default, not hidden_size / heads
  # transformers' defaults of the fields the newer families may omit.
  two_layers = dict(num_hidden_layers=2)
  mistral = hf.config_from_hf(_llama_json(model_type="mistral", **two_layers))
  assert (mistral.sliding_window, mistral.sliding_window_layers) == (4096, "all")
  assert mistral.max_length == 131_072 and not mistral.tie_embeddings
  qwen3 = hf.config_from_hf(_llama_json(model_type="qwen3", **two_layers))
  assert qwen3.qk_norm and qwen3.head_dim == 128 and not qwen3.qkv_bias
  gemma2 = hf.config_from_hf(_llama_json(model_type="gemma2", **two_layers))
  assert (gemma2.attn_logit_softcap, gemma2.final_logit_softcap) == (50.0, 30.0)
  assert (gemma2.query_pre_attn_scalar, gemma2.head_dim) == (256.0, 256)
  assert (gemma2.sliding_window, gemma2.sliding_window_layers) == (4096, "alternate")
  assert gemma2.post_norms and gemma2.norm_unit_offset and gemma2.tie_embeddings
  no_caps = hf.config_from_hf(_llama_json(model_type="gemma2", final_logit_softcapping=None,
                                          attn_logit_softcapping=None, sliding_window=None))
  assert (no_caps.final_logit_softcap, no_caps.attn_logit_softcap) == (None, None)
  assert no_caps.sliding_window is None
  # Qwen2.5's config.json: a window that use_sliding_window=false switches off.
  qwen2 = hf.config_from_hf(_llama_json(model_type="qwen2", sliding_window=131_072,
                                        use_sliding_window=False))
  assert qwen2.sliding_window is None and qwen2.qkv_bias
  # config_to_hf then config_from_hf is the identity on representable configs.
  for c in (config, gemma, mistral, qwen2, qwen3, gemma2, no_caps):
    assert hf.config_from_hf(hf.config_to_hf(c)) == c


@pytest.mark.parametrize("json_config, message", [
    (_llama_json(model_type="phi3"), "model_type 'phi3' is not supported"),
    (_llama_json(attention_bias=True), "attention_bias=True is not supported"),
    (_llama_json(model_type="qwen3", use_sliding_window=True), "use_sliding_window=True"),
    (_llama_json(layer_types=["sliding_attention"], sliding_window=4),
     r"layer_types \['sliding_attention'\] has sliding-window layers in a pattern"),
    (_llama_json(model_type="gemma2", num_hidden_layers=2,
                 layer_types=["sliding_attention"] * 2), "supported: alternate"),
    (_llama_json(model_type="mistral", num_hidden_layers=2,
                 layer_types=["sliding_attention", "full_attention"]), "supported: all"),
    (_llama_json(layer_types=["chunked_attention"]), "layer_types .* is not supported"),
    (_llama_json(dtype="int8"), "dtype 'int8' is not supported"),
    (_llama_json(hidden_act="gelu"), "hidden_act 'gelu' is not supported"),
    (_llama_json(rope_parameters={"rope_type": "yarn", "factor": 4.0}), "rope_type 'yarn'"),
    (_llama_json(drop=("hidden_size",)), "missing required field 'hidden_size'"),
])
def test_unsupported_configs_are_rejected(json_config, message):
  with pytest.raises(ValueError, match=message):
    hf.config_from_hf(json_config)


def test_bad_checkpoints_are_rejected(tmp_path):
  config = hf.config_from_hf(_llama_json(), dtype=jnp.float32)
  params = transformer.init_params(config, jax.random.key(0))
  tensors = hf.params_to_hf(config, params)
  assert tensors["model.layers.0.self_attn.q_proj.weight"].shape == (32, 32)
  np.testing.assert_array_equal(tensors["model.layers.0.mlp.down_proj.weight"],
                                np.asarray(params["layers_0"]["mlp"]["down"]["kernel"]).T)
  with pytest.raises(ValueError, match="lacks 1 tensors.*model.norm.weight"):
    hf.params_from_hf(config, {k: v for k, v in tensors.items() if k != "model.norm.weight"})
  with pytest.raises(ValueError, match="has no parameter for.*extra"):
    hf.params_from_hf(config, {**tensors, "model.extra": np.zeros(3)})
  bad = {**tensors, "model.layers.0.mlp.up_proj.weight": np.zeros((48, 31), np.float32)}
  with pytest.raises(ValueError, match=r"up_proj.weight has shape \(48, 31\).*\(48, 32\)"):
    hf.params_from_hf(config, bad)
  hf.save_hf_checkpoint(config, params, tmp_path)
  with pytest.raises(FileExistsError, match="overwrite=True"):
    hf.save_hf_checkpoint(config, params, tmp_path, max_shard_bytes=10_000)
  hf.save_hf_checkpoint(config, params, tmp_path, max_shard_bytes=10_000, overwrite=True)
  assert "model.safetensors" not in os.listdir(tmp_path)  # no stale single file left behind
  with pytest.raises(FileNotFoundError, match="No config.json"):
    hf.load_hf_checkpoint(tmp_path / "nothing")
  for odd in (dict(scale_embeddings=True), dict(final_logit_softcap=30.0),
              dict(sliding_window=8, sliding_window_layers="alternate")):
    with pytest.raises(ValueError, match="not a Hugging Face family"):
      hf.config_to_hf(hf.config_from_hf(_llama_json(), **odd))
