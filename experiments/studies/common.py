"""Shared machinery of the studies: cached pipeline stages, aggregation over seeds, writers.

A study is a grid of training runs on a synthetic task (true reward known, rater simulated).
Each seed has one SFT policy (`alignment.recipes.sft`: the starting point, the reference model
and the opponent of the win rate) and preference lists sampled from it once
(`alignment.recipes.preferences`); every cell of the grid trains from that policy with
`alignment.recipes.preference_training` for the same number of gradient steps and is scored by
`alignment.recipes.evaluation` on held-out prompts. Every stage is cached
in the study workdir: a study that stops resumes where it stopped, and a finished cell is read
back, not recomputed.

Layout of `workdir`:
    seed_{s}/sft/                        the SFT policy of seed s
    seed_{s}/data_{name}/preferences.jsonl
    seed_{s}/{run}/train/                a trained policy
    seed_{s}/{run}/row.json              its evaluation summary (the row of the study's table)
    {study}.json, {study}.png            the table and the plot
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable, Mapping, Sequence

from absl import flags
import numpy as np

from alignment.data import formats
from alignment.recipes import config as config_lib
from alignment.recipes import evaluation, plots, preference_training, preferences, sft
from alignment.training import setup
from experiments import _flags

QUICK = flags.DEFINE_bool(
    "quick", False, "Smoke-test mode: tiny stages and one seed (minutes, not an hour).")

# Metrics of a row (from `alignment.recipes.evaluation`), aggregated over seeds.
METRICS = ("win_rate", "mean_reward", "reward_gain", "kl", "ranking_accuracy")


def quick_config(config):
  """A copy of `config` shrunk to a smoke test: every stage runs, each for a few steps."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.sft.update(num_demonstrations=128, batch_size=16, num_steps=20, log_every=10)
    config.sft.optimizer.update(total_steps=20, warmup_steps=2)
    config.preferences.update(num_prompts=32, batch_size=32)
    config.train.update(batch_size=8, num_steps=4, log_every=2)
    config.train.optimizer.update(total_steps=4, warmup_steps=0, schedule="constant")
    config.evaluate.update(num_prompts=16, heldout_preferences=4, batch_size=16)
  return config


def with_overrides(config, *, seed: int | None = None, **sections: Mapping):
  """A copy of `config` with `seed` and updated sections, e.g. `preferences=dict(k=2)`.

  A `loss` mapping replaces the whole loss section (objectives take different
  hyper-parameters, e.g. PRO has no β); other sections are updated field by field.
  """
  config = config.copy_and_resolve_references()
  with config.unlocked():
    if seed is not None:
      config.seed = seed
    for section, values in sections.items():
      if section == "loss":
        config.loss = type(config.loss)(dict(values))
      else:
        config[section].update(dict(values))
  return config


def recipe_config(config_cls, config, **sections: Mapping):
  """The recipe config `config_cls` of the ConfigDict `config`, with fields of `sections`
  replaced, e.g. `train=dict(init=policy)`."""
  typed = _flags.typed(config_cls, config)
  for section, values in sections.items():
    typed = config_lib.replace_in(typed, section, **values)
  return typed


def task_and_model(config):
  """The task and the `ModelConfig` of the ConfigDict `config` (its `task` and `model`)."""
  return config_lib.task_and_model(config_lib.from_dict(config_lib.Task, config.task.to_dict()),
                                   config_lib.from_dict(config_lib.Model, config.model.to_dict()))


def seed_dir(workdir: str, seed: int) -> str:
  return os.path.join(workdir, f"seed_{seed}")


def sft_policy(config, workdir: str) -> str:
  """The SFT policy of `config.seed`, trained once into `seed_{s}/sft`; returns that dir."""
  out = os.path.join(seed_dir(workdir, config.seed), "sft")
  if not os.path.exists(os.path.join(out, setup.PARAMS_FILE)):
    sft.run(recipe_config(sft.Config, config), out)
  return out


def preference_lists(config, workdir: str, name: str, *, policy: str) -> list[dict]:
  """Lists of `config.preferences.k` responses sampled from `policy` and rated, cached by `name`.

  The rater (`preferences.rater`, `rater_temperature`, `flip_rate`) is the config's. Returns the
  listwise records `{prompt, responses, scores (rater labels), rewards (true rewards)}`.
  """
  out = os.path.join(seed_dir(workdir, config.seed), f"data_{name}")
  path = os.path.join(out, preferences.DATA_FILE)
  if not os.path.exists(path):
    preferences.run(recipe_config(preferences.Config, config, preferences=dict(policy=policy)), out)
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _rank_labels(labels: Sequence[float]) -> list[float]:
  """Graded labels `#{j: ψ_j < ψ_i}`: the same order, renumbered 0..K−1 (ties share a label)."""
  y = np.asarray(labels, np.float64)
  return [float(v) for v in np.sum(y[None, :] < y[:, None], axis=-1)]


