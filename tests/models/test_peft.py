"""Tests of alignment.models.peft: LoRA adapters in PEFT's format, checked against `peft` itself.

Tiny random `transformers` checkpoints are built locally (`tests/hf_fixtures.py`) and imported
with `alignment.models.hf`; nothing is downloaded. `peft`, like torch, is a test dependency.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alignment.models import hf
from alignment.models import lora
from alignment.models import peft as peft_format
from alignment.models import transformer
from tests import hf_fixtures

peft = pytest.importorskip("peft")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

RANK, ALPHA = 4, 8.0
IDS = np.random.default_rng(0).integers(0, 64, size=(2, 7))
HF_TARGETS = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def _random_adapters(params, seed=0, **kwargs):
  """`init_lora` adapters whose `B` factors are random too (so that the update is non-zero)."""
  adapters = lora.init_lora(params, jax.random.key(seed), rank=RANK, alpha=ALPHA, **kwargs)
  leaves, treedef = jax.tree.flatten_with_path(adapters.weights)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  weights = jax.tree.unflatten(treedef, [
      0.5 * jax.random.normal(k, x.shape, x.dtype) if p[-1].key == "b" else x
      for (p, x), k in zip(leaves, keys)])
  return lora.LoraAdapters(weights=weights, scale=adapters.scale)


def _our_logits(config, params):
  positions = np.broadcast_to(np.arange(IDS.shape[1]), IDS.shape)
  hidden = transformer.apply(config, params, IDS, positions, np.ones(IDS.shape, np.int32))
  return np.asarray(transformer.logits(config, params, hidden))


def _peft_model(checkpoint, adapter):
  base = transformers.AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
  return peft.PeftModel.from_pretrained(base, adapter).eval()


def _torch_logits(model):
  with torch.no_grad():
    return model(input_ids=torch.tensor(IDS)).logits.numpy()


def _tensors(folder):
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  with safe_open(str(folder / peft_format.ADAPTER_WEIGHTS_FILE), framework="numpy") as f:
    return {name: f.get_tensor(name) for name in f.keys()}


# Llama (untied, no biases) and Qwen2 (tied, q/k/v biases).
@pytest.fixture(scope="module", params=["llama", "qwen2"])
def exported(request, tmp_path_factory):
  """(family, checkpoint folder, config, params, adapters, adapter folder)."""
  family = request.param
  checkpoint = tmp_path_factory.mktemp(family)
  hf_fixtures.write_checkpoint(checkpoint, family)
  config, params = hf.load_hf_checkpoint(checkpoint)
  adapters = _random_adapters(params)
  folder = tmp_path_factory.mktemp(f"{family}_adapter")
  peft_format.save_peft_adapters(config, adapters, folder,
                                 base_model_name_or_path=str(checkpoint))
  return family, checkpoint, config, params, adapters, folder


def test_files_match_what_peft_saves(exported, tmp_path):
  family, _, _, _, _, folder = exported
  model = peft.get_peft_model(hf_fixtures.hf_model(family), peft.LoraConfig(
      r=RANK, lora_alpha=ALPHA, target_modules=HF_TARGETS, lora_dropout=0.0,
      task_type="CAUSAL_LM"))
  model.save_pretrained(tmp_path)
  theirs, ours = _tensors(tmp_path), _tensors(folder)
  assert {n: t.shape for n, t in ours.items()} == {n: t.shape for n, t in theirs.items()}
  assert "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight" in ours
  assert ours["base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"].shape == (32, RANK)
  config = json.loads((folder / peft_format.ADAPTER_CONFIG_FILE).read_text())
  reference = json.loads((tmp_path / peft_format.ADAPTER_CONFIG_FILE).read_text())
  for field in ("peft_type", "task_type", "r", "lora_alpha", "lora_dropout", "bias",
                "fan_in_fan_out", "inference_mode", "use_rslora", "use_dora"):
    assert config[field] == reference[field], field
  assert config["target_modules"] == sorted(reference["target_modules"]) == HF_TARGETS


def test_peft_logits_equal_merged_logits(exported):
  _, checkpoint, config, params, adapters, folder = exported
  model = _peft_model(checkpoint, folder)
  ours = _our_logits(config, lora.merge(params, adapters))
  np.testing.assert_allclose(_torch_logits(model), ours, atol=1e-5, rtol=0)
  # transformers' own PEFT integration reads the folder too.
  base = transformers.AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
  base.load_adapter(str(folder))
  np.testing.assert_allclose(_torch_logits(base.eval()), ours, atol=1e-5, rtol=0)
  # The adapters matter: the base model's logits are far from these.
  assert np.max(np.abs(_our_logits(config, params) - ours)) > 1e-2


def test_merge_and_unload_equals_merged_kernels(exported):
  _, checkpoint, config, params, adapters, folder = exported
  merged = _peft_model(checkpoint, folder).merge_and_unload().state_dict()
  ours = hf.params_to_hf(config, lora.merge(params, adapters))  # kernels transposed
  assert set(ours) <= set(merged)
  for name, tensor in ours.items():
    np.testing.assert_allclose(merged[name].numpy(), tensor, atol=1e-6, rtol=0, err_msg=name)


def test_load_round_trip_is_exact(exported):
  _, _, config, _, adapters, folder = exported
  loaded = peft_format.load_peft_adapters(config, folder)
  assert loaded.scale == adapters.scale == ALPHA / RANK
  assert jax.tree.structure(loaded.weights) == jax.tree.structure(adapters.weights)
  for x, y in zip(jax.tree.leaves(loaded.weights), jax.tree.leaves(adapters.weights)):
    assert x.dtype == y.dtype == jnp.float32
    np.testing.assert_array_equal(x, y)


def test_partial_adapters_use_full_module_names(exported, tmp_path):
  """Adapters on q and v of layer 0 and v of layer 1: `q_proj` alone would also match layer 1."""
  _, checkpoint, config, params, _, _ = exported
  adapters = _random_adapters(params, seed=3, targets=("q", "v"))
  weights = {**adapters.weights, "layers_1": {"attn": {"v": adapters.weights["layers_1"]["attn"]
                                                              ["v"]}}}
  adapters = lora.LoraAdapters(weights=weights, scale=adapters.scale)
  peft_format.save_peft_adapters(config, adapters, tmp_path, base_model_name_or_path="base")
  fields = json.loads((tmp_path / peft_format.ADAPTER_CONFIG_FILE).read_text())
  assert fields["target_modules"] == ["model.layers.0.self_attn.q_proj",
                                      "model.layers.0.self_attn.v_proj",
                                      "model.layers.1.self_attn.v_proj"]
  assert len(_tensors(tmp_path)) == 6
  np.testing.assert_allclose(_torch_logits(_peft_model(checkpoint, tmp_path)),
                             _our_logits(config, lora.merge(params, adapters)), atol=1e-5, rtol=0)
  loaded = peft_format.load_peft_adapters(config, tmp_path)
  assert jax.tree.structure(loaded.weights) == jax.tree.structure(adapters.weights)


def test_alpha_not_a_multiple_of_rank_round_trips(exported, tmp_path):
  _, _, config, params, _, _ = exported
  adapters = lora.init_lora(params, jax.random.key(0), rank=3, alpha=5.0, targets=("o",))
  peft_format.save_peft_adapters(config, adapters, tmp_path, base_model_name_or_path="base")
  fields = json.loads((tmp_path / peft_format.ADAPTER_CONFIG_FILE).read_text())
  assert (fields["r"], fields["lora_alpha"], fields["target_modules"]) == (3, 5, ["o_proj"])
  assert peft_format.load_peft_adapters(config, tmp_path).scale == pytest.approx(5.0 / 3)


def test_refuses_a_model_folder(exported):
  _, checkpoint, config, _, adapters, _ = exported
  with pytest.raises(ValueError, match="is a model folder"):
    peft_format.save_peft_adapters(config, adapters, checkpoint, base_model_name_or_path="base")


def test_adapters_that_do_not_fit_the_config_are_rejected(exported):
  _, _, config, params, adapters, _ = exported
  wrong = lora.LoraAdapters(weights={"layers_9": adapters.weights["layers_0"]},
                            scale=adapters.scale)
  with pytest.raises(ValueError, match="layers_9/attn/k is no linear layer"):
    peft_format.adapters_to_peft(config, wrong)
  rank_2 = lora.init_lora(params, jax.random.key(1), rank=2).weights["layers_1"]
  mixed = lora.LoraAdapters(weights={**adapters.weights, "layers_1": rank_2},
                            scale=adapters.scale)
  with pytest.raises(ValueError, match="one rank"):
    peft_format.adapters_to_peft(config, mixed)


def test_load_rejects_what_is_not_plain_lora(exported):
  _, _, config, _, adapters, _ = exported
  fields, tensors = peft_format.adapters_to_peft(config, adapters)
  with pytest.raises(ValueError, match="use_dora=True is not supported"):
    peft_format.adapters_from_peft(config, {**fields, "use_dora": True}, tensors)
  with pytest.raises(ValueError, match="peft_type 'IA3'"):
    peft_format.adapters_from_peft(config, {**fields, "peft_type": "IA3"}, tensors)
  name = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
  with pytest.raises(ValueError, match=r"layers_0/attn/q has factors \['a'\]"):
    peft_format.adapters_from_peft(config, fields, {n: t for n, t in tensors.items()
                                                    if n != name})
  with pytest.raises(ValueError, match="is no LoRA factor"):
    peft_format.adapters_from_peft(config, fields, {**tensors, "lm_head.weight": tensors[name]})
  with pytest.raises(ValueError, match="rank 8 needs"):
    peft_format.adapters_from_peft(config, {**fields, "r": 8}, tensors)
