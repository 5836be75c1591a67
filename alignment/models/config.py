"""Configuration of the reference decoder: one frozen dataclass and named presets.

`ModelConfig` is hashable (frozen dataclass of hashable fields), so it is passed to `jax.jit`
as a static argument. Presets:

| name            | use                                   | shape (V, D, L, H/G, hd, F)          |
|-----------------|---------------------------------------|--------------------------------------|
| `tiny`          | tests and CPU demos that train in min | 32, 64, 2, 4/2, 16, 128              |
| `small`         | benchmarks                            | 32000, 256, 4, 4/2, 64, 1024         |
| `llama3_2_1b`   | Llama-3.2-1B (1.24B parameters)       | 128256, 2048, 16, 32/8, 64, 8192     |
| `qwen2_5_0_5b`  | Qwen2.5-0.5B (0.49B parameters)       | 151936, 896, 24, 14/2, 64, 4864      |
| `gemma_2b`      | Gemma-2B (2.51B parameters)           | 256000, 2048, 18, 8/1, 256, 16384    |

The real-model presets follow the `config.json` files published with those checkpoints; they are
only ever instantiated abstractly (`jax.eval_shape`) in tests.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax.numpy as jnp

REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
MLP_ACTIVATIONS = ("silu", "gelu_tanh")
SLIDING_WINDOW_LAYERS = ("all", "alternate")


@dataclasses.dataclass(frozen=True)
class Llama3RopeScaling:
  """The frequency-dependent RoPE rescaling of Llama 3.1+ (HF `rope_type="llama3"`).

  Wavelengths shorter than `original_max_length / high_freq_factor` are kept, those longer
  than `original_max_length / low_freq_factor` are divided by `factor`, and the band in between
  is interpolated linearly in `original_max_length / wavelength`.
  """

  factor: float = 32.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_length: int = 8192


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape and numerics of a Llama-style decoder (also Mistral, Qwen2/3, Gemma 1/2 via flags).

  Every family feature is off by default, so a preset that does not name it is a plain Llama.

  Attributes:
    vocab_size: V, number of token ids.
    width: D, the residual-stream (embedding) dimension.
    depth: L, number of decoder layers.
    num_heads: H, query heads.
    num_kv_heads: G, key/value heads (grouped-query attention; H % G == 0; G = 1 is MQA).
    head_dim: hd, per-head dimension (decoupled from `width`, as in Gemma).
    mlp_dim: F, hidden dimension of the gated MLP.
    tie_embeddings: if True the LM head is the transposed embedding (no `lm_head` parameter).
    rope_theta: RoPE base frequency.
    rope_scaling: optional Llama-3 RoPE rescaling.
    norm_eps: epsilon of RMSNorm.
    max_length: longest sequence the model is meant for (informational; RoPE has no table).
    dtype: compute dtype of activations and matmuls (bfloat16 by default); RMSNorm statistics,
      attention softmax, logits and log-softmax are float32 whatever it is.
    param_dtype: storage dtype of parameters (float32 by default). The two are independent:
      `alignment.models.hf` documents how a checkpoint sets them.
    remat: per-layer rematerialisation: "none", "full" (save nothing), "dots" (save matmul
      outputs), "dots_no_batch" (save matmul outputs without batch dimensions).
    qkv_bias: biases on the q, k, v projections (Qwen2).
    scale_embeddings: multiply the embeddings by sqrt(width) (Gemma).
    norm_unit_offset: RMSNorm multiplies by (1 + scale), scale initialised to 0 (Gemma).
    mlp_activation: "silu" (SwiGLU: Llama, Qwen2) or "gelu_tanh" (GeGLU: Gemma).
    qk_norm: per-head RMSNorm of queries and keys before RoPE, parameters `[hd]` (Qwen3; as in
      *Scaling Vision Transformers to 22 Billion Parameters*, Dehghani et al., ICML 2023).
    post_norms: RMSNorm also on the attention and MLP outputs before each residual add (Gemma 2).
    attn_logit_softcap: c, attention scores become `c·tanh(s / c)` before masking (Gemma 2);
      None = off.
    final_logit_softcap: c, logits become `c·tanh(z / c)` before any softmax (Gemma 2); None = off.
    query_pre_attn_scalar: attention scores are scaled by `query_pre_attn_scalar^(-1/2)` instead
      of `hd^(-1/2)` (Gemma 2); None = `hd`.
    sliding_window: W, a query at position p attends only to keys at positions > p − W (Mistral,
      Gemma 2); None = unlimited. A window >= `max_length` changes nothing.
    sliding_window_layers: the layers the window applies to: "all" (Mistral) or "alternate"
      (layers 0, 2, 4, ...; the odd layers attend globally: Gemma 2).
  """

  vocab_size: int
  width: int
  depth: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  tie_embeddings: bool = False
  rope_theta: float = 10_000.0
  rope_scaling: Optional[Llama3RopeScaling] = None
  norm_eps: float = 1e-5
  max_length: int = 2048
  dtype: Any = jnp.bfloat16
  param_dtype: Any = jnp.float32
  remat: str = "none"
  qkv_bias: bool = False
  scale_embeddings: bool = False
  norm_unit_offset: bool = False
  mlp_activation: str = "silu"
  qk_norm: bool = False
  post_norms: bool = False
  attn_logit_softcap: Optional[float] = None
  final_logit_softcap: Optional[float] = None
  query_pre_attn_scalar: Optional[float] = None
  sliding_window: Optional[int] = None
  sliding_window_layers: str = "all"

  def __post_init__(self):
    for name in ("vocab_size", "width", "depth", "num_heads", "num_kv_heads", "head_dim",
                 "mlp_dim", "max_length"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}.")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"ModelConfig.num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
          f"({self.num_kv_heads}).")
    if self.head_dim % 2:
      raise ValueError(f"ModelConfig.head_dim must be even for RoPE, got {self.head_dim}.")
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"ModelConfig.remat must be one of {REMAT_POLICIES}, got {self.remat!r}.")
    if self.mlp_activation not in MLP_ACTIVATIONS:
      raise ValueError(
          f"ModelConfig.mlp_activation must be one of {MLP_ACTIVATIONS}, "
          f"got {self.mlp_activation!r}.")
    if self.rope_theta <= 0 or self.norm_eps <= 0:
      raise ValueError("ModelConfig.rope_theta and norm_eps must be positive.")
    for name in ("attn_logit_softcap", "final_logit_softcap", "query_pre_attn_scalar"):
      value = getattr(self, name)
      if value is not None and (isinstance(value, bool) or not value > 0):
        raise ValueError(f"ModelConfig.{name} must be None or positive, got {value!r}.")
    window = self.sliding_window
    if window is not None and (not isinstance(window, int) or isinstance(window, bool)
                               or window < 1):
      raise ValueError(f"ModelConfig.sliding_window must be None or a positive int, "
                       f"got {window!r}.")
    if self.sliding_window_layers not in SLIDING_WINDOW_LAYERS:
      raise ValueError(
          f"ModelConfig.sliding_window_layers must be one of {SLIDING_WINDOW_LAYERS}, "
          f"got {self.sliding_window_layers!r}.")
    # Canonical numpy dtypes keep the config hashable and comparable whatever was passed in.
    object.__setattr__(self, "dtype", jnp.dtype(self.dtype))
    object.__setattr__(self, "param_dtype", jnp.dtype(self.param_dtype))

  def is_sliding(self, layer: int) -> bool:
    """Whether layer `layer` (0-based) attends through the sliding window."""
    return self.sliding_window is not None and (
        self.sliding_window_layers == "all" or layer % 2 == 0)


