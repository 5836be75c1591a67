"""Hugging Face checkpoints (safetensors) in and out: Llama, Qwen2 and Gemma families.

A checkpoint directory holds `config.json` and either `model.safetensors` or shards listed in
`model.safetensors.index.json` (`{"weight_map": {tensor name: file name}}`). Only local paths are
read or written; nothing is downloaded.

Conventions bridged here (HF -> `alignment.models.transformer`):
- `nn.Linear` stores `weight [out, in]`; our kernels are `[in, out]`: transposed both ways.
- Qwen2 has biases on q, k, v (`qkv_bias=True`); Llama and Gemma have none.
- Gemma multiplies embeddings by `sqrt(hidden_size)` (`scale_embeddings`), its RMSNorm multiplies
  by `1 + weight` (`norm_unit_offset`; the stored weight is used as is) and its MLP is GeGLU with
  the tanh GELU (`mlp_activation="gelu_tanh"`; the legacy `hidden_act="gelu"` of the official
  Gemma configs means the same, as in `transformers`).
- Tied embeddings (`tie_word_embeddings`): no `lm_head.weight` is needed, and one present in the
  file is ignored (the LM head is `embed_tokens.weight.T`).
- RoPE: `rope_parameters` (transformers >= 5) or the legacy `rope_theta` + `rope_scaling`; the
  "default" and "llama3" RoPE types are supported.

Features the decoder does not have (attention/MLP output biases, sliding windows, partial rotary,
other RoPE types, bidirectional attention) are rejected with an error naming the field, never
silently dropped; so are unexpected tensors.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from safetensors import safe_open

from alignment.models import transformer
from alignment.models.config import Llama3RopeScaling, ModelConfig

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


@dataclasses.dataclass(frozen=True)
class _Family:
  architecture: str
  tie_embeddings: bool  # HF defaults of fields a config.json may omit.
  max_length: int
  qkv_bias: bool
  gemma: bool  # scale_embeddings, norm_unit_offset and GeGLU (tanh).
  activations: tuple[str, ...]  # accepted `hidden_act` values.
  head_dim: int | None  # None: hidden_size // num_attention_heads.


_FAMILIES = {
    "llama": _Family("LlamaForCausalLM", False, 2048, False, False, ("silu",), None),
    "qwen2": _Family("Qwen2ForCausalLM", False, 32768, True, False, ("silu",), None),
    "gemma": _Family("GemmaForCausalLM", True, 8192, False, True, ("gelu_pytorch_tanh", "gelu"),
                     256),
}
# Fields that would need a feature the decoder lacks: (field, value that is fine).
_UNSUPPORTED = (("attention_bias", False), ("mlp_bias", False), ("use_sliding_window", False),
                ("use_bidirectional_attention", None), ("partial_rotary_factor", 1.0))
_IGNORED_TENSOR_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers some old checkpoints carry


def config_from_hf(hf: Mapping[str, Any], **overrides) -> ModelConfig:
  """`ModelConfig` of a Hugging Face `config.json` dict; `overrides` set other fields (dtype...).

  Raises:
    ValueError: an unsupported `model_type`, a missing required field, or a feature the decoder
      does not implement.
  """
  model_type = hf.get("model_type")
  if model_type not in _FAMILIES:
    raise ValueError(f"config.json: model_type {model_type!r} is not supported; supported: "
                     f"{sorted(_FAMILIES)}.")
  family = _FAMILIES[model_type]
  for field, fine in _UNSUPPORTED:
    if hf.get(field, fine) not in (fine, None):
      raise ValueError(f"config.json ({model_type}): {field}={hf[field]!r} is not supported by "
                       f"the decoder.")
  if any(t != "full_attention" for t in hf.get("layer_types") or ()):
    raise ValueError(f"config.json ({model_type}): layer_types {hf['layer_types']} has "
                     f"non-full attention layers, which the decoder does not support.")
  activation = hf.get("hidden_activation") or hf.get("hidden_act", family.activations[0])
  if activation not in family.activations:
    raise ValueError(f"config.json ({model_type}): hidden_act {activation!r} is not supported; "
                     f"expected one of {family.activations}.")
  try:
    width, num_heads = hf["hidden_size"], hf["num_attention_heads"]
    fields = dict(
        vocab_size=hf["vocab_size"], width=width, depth=hf["num_hidden_layers"],
        num_heads=num_heads, num_kv_heads=hf.get("num_key_value_heads") or num_heads,
        head_dim=hf.get("head_dim") or family.head_dim or width // num_heads,
        mlp_dim=hf["intermediate_size"])
  except KeyError as e:
    raise ValueError(f"config.json ({model_type}): missing required field {e}.") from None
  max_length = hf.get("max_position_embeddings", family.max_length)
  rope_theta, rope_scaling = _rope_from_hf(hf, max_length)
  fields.update(
      tie_embeddings=hf.get("tie_word_embeddings", family.tie_embeddings),
      rope_theta=float(rope_theta), rope_scaling=rope_scaling,
      norm_eps=float(hf.get("rms_norm_eps", 1e-6)), max_length=max_length,
      qkv_bias=family.qkv_bias, scale_embeddings=family.gemma, norm_unit_offset=family.gemma,
      mlp_activation="gelu_tanh" if family.gemma else "silu")
  return ModelConfig(**{**fields, **overrides})


def _rope_from_hf(hf: Mapping[str, Any], max_length: int):
  rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
  if any(isinstance(v, Mapping) for v in rope.values()):
    raise ValueError("config.json: per-layer-type rope_parameters are not supported.")
  theta = rope.get("rope_theta", hf.get("rope_theta", 10_000.0))
  if rope.get("partial_rotary_factor", 1.0) != 1.0:
    raise ValueError(f"config.json: partial_rotary_factor={rope['partial_rotary_factor']} is "
                     f"not supported.")
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type == "default":
    return theta, None
  if rope_type == "llama3":
    return theta, Llama3RopeScaling(
        factor=float(rope["factor"]), low_freq_factor=float(rope["low_freq_factor"]),
        high_freq_factor=float(rope["high_freq_factor"]),
        original_max_length=int(rope.get("original_max_position_embeddings", max_length)))
  raise ValueError(f"config.json: rope_type {rope_type!r} is not supported; supported: "
                   f"'default', 'llama3'.")


def _model_type(config: ModelConfig) -> str:
  gemma = (config.scale_embeddings, config.norm_unit_offset, config.mlp_activation == "gelu_tanh")
  for model_type, family in _FAMILIES.items():
    if gemma == (family.gemma,) * 3 and config.qkv_bias == family.qkv_bias:
      return model_type
  raise ValueError(
      f"ModelConfig is not a Hugging Face family: scale_embeddings={config.scale_embeddings}, "
      f"norm_unit_offset={config.norm_unit_offset}, mlp_activation={config.mlp_activation!r}, "
      f"qkv_bias={config.qkv_bias} (llama: none of them; qwen2: qkv_bias only; gemma: the first "
      f"three, no qkv_bias).")


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
  """The `config.json` dict of `config` (family chosen by its flags; see `config_from_hf`)."""
  model_type = _model_type(config)
  family = _FAMILIES[model_type]
  rope = {"rope_type": "default", "rope_theta": config.rope_theta}
  if config.rope_scaling is not None:
    s = config.rope_scaling
    rope.update(rope_type="llama3", factor=s.factor, low_freq_factor=s.low_freq_factor,
                high_freq_factor=s.high_freq_factor,
                original_max_position_embeddings=s.original_max_length)
  return {
      "architectures": [family.architecture], "model_type": model_type,
      "vocab_size": config.vocab_size, "hidden_size": config.width,
      "intermediate_size": config.mlp_dim, "num_hidden_layers": config.depth,
      "num_attention_heads": config.num_heads, "num_key_value_heads": config.num_kv_heads,
      "head_dim": config.head_dim, "hidden_act": family.activations[0],
      "max_position_embeddings": config.max_length, "rms_norm_eps": config.norm_eps,
      "tie_word_embeddings": config.tie_embeddings,
      "rope_parameters": rope,
      # Legacy spelling of the same, for transformers < 5.
      "rope_theta": config.rope_theta,
      "rope_scaling": rope if config.rope_scaling is not None else None,
      "torch_dtype": jnp.dtype(config.param_dtype).name,
  }


def _name_map(config: ModelConfig) -> Iterator[tuple[str, tuple[str, ...], bool]]:
  """`(HF tensor name, our parameter path, transposed?)` for every parameter of `config`."""
  yield "model.embed_tokens.weight", ("embed", "embedding"), False
  for i in range(config.depth):
    hf, ours = f"model.layers.{i}.", f"layers_{i}"
    yield hf + "input_layernorm.weight", (ours, "attn_norm", "scale"), False
    for name in ("q", "k", "v", "o"):
      yield hf + f"self_attn.{name}_proj.weight", (ours, "attn", name, "kernel"), True
      if config.qkv_bias and name != "o":
        yield hf + f"self_attn.{name}_proj.bias", (ours, "attn", name, "bias"), False
    yield hf + "post_attention_layernorm.weight", (ours, "mlp_norm", "scale"), False
    for name in ("gate", "up", "down"):
      yield hf + f"mlp.{name}_proj.weight", (ours, "mlp", name, "kernel"), True
  yield "model.norm.weight", ("final_norm", "scale"), False
  if not config.tie_embeddings:
    yield "lm_head.weight", ("lm_head", "kernel"), True


def _path(key_path) -> tuple[str, ...]:
  return tuple(k.key for k in key_path)


def params_from_hf(config: ModelConfig, tensors: Mapping[str, np.ndarray]) -> transformer.Params:
  """Our parameter tree from HF tensors `{name: [out, in] / [n] array}`, in `config.param_dtype`.

  Raises:
    ValueError: a missing tensor, a tensor of the wrong shape, or an unexpected tensor.
  """
  by_path = {path: (name, transposed) for name, path, transposed in _name_map(config)}
  used = {name for name, _ in by_path.values()}
  ignored = {"lm_head.weight"} if config.tie_embeddings else set()
  unexpected = sorted(n for n in tensors if n not in used | ignored
                      and not n.endswith(_IGNORED_TENSOR_SUFFIXES))
  if unexpected:
    raise ValueError(f"Checkpoint has {len(unexpected)} tensors the decoder has no parameter "
                     f"for, e.g. {unexpected[:5]}.")
  missing = sorted(used - set(tensors))
  if missing:
    raise ValueError(f"Checkpoint lacks {len(missing)} tensors, e.g. {missing[:5]}.")

  def convert(key_path, expected):
    name, transposed = by_path[_path(key_path)]
    value = tensors[name].T if transposed else tensors[name]
    if value.shape != expected.shape:
      raise ValueError(f"Tensor {name} has shape {tensors[name].shape}; the config expects "
                       f"{expected.shape[::-1] if transposed else expected.shape}.")
    return jnp.asarray(np.asarray(value, expected.dtype))

  shapes = jax.eval_shape(lambda key: transformer.init_params(config, key), jax.random.key(0))
  return jax.tree_util.tree_map_with_path(convert, shapes)


def params_to_hf(config: ModelConfig, params: transformer.Params) -> dict[str, np.ndarray]:
  """HF tensors (host numpy arrays in the parameters' dtypes) of our parameter tree."""
  leaves = {_path(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
  expected = {path for _, path, _ in _name_map(config)}
  if set(leaves) != expected:
    raise ValueError(f"params do not match the config: extra {sorted(set(leaves) - expected)[:5]}"
                     f", missing {sorted(expected - set(leaves))[:5]}.")
  return {name: np.ascontiguousarray(np.asarray(leaves[path]).T if transposed
                                     else np.asarray(leaves[path]))
          for name, path, transposed in _name_map(config)}


def load_hf_checkpoint(path: str | os.PathLike, **overrides) -> tuple[ModelConfig, Any]:
  """Reads a local HF checkpoint directory: `(ModelConfig, params)`.

  Args:
    path: directory with `config.json` and `model.safetensors` or a sharded
      `model.safetensors.index.json`.
    **overrides: `ModelConfig` fields not in `config.json`, e.g. `dtype=jnp.float32`,
      `param_dtype=jnp.bfloat16`, `remat="full"` (defaults: those of `ModelConfig`).

  Raises:
    FileNotFoundError: no config.json or no weights in `path`.
    ValueError: an unsupported config or tensors that do not fit it (see `params_from_hf`).
  """
  path = os.fspath(path)
  config_path = os.path.join(path, CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise FileNotFoundError(f"No {CONFIG_FILE} in {path!r}.")
  with open(config_path) as f:
    config = config_from_hf(json.load(f), **overrides)
  if os.path.isfile(os.path.join(path, INDEX_FILE)):
    with open(os.path.join(path, INDEX_FILE)) as f:
      files = sorted(set(json.load(f)["weight_map"].values()))
  elif os.path.isfile(os.path.join(path, SINGLE_FILE)):
    files = [SINGLE_FILE]
  else:
    raise FileNotFoundError(f"No {SINGLE_FILE} or {INDEX_FILE} in {path!r}.")
  tensors = {}
  for file in files:
    with safe_open(os.path.join(path, file), framework="numpy") as f:
      tensors.update({name: f.get_tensor(name) for name in f.keys()})
  return config, params_from_hf(config, tensors)


def save_hf_checkpoint(config: ModelConfig, params: Any, path: str | os.PathLike, *,
                       max_shard_bytes: int | None = None, overwrite: bool = False) -> None:
  """Writes `config.json` and safetensors weights that `transformers` and `load_hf_checkpoint` read.

  Tensors keep the parameters' dtype (gathered to host memory). With `max_shard_bytes`, tensors
  are packed in order into `model-0000k-of-0000n.safetensors` files of at most that size (a larger
  tensor gets a file of its own) listed in `model.safetensors.index.json`; otherwise (or if
  everything fits in one shard) a single `model.safetensors` is written.

  Raises:
    FileExistsError: `path` already holds safetensors weights or an index and `overwrite` is
      False (with `overwrite=True` they are deleted first, so no stale shard survives).
    ValueError: a config no HF family can express, or params that do not match it.
  """
  path = os.fspath(path)
  tensors = params_to_hf(config, params)
  hf_config = config_to_hf(config)
  os.makedirs(path, exist_ok=True)
  stale = [f for f in os.listdir(path) if f.endswith(".safetensors") or f == INDEX_FILE]
  if stale and not overwrite:
    raise FileExistsError(f"{path!r} already holds {sorted(stale)}; pass overwrite=True.")
  for file in stale:
    os.remove(os.path.join(path, file))
  shards = _pack(tensors, max_shard_bytes)
  metadata = {"format": "pt"}  # transformers refuses safetensors files without it
  if len(shards) == 1:
    safetensors.numpy.save_file(tensors, os.path.join(path, SINGLE_FILE), metadata=metadata)
  else:
    weight_map = {}
    for k, shard in enumerate(shards, start=1):
      file = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
      safetensors.numpy.save_file({n: tensors[n] for n in shard}, os.path.join(path, file),
                                  metadata=metadata)
      weight_map.update({n: file for n in shard})
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())},
             "weight_map": weight_map}
    with open(os.path.join(path, INDEX_FILE), "w") as f:
      json.dump(index, f, indent=2)
  with open(os.path.join(path, CONFIG_FILE), "w") as f:
    json.dump(hf_config, f, indent=2)


def _pack(tensors: Mapping[str, np.ndarray], max_bytes: int | None) -> list[list[str]]:
  """Greedy in-order packing of tensor names into shards of at most `max_bytes`."""
  if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes < 1):
    raise ValueError(f"max_shard_bytes must be a positive int or None; got {max_bytes!r}.")
  shards, size = [[]], 0
  for name, tensor in tensors.items():
    if max_bytes is not None and shards[-1] and size + tensor.nbytes > max_bytes:
      shards, size = shards + [[]], 0
    shards[-1].append(name)
    size += tensor.nbytes
  return shards