def sub_lists(records: Sequence[dict], k: int) -> list[dict]:
  """The first `k` responses of each list, with the rater's labels renumbered to 0..k−1.

  Under a Plackett–Luce (or Bradley–Terry) rater the order restricted to a sub-list is itself a
  Plackett–Luce draw over that sub-list, so the lists of every K come from one sampling and the
  K = 2 pairs are nested in the K = 4 lists, which are nested in the K = 8 lists.
  """
  out = []
  for r in records:
    if len(r["responses"]) < k:
      raise ValueError(f"sub_lists: a list has {len(r['responses'])} < k = {k} responses.")
    out.append({**r, "responses": r["responses"][:k], "scores": _rank_labels(r["scores"][:k]),
                "rewards": r["rewards"][:k]})
  return out


def sorted_best_first(records: Sequence[dict]) -> list[dict]:
  """Each list reordered best to worst by its labels (stable), as PRO's loss requires."""
  out = []
  for r in records:
    order = np.argsort(-np.asarray(r["scores"], np.float64), kind="stable")
    out.append({**r, **{key: [r[key][i] for i in order] for key in ("responses", "scores",
                                                                   "rewards")}})
  return out


def trainable_lists(path: str) -> list[dict]:
  """The lists of `path` as preference training reads them: the default bad-input policy drops
  duplicate and empty responses and the lists left with fewer than 2, so pairs built from these
  are exactly the pairs a run on `path` sees."""
  return list(formats.read_records(path, layout="listwise"))


def write_records(records: Sequence[dict], path: str) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    for record in records:
      f.write(json.dumps(record) + "\n")
  return path


def train_and_evaluate(config, workdir: str, run: str, *, data: str, policy: str,
                       info: Mapping) -> dict:
  """Trains from the SFT `policy` on `data` with `config.loss`, evaluates against `policy`.

  Cached in `seed_{s}/{run}/row.json`; returns the row: `info`, the seed, the metrics of
  `METRICS` and the seconds each stage took.
  """
  out = os.path.join(seed_dir(workdir, config.seed), run)
  row_path = os.path.join(out, "row.json")
  if os.path.exists(row_path):
    with open(row_path, encoding="utf-8") as f:
      return json.load(f)
  start = time.perf_counter()
  preference_training.run(
      recipe_config(preference_training.Config, config, train=dict(init=policy, data=data)),
      os.path.join(out, "train"))
  trained = time.perf_counter()
  # Held-out ranking accuracy on lists of the study's own K.
  summary = evaluation.run(
      recipe_config(evaluation.Config, config, evaluate=dict(
          policy=os.path.join(out, "train"), reference=policy,
          heldout_list_size=int(config.preferences.k))),
      os.path.join(out, "eval"))
  reward = summary["mean_reward"]
  row = {
      **info,
      "seed": config.seed,
      "win_rate": summary["win_rate"],
      "mean_reward": reward["policy"],
      "reward_gain": reward["policy"] - reward["reference"],
      "kl": summary["kl_policy_reference"],
      "ranking_accuracy": summary["ranking_accuracy_heldout"],
      "seconds": {"train": round(trained - start, 1),
                  "evaluate": round(time.perf_counter() - trained, 1)},
  }
  with open(row_path, "w", encoding="utf-8") as f:
    json.dump(row, f, indent=2)
  return row


def aggregate(rows: Sequence[dict], keys: Sequence[str],
              metrics: Sequence[str] = METRICS) -> list[dict]:
  """Mean and standard deviation (over seeds, ddof = 1; 0 for one seed) of each group of `keys`.

  Returns one dict per group, in first-seen order: the keys, `n` (number of rows) and
  `{metric}_mean`, `{metric}_std` for each metric.
  """
  groups: dict[tuple, list[dict]] = {}
  for row in rows:
    groups.setdefault(tuple(row[k] for k in keys), []).append(row)
  table = []
  for values, members in groups.items():
    entry = dict(zip(keys, values), n=len(members))
    for m in metrics:
      x = np.array([r[m] for r in members], np.float64)
      entry[f"{m}_mean"] = float(x.mean())
      entry[f"{m}_std"] = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    table.append(entry)
  return table


