"""Hugging Face checkpoints (safetensors) in and out: Llama, Mistral, Qwen2, Qwen3, Gemma, Gemma 2.

A checkpoint directory holds `config.json` and either `model.safetensors` or shards listed in
`model.safetensors.index.json` (`{"weight_map": {tensor name: file name}}`). Only local paths are
read or written; nothing is downloaded.

Conventions bridged here (HF -> `alignment.models.transformer`):
- `nn.Linear` stores `weight [out, in]`; our kernels are `[in, out]`: transposed both ways.
- Qwen2 has biases on q, k, v (`qkv_bias=True`); the other families have none.
- Qwen3 RMS-normalises each query and key head before RoPE (`qk_norm`: `self_attn.q_norm`,
  `k_norm` -> `attn/q_norm`, `attn/k_norm`) and its `head_dim` need not be D / H.
- Mistral is Llama with a sliding window on every layer (`sliding_window`, `sliding_window_layers
  ="all"`); a window of None or >= the model's length changes nothing.
- Gemma multiplies embeddings by `sqrt(hidden_size)` (`scale_embeddings`), its RMSNorm multiplies
  by `1 + weight` (`norm_unit_offset`; the stored weight is used as is) and its MLP is GeGLU with
  the tanh GELU (`mlp_activation="gelu_tanh"`; the legacy `hidden_act="gelu"` of the official
  Gemma configs means the same, as in `transformers`).
- Gemma 2 adds, on top of Gemma: norms after attention and MLP (`post_norms`; HF's
  `post_attention_layernorm` is then `attn_post_norm`, `pre_feedforward_layernorm` is `mlp_norm`
  and `post_feedforward_layernorm` is `mlp_post_norm`), `attn_logit_softcapping` and
  `final_logit_softcapping` (`attn_logit_softcap`, `final_logit_softcap`),
  `query_pre_attn_scalar`, and a sliding window on layers 0, 2, 4, ...
  (`sliding_window_layers="alternate"`, HF's default `layer_types`).
- Tied embeddings (`tie_word_embeddings`): no `lm_head.weight` is needed, and one present in the
  file is ignored (the LM head is `embed_tokens.weight.T`).
- RoPE: `rope_parameters` (transformers >= 5) or the legacy `rope_theta` + `rope_scaling`; the
  "default" and "llama3" RoPE types are supported.

Dtypes: the parameter dtype and the compute dtype are separate settings (`param_dtype`, `dtype`
of `ModelConfig`). Loading keeps the checkpoint's `dtype` (transformers >= 5) or `torch_dtype`
from `config.json` (float32 if absent) as the parameter dtype unless `param_dtype` is passed,
and the compute dtype defaults to the parameter dtype unless `dtype` is passed: a float32
checkpoint computes in float32 (logits equal to transformers' float32 ones), a bfloat16 one in
bfloat16, as transformers does. Log-softmax and losses are float32 whatever the compute dtype.
Saving writes the parameters' dtype as `dtype` and `torch_dtype`.

Features the decoder does not have (attention/MLP output biases, sliding windows on other layer
patterns, partial rotary, other RoPE types, bidirectional attention) are rejected with an error
naming the field, never silently dropped; so are unexpected tensors.
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
CHECKPOINT_DTYPES = ("float32", "bfloat16", "float16")

# The ModelConfig fields a family fixes, at Llama's values; Gemma's changes to them.
_LLAMA_FLAGS = (("qkv_bias", False), ("qk_norm", False), ("scale_embeddings", False),
                ("norm_unit_offset", False), ("mlp_activation", "silu"), ("post_norms", False))
_GEMMA_FLAGS = dict(scale_embeddings=True, norm_unit_offset=True, mlp_activation="gelu_tanh")
_GEMMA_ACTIVATIONS = ("gelu_pytorch_tanh", "gelu")


def _flags(**changes) -> tuple[tuple[str, Any], ...]:
  """Llama's family flags with `changes`."""
  return tuple((name, changes.get(name, value)) for name, value in _LLAMA_FLAGS)


