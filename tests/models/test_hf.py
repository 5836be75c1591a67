"""Tests of alignment.models.hf: Hugging Face safetensors import/export for Llama, Qwen2, Gemma.

The comparisons against `transformers` (an optional test dependency, like torch) build tiny
random models locally; nothing is downloaded.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment.models import hf
from alignment.models import logprobs
from alignment.models import transformer

IDS = np.random.default_rng(0).integers(0, 64, size=(2, 7))
# Positions far from 0 so that RoPE (and Llama-3 scaling of its low frequencies) matters.
POSITIONS = np.broadcast_to(np.arange(7) + 300, (2, 7))

# Tiny configs covering each family's conventions: GQA everywhere; Llama untied with Llama-3
# RoPE scaling; Qwen2 tied (as Qwen2.5-0.5B) with qkv biases; Gemma with head_dim != D / H.
FAMILIES = {
    "llama": dict(rope_parameters=dict(
        rope_type="llama3", rope_theta=500_000.0, factor=8.0, low_freq_factor=1.0,
        high_freq_factor=4.0, original_max_position_embeddings=64), rms_norm_eps=1e-5),
    "qwen2": dict(tie_word_embeddings=True, rope_parameters=dict(rope_type="default",
                                                                 rope_theta=1e6)),
    "gemma": dict(head_dim=16),
}


def _hf_model(family, seed=0):
  """A random float32 `transformers` model whose weights are all O(0.1-1) (norms and biases
  included, so that every convention is exercised)."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  config_class, model_class = {
      "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
      "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
      "gemma": (transformers.GemmaConfig, transformers.GemmaForCausalLM),
  }[family]
  config = config_class(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, **FAMILIES[family])
  torch.manual_seed(seed)
  model = model_class(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      offset = 1.0 if "norm" in name and family != "gemma" else 0.0  # Gemma norms are 1 + w
      p.copy_(offset + torch.randn_like(p) * (0.3 if "norm" in name or "bias" in name else 0.15))
  return model


def _hf_logits(model):
  torch = pytest.importorskip("torch")
  with torch.no_grad():
    return model(torch.tensor(IDS), position_ids=torch.tensor(POSITIONS)).logits.numpy()


def _our_logits(config, params):
  hidden = transformer.apply(config, params, IDS, POSITIONS, np.ones(IDS.shape, np.int32))
  return np.asarray(transformer.logits(config, params, hidden))


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def saved(request, tmp_path_factory):
  """(family, transformers model, checkpoint directory written by `save_pretrained`)."""
  model = _hf_model(request.param)
  path = tmp_path_factory.mktemp(request.param)
  model.save_pretrained(path)
  return request.param, model, path


def test_logits_match_transformers(saved):
  family, model, path = saved
  config, params = hf.load_hf_checkpoint(path, dtype=jnp.float32)
  assert config.dtype == jnp.float32 and config.param_dtype == jnp.float32
  assert (config.vocab_size, config.width, config.depth, config.mlp_dim) == (64, 32, 2, 48)
  assert (config.num_heads, config.num_kv_heads) == (4, 2)
  assert config.head_dim == (16 if family == "gemma" else 8)
  assert config.qkv_bias == (family == "qwen2")
  assert config.tie_embeddings == (family != "llama")
  assert (config.rope_scaling is not None) == (family == "llama")
  assert config.scale_embeddings == config.norm_unit_offset == (family == "gemma")
  ref = _hf_logits(model)
  assert np.abs(ref).max() > 1.0  # logits large enough for the comparison to mean something
  np.testing.assert_allclose(_our_logits(config, params), ref, atol=1e-4, rtol=1e-4)
  # Summed completion log-probs agree with log_softmax of the transformers logits.
  mask = np.zeros(IDS.shape, bool)
  mask[:, 3:] = True
  logps, _ = logprobs.sequence_logps(config, params, IDS, POSITIONS, np.ones_like(IDS), mask,
                                     chunk_size=5, vocab_chunk_size=24)
  log_softmax = ref - np.log(np.exp(ref).sum(-1, keepdims=True))
  want = np.take_along_axis(log_softmax[:, :-1], IDS[:, 1:, None], -1)[..., 0][:, 2:].sum(-1)
  np.testing.assert_allclose(logps, want, atol=1e-4, rtol=1e-5)


def test_export_round_trips_exactly_and_transformers_reads_it(saved, tmp_path):
  family, model, path = saved
  config, params = hf.load_hf_checkpoint(path, dtype=jnp.float32)
  hf.save_hf_checkpoint(config, params, tmp_path / "single")
  assert sorted(os.listdir(tmp_path / "single")) == ["config.json", "model.safetensors"]
  # 64·32·4 bytes = 8 KiB per embedding: a 10 KB limit forces many shards.
  hf.save_hf_checkpoint(config, params, tmp_path / "sharded", max_shard_bytes=10_000)
  with open(tmp_path / "sharded" / hf.INDEX_FILE) as f:
    weight_map = json.load(f)["weight_map"]
  assert len(set(weight_map.values())) > 2
  for directory in ("single", "sharded"):
    config2, params2 = hf.load_hf_checkpoint(tmp_path / directory, dtype=jnp.float32)
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
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params))
  hf.save_hf_checkpoint(config, params, tmp_path)
  with open(tmp_path / "config.json") as f:
    assert json.load(f)["torch_dtype"] == "bfloat16"
  config2, params2 = hf.load_hf_checkpoint(tmp_path, param_dtype=jnp.bfloat16)
  assert config2 == config
  for a, b in zip(jax.tree.leaves(params2), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_sharded_transformers_checkpoint_loads(tmp_path):
  model = _hf_model("qwen2", seed=1)
  model.save_pretrained(tmp_path / "one")
  model.save_pretrained(tmp_path / "many", max_shard_size="20KB")
  assert os.path.isfile(tmp_path / "many" / hf.INDEX_FILE)
  assert len([f for f in os.listdir(tmp_path / "many") if f.endswith(".safetensors")]) > 1
  _, one = hf.load_hf_checkpoint(tmp_path / "one")
  _, many = hf.load_hf_checkpoint(tmp_path / "many")
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(many)):
    np.testing.assert_array_equal(a, b)


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
  # config_to_hf then config_from_hf is the identity on representable configs.
  for c in (config, gemma, hf.config_from_hf(_llama_json(model_type="qwen2"))):
    assert hf.config_from_hf(hf.config_to_hf(c)) == c


@pytest.mark.parametrize("json_config, message", [
    (_llama_json(model_type="mistral"), "model_type 'mistral' is not supported"),
    (_llama_json(attention_bias=True), "attention_bias=True is not supported"),
    (_llama_json(model_type="qwen2", use_sliding_window=True), "use_sliding_window=True"),
    (_llama_json(layer_types=["sliding_attention"]), "non-full attention"),
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
  odd = hf.config_from_hf(_llama_json(), scale_embeddings=True)
  with pytest.raises(ValueError, match="not a Hugging Face family"):
    hf.config_to_hf(odd)
