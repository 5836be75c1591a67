# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Training a tiny policy, step by step
#
# The main job (`python -m experiments.demo`, i.e. `alignment.recipes.demo.run(config, workdir)`)
# chains four recipes of `alignment.recipes`, each a `run(config, workdir)` on a typed config.
# This notebook calls the same recipes with the demo's config, one stage at a time:
#
# 1. **SFT** of a tiny decoder on the `sorting` task's mixed-quality demonstrations,
# 2. **preferences**: sample K = 4 responses per prompt, rank them with a simulated
#    Plackett–Luce rater,
# 3. **preference training** with LiPO-λ against the SFT reference,
# 4. **evaluation** on held-out prompts under the task's true reward.
#
# `FAST` shrinks every stage to seconds (the model learns little then); the full default
# config takes a few minutes on a CPU runtime.

# %%
# Setup: install the library only when it is not importable (a fresh runtime with this
# repository cloned: run the notebook from the repository root or from its colabs/ folder).
import importlib.util
import os
import pathlib

if importlib.util.find_spec("alignment") is None:
  from IPython import get_ipython

  roots = [p for p in (pathlib.Path.cwd(), pathlib.Path.cwd().parent)
           if (p / "pyproject.toml").exists()]
  if not roots:
    raise RuntimeError("alignment is not installed: clone the repository and open this "
                       "notebook from it, or `pip install -e <repository>` first.")
  get_ipython().run_line_magic("pip", f"install -q -e {roots[0]}")

FAST = os.environ.get("ALIGNMENT_NOTEBOOK_FAST") == "1"  # set by tests/test_notebooks.py
# %matplotlib inline

# %% [markdown]
# The config is a frozen dataclass whose defaults are the demo's; `replace_in(config, section,
# ...)` changes fields of one section, and `select(recipe.Config, config)` takes the sections a
# recipe reads.

# %%
import dataclasses
import tempfile

import jax
import matplotlib.pyplot as plt
import numpy as np

from alignment.recipes import demo, evaluation, preference_training, preferences, sft
from alignment.recipes.config import replace_in, select, task_and_model
from alignment.training import generation, logs

config = demo.Config()
if FAST:
  config = replace_in(config, "sft", num_demonstrations=256, batch_size=16, num_steps=30,
                      log_every=5, optimizer=dataclasses.replace(
                          config.sft.optimizer, total_steps=30, warmup_steps=3))
  config = replace_in(config, "preferences", num_prompts=32, batch_size=32)
  config = replace_in(config, "train", batch_size=8, num_steps=20, log_every=5,
                      checkpoint_every=20, optimizer=dataclasses.replace(
                          config.train.optimizer, total_steps=20, warmup_steps=2))
  config = replace_in(config, "evaluate", num_prompts=32, batch_size=32, heldout_preferences=16)
workdir = tempfile.mkdtemp(prefix="tiny_policy_")
print("workdir:", workdir)
print(config.loss, config.model, sep="\n")

# %% [markdown]
# ## The task
#
# Prompts ask to sort digits; the true reward is known (a weighted sum of attributes
# such as correctness), and the demonstrations are of mixed quality.

# %%
task, model_config = task_and_model(config.task, config.model)
demos = task.demonstrations(config.sft.num_demonstrations, seed=config.seed)
for prompt, response in demos[:4]:
  print(f"{prompt!r:>28} -> {response!r:<16} optimum {task.optimum(prompt)!r:<14} "
        f"reward {task.reward(prompt, response):.2f}")
demo_rewards = task.reward_batch([p for p, _ in demos], [r for _, r in demos])
plt.figure(figsize=(6, 3))
plt.hist(demo_rewards, bins=30)
plt.title("true reward of the SFT demonstrations")
plt.xlabel("reward");

# %% [markdown]
# ## Stage 1: supervised fine-tuning

# %%
sft_dir = f"{workdir}/sft"
sft_result = sft.run(select(sft.Config, config), sft_dir)
rows = logs.read_metrics(sft_dir)
plt.figure(figsize=(6, 3))
plt.plot([r["step"] for r in rows], [r["loss"] for r in rows])
plt.title("SFT: token NLL")
plt.xlabel("step");

