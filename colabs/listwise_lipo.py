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
# # Listwise preference optimisation: LiPO-λ
#
# *LiPO: Listwise Preference Optimization through Learning-to-Rank* (Liu, Qin et al., 2024)
# treats alignment on a ranked list of K responses as learning-to-rank with the implicit
# reward `s_i = β·(lp_i − lr_i)` as the score. LiPO-λ weighs every pair `ψ_i > ψ_j` by how
# much swapping the two would change the list's DCG under the **current** ranking:
# `Δ_ij = |2^ψ_i − 2^ψ_j| · |1/ln(1 + τ_i) − 1/ln(1 + τ_j)|`.
#
# This notebook draws the lambda weights of one list as heat maps, then trains free scores on
# a batch of lists with LiPO-λ and with DPO on the same lists.

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

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

from alignment import losses, metrics
from alignment.losses import lambdaweights

# %% [markdown]
# ## 1. One ranked list
#
# Six responses with graded labels ψ (5 = best) and the policy's current implicit
# rewards s, which rank them differently.

# %%
labels = jnp.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
scores = jnp.array([0.3, 1.2, -0.4, 0.9, 0.0, -1.0])  # current s = β·(lp − lr)
K = labels.shape[-1]
current_rank = 1 + jnp.argsort(jnp.argsort(-scores, stable=True))  # τ, 1 = top

fig, ax = plt.subplots(figsize=(8, 3.2))
x = np.arange(K)
ax.bar(x - 0.2, labels / labels.max(), 0.4, label="label ψ (scaled to [0, 1])")
ax.bar(x + 0.2, scores, 0.4, label="current score s")
for i in range(K):
  ax.annotate(f"τ={int(current_rank[i])}", (i + 0.2, max(float(scores[i]), 0) + 0.05),
              ha="center", fontsize=9)
ax.set_xticks(x, [f"response {i}" for i in range(K)])
ax.axhline(0, color="k", lw=0.6)
ax.legend()
ax.set_title("labels and current scores (τ: rank by score)")
fig.tight_layout()

# %% [markdown]
# ## 2. Lambda weights as heat maps
#
# Row i, column j is the weight of the pair (i better than j); the lower triangle is
# zero because only `ψ_i > ψ_j` forms a pair. LiPO-λ's weights depend on the current
# ranking: pairs that involve the top of the current ranking weigh most. Rax's DCG
# lambda weights are the same pattern scaled by `K·ln 2` (checked below); the
# label-difference weights ignore the ranking.

# %%
perfect = labels / 10.0  # scores that already rank the list correctly
panels = {
    "LiPO-λ Δ, current scores": lambdaweights.lipo_lambdaweight(scores, labels),
    "LiPO-λ Δ, perfectly ranked scores": lambdaweights.lipo_lambdaweight(perfect, labels),
    "label difference |ψ_i − ψ_j|": lambdaweights.labeldiff_lambdaweight(scores, labels),
    "LambdaLoss NDCG-Loss2 (dcg2)": lambdaweights.dcg2_lambdaweight(scores, labels),
}
np.testing.assert_allclose(
    lambdaweights.lipo_lambdaweight(scores, labels, rax_scaled=True),
    K * np.log(2.0) * panels["LiPO-λ Δ, current scores"], rtol=1e-5)

fig, axes = plt.subplots(1, 4, figsize=(19, 4.4))
for ax, (title, w) in zip(axes, panels.items()):
  w = np.asarray(w)
  im = ax.imshow(w, cmap="viridis")
  for i in range(K):
    for j in range(K):
      if w[i, j] > 0:
        ax.text(j, i, f"{w[i, j]:.2g}", ha="center", va="center", fontsize=7,
                color="w" if w[i, j] < 0.6 * w.max() else "k")
  ax.set(title=title, xlabel="j (worse)", ylabel="i (better)")
  fig.colorbar(im, ax=ax, fraction=0.046)
fig.tight_layout()