def paired_margins(rows: Sequence[dict], key: str, a: str, b: str,
                   metrics: Sequence[str] = ("win_rate", "mean_reward", "kl")) -> dict:
  """Per metric: mean and sample std (ddof = 1; 0 for one seed) over seeds of `a − b`, where
  rows with `row[key] == a` and `== b` of the same seed are paired (same SFT policy and data)."""
  by_seed = {(r[key], r["seed"]): r for r in rows}
  seeds = sorted(s for (name, s) in by_seed if name == a and (b, s) in by_seed)
  if not seeds:
    raise ValueError(f"paired_margins: no seed has both {key}={a!r} and {key}={b!r}.")
  out = {"n": len(seeds)}
  for m in metrics:
    d = np.array([by_seed[(a, s)][m] - by_seed[(b, s)][m] for s in seeds], np.float64)
    out[f"{m}_mean"] = float(d.mean())
    out[f"{m}_std"] = float(d.std(ddof=1)) if len(d) > 1 else 0.0
  return out


def lookup(table: Sequence[dict], **keys) -> dict:
  """The row of an aggregated `table` whose fields equal `keys`."""
  hits = [r for r in table if all(r[k] == v for k, v in keys.items())]
  if len(hits) != 1:
    raise KeyError(f"lookup: {len(hits)} rows match {keys}.")
  return hits[0]


def markdown_table(table: Sequence[dict], keys: Sequence[str],
                   metrics: Sequence[str] = METRICS) -> str:
  """`table` as a Markdown table: the keys, then `mean ± std (n)` of each metric."""
  lines = ["| " + " | ".join([*keys, *metrics]) + " |",
           "|" + "---|" * (len(keys) + len(metrics))]
  for row in table:
    cells = [str(row[k]) for k in keys] + [
        f"{row[f'{m}_mean']:.3f} ± {row[f'{m}_std']:.3f} ({row['n']})" for m in metrics]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def write_json(obj, path: str) -> str:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=2, default=str)
  return path


def _figure(num_panels: int):
  fig, axes = plots.pyplot().subplots(1, num_panels, figsize=(5.2 * num_panels, 4.0),
                                       squeeze=False)
  return fig, axes[0]


def _save(fig, title: str, path: str) -> str:
  fig.suptitle(title)
  return plots.save(fig, path, dpi=100)


def plot_series(table: Sequence[dict], *, x: str, series: str, metrics: Sequence[str],
                title: str, path: str) -> str:
  """One panel per metric: its mean ± std over seeds against `x`, one line per `series` value."""
  fig, axes = _figure(len(metrics))
  names = list(dict.fromkeys(r[series] for r in table))
  for ax, metric in zip(axes, metrics):
    for name in names:
      rows = sorted((r for r in table if r[series] == name), key=lambda r: r[x])
      ax.errorbar([r[x] for r in rows], [r[f"{metric}_mean"] for r in rows],
                  yerr=[r[f"{metric}_std"] for r in rows], marker="o", capsize=3, label=name)
    ax.set(xlabel=x, ylabel=metric, title=metric)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  return _save(fig, title, path)


def plot_bars(table: Sequence[dict], *, x: str, metrics: Sequence[str], title: str,
              path: str) -> str:
  """One panel per metric: a bar per row of `table` (a categorical `x`), mean ± std over seeds."""
  fig, axes = _figure(len(metrics))
  labels = [str(r[x]) for r in table]
  for ax, metric in zip(axes, metrics):
    ax.bar(labels, [r[f"{metric}_mean"] for r in table],
           yerr=[r[f"{metric}_std"] for r in table], capsize=4, color="tab:blue", alpha=0.8)
    ax.set(xlabel=x, ylabel=metric, title=metric)
    ax.tick_params(axis="x", labelrotation=20)
    ax.grid(alpha=0.3, axis="y")
  return _save(fig, title, path)


def finish(workdir: str, summary: dict, *, keys: Sequence[str], plot: Callable[[str], str],
           metrics: Sequence[str] = METRICS) -> dict:
  """Ends a study: writes `{study}.json` (the summary) and `{study}.png` (`plot(path)`) to the
  workdir, prints the Markdown table of `summary["table"]`, and returns the summary."""
  name = summary["study"]
  write_json(summary, os.path.join(workdir, f"{name}.json"))
  plot(os.path.join(workdir, f"{name}.png"))
  print(markdown_table(summary["table"], keys, metrics), flush=True)
  return summary


def main(run_fn: Callable) -> None:
  """Runs `run_fn(config, workdir, quick=...)` as a binary: `--config`, `--workdir`, `--quick`."""
  _flags.run_main(lambda config, workdir: run_fn(config, workdir, quick=QUICK.value))