# %% [markdown]
# ## Stage 2: preference lists from the SFT policy, ranked by a simulated rater

# %%
prefs = preferences.run(
    replace_in(select(preferences.Config, config), "preferences", policy=sft_dir),
    f"{workdir}/preferences")
record = prefs.records[0]
print("prompt:", repr(record["prompt"]))
order = np.argsort(record["scores"])[::-1]
fig, ax = plt.subplots(figsize=(7, 2.8))
ax.barh([repr(record["responses"][i]) for i in order],
        [record["rewards"][i] for i in order], color="C2")
ax.invert_yaxis()
ax.set(title="one list, best-ranked first (bars: true reward)", xlabel="true reward")
fig.tight_layout()

# %% [markdown]
# ## Stage 3: LiPO-λ training against the SFT reference

# %%
train_dir = f"{workdir}/train"
trained = preference_training.run(
    replace_in(select(preference_training.Config, config), "train", init=sft_dir,
               data=prefs.path),
    train_dir)
rows = logs.read_metrics(train_dir)
steps = [r["step"] for r in rows]
fig, axes = plt.subplots(1, 3, figsize=(15, 3.5))
axes[0].plot(steps, [r["loss"] for r in rows])
axes[0].set(title=f"{config.loss.name} loss", xlabel="step")
for ax, key in zip(axes[1:], ("rewards/accuracies", "rewards/margins")):
  ax.plot(steps, [r[key] for r in rows], color="C1")
  ax.set(title=f"implicit {key}", xlabel="step")
fig.tight_layout()

# %% [markdown]
# ## Stage 4: evaluation, and samples before and after
#
# `evaluation.run` reports the win rate of the aligned policy's samples against the SFT
# policy's under the true reward (ties count half) with a 95% interval. Below it, the
# reward distributions of fresh samples from both policies on held-out prompts.

# %%
summary = evaluation.run(
    replace_in(select(evaluation.Config, config), "evaluate", policy=train_dir,
               reference=sft_dir),
    f"{workdir}/eval")
prompts = task.prompts("heldout", 64 if FAST else 256, seed=config.seed + 1)


def sample(params, seed):
  texts, _ = generation.sample_responses(
      model_config, params, task.tokenizer, prompts, jax.random.key(seed),
      num_samples=1, max_prompt_length=task.max_prompt_length + 1,
      max_new_tokens=task.max_response_length + 1, batch_size=256)
  texts = [t[0] for t in texts]
  return texts, task.reward_batch(prompts, texts)


before, before_rewards = sample(sft_result.params, 1)
after, after_rewards = sample(trained.params, 2)
fig, axes = plt.subplots(1, 2, figsize=(14, 3.8))
bins = np.linspace(min(before_rewards.min(), after_rewards.min()),
                   max(before_rewards.max(), after_rewards.max()), 25)
axes[0].hist(before_rewards, bins, alpha=0.6, label="SFT (before)")
axes[0].hist(after_rewards, bins, alpha=0.6, label="aligned (after)")
axes[0].set(title="true reward of held-out samples", xlabel="reward")
axes[0].legend()
attrs = list(summary["attributes"]["policy"])
x = np.arange(len(attrs))
axes[1].bar(x - 0.2, [summary["attributes"]["reference"][a] for a in attrs], 0.4,
            label="SFT (before)")
axes[1].bar(x + 0.2, [summary["attributes"]["policy"][a] for a in attrs], 0.4,
            label="aligned (after)")
axes[1].set_xticks(x, attrs)
lo, hi = summary["win_rate_ci95"]
axes[1].set_title(f"win rate {summary['win_rate']:.2f} (95% CI {lo:.2f}–{hi:.2f})")
axes[1].legend()
fig.tight_layout()

print(f"{'prompt':>26} | {'optimum':<12} | {'SFT (before)':<14} | aligned (after)")
for p, b, a in list(zip(prompts, before, after))[:8]:
  print(f"{p!r:>26} | {task.optimum(p)!r:<12} | {b!r:<14} | {a!r}")