_PRESETS = {
    "tiny": ModelConfig(
        vocab_size=32, width=64, depth=2, num_heads=4, num_kv_heads=2, head_dim=16,
        mlp_dim=128, max_length=128),
    "small": ModelConfig(
        vocab_size=32_000, width=256, depth=4, num_heads=4, num_kv_heads=2, head_dim=64,
        mlp_dim=1024, max_length=2048),
    # https://huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json
    "llama3_2_1b": ModelConfig(
        vocab_size=128_256, width=2048, depth=16, num_heads=32, num_kv_heads=8, head_dim=64,
        mlp_dim=8192, tie_embeddings=True, rope_theta=500_000.0,
        rope_scaling=Llama3RopeScaling(), norm_eps=1e-5, max_length=131_072),
    # https://huggingface.co/Qwen/Qwen2.5-0.5B/blob/main/config.json
    "qwen2_5_0_5b": ModelConfig(
        vocab_size=151_936, width=896, depth=24, num_heads=14, num_kv_heads=2, head_dim=64,
        mlp_dim=4864, tie_embeddings=True, rope_theta=1_000_000.0, norm_eps=1e-6,
        max_length=32_768, qkv_bias=True),
    # https://huggingface.co/google/gemma-2b/blob/main/config.json
    "gemma_2b": ModelConfig(
        vocab_size=256_000, width=2048, depth=18, num_heads=8, num_kv_heads=1, head_dim=256,
        mlp_dim=16_384, tie_embeddings=True, rope_theta=10_000.0, norm_eps=1e-6,
        max_length=8192, scale_embeddings=True, norm_unit_offset=True,
        mlp_activation="gelu_tanh"),
}


def preset_names() -> tuple[str, ...]:
  """Names accepted by `get_config`."""
  return tuple(_PRESETS)


def get_config(name: str, **overrides) -> ModelConfig:
  """Returns the preset `name` with fields replaced by `overrides`.

  Example: `get_config("tiny", dtype=jnp.float32, tie_embeddings=True)`.

  Raises:
    KeyError: unknown preset (the message lists the known ones).
    TypeError: an override that is not a `ModelConfig` field.
  """
  if name not in _PRESETS:
    raise KeyError(f"Unknown model preset {name!r}; known presets: {sorted(_PRESETS)}.")
  fields = {f.name for f in dataclasses.fields(ModelConfig)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise TypeError(f"get_config({name!r}): unknown ModelConfig fields {unknown}; "
                    f"known fields: {sorted(fields)}.")
  return dataclasses.replace(_PRESETS[name], **overrides)
