"""The model engine: a Llama-style decoder (also Qwen2 and Gemma shapes), memory-safe sequence
log-probs, prefix sharing and packing, a KV-cache sampler, LoRA, reward heads and Hugging Face
checkpoint import/export. Submodules: `config`, `transformer`, `logprobs`, `prefix`, `sampler`,
`lora`, `reward_model`, `hf`."""

from alignment.models.config import Llama3RopeScaling, ModelConfig, get_config, preset_names
from alignment.models.logprobs import sequence_logps, token_logps
from alignment.models.prefix import pack_sequences, prefix_shared_logps
from alignment.models.sampler import sample
from alignment.models.transformer import (
    apply, init_cache, init_params, lm_head_weight, logical_axes, logits)
