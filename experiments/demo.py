"""The main job: SFT -> sample K responses -> rate -> listwise preference training -> evaluate.

    python -m experiments.demo --workdir=workdir/demo

On the built-in synthetic task (true reward known, raters simulated): fine-tunes the tiny
decoder on mixed-quality demonstrations, samples `preferences.k` responses per training prompt,
ranks them with a Plackett–Luce rater, trains with `loss.name` (LiPO-λ by default) against the
SFT reference, and evaluates the aligned policy against the SFT policy on held-out prompts.
Writes `report.json` (win rate with its 95% interval, per-attribute rewards, KL, timings) and
`report.png` (training curves and the win-rate summary) to the workdir; stages resume.
"""

from __future__ import annotations

import json
import os
import time


from alignment.training import logs
from experiments import _flags, _plots, evaluate, make_preferences, sft, train


def plot_report(report: dict, workdir: str) -> str:
  """Draws the SFT loss, the preference-training curves and the evaluation summary to PNG."""
  plt = _plots.pyplot()

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
  names = ["mean reward"] + [f"{k}" for k in ev["attributes"]["policy"]]
  pol = [ev["mean_reward"]["policy"]] + list(ev["attributes"]["policy"].values())
  ref = [ev["mean_reward"]["reference"]] + list(ev["attributes"]["reference"].values())
  xs = range(len(names))
  axes[3].bar([x - 0.2 for x in xs], ref, width=0.4, label="SFT (reference)")
  axes[3].bar([x + 0.2 for x in xs], pol, width=0.4, label="aligned policy")
  axes[3].set_xticks(list(xs), names)
  lo, hi = ev["win_rate_ci95"]
  axes[3].set(title=f"held-out: win rate {ev['win_rate']:.3f} [{lo:.3f}, {hi:.3f}]")
  axes[3].legend()
  return _plots.save(fig, os.path.join(workdir, "report.png"))


def run(config, workdir: str) -> dict:
  """Runs the whole pipeline in `workdir/{sft,preferences,train,eval}`; returns the report."""
  os.makedirs(workdir, exist_ok=True)
  timings, start = {}, time.perf_counter()
  dirs = {name: os.path.join(workdir, name) for name in ("sft", "preferences", "train", "eval")}

  def stage(name, fn):
    t = time.perf_counter()
    out = fn()
    timings[name] = round(time.perf_counter() - t, 1)
    return out

  stage("sft", lambda: sft.run(config, dirs["sft"]))
  stage("preferences", lambda: make_preferences.run(config, dirs["preferences"], policy=dirs["sft"]))
  stage("train", lambda: train.run(
      config, dirs["train"], init=dirs["sft"],
      data=os.path.join(dirs["preferences"], make_preferences.DATA_FILE)))
  summary = stage("evaluate", lambda: evaluate.run(
      config, dirs["eval"], policy=dirs["train"], reference=dirs["sft"]))
  timings["total"] = round(time.perf_counter() - start, 1)
  with open(os.path.join(dirs["preferences"], "preferences_stats.json"), encoding="utf-8") as f:
    preference_stats = json.load(f)
  report = {
      "task": config.task.name,
      "loss": config.loss.name,
      "beta": config.loss.get("beta", None),
      "k": config.preferences.k,
      "win_rate": summary["win_rate"],
      "win_rate_ci95": summary["win_rate_ci95"],
      "attributes": summary["attributes"],
      "kl_policy_reference": summary["kl_policy_reference"],
      "evaluation": summary,
      "preferences": preference_stats,
      "seconds": timings,
      "config": config.to_dict(),
  }
  with open(os.path.join(workdir, "report.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2, default=str)
  plot_report(report, workdir)
  print(f"[demo] report written to {os.path.join(workdir, 'report.json')} and report.png "
        f"({timings['total']} s)", flush=True)
  return report


if __name__ == "__main__":
  _flags.run_main(run)
