"""LoRA adapters in and out in PEFT's format, loadable by `peft` on the original HF checkpoint.

PEFT (Hugging Face's Parameter-Efficient Fine-Tuning library) stores the LoRA adapters of a causal
LM (*LoRA: Low-Rank Adaptation of Large Language Models*, Hu et al., ICLR 2022) as a folder:
- `adapter_config.json`: `peft_type` "LORA", `task_type` "CAUSAL_LM", the rank `r`,
  `lora_alpha`, `target_modules` (module names such as `q_proj`, matched as name suffixes), the
  base checkpoint's `base_model_name_or_path`, and options left at their plain-LoRA values.
- `adapter_model.safetensors`: for every adapted `nn.Linear` `<module>` (`weight [out, in]`),
  `base_model.model.<module>.lora_A.weight [r, in]` and `...lora_B.weight [out, r]`; the layer
  computes `W x + (lora_alpha / r) · lora_B lora_A x`.

Our adapters (`alignment.models.lora`) hold `A [in, r]` and `B [r, out]` per kernel
`W [in, out]` (the HF weight transposed) with scale `alpha / r`, so `lora_A.weight = A.T`,
`lora_B.weight = B.T`, and the updates agree: `(scale · A B).T = scale · B.T A.T`. Module names
are those of `alignment.models.hf` (`model.layers.{i}.self_attn.q_proj`, `mlp.down_proj`, ...,
shared by the Llama, Mistral, Qwen2, Qwen3, Gemma and Gemma 2 families).

```python
save_peft_adapters(config, adapters, "out/adapter", base_model_name_or_path="path/to/model")
# PyTorch: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("path/to/model"),
#                                    "out/adapter")
```
The adapter folder must not be a model folder: `transformers`, with `peft` installed, applies
adapters found beside a `config.json` on top of that folder's weights (a merged export would get
the update twice), so `save_peft_adapters` refuses such a folder.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import traverse_util
from safetensors import safe_open

from alignment.models import hf
from alignment.models import lora
from alignment.models import transformer
from alignment.models.config import ModelConfig

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
# PeftModelForCausalLM.base_model (LoraModel).model (the transformers model).
_PREFIX = "base_model.model."
_TENSOR_NAME = re.compile(re.escape(_PREFIX) + r"(.+)\.lora_([AB])\.weight")
# adapter_config.json options that change the maths: (field, the plain-LoRA value we write).
_PLAIN_LORA = (("fan_in_fan_out", False), ("bias", "none"), ("use_rslora", False),
               ("use_dora", False), ("lora_bias", False), ("rank_pattern", {}),
               ("alpha_pattern", {}), ("modules_to_save", None))

Path = tuple[str, ...]


def _modules(config: ModelConfig) -> dict[Path, tuple[str, tuple[int, int]]]:
  """`{our layer path: (HF module name, kernel shape [in, out])}` of every linear layer.

  E.g. `("layers_0", "attn", "q") -> ("model.layers.0.self_attn.q_proj", (D, H * Dh))`.
  """
  shapes = traverse_util.flatten_dict(
      jax.eval_shape(lambda key: transformer.init_params(config, key), jax.random.key(0)))
  return {path[:-1]: (name.removesuffix(".weight"), shapes[path].shape)
          for name, path, transposed in hf.name_map(config) if transposed}


def _target_modules(modules: Mapping[Path, tuple[str, Any]], adapted: list[Path]) -> list[str]:
  """Short names (`q_proj`, ...) when they match exactly the adapted modules, else full names.

  PEFT adapts a module whose name equals or ends with `.<target>`, so the short names are used
  only if every layer has the same adapted projections.
  """
  names = sorted(modules[path][0] for path in adapted)
  short = sorted({name.rsplit(".", 1)[-1] for name in names})
  matched = sorted(name for name, _ in modules.values() if name.rsplit(".", 1)[-1] in short)
  return short if matched == names else names


def _factors(adapters: lora.LoraAdapters) -> dict[Path, dict[str, jax.Array]]:
  """`{layer path: {"a": [in, r], "b": [r, out]}}` of `adapters`."""
  factors: dict[Path, dict[str, jax.Array]] = {}
  for key, value in traverse_util.flatten_dict(adapters.weights).items():
    factors.setdefault(key[:-1], {})[key[-1]] = value
  return factors


def _check_factors(modules: Mapping[Path, tuple[str, tuple[int, int]]], path: Path,
                   factor: Mapping[str, Any], rank: int, where: str) -> None:
  """Raises ValueError unless `factor` is `{"a": [in, rank], "b": [rank, out]}` of a kernel."""
  if set(factor) != {"a", "b"}:
    raise ValueError(f"{where}: adapter {'/'.join(path)} has factors {sorted(factor)}; "
                     f"expected ['a', 'b'].")
  if path not in modules:
    raise ValueError(f"{where}: adapter {'/'.join(path)} is no linear layer of the config; "
                     f"linear layers: {['/'.join(p) for p in sorted(modules)][:8]}...")
  fan_in, fan_out = modules[path][1]
  a_shape, b_shape = factor["a"].shape, factor["b"].shape
  if tuple(a_shape) != (fan_in, rank) or tuple(b_shape) != (rank, fan_out):
    raise ValueError(f"{where}: adapter {'/'.join(path)} has A {tuple(a_shape)} and B "
                     f"{tuple(b_shape)}; the kernel [{fan_in}, {fan_out}] at rank {rank} needs "
                     f"A ({fan_in}, {rank}) and B ({rank}, {fan_out}).")


def adapters_to_peft(config: ModelConfig, adapters: lora.LoraAdapters
                     ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """`(adapter_config.json fields less base_model_name_or_path, PEFT tensors)` of `adapters`.

  Tensors keep the adapters' dtype: `lora_A.weight = A.T [r, in]`, `lora_B.weight = B.T
  [out, r]`; `lora_alpha = scale · r` (an int when whole).

  Raises:
    ValueError: no adapters, adapters of several ranks, or a layer or shape not in `config`.
  """
  modules, factors = _modules(config), _factors(adapters)
  ranks = sorted({f["a"].shape[-1] for f in factors.values() if "a" in f})
  if len(ranks) != 1:
    raise ValueError(f"save_peft_adapters: expected adapters of one rank; got ranks {ranks}.")
  rank = ranks[0]
  tensors = {}
  for path, factor in sorted(factors.items()):
    _check_factors(modules, path, factor, rank, "save_peft_adapters")
    for name in ("a", "b"):
      tensor = np.ascontiguousarray(np.asarray(factor[name]).T)
      tensors[f"{_PREFIX}{modules[path][0]}.lora_{name.upper()}.weight"] = tensor
  alpha = adapters.scale * rank
  fields = {
      "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank,
      "lora_alpha": int(alpha) if float(alpha).is_integer() else alpha,
      "target_modules": _target_modules(modules, list(factors)), "lora_dropout": 0.0,
      "inference_mode": True, "init_lora_weights": True, **dict(_PLAIN_LORA),
  }
  return fields, tensors


def save_peft_adapters(config: ModelConfig, adapters: lora.LoraAdapters,
                       path: str | os.PathLike, *, base_model_name_or_path: str) -> None:
  """Writes `adapter_config.json` and `adapter_model.safetensors` into `path` (created if missing).

  `peft.PeftModel.from_pretrained(base, path)` on the HF model of `config` (the checkpoint at
  `base_model_name_or_path`) then computes `merge(params, adapters)`'s logits. Existing adapter
  files in `path` are replaced.

  Args:
    config: the decoder the adapters belong to (its HF module names are the family's).
    adapters: from `lora.init_lora` (one rank; any subset of the linear layers).
    path: the adapter folder; not a model folder (see the module docstring).
    base_model_name_or_path: the base checkpoint, recorded for `peft` (a local folder or a Hub
      name; nothing is read from it here).

  Raises:
    ValueError: `path` holds a `config.json`, or the adapters do not fit `config`.
  """
  path = os.fspath(path)
  if os.path.isfile(os.path.join(path, hf.CONFIG_FILE)):
    raise ValueError(f"save_peft_adapters: {path!r} is a model folder (it has "
                     f"{hf.CONFIG_FILE}); transformers would apply the adapters on top of its "
                     f"weights. Write them to a folder of their own.")
  fields, tensors = adapters_to_peft(config, adapters)
  os.makedirs(path, exist_ok=True)
  safetensors.numpy.save_file(tensors, os.path.join(path, ADAPTER_WEIGHTS_FILE),
                              metadata={"format": "pt"})  # as transformers' own files
  with open(os.path.join(path, ADAPTER_CONFIG_FILE), "w") as f:
    json.dump({**fields, "base_model_name_or_path": base_model_name_or_path}, f, indent=2)


def adapters_from_peft(config: ModelConfig, fields: Mapping[str, Any],
                       tensors: Mapping[str, np.ndarray]) -> lora.LoraAdapters:
  """The inverse of `adapters_to_peft`: `LoraAdapters` with `scale = lora_alpha / r`.

  Raises:
    ValueError: not a plain LoRA adapter (DoRA, rsLoRA, biases, per-module ranks, saved modules,
      fan-in-fan-out), a tensor of no linear layer of `config`, a missing factor, or a shape that
      does not fit.
  """
  if fields.get("peft_type") != "LORA":
    raise ValueError(f"load_peft_adapters: peft_type {fields.get('peft_type')!r} is not 'LORA'.")
  for field, plain in _PLAIN_LORA:
    if fields.get(field, plain) not in (plain, None):
      raise ValueError(f"load_peft_adapters: {field}={fields[field]!r} is not supported "
                       f"(plain LoRA has {plain!r}).")
  modules = _modules(config)
  by_name = {name: path for path, (name, _) in modules.items()}
  factors: dict[Path, dict[str, jax.Array]] = {}
  for name, tensor in tensors.items():
    match = _TENSOR_NAME.fullmatch(name)
    if match is None or match[1] not in by_name:
      raise ValueError(f"load_peft_adapters: tensor {name!r} is no LoRA factor of a linear "
                       f"layer of the config.")
    factors.setdefault(by_name[match[1]], {})[match[2].lower()] = jnp.asarray(tensor.T)
  rank = fields["r"]
  for path, factor in factors.items():
    _check_factors(modules, path, factor, rank, "load_peft_adapters")
  weights = traverse_util.unflatten_dict({path + (name,): value for path, factor in
                                          factors.items() for name, value in factor.items()})
  return lora.LoraAdapters(weights=weights, scale=fields["lora_alpha"] / rank)


def load_peft_adapters(config: ModelConfig, path: str | os.PathLike) -> lora.LoraAdapters:
  """Reads a PEFT LoRA folder (`adapter_config.json`, `adapter_model.safetensors`) of `config`.

  Factors keep the file's dtype; the adapters equal those `save_peft_adapters` wrote.

  Raises:
    FileNotFoundError: a file is missing (PEFT's older `adapter_model.bin` is not read).
    ValueError: see `adapters_from_peft`.
  """
  path = os.fspath(path)
  for file in (ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE):
    if not os.path.isfile(os.path.join(path, file)):
      raise FileNotFoundError(f"No {file} in {path!r}.")
  with open(os.path.join(path, ADAPTER_CONFIG_FILE)) as f:
    fields = json.load(f)
  with safe_open(os.path.join(path, ADAPTER_WEIGHTS_FILE), framework="numpy") as f:
    tensors = {name: f.get_tensor(name) for name in f.keys()}
  return adapters_from_peft(config, fields, tensors)
