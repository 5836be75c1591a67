"""Tiny Hugging Face checkpoint files built locally for tests (nothing is downloaded).

`write_tokenizer(folder, family=...)` trains a byte-level BPE tokenizer with the `tokenizers`
package and writes the files a checkpoint folder carries: `tokenizer.json`,
`tokenizer_config.json` (special tokens, `added_tokens_decoder`, the chat template) and, on
request, `chat_template.jinja`. The two families mirror real checkpoints:

- `"llama3"`: Llama 3 special tokens and header-style chat template (with `bos_token`,
  `strftime_now` and `raise_exception`), a post-processor that adds `<|begin_of_text|>`, and
  `tokenizer_class` `PreTrainedTokenizerFast` (transformers uses `tokenizer.json` as it is).
- `"chatml"`: Qwen 2 pre-tokenizer, ChatML template (`<|im_start|>` / `<|im_end|>`, default
  system prompt), no BOS, and `tokenizer_class` `Qwen2Tokenizer` (transformers rebuilds the
  pipeline from the vocabulary and merges, which equals the file's here).

`write_checkpoint(folder, family, tied=..., shards=...)` saves a tiny random `transformers` model
of each family that `alignment.models.hf` reads (Llama, Mistral, Qwen2, Qwen3, Gemma, Gemma 2)
with `save_pretrained`, sharded on request, and returns the model for comparisons.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Optional, Union

CORPUS = [
    "the cat sat on the mat",
    "a dog ate the red apple",
    "sort the digits 31415 and 92653",
    "preference data for alignment",
    "the quick brown fox jumps over the lazy dog",
    "You are a helpful assistant. Answer the question.",
    "system user assistant: hello, how are you? I am fine, thanks!",
    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024",
] * 20

LLAMA3_TEMPLATE = (
    "{{- bos_token }}\n"
    "{%- if not date_string is defined %}\n"
    "    {%- set date_string = strftime_now(\"%d %b %Y\") %}\n"
    "{%- endif %}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set system_message = \"\" %}\n"
    "{%- endif %}\n"
    "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n"
    "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n"
    "{{- system_message }}\n"
    "{{- \"<|eot_id|>\" }}\n"
    "{%- for message in messages %}\n"
    "    {%- if message['role'] not in ['user', 'assistant'] %}\n"
    "        {{- raise_exception('Only user and assistant roles follow the system message, got '"
    " + message['role']) }}\n"
    "    {%- endif %}\n"
    "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n"
)

CHATML_TEMPLATE = (
    "{%- for message in messages %}\n"
    "    {%- if loop.first and message.role != 'system' %}\n"
    "        {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "    {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

# Per family: special tokens (ids from 0 in this order), the named ones, the chat template.
_FAMILIES = {
    "llama3": dict(
        specials=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                  "<|end_header_id|>", "<|eot_id|>", "<|finetune_right_pad_id|>"],
        named={"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
        template=LLAMA3_TEMPLATE, tokenizer_class="PreTrainedTokenizerFast",
    ),
    "chatml": dict(
        specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        named={"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
               "unk_token": None},
        template=CHATML_TEMPLATE, tokenizer_class="Qwen2Tokenizer",
    ),
}

# Qwen 2's pre-tokenisation pattern (transformers' Qwen2Tokenizer).
_QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _train_bpe(family: str, specials: list[str], vocab_size: int):
  """A byte-level BPE `tokenizers.Tokenizer` trained on `CORPUS`, `specials` first."""
  from tokenizers import (  # pylint: disable=g-import-not-at-top
      Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers)

  tok = Tokenizer(models.BPE())
  if family == "chatml":
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
  else:
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=specials,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
  )
  tok.train_from_iterator(CORPUS, trainer=trainer)
  if family == "llama3":
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", 0)],
    )
  else:
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
  return tok


def write_tokenizer(
    folder: Union[str, os.PathLike],
    family: str = "llama3",
    *,
    template: Optional[str] = None,
    template_location: str = "config",
    config_overrides: Optional[dict] = None,
    vocab_size: int = 400,
) -> pathlib.Path:
  """Writes a tiny tokenizer of `family` ("llama3" or "chatml") into `folder`.

  Args:
    folder: created if missing; `tokenizer.json` and `tokenizer_config.json` are written there.
    family: which special tokens, template, pre-tokenizer and post-processor (module docstring).
    template: a Jinja chat template replacing the family's.
    template_location: `"config"` (`chat_template` string in `tokenizer_config.json`), `"list"`
      (a list `[{"name": "default", ...}, {"name": "tool_use", ...}]` there, the second
      template the first with a `tool_use: ` prefix), `"file"` (`chat_template.jinja` beside
      it) or `"none"` (no template).
    config_overrides: keys set in `tokenizer_config.json` last (None values delete the key).
    vocab_size: BPE vocabulary size, special tokens included.

  Returns:
    the folder as a `pathlib.Path`.
  """
  spec = _FAMILIES[family]
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  tok = _train_bpe(family, spec["specials"], vocab_size)
  tok.save(str(folder / "tokenizer.json"))
  template = spec["template"] if template is None else template
  config = {
      "tokenizer_class": spec["tokenizer_class"],
      "model_max_length": 4096,
      "clean_up_tokenization_spaces": False,
      "added_tokens_decoder": {
          str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                   "single_word": False, "special": True}
          for i, s in enumerate(spec["specials"])
      },
      **spec["named"],
  }
  if template_location == "config":
    config["chat_template"] = template
  elif template_location == "list":
    config["chat_template"] = [{"name": "default", "template": template},
                               {"name": "tool_use", "template": "tool_use: " + template}]
  elif template_location == "file":
    (folder / "chat_template.jinja").write_text(template)
  elif template_location != "none":
    raise ValueError(f"write_tokenizer: unknown template_location {template_location!r}.")
  for key, value in (config_overrides or {}).items():
    if value is None:
      config.pop(key, None)
    else:
      config[key] = value
  (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
  return folder


# ---------------------------------------------------------------------------------------------
# Checkpoints: tiny random `transformers` models of every family `alignment.models.hf` reads.

# The shape every tiny checkpoint shares (GQA: 4 query heads over 2 key/value heads).
CHECKPOINT_SHAPE = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2)
# Per family: the transformers config class and the fields that exercise its conventions. Llama:
# Llama-3 RoPE scaling; Qwen2: tied (as Qwen2.5-0.5B) with qkv biases; Qwen3 and the Gemmas:
# head_dim != D / H; Mistral and Gemma 2: a window of 4 (shorter than the test sequences); Gemma
# 2: query_pre_attn_scalar != head_dim and soft-caps small enough to bend the values.
CHECKPOINT_FAMILIES = {
    "llama": ("LlamaConfig", dict(rope_parameters=dict(
        rope_type="llama3", rope_theta=500_000.0, factor=8.0, low_freq_factor=1.0,
        high_freq_factor=4.0, original_max_position_embeddings=64), rms_norm_eps=1e-5)),
    "mistral": ("MistralConfig", dict(sliding_window=4)),
    "qwen2": ("Qwen2Config", dict(tie_word_embeddings=True, rope_parameters=dict(
        rope_type="default", rope_theta=1e6))),
    "qwen3": ("Qwen3Config", dict(head_dim=16)),
    "gemma": ("GemmaConfig", dict(head_dim=16)),
    "gemma2": ("Gemma2Config", dict(head_dim=16, sliding_window=4, query_pre_attn_scalar=24,
                                    attn_logit_softcapping=2.0, final_logit_softcapping=3.0)),
}


def hf_model(family: str, *, tied: Optional[bool] = None, seed: int = 0, **changes):
  """A random float32 `transformers` causal LM of `family` (a key of `CHECKPOINT_FAMILIES`).

  Built with `<Family>Config(**CHECKPOINT_SHAPE, **family fields, **changes)` and
  `AutoModelForCausalLM.from_config`; `tied` sets `tie_word_embeddings`. Every weight is then
  redrawn at O(0.1-1) (norm scales around 1, or around 0 for the Gemmas' `1 + w` norms; biases
  included), so that every convention changes the logits.
  """
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  config_class, fields = CHECKPOINT_FAMILIES[family]
  fields = {**CHECKPOINT_SHAPE, **fields, **changes}
  if tied is not None:
    fields["tie_word_embeddings"] = tied
  config = getattr(transformers, config_class)(**fields)
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      offset = 1.0 if "norm" in name and not family.startswith("gemma") else 0.0
      p.copy_(offset + torch.randn_like(p) * (0.3 if "norm" in name or "bias" in name else 0.15))
  return model


def write_checkpoint(folder: Union[str, os.PathLike], family: str, *,
                     tied: Optional[bool] = None, shards: Optional[str] = None, seed: int = 0,
                     **changes):
  """Saves `hf_model(family, tied=tied, seed=seed, **changes)` into `folder` and returns it.

  `save_pretrained` writes `config.json`, `generation_config.json` and `model.safetensors`, or,
  with `shards` (a `max_shard_size` such as `"20KB"`), several shards and
  `model.safetensors.index.json`.
  """
  model = hf_model(family, tied=tied, seed=seed, **changes)
  model.save_pretrained(folder, **({} if shards is None else {"max_shard_size": shards}))
  return model
