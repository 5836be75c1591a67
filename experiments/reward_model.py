"""Reward-model training: Bradley–Terry on pairs or Plackett–Luce on lists, held-out accuracy.

    python -m experiments.reward_model --config=experiments/configs/reward_model.py \
        --workdir=/tmp/rm [--config.reward_model.heads=attributes \
        --config.reward_model.labels=per_attribute] [--config.loss.name=plackett_luce]

Candidate responses per prompt are the task's demonstrations (or samples of an SFT policy);
training lists are labelled by the simulated rater over the true reward (or, with
`data.attribute`, over that attribute's true value: a scalar reward model of one attribute, whose
held-out lists are ranked by that attribute too), and with `labels="per_attribute"` each head of
the multi-head model by its attribute's true value (`task.attributes_batch`). The reward model
(`alignment.models.reward_model`) is trained with `alignment.training.reward_training` and
evaluated every `train.eval_every` steps on held-out prompts (disjoint split), whose lists of
`evaluate.k` responses are labelled by the true reward (or `data.attribute`): pairwise accuracy
(`metrics.ranking_accuracy`) and exact-match list accuracy (`metrics.ranking_accuracy_lists`).
Writes `params.msgpack`, `metrics.jsonl` (training rows and `heldout/*` rows), checkpoints,
`eval.json` and `reward_model.png` to the workdir; a restarted run resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
from absl import app, logging

from alignment.data.tasks import base as tasks_base
from alignment.models import reward_model
from alignment.training import generation, logs, loop, optim, reward_training, runs, setup
from alignment.training.checkpoint import Checkpointer
from alignment.training.step import init_train_state, make_train_step
from experiments import _flags, _plots

HEADS = ("scalar", "attributes")
SOURCES = ("demonstrations", "policy")
EVAL_FILE = "eval.json"
PLOT_FILE = "reward_model.png"


def _check_config(config) -> None:
  if "reward_model" not in config:
    raise ValueError("The config has no `reward_model` section; pass "
                     "--config=experiments/configs/reward_model.py.")
  if config.reward_model.heads not in HEADS:
    raise ValueError(f"reward_model.heads must be one of {HEADS}, got "
                     f"{config.reward_model.heads!r}.")
  if config.reward_model.labels not in reward_training.LABEL_MODES:
    raise ValueError(f"reward_model.labels must be one of {reward_training.LABEL_MODES}, got "
                     f"{config.reward_model.labels!r}.")
  if config.data.source not in SOURCES:
    raise ValueError(f"data.source must be one of {SOURCES}, got {config.data.source!r}.")
  if config.data.source == "policy" and not config.data.policy:
    raise ValueError("data.source='policy' needs data.policy (a decoder workdir or file).")
  if config.train.eval_every < 1:
    raise ValueError(f"train.eval_every must be >= 1, got {config.train.eval_every}.")
  if config.data.attribute and config.reward_model.heads != "scalar":
    raise ValueError(f"data.attribute={config.data.attribute!r} trains one scalar reward model of "
                     "that attribute; set reward_model.heads='scalar'.")


def heads_and_weights(config, task) -> tuple[list[str], list[float] | None]:
  """The attribute of each head and the head weights (None for the scalar model).

  The scalar model's head is "reward" (the total reward), or `data.attribute` when set.
  """
  attributes = list(task.weights)
  if config.data.attribute:
    if config.data.attribute not in task.weights:
      raise ValueError(f"data.attribute must be '' or one of {attributes}, got "
                       f"{config.data.attribute!r}.")
    return [config.data.attribute], None
  if config.reward_model.heads == "attributes":
    return attributes, [float(task.weights[a]) for a in attributes]
  if config.reward_model.labels == "per_attribute" and len(attributes) > 1:
    raise ValueError(f"labels='per_attribute' needs one head per attribute {attributes}; set "
                     "reward_model.heads='attributes'.")
  return ["reward"], None


def candidate_responses(config, task, model_config, prompts, *, k: int, split: str):
  """K candidate responses per prompt: demonstrations, or samples of `data.policy`."""
  cfg = config.data
  split_index = tasks_base.check_split(split)
  if cfg.source == "demonstrations":
    rng = np.random.default_rng([config.seed, split_index, 3])
    return [[task.demonstration(p, rng) for _ in range(k)] for p in prompts]
  params = setup.load_params(runs.init_model(model_config, config.seed), cfg.policy)
  responses, _ = generation.sample_responses(
      model_config, params, task.tokenizer, prompts,
      jax.random.fold_in(jax.random.key(config.seed + 1000), split_index), num_samples=k,
      max_prompt_length=task.max_prompt_length + 1,
      max_new_tokens=task.max_response_length + 1, temperature=cfg.temperature,
      batch_size=cfg.sample_batch_size,
  )
  return responses


def preference_arrays(task, prompts, responses, labels, attributes) -> dict[str, np.ndarray]:
  """The batch arrays (interfaces §2) of all lists, plus `attribute_labels [N, K, A]`.

  `attributes` names the heads; "reward" (the scalar head) gets the true reward.
  """
  k = len(responses[0])
  records = [{"prompt": p, "responses": list(rs), "scores": [float(x) for x in ls]}
             for p, rs, ls in zip(prompts, responses, labels)]
  arrays = runs.fixed_batches(records, task, batch_size=len(records), list_size=k)[0]
  flat_prompts = [p for p in prompts for _ in range(k)]
  flat_responses = [r for rs in responses for r in rs]
  values = task.attributes_batch(flat_prompts, flat_responses)
  values["reward"] = task.reward_batch(flat_prompts, flat_responses)
  arrays["attribute_labels"] = np.stack(
      [values[a].reshape(len(prompts), k) for a in attributes], axis=-1).astype(np.float32)
  return arrays


def build_split(config, task, model_config, attributes, *, split: str, num_prompts: int, k: int,
                rater: str) -> tuple[dict[str, np.ndarray], dict]:
  """Rated candidate lists of `num_prompts` prompts of `split`: `(arrays, stats)`."""
  cfg = config.data
  prompts = task.prompts(split, num_prompts, seed=config.seed)
  responses = candidate_responses(config, task, model_config, prompts, k=k, split=split)
  rng = np.random.default_rng([config.seed, tasks_base.check_split(split), 2000])
  rewards, labels = generation.rate_lists(
      task, prompts, responses, rng, rater=rater, temperature=cfg.rater_temperature,
      flip_rate=cfg.flip_rate, attribute=cfg.attribute)
  arrays = preference_arrays(task, prompts, responses, labels, attributes)
  stats = {
      "split": split,
      "num_lists": len(prompts),
      "k": k,
      "rater": rater,
      "rated": cfg.attribute or "reward",
      "mean_reward": float(rewards.mean()),
      "mean_reward_spread": float((rewards.max(-1) - rewards.min(-1)).mean()),
      "lists_all_tied": int(np.sum(np.all(labels == labels[:, :1], axis=-1))),
  }
  return arrays, stats


def init_params(config, model_config, num_heads: int):
  """Fresh reward-model parameters; the backbone from `reward_model.init` when given."""
  params = reward_model.init_reward_params(model_config, jax.random.key(config.seed),
                                           num_heads=num_heads)
  if config.reward_model.init:
    decoder = setup.load_params(runs.init_model(model_config, config.seed),
                                config.reward_model.init)
    params["backbone"] = reward_model.backbone_from_decoder(decoder)
  return params


def train_with_evaluation(config, workdir: str, *, loss_fn, params, iterator, evaluate_fn):
  """Trains `train.num_steps` steps, evaluating every `train.eval_every` steps (and at step 0).

  The loop of `runs.train_run`, cut at each evaluation point; held-out metrics are written to
  `metrics.jsonl` as `heldout/<name>` rows. Resumes from `workdir/checkpoints`.
  """
  cfg = config.train
  optimizer = optim.make_optimizer(cfg.optimizer)
  state = init_train_state(params, optimizer, jax.random.key(config.seed))
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"),
                              save_interval_steps=cfg.checkpoint_every,
                              max_to_keep=cfg.keep_checkpoints)
  state, _ = loop.restore_or_init(checkpointer, state, iterator)
  step_fn = make_train_step(loss_fn, optimizer, accum_steps=cfg.accum_steps,
                            on_nonfinite=cfg.on_nonfinite)
  writer = logs.MetricWriter(workdir)
  evaluate = lambda step, p: writer.write(
      step, {f"heldout/{k}": v for k, v in evaluate_fn(p).items()})
  try:
    if int(state.step) == 0:
      evaluate(0, state.params)
    targets = sorted(set(range(cfg.eval_every, cfg.num_steps, cfg.eval_every)) | {cfg.num_steps})
    for target in targets:
      if target <= int(state.step):
        continue
      state, _ = loop.train(
          name="reward_model", state=state, step_fn=step_fn, frozen=None, iterator=iterator,
          num_steps=target, checkpointer=checkpointer, writer=writer, log_every=cfg.log_every,
          on_nonfinite=cfg.on_nonfinite)
      evaluate(target, state.params)
  finally:
    writer.close()
    checkpointer.close()
  setup.save_params(state.params, workdir)
  return state.params


def plot(workdir: str, summary: dict) -> str:
  """Training loss and batch accuracy, and held-out accuracies over steps, to a PNG."""
  plt = _plots.pyplot()

  rows = logs.read_metrics(workdir)
  train_rows = [r for r in rows if "loss" in r]
  held_rows = [r for r in rows if "heldout/pairwise_accuracy" in r]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  steps = [r["step"] for r in train_rows]
  axes[0].plot(steps, [r["loss"] for r in train_rows], label="loss")
  axes[0].plot(steps, [r["accuracy"] for r in train_rows], label="pairwise accuracy (batch)")
  axes[0].set(title=f"training: {summary['loss']}", xlabel="step")
  axes[0].legend()
  names = sorted({k for r in held_rows for k in r if k.startswith("heldout/")})
  for name in names:
    axes[1].plot([r["step"] for r in held_rows], [r.get(name, np.nan) for r in held_rows],
                 marker="o", label=name.removeprefix("heldout/"))
  axes[1].axhline(0.5, color="grey", linestyle=":", linewidth=1)
  final = summary["heldout"]
  axes[1].set(title=f"held-out ({summary['heldout_data']['num_lists']} lists of "
                    f"{summary['heldout_data']['k']}): pairwise {final['pairwise_accuracy']:.3f}, "
                    f"list {final['list_accuracy']:.3f}",
              xlabel="step", ylim=(0.0, 1.0))
  axes[1].legend(fontsize=8)
  return _plots.save(fig, os.path.join(workdir, PLOT_FILE))


def run(config, workdir: str) -> dict:
  """Builds the data, trains and evaluates the reward model; returns the `eval.json` summary."""
  start = time.perf_counter()
  _check_config(config)
  os.makedirs(workdir, exist_ok=True)
  task, model_config = runs.task_and_model(config)
  attributes, head_weights = heads_and_weights(config, task)
  train_arrays, train_stats = build_split(
      config, task, model_config, attributes, split="train",
      num_prompts=config.data.num_prompts, k=config.data.k, rater=config.data.rater)
  held_arrays, held_stats = build_split(
      config, task, model_config, attributes, split="heldout",
      num_prompts=config.evaluate.num_prompts, k=config.evaluate.k, rater="true_reward")
  score = reward_training.score_fn(model_config)
  loss_fn = reward_training.get_loss(config.loss.name)(
      score, labels=config.reward_model.labels, head_weights=head_weights,
      temperature=config.loss.temperature)
  evaluate_fn = lambda params: reward_training.ranking_evaluation(
      reward_training.predict_rewards(score, params, held_arrays,
                                      batch_size=config.evaluate.batch_size),
      held_arrays, head_weights=head_weights)
  iterator = reward_training.array_batches(train_arrays, batch_size=config.train.batch_size,
                                           seed=config.seed)
  params = train_with_evaluation(
      config, workdir, loss_fn=loss_fn,
      params=init_params(config, model_config, len(attributes)), iterator=iterator,
      evaluate_fn=evaluate_fn)
  rows = logs.read_metrics(workdir)
  history = [{"step": r["step"], **{k.removeprefix("heldout/"): v for k, v in r.items()
                                    if k.startswith("heldout/")}}
             for r in rows if "heldout/pairwise_accuracy" in r]
  train_rows = [r for r in rows if "loss" in r]
  summary = {
      "loss": config.loss.name,
      "attribute": config.data.attribute,
      "heads": attributes,
      "head_weights": head_weights,
      "labels": config.reward_model.labels,
      "num_steps": config.train.num_steps,
      "heldout": evaluate_fn(params),
      "heldout_history": history,
      "final_train_loss": train_rows[-1]["loss"] if train_rows else None,
      "train_data": train_stats,
      "heldout_data": held_stats,
  }
  summary["plot"] = os.path.basename(plot(workdir, summary))
  summary["seconds"] = round(time.perf_counter() - start, 1)
  with open(os.path.join(workdir, EVAL_FILE), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2)
  final = summary["heldout"]
  print(f"[reward_model] held-out pairwise accuracy {final['pairwise_accuracy']:.3f}, "
        f"list accuracy {final['list_accuracy']:.3f} ({summary['seconds']} s)", flush=True)
  return summary


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  run(_flags.CONFIG.value, _flags.WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