@dataclasses.dataclass(frozen=True)
class _Family:
  """A `model_type`: the `ModelConfig` flags it fixes, and HF defaults of fields it may omit."""

  architecture: str
  flags: tuple[tuple[str, Any], ...]
  tie_embeddings: bool
  max_length: int
  head_dim: int | None  # None: hidden_size // num_attention_heads.
  activations: tuple[str, ...]  # accepted `hidden_act` values, the one written first.
  sliding: str | None = None  # the `sliding_window_layers` it can express; None: no window.
  default_window: int | None = None  # HF default of `sliding_window`.
  gemma2: bool = False  # soft-caps and query_pre_attn_scalar.


_FAMILIES = {
    "llama": _Family("LlamaForCausalLM", _flags(), False, 2048, None, ("silu",)),
    "mistral": _Family("MistralForCausalLM", _flags(), False, 131_072, None, ("silu",),
                       sliding="all", default_window=4096),
    "qwen2": _Family("Qwen2ForCausalLM", _flags(qkv_bias=True), False, 32_768, None, ("silu",)),
    "qwen3": _Family("Qwen3ForCausalLM", _flags(qk_norm=True), False, 32_768, 128, ("silu",)),
    "gemma": _Family("GemmaForCausalLM", _flags(**_GEMMA_FLAGS), True, 8192, 256,
                     _GEMMA_ACTIVATIONS),
    "gemma2": _Family("Gemma2ForCausalLM", _flags(post_norms=True, **_GEMMA_FLAGS), True, 8192,
                      256, _GEMMA_ACTIVATIONS, sliding="alternate", default_window=4096,
                      gemma2=True),
}
# Fields that would need a feature the decoder lacks: (field, value that is fine).
_UNSUPPORTED = (("attention_bias", False), ("mlp_bias", False), ("use_sliding_window", False),
                ("use_bidirectional_attention", None), ("partial_rotary_factor", 1.0))
_IGNORED_TENSOR_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers some old checkpoints carry
# Gemma 2's defaults (transformers' Gemma2Config) of the fields a config.json may omit.
_GEMMA2_DEFAULTS = (("attn_logit_softcapping", 50.0), ("final_logit_softcapping", 30.0),
                    ("query_pre_attn_scalar", 256))


def config_from_hf(hf: Mapping[str, Any], **overrides) -> ModelConfig:
  """`ModelConfig` of a Hugging Face `config.json` dict; `overrides` set other fields (remat...).

  `param_dtype` defaults to the checkpoint's `dtype`/`torch_dtype` and `dtype` (compute) to
  `param_dtype` (see the module docstring).

  Raises:
    ValueError: an unsupported `model_type` or dtype, a missing required field, or a feature the
      decoder does not implement.
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
      dict(family.flags), tie_embeddings=hf.get("tie_word_embeddings", family.tie_embeddings),
      rope_theta=float(rope_theta), rope_scaling=rope_scaling,
      norm_eps=float(hf.get("rms_norm_eps", 1e-6)), max_length=max_length,
      **_sliding_from_hf(hf, model_type, fields["depth"]))
  if family.gemma2:
    values = {k: hf.get(k, default) for k, default in _GEMMA2_DEFAULTS}
    fields.update(attn_logit_softcap=values["attn_logit_softcapping"],
                  final_logit_softcap=values["final_logit_softcapping"],
                  query_pre_attn_scalar=values["query_pre_attn_scalar"])
  fields["param_dtype"] = (overrides["param_dtype"] if "param_dtype" in overrides
                           else _checkpoint_dtype(hf, model_type))
  fields["dtype"] = overrides.get("dtype", fields["param_dtype"])
  return ModelConfig(**{**fields, **overrides})


def _checkpoint_dtype(hf: Mapping[str, Any], model_type: str) -> str:
  name = hf.get("dtype") or hf.get("torch_dtype") or "float32"  # "dtype": transformers >= 5
  if name not in CHECKPOINT_DTYPES:
    raise ValueError(f"config.json ({model_type}): dtype {name!r} is not supported; supported: "
                     f"{CHECKPOINT_DTYPES} (or pass param_dtype).")
  return name


def _sliding_from_hf(hf: Mapping[str, Any], model_type: str, depth: int) -> dict[str, Any]:
  """`sliding_window` and `sliding_window_layers` of `hf` (empty: no window on any layer).

  The sliding layers are those of `layer_types` when given, else the family's default (every
  layer for Mistral, the even ones for Gemma 2, none otherwise); they must be one of the
  patterns the family expresses.
  """
  family = _FAMILIES[model_type]
  window = hf.get("sliding_window", family.default_window)
  types = hf.get("layer_types")
  if types is not None and (len(types) != depth
                            or set(types) - {"full_attention", "sliding_attention"}):
    raise ValueError(f"config.json ({model_type}): layer_types {types} is not supported; "
                     f"expected {depth} entries of 'full_attention' or 'sliding_attention'.")
  expected = [family.sliding == "all" or (family.sliding == "alternate" and i % 2 == 0)
              for i in range(depth)]
  sliding = expected if types is None else [t == "sliding_attention" for t in types]
  if window is None or not any(sliding):
    return {}
  if sliding != expected:
    raise ValueError(
        f"config.json ({model_type}): layer_types {types} has sliding-window layers in a "
        f"pattern the decoder does not support for {model_type} (supported: "
        f"{family.sliding or 'no sliding layers'}).")
  return dict(sliding_window=int(window), sliding_window_layers=family.sliding)


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


def _expresses(family: _Family, config: ModelConfig) -> bool:
  """Whether `family`'s config.json can say everything `config` says."""
  return (all(getattr(config, name) == value for name, value in family.flags)
          and (config.sliding_window is None or config.sliding_window_layers == family.sliding)
          and (family.gemma2 or (config.attn_logit_softcap, config.final_logit_softcap,
                                 config.query_pre_attn_scalar) == (None, None, None)))


