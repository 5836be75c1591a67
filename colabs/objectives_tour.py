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
# # A tour of the preference objectives
#
# Every objective in `alignment.losses` is a pure function over `[..., K]` arrays: summed
# completion log-probs of K responses to one prompt (`logps`), the same under the frozen
# reference (`ref_logps`), and graded `labels` (higher is better). This notebook
#
# 1. evaluates **every registered objective** on toy arrays (with `jit` and `grad`),
# 2. plots loss and gradient against the preference margin for the **DPO family**,
# 3. shows the **K = 2 reductions**: on a single pair, the listwise LiPO objectives become DPO
#    (or SLiC's hinge), exactly.

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

from alignment import losses

for family in sorted({losses.spec(n).family for n in losses.names()}):
  print(f"{family:>15}: {', '.join(losses.names(family=family))}")

# %% [markdown]
# ## 1. Every objective on toy arrays
#
# `losses.spec(name)` says what an objective needs (a reference, completion lengths,
# extra inputs such as KTO's `kl_logps`, state). `alignment.losses.examples` builds toy
# inputs from the spec alone: B = 3 lists of K = 2 responses (K = 4 for listwise
# objectives), chosen first, labels `linspace(1, 0, K)`.

# %%
from alignment.losses.examples import REQUIRED_HYPER_PARAMETERS, example_inputs


def toy_inputs(name, seed=0):
  """(logps, ref_logps, labels), keyword inputs for `losses.get(name)`.

  `labels` is the third positional input: graded labels, or the rewards, advantages
  or win probabilities of the group objectives (all in [0, 1] here).
  """
  return example_inputs(name, seed=seed, scale=15.0)


def loss_and_grad(name):
  """The loss and d loss / d logps (eager: compiling 60+ tiny functions costs more)."""
  spec = losses.spec(name)
  (logps, ref_logps, labels), kwargs = toy_inputs(name)
  static = {n: kwargs.pop(n) for n in list(kwargs) if n in REQUIRED_HYPER_PARAMETERS}

  def f(lp, arrays):
    out = spec.fn(lp, ref_logps, labels, **arrays, **static)
    return out[0] if spec.stateful else out

  return jax.value_and_grad(f)(logps, kwargs)


results = {name: loss_and_grad(name) for name in losses.names()}
for name, (value, grad) in results.items():
  assert np.isfinite(value) and np.all(np.isfinite(grad)), name
print(f"{len(results)} objectives evaluated; all values and gradients finite.")

# %%
names = losses.names()
families = sorted({losses.spec(n).family for n in names})
colours = dict(zip(families, plt.cm.tab10.colors))
c = [colours[losses.spec(n).family] for n in names]
fig, axes = plt.subplots(1, 2, figsize=(13, 0.2 * len(names) + 1.5), sharey=True)
axes[0].barh(names, [float(results[n][0]) for n in names], color=c)
axes[0].set(title="loss on the toy inputs", xscale="symlog")
axes[1].barh(names, [float(jnp.linalg.norm(results[n][1])) for n in names], color=c)
axes[1].set(title="‖∂ loss / ∂ logps‖", xscale="symlog")
axes[0].invert_yaxis()
handles = [plt.Rectangle((0, 0), 1, 1, color=colours[f]) for f in families]
axes[1].legend(handles, families, loc="lower right")
fig.tight_layout()

# %% [markdown]
# ## 2. The DPO family against the margin
#
# For one pair, put the rejected response at the reference (`ρ_l = 0`) and move the
# chosen log-ratio `ρ_w = h`: the DPO margin is then `h = ρ_w − ρ_l`. Each panel
# shows the loss (solid) and its slope `∂ℓ/∂ lp_w` (dashed) with each objective's
# default hyper-parameters. DPO's slope `−β σ(−βh)` never vanishes; IPO is a
# parabola with its minimum at `h = 1/(2β)`; the hinge stops at `βh = 1`; APO-down
# pushes the chosen response down when the pair is already well separated; objectives
# that look at each log-ratio separately (APO, BCO, NCA, SPPO) are not functions of
# `h` alone, so these are slices with `ρ_l = 0`.

# %%
DPO_FAMILY = [n for n in losses.names(family="pairwise")
              if losses.spec(n).needs_reference and not losses.spec(n).needs_lengths
              and not losses.spec(n).extra_inputs]
margins = jnp.linspace(-40.0, 40.0, 81 if FAST else 401)


