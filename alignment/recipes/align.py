"""Align your own Hugging Face checkpoint on your own preference file.

`model.path` is a local Hugging Face folder (`config.json`, safetensors weights, `tokenizer.json`
+ `tokenizer_config.json`; Llama, Qwen2/3, Gemma/Gemma 2 and Mistral families): the model, its
tokenizer and its chat template come from it. `train.data` is a JSONL/Parquet file or a
`datasets` folder in any layout of `alignment.data.formats` (detected and said in the log:
TRL's standard and conversational pairwise, HH transcripts, UltraFeedback lists, our listwise
layout, unpaired thumbs; `docs/data.md`); conversational records are rendered with the
checkpoint's chat template, graded lists are binarised for a pairwise objective (`train.pairs`).
Any registered objective trains the whole model or LoRA adapters (`train.lora.rank > 0`; the
frozen base is then the reference: one copy of the weights), with reference log-probs cached
by hash, for `train.num_epochs` passes over the file unless `train.num_steps` is set, with
checkpoints and exact resume; a held-out file (`train.eval_data`) is evaluated every
`train.eval_every` steps under TRL's metric names (`heldout/rewards/accuracies`, ...).

Writes to the workdir: `params.msgpack`, `metrics.jsonl`, TensorBoard events, checkpoints,
`data_stats.json`, `lengths.json` (batch shapes and how many prompts and completions the limits
cut), and `hf/`: a Hugging Face folder of the aligned model (merged weights, the
checkpoint's tokenizer files and chat template, `bos/eos/pad_token_id` in `config.json`) that
`transformers.AutoModelForCausalLM` and `AutoTokenizer` load as they are; with LoRA also
`adapter/`: the adapters in PEFT's format, loadable with `peft` on the original checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
from typing import Any, Optional

import jax.numpy as jnp

from alignment import losses, parallel
from alignment.data import batching
from alignment.data import tokenizers
from alignment.models import hf, peft
from alignment.recipes import config as config_lib
from alignment.recipes import preference_training
from alignment.training import objective, runs

EXPORT_DIR = "hf"
LENGTHS_FILE = "lengths.json"
ADAPTER_DIR = "adapter"
# Files of a checkpoint folder that travel with the exported model unchanged.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "generation_config.json", "tokenizer.model")


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """A local Hugging Face checkpoint folder.

  `dtype` (compute) and `param_dtype` ("" keeps the rule of `alignment.models.hf`: the
  checkpoint's parameter dtype, computed in that dtype, so a float32 checkpoint computes in
  float32); `chat_template`: the name of one of the folder's templates ("" for its default);
  `logprob_chunk`: vocabulary chunk of the memory-safe log-probs; `remat`: per-layer
  rematerialisation (`ModelConfig.remat`).
  """

  path: str = ""
  dtype: str = ""
  param_dtype: str = ""
  chat_template: str = ""
  logprob_chunk: int = 1024
  remat: str = "none"


@dataclasses.dataclass(frozen=True)
class Lengths:
  """TRL's length settings, in tokens: a prompt keeps its end (BOS included), a completion its
  start (EOS included), a whole sequence at most `max_length`. The static shapes of the batches
  are these limits, or the longest prompt / completion of the data when that is shorter."""

  max_prompt_length: int = 512
  max_completion_length: int = 512
  max_length: int = 1024


@dataclasses.dataclass(frozen=True)
class Config:
  seed: int = 0
  mesh: config_lib.Mesh = config_lib.Mesh()
  model: Checkpoint = Checkpoint()
  loss: config_lib.Loss = config_lib.Loss("dpo", {"beta": 0.1})
  # TRL's DPOConfig defaults: batch 8, AdamW at 1e-6 with a linear decay, one epoch here.
  train: preference_training.Train = preference_training.Train(
      batch_size=8, num_steps=0, num_epochs=1.0, reference_batch_size=8, log_every=10,
      optimizer=config_lib.Optimizer(learning_rate=1e-6, schedule="linear", weight_decay=0.0))
  lengths: Lengths = Lengths()


@dataclasses.dataclass(frozen=True)
class Result:
  params: Any
  export_path: str
  adapter_path: Optional[str]


def check(config: Config) -> losses.ObjectiveSpec:
  """The objective's spec; raises a ValueError naming the first setting that cannot work, before
  any expensive work."""
  cfg = config.train
  if not config.model.path:
    raise ValueError("model.path is empty: set it to a local Hugging Face checkpoint folder "
                     "(--config.model.path=$MODEL).")
  if not os.path.isfile(os.path.join(config.model.path, hf.CONFIG_FILE)):
    raise ValueError(f"model.path={config.model.path!r} is not a Hugging Face checkpoint folder "
                     f"(no {hf.CONFIG_FILE}).")
  if not cfg.data:
    raise ValueError("train.data is empty: set it to a preference file "
                     "(--config.train.data=$DATA).")
  if cfg.curriculum or cfg.online_rounds:
    raise ValueError("train.curriculum and train.online_rounds are not supported for a Hugging "
                     "Face checkpoint yet; train on the file (both empty).")
  if cfg.num_steps < 0 or (cfg.num_steps == 0 and cfg.num_epochs <= 0):
    raise ValueError(f"train.num_steps ({cfg.num_steps}) or train.num_epochs ({cfg.num_epochs}) "
                     "must be > 0.")
  return objective.check_objective_supported(config.loss.name, cfg.reference)


def _dtype_overrides(model: Checkpoint) -> dict:
  out = {"remat": model.remat}
  for name in ("dtype", "param_dtype"):
    if getattr(model, name):
      out[name] = jnp.dtype(getattr(model, name))
  return out


def chat_renderer(tokenizer, name: str = "") -> Optional[batching.Render]:
  """`render(messages, *, add_generation_prompt) -> text` with the checkpoint's chat template
  (`name` picks one of several), or None when the checkpoint has none."""
  if name:
    if name not in tokenizer.chat_templates:
      raise ValueError(f"model.chat_template={name!r}: the checkpoint's templates are "
                       f"{sorted(tokenizer.chat_templates)}.")
    template = tokenizer.chat_templates[name]
  else:
    template = tokenizer.chat_template
  if template is None:
    return None
  return functools.partial(tokenizers.apply_chat_template, tokenizer, template=template,
                           tokenize=False)


def fitted_encoding(records, tokenizer, render,
                    lengths: Lengths) -> tuple[runs.Encoding, dict[str, int]]:
  """The `runs.Encoding` of the records and how many of them the limits cut.

  The static shapes are the limits of `lengths`, or the longest prompt and completion of the
  records (BOS and EOS included) when shorter, so that short data is not padded to the limits.
  The counts: `records`, `truncated_prompts` (longer than `max_prompt_length`: their start is
  cut), `truncated_completions` (longer than `max_completion_length`, or than `max_length` with
  their prompt: their end is cut).
  """
  bos = 1 if tokenizer.add_bos_token and tokenizer.bos_id is not None else 0
  eos = 1 if tokenizer.eos_id is not None else 0
  sizes = []
  for record in records:
    if render is not None and not isinstance(record["prompt"], str):
      record = batching.render_conversation(record, render)
    sizes.append((bos + len(tokenizer.encode(record["prompt"])),
                  [eos + len(tokenizer.encode(r)) for r in record["responses"]]))
  prompt = min(lengths.max_prompt_length, max(p for p, _ in sizes))
  response = min(lengths.max_completion_length, max(max(rs) for _, rs in sizes))
  max_length = lengths.max_length if lengths.max_length < prompt + response else None
  counts = {
      "records": len(sizes),
      "truncated_prompts": sum(p > prompt for p, _ in sizes),
      "truncated_completions": sum(
          r > min(response, (max_length or prompt + response) - min(p, prompt))
          for p, rs in sizes for r in rs),
  }
  encoding = runs.Encoding(tokenizer, prompt, response, max_length=max_length,
                           add_bos=bool(tokenizer.add_bos_token), render=render)
  return encoding, counts


def num_steps(train: preference_training.Train, num_records: int) -> int:
  """`train.num_steps`, or `ceil(num_epochs · records / batch_size)` when it is 0."""
  if train.num_steps > 0:
    return train.num_steps
  return max(1, math.ceil(train.num_epochs * num_records / train.batch_size))


def export(model_config, params, tokenizer, source: str, path: str) -> str:
  """Writes the Hugging Face folder of `params`: weights and `config.json` in the source
  checkpoint's family, with `bos/eos/pad_token_id`, and the source's tokenizer files."""
  with open(os.path.join(source, hf.CONFIG_FILE), encoding="utf-8") as f:
    model_type = json.load(f).get("model_type")
  hf.save_hf_checkpoint(model_config, params, path, overwrite=True, model_type=model_type)
  config_path = os.path.join(path, hf.CONFIG_FILE)
  with open(config_path, encoding="utf-8") as f:
    hf_config = json.load(f)
  hf_config.update(bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id,
                   pad_token_id=tokenizer.pad_id)
  with open(config_path, "w", encoding="utf-8") as f:
    json.dump(hf_config, f, indent=2)
  for name in TOKENIZER_FILES:
    if os.path.isfile(os.path.join(source, name)):
      shutil.copyfile(os.path.join(source, name), os.path.join(path, name))
  return path


def run(config: Config, workdir: str) -> Result:
  """Aligns `model.path` on `train.data`; returns the trained parameters and the export paths."""
  spec = check(config)
  cfg = config.train
  os.makedirs(workdir, exist_ok=True)
  tokenizer = tokenizers.load_tokenizer(config.model.path)
  read = functools.partial(preference_training.read_preferences, layout=cfg.data_layout,
                           pairs=cfg.pairs if spec.family == "pairwise" else "", seed=config.seed)
  records, _ = read(cfg.data, workdir)
  eval_records = read(cfg.eval_data, os.path.join(workdir, "heldout"))[0] if cfg.eval_data else None
  render = chat_renderer(tokenizer, config.model.chat_template)
  encoding, cut = fitted_encoding(records + (eval_records or []), tokenizer, render,
                                  config.lengths)
  with open(os.path.join(workdir, LENGTHS_FILE), "w", encoding="utf-8") as f:
    json.dump({**cut, "max_prompt_tokens": encoding.max_prompt_tokens,
               "max_completion_tokens": encoding.max_response_tokens,
               "max_length": encoding.max_length}, f, indent=2)
  # The weights last: every check on the files above comes before the expensive read.
  model_config, params = hf.load_hf_checkpoint(config.model.path,
                                               **_dtype_overrides(config.model))
  if tokenizer.vocab_size > model_config.vocab_size:
    raise ValueError(f"The tokenizer of {config.model.path!r} has {tokenizer.vocab_size} ids, "
                     f"more than the model's vocabulary ({model_config.vocab_size}).")
  steps = num_steps(cfg, len(records))
  optimizer = cfg.optimizer
  if optimizer.schedule != "constant" and optimizer.total_steps == 0:
    optimizer = dataclasses.replace(optimizer, total_steps=steps)
  config = config_lib.replace_in(config, "train", optimizer=optimizer)
  print(f"[align] {len(records)} records, {steps} steps of {cfg.batch_size}; shapes: prompt "
        f"{encoding.max_prompt_tokens}, completion {encoding.max_response_tokens}"
        + (f", length {encoding.max_length}" if encoding.max_length else "")
        + f" tokens; truncated: {cut['truncated_prompts']} prompts (start cut), "
        f"{cut['truncated_completions']} completions (end cut), in {LENGTHS_FILE}", flush=True)
  trained = preference_training.train_stage(
      config, workdir, encoding=encoding, model_config=model_config, records=records,
      init_params=params, num_steps=steps, eval_records=eval_records,
      list_size=max(len(r["responses"]) for r in records + (eval_records or [])))
  export_path = os.path.join(workdir, EXPORT_DIR)
  adapter_path = None if trained.adapters is None else os.path.join(workdir, ADAPTER_DIR)
  # Collective on every host (global arrays to host memory), then process 0 writes.
  params, adapters = parallel.to_host((trained.params, trained.adapters))
  if parallel.is_coordinator():
    export(model_config, params, tokenizer, config.model.path, export_path)
    if adapter_path is not None:
      peft.save_peft_adapters(model_config, adapters, adapter_path,
                              base_model_name_or_path=os.path.abspath(config.model.path))
  print(f"[align] the aligned model is in {export_path}"
        + (f", its LoRA adapters in {adapter_path}" if adapter_path else ""), flush=True)
  return Result(trained.params, export_path, adapter_path)
