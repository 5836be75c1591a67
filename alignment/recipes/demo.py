"""The main job: SFT -> sample K responses -> rate -> listwise preference training -> evaluate.

On the built-in synthetic task (true reward known, raters simulated): fine-tunes the tiny
decoder on mixed-quality demonstrations, samples `preferences.k` responses per training prompt,
ranks them with a Plackett–Luce rater, trains with `loss.name` (LiPO-λ by default) against the
SFT reference, and evaluates the aligned policy against the SFT policy on held-out prompts.
Writes `report.json` (win rate with its 95% interval, per-attribute rewards, KL, timings) and
`report.png` (training curves and the win-rate summary) to the workdir; stages resume.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

from alignment.recipes import config as config_lib
from alignment.recipes import evaluation, plots, preference_training, preferences, sft
from alignment.training import logs

REPORT_FILE = "report.json"
PLOT_FILE = "report.png"


@dataclasses.dataclass(frozen=True)
class Config(config_lib.Run):
  """The sections of the four stages; the defaults are the demo's."""

  sft: sft.SFT = sft.SFT()
  preferences: preferences.Preferences = preferences.Preferences()
  loss: config_lib.Loss = preference_training.Config.loss
  train: preference_training.Train = preference_training.Train()
  evaluate: evaluation.Evaluate = evaluation.Evaluate()


def plot_report(report: dict, workdir: str) -> str:
  """Draws the SFT loss, the preference-training curves and the evaluation summary to PNG."""
  plt = plots.pyplot()
  sft_rows = logs.read_metrics(os.path.join(workdir, "sft"))
  train_rows = logs.read_metrics(os.path.join(workdir, "train"))
  fig, axes = plt.subplots(1, 4, figsize=(19, 4.2))
  axes[0].plot([r["step"] for r in sft_rows], [r["loss"] for r in sft_rows])
  axes[0].set(title="SFT: token NLL", xlabel="step")
  axes[1].plot([r["step"] for r in train_rows], [r["loss"] for r in train_rows])
  axes[1].set(title=f"{report['loss']}: loss", xlabel="step")
  for key in ("rewards/accuracies", "rewards/margins"):
    if train_rows and key in train_rows[0]:
      axes[2].plot([r["step"] for r in train_rows], [r[key] for r in train_rows], label=key)
  axes[2].set(title="implicit rewards (training batches)", xlabel="step")
  axes[2].legend()
  ev = report["evaluation"]
  names = ["mean reward"] + list(ev["attributes"]["policy"])
  pol = [ev["mean_reward"]["policy"]] + list(ev["attributes"]["policy"].values())
  ref = [ev["mean_reward"]["reference"]] + list(ev["attributes"]["reference"].values())
  xs = range(len(names))
  axes[3].bar([x - 0.2 for x in xs], ref, width=0.4, label="SFT (reference)")
  axes[3].bar([x + 0.2 for x in xs], pol, width=0.4, label="aligned policy")
  axes[3].set_xticks(list(xs), names)
  lo, hi = ev["win_rate_ci95"]
  axes[3].set(title=f"held-out: win rate {ev['win_rate']:.3f} [{lo:.3f}, {hi:.3f}]")
  axes[3].legend()
  return plots.save(fig, os.path.join(workdir, PLOT_FILE))


def run(config: Config, workdir: str) -> dict:
  """Runs the whole pipeline in `workdir/{sft,preferences,train,eval}`; returns the report."""
  os.makedirs(workdir, exist_ok=True)
  timings, start = {}, time.perf_counter()
  dirs = {name: os.path.join(workdir, name) for name in ("sft", "preferences", "train", "eval")}
  select, replace_in = config_lib.select, config_lib.replace_in

  def stage(name, fn):
    t = time.perf_counter()
    out = fn()
    timings[name] = round(time.perf_counter() - t, 1)
    return out

  stage("sft", lambda: sft.run(select(sft.Config, config), dirs["sft"]))
  prefs = stage("preferences", lambda: preferences.run(
      replace_in(select(preferences.Config, config), "preferences", policy=dirs["sft"]),
      dirs["preferences"]))
  stage("train", lambda: preference_training.run(
      replace_in(select(preference_training.Config, config), "train", init=dirs["sft"],
                 data=prefs.path), dirs["train"]))
  summary = stage("evaluate", lambda: evaluation.run(
      replace_in(select(evaluation.Config, config), "evaluate", policy=dirs["train"],
                 reference=dirs["sft"]), dirs["eval"]))
  timings["total"] = round(time.perf_counter() - start, 1)
  report = {
      "task": config.task.name,
      "loss": config.loss.name,
      "beta": config.loss.hyper_parameters.get("beta", None),
      "k": config.preferences.k,
      "win_rate": summary["win_rate"],
      "win_rate_ci95": summary["win_rate_ci95"],
      "attributes": summary["attributes"],
      "kl_policy_reference": summary["kl_policy_reference"],
      "evaluation": summary,
      "preferences": prefs.stats,
      "seconds": timings,
      "config": config_lib.to_dict(config),
  }
  with open(os.path.join(workdir, REPORT_FILE), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2, default=str)
  plot_report(report, workdir)
  print(f"[demo] report written to {os.path.join(workdir, REPORT_FILE)} and {PLOT_FILE} "
        f"({timings['total']} s)", flush=True)
  return report