def _model_type(config: ModelConfig, model_type: str | None) -> str:
  """`model_type` if given and able to express `config`, else the first family that is."""
  able = [name for name, family in _FAMILIES.items() if _expresses(family, config)]
  if not able or (model_type is not None and model_type not in able):
    names = [name for name, _ in _LLAMA_FLAGS] + [
        "sliding_window", "sliding_window_layers", "attn_logit_softcap", "final_logit_softcap",
        "query_pre_attn_scalar"]
    wanted = "" if model_type is None else f" {model_type!r}"
    raise ValueError(
        f"ModelConfig is not a Hugging Face family{wanted}: "
        f"{ {name: getattr(config, name) for name in names} }; families that can express it: "
        f"{able}.")
  return able[0] if model_type is None else model_type


def config_to_hf(config: ModelConfig, model_type: str | None = None) -> dict[str, Any]:
  """The `config.json` dict of `config`, for `model_type` or the first family that fits.

  Llama is chosen before Mistral when no window is set (the same model); pass
  `model_type="mistral"` to keep a window-less Mistral a Mistral.

  Raises:
    ValueError: no family (or not `model_type`) can express `config`.
  """
  model_type = _model_type(config, model_type)
  family = _FAMILIES[model_type]
  rope = {"rope_type": "default", "rope_theta": config.rope_theta}
  if config.rope_scaling is not None:
    s = config.rope_scaling
    rope.update(rope_type="llama3", factor=s.factor, low_freq_factor=s.low_freq_factor,
                high_freq_factor=s.high_freq_factor,
                original_max_position_embeddings=s.original_max_length)
  dtype = jnp.dtype(config.param_dtype).name
  hf = {
      "architectures": [family.architecture], "model_type": model_type,
      "vocab_size": config.vocab_size, "hidden_size": config.width,
      "intermediate_size": config.mlp_dim, "num_hidden_layers": config.depth,
      "num_attention_heads": config.num_heads, "num_key_value_heads": config.num_kv_heads,
      "head_dim": config.head_dim, "hidden_act": family.activations[0],
      "max_position_embeddings": config.max_length, "rms_norm_eps": config.norm_eps,
      "tie_word_embeddings": config.tie_embeddings,
      "rope_parameters": rope,
      # Legacy spellings of the same, for transformers < 5.
      "rope_theta": config.rope_theta,
      "rope_scaling": rope if config.rope_scaling is not None else None,
      "dtype": dtype, "torch_dtype": dtype,
  }
  if family.sliding is not None:
    hf["sliding_window"] = config.sliding_window
  if family.gemma2:
    hf.update(
        hidden_activation=family.activations[0],
        layer_types=["sliding_attention" if config.is_sliding(i) else "full_attention"
                     for i in range(config.depth)],
        attn_logit_softcapping=config.attn_logit_softcap,
        final_logit_softcapping=config.final_logit_softcap,
        query_pre_attn_scalar=config.query_pre_attn_scalar or config.head_dim)  # an int in HF
  return hf


