"""Offline preference training with any registered objective (and Curry-DPO curricula).

    python -m experiments.train --workdir=/tmp/train --config.loss.name=dpo \
        --config.train.init=/tmp/sft --config.train.data=/tmp/prefs/preferences.jsonl

The policy starts from `train.init` (an SFT workdir), which is also the reference model.
Writes `params.msgpack`, `metrics.jsonl`, TensorBoard events, checkpoints and `data_stats.json`.
"""

from __future__ import annotations

import json
import os

import jax

from alignment.data import formats
from alignment.losses import listwise
from alignment.models import lora, transformer
from alignment.training import objective, runs, setup
from experiments import _flags, make_preferences


def data_layout(path: str) -> str:
  """"unpaired" when the first row of `path` has a `completion` (KTO-style thumbs data:
  `prompt`, `completion`, `label` 1 desirable / 0 undesirable), else "listwise"."""
  for _, row in formats.read_rows(path):
    return "unpaired" if isinstance(row, dict) and "completion" in row else "listwise"
  raise ValueError(f"No rows in {path}.")


def read_preferences(path: str, workdir: str) -> tuple[list[dict], dict]:
  """Records (listwise, or unpaired: one response each) from `path` under the default bad-input
  policy; counts are saved."""
  stats = formats.DataStats()
  records = list(formats.read_records(path, layout=data_layout(path), stats=stats))
  if not records:
    raise ValueError(f"No usable preference lists in {path} (counts: {dict(stats.counts)}).")
  with open(os.path.join(workdir, "data_stats.json"), "w", encoding="utf-8") as f:
    json.dump(stats.to_json(), f, indent=2)
  problems = {k: n for k, n in stats.counts.items() if k not in ("read_records", "kept_records")}
  if problems:  # the bad-input policy dropped or repaired something: say so, not only on disk
    print(f"[train] {path}: kept {len(records)} of {stats.counts.get('read_records', '?')} "
          f"records ({', '.join(f'{k} {n}' for k, n in sorted(problems.items()))}; details in "
          f"{os.path.join(workdir, 'data_stats.json')})", flush=True)
  return records, stats.to_json()


def _train_stage(config, workdir, *, task, model_config, records, init_params, num_steps,
                 list_size, shuffle=True, reference_params=None):
  """One run of `config.loss` on `records` from `init_params`.

  The reference model is `reference_params` (default: `init_params`; with LoRA, the base).
  """
  cfg = config.train
  os.makedirs(workdir, exist_ok=True)
  spec = objective.check_objective_supported(config.loss.name, cfg.reference)
  hyper = {k: v for k, v in config.loss.items() if k != "name"}
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
      config.loss.name, logp_fn, reference=cfg.reference, hyper_parameters=hyper,
      ref_logp_fn=logp_fn, pad_id=task.tokenizer.pad_id, **policy_kwargs,
  )
  if cfg.reference == "cache" and spec.needs_reference:
    records = runs.attach_reference_logps(
        records, task, logp_fn, reference_params, list_size=list_size,
        batch_size=config.evaluate.batch_size, cache_dir=os.path.join(workdir, "ref_cache"),
    )
  iterator = runs.batches(
      records, task, batch_size=cfg.batch_size, list_size=list_size, seed=config.seed,
      shuffle=shuffle,
  )
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
      mesh_config=config.mesh,
      frozen=frozen,
      loss_state=spec.init_state() if spec.stateful else (),
      accum_steps=cfg.accum_steps,
      on_nonfinite=cfg.on_nonfinite,
      log_every=cfg.log_every,
      checkpoint_every=cfg.checkpoint_every,
      keep_checkpoints=cfg.keep_checkpoints,
      kill_after_step=cfg.kill_after_step if cfg.kill_after_step > 0 else None,
      **lora_kwargs,
  )
  return lora.merge(init_params, state.params) if use_lora else state.params


def curriculum_stages(records: list[dict], by: str) -> list[list[dict]]:
  """Curry-DPO stages of pair records (chosen first), each ordered easy to hard (§4.8)."""
  schedule = listwise.curry_schedule([r["scores"] for r in records], by=by)
  return [
      [{"prompt": records[e]["prompt"],
        "responses": [records[e]["responses"][c], records[e]["responses"][j]],
        "scores": [1.0, 0.0]} for e, c, j in rows]
      for rows in schedule
  ]


def run(config, workdir: str, *, init: str | None = None, data: str | None = None):
  """Trains the policy on preference lists (or unpaired thumbs data); returns its parameters.

  Unpaired data (`prompt`, `completion`, `label` rows; one response per example) trains the
  pointwise objectives (`kto` with reference "forward"/"lora", `bco`, `apo_zero_unpaired`, ...).

  Three schedules, all starting from `train.init` (the SFT policy, the first reference):
  - offline (default): `train.num_steps` steps on `train.data`;
  - Curry-DPO (`train.curriculum` = "rank" or "gap"): the lists become pair stages trained in
    order (easy to hard, not shuffled), `num_steps` split evenly between them;
  - online (`train.online_rounds` = N > 0): N rounds, each sampling and rating fresh lists from
    the current policy (`experiments.make_preferences`) and training `num_steps / N` steps on
    them (`train.data` is not used).
  Between stages or rounds the model carries over; with `train.refresh_reference` (default) it
  also becomes the next reference (reference log-probs are recomputed), else the first
  reference stays.
  """
  cfg = config.train
  os.makedirs(workdir, exist_ok=True)
  task, model_config = runs.task_and_model(config)
  spec = objective.check_objective_supported(config.loss.name, cfg.reference)
  init_params = setup.load_params(runs.init_model(model_config, config.seed), init or cfg.init)
  stage_kwargs = dict(task=task, model_config=model_config)
  if cfg.online_rounds > 0:
    if cfg.curriculum:
      raise ValueError("train.online_rounds and train.curriculum cannot be combined.")
    stages = [None] * cfg.online_rounds
  else:
    records, _ = read_preferences(data or cfg.data, workdir)
    if cfg.curriculum:
      if spec.family != "pairwise":
        raise ValueError(f"train.curriculum builds pairs; {config.loss.name!r} is not pairwise.")
      stages = curriculum_stages(records, cfg.curriculum)
    else:
      stages = [records]
  steps = max(cfg.num_steps // max(len(stages), 1), 1)
  params = reference = init_params
  for i, stage_records in enumerate(stages):
    stage_dir = workdir if len(stages) == 1 else os.path.join(workdir, f"stage_{i}")
    if stage_records is None:  # online: fresh preferences from the current policy
      policy_dir = init or cfg.init if i == 0 else os.path.join(workdir, f"stage_{i - 1}")
      make_preferences.run(
          config, os.path.join(stage_dir, "preferences"), policy=policy_dir, seed_offset=i)
      stage_records, _ = read_preferences(
          os.path.join(stage_dir, "preferences", make_preferences.DATA_FILE), stage_dir)
    list_size = max(len(r["responses"]) for r in stage_records)
    if spec.family == "pairwise" and list_size != 2:
      raise ValueError(
          f"Objective {config.loss.name!r} is pairwise but the data has lists of up to "
          f"{list_size} responses; use a listwise objective or train.curriculum='rank'."
      )
    params = _train_stage(
        config, stage_dir, records=stage_records, init_params=params,
        reference_params=reference, num_steps=steps if len(stages) > 1 else cfg.num_steps,
        list_size=list_size, shuffle=not cfg.curriculum, **stage_kwargs)
    if cfg.refresh_reference:
      reference = params
  if len(stages) > 1:
    setup.save_params(params, workdir)
  return params


if __name__ == "__main__":
  _flags.run_main(run)