def pair_loss(name, lp_w, lp_l):
  spec = losses.spec(name)
  logps = jnp.stack([lp_w, lp_l])[None, :]  # [B = 1, K = 2]: chosen, rejected
  state = {"state": spec.init_state()} if spec.stateful else {}
  out = spec.fn(logps, jnp.zeros_like(logps), jnp.array([[1.0, 0.0]]), **state)
  return out[0] if spec.stateful else out


def margin_curve(name):
  return jax.vmap(jax.value_and_grad(lambda h: pair_loss(name, h, 0.0)))(margins)


cols = 4
rows = -(-len(DPO_FAMILY) // cols)
fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
for ax, name in zip(axes.flat, DPO_FAMILY):
  value, slope = margin_curve(name)
  ax.plot(margins, value, "C0", label="loss")
  ax.axhline(0.0, color="0.8", lw=0.8)
  ax.axvline(0.0, color="0.8", lw=0.8)
  twin = ax.twinx()
  twin.plot(margins, slope, "C3--", label="∂ℓ/∂lp_w")
  ax.set_title(name)
  ax.set_xlabel("margin h = ρ_w − ρ_l")
for ax in axes.flat[len(DPO_FAMILY):]:
  ax.axis("off")
fig.legend(*[sum(x, []) for x in zip(axes.flat[0].get_legend_handles_labels(),
                                     twin.get_legend_handles_labels())],
           loc="upper right")
fig.tight_layout()

# %% [markdown]
# ## 3. K = 2 reductions
#
# With K = 2, labels `[1, 0]` and scores `s = β·ρ`, the LiPO objectives on a single
# pair are DPO (`−log σ(βh)`) exactly: the pairwise logistic loss, ListMLE and the
# softmax loss coincide with it, LiPO-λ is DPO times the constant lambda weight
# `|2¹ − 2⁰|·|1/ln 2 − 1/ln 3| ≈ 0.5325`, and the pairwise hinge is SLiC's `max(0, 1 − βh)`
# (*LiPO: Listwise Preference Optimization through Learning-to-Rank*, Liu, Qin et al., 2024;
# the reductions are listed in [docs/conventions.md](../docs/conventions.md)). The cell checks
# this numerically and plots it.

# %%
beta = 0.1
LAMBDA = 1.0 / np.log(2.0) - 1.0 / np.log(3.0)  # |2^1 − 2^0| · |1/ln 2 − 1/ln 3|
logps = jnp.stack([margins, jnp.zeros_like(margins)], axis=-1)  # [N, 2]: ρ_w = h, ρ_l = 0
ref, labels = jnp.zeros_like(logps), jnp.broadcast_to(jnp.array([1.0, 0.0]), logps.shape)
unreduced = lambda name: losses.get(name)(logps, ref, labels, beta=beta, reduce_fn=None)
per_list = lambda x: x.reshape(x.shape[0], -1).sum(-1)  # listwise: per item or pair

dpo, hinge = unreduced("dpo"), unreduced("hinge")
reductions = {  # name: (curve, the DPO-family curve it must equal)
    "lipo_pair_logistic": (per_list(unreduced("lipo_pair_logistic")), dpo),
    "lipo_listmle": (per_list(unreduced("lipo_listmle")), dpo),
    "lipo_softmax": (per_list(unreduced("lipo_softmax")), dpo),
    "lipo_lambda / 0.5325": (per_list(unreduced("lipo_lambda")) / LAMBDA, dpo),
    "lipo_pair_hinge": (per_list(unreduced("lipo_pair_hinge")), hinge),
}
for name, (curve, target) in reductions.items():
  np.testing.assert_allclose(curve, target, rtol=1e-5, atol=1e-6, err_msg=name)
print("every K = 2 reduction holds to float32 precision")

fig, axes = plt.subplots(1, 2, figsize=(13, 4))
axes[0].plot(margins, dpo, "k", lw=5, alpha=0.25, label="dpo")
axes[0].plot(margins, hinge, "0.5", lw=5, alpha=0.25, label="hinge (SLiC)")
for name, (curve, _) in reductions.items():
  axes[0].plot(margins, curve, lw=1.2, label=name)
axes[0].set(xlabel="margin h", ylabel="loss", title=f"K = 2, β = {beta}")
axes[0].legend()
raw_lambda = per_list(unreduced("lipo_lambda"))
axes[1].plot(margins, raw_lambda / dpo, label="lipo_lambda / dpo")
axes[1].axhline(LAMBDA, color="k", ls=":", label=f"{LAMBDA:.4f}")
axes[1].set(xlabel="margin h", ylabel="ratio", ylim=(0, 1),
            title="LiPO-λ is a constant multiple of DPO at K = 2")
axes[1].legend()
fig.tight_layout()