def name_map(config: ModelConfig) -> Iterator[tuple[str, tuple[str, ...], bool]]:
  """`(HF tensor name, our parameter path, transposed?)` for every parameter of `config`."""
  yield "model.embed_tokens.weight", ("embed", "embedding"), False
  for i in range(config.depth):
    hf, ours = f"model.layers.{i}.", f"layers_{i}"
    yield hf + "input_layernorm.weight", (ours, "attn_norm", "scale"), False
    for name in ("q", "k", "v", "o"):
      yield hf + f"self_attn.{name}_proj.weight", (ours, "attn", name, "kernel"), True
      if config.qkv_bias and name != "o":
        yield hf + f"self_attn.{name}_proj.bias", (ours, "attn", name, "bias"), False
    if config.qk_norm:
      for name in ("q_norm", "k_norm"):
        yield hf + f"self_attn.{name}.weight", (ours, "attn", name, "scale"), False
    if config.post_norms:
      yield hf + "post_attention_layernorm.weight", (ours, "attn_post_norm", "scale"), False
      yield hf + "pre_feedforward_layernorm.weight", (ours, "mlp_norm", "scale"), False
      yield hf + "post_feedforward_layernorm.weight", (ours, "mlp_post_norm", "scale"), False
    else:
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
  by_path = {path: (name, transposed) for name, path, transposed in name_map(config)}
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
  expected = {path for _, path, _ in name_map(config)}
  if set(leaves) != expected:
    raise ValueError(f"params do not match the config: extra {sorted(set(leaves) - expected)[:5]}"
                     f", missing {sorted(expected - set(leaves))[:5]}.")
  return {name: np.ascontiguousarray(np.asarray(leaves[path]).T if transposed
                                     else np.asarray(leaves[path]))
          for name, path, transposed in name_map(config)}


def load_hf_checkpoint(path: str | os.PathLike, **overrides) -> tuple[ModelConfig, Any]:
  """Reads a local HF checkpoint directory: `(ModelConfig, params)`.

  Args:
    path: directory with `config.json` and `model.safetensors` or a sharded
      `model.safetensors.index.json`.
    **overrides: `ModelConfig` fields, e.g. `dtype=jnp.bfloat16` (compute),
      `param_dtype=jnp.bfloat16`, `remat="full"`. Without them the parameter dtype is the
      checkpoint's and the compute dtype the parameter dtype (see the module docstring); other
      fields not in `config.json` take `ModelConfig`'s defaults.

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
                       max_shard_bytes: int | None = None, overwrite: bool = False,
                       model_type: str | None = None) -> None:
  """Writes `config.json` and safetensors weights that `transformers` and `load_hf_checkpoint` read.

  Tensors keep the parameters' dtype (gathered to host memory). With `max_shard_bytes`, tensors
  are packed in order into `model-0000k-of-0000n.safetensors` files of at most that size (a larger
  tensor gets a file of its own) listed in `model.safetensors.index.json`; otherwise (or if
  everything fits in one shard) a single `model.safetensors` is written. `model_type` picks the
  family written when several can express `config` (see `config_to_hf`).

  Raises:
    FileExistsError: `path` already holds safetensors weights or an index and `overwrite` is
      False (with `overwrite=True` they are deleted first, so no stale shard survives).
    ValueError: a config no HF family (or not `model_type`) can express, or params that do not
      match it.
  """
  path = os.fspath(path)
  tensors = params_to_hf(config, params)
  hf_config = config_to_hf(config, model_type)
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