# %% [markdown]
# ## 3. LiPO-λ against DPO on the same lists
#
# A batch of lists of K = 8 responses with graded labels (a random permutation of
# 0..7). The policy's log-probs are free parameters (reference log-probs 0), trained
# by gradient descent under three objectives, each with the step size that makes its
# first step of length 1 (`η = 1/‖∇L(θ₀)‖`: the objectives' scales differ, their
# directions are what we compare):
#
# - **LiPO-λ** on the whole list,
# - **DPO on all pairs** of the list (LiPO's DPO_BT, `lipo_pair_logistic`),
# - **DPO on the best-vs-worst pair** (what a pairwise dataset built from the list keeps).
#
# We track NDCG and Kendall τ between the scores and the labels.

# %%
NUM_LISTS, K8, BETA = 64, 8, 0.1
STEPS = 60 if FAST else 200
rng = np.random.default_rng(0)
list_labels = jnp.asarray(np.stack([rng.permutation(K8) for _ in range(NUM_LISTS)]),
                          jnp.float32)
init_logps = jnp.asarray(rng.normal(0.0, 1.0, (NUM_LISTS, K8)), jnp.float32)
ref = jnp.zeros_like(init_logps)
best = jnp.argmax(list_labels, -1)
worst = jnp.argmin(list_labels, -1)


def dpo_best_vs_worst(logps):
  take = lambda x, i: jnp.take_along_axis(x, i[:, None], -1)[:, 0]
  pair, pair_labels = losses.pairwise.pair_to_list(take(logps, best), take(logps, worst))
  return losses.get("dpo")(pair, jnp.zeros_like(pair), pair_labels, beta=BETA)


OBJECTIVES = {
    "LiPO-λ (whole list)":
        lambda lp: losses.get("lipo_lambda")(lp, ref, list_labels, beta=BETA),
    "DPO, all pairs":
        lambda lp: losses.get("lipo_pair_logistic")(lp, ref, list_labels, beta=BETA),
    "DPO, best vs worst": dpo_best_vs_worst,
}


def train(loss_fn):
  opt = optax.sgd(1.0 / optax.global_norm(jax.grad(loss_fn)(init_logps)))

  def step(carry, _):
    lp, state = carry
    updates, state = opt.update(jax.grad(loss_fn)(lp), state)
    lp = optax.apply_updates(lp, updates)
    s = BETA * (lp - ref)
    return (lp, state), (metrics.mean(metrics.ndcg(s, list_labels)),
                         metrics.mean(metrics.kendall_tau(s, list_labels)["tau"]))

  (lp, _), curves = jax.jit(lambda lp: jax.lax.scan(
      step, (lp, opt.init(lp)), None, length=STEPS))(init_logps)
  return lp, curves


runs = {name: train(fn) for name, fn in OBJECTIVES.items()}
for name, (_, (ndcg, tau)) in runs.items():
  print(f"{name:>22}: NDCG {float(ndcg[-1]):.3f}, Kendall τ {float(tau[-1]):.3f}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(17, 4.2))
for name, (lp, (ndcg, tau)) in runs.items():
  axes[0].plot(ndcg, label=name)
  axes[1].plot(tau, label=name)
  s = np.asarray(BETA * (lp - ref))
  by_grade = [s[np.asarray(list_labels) == g].mean() for g in range(K8)]
  axes[2].plot(range(K8), by_grade, "o-", label=name)
axes[0].set(title="NDCG of the implicit rewards", xlabel="step")
axes[1].set(title="Kendall τ with the labels", xlabel="step")
axes[2].set(title="final mean implicit reward by label", xlabel="label ψ (7 = best)",
            ylabel="s = β·ρ")
for ax in axes:
  ax.legend()
fig.tight_layout()

# %% [markdown]
# What to look for: DPO on the best-vs-worst pair only separates the two extremes; the
# middle of each list stays where it started, so its Kendall τ plateaus. DPO on all
# pairs treats every pair alike and orders the whole list. LiPO-λ spends its gradient
# on the pairs that change the top of the ranking: its NDCG rises first, while the
# order at the bottom (Kendall τ) comes later.
