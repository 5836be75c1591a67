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
# # Transforming and combining rewards
#
# *Transforming and Combining Rewards for Aligning Large Language Models* (Wang, Nagpal,
# Berant, Eisenstein, D'Amour, Koyejo, Veitch; ICML 2024). Under Bradley–Terry, the
# probability that a response beats a per-prompt reference is `σ(r − r_ref(x))`; the
# **LSC transform** uses its log, `u = logσ(r − r_ref(x))`, as the RL reward. Summing the
# transformed rewards of several properties is the log-probability of being good on all of
# them (a logical AND), unlike the raw sum, which lets one property buy off another.
#
# This notebook draws the transform, the two estimators of `r_ref`, and what the combination
# of two rewards prefers (`alignment.rewards`: `lsc`, `r_ref_quantile`, `r_ref_normal`,
# `combine_rewards`).

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

from alignment import rewards

# %% [markdown]
# ## 1. The LSC transform
#
# Linear (`≈ r − r_ref`) far below the reference, saturating towards 0 above it: the
# marginal value of more reward, `∂u/∂r = σ(r_ref − r)`, is largest where the response
# is bad and vanishes where it is already good, so over-optimising a reward model
# far past the reference pays little.

# %%
r = jnp.linspace(-6.0, 6.0, 241)
fig, axes = plt.subplots(1, 2, figsize=(13, 4))
for r_ref in (-2.0, 0.0, 2.0):
  u = rewards.lsc(r, jnp.asarray(r_ref))
  slope = jax.vmap(jax.grad(lambda x: rewards.lsc(x, jnp.asarray(r_ref))))(r)
  np.testing.assert_allclose(slope, jax.nn.sigmoid(r_ref - r), rtol=1e-5, atol=1e-7)
  axes[0].plot(r, u, label=f"r_ref = {r_ref:g}")
  axes[1].plot(r, slope, label=f"r_ref = {r_ref:g}")
axes[0].plot(r, r, "k:", lw=0.8, label="raw reward r")
axes[0].set(ylim=(-8, 1), xlabel="reward r", ylabel="u = logσ(r − r_ref)",
            title="LSC transform")
axes[1].set(xlabel="reward r", ylabel="∂u/∂r = σ(r_ref − r)",
            title="marginal value of more reward")
for ax in axes:
  ax.legend()
fig.tight_layout()

# %% [markdown]
# ## 2. Estimating `r_ref(x)`
#
# `r_ref(x)` comes from n samples of the base (SFT) policy on prompt x, scored by the
# same reward model: the empirical 0.85-quantile (`r_ref_quantile`, the paper's
# description) or a normal fit `mean + Φ⁻¹(0.85)·std` (`r_ref_normal`, the
# third-party implementation). With few samples both are noisy; the normal fit is
# steadier when the rewards are roughly Gaussian.

# %%
rng = np.random.default_rng(0)
TRIALS = 200 if FAST else 2000
true_ref = float(jax.scipy.stats.norm.ppf(0.85))  # the 0.85-quantile of N(0, 1) rewards
ns = (4, 8, 16, 32, 64)
spread = {"r_ref_quantile": [], "r_ref_normal": []}
for n in ns:
  samples = jnp.asarray(rng.normal(0.0, 1.0, (TRIALS, n)), jnp.float32)
  for name in spread:
    est = np.asarray(getattr(rewards, name)(samples))  # [TRIALS]: one r_ref per prompt
    spread[name].append(np.quantile(est - true_ref, [0.1, 0.5, 0.9]))

one = jnp.asarray(rng.normal(0.0, 1.0, 16), jnp.float32)
fig, axes = plt.subplots(1, 2, figsize=(13, 4))
axes[0].hist(np.asarray(one), bins=10, color="0.7", label="16 base-policy rewards")
for name, colour in (("r_ref_quantile", "C0"), ("r_ref_normal", "C1")):
  axes[0].axvline(float(getattr(rewards, name)(one)), color=colour, lw=2, label=name)
axes[0].axvline(true_ref, color="k", ls=":", label="true 0.85-quantile")
axes[0].set(title="one prompt", xlabel="reward")
axes[0].legend()
for (name, s), colour, dx in zip(spread.items(), ("C0", "C1"), (-0.04, 0.04)):
  s = np.asarray(s)
  x = np.log2(ns) + dx
  axes[1].errorbar(x, s[:, 1], yerr=[s[:, 1] - s[:, 0], s[:, 2] - s[:, 1]],
                   fmt="o-", color=colour, capsize=3, label=name)
axes[1].axhline(0, color="k", lw=0.6)
axes[1].set_xticks(np.log2(ns), [str(n) for n in ns])
axes[1].set(xlabel="samples per prompt n", ylabel="estimate − truth",
            title=f"median and 10–90% range over {TRIALS} prompts")
axes[1].legend()
fig.tight_layout()

# %% [markdown]
# ## 3. Combining two rewards
#
# Two properties, say helpfulness r₁ and harmlessness r₂, each with its reference at
# 0. The raw sum's level sets are straight lines: one unit of harmlessness trades for
# one of helpfulness anywhere. The LSC sum's level sets bend: far above the reference
# a property is worth almost nothing more, so the best responses are good on **both**.

# %%
g = np.linspace(-5, 5, 201)
grid = jnp.asarray(np.stack(np.meshgrid(g, g), -1), jnp.float32)  # [..., M = 2]
zero = jnp.zeros(2)
combined = {
    "raw_sum: r₁ + r₂": rewards.combine_rewards(grid, mode="raw_sum"),
    "lsc_sum: logσ(r₁) + logσ(r₂)": rewards.combine_rewards(grid, zero, mode="lsc_sum"),
}
np.testing.assert_allclose(combined["lsc_sum: logσ(r₁) + logσ(r₂)"],
                           rewards.lsc(grid, zero).sum(-1), rtol=1e-5)

# 400 candidate responses to one prompt; each mode picks its best.
cand = rng.multivariate_normal([0, 0], [[4, -3.2], [-3.2, 4]], 400).astype(np.float32)
fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
for ax, (title, values) in zip(axes, combined.items()):
  cs = ax.contourf(g, g, np.asarray(values), levels=20, cmap="viridis")
  fig.colorbar(cs, ax=ax)
  ax.scatter(cand[:, 0], cand[:, 1], s=6, c="w", alpha=0.6)
  mode = title.split(":")[0]
  score = rewards.combine_rewards(jnp.asarray(cand), zero, mode=mode)
  best = cand[int(jnp.argmax(score))]
  ax.plot(*best, "r*", ms=18, label=f"best under {mode}: ({best[0]:.1f}, {best[1]:.1f})")
  ax.set(title=title, xlabel="r₁ (helpfulness)", ylabel="r₂ (harmlessness)")
  ax.legend(loc="lower left")
fig.tight_layout()
