"""Offline preference training with any registered objective, Curry-DPO curricula, online rounds.

The policy starts from `train.init` (an SFT workdir or parameter file), which is also the first
reference model. `train.data` holds preference lists (listwise layout: `prompt`, `responses`,
`scores`) or unpaired thumbs data (`prompt`, `completion`, `label` rows) for the pointwise
objectives. Writes `params.msgpack`, `metrics.jsonl`, TensorBoard events, checkpoints and
`data_stats.json` to the workdir (one `stage_<i>/` folder per stage or round when there are
several).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Optional

import jax

from alignment.data import curriculum, formats
from alignment.models import lora, transformer
from alignment.recipes import config as config_lib
from alignment.recipes import preferences as preferences_lib
from alignment.training import objective, runs, setup

DATA_STATS_FILE = "data_stats.json"


@dataclasses.dataclass(frozen=True)
class Lora:
  """LoRA adapters of `rank` (> 0 trains adapters only; the frozen base is the reference)."""

  rank: int = 0
  alpha: float = 16.0
  targets: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down")


@dataclasses.dataclass(frozen=True)
class Train:
  """The training run.

  `reference`: "cache" (reference log-probs computed once, in batches of
  `reference_batch_size`, and cached on disk), "forward" (a frozen reference forward in the
  step), "lora" (the LoRA base with adapters off) or "none" (reference-free objectives).
  `data_layout`: a layout of `alignment.data.formats.LAYOUTS`, or "auto" (detected and said);
  `pairs`: how a pairwise objective pairs graded lists (`formats.BINARIZE_RULES`:
  "best_vs_worst", "best_vs_random", "all_pairs"; `docs/data.md`).
  `curriculum`: "" or "rank"/"gap" (Curry-DPO stages of pairs, easy to hard); `online_rounds`:
  N > 0 rounds of sampling from the current policy (the `preferences` section) and training;
  `refresh_reference`: between stages or rounds the trained model becomes the next reference.
  `eval_data`: a held-out file (same layout rules as `data`) whose loss and TRL-named metrics
  (`rewards/accuracies`, `rewards/margins`, `logps/chosen`, ...) are logged as `heldout/*` rows
  at the start, every `eval_every` steps (0: only at the start and the end) and at the end.
  `num_epochs` counts passes over the data where a recipe derives the steps from it
  (`num_steps` = 0, e.g. `alignment.recipes.align`). `kill_after_step` > 0 is a testing hook
  (SIGKILL after that step's checkpoint).
  """

  batch_size: int = 32
  num_steps: int = 300
  num_epochs: float = 1.0
  accum_steps: int = 1
  reference: str = "cache"
  reference_batch_size: int = 256
  init: str = ""
  data: str = ""
  eval_data: str = ""
  eval_every: int = 0
  optimizer: config_lib.Optimizer = config_lib.Optimizer(
      learning_rate=1e-3, schedule="cosine", warmup_steps=20, total_steps=300, b2=0.99)
  on_nonfinite: str = "skip"
  log_every: int = 25
  checkpoint_every: int = 100
  keep_checkpoints: int = 2
  lora: Lora = Lora()
  data_layout: str = "auto"
  pairs: str = "best_vs_worst"
  curriculum: str = ""
  online_rounds: int = 0
  refresh_reference: bool = True
  kill_after_step: int = -1


@dataclasses.dataclass(frozen=True)
class Config(config_lib.Run):
  # beta = 0.5: summed log-ratios over ~10 tokens need a firmer KL anchor than LiPO's 0.05-0.1
  # (beta 0.1 over-optimises the harmlessness attribute and loses correctness: win rate 0.63).
  loss: config_lib.Loss = config_lib.Loss("lipo_lambda", {"beta": 0.5})
  train: Train = Train()
  preferences: preferences_lib.Preferences = preferences_lib.Preferences()


@dataclasses.dataclass(frozen=True)
class Result:
  params: Any
  params_path: str


@dataclasses.dataclass(frozen=True)
class Stage:
  """A trained stage: the policy's parameters (LoRA merged into the base) and, with LoRA, the
  adapters themselves."""

  params: Any
  adapters: Optional[lora.LoraAdapters] = None


def read_preferences(path: str, workdir: str, *, layout: str = "auto", pairs: str = "",
                     seed: int = 0) -> tuple[list[dict], dict]:
  """Records of `path` under the default bad-input policy; with `pairs` (a rule of
  `formats.BINARIZE_RULES`) graded lists of more than two responses become pairs for a pairwise
  objective (data that is already pairs is left as it is).

  `layout="auto"` detects the layout (`formats.detect_layout`) and says which; the counts of the
  bad-input policy and of the binarisation are written to `workdir/data_stats.json`, and what
  was dropped or paired is printed.
  """
  if not path:
    raise ValueError("train.data is empty: set it to a preference file (--config.train.data=...).")
  if layout == "auto":
    layout, line = formats.detect_layout(path)
    print(f"[train] {path}: {line}", flush=True)
  stats = formats.DataStats()
  records = list(formats.read_records(path, layout=layout, stats=stats))
  if pairs and any(len(r["responses"]) > 2 for r in records):  # pairs stay as they are
    lists = len(records)
    records = formats.binarize(records, pairs, seed, stats=stats)
    print(f"[train] {path}: {lists} lists -> {len(records)} pairs ({pairs}; a pairwise "
          "objective; train.pairs sets the rule)", flush=True)
  if not records:
    raise ValueError(f"No usable preference records in {path} (counts: {dict(stats.counts)}).")
  os.makedirs(workdir, exist_ok=True)
  stats_path = os.path.join(workdir, DATA_STATS_FILE)
  with open(stats_path, "w", encoding="utf-8") as f:
    json.dump(stats.to_json(), f, indent=2)
  problems = {k: n for k, n in stats.counts.items()
              if k not in ("read_records", "kept_records") and not k.startswith("binarize_")}
  if problems:  # the bad-input policy dropped or repaired something: say so, not only on disk
    print(f"[train] {path}: kept {stats.counts.get('kept_records', 0)} of "
          f"{stats.counts.get('read_records', '?')} records "
          f"({', '.join(f'{k} {n}' for k, n in sorted(problems.items()))}; details in "
          f"{stats_path})", flush=True)
  return records, stats.to_json()


def train_stage(config: Config, workdir: str, *, encoding: runs.Encoding, model_config,
                records: list[dict], init_params, num_steps: int, list_size: int,
                shuffle: bool = True, reference_params=None,
                eval_records: Optional[list[dict]] = None) -> Stage:
  """One run of `config.loss` on `records` from `init_params`.

  `config` is any config with this module's `seed`, `mesh`, `loss`, `train` sections and a
  `model` section with `logprob_chunk`; `encoding` turns the records into batches. The reference
  model is `reference_params` (default: `init_params`; with LoRA, the base). `eval_records` are
  evaluated with the same loss (`objective.heldout_metrics`) every `train.eval_every` steps.
  """
  cfg = config.train
  os.makedirs(workdir, exist_ok=True)
  spec = objective.check_objective_supported(config.loss.name, cfg.reference)
  logp_fn = setup.logp_fn(model_config, chunk_size=config.model.logprob_chunk)
  use_lora = cfg.lora.rank > 0
  if cfg.reference == "lora" and not use_lora:
    raise ValueError("train.reference='lora' needs train.lora.rank > 0.")
  reference_params = init_params if reference_params is None else reference_params
  lora_kwargs, policy_kwargs, params, frozen = {}, {}, init_params, None
  if spec.needs_reference and cfg.reference in ("forward", "lora"):
    frozen = reference_params
  if use_lora:
    if reference_params is not init_params:
      raise ValueError("LoRA trains one stage from its base; it cannot be combined with "
                       "train.curriculum or train.online_rounds.")
    # The base is frozen and is the reference model: no second copy of the weights.
    params = lora.init_lora(
        init_params, jax.random.key(config.seed + 1), rank=cfg.lora.rank, alpha=cfg.lora.alpha,
        targets=tuple(cfg.lora.targets),
    )
    frozen = init_params
    lora_kwargs = dict(
        logical_axes=lora.logical_axes(params, transformer.logical_axes(model_config)),
        export_params=lambda adapters: lora.merge(init_params, adapters),
    )
    policy_kwargs = dict(policy_params=lambda adapters, base: lora.merge(base, adapters))
  loss_fn = objective.preference_loss(
      config.loss.name, logp_fn, reference=cfg.reference,
      hyper_parameters=dict(config.loss.hyper_parameters), ref_logp_fn=logp_fn,
      pad_id=encoding.tokenizer.pad_id, **policy_kwargs,
  )
  cached = functools.partial(
      runs.attach_reference_logps, encoding=encoding, logp_fn=logp_fn,
      ref_params=reference_params, list_size=list_size, batch_size=cfg.reference_batch_size,
      cache_dir=os.path.join(workdir, "ref_cache"))
  if cfg.reference == "cache" and spec.needs_reference:
    records = cached(records)
  eval_kwargs = {}
  if eval_records:
    if cfg.reference == "cache" and spec.needs_reference:
      eval_records = cached(eval_records)
    eval_kwargs = dict(eval_every=cfg.eval_every, eval_fn=objective.heldout_metrics(
        loss_fn, runs.fixed_batches(eval_records, encoding, batch_size=cfg.batch_size,
                                    list_size=list_size),
        loss_state=spec.init_state() if spec.stateful else ()))
  iterator = runs.batches(records, encoding, batch_size=cfg.batch_size, list_size=list_size,
                          seed=config.seed, shuffle=shuffle)
  state, _ = runs.train_run(
      name=f"train[{config.loss.name}]",
      workdir=workdir,
      loss_fn=loss_fn,
      params=params,
      optimizer_config=cfg.optimizer,
      iterator=iterator,
      num_steps=num_steps,
      seed=config.seed,
      model_config=model_config,
      mesh_config=dataclasses.asdict(config.mesh),
      frozen=frozen,
      loss_state=spec.init_state() if spec.stateful else (),
      accum_steps=cfg.accum_steps,
      on_nonfinite=cfg.on_nonfinite,
      log_every=cfg.log_every,
      checkpoint_every=cfg.checkpoint_every,
      keep_checkpoints=cfg.keep_checkpoints,
      kill_after_step=cfg.kill_after_step if cfg.kill_after_step > 0 else None,
      **lora_kwargs, **eval_kwargs,
  )
  if use_lora:
    return Stage(lora.merge(init_params, state.params), state.params)
  return Stage(state.params)


def _online_records(config: Config, stage_dir: str, policy: str, round_index: int,
                    pairs: str) -> list[dict]:
  """Fresh lists sampled from `policy` and rated (the `preferences` section), read back."""
  prefs = preferences_lib.run(
      config_lib.replace_in(config_lib.select(preferences_lib.Config, config), "preferences",
                            policy=policy, seed_offset=round_index),
      os.path.join(stage_dir, "preferences"))
  return read_preferences(prefs.path, stage_dir, layout="listwise", pairs=pairs,
                          seed=config.seed + round_index)[0]


def run(config: Config, workdir: str) -> Result:
  """Trains the policy on preference lists (or unpaired thumbs data); returns its parameters.

  Three schedules, all starting from `train.init` (the SFT policy, the first reference):
  - offline (default): `train.num_steps` steps on `train.data`;
  - Curry-DPO (`train.curriculum` = "rank" or "gap"): the lists become pair stages trained in
    order (easy to hard, not shuffled), `num_steps` split evenly between them;
  - online (`train.online_rounds` = N > 0): N rounds, each sampling and rating fresh lists from
    the current policy and training `num_steps / N` steps on them (`train.data` is not used).
  Between stages or rounds the model carries over; with `train.refresh_reference` (default) it
  also becomes the next reference (reference log-probs are recomputed), else the first
  reference stays.
  """
  cfg = config.train
  os.makedirs(workdir, exist_ok=True)
  if not cfg.init:
    raise ValueError("train.init is empty: set it to an SFT workdir or parameter file "
                     "(--config.train.init=...).")
  task, model_config = config_lib.task_and_model(config.task, config.model)
  spec = objective.check_objective_supported(config.loss.name, cfg.reference)
  init_params = setup.load_params(runs.init_model(model_config, config.seed), cfg.init)
  stages: list[Optional[list[dict]]]
  pairs = cfg.pairs if spec.family == "pairwise" and not cfg.curriculum else ""
  if cfg.eval_data and (cfg.online_rounds > 0 or cfg.curriculum):
    raise ValueError("train.eval_data is evaluated on the offline schedule only (without "
                     "train.curriculum and train.online_rounds).")
  eval_records = None
  if cfg.eval_data:
    eval_records = read_preferences(cfg.eval_data, os.path.join(workdir, "heldout"),
                                    layout=cfg.data_layout, pairs=pairs, seed=config.seed)[0]
  if cfg.online_rounds > 0:
    if cfg.curriculum:
      raise ValueError("train.online_rounds and train.curriculum cannot be combined.")
    stages = [None] * cfg.online_rounds
  else:
    records, _ = read_preferences(cfg.data, workdir, layout=cfg.data_layout, pairs=pairs,
                                  seed=config.seed)
    if cfg.curriculum:
      if spec.family != "pairwise":
        raise ValueError(f"train.curriculum builds pairs; {config.loss.name!r} is not pairwise.")
      stages = curriculum.stage_records(records, cfg.curriculum)
    else:
      stages = [records]
  steps = max(cfg.num_steps // max(len(stages), 1), 1)
  params = reference = init_params
  for i, stage_records in enumerate(stages):
    stage_dir = workdir if len(stages) == 1 else os.path.join(workdir, f"stage_{i}")
    if stage_records is None:  # online: fresh preferences from the current policy
      policy = cfg.init if i == 0 else os.path.join(workdir, f"stage_{i - 1}")
      stage_records = _online_records(config, stage_dir, policy, i, pairs)
    list_size = max(len(r["responses"]) for r in stage_records + (eval_records or []))
    if spec.family == "pairwise" and list_size != 2:
      raise ValueError(
          f"Objective {config.loss.name!r} is pairwise but the data has "
          f"{list_size}-response records; unpaired (thumbs) data trains the pointwise "
          "objectives (kto, bco, ...).")
    params = train_stage(
        config, stage_dir, encoding=runs.task_encoding(task), model_config=model_config,
        records=stage_records, init_params=params, reference_params=reference,
        num_steps=steps if len(stages) > 1 else cfg.num_steps, list_size=list_size,
        shuffle=not cfg.curriculum, eval_records=eval_records).params
    if cfg.refresh_reference:
      reference = params
  path = os.path.join(workdir, setup.PARAMS_FILE)
  if len(stages) > 1:
    path = setup.save_params(params, workdir)
  return Result(params, path)
